"""Camera frame sources behind one interface, and a per-camera sampler with a watchdog.

Sources (picked by the URL's form, see :func:`open_source`):

* ``rtsp://...``, ``http(s)://...mjpg`` streams, video files, V4L2 devices (``/dev/video0`` or
  ``v4l2:0``): OpenCV's ``VideoCapture`` (FFmpeg backend), read in an executor;
* ``http(s)://...jpg`` style snapshot URLs (``snapshot+http://...`` forces it): one GET per sample;
* a folder of images (``folder:/path`` or a directory path): for demos and tests, in name order.

Piles change slowly, so a camera is *sampled* (default every 5 s), not streamed: a streaming
source is drained with ``grab()`` and only the sampled frame is decoded. :class:`Camera` keeps at
most one frame waiting (a newer one replaces it), and its watchdog reconnects with exponential
backoff when no frame came for ``watchdog_s``; the camera is then ``degraded`` and the others go on.

>>> import tempfile, numpy as np, cv2, os
>>> d = tempfile.mkdtemp(); _ = cv2.imwrite(os.path.join(d, "a.jpg"), np.zeros((48, 64, 3), np.uint8))
>>> src = open_source(d)
>>> src.read().shape
(48, 64, 3)
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from linli.errors import LinliError

log = logging.getLogger("linli.vision.sources")
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


class SourceError(LinliError):
    """A camera could not be opened or gave no frame; the message says which and why."""


class FolderSource:
    """Images of a folder in name order (loops at the end when ``loop``)."""

    def __init__(self, path: str, loop: bool = True):
        self.path = Path(path)
        self.loop = loop
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError("folder %s does not exist" % self.path)
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in _IMAGE_EXT)
        if not self._files:
            raise SourceError("folder %s has no images" % self.path)
        self._i = 0

    def read(self) -> np.ndarray:
        import cv2

        if not self._files:
            self.open()
        if self._i >= len(self._files):
            if not self.loop:
                raise SourceError("folder %s: no more images" % self.path)
            self._i = 0
        p = self._files[self._i]
        self._i += 1
        frame = cv2.imread(str(p))
        if frame is None:
            raise SourceError("%s is not a readable image" % p)
        return frame

    def close(self) -> None:
        self._files = []


class SnapshotSource:
    """One HTTP(S) GET per sample, answered with a JPEG/PNG."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray:
        import cv2

        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as r:
                data = r.read()
        except OSError as exc:
            raise SourceError("snapshot %s: %s" % (self.url, exc)) from None
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise SourceError("snapshot %s did not return an image (%d bytes)" % (self.url, len(data)))
        return frame

    def close(self) -> None:
        pass


class CaptureSource:
    """OpenCV ``VideoCapture``: RTSP, MJPEG over HTTP, video files, V4L2 devices.

    A **live** source (a stream or a device, not a file) keeps producing frames whether we read
    them or not, and the backend buffers what we do not take: sampled every few seconds, a plain
    ``read()`` would return a frame from seconds or minutes ago. So a live source is drained by
    a thread that ``grab()``s every frame as it arrives (demux and decode, no colour conversion)
    and a sample ``retrieve()``s only the newest one. ``width`` asks the driver for a smaller
    frame size where it can (V4L2; for RTSP cameras pick the sub-stream in the URL); ``loop``
    restarts a video file at its end.

    ``reopen=True`` (a camera's ``decode = "sample"``) connects for each sample instead, takes
    the first frame the decoder gives (it starts at a keyframe) and disconnects: for long
    intervals this decodes one frame per sample instead of every frame of the stream, at the
    cost of a connection (about a second for RTSP) per sample.
    """

    def __init__(self, target, *, loop: bool = False, width: Optional[int] = None, live: Optional[bool] = None, reopen: bool = False):
        self.target = target
        self.loop = loop
        self.width = width
        self.live = live if live is not None else not (isinstance(target, str) and os.path.isfile(target))
        self.reopen = reopen and self.live  # a file is read on, not restarted per sample
        self.grabbed = 0  # frames taken off the source (drained or sampled)
        self._cap = None
        self._drain: Optional[_Drain] = None

    def open(self) -> None:
        import cv2

        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise SourceError("cannot open camera %s (unreachable, wrong URL or no such device)" % (self.target,))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the newest frame, not a backlog (where honoured)
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        self._cap = cap
        if self.live and not self.reopen:
            self._drain = _Drain(self, cap)

    def read(self) -> np.ndarray:
        if self._cap is None:
            self.open()
        if self._drain is not None:
            return self._drain.newest()
        try:
            ok, frame = self._cap.read()
        finally:
            if self.reopen:
                self.close()
        if not ok and self.loop and isinstance(self.target, str) and os.path.isfile(self.target):
            import cv2

            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            raise SourceError("camera %s gave no frame" % (self.target,))
        self.grabbed += 1
        return frame

    def close(self) -> None:
        if self._drain is not None:
            self._drain.stop()  # the drain releases its capture, now or when its grab() returns
            self._drain = None
        elif self._cap is not None:
            self._cap.release()
        self._cap = None


