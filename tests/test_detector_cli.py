"""``linli detect``: JSON lines with boxes in the image's own pixels, annotated copies, errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from linli import detect_cli  # noqa: E402
from linli import detector as D  # noqa: E402

from test_detector import DATA, EXPECTED_1280x720, NAMES, ROWS, ultralytics_like  # noqa: E402


def run(argv) -> int:
    parser = argparse.ArgumentParser(prog="linli")
    detect_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["detect", *argv])
    return args.handler(args)


@pytest.fixture
def frame_path(tmp_path):
    p = tmp_path / "frame 16x9.jpg"
    cv2.imwrite(str(p), np.full((720, 1280, 3), 40, np.uint8))
    return str(p)


def test_json_lines_in_original_pixels(tmp_path, frame_path, capsys):
    model = ultralytics_like(tmp_path / "yolov8n.onnx", ROWS, NAMES)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((360, 640, 3), np.uint8))
    assert run(["--model", model, "--json", "--conf", "0.25", frame_path, str(small)]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"image", "detections"} and first["image"] == frame_path
    assert [d["label"] for d in first["detections"]] == ["person", "car"]
    for d in first["detections"]:
        assert set(d) == {"label", "score", "box"}
        assert d["box"] == pytest.approx(EXPECTED_1280x720[d["label"]], abs=0.1)
    # the same scene at half the size: boxes scale with the image
    assert second["detections"][0]["box"] == pytest.approx([v / 2 for v in EXPECTED_1280x720["person"]], abs=0.1)


def test_json_default_threshold_lists_low_scores(tmp_path, frame_path, capsys):
    model = ultralytics_like(tmp_path / "yolov8n.onnx", ROWS, NAMES)
    assert run(["--model", model, "--json", frame_path]) == 0
    dets = json.loads(capsys.readouterr().out)["detections"]
    assert min(d["score"] for d in dets) < 0.25  # every candidate, scored, for an evaluator


def test_annotated_copies(tmp_path, frame_path, capsys):
    model = ultralytics_like(tmp_path / "yolov8n.onnx", ROWS, NAMES)
    out = tmp_path / "annotated"
    assert run(["--model", model, "--out", str(out), frame_path]) == 0
    img = cv2.imread(str(out / "frame 16x9.jpg"))
    assert img.shape == (720, 1280, 3)
    assert img.std() > 1  # boxes were drawn on the flat grey frame
    assert "person 0.90" in capsys.readouterr().out


def test_bad_model_and_unreadable_image(tmp_path, frame_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert run(["--model", str(bad), "--json", frame_path]) == 2
    assert "not a loadable ONNX model" in capsys.readouterr().err
    model = ultralytics_like(tmp_path / "m.onnx", ROWS, NAMES)
    assert run(["--model", model, "--json", str(tmp_path / "missing.jpg"), frame_path]) == 1
    captured = capsys.readouterr()
    assert "cannot read image" in captured.err and len(captured.out.strip().split("\n")) == 1


@pytest.mark.skipif(not D.DEFAULT_MODEL.is_file(), reason="shipped model not built")
def test_default_model_is_the_shipped_one(capsys):
    img = str(DATA / "images" / "003353.jpg")
    assert run(["--json", img]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["image"] == img
    assert any(d["label"] == "garbage" and d["score"] > 0.25 for d in line["detections"])
