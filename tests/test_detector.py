"""linli.detector: loading (checksums, typed errors), Ultralytics-shaped models and the shipped
garbage model on real images, boxes in the frame's own pixels; the shipped int8 file gives the
same scores whatever int8 instructions the CPU has, and folds back to fp32 for re-quantizing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from linli import detector as D  # noqa: E402
from linli.errors import LinliError  # noqa: E402

DATA = Path(__file__).parent / "data" / "detector"


# --- tiny hand-built ONNX files shaped like an Ultralytics YOLOv8/YOLO11 export -----------------


def ultralytics_like(path, rows: np.ndarray, names: dict | None, size: int = 320,
                     dynamic: bool = False, in_channels: int = 3) -> str:
    """An ONNX model whose output is the constant ``rows`` ([4 + nc, N]) as ``[1, 4 + nc, N]``,
    whatever the input (it still reads the input, so onnxruntime keeps it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = np.asarray(rows, np.float32)[None]
    dims = ["batch", in_channels, "height", "width"] if dynamic else [1, in_channels, size, size]
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(rows.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["const", "z"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "ultralytics_like", [x], [y],
                              [numpy_helper.from_array(rows, "const"),
                               numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    meta = {"imgsz": repr([size, size]), "stride": "32", "task": "detect", "author": "tests"}
    if names is not None:
        meta["names"] = repr(names)
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, str(path))
    return str(path)


# Three candidate boxes on a 320x320 input, two classes (person, car):
# A person at (110, 135)-(210, 185), a weaker duplicate of it, and a car at (30, 190)-(50, 210).
ROWS = np.array([
    # cx,  cy,   w,   h, person, car
    [160.0, 160.0, 100.0, 50.0, 0.90, 0.05],
    [162.0, 161.0, 98.0, 50.0, 0.80, 0.02],
    [40.0, 200.0, 20.0, 20.0, 0.01, 0.60],
]).T
NAMES = {0: "person", 1: "car"}
# The same boxes in a 1280x720 frame: scale 0.25, letterbox border 70 px at the top.
EXPECTED_1280x720 = {"person": [440.0, 260.0, 840.0, 460.0], "car": [120.0, 480.0, 200.0, 560.0]}


def iou(a, b):
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def labels(stem: str, w: int, h: int):
    out = []
    for line in (DATA / "labels" / f"{stem}.txt").read_text().split("\n"):
        if line.strip():
            c, cx, cy, bw, bh = (float(v) for v in line.split()[:5])
            out.append((int(c), [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]))
    return out


@pytest.fixture
def yolo(tmp_path):
    return ultralytics_like(tmp_path / "yolo11n.onnx", ROWS, NAMES)


# --- Ultralytics-shaped models -------------------------------------------------------------------

def test_ultralytics_model_decodes_into_frame_pixels(yolo):
    det = D.Detector(yolo, conf=0.25)
    assert det.names == ["person", "car"]
    assert (det.height, det.width) == (320, 320)
    dets = det.detect(np.zeros((720, 1280, 3), np.uint8))
    # the duplicate person is suppressed, the weak scores are dropped
    assert [d.label for d in dets] == ["person", "car"]
    for d in dets:
        assert d.box == pytest.approx(EXPECTED_1280x720[d.label], abs=0.01)
    assert dets[0].score == pytest.approx(0.9)


def test_ultralytics_dynamic_input_uses_imgsz_metadata(tmp_path):
    det = D.Detector(ultralytics_like(tmp_path / "dyn.onnx", ROWS, NAMES, dynamic=True))
    assert (det.height, det.width) == (320, 320)
    assert det.detect(np.zeros((720, 1280, 3), np.uint8))[0].box == pytest.approx(EXPECTED_1280x720["person"], abs=0.01)


def test_low_conf_keeps_one_box_per_class_per_anchor(yolo):
    # Above 0.04: person A (0.9) and its duplicate B (0.8, suppressed), car A (0.05), car C (0.6).
    dets = D.Detector(yolo, conf=0.04).detect(np.zeros((720, 1280, 3), np.uint8))
    assert [(d.label, round(d.score, 2)) for d in dets] == [("person", 0.9), ("car", 0.6), ("car", 0.05)]
    assert dets[2].box == pytest.approx(EXPECTED_1280x720["person"], abs=0.01)


# --- refusing bad files with typed errors --------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(D.ModelFileError, match="not found"):
        D.Detector(tmp_path / "nope.onnx")


def test_corrupt_file_is_refused(tmp_path, yolo):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(Path(yolo).read_bytes()[:200] + b"\x00garbage" * 50)
    with pytest.raises(D.ModelFileError) as e:
        D.Detector(bad)
    assert isinstance(e.value, D.DetectorError) and isinstance(e.value, LinliError)


def test_sha256_mismatch_against_manifest(tmp_path, yolo):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"models": [{"file": "yolo11n.onnx", "sha256": "0" * 64}]}))
    with pytest.raises(D.ChecksumMismatch, match="does not match"):
        D.Detector(yolo, manifest=manifest)
    with pytest.raises(D.ChecksumMismatch):
        D.Detector(yolo, sha256="ab" * 32)
    # the right checksum loads
    manifest.write_text(json.dumps({"models": [{"file": "yolo11n.onnx", "sha256": D.sha256_of(yolo)}]}))
    assert D.Detector(yolo, manifest=manifest).names == ["person", "car"]


