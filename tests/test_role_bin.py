"""The bin role on the MicroPython unix port (firmware as .mpy, 64 KiB heap).

The logic (roles.bin_core) runs over simulated time in tests/mp/roles/bin_scenarios.py, once
for the module; each test checks one part. The glue (roles.bin) runs a whole wake on the
simulated ESP32 in tests/mp/roles/bin_wake.py: sensors -> reports -> deep sleep.
"""

from __future__ import annotations

import json

import pytest

from harness.micropython import MicroPython
from roles_mp import check_contract, compile_helpers, run_script

pytestmark = pytest.mark.micropython


@pytest.fixture(scope="module")
def res(tmp_path_factory, micropython_tools, firmware_build):
    board = MicroPython(tmp_path_factory.mktemp("bin"), micropython_tools, firmware_build)
    try:
        return run_script(board, "bin_scenarios.py")
    finally:
        board.close()


def test_a_week_of_filling_gives_one_full_until_emptied(res):
    w = res["week"]
    evs = [(e["ev"], e["day"]) for e in w["events"]]
    # Fill crosses 85 % on day ~4.4 (and hovers around it until 4.6): one "full"; emptied at 5.5.
    assert [e for e, _ in evs] == ["full", "emptied"], evs
    assert 3.8 <= evs[0][1] <= 4.6 and 5.5 <= evs[1][1] <= 5.6
    assert w["events"][0]["fill"] >= 85 and w["events"][1]["fill"] <= 40
    # Robust distance with temperature compensation: within 3 % of the truth despite the noise,
    # spikes, lost echoes and a 15..35 degC day.
    assert w["worst_err"] <= 3
    # Changed values only: far fewer reports than wakes, but an hourly heartbeat.
    assert w["n_tele"] < w["wakes"] / 4
    assert w["n_hb"] == 7 * 24
    # The state kept between wakes fits the ESP32's 2 KiB of RTC memory with room to spare.
    assert w["max_state"] < 512


def test_fire_risk_on_a_fast_rise_or_a_high_temperature(res):
    steps = res["fire"]["steps"]
    evs = [(s["temp"], e) for s in steps for e in s["ev"]]
    assert evs == [
        (45, {"ev": "fire_risk", "temp": 45.0, "rise": 4.0}),  # 25 -> 45 in 5 min: 4 degC/min
        (61, {"ev": "fire_risk", "temp": 61.0, "rise": 6.6}),  # re-armed after cooling, then hot
    ]
    # While at risk the bin wakes every minute instead of every five.
    assert [s["sleep"] for s in steps] == [300, 300, 300, 60, 60, 60, 300, 300, 300, 60, 60, 300, 300]
    # A slow rise (1 degC/min) up to 58 degC is no fire risk.
    assert res["fire_slow"]["events"] == []


def test_deposit_card_lid_open_close_weight(res):
    d = res["deposit"]
    assert d["events"] == [{"ev": "deposit", "at": 15, "card": "04a1b2c3d4e5f6", "w_g": 350, "cat": "recyclable"}]
    assert d["busy_at_0"] and not d["busy_after"]
    # A card but no lid: given up after lid_wait_s, nothing sent.
    assert res["deposit_abandoned"] == {"k": "deposit_abandoned", "events": [], "busy_until": 30}
    # Re-opened while settling: weighed only after the last close.
    assert res["deposit_reopen"]["events"] == [{"ev": "deposit", "at": 9, "card": "a1b2", "w_g": 400, "cat": "recyclable"}]


def test_tipped_and_battery_low_with_hysteresis(res):
    assert res["tip_bat"]["seq"] == [[], ["tipped"], [], ["battery_low"], [], [], [], ["tipped", "battery_low"], []]


def test_deadband_and_heartbeat(res):
    rows = res["deadband"]["rows"]
    assert rows[0] == {"fill": 54, "dist": 50.0, "depth": 100, "temp": 20.0, "hb": 3600}
    assert rows[1] is rows[2] is rows[3] is None  # 1-4 % changes stay under the 5 % deadband
    assert rows[4] == {"fill": 60, "dist": 44.0, "hb": 2400}
    assert rows[12] == {"fill": 60, "dist": 44.0, "depth": 100, "temp": 20.0, "hb": 3600}  # 12th wake
    assert rows[13]["fill"] == 76 and rows[13]["hb"] == 3300


