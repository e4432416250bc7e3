"""The node runtime against a real Mosquitto: the node (real firmware, .mpy, unix port, 64 KiB
heap) connects, sends hello and telemetry; a CPython gateway peer (paho + linli.link) verifies
and acks them; the node deletes what is acked; a broker outage queues frames in flash, which
are replayed in order once it is back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from linli.link import Kind
from node_peer import NOW, MqttPeer, node_files, run_with

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

TICKER = (Path(__file__).parent / "mp" / "node" / "ticker.py").read_text()


def files(broker, **over):
    return node_files(broker_port=broker.port, **over)


def queue_files(flash: Path) -> list[str]:
    if not (flash / "q").exists():
        return []
    return sorted((p.name for p in (flash / "q").iterdir() if p.name.isdigit()), key=int)


def queued_frames(flash: Path) -> int:
    """Frame records in the node's queue files (type 0xF1/0xF3, see node/queue.py)."""
    n = 0
    for name in queue_files(flash):
        data = (flash / "q" / name).read_bytes()
        i = 0
        while i + 6 <= len(data):
            n += data[i] in (0xF1, 0xF3)
            i += 6 + data[i + 1]
    return n


def test_node_connects_says_hello_and_deletes_acked_frames(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    run = mpy.start(TICKER, files=files(mosquitto_broker, bin={"count": 3, "period_ms": 100}))
    try:
        peer.wait(lambda p: len([s for s in p.new("telemetry") if "n" in s.body]) == 3, what="3 reports")
        peer.wait(lambda p: p.new("telemetry") and any("heap" in s.body for s in p.new("telemetry")), what="health")
        peer.pump(0.5)
    finally:
        r = run.wait(timeout=10, stop_after=0.1)
    print(r.stdout)
    kinds = peer.kinds()
    assert kinds[0] == "hello", peer.summary()
    hello = peer.new("hello")[0].body
    assert hello == {"fw": "0.1.0", "rc": "pwron", "bc": 1, "sm": 0}
    assert [s.body["n"] for s in peer.new("telemetry") if "n" in s.body] == [1, 2, 3]
    assert peer.avail[0] == (b"online", False) or (b"online", True) in peer.avail
    assert queue_files(r.flash) == []


def test_broker_outage_queues_in_flash_and_replays_in_order(mpy, mosquitto_factory):
    broker = mosquitto_factory(persistence=True)
    peer = MqttPeer(broker, client_id="gw-outage", clean=False)
    run = mpy.start(TICKER, files=files(broker, bin={"count": 30, "period_ms": 100}))
    try:
        peer.wait(lambda p: len(p.new("telemetry")) >= 3, what="reports before the outage")
        peer.close()
        broker.stop()
        # The node keeps reporting; nothing can leave: the frames pile up in its flash queue.
        time.sleep(1.5)
        queued = queue_files(run.flash)
        broker.start()
        peer.connect()
        peer.wait(lambda p: len([s for s in p.new("telemetry") if "n" in s.body]) == 30, timeout=15,
                  what="all 30 reports")
        peer.pump(1.0)
    finally:
        r = run.wait(timeout=10, stop_after=0.1)
    assert queued, "nothing was queued in flash during the outage"
    ns = [s.body["n"] for s in peer.new("telemetry") if "n" in s.body]
    assert ns == list(range(1, 31)), peer.summary()  # none lost, none out of order
    # Queued frames go out in counter order (a time_sync request is sent at once, not queued).
    counters = [s.counter for s in peer.new() if s.kind != "time_sync"]
    assert counters == sorted(counters)
    assert queue_files(r.flash) == [], r.stdout
    assert "link down" in r.stdout and r.stdout.count("link up") >= 2


def test_time_sync_commands_and_replayed_commands(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    run = mpy.start(TICKER, files=files(mosquitto_broker, bin={"count": 0, "period_ms": 300}))
    try:
        peer.wait(lambda p: p.new("time_sync"), what="a time sync request")
        peer.wait(lambda p: any(s.ts >= NOW for s in p.new("telemetry")), what="a frame stamped with the time")
        peer.command(1, "t.echo", {"x": [1, 2]})
        peer.command(2, "t.fail")
        peer.command(3, "no.such")
        peer.command(4, "node.info")
        replay = peer.seal_down(Kind.COMMAND, {"id": 5, "op": "t.echo", "a": {"y": 1}})
        peer._send(replay)
        peer._send(replay)  # the same frame again: a duplicate, never run twice
        peer.wait(lambda p: len(p.new("command_result")) == 5, what="5 command results")
        peer.idle(0.5)
        r = run_with(peer, run, stop_after=0.1)
    finally:
        run.kill()
    results = {s.body["id"]: s.body for s in peer.new("command_result")}
    assert results[1] == {"id": 1, "ok": True, "x": [1, 2]}  # a dict result: its keys
    assert results[2] == {"id": 2, "ok": False, "err": "range"}
    assert results[3] == {"id": 3, "ok": False, "err": "unknown_op"}
    assert results[4]["ok"] and results[4]["fw"] == "0.1.0" and {"up", "heap", "q"} <= set(results[4])
    assert results[4]["rom"] == 0  # the modules came from files (the compiled tree)
    assert results[5] == {"id": 5, "ok": True, "y": 1}
    assert len(peer.new("command_result")) == 5
    assert peer.new("hello")[0].ts == 0  # sent before the clock was set
    assert r.record["rtc_sets"], "the RTC was never set"


def test_deep_sleep_says_asleep_and_wakes_with_its_queue_and_clock(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    fs = files(mosquitto_broker, bin={"count": 2, "period_ms": 100, "sleep_s": 60})
    r = run_with(peer, mpy.start(TICKER, files=fs))
    assert r.end == "deepsleep" and r.deepsleep_ms == 60000, r.describe()
    status = peer.new("status")[-1].body
    assert status == {"st": "asleep", "until": status["until"], "for": 60} and status["until"] >= NOW + 60
    assert peer.avail[-1] == (b"asleep %d" % status["until"], False) or peer.avail[-1][0].startswith(b"asleep ")
    # Disconnected cleanly: the broker did not publish the will.
    assert not [a for a in peer.avail if a[0] == b"offline"]
    mosquitto_broker.wait_for_log("disconnected")
    # The wake: a boot with rc=deepsleep; the RTC kept the time, so nothing is stamped 0.
    r = run_with(peer, mpy.start(TICKER, files=fs))
    assert r.end == "deepsleep"
    hello = peer.new("hello")[-1]
    assert hello.body["rc"] == "deepsleep" and hello.body["bc"] == 2 and hello.ts >= NOW + 60


def test_will_says_offline_when_the_node_dies(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    run = mpy.start(TICKER, files=files(mosquitto_broker, bin={"count": 0, "period_ms": 500}))
    peer.wait(lambda p: (b"online", False) in p.avail, what="online")
    run.kill()  # power cut: no DISCONNECT; the broker notices the socket close
    peer.wait(lambda p: p.avail[-1][0] == b"offline", what="the will")


def test_health_reports_dropped_frames_and_alarms_survive_a_full_queue(mpy, mosquitto_factory):
    broker = mosquitto_factory()
    port = broker.port
    broker.stop()  # the gateway is down from the start
    fs = files(broker, health_s=1, queue_frames=8,
               bin={"count": 20, "period_ms": 50, "alarm_every": 5})
    run = mpy.start(TICKER, files=fs)
    try:
        time.sleep(2.5)
        broker.start()
        assert broker.port == port
        peer = MqttPeer(broker)
        peer.wait(lambda p: any(s.body.get("drop") for s in p.new("telemetry")), timeout=15,
                  what="a health report with a dropped count")
        peer.idle(1.0)
        r = run_with(peer, run, stop_after=0.1)
    finally:
        run.kill()
    alarms = [s for s in peer.new("event") if s.body.get("ev") == "t"]
    assert [s.body["n"] for s in alarms] == [5, 10, 15, 20]  # every alarm, none dropped
    assert all(s.flags & 2 for s in alarms)  # sent with the ALARM flag
    health = [s.body for s in peer.new("telemetry") if "heap" in s.body]
    dropped = sum(h["drop"] for h in health)
    reports = [s.body["n"] for s in peer.new("telemetry") if "n" in s.body]
    assert dropped >= 1 and len(reports) + len(alarms) + dropped >= 20
    h = health[-1]
    assert set(h) == {"up", "heap", "q", "drop", "rssi"}  # docs/protocol.md section 8
    assert h["rssi"] == -60


def test_wifi_loss_drops_the_session_and_reconnects(mpy, mosquitto_broker):
    peer = MqttPeer(mosquitto_broker)
    world = {"wifi": {"ssid": "linli", "password": "pw", "rssi": -67,
                      "up": [(0, True), (1200, False), (2400, True)]}}
    run = mpy.start(TICKER, world=world, files=files(mosquitto_broker, bin={"count": 25, "period_ms": 100}))
    try:
        peer.wait(lambda p: len([s for s in p.new("telemetry") if "n" in s.body]) == 25, timeout=15,
                  what="all 25 reports")
        r = run_with(peer, run, stop_after=0.2)
    finally:
        run.kill()
    assert "wifi lost" in r.stdout, r.stdout
    assert [s.body["n"] for s in peer.new("telemetry") if "n" in s.body] == list(range(1, 26))
    # The broker saw the socket die without DISCONNECT: the will, then online again.
    assert [a[0] for a in peer.avail] == [b"online", b"offline", b"online"]
    connects = [e for e in r.events if e[0] == "wifi" and e[2] == "connect"]
    assert len(connects) == 2


def test_wifi_stack_restarts_after_repeated_failed_connects(mpy, mosquitto_broker):
    """No access point for the first 3.5 s: with wifi_timeout_s 1 and wifi_reset_n 2, every
    second failed attempt restarts the Wi-Fi stack (active False, then True), and the node
    connects once the AP is back."""
    peer = MqttPeer(mosquitto_broker)
    world = {"wifi": {"ssid": "linli", "password": "pw", "up": [(0, False), (3500, True)]}}
    f = files(mosquitto_broker, wifi_timeout_s=1, wifi_reset_n=2, bin={"count": 1, "period_ms": 100})
    run = mpy.start(TICKER, world=world, files=f)
    try:
        peer.wait(lambda p: [s for s in p.new("telemetry") if "n" in s.body], timeout=20, what="a report")
        r = run_with(peer, run, stop_after=0.2)
    finally:
        run.kill()
    wifi = [e[2:] for e in r.events if e[0] == "wifi"]
    # The radio is switched on once at boot, then each attempt is a connect; the failed ones end
    # in a disconnect, and after every second one in a row the stack is restarted.
    steps = []
    for kind, arg in wifi:
        steps.append("on" if (kind, arg) == ("active", True) else "off" if kind == "active" else kind)
    assert steps[0] == "on" and steps[-1] == "connect", steps
    fails = steps.count("disconnect")
    assert fails >= 2, steps
    assert steps[1:] == (["connect", "disconnect"] * 2 + ["off", "on"]) * (fails // 2) + ["connect", "disconnect"] * (fails % 2) + ["connect"], steps
    assert r.stdout.count("restarting the Wi-Fi stack") == fails // 2, r.stdout
    assert peer.kinds()[0] == "hello"


def test_power_cut_mid_write_then_replay_up_to_the_last_whole_record(mpy, mosquitto_factory):
    broker = mosquitto_factory()
    broker.stop()  # nothing can be sent: every frame stays in the flash queue
    run = mpy.start(TICKER, files=files(broker, bin={"count": 10, "period_ms": 50}))
    deadline = time.monotonic() + 10
    while queued_frames(run.flash) < 11:  # hello + 10 reports
        assert time.monotonic() < deadline, "the node did not queue its frames"
        time.sleep(0.05)
    run.kill()  # a power cut
    seg = run.flash / "q" / queue_files(run.flash)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # the last record (report n=10) torn mid-write
    broker.start()
    peer = MqttPeer(broker)
    run = mpy.start(TICKER, files=files(broker, bin={"count": -1}))
    try:
        peer.wait(lambda p: len(p.new("hello")) == 2 and len(p.new("telemetry")) >= 9, what="the replay")
        peer.idle(1.0)
        r = run_with(peer, run, stop_after=0.1)
    finally:
        run.kill()
    assert [s.body["n"] for s in peer.new("telemetry") if "n" in s.body] == list(range(1, 10))
    assert [s.reason for s in peer.seen if s.reason != "ok"] == []
    counters = [s.counter for s in peer.new() if s.kind != "time_sync"]
    assert counters == sorted(counters) and counters[-1] > 256  # the second boot skipped ahead
    assert queue_files(r.flash) == []
