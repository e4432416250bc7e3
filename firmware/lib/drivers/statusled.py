"""RGB status LED on three pins (``.value()``) or three PWM channels (``.duty_u16()``).

A colour is a bit mask of the channels (red 1, green 2, blue 4: yellow = red + green), a
pattern a tuple of on/off times in ms, starting with "on" (None: steady)::

    from drivers.statusled import StatusLed, GREEN, RED, YELLOW, BLINK, DOUBLE
    led = StatusLed(r_pin, g_pin, b_pin)         # or three machine.PWM objects (HAL)
    led.show(GREEN)                              # steady green
    led.show(RED, BLINK)                         # red, 500 ms on / 500 ms off
    asyncio.create_task(led.run())               # the task that blinks it

    led.step(time.ticks_ms())                    # or step it from your own loop

Use ``invert=True`` for a common-anode LED (a channel lights when its pin is low).
"""

from micropython import const
from time import ticks_add, ticks_diff, ticks_ms

OFF = const(0)
RED = const(1)
GREEN = const(2)
YELLOW = const(3)
BLUE = const(4)
WHITE = const(7)

BLINK = (500, 500)
FAST = (100, 100)
DOUBLE = (100, 150, 100, 650)
WINK = (50, 1950)  # a short flash every 2 s: alive, nothing to report


class StatusLed:
    def __init__(self, red, green, blue, invert=False, duty=65535):
        self._ch = (red, green, blue)
        self._pwm = hasattr(red, "duty_u16")
        self._inv = invert
        self._duty = duty
        self.colour = OFF
        self.pattern = None
        self._i = 0
        self._t0 = 0

    def _write(self, colour):
        inv = self._inv
        pwm = self._pwm
        for i in range(3):
            on = (colour >> i) & 1
            ch = self._ch[i]
            if pwm:
                d = self._duty if on else 0
                ch.duty_u16(65535 - d if inv else d)
            else:
                ch.value(on ^ 1 if inv else on)

    def show(self, colour, pattern=None, now=None):
        """Show ``colour`` (OFF, RED, GREEN, YELLOW, BLUE, WHITE) steady or with ``pattern``."""
        if not 0 <= colour <= 7:
            raise ValueError("LED colour %r is not a mask of RED|GREEN|BLUE" % (colour,))
        self.colour = colour
        self.pattern = pattern
        self._i = 0
        self._t0 = ticks_ms() if now is None else now
        self._write(colour)

    def step(self, now):
        """Advance the pattern to tick ``now``; ms until the next change (None: steady)."""
        pat = self.pattern
        if not pat:
            return None
        i = self._i
        t0 = self._t0
        left = pat[i] - ticks_diff(now, t0)
        if left > 0:
            return left
        while left <= 0:  # catch up if the caller was late
            t0 = ticks_add(t0, pat[i])
            i = (i + 1) % len(pat)
            left += pat[i]
        self._i = i
        self._t0 = t0
        self._write(0 if i & 1 else self.colour)
        return left

    async def run(self, max_ms=100):
        """Blink forever; picks up ``show()`` changes within ``max_ms``."""
        import asyncio

        while True:
            left = self.step(ticks_ms())
            await asyncio.sleep_ms(max_ms if left is None or left > max_ms else left)