def test_overflow_when_refuse_stands_above_the_rim(res):
    assert res["overflow"]["seq"] == [[], [["full", 97]], [["overflow", 100]], [], [], [], [], [["overflow", 100]]]


def test_no_fill_measured_with_the_lid_open(res):
    lo = res["lid_open"]
    assert "fill" not in lo["tele"] and lo["tele"]["lid"] == 1 and lo["events"] == []


def test_robust_distance(res):
    d = res["distance"]
    assert d["a"] == 800  # one spike, one lost echo
    assert d["b"] is None  # only two echoes
    assert d["c"] is None  # no majority agrees
    assert d["d"] == 1035 and d["e"] == 947  # 40 degC air: sound is faster, the echo nearer


def test_bin_config_command_and_config_errors(res):
    c = res["config"]
    assert c["results"] == [None, "range", None, "arg", "range", "arg"]
    assert (c["depth"], c["report_s"], c["depth2"], c["sleep"]) == (120, 600, 120, 600)
    e = res["config_errors"]
    assert e["empty"] == "bin.full_pct must be an int from 50 to 100, got 40"
    assert e["cat"].startswith("bin.cat must be one of kitchen, recyclable")


def test_payloads_are_the_protocols_and_the_gateway_takes_them(res):
    events = list(res["week"]["events"]) + [e for s in res["fire"]["steps"] for e in s["ev"]]
    events += res["deposit"]["events"] + res["deposit_reopen"]["events"]
    events = [{k: v for k, v in e.items() if k not in ("day", "at")} for e in events]  # test annotations
    tele = [t for t in res["deadband"]["rows"] if t] + [res["lid_open"]["tele"]]
    types = check_contract("bin", tele, events)
    assert "bin.deposit" in types and "bin.fire_risk" in types and "bin.full" in types


def test_logic_heap(res):
    # What the bin logic keeps (imports included), host bytes on a 64-bit build: about twice an
    # ESP32's. Printed for the report; the bound keeps it from creeping.
    used = res.heaps["end"]["alloc"] - res.record["heap"]["sim"]
    print("bin logic heap in use after the scenarios: %d bytes (64-bit host)" % used)
    assert used < 40 * 1024


# -- the glue: one wake on the simulated ESP32 ----------------------------------------------

def a02_frames(mm_list):
    out = b""
    for mm in mm_list:
        h, low = mm >> 8, mm & 0xFF
        out += bytes([0xFF, h, low, (0xFF + h + low) & 0xFF])
    return out


def wake_world(lid=0, dist_mm=600, lid_schedule=None, frames_ms=range(100, 1600, 100)):
    # A02YYUW frames every 100 ms while the firmware listens (the sim hands them out as their
    # time comes). Kept short: the world lives in the same heap as the firmware under test.
    sched = [[ms, list(a02_frames([dist_mm + (i % 3) - 1]))] for i, ms in enumerate(frames_ms)]
    return {
        "pins": {"27": lid_schedule if lid_schedule is not None else lid, "26": 1},
        "uart": {"2": {"schedule": sched}},
        "adc": {"35": 40000},  # ~1.89 V at the ADC: 3.78 V battery through the 1:2 divider
        "time": 1718900000,
        "spi": {"model": "fake_rc522"},
        "onewire": {"4": {"ds18b20": [{"rom": "28ff4c5c621603", "temp": 21.5}]}},  # the pin "ow"
    }


@pytest.fixture(scope="module")
def helpers(tmp_path_factory, micropython_tools):
    return [compile_helpers(micropython_tools, tmp_path_factory.mktemp("helpers"))]


