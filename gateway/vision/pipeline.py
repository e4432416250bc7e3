"""Detection scheduling: every camera's sampled frames through one shared detector, off the
event loop, into its pile tracker, and the resulting events into the outbox.

Per camera: privacy masks are blacked out *before* inference (and before anything else sees the
frame), detections are kept only inside the camera's zones, above a minimum box size and above a
score threshold per class. Inference runs on a thread pool of ``threads`` workers (the Pi's
budget); each camera holds at most one frame waiting, so N cameras degrade to longer effective
intervals, never to unbounded queues. Tracker state is saved per camera after every sample that
changed it, so a restart never re-announces a pile.

With a :class:`~linli.vision.snapshots.SnapshotStore`, every lifecycle event gets two snapshots
(a crop and a scaled frame) rendered from the frame *after* :class:`~linli.vision.privacy.
PrivacyFilter` redacted it; rendering and encoding run on the same pool, and the references go
into the event (``data["snapshots"]``, ``data["redacted"]``) before it reaches the sink. If
redaction fails, the event goes without snapshots: an unredacted image is never stored.

The pipeline also keeps per-camera health (:meth:`VisionPipeline.health`) and turns a camera's
health transitions into ``camera.degraded`` / ``camera.recovered`` events, once per transition.
A failing detector is counted per camera and never stops the camera's task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from linli.events import Event, new_event
from linli.vision.privacy import PrivacyFilter, fill_masks
from linli.vision.snapshots import SnapshotStore, attach, render_crop, render_frame
from linli.vision.sources import Camera
from linli.vision.tracker import CameraTracker, TrackerConfig

log = logging.getLogger("linli.vision")

Polygon = Sequence[Sequence[float]]
# Camera lifecycle events that get snapshots (all the tracker emits).
SNAPSHOT_TYPES = ("garbage.pile.detected", "garbage.pile.updated", "garbage.pile.cleared", "bin.overflow.detected", "bin.overflow.cleared")
_LABELS = {"garbage.pile": "garbage", "bin.overflow": "overflow"}


@dataclass
class CameraSpec:
    """One camera's settings (zones and masks are polygons in frame pixels).

    ``watchdog_s``: no frame for this long -> the camera is degraded and reopened, with
    exponential ``backoff`` (first, longest delay in seconds) between tries.
    """

    name: str
    interval_s: float = 5.0
    zones: list = field(default_factory=list)  # empty: the whole frame counts
    masks: list = field(default_factory=list)  # blacked out before inference and snapshots
    min_box_px: float = 16.0  # smaller boxes (far away, or noise) are ignored
    thresholds: dict = field(default_factory=lambda: {"garbage": 0.3, "overflow": 0.35})
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    watchdog_s: float = 30.0
    backoff: tuple = (1.0, 60.0)

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
    out = frame.copy()
    fill_masks(out, masks)
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


def model_failed_event(model, error) -> Event:
    """The ``vision.model_failed`` event for a model that cannot be loaded (the service emits
    it, then runs the cameras with ``detector=None``).

    >>> model_failed_event("/m/x.onnx", ValueError("truncated")).data
    {'model': '/m/x.onnx', 'error': 'truncated'}
    """
    return new_event("vision.model_failed", data={"model": str(model), "error": str(error) or error.__class__.__name__})


def _r(v: Optional[float], nd: int = 1) -> Optional[float]:
    return None if v is None else round(float(v), nd)


class _Stats:
    """What the pipeline measures for one camera (see :meth:`VisionPipeline.health`)."""

    def __init__(self):
        self.samples = 0
        self.inference_ms: Optional[float] = None
        self.tracking_ms: Optional[float] = None
        self.snapshot_ms: Optional[float] = None
        self.read_ms: Optional[float] = None  # time waiting for a frame, when the camera has no decode_ms
        self.detector_failures = 0
        self.detector_error: Optional[str] = None
        self.detector_ok = True
        self.snapshot_errors = 0
        self.snapshot_error: Optional[str] = None
        self.snapshots = 0
        self.redacted = {"faces": 0, "people": 0, "masks": 0}
        self.times: deque = deque(maxlen=20)  # monotonic times of the last samples: fps
        # camera.degraded / camera.recovered bookkeeping
        self.announced = False
        self.down_since_wall: Optional[float] = None
        self.down_since_mono: Optional[float] = None
        self.seen_errors = 0
        self.frames_at_error = 0


class VisionPipeline:
    """Runs cameras -> detector -> trackers -> ``sink.add(events)`` (the outbox).

    ``detector`` may be ``None`` (the model could not be loaded; see :func:`model_failed_event`):
    the cameras are then still sampled and watched, and their health says why nothing is
    detected. ``snapshots`` turns on snapshots; ``privacy`` is the redaction applied to them
    (default: :class:`PrivacyFilter()`, which refuses to start without its face cascades).
    ``recover_frames`` good frames in a row are needed before a degraded camera is announced
    recovered (a camera that fails every other read does not flap).

    Example::

        pipe = VisionPipeline([(CameraSpec("gate"), open_source(url))], Detector.default(), outbox,
                              state_dir=data / "vision", snapshots=SnapshotStore(data / "snapshots"))
        await pipe.start()
        pipe.health()["gate"]["state"]     # "ok"
    """

    def __init__(self, cameras: Sequence[tuple[CameraSpec, Any]], detector, sink, *, threads: int = 1,
                 state_dir: Optional[Path] = None, clock=time.time, snapshots: Optional[SnapshotStore] = None,
                 privacy: Optional[PrivacyFilter] = None, health_poll_s: float = 0.5, recover_frames: int = 2):
        self.detector = detector
        self.sink = sink
        self.clock = clock
        self.state_dir = Path(state_dir) if state_dir else None
        self.snapshots = snapshots
        # No snapshot store, no images: the filter is only needed (and only loaded) with one.
        self.privacy = privacy if privacy is not None or snapshots is None else PrivacyFilter()
        self.health_poll_s = health_poll_s
        self.recover_frames = recover_frames
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="linli-infer")
        # The detector reuses its input buffers and the privacy filter its classifiers: one call
        # at a time each, whatever the pool size.
        self._detect_lock = threading.Lock()
        self._privacy_lock = threading.Lock()
        self._cams: list[tuple[CameraSpec, Camera, CameraTracker]] = []
        for spec, source in cameras:
            cam = Camera(spec.name, source, interval_s=spec.interval_s, watchdog_s=spec.watchdog_s, backoff=tuple(spec.backoff))
            self._cams.append((spec, cam, self._load_tracker(spec)))
        self._stats: dict[str, _Stats] = {spec.name: _Stats() for spec, _, _ in self._cams}
        self._tasks: list[asyncio.Task] = []

    # -- tracker state -----------------------------------------------------------------------------
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

    # -- figures -----------------------------------------------------------------------------------
    @property
    def cameras(self) -> list[Camera]:
        return [c for _, c, _ in self._cams]

    @property
    def samples(self) -> dict[str, int]:
        """Frames fully processed so far (detected, tracked, events handed to the sink), per camera."""
        return {name: s.samples for name, s in self._stats.items()}

    @property
    def inference_ms(self) -> dict[str, float]:
        """The last inference time per camera (cameras with none yet are absent)."""
        return {name: s.inference_ms for name, s in self._stats.items() if s.inference_ms is not None}

    def health(self) -> dict[str, dict]:
        """Per camera, JSON-ready: ``state`` (``starting``/``ok``/``degraded``), ``fps``
        (samples per second over the last 20), ``decode_ms`` (read + decode of the last frame),
        ``inference_ms``, ``tracking_ms``, ``snapshot_ms`` (redaction + rendering + storing of the
        last event frame), ``last_frame_age_s``, ``frames``, ``samples``, ``reconnects``,
        ``errors`` (failed reads), ``detector_failures``, ``snapshot_errors``, ``snapshots``,
        ``redacted`` (totals), ``tracks`` (confirmed objects followed), ``last_error``.

        ``state`` is ``degraded`` while the camera gives no frames, while its detector fails,
        or when there is no detector at all.
        """
        out = {}
        for spec, cam, tracker in self._cams:
            s, h = self._stats[spec.name], cam.health
            state = h.state
            last_error = h.last_error if h.state == "degraded" else None
            if self.detector is None:
                state, last_error = "degraded", "no detector (the model could not be loaded)"
            elif not s.detector_ok and state == "ok":
                state, last_error = "degraded", "detector: %s" % s.detector_error
            fps = None
            if len(s.times) >= 2 and s.times[-1] > s.times[0]:
                fps = (len(s.times) - 1) / (s.times[-1] - s.times[0])
            age = h.age()
            decode = h.decode_ms if h.frames else s.read_ms
            out[spec.name] = {
                "state": state, "fps": _r(fps, 3), "decode_ms": _r(decode), "inference_ms": _r(s.inference_ms),
                "tracking_ms": _r(s.tracking_ms, 2), "snapshot_ms": _r(s.snapshot_ms), "last_frame_age_s": _r(age, 2),
                "frames": h.frames, "samples": s.samples, "reconnects": h.reconnects, "errors": h.errors,
                "detector_failures": s.detector_failures, "last_detector_error": s.detector_error,
                "snapshot_errors": s.snapshot_errors, "last_snapshot_error": s.snapshot_error,
                "snapshots": s.snapshots, "redacted": dict(s.redacted), "tracks": tracker.confirmed,
                "interval_s": spec.interval_s, "last_error": last_error or h.last_error,
            }
        return out

    # -- running -------------------------------------------------------------------------------------
    async def start(self) -> None:
        for spec, cam, tracker in self._cams:
            await cam.start()
            self._tasks.append(asyncio.create_task(self._run(spec, cam, tracker), name="vision:%s" % spec.name))
        self._tasks.append(asyncio.create_task(self._watch(), name="vision:health"))

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

    def _detect(self, frame):
        with self._detect_lock:
            return self.detector.detect(frame)

    async def _run(self, spec: CameraSpec, cam: Camera, tracker: CameraTracker) -> None:
        loop = asyncio.get_running_loop()
        st = self._stats[spec.name]
        while True:
            t_wait = time.perf_counter()
            _, frame = await cam.next()
            st.read_ms = (time.perf_counter() - t_wait) * 1000.0
            if self.detector is None:
                continue  # cameras stay watched (health, degraded/recovered); nothing to detect
            masked = apply_masks(frame, spec.masks)
            t0 = time.perf_counter()
            try:
                dets = await loop.run_in_executor(self._pool, self._detect, masked)
            except Exception as exc:  # a model error must not stop the camera or the gateway
                st.detector_failures += 1
                st.detector_error = "%s: %s" % (exc.__class__.__name__, exc)
                if st.detector_ok:
                    log.error("camera %s: detection failed: %s", spec.name, st.detector_error)
                st.detector_ok = False
                continue  # a failed detection is not an absence: the tracker is not told
            if not st.detector_ok:
                log.info("camera %s: detection works again", spec.name)
            st.detector_ok = True
            st.inference_ms = (time.perf_counter() - t0) * 1000.0
            st.times.append(time.monotonic())
            t1 = time.perf_counter()
            events = tracker.update(self.clock(), keep(dets, spec))
            st.tracking_ms = (time.perf_counter() - t1) * 1000.0
            if events:
                if self.snapshots is not None:
                    await self._snapshot(loop, spec, st, masked, events)
                await self.sink.add(events)
            self._save(spec, tracker)
            st.samples += 1  # counted once the sample is fully done (events stored, state saved)

    # -- snapshots -----------------------------------------------------------------------------------
    async def _snapshot(self, loop, spec: CameraSpec, st: _Stats, frame: np.ndarray, events: list[Event]) -> None:
        t0 = time.perf_counter()
        try:
            counts, stored = await loop.run_in_executor(self._pool, self._render_and_store, spec, frame, events)
        except Exception as exc:  # PrivacyError, SnapshotError, a full disk: the events still go
            st.snapshot_errors += 1
            st.snapshot_error = "%s: %s" % (exc.__class__.__name__, exc)
            log.error("camera %s: no snapshot for %d event(s): %s", spec.name, len(events), st.snapshot_error)
            return
        st.snapshot_ms = (time.perf_counter() - t0) * 1000.0
        st.snapshots += stored
        for k, v in counts.items():
            st.redacted[k] += v

    def _render_and_store(self, spec: CameraSpec, frame: np.ndarray, events: list[Event]) -> tuple[dict, int]:
        """In the pool: redact once, render and store two JPEGs per event, then attach the refs.
        Nothing is attached (and so nothing published) unless every step succeeded."""
        with self._privacy_lock:
            safe, found = self.privacy.redact(frame, spec.masks)
        counts = found.as_dict()
        done = []
        for ev in events:
            if ev.type not in SNAPSHOT_TYPES or "box" not in ev.data:
                continue
            box = ev.data["box"]
            label = "%s %d" % (_LABELS.get(ev.type.rsplit(".", 1)[0], "object"), ev.data.get("track_id", 0))
            if ev.type.endswith(".cleared"):
                label += " cleared"
            crop = render_crop(safe, box)[0]
            full = render_frame(safe, box, label)[0]
            refs = [self.snapshots.put(ev.id, "crop", crop), self.snapshots.put(ev.id, "frame", full)]
            done.append((ev, refs))
        for ev, refs in done:
            attach(ev.data, refs, counts)
        return counts, 2 * len(done)

    # -- camera health transitions -----------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.health_poll_s)
            events = []
            for spec, cam, _ in self._cams:
                ev = self._transition(spec.name, cam)
                if ev is not None:
                    events.append(ev)
            if events:
                try:
                    await self.sink.add(events)
                except Exception:  # the outbox's problem is reported there; keep watching
                    log.exception("camera health events not stored")

    def _transition(self, name: str, cam: Camera) -> Optional[Event]:
        """camera.degraded on the first degraded observation, camera.recovered once the camera
        has given ``recover_frames`` frames with no error in between; None otherwise."""
        s, h = self._stats[name], cam.health
        if h.errors != s.seen_errors:
            s.seen_errors, s.frames_at_error = h.errors, h.frames
        if h.state == "degraded" and not s.announced:
            s.announced = True
            s.down_since_wall, s.down_since_mono = time.time(), time.monotonic()
            return new_event("camera.degraded", source="camera/%s" % name, data={"camera": name, "reason": h.last_error or "no frames", "since": round(s.down_since_wall, 3)})
        if s.announced and h.state == "ok" and h.frames - s.frames_at_error >= self.recover_frames:
            s.announced = False
            down = time.monotonic() - s.down_since_mono
            return new_event("camera.recovered", source="camera/%s" % name, data={"camera": name, "down_s": round(down, 3)})
        return None
