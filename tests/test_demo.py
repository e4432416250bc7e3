"""`linli demo` end to end: real firmware on MicroPython, the gateway, events upstream."""

import json
import subprocess
import sys

import pytest

from linli.verify import verify_lines


@pytest.mark.slow
def test_demo_shows_every_node_story_and_exits_cleanly(tmp_path, micropython_tools):
    out = tmp_path / "events.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "linli.cli", "demo", "--duration", "40", "--events-out", str(out), "--data-dir", str(tmp_path / "demo")],
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