def test_a_bin_wake_reads_reports_and_deep_sleeps(mpy, helpers):
    r = mpy.run(main="bin_wake:main", world=wake_world(), extra_path=helpers, timeout=60)
    r.expect_ok()
    assert r.end == "deepsleep", r.describe()
    out = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    sent = [o for o in out if o["k"] in ("telemetry", "event")]
    tele = [o["body"] for o in sent if o["k"] == "telemetry"]
    assert tele, r.describe()
    t0 = tele[0]
    # 600 mm to the refuse in a 100 cm bin with the rim 8 cm down: (1000-600)/920 = 43 %.
    assert t0["fill"] == 43 and t0["lid"] == 0 and t0["tilt"] == 0 and t0["depth"] == 100
    assert t0["temp"] == 21.5 and t0["w"] == 2.0 and t0["bat"] == 3.78 and t0["hb"] == 3600
    sleep = [o for o in out if o["k"] == "sleep"]
    assert sleep == [{"k": "sleep", "s": 300}]
    assert r.deepsleep_ms == 300 * 1000
    # Armed before the sleep: the lid (GPIO 27, shut) wakes the bin when it opens (level 1).
    assert r.record["wake"] == {"ext0": {"pins": [27], "level": 1, "ms": r.record["wake"]["ext0"]["ms"]}}
    # The state for the next wake is on flash.
    st = json.loads((mpy.flash / "bin.st").read_text())
    assert st["r"]["fill"] == 43 and st["h"] == 1718900000
    # The next wake (timer): nothing changed, nothing reported but the state moved on.
    r2 = mpy.run(main="bin_wake:main", world=dict(wake_world(), time=1718900300, reset_cause="DEEPSLEEP_RESET"),
                 extra_path=helpers, timeout=60).expect_ok()
    out2 = [json.loads(x) for x in r2.stdout.splitlines() if x.startswith("{")]
    assert [o for o in out2 if o["k"] in ("telemetry", "event")] == [], r2.stdout
    assert json.loads((mpy.flash / "bin.st").read_text())["n"] == 1
    heap = r.record["heap"]
    print("bin wake: heap in use at the end %d bytes, sim %d (64-bit host)" % (heap["alloc_end"], heap["sim"]))


def test_a_card_wake_ends_in_a_deposit_event(mpy, helpers):
    # The lid opens 0.5 s after the wake and closes at 2.5 s; the card is on the reader.
    world = wake_world(lid_schedule=[[0, 0], [500, 1], [2500, 0]], frames_ms=[*range(100, 1600, 100), *range(3000, 6000, 100)])
    world["wake_reason"] = "EXT1"
    world["reset_cause"] = "DEEPSLEEP_RESET"
    r = mpy.run(main="bin_wake:main_card", world=world, extra_path=helpers, timeout=60).expect_ok()
    out = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    evs = [o["body"] for o in out if o["k"] == "event"]
    assert evs == [{"ev": "deposit", "card": "deadbeef", "w_g": 500, "cat": "kitchen"}], r.stdout
    assert r.end == "deepsleep"
    # The UID is never written to the console log.
    assert "deadbeef" not in "".join(x for x in r.stdout.splitlines() if not x.startswith("{"))


