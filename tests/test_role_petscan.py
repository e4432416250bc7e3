"""The pet scanner role on the MicroPython unix port (firmware as .mpy, 64 KiB heap).

Tags are made here with the gateway's ``linli.pettag`` (so the scanner and the gateway agree on
what a tag is). The logic (roles.petscan_core) runs in tests/mp/roles/petscan_scenarios.py;
the glue (roles.petscan) on the simulated ESP32 in tests/mp/roles/petscan_run.py, with the
LED pins and the buzzer PWM recorded by the sim.
"""

from __future__ import annotations

import json

import pytest

from harness.micropython import MicroPython
from linli.pettag import make_tag
from roles_mp import check_contract, compile_helpers, run_script

pytestmark = pytest.mark.micropython

KEY = b"k" * 32
GOOD = make_tag("7Q2M9XKD", KEY)
GOOD2 = make_tag("AB12CD34", KEY)
BAD = [
    GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1"),  # wrong check character
    GOOD.replace("LP1", "LP2"),
    GOOD[:-2],
    "hello",
    GOOD[:4] + GOOD[5] + GOOD[4] + GOOD[6:],  # two characters swapped
    GOOD.replace("7", "I", 1),  # not in the alphabet
]
HEAD = "GOOD=%r\nGOOD_ID='7Q2M9XKD'\nGOOD2=%r\nBAD=%r\n" % (GOOD, GOOD2, BAD)
R, G, B = 25, 26, 27
BUZZER = 32


@pytest.fixture(scope="module")
def res(tmp_path_factory, micropython_tools, firmware_build):
    board = MicroPython(tmp_path_factory.mktemp("pet"), micropython_tools, firmware_build)
    try:
        return run_script(board, "petscan_scenarios.py", head=HEAD)
    finally:
        board.close()


def test_scan_online_shows_the_answer_at_once(res):
    o = res["online"]
    assert o["ev"] == {"ev": "scan", "tag": GOOD}
    assert o["led0"] == ["white", None] and o["before"] == [[1000, "white", None]]  # waiting
    assert o["shown"] and o["led"] == ["green", None] and o["buzz"] == "ok" and o["buzz2"] is None
    assert o["after"] == [[1180, "green", None], [5180, "off", None]]  # shown for show_ms


def test_no_answer_within_500_ms_shows_queued_and_a_late_answer_still_counts(res):
    n = res["no_answer"]
    assert n["seen"] == [[1000, "white", None], [1500, "blue", "double"]] and n["buzz"] == "queued"
    assert n["late"] and n["led"] == ["red", None] and n["buzz2"] == "alarm"
    assert res["too_late"]["shown"] is False


def test_scan_offline_is_queued_at_once(res):
    o = res["offline"]
    assert o["ev"] == {"ev": "scan", "tag": GOOD}  # still sent: the runtime queues it
    assert o["led"] == ["blue", "double"] and o["buzz"] == "queued"
    assert o["seen"] == [[1000, "blue", "double"], [5000, "off", None]]


def test_bad_tags_are_rejected_locally_with_the_error_buzz(res):
    r = res["rejected"]
    assert r["count"] == len(BAD)
    for text, ev, led, buzz in r["res"]:
        assert ev is None and led == ["red", "fast"] and buzz == "error", text


def test_a_tag_held_in_front_of_the_scanner_is_sent_once(res):
    r = res["repeats"]
    assert r["sent"] == [0] and r["sent2"] == [14000, 20000] and r["other"]


def test_answers_for_other_pets_are_ignored(res):
    w = res["wrong_answer"]
    assert not w["other_pet"] and not w["bad_status"]
    assert w["forged"] and w["led"] == ["red", None] and w["buzz"] == "alarm"  # tag null: a forged tag
    assert res["unsolicited"]["shown"] is False


def test_fouling_button_debounced_with_a_gap(res):
    evs = res["button"]["events"]
    assert [(e["at"], e.get("tag"), e["led"], e["buzz"]) for e in evs] == [
        (5065, GOOD, "white", "ok"),  # bouncy press: one event, 50 ms after it settled
        (20050, GOOD, "white", "ok"),  # the press at 8 s came within the 10 s gap
        (200050, None, "blue", "queued"),  # offline; the scan is too old to name the pet
    ]


def test_payloads_are_the_protocols_and_the_gateway_takes_them(res):
    events = [res["online"]["ev"], res["offline"]["ev"]]
    events += [{k: v for k, v in e.items() if k in ("ev", "tag")} for e in res["button"]["events"]]
    assert check_contract("petscan", [], events) == ["petscan.scan", "petscan.scan"] + ["petscan.fouling"] * 3


def test_logic_heap(res):
    used = res.heaps["end"]["alloc"] - res.record["heap"]["sim"]
    print("petscan logic heap in use after the scenarios: %d bytes (64-bit host)" % used)
    assert used < 40 * 1024


# -- the glue on the simulated ESP32 ---------------------------------------------------------

@pytest.fixture(scope="module")
def helpers(tmp_path_factory, micropython_tools):
    return [compile_helpers(micropython_tools, tmp_path_factory.mktemp("helpers"))]


def run_glue(mpy, helpers, online, answer_ms=150, stop_after=2.6):
    head = "ANSWER_TAG=%r\nANSWER_ID='7Q2M9XKD'\nANSWER_MS=%d\nONLINE=%r\n" % (GOOD, answer_ms, online)
    # The role module with the test's constants in front, as a main script.
    from roles_mp import MP_ROLES

    code = head + (MP_ROLES / "petscan_run.py").read_text() + "\nimport asyncio\nasyncio.run(main())\n"
    world = {
        "uart": {1: {"schedule": [(300, GOOD + "\r"), (1000, BAD[0] + "\r"), (1800, GOOD2 + "\r")]}},
        "pins": {33: [(0, 1), (1300, 0), (1500, 1)]},  # the fouling button, pressed at 1.3 s
    }
    r = mpy.run(code, world=world, extra_path=helpers, timeout=30, stop_after=stop_after)
    assert r.stopped and r.exception is None, r.describe()
    out = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    at = {}
    for o in out:
        if o["k"] == "at":
            at.setdefault(o["what"], []).append(o["ms"])
    return r, out, at


