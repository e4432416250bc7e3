"""The gateway's GPIO panel on gpiozero's mock pins: LED patterns per state, the fault buzzer,
short and long presses of the service button, and the state derived from a running gateway."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace

import pytest
from gpiozero.pins.mock import MockFactory

from linli.panel import CUES, PATTERNS, Panel, doctor_jobs, panel_state

PINS = {"status_led": 17, "buzzer": 27, "button": 22}


class StepTimer:
    """The panel's timer under the test's control: each wait blocks until ``step()`` releases it,
    so patterns are checked step by step (durations from the log, states from the pins) with no
    sleeping and no timing in the assertions."""

    def __init__(self):
        self.cond = threading.Condition()
        self.calls = 0
        self.log: list = []  # (seconds, interruptible) of every wait
        self.tokens = 0
        self.kicks = 0
        self.stopped = False

    def wait(self, seconds, interruptible=True):
        with self.cond:
            self.calls += 1
            self.log.append((seconds, interruptible))
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.tokens or self.stopped or (interruptible and self.kicks))
            if self.stopped:
                return True
            if interruptible and self.kicks:
                self.kicks = 0
                return True
            self.tokens -= 1
            return False

    def interrupt(self):
        with self.cond:
            self.kicks += 1
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def until(self, calls: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.calls >= calls, timeout=10), (self.calls, calls, self.log[-5:])

    def step(self, n: int = 1) -> list:
        """Let ``n`` waits finish; return the (seconds, interruptible) of those n steps."""
        with self.cond:
            start = self.calls
            self.tokens += n
            self.cond.notify_all()
        self.until(start + n)
        return self.log[start - 1 : start - 1 + n]

    def settle(self, action) -> None:
        """Do ``action`` (which interrupts the player) and wait until it waits again."""
        with self.cond:
            start = self.calls
        action()
        self.until(start + 1)


@pytest.fixture
def factory():
    f = MockFactory()
    try:
        yield f
    finally:
        f.reset()


def make(factory, **kw):
    timer = StepTimer()
    panel = Panel(PINS, pin_factory=factory, timer=timer, hold_s=kw.pop("hold_s", 60.0), **kw)
    timer.until(1)  # the player shows "starting" (steady on, waiting)
    return panel, timer, factory.pin(17), factory.pin(27), factory.pin(22)


def states(pin):
    return [s.state for s in pin.states]


def play(timer, led, buzz, n):
    """Step through n steps from a clean pin history: (led states, buzzer states, durations)."""
    led.clear_states()
    buzz.clear_states()
    steps = timer.step(n)
    return states(led), states(buzz), [s for s, _ in steps]


def test_each_state_has_its_own_led_pattern(factory):
    panel, timer, led, buzz, _ = make(factory)
    try:
        assert led.state is True and states(led)[-1] is True  # starting: steady on
        seen = {}
        for state in ("ok", "degraded", "uplink_down"):
            timer.settle(lambda s=state: panel.set_state(s))
            n = len(PATTERNS[state])
            led_states, buzz_states, durations = play(timer, led, buzz, 2 * n)
            seen[state] = durations[:n]
            assert durations[:n] == durations[n:] == [d for _, _, d in PATTERNS[state]]  # it loops
            assert buzz_states == [False]  # silent
            # The pin goes through the pattern's levels in order, twice (history starts at the first).
            expected = [PATTERNS[state][i % n][0] for i in range(2 * n + 1)]
            collapsed = [x for i, x in enumerate(expected) if i == 0 or x != expected[i - 1]]
            assert led_states == collapsed, (state, led_states)
        assert seen == {"ok": [0.1, 2.9], "degraded": [0.2, 0.2, 0.2, 2.4], "uplink_down": [1.0, 1.0]}
    finally:
        panel.close()
    assert led.state is False and buzz.state is False


def test_fault_beeps_once_then_flickers_silently(factory):
    panel, timer, led, buzz, _ = make(factory)
    try:
        timer.settle(lambda: panel.set_state("ok"))
        timer.settle(lambda: panel.set_state("fault"))
        assert buzz.state is True  # the alarm cue started at once
        buzz.clear_states()
        led.clear_states()
        alarm = timer.step(len(CUES["alarm"]))
        assert [s for s, _ in alarm] == [0.2] * 6 and not any(i for _, i in alarm)  # not cut short by state changes
        assert states(buzz) == [True, False, True, False, True, False, True, False][: len(states(buzz))] and states(buzz).count(True) == 3
        led_states, buzz_states, durations = play(timer, led, buzz, 6)
        assert durations == [0.1] * 6 and buzz_states == [False] and led_states == [True, False] * 3 + [True]
        # Staying in fault does not beep again; a new fault after recovery does.
        panel.set_state("fault")
        timer.settle(lambda: panel.set_state("ok"))
        timer.settle(lambda: panel.set_state("fault"))
        assert buzz.state is True and panel.counts["faults"] == 2
    finally:
        panel.close()


def test_short_press_runs_the_self_check_and_blinks_the_result(factory):
    release = threading.Event()
    calls = []

    def check():
        calls.append(threading.current_thread().name)
        release.wait(10)
        return "warn"

    panel, timer, led, buzz, button = make(factory, self_check=check)
    try:
        timer.settle(lambda: panel.set_state("ok"))
        timer.settle(lambda: (button.drive_low(), button.drive_high()))  # press and release
        assert panel.counts["short_presses"] == 1 and panel.counts["long_presses"] == 0
        assert timer.log[-1] == (None, True) and led.state is True  # "checking": steady on until the result
        button.drive_low()
        button.drive_high()  # a second press while checking is ignored
        assert panel.counts["ignored_presses"] == 1
        timer.settle(release.set)
        assert calls and calls[0].startswith("panel-check")  # ran on the panel's executor, not gpiozero's thread
        assert panel.last_result == "warn"
        led_states, _, durations = play(timer, led, buzz, len(CUES["warn"]))
        assert durations == [0.5] * 5 and led_states == [False, True, False, True, False, True]  # two flashes, then the heartbeat
        _, _, durations = play(timer, led, buzz, 2)
        assert durations == [0.1, 2.9]  # back to the heartbeat
    finally:
        release.set()
        panel.close()


def test_long_press_starts_diagnostics(factory, tmp_path):
    done = threading.Event()

    def diagnostics():
        done.wait(10)
        (tmp_path / "report.json").write_text("{}")
        return "fail"

    panel, timer, led, buzz, button = make(factory, diagnostics=diagnostics, self_check=lambda: "pass", hold_s=0.05)
    try:
        timer.settle(lambda: panel.set_state("ok"))
        start = timer.calls
        button.drive_low()
        timer.until(start + 1)  # held for hold_s: gpiozero's hold thread fired when_held
        assert panel.counts["long_presses"] == 1
        assert buzz.state is True  # the chirp confirms the long press
        button.drive_high()
        assert panel.counts["short_presses"] == 0  # the release ending a long press is not a short press
        chirp = timer.step(len(CUES["chirp"]))
        assert [s for s, _ in chirp] == [0.1, 0.1]
        _, _, durations = play(timer, led, buzz, 6)
        assert durations == [d for _, _, d in PATTERNS["diagnostics"]]  # the triple flash while it runs
        timer.settle(done.set)
        assert (tmp_path / "report.json").exists() and panel.last_result == "fail"
        led_states, _, durations = play(timer, led, buzz, len(CUES["fail"]))
        assert led_states == [False] + [True, False] * 5 + [True]  # five flashes, then the heartbeat
    finally:
        done.set()
        panel.close()


def test_doctor_jobs_write_a_diagnostics_report(tmp_path):
    from linli.config import Config

    cfg = Config.from_text('[gateway]\nsite = "s"\nid = "g"\ndata_dir = "%s"\n[privacy]\nsite_secret = "0123456789abcdef-x"\n[local]\nenabled = false\n' % tmp_path, "gateway.toml")
    self_check, diagnostics = doctor_jobs(cfg)
    results = diagnostics()
    assert {r.check for r in results} >= {"config", "keystore", "disk"} and "gpio" not in {r.check for r in results}
    (report,) = tmp_path.glob("diagnostics-*.json")
    doc = json.loads(report.read_text())
    assert doc["worst"] in ("pass", "warn", "fail") and [r["check"] for r in doc["results"]] == [r.check for r in results]


def test_pins_in_use_are_reported_and_released(factory):
    from gpiozero.exc import GPIOPinInUse

    panel, timer, *_ = make(factory)
    with pytest.raises(GPIOPinInUse):
        Panel(PINS, pin_factory=factory, start=False)
    panel.close()
    Panel(PINS, pin_factory=factory, start=False).close()  # released by close()
    with pytest.raises(ValueError, match="unknown panel state 'sleepy'"):
        Panel(PINS, pin_factory=factory, start=False).set_state("sleepy")


def test_panel_state_from_the_gateway():
    class Outbox:
        def __init__(self, over=False, pending=0, oldest=None):
            self.st = SimpleNamespace(over_bound=over, pending=pending)
            self.oldest = oldest

        async def stats(self):
            return self.st

        async def transaction(self, fn):
            return self.oldest

    def gw(**kw):
        started = asyncio.Event()
        started.set()
        connected = asyncio.Event()
        if kw.get("local", True):
            connected.set()
        g = SimpleNamespace(started=started, node_broker=SimpleNamespace(connected=connected), outbox=kw.get("outbox", Outbox()),
                            uplink=SimpleNamespace(stats=SimpleNamespace(connected=kw.get("up", True))), ports=kw.get("ports", []),
                            cfg=SimpleNamespace(cameras=kw.get("cams", ())), camera_health=lambda: kw.get("health", {}))
        return g

    async def go():
        out = {}
        out["ok"] = await panel_state(gw())
        out["local"] = await panel_state(gw(local=False))
        out["full"] = await panel_state(gw(outbox=Outbox(over=True)))
        out["up"] = await panel_state(gw(up=False))
        out["serial"] = await panel_state(gw(ports=[SimpleNamespace(state="down")]))
        out["camera"] = await panel_state(gw(cams=("gate",), health={"gate": {"state": "degraded"}}))
        out["backlog"] = await panel_state(gw(outbox=Outbox(pending=5, oldest=time.time() - 3600)))
        out["recent"] = await panel_state(gw(outbox=Outbox(pending=5, oldest=time.time() - 10)))
        return out

    assert asyncio.run(go()) == {"ok": "ok", "local": "fault", "full": "fault", "up": "uplink_down", "serial": "degraded",
                                 "camera": "degraded", "backlog": "degraded", "recent": "ok"}
