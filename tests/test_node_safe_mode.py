"""Safe mode: a role that crashes at boot makes the node reboot; the third boot in a row that
never got healthy runs only the link and diagnostics, and says so (hello sm=1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_peer import MqttPeer, node_files, run_with

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

TICKER = (Path(__file__).parent / "mp" / "node" / "ticker.py").read_text()


def test_crash_loop_leads_to_safe_mode_on_the_third_boot(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    files = node_files(broker_port=mosquitto_broker.port, bin={"crash": "init"})
    ends = []
    for _ in range(2):
        r = run_with(peer, mpy.start(TICKER, files=files))
        ends.append(r.end)
        assert "crash at boot" in r.stdout, r.describe()
    assert ends == ["reset", "reset"]
    run = mpy.start(TICKER, files=files)
    try:
        peer.wait(lambda p: len(p.new("hello")) == 3, what="the third hello")
        peer.command(1, "diag.info")
        peer.command(2, "t.echo", {"x": 1})  # the role's command: the role does not run
        peer.wait(lambda p: len(p.new("command_result")) == 2, what="command results")
        peer.command(3, "diag.exit")
        r = run_with(peer, run)  # leaving safe mode reboots
    finally:
        run.kill()
    assert r.end == "reset", r.describe()
    hellos = [s.body for s in peer.new("hello")]
    assert [(h["bc"], h["sm"]) for h in hellos] == [(1, 0), (2, 0), (3, 1)]
    assert [h["rc"] for h in hellos] == ["pwron", "soft", "soft"]
    info, echo, leave = (s.body for s in peer.new("command_result"))
    assert info["ok"] and info["sm"] == 1 and info["bc"] == 3 and info["fails"] == 3
    assert info["err"] == "role RuntimeError: ticker: crash"  # the first 32 characters
    assert echo == {"id": 2, "ok": False, "err": "unknown_op"}
    assert leave == {"id": 3, "ok": True}
    # After diag.exit the next boot is a normal one again (and this role crashes again).
    r = run_with(peer, mpy.start(TICKER, files=files))
    assert r.end == "reset"
    assert peer.new("hello")[-1].body["sm"] == 0


def test_a_boot_that_gets_healthy_clears_the_count(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    crash = node_files(broker_port=mosquitto_broker.port, bin={"crash": "run"})
    good = node_files(broker_port=mosquitto_broker.port, bin={"count": 1})
    assert run_with(peer, mpy.start(TICKER, files=crash)).end == "reset"
    run = mpy.start(TICKER, files=good)
    peer.wait(lambda p: len(p.new("hello")) == 2)
    peer.idle(2.5)  # healthy_s is 2
    peer.command(1, "node.reboot")  # a reset keeps RTC memory (a stop would be a power cycle)
    assert run_with(peer, run).end == "reset"
    for _ in range(2):
        assert run_with(peer, mpy.start(TICKER, files=crash)).end == "reset"
    # Without the healthy boot in between, the third of these boots would have been in safe mode.
    assert [s.body["sm"] for s in peer.new("hello")] == [0, 0, 0, 0]


@pytest.mark.parametrize("leak", ["oom", "oom_global"])
def test_a_crash_with_the_heap_full_still_reboots(mpy, mosquitto_broker, leak):
    """The role leaks until nothing is left and dies of MemoryError: the crash handler, which
    itself needs memory (the crash text, the boot state), must still get the node rebooted (or
    let the watchdog bite), never leave it running without its role. The leak is the role's
    (freed with it) or outlives it (only the handler's reserve is left)."""
    peer = MqttPeer(mosquitto_broker)
    files = node_files(broker_port=mosquitto_broker.port, bin={"crash": leak})
    r = run_with(peer, mpy.start(TICKER, files=files), timeout=20)
    assert r.end == "reset", r.describe()
    # It counted as a crash boot: the next boot says so (bc 2, and the crash is remembered).
    run = mpy.start(TICKER, files=node_files(broker_port=mosquitto_broker.port, bin={"count": 1}))
    try:
        peer.wait(lambda p: len(p.new("hello")) == 2, what="the second hello")
        peer.command(1, "node.info")
        peer.wait(lambda p: p.new("command_result"), what="node.info")
    finally:
        run.kill()
    assert [h.body["bc"] for h in peer.new("hello")] == [1, 2]
    info = peer.new("command_result")[0].body
    assert "MemoryError" in info.get("err", ""), (info, r.describe())


# A board on which the crash handler fails at every step it can: writing the boot state (after
# the one write of boot) and the reset itself raise MemoryError.
_FAILING_BOARD = """
import hal

_Board = hal.Board


class _FailingBoard(_Board):
    writes = 0

    def set_nvram(self, data):
        _FailingBoard.writes += 1
        if _FailingBoard.writes > 1:
            raise MemoryError("set_nvram")
        _Board.set_nvram(self, data)

    def reset(self):
        raise MemoryError("reset")


hal.Board = _FailingBoard
"""


def test_a_crash_handler_that_fails_leaves_it_to_the_watchdog(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    files = node_files(broker_port=mosquitto_broker.port, wdt_s=2, bin={"crash": "run"})
    r = run_with(peer, mpy.start(_FAILING_BOARD + TICKER, files=files), timeout=20)
    assert r.end == "wdt", r.describe()
    assert "crash: role RuntimeError" in r.stdout
    assert r.record["wdt"]["expired_ms"] is not None
