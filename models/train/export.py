"""Export a checkpoint to ONNX (with labels, input size and preprocessing in its metadata),
quantize it to static int8 with onnxruntime, evaluate ONNX files and write the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings

import numpy as np

from . import data as D

# The shipped int8 settings. Plain U8S8 (uint8 activations x full-range int8 weights) is not
# CPU-independent: on x86 with AVX2 but no VNNI, onnxruntime's fused int8 convolutions multiply
# with VPMADDUBSW, whose 16-bit pair sums saturate when 255 x |w| is large, so the same file gave
# other scores there than in onnxruntime's reference (unfused) execution (0.17 instead of 0.29 on
# a test pile, which the VNNI machine that made it had found). 7-bit weights (reduce_range) keep
# every pair sum below 2^15 on every instruction set, at U8S8 speed. MODEL_CARD.md: "Quantization
# and the CPU".
WEIGHTS = "int8"
REDUCE_RANGE = True
# The largest class-score difference allowed between onnxruntime's fused int8 kernels and its
# reference execution of the same file (tests/test_detector.py checks the shipped file too).
FUSED_TOLERANCE = 0.05

LICENSE = "CC-BY-4.0"
ATTRIBUTION = ("Trained by the linli project on a modified copy of the dataset '公开数据集111' v2 "
               "(Roboflow Universe workspace project-shb1t, project -111-ehcfr), CC BY 4.0; "
               "images resized and re-encoded, one augmented copy per image kept.")


def export_onnx(ckpt_path: str, out: str, use_ema: bool = True) -> str:
    import torch
    import onnx

    from .fit import Recipe, build_model
    from .net import Exportable

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    r = Recipe(**ck["recipe"])
    model = build_model(r)
    model.load_state_dict(ck["ema" if use_ema else "model"])
    wrap = Exportable(model, r.size).eval()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    x = torch.zeros(1, 3, r.size, r.size)
    with warnings.catch_warnings():
        # The TorchScript exporter: deprecated, but it needs no onnxscript and writes a plain,
        # fully static graph that onnxruntime's quantizer handles well.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrap, x, out, input_names=["images"], output_names=["output0"],
                          opset_version=17, dynamo=False, do_constant_folding=True)
    m = onnx.load(out)
    meta = {
        # Ultralytics' keys and formats, so tools written for its exports read ours too.
        "names": repr({i: n for i, n in enumerate(D.NAMES)}),
        "imgsz": repr([r.size, r.size]),
        "stride": "32",
        "task": "detect",
        "batch": "1",
        "description": "linli garbage detector: garbage piles, bins, overflowing bins",
        "author": "linli project",
        "license": LICENSE,
        "attribution": ATTRIBUTION,
        "linli.preprocess": (f"letterbox to {r.size}x{r.size}, centred, scale=min(H/h, W/w), "
                             "pad 114; BGR->RGB; x/255; NCHW float32"),
        "linli.output": "[1, 4+nc, N]: cx, cy, w, h in input pixels, then per-class scores 0..1",
        "linli.epoch": str(ck["epoch"]),
        "linli.weights": "ema" if use_ema else "raw",
    }
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "linli"
    onnx.checker.check_model(m)
    onnx.save(m, out)
    return out


class _Calib:
    """Feeds letterboxed training images (as at inference) to the calibrator."""

    def __init__(self, paths: list[str], size: int, name: str):
        import cv2
        self.items = iter(paths)
        self.size, self.name, self.cv2 = size, name, cv2

    def get_next(self):
        p = next(self.items, None)
        if p is None:
            return None
        canvas, *_ = D.letterbox(self.cv2.imread(p), self.size)
        x = self.cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True)
        return {self.name: x}


def quantize(fp32: str, out: str, data: str, n_calib: int = 200, seed: int = 0, val_percent: int = 12,
             *, weights: str = WEIGHTS, reduce_range: bool = REDUCE_RANGE) -> str:
    """Static 8-bit (QDQ, per-channel weights, uint8 activations), calibrated on ``n_calib``
    training images. The box/score decoding at the end of the graph stays in float.

    ``weights`` is "int8" or "uint8"; ``reduce_range`` keeps weights to 7 bits."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out + ".pre.onnx"
    quant_pre_process(fp32, pre, skip_symbolic_shape=True)
    m = onnx.load(pre)
    size = m.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    # Keep the heads' last 1x1 convs and everything after them (decode) in float.
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    heads = [n for n in m.graph.node if n.op_type == "Conv" and
             any(k in n.name for k in (".box.1/", ".cls.1/", "box.1/Conv", "cls.1/Conv"))]
    if not heads:  # name-independent fallback: convs with 4 or nc output channels
        inits = {i.name: i for i in m.graph.initializer}
        heads = [n for n in m.graph.node if n.op_type == "Conv" and n.input[1] in inits
                 and inits[n.input[1]].dims[0] in (4, len(D.NAMES))]
    exclude, stack = set(), list(heads)
    while stack:
        n = stack.pop()
        if n.name in exclude:
            continue
        exclude.add(n.name)
        for o in n.output:
            stack.extend(consumers.get(o, []))
    rng = np.random.default_rng(seed)
    paths = D.list_split(data, "train", val_percent)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), min(n_calib, len(paths)), replace=False))]
    wtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weights]
    quantize_static(pre, out, _Calib(paths, size, m.graph.input[0].name),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=wtype,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=sorted(exclude),
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    os.remove(pre)
    # carry the metadata over (the quantizer keeps the graph, not always the props)
    src, q = onnx.load(fp32), onnx.load(out)
    del q.metadata_props[:]
    for p in src.metadata_props:
        if p.key != "linli.quantization":  # an fp32 rebuilt from a QDQ file carries a note
            np_ = q.metadata_props.add()
            np_.key, np_.value = p.key, p.value
    np_ = q.metadata_props.add()
    kind = f"U8{'U8' if weights == 'uint8' else 'S8'}" + (", 7-bit weights" if reduce_range else "")
    np_.key, np_.value = "linli.quantization", (f"static 8-bit QDQ ({kind}), per-channel weights, "
                                               f"MinMax on {len(paths)} training images")
    onnx.save(q, out)
    return out


def _val_inputs(model: str, data: str, val_percent: int = 12, n: int = 16) -> list[np.ndarray]:
    """``n`` validation images letterboxed for ``model``, each as a square and stretched to 16:9."""
    import cv2
    import onnx

    m = onnx.load(model, load_external_data=False)
    size = m.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    xs = []
    for p in D.list_split(data, "val", val_percent)[:n]:
        img = cv2.imread(p)
        h, w = img.shape[:2]
        for frame in (img, cv2.resize(img, (round(h * 16 / 9), h))):
            canvas, *_ = D.letterbox(frame, size)
            xs.append(cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True))
    return xs


