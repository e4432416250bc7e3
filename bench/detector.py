"""Latency of the garbage detector, as the gateway runs it.

For each model: median of the bare ``session.run`` on a prepared input tensor, and median of
the whole ``Detector.detect`` call (letterbox + normalise, run, decode + NMS + mapping back to
frame pixels) on the same frame; their ratio (goal: at most 1.25). All calls of all models are
timed in alternation, so that models compared in one run see the same CPU load. The frame is a
1280x720 camera-shaped frame made from a test image, already decoded (as a camera hands it over).
The last line holds the figures.

    python bench/detector.py                       # shipped int8 and, if present, the fp32 export
    python bench/detector.py --model my-yolo11n.onnx --threads 4
    python bench/detector.py --model models/garbage-det-320.int8.onnx --model other.int8.onnx
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "tests" / "data" / "detector" / "images" / "002889.jpg"
FP32_CANDIDATES = (ROOT / "models" / "garbage-det-320.onnx",
                   ROOT / "models" / "runs" / "garbage" / "garbage-det-320.onnx",
                   # the fp32 that `python -m models.train requantize` rebuilds from the int8 file
                   ROOT / "models" / "runs" / "requantize" / "garbage-det-320.onnx")


def interleaved_ms(fns, runs: int, warmup: int) -> list[float]:
    """Median ms of each function, timed in alternation so that both see the same CPU load
    (the gateway shares its cores)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    ts = [[] for _ in fns]
    for _ in range(runs):
        for fn, t_list in zip(fns, ts):
            t = time.perf_counter()
            fn()
            t_list.append(time.perf_counter() - t)
    return [1000 * statistics.median(t) for t in ts]


def load(path: str, threads: int):
    from linli.detector import DEFAULT_MANIFEST, Detector, manifest_entry

    manifest = None
    try:
        manifest_entry(DEFAULT_MANIFEST, path)
        manifest = DEFAULT_MANIFEST
    except Exception:  # not a shipped file: no checksum to compare against
        pass
    return Detector(path, manifest=manifest, threads=threads)


def bench(paths: list[str], frame, threads: int, runs: int, warmup: int) -> list[dict]:
    dets = [load(p, threads) for p in paths]
    fns = []
    for det in dets:
        x = det.preprocess(frame)[0].copy()  # the detector's buffer is refilled by detect()
        fns += [lambda det=det, x=x: det.run(x), lambda det=det: det.detect(frame)]
    ms = interleaved_ms(fns, runs, warmup)
    return [{"model": p, "run": ms[2 * i], "detect": ms[2 * i + 1], "ratio": ms[2 * i + 1] / ms[2 * i],
             "boxes": len(det.detect(frame))} for i, (p, det) in enumerate(zip(paths, dets))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="model(s) to time (default: int8 + fp32)")
    ap.add_argument("--image", default=str(IMAGE))
    ap.add_argument("--frame", default="1280x720", help="frame size the image is resized to (WxH)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    a = ap.parse_args(argv)
    from linli.detector import DEFAULT_MODEL

    models = a.model
    if not models:
        models = [str(DEFAULT_MODEL)]
        fp32 = next((str(p) for p in FP32_CANDIDATES if p.is_file()), None)
        if fp32 and os.path.abspath(fp32) != os.path.abspath(DEFAULT_MODEL):
            models.insert(0, fp32)
        elif not fp32:
            print("no fp32 export found; make one with `python -m models.train export --ckpt "
                  "models/runs/garbage/last.pt --out models/runs/garbage/garbage-det-320.onnx`",
                  file=sys.stderr)
    img = cv2.imread(a.image)
    if img is None:
        sys.exit(f"cannot read {a.image}")
    w, h = (int(v) for v in a.frame.lower().split("x"))
    frame = cv2.resize(img, (w, h))
    results = bench(models, frame, a.threads, a.runs, a.warmup)
    for r in results:
        m = r["model"]
        print(f"{Path(m).name}: session.run {r['run']:.2f} ms, detect() {r['detect']:.2f} ms "
              f"(x{r['ratio']:.2f}), {r['boxes']} boxes on a {w}x{h} frame, {a.threads} threads")
    tag = lambda m: "int8" if "int8" in Path(m).name else ("fp32" if "garbage-det" in Path(m).name else Path(m).stem)
    tags = [tag(r["model"]) for r in results]
    if len(set(tags)) < len(tags):  # two int8 files, say: name them by file
        tags = [Path(r["model"]).name for r in results]
    print(" | ".join(f"{t}: run {r['run']:.2f} ms, detect {r['detect']:.2f} ms, "
                     f"detect/run {r['ratio']:.2f}" for t, r in zip(tags, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
