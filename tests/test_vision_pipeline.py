"""Cameras -> shared detector -> tracker -> outbox, on real frames with the shipped model; and the
pipeline's robustness: a corrupt model, a detector that fails mid-run, a camera URL that dies
and comes back (health, reconnects, camera.degraded / camera.recovered once per transition)."""

import asyncio
import http.server
import shutil
import threading
from pathlib import Path

import cv2
import pytest

from linli.detector import Detector, ModelFileError
from linli.vision.pipeline import CameraSpec, VisionPipeline, apply_masks, keep, model_failed_event
from linli.vision.sources import FolderSource, SourceError, open_source
from linli.vision.tracker import TrackerConfig

IMAGES = Path(__file__).parent / "data" / "detector" / "images"
PILE, NO_PILE = "003353.jpg", "002456.jpg"  # a pile on the ground; bins only


class Sink:
    def __init__(self):
        self.events = []

    async def add(self, events, fn=None):
        self.events += events

    def types(self, prefix=""):
        return [e.type for e in self.events if e.type.startswith(prefix)]


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        self.t += 10.0  # each sample is 10 s of camera time
        return self.t


async def until(cond, limit_s=120.0):
    """Wait for ``cond()``; the limit only guards against a hang (no test asserts a duration)."""
    for _ in range(int(limit_s / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached within %.0f s" % limit_s)


class Lockstep:
    """A folder of frames given one at a time: the next frame is read only once the detector has
    finished the previous one, so a slow machine never drops a scripted frame (the camera's
    one-slot queue would otherwise replace it)."""

    def __init__(self, folder):
        self.src = FolderSource(folder, loop=False)
        self.turn = threading.Semaphore(1)

    def open(self):
        self.src.open()

    def read(self):
        if not self.turn.acquire(timeout=10):
            raise SourceError("lockstep: the previous frame was not taken")
        try:
            return self.src.read()
        except Exception:
            self.turn.release()
            raise

    def close(self):
        self.src.close()

    def pace(self, detector):
        return _Paced(detector, self.turn)


class _Paced:
    def __init__(self, detector, turn):
        self.detector, self.turn = detector, turn

    def detect(self, frame):
        try:
            return self.detector.detect(frame)
        finally:
            self.turn.release()


@pytest.fixture(scope="module")
def detector():
    return Detector.default(threads=1)


def scene(tmp_path, sequence):
    d = tmp_path / ("scene%d" % len(list(tmp_path.glob("scene*"))))
    d.mkdir()
    for i, name in enumerate(sequence):
        shutil.copyfile(IMAGES / name, d / ("%03d.jpg" % i))
    return d


def run(tmp_path, detector, sequence, spec, state_dir, n=None):
    sink = Sink()

    async def main():
        source = Lockstep(str(scene(tmp_path, sequence)))
        pipe = VisionPipeline([(spec, source)], source.pace(detector), sink, state_dir=state_dir, clock=Clock())
        await pipe.start()
        await until(lambda: pipe.samples.get(spec.name, 0) >= (n or len(sequence)))
        await pipe.stop()
        return pipe

    pipe = asyncio.run(main())
    return sink.events, pipe


def spec(**kw):
    cfg = TrackerConfig(confirm_hits=3, confirm_window=4, confirm_min_s=15, clear_misses=3, clear_min_s=20)
    return CameraSpec("gate", interval_s=0.01, tracker=cfg, **kw)


def test_pile_appears_stays_and_is_cleared_on_real_frames(tmp_path, detector):
    seq = [NO_PILE] * 2 + [PILE] * 6 + [NO_PILE] * 5
    events, pipe = run(tmp_path, detector, seq, spec(), tmp_path / "state")
    kinds = [e.type for e in events if e.type.startswith("garbage.pile")]
    assert kinds.count("garbage.pile.detected") == 1, kinds
    assert kinds[-1] == "garbage.pile.cleared"
    cleared = [e for e in events if e.type == "garbage.pile.cleared"][0]
    assert 40 <= cleared.data["dwell_s"] <= 70  # six samples 10 s apart
    assert "snapshots" not in cleared.data  # no store: no images
    h = pipe.health()["gate"]
    assert h["inference_ms"] > 0 and h["tracking_ms"] >= 0 and h["samples"] == len(seq)
    assert h["detector_failures"] == 0 and h["fps"] > 0 and h["decode_ms"] is not None


def test_a_restart_does_not_announce_the_pile_again(tmp_path, detector):
    state = tmp_path / "state"
    first, _ = run(tmp_path, detector, [PILE] * 5, spec(), state)
    assert [e.type for e in first].count("garbage.pile.detected") == 1
    second, _ = run(tmp_path, detector, [PILE] * 4, spec(), state)
    assert "garbage.pile.detected" not in [e.type for e in second]


def test_masks_black_out_pixels_and_zones_filter(tmp_path, detector):
    frame = cv2.imread(str(IMAGES / PILE))
    h, w = frame.shape[:2]
    whole = [[0, 0], [w, 0], [w, h], [0, h]]
    masked = apply_masks(frame, [whole])
    assert masked.max() == 0 and frame.max() > 0  # the original is untouched
    dets = detector.detect(frame)
    assert keep(dets, spec())  # the pile counts in the whole frame...
    assert not keep(dets, spec(zones=[[[0, 0], [5, 0], [5, 5]]]))  # ...not outside the zone
    # Masked over the pile, the pipeline never sees it.
    events, _ = run(tmp_path, detector, [PILE] * 5, spec(masks=[whole]), None)
    assert [e for e in events if not e.type.startswith("camera.")] == []


def test_bad_polygons_and_thresholds_are_refused():
    with pytest.raises(ValueError, match="cameras.gate.zones\\[0\\]"):
        CameraSpec("gate", zones=[[[0, 0], [1, 1]]])
    with pytest.raises(ValueError, match="thresholds.garbage"):
        CameraSpec("gate", thresholds={"garbage": 1.5})


# -- robustness ------------------------------------------------------------------------------------
def test_a_truncated_model_is_a_typed_error_and_cameras_run_without_detection(tmp_path):
    from linli.detector import DEFAULT_MODEL

    bad = tmp_path / DEFAULT_MODEL.name
    bad.write_bytes(DEFAULT_MODEL.read_bytes()[: DEFAULT_MODEL.stat().st_size // 3])
    with pytest.raises(ModelFileError, match="not a loadable ONNX model") as err:
        Detector(bad)
    sink = Sink()

    async def main():
        # What the service does: report the model, keep the cameras watched without a detector.
        await sink.add([model_failed_event(bad, err.value)])
        pipe = VisionPipeline([(spec(), FolderSource(str(IMAGES)))], None, sink)
        await pipe.start()
        await until(lambda: pipe.cameras[0].health.frames >= 3)
        h = pipe.health()["gate"]
        await pipe.stop()
        return h

    h = asyncio.run(main())
    ev = sink.events[0]
    assert ev.type == "vision.model_failed" and ev.data["model"] == str(bad) and "ONNX" in ev.data["error"]
    assert h["state"] == "degraded" and "no detector" in h["last_error"] and h["frames"] >= 3 and h["samples"] == 0
    assert sink.types("camera.") == []  # the camera itself is fine


class FlakyDetector:
    """The shipped model, failing on calls ``fail_from`` .. ``fail_to`` - 1 (a model that breaks
    mid-run: out of memory, a corrupted session), counted by call."""

    def __init__(self, det, fail_from, fail_to):
        self.det, self.fail_from, self.fail_to, self.calls = det, fail_from, fail_to, 0

    def detect(self, frame):
        self.calls += 1
        if self.fail_from <= self.calls < self.fail_to:
            raise RuntimeError("onnxruntime: bad allocation")
        return self.det.detect(frame)


def test_a_detector_failing_mid_run_is_counted_and_the_camera_keeps_sampling(detector):
    sink = Sink()
    flaky = FlakyDetector(detector, 3, 8)
    seen = {}

    async def main():
        pipe = VisionPipeline([(spec(), FolderSource(str(IMAGES)))], flaky, sink)
        await pipe.start()
        await until(lambda: flaky.calls >= 5)
        seen["failing"] = pipe.health()["gate"]
        await until(lambda: pipe.samples["gate"] >= 6)
        seen["after"] = pipe.health()["gate"]
        await pipe.stop()

    asyncio.run(main())
    h = seen["failing"]
    assert h["state"] == "degraded" and h["detector_failures"] >= 2
    assert "bad allocation" in h["last_detector_error"] and "detector" in h["last_error"]
    h = seen["after"]
    assert h["state"] == "ok" and h["detector_failures"] == 5 and h["samples"] >= 6 and h["frames"] >= 11


JPEG = cv2.imencode(".jpg", cv2.imread(str(IMAGES / NO_PILE)))[1].tobytes()


class _Snap(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(JPEG)))
        self.end_headers()
        self.wfile.write(JPEG)

    def log_message(self, *a):
        pass


def serve(port=0):
    http.server.HTTPServer.allow_reuse_address = True
    srv = http.server.HTTPServer(("127.0.0.1", port), _Snap)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_a_dead_camera_url_degrades_recovers_once_and_the_other_camera_goes_on(detector):
    srv = serve()
    port = srv.server_address[1]
    sink = Sink()
    seen = {}

    async def main():
        gate = CameraSpec("gate", interval_s=0.05, backoff=(0.1, 0.4), tracker=spec().tracker)
        yard = CameraSpec("yard", interval_s=0.05, tracker=spec().tracker)
        url = "http://127.0.0.1:%d/snap.jpg" % port
        pipe = VisionPipeline([(gate, open_source(url, timeout=2.0)), (yard, FolderSource(str(IMAGES)))], detector, sink, health_poll_s=0.05)
        await pipe.start()
        await until(lambda: pipe.samples["gate"] >= 2)
        assert pipe.health()["gate"]["state"] == "ok"
        srv.shutdown()
        srv.server_close()
        await until(lambda: pipe.health()["gate"]["state"] == "degraded")
        await until(lambda: pipe.cameras[0].health.errors >= 3)  # several failed reads ...
        seen["down"] = pipe.health()
        yard_before = pipe.samples["yard"]
        await until(lambda: pipe.samples["yard"] >= yard_before + 3)  # ... the other camera goes on
        back = serve(port)
        try:
            await until(lambda: "camera.recovered" in sink.types())
            await until(lambda: pipe.samples["gate"] >= seen["down"]["gate"]["samples"] + 2)
            seen["up"] = pipe.health()
        finally:
            await pipe.stop()
            back.shutdown()
            back.server_close()

    asyncio.run(main())
    down, up = seen["down"], seen["up"]
    assert "snapshot" in down["gate"]["last_error"] and down["yard"]["state"] == "ok"
    assert up["gate"]["state"] == "ok" and up["gate"]["reconnects"] >= 3 and up["gate"]["last_frame_age_s"] < 5
    cam = [e for e in sink.events if e.type.startswith("camera.")]
    assert [e.type for e in cam] == ["camera.degraded", "camera.recovered"]  # once per transition
    assert cam[0].data["camera"] == "gate" and "snapshot" in cam[0].data["reason"] and cam[0].source == "camera/gate"
    assert cam[1].data["down_s"] > 0
