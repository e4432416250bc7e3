"""Command line of the training pipeline; run from the repository root::

    python -m models.train reproduce --data ../shared/datasets/garbage-cn   # the shipped model
    python -m models.train fit --epochs 1 --max-images 8 --out /tmp/smoke   # a quick check
    python -m models.train eval --model models/garbage-det-320.onnx --data ../shared/datasets/garbage-cn
    python -m models.train requantize --model models/garbage-det-320.int8.onnx   # new int8 settings
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time


def _recipe_args(p: argparse.ArgumentParser) -> None:
    from .fit import Recipe
    for f in dataclasses.fields(Recipe):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=default)
        elif isinstance(default, list):
            p.add_argument(flag, type=lambda s: [int(v) for v in s.split(",")], default=default)
        else:
            p.add_argument(flag, type=type(default), default=default)


def _bool(s: str) -> bool:
    return s.lower() in ("1", "true", "yes")


def _recipe(a):
    from .fit import Recipe
    return Recipe(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Recipe)})


def main(argv=None) -> int:
    from . import export as E
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fit", help="train (checkpoints in --out)")
    _recipe_args(p)
    p.add_argument("--resume", help="continue from a last.pt")
    p = sub.add_parser("export", help="checkpoint -> ONNX")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--raw", action="store_true", help="export the raw weights, not the EMA")
    p = sub.add_parser("quantize", help="ONNX fp32 -> static int8")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="../shared/datasets/garbage-cn")
    p.add_argument("--calib", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", choices=("int8", "uint8"), default=E.WEIGHTS)
    p.add_argument("--reduce-range", type=_bool, default=E.REDUCE_RANGE, help="7-bit weights")
    p = sub.add_parser("requantize", help="shipped QDQ int8 -> fp32 (weights folded back) -> int8 with "
                       "the current settings, checked, evaluated, with a new manifest")
    p.add_argument("--model", default="models/garbage-det-320.int8.onnx", help="a QDQ model")
    p.add_argument("--out", help="the new int8 file (default: replace --model)")
    p.add_argument("--fp32", default="models/runs/requantize/garbage-det-320.onnx",
                   help="where the rebuilt fp32 goes")
    p.add_argument("--data", default="../shared/datasets/garbage-cn")
    p.add_argument("--calib", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", choices=("int8", "uint8"), default=E.WEIGHTS)
    p.add_argument("--reduce-range", type=_bool, default=E.REDUCE_RANGE, help="7-bit weights")
    p.add_argument("--manifest", default="models/manifest.json", help="written unless --no-manifest")
    p.add_argument("--no-manifest", action="store_true")
    p = sub.add_parser("eval", help="AP50 per class, mAP50, pile recall@P90 of an ONNX model")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="../shared/datasets/garbage-cn")
    p.add_argument("--split", default="val", choices=("val", "train", "all"))
    p.add_argument("--max-images", type=int, default=0)
    p = sub.add_parser("reproduce", help="fit + export + quantize + eval + manifest: the shipped model")
    _recipe_args(p)
    p.add_argument("--resume")
    p.add_argument("--ship", default="models", help="where the ONNX files and manifest go")
    a = ap.parse_args(argv)

    if a.cmd == "fit":
        from .fit import fit
        fit(_recipe(a), resume=a.resume)
    elif a.cmd == "export":
        print(E.export_onnx(a.ckpt, a.out, use_ema=not a.raw))
    elif a.cmd == "quantize":
        print(E.quantize(a.model, a.out, a.data, a.calib, seed=a.seed, weights=a.weights,
                         reduce_range=a.reduce_range))
    elif a.cmd == "requantize":
        res = E.requantize(a.model, a.out or a.model, a.fp32, a.data, a.calib, seed=a.seed,
                           weights=a.weights, reduce_range=a.reduce_range,
                           manifest=None if a.no_manifest else a.manifest)
        print(json.dumps(res, indent=1))
    elif a.cmd == "eval":
        print(json.dumps(E.evaluate_onnx(a.model, a.data, a.split, max_images=a.max_images), indent=1))
    elif a.cmd == "reproduce":
        from .fit import fit
        r = _recipe(a)
        t0 = time.time()
        last = fit(r, resume=a.resume)
        name = f"garbage-det-{r.size}"
        # fp32 stays with the run (11 MB); the int8 file ships (3 MB, faster, as accurate).
        fp32 = E.export_onnx(last, os.path.join(r.out, name + ".onnx"))
        int8 = E.quantize(fp32, os.path.join(a.ship, name + ".int8.onnx"), r.data, seed=r.seed,
                          val_percent=r.val_percent)
        E.check_fused_matches_reference(int8, r.data, r.val_percent)
        res = {m: E.evaluate_onnx(m, r.data, "val", r.val_percent) for m in (fp32, int8)}
        print(json.dumps(res, indent=1))
        E.write_manifest([{"file": int8, "precision": "int8", "default": True, "val": res[int8],
                           "fp32_val": res[fp32]}], os.path.join(a.ship, "manifest.json"))
        print(f"reproduce: {time.time() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
