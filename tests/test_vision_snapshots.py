"""Snapshots: rendering, the local store (atomic writes, retention by age and size, pending across
restarts) and, end to end through the pipeline on real frames with the shipped model, that the
stored images are redacted (masks exactly black, the face blurred) before anything is encoded."""

import asyncio
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from linli.events import EVENT_TYPES
from linli.vision import snapshots as S
from linli.vision.snapshots import SnapshotError, SnapshotStore, jpeg_size, render_crop, render_frame

IMAGES = Path(__file__).parent / "data" / "detector" / "images"
PILE, NO_PILE = "003353.jpg", "002456.jpg"


def jpeg(h=48, w=64, level=90):
    img = np.full((h, w, 3), level, np.uint8)
    cv2.putText(img, "x", (5, h - 5), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return cv2.imencode(".jpg", img)[1].tobytes()


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


# -- rendering ------------------------------------------------------------------------------------
def test_crop_has_the_margin_and_frame_is_scaled_with_the_box_drawn():
    frame = cv2.imread(str(IMAGES / PILE))
    big = cv2.resize(frame, (1280, 1280))
    data, w, h = render_crop(big, (400, 400, 600, 500), margin=0.25)
    assert (w, h) == (300, 150) == jpeg_size(data)
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    want = big[375:525, 350:650].astype(int)
    assert np.abs(crop.astype(int) - want).mean() < 6  # the same pixels, JPEG aside
    data, w, h = render_frame(big, (400, 400, 600, 500), "garbage 3")
    assert (w, h) == (640, 640)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.resize(big, (640, 640), interpolation=cv2.INTER_AREA)
    # The box edge (scaled by 1/2) is drawn in red; away from it the picture is the frame.
    edge = img[225:250, 200].astype(int)
    assert (edge[:, 2] > 180).all() and (edge[:, 1] < 90).all()
    assert np.abs(img[400:600, 400:600].astype(int) - plain[400:600, 400:600]).mean() < 6
    # A small frame is never enlarged.
    assert render_frame(frame, (10, 10, 50, 50))[1:] == (512, 512)
    with pytest.raises(SnapshotError, match="outside"):
        render_crop(frame, (600, 600, 700, 700), min_px=0)


def test_jpeg_size_refuses_what_is_not_a_jpeg():
    assert jpeg_size(jpeg(30, 50)) == (50, 30)
    with pytest.raises(SnapshotError, match="not a JPEG"):
        jpeg_size(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    with pytest.raises(SnapshotError, match="not a JPEG"):
        jpeg_size(b"\xff\xd8\xff\xe0\x00")


# -- the store ----------------------------------------------------------------------------------------
def test_put_get_ref_and_pending_survives_a_restart(tmp_path):
    store = SnapshotStore(tmp_path / "snap", clock=Clock())
    data = jpeg()
    ref = store.put("ev1", "crop", data)
    assert ref == {"id": "ev1-crop", "kind": "crop", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "width": 64, "height": 48}
    assert (tmp_path / "snap" / "ev1-crop.jpg").read_bytes() == data
    assert store.get(ref) == store.get("ev1-crop") == data
    store.put("ev1", "frame", jpeg(level=30))
    store.put("ev2", "crop", jpeg(level=60))
    store.mark_sent(ref)
    assert not list((tmp_path / "snap").glob("*.tmp"))
    again = SnapshotStore(tmp_path / "snap", clock=Clock())  # a gateway restart
    assert [r["id"] for r in again.pending()] == ["ev1-frame", "ev2-crop"]
    again.mark_sent("ev2-crop")
    assert [r["id"] for r in SnapshotStore(tmp_path / "snap").pending()] == ["ev1-frame"]


def test_bad_ids_kinds_data_and_altered_files_are_refused(tmp_path):
    store = SnapshotStore(tmp_path)
    with pytest.raises(SnapshotError, match="kind"):
        store.put("ev1", "thumb", jpeg())
    with pytest.raises(SnapshotError, match="snapshot id"):
        store.put("../etc/passwd", "crop", jpeg())
    with pytest.raises(SnapshotError, match="not a JPEG"):
        store.put("ev1", "crop", b"GIF89a....")
    ref = store.put("ev1", "crop", jpeg())
    (tmp_path / "ev1-crop.jpg").write_bytes(jpeg(level=10))
    with pytest.raises(SnapshotError, match="sha256"):
        store.get(ref)
    with pytest.raises(SnapshotError, match="not stored"):
        store.get("ev9-crop")
    with pytest.raises(SnapshotError, match="not stored"):
        store.mark_sent("ev9-crop")
    with pytest.raises(ValueError, match="retention_s"):
        SnapshotStore(tmp_path, retention_s=0)
    with pytest.raises(ValueError, match="max_bytes"):
        SnapshotStore(tmp_path, max_bytes=0)


def test_writes_are_atomic_and_a_crash_leaves_no_half_file(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path, clock=Clock())
    real = os.replace

    def crash(src, dst):
        raise OSError("power cut")

    # Cut before the JPEG's rename: no snapshot exists, only a temp file the next start removes.
    monkeypatch.setattr(S.os, "replace", crash)
    with pytest.raises(OSError):
        store.put("ev1", "crop", jpeg())
    monkeypatch.setattr(S.os, "replace", real)
    assert not (tmp_path / "ev1-crop.jpg").exists() and list(tmp_path.glob("*.tmp"))
    store = SnapshotStore(tmp_path, clock=Clock())
    assert not list(tmp_path.glob("*.tmp")) and store.pending() == []

    # Cut between the JPEG's rename and the sidecar's: the JPEG is complete and is still sent.
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("power cut")
        real(src, dst)

    monkeypatch.setattr(S.os, "replace", second_fails)
    data = jpeg(level=200)
    with pytest.raises(OSError):
        store.put("ev2", "frame", data)
    monkeypatch.setattr(S.os, "replace", real)
    refs = SnapshotStore(tmp_path, clock=Clock()).pending()
    assert [(r["id"], r["sha256"]) for r in refs] == [("ev2-frame", hashlib.sha256(data).hexdigest())]


def test_prune_by_age_then_by_size_oldest_and_sent_first(tmp_path):
    base = 1_000_000.0
    clock = Clock(base)
    store = SnapshotStore(tmp_path, retention_s=3600, max_bytes=10**9, clock=clock)
    sizes = {}
    for i in range(6):
        clock.t += 600  # one every 10 minutes
        sizes[i] = store.put("ev%d" % i, "crop", jpeg(level=20 * i))["bytes"]
    assert store.prune(clock.t) == 0
    # An hour after the second: the first two are past the hour's retention, sent or not.
    clock.t = base + 2 * 600 + 3600 + 1
    assert store.prune(clock.t) == 2 and store.pruned == {"age": 2, "size": 0}
    assert [r["id"] for r in store.pending()] == ["ev2-crop", "ev3-crop", "ev4-crop", "ev5-crop"]
    # Over the size bound: sent ones go first, then the oldest.
    store.mark_sent("ev4-crop")
    store.max_bytes = sizes[2] + sizes[3] + sizes[5] - 1
    assert store.prune(clock.t) == 2 and store.pruned == {"age": 2, "size": 2}
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["ev3-crop.jpg", "ev5-crop.jpg"]
    assert not list(tmp_path.glob("ev4-crop.*")) and store.usage() <= store.max_bytes


# -- end to end: pipeline -> redacted snapshots ----------------------------------------------------
FACE_AT = (340, 20)  # where the astronaut's head goes in the frame (top right, away from the pile)
FACE_BOX = (365, 45, 467, 147)  # the face in frame pixels (Haar finds 365, 45, 102 x 102)
MASK = [[20, 20], [200, 20], [200, 150], [20, 150]]  # top left: a "neighbour's window"


def face_patch():
    """The head of NASA's portrait of astronaut Eileen Collins (public domain), as shipped in
    scikit-image (``skimage.data.astronaut``)."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[40:190, 150:300]


def with_face(name):
    img = cv2.imread(str(IMAGES / name))
    x, y = FACE_AT
    img[y:y + 150, x:x + 150] = face_patch()
    return img


def test_pipeline_stores_redacted_snapshots_and_refs_validate(tmp_path):
    import jsonschema
    from linli.detector import Detector
    from linli.vision.pipeline import CameraSpec, VisionPipeline
    from linli.vision.privacy import PrivacyFilter
    from linli.vision.tracker import TrackerConfig
    from test_vision_pipeline import Clock as CamClock, Lockstep, Sink, until

    scene = tmp_path / "scene"
    scene.mkdir()
    seq = [PILE] * 5 + [NO_PILE] * 4
    for i, name in enumerate(seq):
        cv2.imwrite(str(scene / ("%03d.png" % i)), with_face(name))  # PNG: the test's pixels are exact
    cfg = TrackerConfig(confirm_hits=3, confirm_window=4, confirm_min_s=15, clear_misses=3, clear_min_s=20)
    spec = CameraSpec("gate", interval_s=0.01, tracker=cfg, masks=[MASK])
    store = SnapshotStore(tmp_path / "snap")
    sink = Sink()
    det = Detector.default(threads=1)

    async def main():
        source = Lockstep(str(scene))
        detector = source.pace(det)
        pipe = VisionPipeline([(spec, source)], detector, sink, clock=CamClock(), snapshots=store, privacy=PrivacyFilter())
        await pipe.start()
        await until(lambda: pipe.samples["gate"] >= len(seq))
        await pipe.stop()
        return pipe

    pipe = asyncio.run(main())
    evs = [e for e in sink.events if e.type.startswith("garbage.pile")]
    assert [e.type for e in evs] == ["garbage.pile.detected", "garbage.pile.cleared"]
    for ev in evs:
        schema = EVENT_TYPES[ev.type].data
        jsonschema.validate(json.loads(json.dumps(ev.data)), schema)
        assert [r["kind"] for r in ev.data["snapshots"]] == ["crop", "frame"]
        assert ev.data["redacted"]["masks"] == 1 and ev.data["redacted"]["faces"] >= 1
        for ref in ev.data["snapshots"]:
            assert ref["id"] == "%s-%s" % (ev.id, ref["kind"])
            assert hashlib.sha256(store.get(ref)).hexdigest() == ref["sha256"]
    assert len(store.pending()) == 4
    h = pipe.health()["gate"]
    assert h["snapshots"] == 4 and h["snapshot_errors"] == 0 and h["snapshot_ms"] > 0 and h["redacted"]["faces"] >= 2

    # The pixels of the stored full frame (512 px: not scaled): the mask is black, the face gone.
    detected = evs[0]
    ref = [r for r in detected.data["snapshots"] if r["kind"] == "frame"][0]
    img = cv2.imdecode(np.frombuffer(store.get(ref), np.uint8), cv2.IMREAD_COLOR)
    orig = with_face(PILE)
    assert img.shape == orig.shape
    inner = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.asarray(MASK, np.int32)], 1)
    # Exactly black away from the edge: JPEG's 16 x 16 blocks that straddle it blend both sides.
    inner = cv2.erode(inner, np.ones((33, 33), np.uint8))
    assert inner.sum() > 10000 and img[inner.astype(bool)].max() == 0
    assert orig[inner.astype(bool)].max() > 50  # there was a picture there
    x1, y1, x2, y2 = FACE_BOX
    before, after = orig[y1:y2, x1:x2], img[y1:y2, x1:x2]
    assert after.astype(float).var() < before.astype(float).var() / 4

    def detail(a):
        return cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()

    assert detail(after) < detail(before) / 30
    # The crop around the pile holds the pile's pixels (it was not blurred away).
    crop_ref = [r for r in detected.data["snapshots"] if r["kind"] == "crop"][0]
    crop = cv2.imdecode(np.frombuffer(store.get(crop_ref), np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape[0] >= 200 and crop.shape[1] >= 200
    # The cleared event's frame shows the current (empty) scene at the old box.
    cleared = [r for r in evs[1].data["snapshots"] if r["kind"] == "frame"][0]
    now = cv2.imdecode(np.frombuffer(store.get(cleared), np.uint8), cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = (int(v) for v in evs[1].data["box"])

    def diff(a, b):
        return np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).mean()

    assert diff(now, with_face(NO_PILE)) < diff(now, orig) / 2
