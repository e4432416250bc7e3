"""`linli demo` end to end: real firmware on MicroPython, the demo camera, the gateway, events
and snapshots upstream."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

import pytest

from linli.verify import verify_lines


@pytest.mark.slow
def test_demo_shows_every_node_story_and_exits_cleanly(tmp_path, micropython_tools):
    out = tmp_path / "events.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "linli.cli", "demo", "--duration", "40", "--events-out", str(out), "--data-dir", str(tmp_path / "demo"), "--snapshots-out", str(tmp_path / "snaps")],
        capture_output=True, text=True, timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    events = [json.loads(line) for line in out.read_text().splitlines()]
    types = [e["type"][6:] for e in events]
    for t in ("gateway.started", "node.rebooted", "node.telemetry", "bin.full", "bin.tipped", "streetlight.lamp_fault", "petscan.scan", "petscan.fouling"):
        assert t in types, (t, r.stdout[-3000:])
    scans = {e["data"]["tag"]: e["data"]["status"] for e in events if e["type"] == "linli.petscan.scan"}
    assert scans == {"7Q2M9XKD": "green", "AB12CD34": "red", "ZZ99ZZ99": "yellow"}
    assert {e["subject"] for e in events if e["type"] == "linli.node.telemetry"} == {"bin-0001", "bin-0002", "street-0001"}
    assert verify_lines(out.read_text().splitlines()).ok
    # The live view printed them, and the summary came at the end.
    assert "bin.full" in r.stdout and "linli demo: %d events" % len(events) in r.stdout
    # The camera's pile: confirmed once, then cleared with its dwell time, each with snapshots
    # that reached the backend as the JPEGs the events reference (redacted: the residents'
    # windows are masked black in the full frame).
    piles = [e for e in events if e["type"].startswith("linli.garbage.pile.")]
    kinds = [e["type"][6:] for e in piles]
    assert kinds.count("garbage.pile.detected") == 1 and "garbage.pile.cleared" in kinds, kinds
    assert kinds.index("garbage.pile.detected") < kinds.index("garbage.pile.cleared")
    cleared = next(e for e in piles if e["type"] == "linli.garbage.pile.cleared")
    assert cleared["data"]["camera"] == "entrance-1" and cleared["data"]["dwell_s"] > 0
    detected = next(e for e in piles if e["type"] == "linli.garbage.pile.detected")
    refs = detected["data"]["snapshots"]
    assert {r["kind"] for r in refs} == {"crop", "frame"}
    assert detected["data"]["redacted"]["masks"] == 1
    for ref in refs:
        jpeg = (tmp_path / "snaps" / ("%s.jpg" % ref["id"])).read_bytes()
        assert hashlib.sha256(jpeg).hexdigest() == ref["sha256"]
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1::-1] == (ref["width"], ref["height"])
        if ref["kind"] == "frame":  # the 512 px scene is not scaled: the mask is where it was
            assert img[5:110, 5:225].max() < 40, "the masked windows must be black"
            assert img[5:110, 260:500].mean() > 60  # (and the rest of the frame is not)
    assert "garbage.pile.cleared" in r.stdout and "snapshots" in r.stdout
    # The nodes ran from their ROMFS partitions in the 48 K-word heap goal, never short of it.
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / "demo" / "logs").glob("*.log")}
    assert len(logs) == 4 and not [n for n, t in logs.items() if "MemoryError" in t], logs


def test_demo_camera_scene_is_small_shipped_and_detected_as_the_demo_expects():
    from linli.config import Config
    from linli.demo import CAMERA_TOML, SCENE, SCENE_DIR
    from linli.detector import Detector
    from linli.vision.pipeline import keep

    shipped = [p for p in SCENE_DIR.iterdir() if p.suffix == ".jpg"]
    assert len(shipped) <= 20 and sum(p.stat().st_size for p in shipped) <= 2 * 2**20
    assert "CC BY 4.0" in (SCENE_DIR / "ATTRIBUTION").read_text()
    assert {name for name, _ in SCENE} <= {p.name for p in shipped}
    # The demo's own camera settings: the pile counts on pile.jpg, nothing on clean.jpg.
    cfg = Config.from_text('[gateway]\nsite = "s"\nid = "g"\n[privacy]\nsite_secret = "0123456789abcdef"\n' + CAMERA_TOML % SCENE_DIR, "demo")
    spec = cfg.cameras[0].spec()
    det = Detector.default()
    clean = keep(det.detect(cv2.imread(str(SCENE_DIR / "clean.jpg"))), spec)
    pile = keep(det.detect(cv2.imread(str(SCENE_DIR / "pile.jpg"))), spec)
    assert clean == []
    assert [d.label for d in pile] == ["garbage"] and pile[0].score >= spec.thresholds["garbage"] + 0.2
    x1, y1, x2, y2 = pile[0].box  # on the pasted pile, not elsewhere
    assert x1 < 120 and y1 > 330 and x2 > 250 and y2 > 430