def test_the_card_reader_line_wakes_the_bin_on_ext1_and_the_card_becomes_a_deposit(mpy, helpers):
    """Asleep with the RC522's IRQ line (GPIO 36, active low) armed on EXT1; the line goes low
    (a card held up): the bin wakes with reason EXT1, keeps looking for the card (``card_s``),
    reads it, and the lid and scale make it a deposit. The same card on a timer wake is missed."""

    def events(r):
        out = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        return [o["body"] for o in out if o["k"] == "event"]

    def world(line, t):
        w = wake_world(lid_schedule=[[0, 0], [1600, 1], [2400, 0]],
                       frames_ms=[*range(100, 1600, 100), *range(3000, 6000, 100)])
        w["pins"]["36"] = line  # the card reader's IRQ line: 1 idle, 0 a card in the field
        w["time"] = t
        return w

    t0 = 1718900000
    # 1. A first boot with the line idle: the role arms the lid (EXT0) and the line (EXT1, all
    #    low) and sleeps. The card shown at 1.2 s is not looked for: no deposit.
    r1 = mpy.run(main="bin_wake:main_card_wake", world=world(1, t0), extra_path=helpers, timeout=60).expect_ok()
    assert r1.end == "deepsleep", r1.describe()
    assert r1.record["wake"]["ext1"]["pins"] == [36] and r1.record["wake"]["ext1"]["level"] == 0
    assert r1.record["wake"]["ext0"]["pins"] == [27]
    assert events(r1) == [], r1.stdout
    # 2. While it sleeps a card comes near: the line is low when the chip wakes. No test
    #    override of the wake reason: the sim derives EXT1 from what was armed and the line.
    r2 = mpy.run(main="bin_wake:main_card_wake", world=world(0, t0 + 300), extra_path=helpers, timeout=60).expect_ok()
    assert r2.reset_cause == "DEEPSLEEP_RESET" and r2.record["wake_reason"] == 3, r2.describe()
    assert events(r2) == [{"ev": "deposit", "card": "cafef00d", "w_g": 500, "cat": "kitchen"}], r2.stdout
    assert r2.end == "deepsleep" and r2.record["wake"]["ext1"]["pins"] == [36]
    assert "cafef00d" not in "".join(x for x in r2.stdout.splitlines() if not x.startswith("{"))
    # 3. A timer wake (line idle) with the same late card: the role does not wait for cards.
    r3 = mpy.run(main="bin_wake:main_card_wake", world=world(1, t0 + 600), extra_path=helpers, timeout=60).expect_ok()
    assert r3.record["wake_reason"] == 4 and events(r3) == [], r3.stdout


# -- the whole node: runtime + bin role over MQTT, a gateway peer -----------------------------

@pytest.mark.mosquitto
@pytest.mark.parametrize("deploy", ["files", "romfs"])
def test_bin_node_reports_takes_a_command_and_sleeps_until_the_next_wake(mpy, mosquitto_broker, deploy):
    """boot.py + main.py with role "bin": hello, the wake's telemetry (verified by the gateway's
    own link code), a bin.config command taken while awake, status "asleep until T", and the
    deep sleep the command asked for."""
    from node_peer import NOW, MqttPeer, deployed, node_files, run_with

    peer = MqttPeer(mosquitto_broker)
    world = wake_world()
    del world["time"], world["spi"]  # RTC from power-on; no card reader fitted (rfid false)
    files = node_files(broker_port=mosquitto_broker.port, bat_pin=35, report_s=300,
                       bin={"rfid": False, "cat": "recyclable"})
    run = mpy.start(world=world, files=files, heap=deployed(mpy, deploy))
    peer.wait(lambda p: p.new("hello"), what="hello")
    peer.command(7, "bin.config", {"report_s": 600})
    r = run_with(peer, run, timeout=30)
    assert r.end == "deepsleep", r.describe() + peer.summary()
    tele = [s.body for s in peer.new("telemetry") if "fill" in s.body]
    assert tele and tele[0]["fill"] == 43 and tele[0]["bat"] == 3.78 and tele[0]["lid"] == 0, peer.summary()
    res = [s.body for s in peer.new("command_result")]
    assert res == [{"id": 7, "ok": True}], peer.summary()
    status = peer.new("status")[-1].body
    assert status["st"] == "asleep" and NOW + 600 <= status["until"] <= NOW + 660, status
    assert r.deepsleep_ms == 600 * 1000
    # The DS18B20 read through the real HAL's 1-Wire bus; the lid pin armed as a wake source.
    assert tele[0]["temp"] == 21.5, peer.summary()
    assert r.record["wake"]["ext0"]["pins"] == [27] and r.record["wake"]["ext0"]["level"] == 1
    # What was left of the heap with the whole node and the bin role running.
    health = [s.body for s in peer.new("telemetry") if "heap" in s.body]
    print("bin node: free heap at the health report %s bytes (64-bit host)" % [h["heap"] for h in health])
    assert json.loads((mpy.flash / "bin.cfg").read_text()) == {"report_s": 600}


