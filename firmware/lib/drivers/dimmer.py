"""Lamp dimming on a PWM output (an LED driver's DIM input or a MOSFET gate).

Levels are percent of *perceived* brightness: 0 is off, 1..100 follow the CIE 1931 lightness
curve (or a gamma you give), so 50 % looks half as bright, not 50 % duty. ``min_level`` lifts
the lowest levels above where the driver flickers, ``max_level`` caps the lamp (battery, heat)::

    from drivers.dimmer import Dimmer
    lamp = Dimmer(pwm, min_level=5, max_level=90)   # pwm = machine.PWM(pin, freq=1000) (HAL)
    lamp.set(40)
    await lamp.ramp(100, 2000)            # fade to 100 % (capped at 90) over 2 s

    lamp.start_ramp(0, 1000, time.ticks_ms())         # or step it from your own loop
    while lamp.step(time.ticks_ms()):
        ...
"""

from array import array
from time import ticks_diff, ticks_ms


def _curve(gamma):
    t = array("H", bytes(202))
    for lv in range(1, 101):
        if gamma:
            y = (lv / 100) ** gamma
        elif lv <= 8:
            y = lv / 903.3  # CIE 1931 L* below the knee: Y = L* / 903.3
        else:
            y = ((lv + 16) / 116) ** 3
        t[lv] = int(y * 65535 + 0.5)
    return t


class Dimmer:
    def __init__(self, pwm, min_level=1, max_level=100, gamma=None, invert=False):
        if not 0 <= min_level <= max_level <= 100:
            raise ValueError("dimmer levels need 0 <= min_level <= max_level <= 100")
        self._pwm = pwm
        self._duty = _curve(gamma)  # 101 x uint16, 202 bytes
        self.min_level = min_level
        self.max_level = max_level
        self._invert = invert
        self.level = 0  # what was last written (the PWM is left as the HAL made it until then)
        self._from = 0
        self._to = 0
        self._t0 = 0
        self._ms = 0

    def duty(self, level):
        """The duty_u16 for a level, after the min/max clamp."""
        if not 0 <= level <= 100:
            raise ValueError("lamp level %r outside 0..100" % (level,))
        if level:
            if level < self.min_level:
                level = self.min_level
            if level > self.max_level:
                level = self.max_level
        d = self._duty[level]
        return 65535 - d if self._invert else d

    def set(self, level):
        """Set the level (0..100 %) now; stops a ramp."""
        self._ms = 0
        self._write(level)

    def _write(self, level):
        self._pwm.duty_u16(self.duty(level))
        self.level = level

    def start_ramp(self, level, ms, now):
        """Begin a ramp from the current level to ``level`` over ``ms`` from tick ``now``."""
        self.duty(level)  # validates
        self._from = self.level
        self._to = level
        self._t0 = now
        self._ms = ms if ms > 0 else 1

    def step(self, now):
        """Move the ramp on to tick ``now``; True while it is still running."""
        ms = self._ms
        if not ms:
            return False
        dt = ticks_diff(now, self._t0)
        if dt >= ms:
            self._ms = 0
            self._write(self._to)
            return False
        a = self._from
        lv = a + (self._to - a) * dt // ms
        if lv != self.level:
            self._write(lv)
        return True

    async def ramp(self, level, ms=1000, step_ms=20):
        """Fade to ``level`` over ``ms``, one step per ``step_ms``."""
        import asyncio

        self.start_ramp(level, ms, ticks_ms())
        while self.step(ticks_ms()):
            await asyncio.sleep_ms(step_ms)