def test_model_missing_from_manifest(tmp_path, yolo):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"models": [{"file": "other.onnx", "sha256": "0" * 64}]}))
    with pytest.raises(D.ChecksumMismatch, match="not listed"):
        D.Detector(yolo, manifest=manifest)


def test_wrong_shapes_are_refused(tmp_path):
    # an end-to-end export ([1, 300, 6] after NMS) with 80 names
    e2e = ultralytics_like(tmp_path / "e2e.onnx", np.zeros((300, 6)), {i: str(i) for i in range(80)})
    with pytest.raises(D.ModelFormatError, match="4 \\+ 80"):
        D.Detector(e2e)
    gray = ultralytics_like(tmp_path / "gray.onnx", ROWS, NAMES, in_channels=1)
    with pytest.raises(D.ModelFormatError, match="input shape"):
        D.Detector(gray)


def test_bad_frame(yolo):
    with pytest.raises(ValueError):
        D.Detector(yolo).detect(np.zeros((10, 10), np.float32))


# --- the shipped garbage model -------------------------------------------------------------------

needs_shipped = pytest.mark.skipif(not D.DEFAULT_MODEL.is_file(), reason="shipped model not built")


@needs_shipped
def test_shipped_model_matches_manifest_and_metadata():
    det = D.Detector.default()
    assert det.names == ["garbage", "garbage_bin", "overflow"]
    assert (det.height, det.width) == (320, 320)
    assert "letterbox" in det.metadata["linli.preprocess"]
    assert det.metadata["license"] == "CC-BY-4.0"
    entry = D.manifest_entry(D.DEFAULT_MANIFEST, D.DEFAULT_MODEL)
    assert entry["sha256"] == D.sha256_of(D.DEFAULT_MODEL)


@needs_shipped
def test_shipped_model_copy_with_one_flipped_byte_is_refused(tmp_path):
    copy = tmp_path / D.DEFAULT_MODEL.name
    shutil.copy(D.DEFAULT_MODEL, copy)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    copy.write_bytes(bytes(raw))
    with pytest.raises(D.ChecksumMismatch):
        D.Detector(copy, manifest=D.DEFAULT_MANIFEST)


# Validation images (never trained on) with a clear garbage pile.
PILES = ["003353", "001935"]


