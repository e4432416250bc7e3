"""Cameras -> shared detector -> tracker -> outbox, on real frames with the shipped model."""

import asyncio
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from linli.vision.pipeline import CameraSpec, VisionPipeline, apply_masks, keep
from linli.vision.sources import FolderSource
from linli.vision.tracker import TrackerConfig

IMAGES = Path(__file__).parent / "data" / "detector" / "images"
PILE, NO_PILE = "003353.jpg", "002456.jpg"  # a pile on the ground; bins only


class Sink:
    def __init__(self):
        self.events = []

    async def add(self, events, fn=None):
        self.events += events


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        self.t += 10.0  # each sample is 10 s of camera time
        return self.t


@pytest.fixture(scope="module")
def detector():
    from linli.detector import Detector

    return Detector.default()


def scene(tmp_path, sequence):
    d = tmp_path / ("scene%d" % len(list(tmp_path.glob("scene*"))))
    d.mkdir()
    for i, name in enumerate(sequence):
        shutil.copyfile(IMAGES / name, d / ("%03d.jpg" % i))
    return d


def run(tmp_path, detector, sequence, spec, state_dir, n=None):
    sink = Sink()

    async def main():
        source = FolderSource(str(scene(tmp_path, sequence)), loop=False)
        pipe = VisionPipeline([(spec, source)], detector, sink, state_dir=state_dir, clock=Clock())
        await pipe.start()
        for _ in range(400):
            if pipe.samples.get(spec.name, 0) >= (n or len(sequence)):
                break
            await asyncio.sleep(0.02)
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
    assert pipe.inference_ms["gate"] > 0


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
    assert events == []


def test_bad_polygons_and_thresholds_are_refused():
    with pytest.raises(ValueError, match="cameras.gate.zones\\[0\\]"):
        CameraSpec("gate", zones=[[[0, 0], [1, 1]]])
    with pytest.raises(ValueError, match="thresholds.garbage"):
        CameraSpec("gate", thresholds={"garbage": 1.5})