class _Drain:
    """One live capture's drain thread. It alone touches the capture: it grabs every frame, and
    when a sample is wanted it retrieves the next one itself and hands it over, so the capture is
    never used from two threads and a grab() blocked on a dead stream holds no lock. It releases
    the capture on the way out, so close() never releases it under a blocked grab()."""

    def __init__(self, src: CaptureSource, cap):
        self.src, self.cap = src, cap
        self.cond = threading.Condition()
        self.want = False  # a reader waits for the next frame
        self.frame: Optional[np.ndarray] = None
        self.error: Optional[str] = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="camera-drain", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopped:
                ok = self.cap.grab()
                with self.cond:
                    if not ok:
                        self.error = "camera %s stopped sending frames" % (self.src.target,)
                        return
                    self.src.grabbed += 1
                    if self.want:
                        got, frame = self.cap.retrieve()
                        self.frame = frame if got else None
                        self.want = False
                        self.cond.notify_all()
        finally:
            with self.cond:
                self.cap.release()
                self.stopped = True
                self.cond.notify_all()

    def newest(self) -> np.ndarray:
        """The next frame the source sends (blocks until then; the camera's watchdog, an executor
        read with a timeout, covers a source that goes quiet)."""
        with self.cond:
            if self.stopped:
                raise SourceError(self.error or "camera %s closed" % (self.src.target,))
            self.want, self.frame = True, None
            self.cond.wait_for(lambda: not self.want or self.stopped)
            if self.want:
                self.want = False
                raise SourceError(self.error or "camera %s closed" % (self.src.target,))
            frame, self.frame = self.frame, None
        if frame is None:
            raise SourceError("camera %s gave no frame" % (self.src.target,))
        return frame

    def stop(self) -> None:
        self.stopped = True  # seen between grabs; no lock needed
        with self.cond:
            self.cond.notify_all()
        self.thread.join(5)


def open_source(url: str, *, decode: Optional[str] = None, width: Optional[int] = None, **kw):
    """The source for a camera URL (see the module doc); nothing is opened yet. ``decode``
    (``"stream"`` or ``"sample"``, see :class:`CaptureSource`) and ``width`` apply to streams
    and devices only."""
    cap_kw = dict(kw, reopen=decode == "sample", width=width)
    if url.startswith("folder:"):
        return FolderSource(url[7:], **kw)
    if url.startswith("snapshot+"):
        return SnapshotSource(url[9:], **kw)
    if url.startswith(("http://", "https://")) and url.lower().split("?")[0].endswith((".jpg", ".jpeg", ".png")):
        return SnapshotSource(url, **kw)
    if url.startswith("v4l2:"):
        return CaptureSource(int(url[5:]), **cap_kw)
    if os.path.isdir(url):
        return FolderSource(url, **kw)
    return CaptureSource(url, **cap_kw)


@dataclass
class CameraHealth:
    """Per-camera figures for `linli doctor` and metrics."""

    state: str = "starting"  # starting, ok, degraded
    frames: int = 0
    errors: int = 0
    reconnects: int = 0
    last_frame_at: Optional[float] = None
    last_error: Optional[str] = None
    decode_ms: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def fps(self) -> float:
        return self.frames / max(time.monotonic() - self.started, 1e-6)

    def age(self) -> Optional[float]:
        return None if self.last_frame_at is None else time.monotonic() - self.last_frame_at


class Camera:
    """Samples one source every ``interval_s`` into a one-slot queue, with a watchdog.

    ``await camera.next()`` returns ``(monotonic time, frame)``; blocking reads run in an
    executor so the event loop never waits on a camera.
    """

    def __init__(self, name: str, source, *, interval_s: float = 5.0, watchdog_s: float = 30.0, backoff: tuple[float, float] = (1.0, 60.0)):
        self.name = name
        self.source = source
        self.interval_s = interval_s
        self.watchdog_s = watchdog_s
        self.backoff = backoff
        self.health = CameraHealth()
        self.frames: asyncio.Queue = asyncio.Queue(maxsize=1)
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="camera:%s" % self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.get_running_loop().run_in_executor(None, self.source.close)

    async def next(self) -> tuple[float, np.ndarray]:
        return await self.frames.get()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff[0]
        while True:
            t0 = time.monotonic()
            try:
                frame = await self._read(loop)
            except (SourceError, asyncio.TimeoutError, OSError) as exc:
                self._failed(str(exc) or "no frame within %.0f s" % self.watchdog_s)
                await loop.run_in_executor(None, self.source.close)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                self.health.reconnects += 1
                continue
            delay = self.backoff[0]
            h = self.health
            h.decode_ms = (time.monotonic() - t0) * 1000.0
            h.frames += 1
            h.last_frame_at = time.monotonic()
            if h.state != "ok":
                log.info("camera %s: frames flowing", self.name)
            h.state = "ok"
            if self.frames.full():
                self.frames.get_nowait()  # bounded: a newer frame replaces an unprocessed one
            self.frames.put_nowait((h.last_frame_at, frame))
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - t0)))

    async def _read(self, loop) -> np.ndarray:
        # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the read completes (CPython gh-86296), and stop() would then wait forever.
        fut = loop.run_in_executor(None, self.source.read)
        done, _ = await asyncio.wait({fut}, timeout=self.watchdog_s)
        if not done:
            raise asyncio.TimeoutError()
        return fut.result()

    def _failed(self, why: str) -> None:
        h = self.health
        h.errors += 1
        if h.state != "degraded" or h.last_error != why:
            log.warning("camera %s degraded: %s (reconnecting with backoff)", self.name, why)
        h.state = "degraded"
        h.last_error = why
