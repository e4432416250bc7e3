"""The streetlight role on the MicroPython unix port (firmware as .mpy, 64 KiB heap).

The logic (roles.streetlight_core) runs over simulated days in
tests/mp/roles/streetlight_scenarios.py, once for the module; each test checks one part. The
glue (roles.streetlight) runs on the simulated ESP32 in tests/mp/roles/streetlight_run.py.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from harness.micropython import MicroPython
from roles_mp import check_contract, compile_helpers, run_script

pytestmark = pytest.mark.micropython

CST = dt.timezone(dt.timedelta(hours=8))


def local(t):
    return dt.datetime.fromtimestamp(t, CST)


@pytest.fixture(scope="module")
def res(tmp_path_factory, micropython_tools, firmware_build):
    board = MicroPython(tmp_path_factory.mktemp("sl"), micropython_tools, firmware_build)
    try:
        return run_script(board, "streetlight_scenarios.py")
    finally:
        board.close()


def test_dusk_and_dawn_from_a_noisy_light_sensor_switch_once_each(res):
    sw = res["dusk_dawn"]["switches"]
    # Starts at noon (light), then exactly one dusk and one dawn per night, despite +-40 %
    # noise, headlights and shadows (3 % of readings).
    assert [s[0] for s in sw] == [False, True, False, True]
    dusk, dawn, dusk2 = local(sw[1][1]), local(sw[2][1]), local(sw[3][1])
    # The sky model crosses 10 lx around 19:04 and back over 30 lx around 04:56; the switch
    # waits for the 2-minute dwell.
    assert (dusk.hour, dusk.minute) >= (19, 0) and (dusk.hour, dusk.minute) <= (19, 12), dusk
    assert (dawn.hour, dawn.minute) >= (4, 45) and (dawn.hour, dawn.minute) <= (5, 10), dawn
    assert dusk2 - dusk < dt.timedelta(hours=24, minutes=10)


def test_motion_boost_and_hold(res):
    lv = dict(res["motion"]["levels"])
    assert lv[0] == lv[8] == 40  # two hours into the night: the profile's 40 %
    assert all(lv[s] == 100 for s in range(10, 160, 2))  # motion at 10, 40, 100 s; hold 60 s
    assert lv[160] == lv[198] == 40
    assert res["motion"]["tele_motion"] == [[0, 0], [10, 1], [160, 0]]
    assert res["motion_day"]["level"] == 0  # no boost by day


def test_battery_protection_dims_then_switches_off_with_hysteresis(res):
    rows = res["battery"]["rows"]
    # (voltage, levels seen, state): 0 normal, 1 dim (30 % cap), 2 off
    assert [r[2] for r in rows] == [0, 0, 0, 1, 2, 2, 1, 1, 0, 0]
    assert rows[0][1] == [80] and rows[3][1] == [30, 80] and rows[4][1] == [0, 30] and rows[5][1] == [0]
    evs = res["battery"]["events"]
    assert [(e["ev"], e["act"]) for e in evs] == [("battery_low", "dim"), ("battery_low", "off")]
    assert 11.5 <= evs[0]["bat"] <= 11.7 and 11.2 <= evs[1]["bat"] <= 11.4  # noise +-0.05 V


def test_a_lamp_failing_at_night_reports_one_fault(res):
    evs = res["fault"]["events"]
    # Open circuit from 3 h to 7 h: one event after the 30 s debounce (not one per reading,
    # not one per night); a later over-current after a healthy spell is a new fault.
    assert [(e["fault"], e["lamp"]) for e in evs] == [("open", 50), ("high", 50)]
    assert 3.0 < evs[0]["h"] < 3.05 and evs[0]["ma"] < 20
    assert 9.0 < evs[1]["h"] < 9.05 and evs[1]["ma"] == 900


def test_astronomical_schedule_when_the_light_sensor_fails(res):
    sw = res["astro"]["switches"]
    assert [(s[0], s[2]) for s in sw] == [(False, False), (True, True), (False, True)]
    dusk, dawn = local(sw[1][1]), local(sw[2][1])
    # Shanghai, 2024-06-20: sunset 19:01, sunrise 04:50 (NOAA); ticks every 30 s.
    assert dusk.strftime("%H:%M") in ("19:01", "19:02"), dusk
    assert dawn.strftime("%H:%M") in ("04:50", "04:51"), dawn
    assert res["blind"] == {"k": "blind", "dark": True, "level": 100}
    # Booted at local midnight: ~5 h after sunset, so the profile's 240-minute step applies.
    assert res["boot_night"]["level"] == 50


def test_lamp_commands(res):
    r = {row[0]: row[1:] for row in res["commands"]["res"]}
    assert r["auto"] == [70]
    assert r["level40"] == [None, 40]
    assert r["mode_off"] == [None, 0]
    assert r["test"] == [None, 100, "test"]
    assert r["after_test"] == [0, "off"]  # back to the mode before the test
    assert r["mode_on"] == [None, 40]
    assert r["bad_mode"] == r["bad_level"] == r["bad_profile"] == r["bad_test"] == ["range"]
    assert r["unknown"] == ["op"]
    assert r["mode_auto"] == [None, 40]  # lamp.level holds for the rest of the night
    assert res["settings"]["mode"] == "auto" and res["settings"]["profile"] == [[0, 90], [30, 20]]


def test_daily_energy(res):
    e1, = res["energy"]["first"]
    assert e1 == {"ev": "energy_daily", "day": "2024-06-19", "wh_pv": 0.0, "wh_lamp": 12.0, "h_lit": 2.0}
    e2, = res["energy"]["second"]
    assert e2["day"] == "2024-06-20" and e2["wh_lamp"] == 12.0 and abs(e2["wh_pv"] - 72.0) < 0.2
    assert abs(e2["h_lit"] - 2.0) < 0.1


def test_telemetry_changes_and_heartbeat(res):
    rows = res["telemetry"]["rows"]
    assert [r[0] for r in rows] == [0, 300, 360, 600]
    assert set(rows[0][1]) == {"lux", "lamp", "mode", "ma", "pv", "motion", "bat", "hb"}
    assert rows[2][1] == {"lux": 15000, "hb": 240}  # a 25 % change, after report_min_s


def test_payloads_are_the_protocols_and_the_gateway_takes_them(res):
    events = res["battery"]["events"] + res["energy"]["first"] + res["energy"]["second"]
    events += [{k: v for k, v in e.items() if k != "h"} for e in res["fault"]["events"]]
    tele = [row[1] for row in res["telemetry"]["rows"]]
    types = check_contract("streetlight", tele, events)
    assert {"streetlight.lamp_fault", "streetlight.battery_low", "streetlight.energy_daily"} <= set(types)


def test_logic_heap(res):
    used = res.heaps["end"]["alloc"] - res.record["heap"]["sim"]
    print("streetlight logic heap in use after the scenarios: %d bytes (64-bit host)" % used)
    assert used < 48 * 1024


# -- the glue on the simulated ESP32 ---------------------------------------------------------

@pytest.fixture(scope="module")
def helpers(tmp_path_factory, micropython_tools):
    return [compile_helpers(micropython_tools, tmp_path_factory.mktemp("helpers"))]


def test_streetlight_glue_lights_boosts_detects_a_fault_and_obeys_commands(mpy, helpers):
    world = {
        "time": 1718900000,
        "i2c": {
            0x23: {"reads": [b"\x00\x02"]},  # BH1750: 2 counts = 1.7 lx: night
            0x40: {"regs": {2: b"\x60\xe2", 4: b"\x00\x33"}},  # INA219: 12.4 V, 5 mA: lamp open
        },
        "pins": {27: [(0, 0), (400, 1), (500, 0)]},  # PIR: someone walks by at 0.4 s
    }
    r = mpy.run(main="streetlight_run:main", world=world, extra_path=helpers, timeout=30, stop_after=2.6)
    assert r.stopped and r.exception is None, r.describe()
    out = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    tele = [o["body"] for o in out if o["k"] == "telemetry"]
    evs = [o for o in out if o["k"] == "event"]
    assert tele[0]["lamp"] == 40 and tele[0]["lux"] == 2 and tele[0]["bat"] == 12.4 and tele[0]["mode"] == "auto"
    # The lamp PWM: 40 % (CIE curve: about 11 % duty), boosted to 100 % by the PIR within
    # half a second, back to 40 % after the 1 s hold, then off by command at 2 s.
    pwm = [(ms, duty) for ms, _, duty in r.pwm(25)]
    duties = [d for _, d in pwm]
    assert duties[1:] == [duties[1], 65535, duties[1], 0] and 5000 < duties[1] < 9000, pwm
    boost_ms = pwm[2][0]
    assert 400 <= boost_ms < 900, pwm
    assert pwm[3][0] - boost_ms >= 1000 and pwm[4][0] >= 2000
    # The open lamp: one lamp_fault with the ALARM flag.
    assert [(e["body"]["ev"], e["body"]["fault"], e["alarm"]) for e in evs] == [("lamp_fault", "open", True)]
    results = [(o["op"], o["ok"], o.get("err")) for o in out if o["k"] == "result"]
    assert results == [("lamp.level", False, "range"), ("lamp.mode", True, None)]
    assert json.loads((mpy.flash / "streetlight.cfg").read_text())["mode"] == "off"
    assert tele[-1]["lamp"] == 0 and tele[-1]["mode"] == "off"


def test_the_days_energy_survives_a_reboot(mpy, helpers):
    """Half an hour of lamp energy (500 mA at 12 V: 3 Wh) before a reboot at 23:50 local time;
    the node comes back after midnight and its energy_daily still holds the day's 3 Wh."""
    world = {
        "i2c": {0x23: {"reads": [b"\x00\x02"]}, 0x40: {"regs": {2: b"\x5d\xc0", 4: b"\x00\x33"}}},
        "time": int(dt.datetime(2024, 6, 20, 23, 50, tzinfo=CST).timestamp()),
    }
    r1 = mpy.run(main="streetlight_run:main_energy", world=world, extra_path=helpers, timeout=60)
    assert r1.end == "reset", r1.describe()
    saved, = [json.loads(x) for x in r1.stdout.splitlines() if x.startswith('{"k": "saved"')]
    # Written at the last save (every 600 s of role time: the last one at 1801 s).
    assert saved["e"]["lamp"] == 10800.0 and saved["e"]["pv"] == 0.0, saved
    assert saved["e"]["lit"] == saved["lit"] > 1700, saved
    assert local(saved["e"]["d"] * 86400 - 8 * 3600).date() == dt.date(2024, 6, 20)
    world["time"] = int(dt.datetime(2024, 6, 21, 0, 5, tzinfo=CST).timestamp())
    r2 = mpy.run(main="streetlight_run:main_energy", world=world, extra_path=helpers, timeout=60, stop_after=3)
    assert r2.reset_cause == "SOFT_RESET" and r2.exception is None, r2.describe()
    evs = [json.loads(x)["body"] for x in r2.stdout.splitlines() if x.startswith("{")]
    evs = [e for e in evs if e.get("ev") == "energy_daily"]
    assert evs == [{"ev": "energy_daily", "day": "2024-06-20", "wh_pv": 0.0, "wh_lamp": 3.0,
                    "h_lit": round(saved["lit"] / 3600, 2)}], r2.stdout
    # The new day's sums start from zero, and are on flash already.
    e = json.loads((mpy.flash / "streetlight.en").read_text())
    assert e["lamp"] == 0 and e["d"] == saved["e"]["d"] + 1


