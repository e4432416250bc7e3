"""Rebuild an fp32 ONNX from a shipped QDQ int8 model, and compare a model's fused and reference
onnxruntime outputs.

``dequantize_qdq`` undoes onnxruntime's static QDQ quantization: every DequantizeLinear of an
initializer (int8 weights or int32 biases times their scale, minus the zero point) becomes an fp32
initializer, and every activation QuantizeLinear -> DequantizeLinear pair is dropped. onnxruntime's
quantizer removes a Conv's ReLU when the Conv's output quantization clips at zero (zero point at
the type's minimum, as MinMax calibration gives after a ReLU) and hands the Conv the ReLU's output
name; those ReLUs are put back, under their old names. The result is
the float network whose weights lie on the int8 grid; re-quantizing it with ``export.quantize`` is
how ``python -m models.train requantize`` changes a model's quantization settings when the fp32
export of its training run is gone.
"""

from __future__ import annotations

import numpy as np

QUANT_KEY = "linli.quantization"


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    q = q.astype(np.float64)
    scale = scale.astype(np.float64)
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float64)
    if scale.ndim == 1 and q.ndim > 1:  # per-channel along ``axis``
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def dequantize_qdq(src: str, out: str) -> str:
    """``src`` (QDQ) -> ``out`` (fp32): same opset, node names, inputs, outputs and metadata
    (``linli.quantization`` is replaced by a note of where the weights came from)."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    m = onnx.load(src)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    arrays = {}

    def arr(name):
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producer = {o: n for n in g.node for o in n.output}
    graph_outputs = {o.name for o in g.output}

    rename: dict[str, str] = {}   # activation DQ output -> the float tensor its Q read
    relu_after: set[str] = set()  # Conv outputs whose Q clipped at zero: a removed ReLU
    new_inits, drop = [], set()
    for n in g.node:
        if n.op_type != "DequantizeLinear":
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if n.input[0] in inits:  # a weight or bias
            w = _dequantize(arr(n.input[0]), arr(n.input[1]), arr(zp) if zp else None, axis)
            new_inits.append(numpy_helper.from_array(w, n.output[0]))
            drop.add(n.name)
            continue
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(consumers[q.output[0]]) != 1:
            raise ValueError(f"{src}: {n.name} is not half of a QuantizeLinear/DequantizeLinear pair")
        if n.output[0] in graph_outputs:
            raise ValueError(f"{src}: graph output {n.output[0]} comes from a DequantizeLinear")
        rename[n.output[0]] = q.input[0]
        drop.update((n.name, q.name))
        p = producer.get(q.input[0])
        zp_q = arr(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        if p is not None and p.op_type == "Conv" and np.all(zp_q == np.iinfo(zp_q.dtype).min):
            relu_after.add(q.input[0])
    kept = []
    for n in g.node:
        if n.name in drop:
            continue
        kept.append(n)
        if n.op_type == "Conv" and n.output[0] in relu_after:
            out_name = n.output[0]
            n.output[0] = out_name + "_preact"
            name = (out_name[:-len("_output_0")] if out_name.endswith("/Relu_output_0")
                    else n.name + "_relu")
            kept.append(onnx.helper.make_node("Relu", [n.output[0]], [out_name], name=name))
    for n in kept:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    old_inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(old_inits + [i for i in new_inits if i.name in used])
    names = used | {o for n in g.node for o in n.output}
    vi = [v for v in g.value_info
          if v.name in names and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    del g.value_info[:]
    g.value_info.extend(vi)
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    for p in m.metadata_props:
        if p.key == QUANT_KEY:
            p.value = f"none: fp32 rebuilt from the QDQ model sha256 {digest[:16]} (weights on its int8 grid)"
    left = [n.op_type for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if left:
        raise ValueError(f"{src}: {len(left)} Q/DQ nodes left after folding")
    onnx.checker.check_model(m)
    onnx.save(m, out)
    return out


def session(model: str, fused: bool, threads: int = 2):
    """An onnxruntime CPU session with all graph optimizations (``fused``: int8 kernels where the
    QDQ pattern allows) or none (the reference semantics: dequantize, float op, quantize)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def fused_vs_reference(model: str, inputs: list[np.ndarray], box_rows: int = 4) -> dict:
    """Largest class-score and box differences between the fused and reference outputs."""
    a, b = session(model, True), session(model, False)
    name = a.get_inputs()[0].name
    score, box = 0.0, 0.0
    for x in inputs:
        ya, yb = a.run(None, {name: x})[0], b.run(None, {name: x})[0]
        score = max(score, float(np.abs(ya[:, box_rows:] - yb[:, box_rows:]).max()))
        box = max(box, float(np.abs(ya[:, :box_rows] - yb[:, :box_rows]).max()))
    return {"score": score, "box": box}
