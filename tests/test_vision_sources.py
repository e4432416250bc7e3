"""Frame sources on real files and a real HTTP server; a camera that dies and comes back."""

import asyncio
import http.server
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from linli.vision.sources import Camera, CaptureSource, FolderSource, SnapshotSource, SourceError, open_source

IMAGES = Path(__file__).parent / "data" / "detector" / "images"


def test_folder_source_in_name_order_and_loops():
    src = open_source(str(IMAGES))
    assert isinstance(src, FolderSource)
    names = sorted(p for p in IMAGES.iterdir() if p.suffix == ".jpg")
    first = src.read()
    assert first.shape == cv2.imread(str(names[0])).shape
    for _ in range(len(names) - 1):
        src.read()
    assert np.array_equal(src.read(), first)  # looped
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource("/no/such/folder").read()


def test_video_file_source(tmp_path):
    path = str(tmp_path / "clip.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(4):
        w.write(np.full((48, 64, 3), i * 60, np.uint8))
    w.release()
    src = open_source(path, loop=True, decode="sample")  # a file is read on even when sampled
    assert isinstance(src, CaptureSource) and not src.live and not src.reopen
    levels = [int(src.read().mean()) for _ in range(6)]
    assert levels[:4] == sorted(levels[:4]) and abs(levels[4] - levels[0]) < 5  # looped to the start
    src.close()
    with pytest.raises(SourceError, match="cannot open camera"):
        CaptureSource(str(tmp_path / "missing.mp4")).open()


class _Snap(http.server.BaseHTTPRequestHandler):
    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.jpeg)))
        self.end_headers()
        self.wfile.write(self.jpeg)

    def log_message(self, *a):
        pass


def serve(port=0):
    srv = http.server.HTTPServer(("127.0.0.1", port), _Snap)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_dead_camera_degrades_reconnects_and_others_keep_going():
    srv = serve()
    port = srv.server_address[1]

    async def main():
        snap = Camera("gate", open_source("http://127.0.0.1:%d/snap.jpg" % port, timeout=1.0), interval_s=0.05, watchdog_s=2, backoff=(0.05, 0.2))
        other = Camera("yard", FolderSource(str(IMAGES)), interval_s=0.05)
        await snap.start()
        await other.start()
        t, frame = await asyncio.wait_for(snap.next(), 5)
        assert frame.shape == (48, 64, 3) and snap.health.state == "ok"
        srv.shutdown()
        srv.server_close()
        for _ in range(100):
            if snap.health.state == "degraded":
                break
            await asyncio.sleep(0.05)
        assert snap.health.state == "degraded" and "snapshot" in snap.health.last_error
        n = other.health.frames
        await asyncio.sleep(0.3)
        assert other.health.frames > n and other.health.state == "ok"  # unaffected
        back = serve(port)
        for _ in range(100):
            if snap.health.state == "ok":
                break
            await asyncio.sleep(0.05)
        assert snap.health.state == "ok" and snap.health.reconnects >= 1
        assert snap.frames.qsize() <= 1  # bounded: never a backlog
        await snap.stop()
        await other.stop()
        back.shutdown()
        back.server_close()

    asyncio.run(main())


class _Stream(http.server.BaseHTTPRequestHandler):
    """A live MJPEG camera: 50 frames a second whether anyone reads them or not; frame i is a
    flat grey of level 20 + i (so a sampled frame tells how old it is)."""

    sent = 0
    pause = threading.Event()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        i = 0
        try:
            while i < 220:
                if _Stream.pause.is_set():
                    time.sleep(0.05)
                    continue
                jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 20 + i, np.uint8))[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                _Stream.sent = i
                i += 1
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *a):
        pass


def test_a_live_stream_sampled_slowly_gives_its_newest_frame_not_a_buffered_one():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    src = open_source("http://127.0.0.1:%d/stream.mjpg" % srv.server_address[1])
    try:
        assert isinstance(src, CaptureSource) and src.live
        src.read()
        time.sleep(1.5)  # ~75 frames go by between two samples, as between two 5 s samples of a real camera
        level = int(round(src.read().mean())) - 20
        behind = _Stream.sent - level
        # The newest frame (give or take the ones in flight and a race with the counter), not
        # frame 1 from the socket buffer.
        assert -2 <= behind <= 5 and level > 40, (level, _Stream.sent)  # JPEG rounds the grey by 1
        assert src.grabbed > 40  # the frames in between were drained, not decoded into samples
        # The stream ends (after frame 219): a sample then says so.
        with pytest.raises(SourceError, match="stopped sending frames"):
            for _ in range(300):
                src.read()
    finally:
        src.close()
        srv.shutdown()


def test_a_sampled_stream_connects_per_sample_and_decodes_one_frame():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    src = open_source("http://127.0.0.1:%d/stream.mjpg" % srv.server_address[1], decode="sample")
    try:
        for _ in range(2):
            frame = src.read()
            assert frame.shape == (48, 64, 3)
            assert src._cap is None and src._drain is None  # disconnected between samples
        assert src.grabbed == 2  # one frame decoded per sample, none drained
    finally:
        src.close()
        srv.shutdown()
