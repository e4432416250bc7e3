"""``linli detect``: run a detector on image files.

    linli detect street.jpg                       # annotated copies in ./detections/
    linli detect --json --model my-yolo11n.onnx a.jpg b.jpg

With ``--json`` it prints one line per image, boxes in the image's own pixels::

    {"image": "a.jpg", "detections": [{"label": "garbage", "score": 0.91, "box": [x1, y1, x2, y2]}]}

``--json`` lists every candidate down to a score of 0.001 by default (as detection benchmarks
score them), each with its score, so a consumer picks its own operating point; annotated
images keep only those of 0.25 and above. ``--conf`` overrides both.
"""

from __future__ import annotations

import json
import os
import sys


def register(subparsers) -> None:
    from linli.detector import DEFAULT_MODEL

    p = subparsers.add_parser("detect", help="detect garbage piles, bins and overflow in images",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default=None,
                   help=f"ONNX model: ours or an Ultralytics YOLOv8/YOLO11 export (default {DEFAULT_MODEL})")
    p.add_argument("--manifest", default=None,
                   help="manifest.json to check the model's SHA-256 against "
                        "(default: the shipped manifest, for the shipped model)")
    p.add_argument("--json", action="store_true", help="print one JSON line per image")
    p.add_argument("--conf", type=float, default=None,
                   help="lowest score reported (default 0.001 with --json, else 0.25)")
    p.add_argument("--iou", type=float, default=0.5, help="NMS overlap (default 0.5)")
    p.add_argument("--out", default="detections", help="folder for annotated copies (default ./detections)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(handler=run)


def run(args) -> int:
    import cv2

    from linli.detector import DEFAULT_MANIFEST, DEFAULT_MODEL, Detector, DetectorError, draw

    model = args.model or str(DEFAULT_MODEL)
    manifest = args.manifest
    if manifest is None and os.path.abspath(model) == os.path.abspath(DEFAULT_MODEL):
        manifest = str(DEFAULT_MANIFEST)
    conf = args.conf if args.conf is not None else (0.001 if args.json else 0.25)
    try:
        det = Detector(model, manifest=manifest, conf=conf, iou=args.iou,
                       max_det=300 if args.json else 100, threads=args.threads)
    except DetectorError as exc:
        print(f"linli detect: {exc}", file=sys.stderr)
        return 2
    status = 0
    if not args.json:
        os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        img = cv2.imread(path)
        if img is None:
            print(f"linli detect: cannot read image {path}", file=sys.stderr)
            status = 1
            continue
        dets = det.detect(img)
        if args.json:
            print(json.dumps({"image": path, "detections": [d.as_dict() for d in dets]},
                             ensure_ascii=False), flush=False)
        else:
            out = os.path.join(args.out, os.path.basename(path))
            cv2.imwrite(out, draw(img, dets))
            summary = ", ".join(f"{d.label} {d.score:.2f}" for d in dets) or "nothing"
            print(f"{path}: {summary} -> {out}")
    sys.stdout.flush()
    return status
