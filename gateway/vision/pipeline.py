"""Detection scheduling: every camera's sampled frames through one shared detector, off the
event loop, into its pile tracker, and the resulting events into the outbox.

Per camera: privacy masks are blacked out *before* inference (and before anything else sees the
frame), detections are kept only inside the camera's zones, above a minimum box size and above a
score threshold per class. Inference runs on a thread pool of ``threads`` workers (the Pi's
budget); each camera holds at most one frame waiting, so N cameras degrade to longer effective
intervals, never to unbounded queues. Tracker state is saved per camera after every sample that
changed it, so a restart never re-announces a pile.

(Snapshots with people blurred, per-camera health in ``linli doctor`` and the demo camera are
still to come with issue 6.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from linli.vision.sources import Camera
from linli.vision.tracker import CameraTracker, TrackerConfig

log = logging.getLogger("linli.vision")

Polygon = Sequence[Sequence[float]]


@dataclass
class CameraSpec:
    """One camera's settings (zones and masks are polygons in frame pixels)."""

    name: str
    interval_s: float = 5.0
    zones: list = field(default_factory=list)  # empty: the whole frame counts
    masks: list = field(default_factory=list)  # blacked out before inference and snapshots
    min_box_px: float = 16.0  # smaller boxes (far away, or noise) are ignored
    thresholds: dict = field(default_factory=lambda: {"garbage": 0.3, "overflow": 0.35})
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self):
        for key, polys in (("zones", self.zones), ("masks", self.masks)):
            for i, p in enumerate(polys):
                if len(p) < 3 or any(len(pt) != 2 for pt in p):
                    raise ValueError("cameras.%s.%s[%d]: a polygon needs 3 or more [x, y] points" % (self.name, key, i))
        for label, th in self.thresholds.items():
            if not 0.0 <= th <= 1.0:
                raise ValueError("cameras.%s.thresholds.%s: must be 0..1, got %r" % (self.name, label, th))


def apply_masks(frame: np.ndarray, masks: Sequence[Polygon]) -> np.ndarray:
    """A copy of ``frame`` with every mask polygon filled black (the original is untouched)."""
    if not masks:
        return frame
    import cv2

    out = frame.copy()
    cv2.fillPoly(out, [np.asarray(p, np.int32) for p in masks], (0, 0, 0))
    return out


def _inside(pt, poly) -> bool:
    import cv2

    return cv2.pointPolygonTest(np.asarray(poly, np.float32), (float(pt[0]), float(pt[1])), False) >= 0


def keep(detections, spec: CameraSpec) -> list:
    """The detections that count for this camera (class threshold, size, zone)."""
    out = []
    for d in detections:
        th = spec.thresholds.get(d.label)
        if th is None or d.score < th:
            continue
        x1, y1, x2, y2 = d.box
        if min(x2 - x1, y2 - y1) < spec.min_box_px:
            continue
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        if spec.zones and not any(_inside(centre, z) for z in spec.zones):
            continue
        out.append(d)
    return out


class VisionPipeline:
    """Runs cameras -> detector -> trackers -> ``sink.add(events)`` (the outbox)."""

    def __init__(self, cameras: Sequence[tuple[CameraSpec, Any]], detector, sink, *, threads: int = 1, state_dir: Optional[Path] = None, clock=time.time):
        self.detector = detector
        self.sink = sink
        self.clock = clock
        self.state_dir = Path(state_dir) if state_dir else None
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="linli-infer")
        self._cams: list[tuple[CameraSpec, Camera, CameraTracker]] = []
        for spec, source in cameras:
            self._cams.append((spec, Camera(spec.name, source, interval_s=spec.interval_s), self._load_tracker(spec)))
        self._tasks: list[asyncio.Task] = []
        self.inference_ms: dict[str, float] = {}
        self.samples: dict[str, int] = {}

    def _state_path(self, name: str) -> Optional[Path]:
        return self.state_dir / ("tracker-%s.json" % name) if self.state_dir else None

    def _load_tracker(self, spec: CameraSpec) -> CameraTracker:
        p = self._state_path(spec.name)
        if p and p.exists():
            try:
                return CameraTracker.from_state(json.loads(p.read_text()), spec.tracker, camera=spec.name)
            except ValueError as exc:
                log.warning("camera %s: tracker state unreadable (%s); starting fresh", spec.name, exc)
        return CameraTracker(spec.name, spec.tracker)

    def _save(self, spec: CameraSpec, tracker: CameraTracker) -> None:
        p = self._state_path(spec.name)
        if p:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(tracker.to_state()))
            os.replace(tmp, p)

    @property
    def cameras(self) -> list[Camera]:
        return [c for _, c, _ in self._cams]

    async def start(self) -> None:
        for spec, cam, tracker in self._cams:
            await cam.start()
            self._tasks.append(asyncio.create_task(self._run(spec, cam, tracker), name="vision:%s" % spec.name))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        for _, cam, _ in self._cams:
            await cam.stop()
        self._pool.shutdown(wait=True)

    async def _run(self, spec: CameraSpec, cam: Camera, tracker: CameraTracker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, frame = await cam.next()
            masked = apply_masks(frame, spec.masks)
            t0 = time.perf_counter()
            try:
                dets = await loop.run_in_executor(self._pool, self.detector.detect, masked)
            except Exception as exc:  # a model error must not stop the camera or the gateway
                log.error("camera %s: detection failed: %s", spec.name, exc)
                continue
            self.inference_ms[spec.name] = (time.perf_counter() - t0) * 1000.0
            self.samples[spec.name] = self.samples.get(spec.name, 0) + 1
            events = tracker.update(self.clock(), keep(dets, spec))
            if events:
                await self.sink.add(events)
            self._save(spec, tracker)
