"""Running the role scenario scripts (tests/mp/roles/*.py) on the MicroPython unix port.

A scenario script prints one JSON object a line, ``{"k": "<name>", ...}``; :func:`run_script`
runs it once (firmware as .mpy, 64 KiB heap unless told otherwise) and returns the objects by
name, so a test module can run its script once and assert on each part in its own test.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.micropython import MicroPython

MP_ROLES = Path(__file__).parent / "mp" / "roles"
MP_DRIVERS = Path(__file__).parent / "mp" / "drivers"


class Results(dict):
    """name -> the (last) JSON object of that name; ``heap`` lines are kept in ``heaps``."""

    def __init__(self, lines: list[dict], record: dict):
        super().__init__()
        self.heaps = {}
        self.record = record
        for obj in lines:
            if obj.get("k") == "heap":
                self.heaps[obj["tag"]] = obj
            else:
                self[obj["k"]] = obj


def run_script(board: MicroPython, name: str, head: str = "", heap: str = "64wK", world: dict | None = None,
               extra_path=(), timeout: float = 60) -> Results:
    """Run tests/mp/roles/``name`` (with ``head`` prepended: test data) and parse its output."""
    code = head + (MP_ROLES / name).read_text()
    r = board.run(code, heap=heap, world=world, extra_path=[MP_ROLES, *extra_path], timeout=timeout)
    assert r.end == "exit" and r.returncode == 0, "scenario %s failed: %s" % (name, r.describe())
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return Results(lines, r.record)


def compile_helpers(tools, out: Path) -> Path:
    """tests/mp/roles/*.py and the driver fakes (tests/mp/drivers/fake_*.py) compiled to .mpy
    in ``out``: as source they would cost the 64 KiB heap their compilation (firmware does
    not pay that: it is deployed as .mpy)."""
    import subprocess

    from harness.mpybuild import mpy_cross_args

    out.mkdir(parents=True, exist_ok=True)
    for src in [*sorted(MP_ROLES.glob("*.py")), *sorted(MP_DRIVERS.glob("fake_*.py"))]:
        p = subprocess.run([tools.mpy_cross, *mpy_cross_args(), "-o", str(out / (src.stem + ".mpy")), str(src)],
                           capture_output=True, text=True)
        assert p.returncode == 0, "mpy-cross %s: %s%s" % (src, p.stdout, p.stderr)
    return out


# docs/protocol.md section 8: what each role may send.
COMMON_TELEMETRY = {"bat", "rssi", "q", "drop", "heap", "up", "hb"}
TELEMETRY = {
    "bin": {"fill", "dist", "depth", "w", "lid", "temp", "tilt"},
    "streetlight": {"lux", "lamp", "mode", "ma", "pv", "motion"},
    "petscan": set(),
}
EVENTS = {
    "bin": {"full": {"fill"}, "emptied": {"fill"}, "overflow": {"fill"}, "fire_risk": {"temp", "rise"},
            "tipped": {"tilt"}, "deposit": {"card", "w_g", "cat"}, "battery_low": {"bat"}},
    "streetlight": {"lamp_fault": {"fault", "ma", "lamp"}, "battery_low": {"bat", "act"},
                    "energy_daily": {"day", "wh_pv", "wh_lamp", "h_lit"}},
    "petscan": {"scan": {"tag"}, "fouling": {"tag"}},
}


def check_contract(role: str, telemetry: list[dict], events: list[dict]) -> list[str]:
    """Every body uses exactly the keys of docs/protocol.md section 8 and goes through the
    gateway's rules (linli.rules) without a PayloadError; returns the gateway event types."""
    from linli.config import Config
    from linli.registry import NodeState
    from linli.rules import Rules

    rules = Rules(Config.from_text('[gateway]\nsite="s"\nid="g"\n[privacy]\nsite_secret="0123456789abcdef"'))
    st = NodeState("n-1", role)
    out = []
    at = 1000.0
    for body in telemetry:
        extra = set(body) - TELEMETRY[role] - COMMON_TELEMETRY
        assert not extra, "%s telemetry has keys outside the protocol: %s in %s" % (role, extra, body)
        out += [e.type for e in rules.telemetry(st, body, at)]
        at += 60
    for body in events:
        ev = body["ev"]
        assert ev in EVENTS[role], "%s sends an event the protocol does not have: %s" % (role, body)
        keys = set(body) - {"ev"}
        assert keys <= EVENTS[role][ev], "%s %s has keys outside the protocol: %s" % (role, ev, keys - EVENTS[role][ev])
        out += [e.type for e in rules.event(st, body, at)]
        at += 60
    return out
