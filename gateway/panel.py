"""The gateway's own panel on GPIO (gpiozero): a status LED, a fault buzzer, a service button.

The LED's blink pattern says the gateway's state (see ``PATTERNS`` and docs/doctor.md):

============ ========================================= =========================================
state        LED                                       meaning
============ ========================================= =========================================
starting     steady on                                 the gateway is starting
ok           a 0.1 s flash every 3 s (heartbeat)       all well
degraded     two 0.2 s flashes every 3 s               a camera, a serial port or the backlog
uplink_down  slow even blink, 1 s on / 1 s off         the upstream broker is unreachable
fault        fast flicker, 0.1 s on / 0.1 s off        the local broker is down or the outbox full
============ ========================================= =========================================

Entering ``fault`` beeps the buzzer three times (once per fault, not continuously). The service
button: a **short press** re-runs the self-check (the doctor's checks, in the panel's own
executor thread) with the LED steady on, then blinks the result: one 2 s flash = pass, two
0.5 s flashes = warnings, five 0.5 s flashes = a failure. A **long press** (the profile's
``hold_s``, 3 s) chirps, enters the diagnostics mode (a triple flash while it runs): the doctor's
full report is written to ``data_dir/diagnostics-<unix time>.json`` and its result blinked.

Off a Raspberry Pi, pass gpiozero's ``MockFactory()`` as ``pin_factory``; on the Pi leave it None
and gpiozero picks lgpio (or whatever is installed). One thread plays the patterns; the timer
it waits on is a seam, so tests can step through a pattern without sleeping.

>>> from gpiozero.pins.mock import MockFactory
>>> p = Panel({"status_led": 17, "buzzer": 27, "button": 22}, pin_factory=MockFactory())
>>> p.set_state("ok"); p.state
'ok'
>>> p.close()
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from typing import Any, Callable, Optional

log = logging.getLogger("linli.panel")

STATES = ("starting", "ok", "degraded", "uplink_down", "fault")

# One step: (LED on, buzzer on, seconds; None = until something changes). Looped while shown.
PATTERNS: dict[str, tuple] = {
    "starting": ((True, False, None),),
    "ok": ((True, False, 0.1), (False, False, 2.9)),
    "degraded": ((True, False, 0.2), (False, False, 0.2), (True, False, 0.2), (False, False, 2.4)),
    "uplink_down": ((True, False, 1.0), (False, False, 1.0)),
    "fault": ((True, False, 0.1), (False, False, 0.1)),
    # While the button's work runs:
    "checking": ((True, False, None),),
    "diagnostics": ((True, False, 0.1), (False, False, 0.1), (True, False, 0.1), (False, False, 0.1), (True, False, 0.1), (False, False, 0.7)),
}

# Played once, not interrupted by a state change.
CUES: dict[str, tuple] = {
    "alarm": ((True, True, 0.2), (False, False, 0.2)) * 3,
    "chirp": ((False, True, 0.1), (False, False, 0.1)),
    "pass": ((False, False, 0.5), (True, False, 2.0), (False, False, 0.5)),
    "warn": ((False, False, 0.5),) + ((True, False, 0.5), (False, False, 0.5)) * 2,
    "fail": ((False, False, 0.5),) + ((True, False, 0.5), (False, False, 0.5)) * 5,
}


class Timer:
    """What the pattern thread waits on: ``wait(s)`` returns True when woken early."""

    def __init__(self):
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wait(self, seconds: Optional[float], interruptible: bool = True) -> bool:
        if not interruptible:
            return self._stop.wait(seconds)
        woke = self._wake.wait(seconds)
        self._wake.clear()
        return woke or self._stop.is_set()

    def interrupt(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def _verdict(result: Any) -> str:
    """'pass', 'warn' or 'fail' from a verdict string or a list of doctor results."""
    if isinstance(result, str):
        return result if result in ("pass", "warn", "fail") else "fail"
    from linli.doctor import worst

    w = worst(list(result or []))
    return "pass" if w == "skip" else w


class Panel:
    """The status LED, buzzer and service button of the gateway.

    ``profile_pins``: ``{"status_led": BCM, "buzzer": BCM, "button": BCM}`` (any may be left
    out); ``self_check()`` and ``diagnostics()`` are blocking callables run on the panel's
    executor, returning ``"pass"``/``"warn"``/``"fail"`` or a list of doctor results.
    """

    def __init__(self, profile_pins: dict, *, pin_factory=None, active_high: Optional[dict] = None, pull_up: bool = True,
                 hold_s: float = 3.0, self_check: Optional[Callable[[], Any]] = None, diagnostics: Optional[Callable[[], Any]] = None,
                 timer: Optional[Timer] = None, start: bool = True):
        from gpiozero import LED, Buzzer, Button

        active_high = active_high or {}
        self.self_check, self.diagnostics = self_check, diagnostics
        self.state = "starting"
        self.last_result: Optional[str] = None
        self.counts = {"short_presses": 0, "long_presses": 0, "ignored_presses": 0, "faults": 0}
        self._timer = timer or Timer()
        self._lock = threading.Lock()
        self._cues: collections.deque = collections.deque()
        self._overlay: Optional[str] = None  # "checking" / "diagnostics" while the button's job runs
        self._busy = False
        self._was_held = False
        self._closed = False
        self.led = self.buzzer = self.button = None
        made = []
        try:
            if profile_pins.get("status_led") is not None:
                self.led = LED(profile_pins["status_led"], active_high=active_high.get("status_led", True), pin_factory=pin_factory)
                made.append(self.led)
            if profile_pins.get("buzzer") is not None:
                self.buzzer = Buzzer(profile_pins["buzzer"], active_high=active_high.get("buzzer", True), pin_factory=pin_factory)
                made.append(self.buzzer)
            if profile_pins.get("button") is not None:
                self.button = Button(profile_pins["button"], pull_up=pull_up, hold_time=hold_s, pin_factory=pin_factory)
                made.append(self.button)
        except Exception:
            for d in made:  # release what was claimed before the failure
                d.close()
            raise
        if self.button is not None:
            self.button.when_held = self._held
            self.button.when_released = self._released
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="panel-check")
        self._thread = threading.Thread(target=self._play, name="panel-led", daemon=True)
        if start:
            self._thread.start()

    @classmethod
    def from_profile(cls, profile, **kw) -> "Panel":
        """From a :class:`linli.hw.GatewayProfile` (``linli.hw.load_gateway_profile()``)."""
        kw.setdefault("active_high", dict(profile.active_high))
        kw.setdefault("pull_up", profile.pull_up)
        kw.setdefault("hold_s", getattr(profile, "hold_s", 3.0))
        return cls(dict(profile.pins), **kw)

    # -- state ---------------------------------------------------------------------------------
    def set_state(self, state: str) -> None:
        """Show ``state`` (one of ``STATES``); entering ``fault`` beeps three times."""
        if state not in STATES:
            raise ValueError("unknown panel state %r (one of %s)" % (state, ", ".join(STATES)))
        with self._lock:
            if state == self.state:
                return
            if state == "fault":
                self.counts["faults"] += 1
                self._cues.append("alarm")
            self.state = state
        self._timer.interrupt()

    def close(self) -> None:
        """Stop the pattern thread and release the pins (LED and buzzer off)."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        if self._thread.is_alive():
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for d in (self.button, self.buzzer, self.led):
            if d is not None:
                d.close()

    # -- the button (gpiozero's threads) -------------------------------------------------------
    def _held(self) -> None:
        self._was_held = True
        self.counts["long_presses"] += 1
        self._start("diagnostics", self.diagnostics)

    def _released(self) -> None:
        if self._was_held:  # the end of a long press
            self._was_held = False
            return
        self.counts["short_presses"] += 1
        self._start("checking", self.self_check)

    def press(self, long: bool = False) -> None:
        """What a short (or long) press does, without the button (for a web page or a test)."""
        self._held() if long else self._released()
        self._was_held = False

    def _start(self, overlay: str, job: Optional[Callable[[], Any]]) -> None:
        with self._lock:
            if self._busy or job is None or self._closed:
                self.counts["ignored_presses"] += 1
                return
            self._busy = True
            self._overlay = overlay
            if overlay == "diagnostics":
                self._cues.append("chirp")
        self._timer.interrupt()
        self._pool.submit(self._job, job)

    def _job(self, job: Callable[[], Any]) -> None:
        try:
            verdict = _verdict(job())
        except Exception:
            log.exception("panel self-check failed")
            verdict = "fail"
        with self._lock:
            self.last_result = verdict
            self._overlay = None
            self._busy = False
            self._cues.append(verdict)
        self._timer.interrupt()

    # -- the pattern thread --------------------------------------------------------------------
    def _set(self, led: bool, buzz: bool) -> None:
        if self.led is not None:
            self.led.value = led
        if self.buzzer is not None:
            self.buzzer.value = buzz

    def _play(self) -> None:
        try:
            while not self._closed:
                with self._lock:
                    cue = self._cues.popleft() if self._cues else None
                    steps = CUES[cue] if cue else PATTERNS[self._overlay or self.state]
                for led, buzz, secs in steps:
                    if self._closed:
                        break
                    self._set(led, buzz)
                    if self._timer.wait(secs, interruptible=cue is None) and cue is None:
                        break  # the state changed: start the new pattern now
        except Exception:  # a pin that went away: log it, the gateway goes on without the panel
            log.exception("panel pattern thread stopped")
        finally:
            try:
                self._set(False, False)
            except Exception:
                pass