def level_at(changes, ms):
    v = 0
    for t, x in changes:
        if t > ms:
            break
        v = x
    return v


def rgb(r, ms):
    return tuple(level_at(r.pin(p), ms) for p in (R, G, B))


def test_petscan_glue_online_green_within_500_ms_of_the_answer(mpy, helpers):
    r, out, at = run_glue(mpy, helpers, online=True)
    sent = [o["body"] for o in out if o["k"] == "event"]
    assert sent == [{"ev": "scan", "tag": GOOD}, {"ev": "fouling", "tag": GOOD}, {"ev": "scan", "tag": GOOD2}]
    answer = at["answer"][0]
    # Green (only the green channel: white was on while waiting) within 500 ms of the answer,
    # and the OK beep (2.7 kHz).
    changes = sorted(t for p in (R, G, B) for t, _ in r.pin(p) if t >= answer)
    green = [t for t in changes if rgb(r, t) == (0, 1, 0)]
    assert green and green[0] - answer < 500, r.record["pins"]
    assert rgb(r, answer - 1) == (1, 1, 1)  # white: waiting for the answer
    beeps = [(ms, f) for ms, f, d in r.pwm(BUZZER) if d]
    assert any(f == 2700 and 0 <= ms - answer < 500 for ms, f in beeps), beeps
    # The bad tag (1 s): nothing sent, the error tone (400 Hz).
    assert any(f == 400 and 1000 <= ms < 1300 for ms, f in beeps), beeps
    # The second scan gets no answer: blue + the queued double beep (1.8 kHz) 500 ms later.
    scan2 = at["scan"][1]
    assert any(f == 1800 and 450 <= ms - scan2 < 700 for ms, f in beeps), beeps
    blue = [t for t in sorted(t for p in (R, G, B) for t, _ in r.pin(p)) if t > scan2 and rgb(r, t) == (0, 0, 1)]
    assert blue and 480 <= blue[0] - scan2 < 600, r.record["pins"]


def test_petscan_glue_offline_shows_queued_at_once(mpy, helpers):
    r, out, at = run_glue(mpy, helpers, online=False, stop_after=1.0)
    scan = at["scan"][0]
    beeps = [(ms, f) for ms, f, d in r.pwm(BUZZER) if d]
    assert beeps[0][1] == 1800 and beeps[0][0] - scan < 100, beeps
    assert rgb(r, scan + 20) == (0, 0, 1)
    assert "answer" not in at


# -- the whole node: runtime + petscan role over MQTT, the gateway answering -----------------

@pytest.mark.mosquitto
@pytest.mark.parametrize("deploy", ["files", "romfs"])
def test_petscan_node_shows_the_gateways_answer_within_500_ms(mpy, mosquitto_broker, deploy):
    """boot.py + main.py with role "petscan" (heap: node_peer.NODE_HEAP): a tag scanned once the link is
    up goes to the gateway peer (verified with the gateway's link code), which answers with
    pet.status as linli.ingest does; the LED turns green before the 500 ms deadline (no queued
    indication in between). Then the fouling button."""
    from linli.link import Role
    from node_peer import MqttPeer, deployed, node_files, run_with

    peer = MqttPeer(mosquitto_broker, role=Role.PETSCAN)
    world = {"uart": {1: {"schedule": [(2500, GOOD + "\r")]}}, "pins": {33: [(0, 1), (4000, 0), (4200, 1)]}}
    run = mpy.start(world=world, files=node_files(broker_port=mosquitto_broker.port, role="petscan"),
                    heap=deployed(mpy, deploy))
    answered = []

    def answer(p):
        scans = [s for s in p.new("event") if s.body.get("ev") == "scan"]
        if scans and not answered:
            p.command(0, "pet.status", {"tag": "7Q2M9XKD", "status": "green", "buzz": "ok"})  # as linli.ingest
            answered.append(scans[0])
        return len([s for s in p.new("event") if s.body.get("ev") == "fouling"]) > 0

    peer.wait(answer, timeout=15, what="a scan and a fouling report")
    r = run_with(peer, run, stop_after=0.5)
    assert r.exception is None, r.describe()
    assert answered[0].body == {"ev": "scan", "tag": GOOD}
    # The LED: white while waiting (from the scan), then green; never blue (queued).
    changes = sorted(t for p in (R, G, B) for t, _ in r.pin(p))
    white = [t for t in changes if rgb(r, t) == (1, 1, 1)]
    assert white, r.record["pins"]
    green = [t for t in changes if t > white[0] and rgb(r, t) == (0, 1, 0)]
    assert green and green[0] - white[0] < 500, (white, green, r.record["pins"])
    assert not [t for t in changes if white[0] <= t <= green[0] and rgb(r, t) == (0, 0, 1)]
    print("petscan node: scan -> gateway -> green in %d ms" % (green[0] - white[0]))
    fouling = [s.body for s in peer.new("event") if s.body.get("ev") == "fouling"]
    assert fouling == [{"ev": "fouling", "tag": GOOD}]
    health = [s.body["heap"] for s in peer.new("telemetry") if "heap" in s.body]
    print("petscan node: free heap at the health report %s bytes (64-bit host)" % health)
