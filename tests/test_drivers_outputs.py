"""PIR input, lamp dimmer, status LED and buzzer on the simulated ESP32 (MicroPython unix port,
drivers as .mpy, 64 KiB heap): pin schedules fire the PIR's IRQ, PWM duty/frequency changes are
recorded by the sim and checked against values worked out here (CIE 1931 lightness curve)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from drivers_run import MP_DRIVERS, run  # noqa: F401
pytestmark = pytest.mark.micropython


# -- PIR -------------------------------------------------------------------------------------

_PIR = 27


def test_pir_irq_sets_flag_and_task_wakes(mpy):
    # Rising edges at 100 and 400 ms (the falling edge at 300 must not count).
    world = {"pins": {_PIR: [(0, 0), (100, 1), (300, 0), (400, 1)]}}
    _, res = run(mpy, """
        import asyncio, time
        import _sim
        from machine import Pin
        from drivers.pir import PIR
        from drvtest import out
        pir = PIR(Pin(%d, Pin.IN))
        out("idle", [pir.pending(), pir.active(), pir.count])
        async def main():
            got = []
            for _ in range(2):
                await pir.wait()
                got.append([_sim.ms(), pir.count, pir.active()])
            return got
        out("edges", asyncio.run(main()))
        out("tick", time.ticks_diff(time.ticks_ms(), pir.last_ms) >= 0)
        time.sleep_ms(50)
        out("after", [pir.pending(), pir.count])
        pir.close()
        """ % _PIR, world=world, timeout=10)
    assert res["idle"] == [False, False, 0]
    (t1, c1, a1), (t2, c2, a2) = res["edges"]
    assert 100 <= t1 < 250 and 400 <= t2 < 550  # woken by each edge, not by polling a timer
    assert (c1, c2) == (1, 2) and a1 and a2
    assert res["after"] == [False, 2]
    assert res["tick"]  # last_ms is a ticks_ms() value from the handler


# -- Dimmer ----------------------------------------------------------------------------------

_LAMP = 25


def cie(level: int) -> int:
    """duty_u16 for a perceived level: CIE 1931 L* = level -> relative luminance Y."""
    if level == 0:
        return 0
    y = level / 903.3 if level <= 8 else ((level + 16) / 116) ** 3
    return int(y * 65535 + 0.5)


def duties(r, pin):
    return [d for _, _, d in r.pwm(pin)][1:]  # the first record is the HAL's PWM() itself


def test_dimmer_levels_follow_the_cie_curve_with_min_max_and_invert(mpy):
    r, res = run(mpy, """
        from machine import Pin, PWM
        from drivers.dimmer import Dimmer
        from drvtest import catch, out
        lamp = Dimmer(PWM(Pin(%d), freq=1000, duty_u16=0))
        for lv in (0, 1, 8, 9, 50, 100):
            lamp.set(lv)
        capped = Dimmer(PWM(Pin(26), duty_u16=0), min_level=5, max_level=90)
        for lv in (0, 1, 50, 100):
            capped.set(lv)
        out("capped", [capped.duty(lv) for lv in (0, 1, 4, 5, 90, 100)])
        out("gamma", Dimmer(PWM(Pin(26)), gamma=2.2).duty(50))
        out("inv", [Dimmer(PWM(Pin(26)), invert=True).duty(lv) for lv in (0, 100)])
        out("bad", [catch(lamp.set, 101), catch(lamp.set, -1), catch(Dimmer, None, 50, 40)])
        out("level", lamp.level)
        """ % _LAMP)
    assert duties(r, _LAMP) == [cie(lv) for lv in (0, 1, 8, 9, 50, 100)]
    assert duties(r, _LAMP)[-2:] == [12071, 65535]  # 50 % perceived is 18.4 % of the light
    assert res["capped"] == [0, cie(5), cie(5), cie(5), cie(90), cie(90)]
    assert duties(r, 26)[:4] == [0, cie(5), cie(50), cie(90)]
    assert res["gamma"] == int(0.5**2.2 * 65535 + 0.5)
    assert res["inv"] == [65535, 0]
    assert all(b.startswith("ValueError") for b in res["bad"])
    assert res["level"] == 100


def test_dimmer_ramp_step_and_async(mpy):
    r, res = run(mpy, """
        import asyncio
        from machine import Pin, PWM
        from drivers.dimmer import Dimmer
        from drvtest import out
        lamp = Dimmer(PWM(Pin(%d), freq=1000, duty_u16=0))
        lamp.start_ramp(100, 1000, 5000)
        out("steps", [[lamp.step(t), lamp.level] for t in (5000, 5250, 5500, 5500, 5999, 6000, 6100)])
        asyncio.run(lamp.ramp(40, 200, step_ms=10))
        out("async_level", lamp.level)
        lamp.start_ramp(0, 1000, 0)
        lamp.set(70)                       # a set() stops a ramp
        out("stopped", [lamp.step(500), lamp.level])
        """ % _LAMP)
    assert res["steps"] == [[True, 0], [True, 25], [True, 50], [True, 50], [True, 99], [False, 100], [False, 100]]
    d = duties(r, _LAMP)
    assert d[:4] == [cie(25), cie(50), cie(99), cie(100)]  # unchanged levels are not rewritten
    fade = d[4:-1]
    assert fade[-1] == cie(40) and fade == sorted(fade, reverse=True) and len(fade) >= 5
    assert res["async_level"] == 40
    assert res["stopped"] == [False, 70]


# -- Status LED ------------------------------------------------------------------------------

_R, _G, _B = 12, 13, 14


def test_status_led_colours_and_blink_pattern(mpy):
    _, res = run(mpy, """
        from machine import Pin
        from drivers import statusled as sl
        from drvtest import catch, out
        pins = [Pin(p, Pin.OUT) for p in (%d, %d, %d)]
        rgb = lambda: [p.value() for p in pins]
        led = sl.StatusLed(*pins)
        got = {}
        for name, c in (("green", sl.GREEN), ("yellow", sl.YELLOW), ("red", sl.RED), ("blue", sl.BLUE), ("off", sl.OFF)):
            led.show(c)
            got[name] = rgb()
        out("colours", got)
        led.show(sl.RED, sl.BLINK, now=1000)
        seq = []
        for t in (1000, 1499, 1500, 1999, 2000, 3700):
            seq.append([led.step(t), rgb()])
        out("blink", seq)
        led.show(sl.GREEN)
        out("steady", [led.step(9999), rgb()])
        anode = sl.StatusLed(*pins, invert=True)
        anode.show(sl.YELLOW)
        out("anode", rgb())
        out("bad", catch(led.show, 8))
        """ % (_R, _G, _B))
    assert res["colours"] == {
        "green": [0, 1, 0], "yellow": [1, 1, 0], "red": [1, 0, 0], "blue": [0, 0, 1], "off": [0, 0, 0],
    }
    # BLINK = 500 ms on / 500 ms off from t=1000; step() returns ms to the next change and
    # catches up after a late call (3700: on 3000-3500, off since 3500, next change at 4000).
    assert res["blink"] == [
        [500, [1, 0, 0]], [1, [1, 0, 0]], [500, [0, 0, 0]], [1, [0, 0, 0]], [500, [1, 0, 0]], [300, [0, 0, 0]],
    ]
    assert res["steady"] == [None, [0, 1, 0]]
    assert res["anode"] == [0, 0, 1]  # common anode: a lit channel is driven low
    assert res["bad"].startswith("ValueError")


def test_status_led_on_pwm_channels_and_async_run(mpy):
    r, res = run(mpy, """
        import asyncio
        from machine import Pin, PWM
        from drivers import statusled as sl
        from drvtest import out
        led = sl.StatusLed(*(PWM(Pin(p), duty_u16=0) for p in (%d, %d, %d)), duty=30000)
        led.show(sl.BLUE, sl.FAST)
        async def main():
            t = asyncio.create_task(led.run())
            await asyncio.sleep_ms(450)
            t.cancel()
        asyncio.run(main())
        """ % (_R, _G, _B))
    assert duties(r, _R) == [0] * len(duties(r, _R)) and duties(r, _G) == [0] * len(duties(r, _G))
    blue = duties(r, _B)
    # FAST = 100 ms on / 100 ms off: lit at 0, 200, 400; dark at 100, 300.
    assert blue[:5] == [30000, 0, 30000, 0, 30000]


# -- Buzzer ----------------------------------------------------------------------------------

_BZ = 23


def test_buzzer_patterns(mpy):
    r, res = run(mpy, """
        import asyncio
        from machine import Pin, PWM
        from drivers import buzzer as bz
        from drvtest import catch, out
        b = bz.Buzzer(PWM(Pin(%d), duty_u16=0))
        b.start(bz.ERROR, 0)
        out("error", [b.step(t) for t in (0, 249, 250, 329, 330, 579, 580, 600)])
        asyncio.run(b.play(bz.OK))
        out("bad", [catch(bz.Buzzer, None, 0), catch(bz.Buzzer, None, 80)])
        """ % _BZ)
    tones = [(f, d) for _, f, d in r.pwm(_BZ)][1:]
    half = 65535 * 50 // 100  # volume 50: 50 % duty, the loudest for a piezo
    assert {d for _, d in tones} == {0, half}
    heard = []
    for f, d in tones:  # what one hears: the tone, or 0 for silence, each change once
        if (f if d else 0) != (heard[-1] if heard else None):
            heard.append(f if d else 0)
    assert res["error"] == [True, True, True, True, True, True, False, False]
    # ERROR: 400 Hz 250 ms, pause 80 ms, 400 Hz 250 ms; then OK: one 2.7 kHz beep.
    assert heard == [0, 400, 0, 400, 0, 2700, 0]
    assert all(b.startswith("ValueError") for b in res["bad"])