# -- deriving the state from the running gateway -------------------------------------------------
async def panel_state(gateway, *, backlog_s: float = 600.0) -> str:
    """The panel state for a running :class:`linli.service.Gateway`.

    ``fault``: the local broker is down (nodes cannot report) or the outbox is over its bound;
    ``uplink_down``: upstream is enabled and not connected; ``degraded``: a camera is not ok, a
    serial port is down, or the oldest event waits upstream longer than ``backlog_s``; else ``ok``.
    """
    import time

    if not gateway.started.is_set():
        return "starting"
    nb = gateway.node_broker
    if nb is not None and not nb.connected.is_set():
        return "fault"
    if gateway.outbox is not None:
        st = await gateway.outbox.stats()
        if st.over_bound:
            return "fault"
    up = gateway.uplink
    if up is not None and not up.stats.connected:
        return "uplink_down"
    if any(getattr(p, "state", "open") == "down" for p in gateway.ports):
        return "degraded"
    health = gateway.camera_health() if hasattr(gateway, "camera_health") and gateway.cfg.cameras else {}
    if any(h.get("state") != "ok" for h in health.values()):
        return "degraded"
    if gateway.outbox is not None and st.pending:
        oldest = await gateway.outbox.transaction(lambda conn: conn.execute("SELECT min(stored) FROM outbox_events").fetchone()[0])
        if oldest is not None and time.time() - oldest > backlog_s:
            return "degraded"
    return "ok"


