"""Per-frame cost of the camera pipeline, stage by stage, on one core, on real images.

Each image (from ``../shared/datasets/garbage-cn/images`` when present, else the test images) is
made into what a camera sends: resized to a camera frame (default 1280x720) and JPEG-encoded
(quality 80). Then, per frame, the median ms of:

* ``decode``: JPEG bytes -> BGR frame (``cv2.imdecode``, what a snapshot camera costs);
* ``resize``: letterbox + normalise into the model's input (``Detector.preprocess``);
* ``infer``: the shipped int8 model (``session.run``, one intra-op thread) + box decoding/NMS;
* ``track``: zone/threshold filter + the pile tracker's update;
* ``privacy``: masks + Haar faces (frontal, profile both ways) + HOG people, and the blur;
* ``snapshot``: crop and scaled frame rendered, JPEG-encoded and stored (two atomic writes).

``total`` is what every sampled frame costs (decode + resize + infer + track): privacy and
snapshot run only for frames that carry a lifecycle event (detected/updated/cleared: a few per
pile per day), so they are listed apart and summed in ``total_with_event``. ``fps_per_core`` is
1000 / total and ``cameras_at_5s_per_core`` how many cameras sampled every 5 s one core can
follow (5000 / total). OpenCV and onnxruntime are held to one thread. The last line holds the
figures.

    python bench/vision.py                    # ~30-60 s
    python bench/vision.py --images 5 --frame 1920x1080
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets" / "garbage-cn" / "images"
TEST_IMAGES = ROOT / "tests" / "data" / "detector" / "images"


def timed(fn, reps: int = 1):
    """(result of the last call, median ms over ``reps`` calls)."""
    ts, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return out, 1000 * statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8, help="how many images (spread over the folder)")
    ap.add_argument("--frame", default="1280x720", help="camera frame size WxH")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the cheap stages per image")
    ap.add_argument("--folder", default=None, help="image folder (default: the shared dataset, else the test images)")
    a = ap.parse_args(argv)
    W, H = (int(v) for v in a.frame.lower().split("x"))

    from linli.detector import Detector, decode
    from linli.vision.pipeline import CameraSpec, keep
    from linli.vision.privacy import PrivacyFilter
    from linli.vision.snapshots import SnapshotStore, render_crop, render_frame
    from linli.vision.tracker import CameraTracker

    cv2.setNumThreads(1)  # one core: OpenCV's own thread pool would spread decode/resize/Haar
    folder = Path(a.folder) if a.folder else (SHARED if SHARED.is_dir() else TEST_IMAGES)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        print("no images in %s" % folder, file=sys.stderr)
        return 2
    step = max(1, len(files) // a.images)
    files = files[::step][: a.images]
    det = Detector.default(threads=1)
    pf = PrivacyFilter()
    spec = CameraSpec("bench", masks=[[[0, 0], [W // 8, 0], [W // 8, H // 6], [0, H // 6]]])
    trk = CameraTracker("bench")
    stages = {k: [] for k in ("decode", "resize", "infer", "track", "privacy", "snapshot")}
    found = 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = SnapshotStore(tmp)
        for i, path in enumerate(files):
            img = cv2.resize(cv2.imread(str(path)), (W, H), interpolation=cv2.INTER_AREA)
            data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
            buf = np.frombuffer(data, np.uint8)
            frame, ms = timed(lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR), a.reps)
            stages["decode"].append(ms)
            masked = frame.copy()
            (x, r, left, top), ms = timed(lambda: det.preprocess(masked), a.reps)
            stages["resize"].append(ms)

            def infer():
                out = det.run(x)
                return decode(out, det.conf, det.iou, det.max_det)

            _, ms = timed(infer, a.reps)
            stages["infer"].append(ms)
            dets = det.detect(masked)
            found += len(dets)
            _, ms = timed(lambda: trk.update(1000.0 + 5 * i, keep(dets, spec)), 1)
            stages["track"].append(ms)
            (safe, _), ms = timed(lambda: pf.redact(frame, spec.masks), 1)
            stages["privacy"].append(ms)
            box = dets[0].box if dets else (W * 0.4, H * 0.4, W * 0.6, H * 0.6)

            def snapshot():
                store.put("ev%d" % i, "crop", render_crop(safe, box)[0])
                store.put("ev%d" % i, "frame", render_frame(safe, box, "garbage 1")[0])

            _, ms = timed(snapshot, 1)
            stages["snapshot"].append(ms)
    med = {k: statistics.median(v) for k, v in stages.items()}
    total = med["decode"] + med["resize"] + med["infer"] + med["track"]
    with_event = total + med["privacy"] + med["snapshot"]
    print("%d images from %s as %dx%d JPEG frames, %d detections, %.1f s" % (len(files), folder, W, H, found, time.perf_counter() - t_start))
    print("vision: decode=%.1fms resize=%.1fms infer=%.1fms track=%.2fms privacy=%.1fms snapshot=%.1fms "
          "total=%.1fms total_with_event=%.1fms fps_per_core=%.1f cameras_at_5s_per_core=%d frame=%dx%d"
          % (med["decode"], med["resize"], med["infer"], med["track"], med["privacy"], med["snapshot"],
             total, with_event, 1000.0 / total, int(5000.0 / total), W, H))
    return 0


if __name__ == "__main__":
    sys.exit(main())
