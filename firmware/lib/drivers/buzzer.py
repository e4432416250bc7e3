"""Buzzer on a PWM output: short tone patterns that say what happened at a pet scanner.

A pattern is a tuple of ``(frequency_hz, ms)`` notes; frequency 0 is a pause. A passive piezo is
loudest at 50 % duty near its resonance (2.7 kHz for the common 12 mm parts)::

    from drivers.buzzer import Buzzer, OK, ERROR, QUEUED
    bz = Buzzer(pwm)                     # pwm = machine.PWM(pin, duty_u16=0) made by the HAL
    await bz.play(OK)                    # one short high beep

    bz.start(ERROR, time.ticks_ms())     # or step it from your own loop
    while bz.step(time.ticks_ms()):
        ...
"""

from time import ticks_add, ticks_diff, ticks_ms

OK = ((2700, 80),)
ERROR = ((400, 250), (0, 80), (400, 250))
QUEUED = ((1800, 60), (0, 60), (1800, 60))  # stored offline, will be sent later


class Buzzer:
    def __init__(self, pwm, volume=50):
        if not 0 < volume <= 50:
            raise ValueError("buzzer volume %r: 1..50 (%% duty)" % (volume,))
        self._pwm = pwm
        self._duty = 65535 * volume // 100
        self._pat = None
        self._i = 0
        self._t0 = 0

    def _tone(self, hz):
        pwm = self._pwm
        if hz:
            pwm.freq(hz)
            pwm.duty_u16(self._duty)
        else:
            pwm.duty_u16(0)

    def start(self, pattern, now):
        """Begin playing ``pattern`` at tick ``now`` (replaces one that is playing)."""
        self._pat = pattern
        self._i = 0
        self._t0 = now
        self._tone(pattern[0][0])

    def step(self, now):
        """Move on to tick ``now``; True while the pattern is still playing."""
        pat = self._pat
        if pat is None:
            return False
        i = self._i
        while ticks_diff(now, self._t0) >= pat[i][1]:
            self._t0 = ticks_add(self._t0, pat[i][1])
            i += 1
            if i == len(pat):
                self.stop()
                return False
            self._i = i
            self._tone(pat[i][0])
        return True

    def stop(self):
        self._pat = None
        self._pwm.duty_u16(0)

    async def play(self, pattern, step_ms=10):
        """Play ``pattern`` to its end."""
        import asyncio

        self.start(pattern, ticks_ms())
        while self.step(ticks_ms()):
            await asyncio.sleep_ms(step_ms)