def check_fused_matches_reference(model: str, data: str, val_percent: int = 12,
                                  tol: float = FUSED_TOLERANCE) -> dict:
    """Raise ValueError unless onnxruntime's fused int8 kernels on this CPU and its reference
    execution (dequantize, float op, quantize) give class scores within ``tol`` of each other:
    a file whose results depend on the CPU's instruction set must not ship."""
    from .requant import fused_vs_reference

    d = fused_vs_reference(model, _val_inputs(model, data, val_percent))
    if d["score"] > tol:
        raise ValueError(f"{model}: fused int8 kernels and reference execution differ by up to "
                         f"{d['score']:.3f} in class score (allowed {tol}): the quantized weights "
                         "saturate this CPU's int8 instructions; use reduce_range or uint8 weights")
    return d


def requantize(src: str, out: str, fp32_out: str, data: str, n_calib: int = 200, seed: int = 0,
               val_percent: int = 12, *, weights: str = WEIGHTS, reduce_range: bool = REDUCE_RANGE,
               manifest: str | None = None) -> dict:
    """A shipped QDQ model -> fp32 (``requant.dequantize_qdq``) -> static int8 with the given
    settings, calibrated as ``quantize`` does; checked (fused vs reference), both evaluated on the
    validation split, and ``manifest`` rewritten for ``out``. ``out`` may be ``src``."""
    from .requant import dequantize_qdq, session

    os.makedirs(os.path.dirname(os.path.abspath(fp32_out)), exist_ok=True)
    src_sha = sha256_of(src)
    dequantize_qdq(src, fp32_out)
    # The rebuilt fp32 against the QDQ file's reference execution: they differ only by the
    # activations' quantization (a few hundredths in score) when the weights were folded right.
    ref, f32 = session(src, fused=False), session(fp32_out, fused=True)
    name = ref.get_inputs()[0].name
    rebuilt = max(float(np.abs(ref.run(None, {name: x})[0][:, 4:] - f32.run(None, {name: x})[0][:, 4:]).max())
                  for x in _val_inputs(src, data, val_percent))
    if rebuilt > 0.15:
        raise ValueError(f"{fp32_out}: scores differ from {src}'s by up to {rebuilt:.3f}; "
                         "the QDQ graph was not folded back correctly")
    tmp = out + ".new.onnx"
    quantize(fp32_out, tmp, data, n_calib, seed, val_percent, weights=weights, reduce_range=reduce_range)
    try:
        fused = check_fused_matches_reference(tmp, data, val_percent)
    except ValueError:
        os.remove(tmp)
        raise
    os.replace(tmp, out)
    res = {"source": src, "source_sha256": src_sha, "fp32": fp32_out, "out": out,
           "fp32_vs_source_reference_score": rebuilt, "fused_vs_reference": fused,
           "val": evaluate_onnx(out, data, "val", val_percent),
           "fp32_val": evaluate_onnx(fp32_out, data, "val", val_percent)}
    if manifest:
        write_manifest([{"file": out, "precision": "int8", "default": True, "val": res["val"],
                         "fp32_val": res["fp32_val"], "requantized_from": src_sha}], manifest)
    return res