# -- the whole node: runtime + streetlight role over MQTT ------------------------------------

# The whole streetlight node (runtime, role, four drivers, MQTT), in the heap node_peer.NODE_HEAP
# gives each way of deploying it (bench/firmware.py finds the smallest heap it needs).
@pytest.mark.mosquitto
@pytest.mark.parametrize("deploy", ["files", "romfs"])
def test_streetlight_node_lights_reports_a_fault_and_takes_commands(mpy, mosquitto_broker, deploy):
    from linli.link import Flag, Role
    from node_peer import MqttPeer, deployed, node_files, run_with

    peer = MqttPeer(mosquitto_broker, role=Role.STREETLIGHT)
    world = {
        "i2c": {0x23: {"reads": [b"\x00\x02"]}, 0x40: {"regs": {2: b"\x60\xe2", 4: b"\x00\x33"}}},
        "pins": {27: 0},
    }
    files = node_files(broker_port=mosquitto_broker.port, role="streetlight",
                       streetlight={"profile": [[0, 40]], "ina_pv": None, "tick_ms": 200, "settle_s": 1, "fault_s": 1})
    run = mpy.start(world=world, files=files, heap=deployed(mpy, deploy))
    peer.wait(lambda p: [s for s in p.new("event") if s.body.get("ev") == "lamp_fault"], timeout=15, what="lamp_fault")
    peer.command(3, "lamp.mode", {"mode": "off"})
    peer.command(4, "lamp.level", {"level": 300})
    peer.command(5, "node.info")
    peer.wait(lambda p: len(p.new("command_result")) >= 3 and [s for s in p.new("telemetry") if s.body.get("mode") == "off"],
              timeout=10, what="results and the lamp off")
    r = run_with(peer, run, stop_after=0.3)
    assert r.exception is None, r.describe()
    assert "MemoryError" not in r.stdout + r.stderr, r.describe()  # not even a link drop
    tele = [s.body for s in peer.new("telemetry") if "lamp" in s.body]
    assert tele[0]["lamp"] == 40 and tele[0]["mode"] == "auto" and tele[0]["lux"] == 2 and tele[0]["bat"] == 12.4
    fault = [s for s in peer.new("event") if s.body.get("ev") == "lamp_fault"]
    assert [f.body["fault"] for f in fault] == ["open"] and fault[0].flags & Flag.ALARM
    res = sorted((s.body["id"], s.body["ok"], s.body.get("err")) for s in peer.new("command_result"))
    assert res == [(3, True, None), (4, False, "range"), (5, True, None)]
    info = [s.body for s in peer.new("command_result") if s.body["id"] == 5][0]
    assert info["rom"] == (1 if deploy == "romfs" else 0), info  # what a technician sees
    assert tele[-1]["lamp"] == 0 and tele[-1]["mode"] == "off"
    assert r.pwm(25)[-1][2] == 0
