"""The runtime on the simulated board: boot from main.py, the watchdog, memory and code size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node_peer import MqttPeer, node_config, node_files, run_with

pytestmark = pytest.mark.micropython

TICKER = (Path(__file__).parent / "mp" / "node" / "ticker.py").read_text()
ROOT = Path(__file__).resolve().parents[1]
NODE_LIB = ROOT / "firmware" / "lib" / "node"


def test_board_boot_with_a_bad_config_names_the_key(mpy):
    """boot.py then main.py, as an ESP32 starts: a bad key stops the boot with its name."""
    files = {"secrets.json": json.dumps(node_config()), "config.json": json.dumps({"report_s": "x"})}
    r = mpy.run(files=files, timeout=10)
    assert r.exception and r.exception["type"] == "ValueError", r.describe()
    assert r.exception["message"] == "config.json: report_s must be an int >= 5, got 'x'"
    assert r.record["wdt"]["timeout"] is None  # no watchdog yet: the REPL stays usable to fix it


@pytest.mark.mosquitto
def test_watchdog_is_fed_while_healthy_and_resets_a_hung_loop(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    files = node_files(broker_port=mosquitto_broker.port, wdt_s=2,
                       bin={"count": 3, "period_ms": 500, "block_ms": 10000})
    r = run_with(peer, mpy.start(TICKER, files=files), timeout=15)
    assert r.record["wdt"]["timeout"] == 2000
    assert r.record["wdt"]["feeds"] >= 2  # fed while the loop ran
    assert r.end == "wdt", r.describe()  # then the role blocked the loop: the watchdog reset it
    r = run_with(peer, mpy.start(TICKER, files=node_files(broker_port=mosquitto_broker.port, bin={"count": 1})),
                 stop_after=1.0)
    assert peer.new("hello")[-1].body["rc"] == "wdt"


@pytest.mark.mosquitto
def test_free_heap_after_boot_under_64k(mpy, mosquitto_broker):
    """The whole node (link, MQTT, queue, keys, role) booted and connected, gc'd: what is left
    of the 64 KiB heap of a 32-bit ESP32 (the harness scales it to this host's word size)."""
    peer = MqttPeer(mosquitto_broker)
    files = node_files(broker_port=mosquitto_broker.port, bin={"heap": True, "count": 2, "period_ms": 100})
    r = run_with(peer, mpy.start(TICKER, files=files), stop_after=2.0)
    line = [x for x in r.stdout.splitlines() if x.startswith("heap ")]
    assert line, r.describe()
    free = int(line[0].split()[1])
    total = r.record["heap"]["total"] - r.record["heap"]["sim"]
    print("\nfree heap after boot: %d of %d bytes (this host's words; about half on a 32-bit ESP32)"
          % (free, total))
    # What is left is the role's and its drivers' (measured at 33 KB of 128 KB on x86_64).
    assert free > 24000, "the runtime leaves too little heap for a role"


def test_node_package_compiles_and_stays_small(firmware_build):
    sizes = {p.name: p.stat().st_size for p in sorted((firmware_build.lib / "node").glob("*.mpy"))}
    sources = {p.stem for p in NODE_LIB.glob("*.py")}
    assert {n[:-4] for n in sizes} == sources
    assert (firmware_build.lib / "hal.mpy").exists()
    assert (firmware_build.out / "main.mpy").exists() and (firmware_build.out / "boot.mpy").exists()
    total = sum(sizes.values())
    print("\n" + "  ".join("%s %d" % kv for kv in sizes.items()) + "  total %d bytes" % total)
    assert total < 40000


def test_hal_on_the_simulated_board(mpy):
    r = mpy.run("""
import json
from hal import Board
b = Board()
out = {"cause": b.reset_cause(), "wake": b.wake_reason(), "synced": b.synced(), "t0": b.time()}
b.set_time(1772323200)
out["t1"] = b.time()
out["synced1"] = b.synced()
b.set_nvram(b"abc")
out["nv"] = b.nvram().decode()
w = b.wlan()
out["rssi_off"] = b.rssi()
w.active(True)
w.connect("linli", "pw")
import time
time.sleep_ms(80)
out["conn"] = w.isconnected()
out["rssi"] = b.rssi()
out["bat"] = b.battery(35)
out["nobat"] = b.battery(None)
p = b.pin(4, "in", "up")
out["pin"] = p.value()
o = b.pin(2, "out", value=1)
o.value(0)
out["wdt_off"] = type(b.watchdog(0)).__name__
print(json.dumps(out))
""", world={"adc": {35: 32768}, "wifi": {"ssid": "linli", "password": "pw", "rssi": -71}}).expect_ok()
    out = json.loads(r.stdout)
    assert out["cause"] == "pwron" and out["wake"] is None
    assert out["synced"] is False and out["t0"] < 1704067200  # the RTC starts in 2000
    assert out["t1"] == 1772323200 and out["synced1"] is True
    assert out["nv"] == "abc"
    assert out["rssi_off"] is None and out["conn"] is True and out["rssi"] == -71
    assert out["bat"] == pytest.approx(2 * 3.1 * 32768 / 65535, abs=0.01) and out["nobat"] is None
    assert out["pin"] == 1 and r.pin_values(2) == [1, 0]
    assert out["wdt_off"] == "_NoWatchdog"


def test_only_the_hal_imports_machine_and_network():
    import re

    mine = [*NODE_LIB.glob("*.py"), ROOT / "firmware" / "main.py", ROOT / "firmware" / "boot.py"]
    for path in mine:
        src = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(machine|network)\b", src, re.M), path
    assert re.search(r"^import machine$", (ROOT / "firmware" / "lib" / "hal.py").read_text(), re.M)