def evaluate_onnx(model: str, data: str, split: str = "val", val_percent: int = 12,
                  max_images: int = 0, conf: float = 0.001) -> dict:
    """Score an ONNX detector (ours or Ultralytics') through the gateway's Detector."""
    import cv2
    from linli.detector import Detector

    from .metrics import summary

    det = Detector(model, conf=conf, max_det=300)
    paths = D.list_split(data, split, val_percent)
    if max_images:
        paths = paths[:max_images]
    gts, preds = [], []
    for p in paths:
        img = cv2.imread(p)
        h, w = img.shape[:2]
        stem = os.path.splitext(os.path.basename(p))[0]
        gts.append(D.read_labels(os.path.join(data, "labels", stem + ".txt"), w, h))
        ds = det.detect(img)
        preds.append((np.array([d.box for d in ds], np.float32).reshape(-1, 4),
                      np.array([d.score for d in ds], np.float32),
                      np.array([det.names.index(d.label) if d.label in det.names else -1 for d in ds])))
    s = summary(gts, preds, D.NAMES)
    s["images"] = len(paths)
    return s


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(models: list[dict], out: str) -> str:
    """``models``: dicts with at least ``file`` (path); adds sha256 and size."""
    import onnx
    entries = []
    for e in models:
        path = e["file"]
        m = onnx.load(path, load_external_data=False)
        dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        meta = {p.key: p.value for p in m.metadata_props}
        entries.append({**e, "file": os.path.basename(path), "sha256": sha256_of(path),
                        "bytes": os.path.getsize(path), "input": dims,
                        "labels": list(D.NAMES), "preprocess": meta.get("linli.preprocess"),
                        "license": meta.get("license")})
    doc = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": entries}
    with open(out, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return out