@needs_shipped
@pytest.mark.parametrize("stem", PILES)
def test_shipped_model_finds_the_pile_square_and_16x9(stem):
    det = D.Detector.default(conf=0.25)
    img = cv2.imread(str(DATA / "images" / f"{stem}.jpg"))
    h, w = img.shape[:2]
    piles = [b for c, b in labels(stem, w, h) if c == 0]
    found = [d for d in det.detect(img) if d.label == "garbage"]
    assert found and max(iou(d.box, piles[0]) for d in found) >= 0.5
    # The exporter stretched a camera frame to a square: un-stretch it to 16:9, as the camera
    # saw it; boxes must come back in the 16:9 frame's pixels.
    W = round(h * 16 / 9)
    wide = cv2.resize(img, (W, h))
    found = [d for d in det.detect(wide) if d.label == "garbage"]
    sx = W / w
    pile_wide = [piles[0][0] * sx, piles[0][1], piles[0][2] * sx, piles[0][3]]
    assert found and max(iou(d.box, pile_wide) for d in found) >= 0.5
    for d in found:
        assert 0 <= d.box[0] < d.box[2] <= W and 0 <= d.box[1] < d.box[3] <= h


@needs_shipped
def test_shipped_model_on_bins():
    det = D.Detector.default(conf=0.25)
    img = cv2.imread(str(DATA / "images" / "002097.jpg"))
    dets = det.detect(img)
    assert {d.label for d in dets} & {"garbage_bin", "overflow"}


def _session(path, level):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    so.graph_optimization_level = level
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@needs_shipped
def test_shipped_model_gives_the_same_scores_on_every_cpu():
    # onnxruntime runs a QDQ int8 file with fused int8 kernels picked for the CPU (ORT_ENABLE_ALL,
    # what the gateway uses) or as written: dequantize, float op, quantize (ORT_DISABLE_ALL, the
    # reference every CPU computes alike). They must agree, or the model's results depend on the
    # instruction set: the first shipped int8 file (U8S8, full-range int8 weights) lost a pile
    # (score 0.29 -> 0.17, boxes off by 60 px) on AVX2 CPUs without VNNI, whose VPMADDUBSW
    # saturates, and passed on the VNNI machine it was made on (MODEL_CARD.md, "Quantization and
    # the CPU"). Only a CPU that saturates can fail this: CI's AVX2 machine without VNNI is one.
    import onnxruntime as ort

    fused = _session(D.DEFAULT_MODEL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    ref = _session(D.DEFAULT_MODEL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    det = D.Detector.default()
    worst_score, worst_box = 0.0, 0.0
    for path in sorted((DATA / "images").glob("*.jpg")):
        img = cv2.imread(str(path))
        h = img.shape[0]
        for frame in (img, cv2.resize(img, (round(h * 16 / 9), h))):
            x = det.preprocess(frame)[0]
            a = fused.run(None, {det.input_name: x})[0][0]
            b = ref.run(None, {det.input_name: x})[0][0]
            worst_score = max(worst_score, float(np.abs(a[4:] - b[4:]).max()))
            sure = b[4:].max(0) >= 0.1  # anchors that can become detections
            worst_box = max(worst_box, float(np.abs(a[:4, sure] - b[:4, sure]).max(initial=0)))
    assert worst_score <= 0.05, f"class scores differ by up to {worst_score:.3f}"
    assert worst_box <= 4.0, f"boxes of anchors scoring >= 0.1 differ by up to {worst_box:.1f} px"


@needs_shipped
def test_shipped_model_folds_back_to_fp32(tmp_path, monkeypatch):
    # `python -m models.train requantize` starts from this: the int8 weights folded into fp32
    # initializers, the activations' Q/DQ pairs gone, the ReLUs the quantizer had merged into
    # them back. The fp32 then differs from the int8 reference only by the activations' rounding.
    import onnxruntime as ort

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    from models.train.requant import dequantize_qdq

    fp32 = dequantize_qdq(str(D.DEFAULT_MODEL), str(tmp_path / "fp32.onnx"))
    graph = onnx.load(fp32).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    assert ops.count("Relu") == 51 and ops.count("Conv") == 57
    assert {i.data_type for i in graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    ref = _session(D.DEFAULT_MODEL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    f32 = _session(fp32, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    det = D.Detector.default()
    for stem in PILES:
        x = det.preprocess(cv2.imread(str(DATA / "images" / f"{stem}.jpg")))[0]
        a, b = f32.run(None, {"images": x})[0][0], ref.run(None, {"images": x})[0][0]
        assert np.abs(a[4:] - b[4:]).max() < 0.1
        assert a[4].max() == pytest.approx(b[4].max(), abs=0.03)  # the pile's score