@pytest.mark.mosquitto
def test_a_bin_config_taken_while_the_node_says_asleep_counts_for_this_sleep(mpy, mosquitto_broker):
    """The gateway's command reaches the node after its first "asleep" status (sent before the
    status is acked, so it is taken during the flush): the new report_s sets this very sleep,
    and the gateway gets a second status saying so."""
    from node_peer import NOW, MqttPeer, deployed, node_files, run_with

    class Late(MqttPeer):
        def received(self, r):
            if r.ok and r.frame.body.get("st") == "asleep" and not self.new("status"):
                self.command(9, "bin.config", {"report_s": 900})  # ahead of this status's ack
            return super().received(r)

    peer = Late(mosquitto_broker)
    world = wake_world()
    del world["time"], world["spi"]
    files = node_files(broker_port=mosquitto_broker.port, bat_pin=35, report_s=300,
                       bin={"rfid": False, "cat": "recyclable"})
    r = run_with(peer, mpy.start(world=world, files=files, heap=deployed(mpy, "romfs")), timeout=30)
    assert r.end == "deepsleep", r.describe() + peer.summary()
    assert [s.body for s in peer.new("command_result")] == [{"id": 9, "ok": True}], peer.summary()
    told = [(s.body["for"], s.body["until"] - NOW) for s in peer.new("status")]
    assert [t[0] for t in told] == [300, 900] and 900 <= told[1][1] <= 960, told
    assert r.deepsleep_ms == 900 * 1000


_RELEASE_PROBE = """
import json, sys
import _sim
from roles import bin as b
_rel = b.Bin._release
def _release(self):
    seen = {"k": "release", "ms": _sim.ms(), "link": "node.mqttlink" in sys.modules,
            "before": sorted(m for m in sys.modules if m.startswith("drivers") or m == "roles.bin_core")}
    _rel(self)
    seen["after"] = sorted(m for m in sys.modules if m.startswith("drivers") or m == "roles.bin_core")
    print(json.dumps(seen))
b.Bin._release = _release
from node import runtime
runtime.main()
"""


@pytest.mark.mosquitto
def test_the_bin_brings_its_link_up_only_once_its_work_is_queued(mpy, mosquitto_broker):
    """Role.link_later: the bin reads, decides and queues with no link code on the heap, then
    drops its drivers and core; only then is the MQTT link imported and connected. Wi-Fi
    associates from boot all the same, and every frame goes out in counter order."""
    from node_peer import MqttPeer, node_files, run_with

    peer = MqttPeer(mosquitto_broker)
    world = wake_world()
    del world["time"], world["spi"]
    files = node_files(broker_port=mosquitto_broker.port, bat_pin=35, report_s=300,
                       bin={"rfid": False, "cat": "recyclable"})
    r = run_with(peer, mpy.start(_RELEASE_PROBE, world=world, files=files), timeout=30)
    assert r.end == "deepsleep", r.describe() + peer.summary()
    seen, = [json.loads(x) for x in r.stdout.splitlines() if x.startswith('{"k": "release"')]
    assert seen["link"] is False, seen  # no link code while the role worked
    assert "drivers.a02yyuw" in seen["before"] and "roles.bin_core" in seen["before"], seen
    assert seen["after"] == [], seen  # their code went before the link came
    wifi = [e for e in r.events if e[0] == "wifi" and e[2] == "connect"]
    assert len(wifi) == 1 and wifi[0][1] < seen["ms"], (wifi, seen)  # associating meanwhile
    kinds = [s.kind for s in peer.new()]
    assert kinds[0] == "hello" and "telemetry" in kinds and kinds[-1] == "status", peer.summary()
    counters = [s.counter for s in peer.new() if s.kind != "time_sync"]
    assert counters == sorted(counters)


def test_a_bin_wake_with_an_hcsr04(mpy, helpers):
    # Echo times at 20 degC air for 600 mm (3494 us), one lost echo: the same fill as the A02YYUW.
    world = dict(wake_world(), pulses={18: [3494, 3500, -1, 3488, 3494]})
    r = mpy.run(main="bin_wake:main_hcsr04", world=world, extra_path=helpers, timeout=60).expect_ok()
    out = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    tele = [o["body"] for o in out if o["k"] == "telemetry"]
    assert tele and tele[0]["fill"] == 43 and r.end == "deepsleep", r.stdout
    assert r.pin(5) and set(r.pin_values(5)) == {0, 1}  # the trigger pulses
