"""The training pipeline end to end on the ten test images: one short epoch, export to ONNX,
int8 quantization, evaluation, then the gateway loads the result and detects. Needs torch (the
``train`` extra); runs without ../shared/."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "detector"


@pytest.fixture
def train_pkg(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import models.train.export as E
    import models.train.fit as F
    return F, E


def test_smoke_training_export_load_detect(tmp_path, train_pkg):
    F, E = train_pkg
    from linli.detector import Detector

    t0 = time.time()
    threads = torch.get_num_threads()
    try:
        r = F.Recipe(data=str(DATA), out=str(tmp_path / "run"), epochs=1, batch=4, val_percent=0,
                     warmup_epochs=0.5, eval_every=1, threads=2)
        last = F.fit(r, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().strip().split("\n")[-1])
    assert rec["epoch"] == 0 and np.isfinite(rec["loss"]) and "map50" in rec

    fp32 = E.export_onnx(last, str(tmp_path / "smoke.onnx"))
    int8 = E.quantize(fp32, str(tmp_path / "smoke.int8.onnx"), str(DATA), n_calib=4, val_percent=0)
    manifest = E.write_manifest([{"file": fp32}, {"file": int8}], str(tmp_path / "manifest.json"))
    for path in (fp32, int8):
        det = Detector(path, manifest=manifest, conf=0.0001)
        assert det.names == ["garbage", "garbage_bin", "overflow"]
        frame = cv2.resize(cv2.imread(str(DATA / "images" / "002889.jpg")), (1280, 720))
        for d in det.detect(frame):
            assert d.label in det.names and 0 <= d.box[0] <= d.box[2] <= 1280 and 0 <= d.box[1] <= d.box[3] <= 720
    scores = E.evaluate_onnx(fp32, str(DATA), split="all", val_percent=0)
    assert scores["images"] == 10 and 0 <= scores["map50"] <= 1
    assert time.time() - t0 < 60