def doctor_jobs(cfg) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(self_check, diagnostics) for a Panel in the running gateway with config ``cfg``.

    The self-check runs every doctor check but GPIO (the panel holds those pins); diagnostics
    runs the same and writes ``data_dir/diagnostics-<ts>.json``.
    """
    from linli import doctor

    only = [c for c in doctor.CHECKS if c != "gpio"]

    def self_check():
        return doctor.run_checks(None, cfg=cfg, only=only)

    def diagnostics():
        results = doctor.run_checks(None, cfg=cfg, only=only)
        path = doctor.write_report(results, cfg.gateway.data_dir)
        log.warning("diagnostics report written to %s (%s)", path, doctor.worst(results))
        return results

    return self_check, diagnostics


async def drive(gateway, *, every_s: float = 2.0, pin_factory=None) -> None:
    """The running gateway's panel task (``[panel] enabled = true``): builds the Panel from the
    configured ``hw/gateways`` profile, keeps its LED in step with :func:`panel_state` every
    ``every_s`` and releases the pins when cancelled. A panel that cannot start (pins busy, no
    GPIO, a bad profile) is logged and counted in ``gateway.panel_error``; the gateway goes on.

    >>> # gateway._tasks.append(asyncio.create_task(drive(gateway)))
    """
    from linli.hw import load_gateway_profile

    loop = asyncio.get_running_loop()
    check, diag = doctor_jobs(gateway.cfg)

    def build():
        profile = load_gateway_profile(gateway.cfg.panel.profile)
        return Panel.from_profile(profile, self_check=check, diagnostics=diag, pin_factory=pin_factory)

    try:
        panel = await loop.run_in_executor(None, build)
    except Exception as exc:  # GPIO is a convenience: never let it stop the gateway
        log.error("panel: cannot start (%s); the gateway runs without its LED and button", exc)
        gateway.panel_error = str(exc)
        return
    gateway.panel = panel
    try:
        while True:
            try:
                panel.set_state(await panel_state(gateway))
            except Exception as exc:  # a state probe failing is itself worth showing
                log.warning("panel: state probe failed: %s", exc)
                panel.set_state("fault")
            await asyncio.sleep(every_s)
    finally:
        panel.close()
