"""After `linli flash`, the node boots from what was written and the gateway accepts it at once.

The board is MicroPython's unix port behind a pty (tests/harness/unixboard.py); after the flash
the same flash folder boots on the simulated ESP32 with nothing but its own files on the path,
against a gateway whose key store `linli flash` wrote to. With a ROMFS partition the node's
modules come from the image `linli flash` wrote into it (the sim mounts it on /rom, as
MicroPython does): the flash folder then holds no module at all.
"""

from __future__ import annotations

import json
import queue
import time

import pytest

from linli.cli import main as linli
from linli.config import Config
from linli.demo import bin_world

from gateway_peer import GatewayThread, gateway_toml
from node_peer import NODE_HEAP
from harness.unixboard import FlashedBoard, UnixBoard

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


@pytest.fixture(scope="module")
def bytecode_bundle(tmp_path_factory, micropython_tools):
    """The bin bundle as portable bytecode (the unix port cannot load xtensawin .mpy files)."""
    from linli import fwbuild

    out = tmp_path_factory.mktemp("bundle") / "bin"
    fwbuild.build("bin", out, arch=None)
    return out


@pytest.mark.parametrize("deploy", ["files", "romfs"])
def test_flashed_node_boots_and_its_first_frame_is_accepted(tmp_path, mosquitto_factory, micropython_tools, bytecode_bundle, deploy):
    local = mosquitto_factory()
    data = tmp_path / "gw"
    keys = data / "keys.db"
    board = UnixBoard(tmp_path / "board", micropython_tools.micropython,
                      romfs=131072 if deploy == "romfs" else None).start()
    try:
        rc = linli(["flash", "--port", board.device, "--board", "esp32-devkitc", "--role", "bin", "--site", "test-site",
                    "--node-id", "bin-0077", "--bundle", str(bytecode_bundle), "--gateway", "127.0.0.1:%d" % local.port,
                    "--wifi-ssid", "linli", "--wifi-password", "pw", "--keystore", str(keys), "--report-s", "30",
                    "--deploy", deploy])
        assert rc == 0
    finally:
        board.kill()
    secrets = json.loads((board.flash / "secrets.json").read_text())
    assert secrets["node_id"] == "bin-0077" and secrets["broker_host"] == "127.0.0.1"
    modules = sorted(p.relative_to(board.flash).as_posix() for p in board.flash.rglob("*.mpy"))
    rom = json.loads((bytecode_bundle / "manifest.json").read_text())["romfs"]
    if deploy == "romfs":  # nothing to import from the flash folder: the node runs from /rom
        assert modules == [] and not (board.flash / "lib").exists()
        assert board.rom.read_bytes()[:rom["size"]] == (bytecode_bundle / rom["path"]).read_bytes()
    else:
        assert modules == rom["files"] and not board.rom.exists()

    cfg = Config.from_text(gateway_toml(data, local), "gateway.toml")
    gw = GatewayThread(cfg).start()
    node = FlashedBoard(tmp_path / "board", micropython_tools, None)
    # In the heap the whole-node tests give it (node_peer.NODE_HEAP: from ROMFS, the 48wK goal).
    run = node.start(world=dict(bin_world(60), wifi={"ssid": "linli", "password": "pw"}), heap=NODE_HEAP[deploy])
    try:
        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline and run.proc.poll() is None:
            try:
                ev = gw.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if ev.subject == "bin-0077":
                first = ev
        counts = dict(gw.gw.ingest.counts)
    finally:
        result = run.wait(timeout=10, stop_after=0.1) if run.proc.poll() is None else run.wait(timeout=5)
        gw.stop()
    assert first is not None, "no event from the flashed node; counts %s\n%s" % (counts, result.describe())
    assert counts.get("accepted", 0) >= 1, counts
    # Nothing the node sent was refused: the key it booted with is the one the gateway has.
    assert not {k: v for k, v in counts.items() if k != "accepted"}, counts
    assert first.type.startswith("node."), first
    assert "MemoryError" not in result.stdout + result.stderr, result.describe()
