"""The golden vectors (tests/vectors/, made by the gateway) through the firmware on MicroPython.

tests/mp/link_vectors.py streams every line of frames.jsonl, rejects.jsonl and streams.jsonl
through firmware/lib/link, compiled with mpy-cross and run under ``-X heapsize=64wK``, and prints
what the firmware made of each; every vector is one test case here. The gateway runs the same
files in tests/test_link_vectors.py, so the two ends cannot drift apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK_SRC = ROOT / "firmware" / "lib" / "link"
VECTORS = ROOT / "tests" / "vectors"
RUNNER = ROOT / "tests" / "mp" / "link_vectors.py"
FILES = ("frames", "rejects", "streams")


from harness.mpybuild import find_micropython, find_mpy_cross

MICROPYTHON = find_micropython()
MPY_CROSS = find_mpy_cross()

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not (MICROPYTHON and MPY_CROSS), reason="needs the MicroPython unix port and mpy-cross"),
]


def _load(name: str) -> list[dict]:
    path = VECTORS / ("%s.jsonl" % name)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


EXPECTED = {name: _load(name) for name in FILES}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Run every vector through the firmware once: {(file, name): what the firmware printed}."""
    if not all(EXPECTED.values()):
        pytest.fail("tests/vectors/*.jsonl missing or empty: run `linli vectors --write`")
    lib = tmp_path_factory.mktemp("link_mpy")
    (lib / "link").mkdir()
    for src in sorted(LINK_SRC.glob("*.py")):
        p = subprocess.run([MPY_CROSS, "-o", str(lib / "link" / (src.stem + ".mpy")), str(src)],
                           capture_output=True, text=True)
        assert p.returncode == 0, "mpy-cross %s failed:\n%s%s" % (src.name, p.stdout, p.stderr)
    p = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=64wK", str(RUNNER), str(VECTORS)],
        env=dict(os.environ, MICROPYPATH="%s:.frozen" % lib),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert p.returncode == 0, "link_vectors.py failed:\n%s%s" % (p.stdout[-4000:], p.stderr)
    out = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    done = out.pop()
    assert done["done"] == sum(len(v) for v in EXPECTED.values())
    return {(r["f"], r["name"]): r for r in out}


def _ids(name):
    return [v["name"] for v in EXPECTED[name]]


@pytest.mark.parametrize("v", EXPECTED["frames"], ids=_ids("frames"))
def test_good_frame(results, v):
    r = results[("frames", v["name"])]
    assert r["frame"] == v["frame"], "seal() bytes differ from the gateway's"
    assert r["crc"] == v["crc"]
    assert r["wire"] == v["wire"], "wire() bytes differ from the gateway's"
    assert r["wire_inplace"] == v["wire"], "seal() into the wire buffer + wrap() differ"
    assert r["open"] == "ok"
    assert r["body"] == v["body"]
    role = {"gateway": 0, "bin": 1, "streetlight": 2, "petscan": 3}[v["role"]]
    kinds = ["hello", "telemetry", "event", "ack", "command", "command_result", "time_sync", "status"]
    assert r["fields"] == [kinds.index(v["kind"]) + 1, v["flags"], role, v["node"], v["counter"], v["ts"], "new"]
    assert r["unwire"] == [[0, v["frame"]]], "the streaming decoder must give back exactly the frame"


@pytest.mark.parametrize("v", EXPECTED["rejects"], ids=_ids("rejects"))
def test_reject(results, v):
    r = results[("rejects", v["name"])]
    assert r["reason"] == v["reason"]
    if v["reason"] == "ok":
        assert r["verdict"] == v["verdict"]


@pytest.mark.parametrize("v", EXPECTED["streams"], ids=_ids("streams"))
def test_stream(results, v):
    assert results[("streams", v["name"])]["expect"] == v["expect"]


def test_every_vector_ran(results):
    assert set(results) == {(f, v["name"]) for f in FILES for v in EXPECTED[f]}
