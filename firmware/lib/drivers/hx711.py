"""HX711 24-bit load-cell ADC, bit-banged on two pins: PD_SCK (clock, output) and DOUT (input).

DOUT goes low when a conversion is ready; 24 clock pulses then shift it out MSB first (two's
complement), and 1-3 more pulses choose the channel and gain of the *next* conversion::

    from drivers.hx711 import HX711
    scale = HX711(sck_pin, dout_pin)     # pins made by the HAL: sck an output, dout an input
    scale.tare()                         # empty bin: remember the zero
    scale.calibrate(5000)                # a 5000 g reference weight on it: counts per gram
    grams = scale.weight()               # median of 5 conversions, in the calibration's unit

    async def task():                    # the same without blocking the loop
        grams = await scale.aweight()

At 10 samples/s a conversion takes 100 ms: ``raw()`` blocks until DOUT is low, ``araw()`` and
``aweight()`` await it instead.
"""

from micropython import const
from time import sleep_ms, sleep_us, ticks_diff, ticks_ms

from .errors import SensorTimeout

_TIMEOUT_MS = const(200)  # 10 SPS: a conversion every 100 ms (datasheet "Output Data Rate")


def _pulses(gain):
    # Datasheet table 3 "Input Channel and Gain Selection": 25 clocks -> A/128,
    # 26 -> B/32, 27 -> A/64; the choice applies to the next conversion.
    if gain == 128:
        return 1
    if gain == 32:
        return 2
    if gain == 64:
        return 3
    raise ValueError("HX711 gain %r: use 128 or 64 (channel A) or 32 (channel B)" % (gain,))


class HX711:
    def __init__(self, sck, dout, gain=128):
        self._sck = sck
        self._dout = dout
        self._extra = _pulses(gain)
        self.gain = gain
        self.offset = 0
        self.scale = 1.0
        # After power-on/reset the chip converts on A/128; the first conversion at another
        # gain is only taken once the extra pulses have been sent (see _stale).
        self._stale = gain != 128
        sck.value(0)

    def ready(self):
        """True when a conversion waits to be read (DOUT low)."""
        return self._dout.value() == 0

    def set_gain(self, gain):
        """Select 128/64 (channel A) or 32 (channel B); the next reading uses it."""
        extra = _pulses(gain)
        if extra != self._extra:
            self._extra = extra
            self.gain = gain
            self._stale = True

    def _shift(self):
        clk = self._sck.value
        dout = self._dout.value
        v = 0
        # Datasheet fig. 2: DOUT changes after PD_SCK's rising edge; PD_SCK high must stay
        # under 50 us (60 us high powers the chip down), so read after the falling edge.
        for _ in range(24):
            clk(1)
            clk(0)
            v = (v << 1) | dout()
        for _ in range(self._extra):
            clk(1)
            clk(0)
        if v & 0x800000:
            v -= 0x1000000
        return v

    def raw(self, timeout_ms=_TIMEOUT_MS):
        """One conversion as a signed 24-bit count; waits (blocking) up to ``timeout_ms``."""
        for _ in range(2 if self._stale else 1):
            t0 = ticks_ms()
            while self._dout.value():
                if ticks_diff(ticks_ms(), t0) > timeout_ms:
                    raise SensorTimeout("HX711 DOUT stayed high %d ms: check wiring and power" % timeout_ms)
                sleep_ms(1)
            v = self._shift()
        self._stale = False
        return v

    async def araw(self, timeout_ms=_TIMEOUT_MS):
        """Like ``raw()``, awaiting the conversion instead of blocking the loop."""
        import asyncio

        for _ in range(2 if self._stale else 1):
            t0 = ticks_ms()
            while self._dout.value():
                if ticks_diff(ticks_ms(), t0) > timeout_ms:
                    raise SensorTimeout("HX711 DOUT stayed high %d ms: check wiring and power" % timeout_ms)
                await asyncio.sleep_ms(5)
            v = self._shift()
        self._stale = False
        return v

    def _median(self, vals):
        from filters import median

        return median(vals)

    def value(self, n=5):
        """Median of ``n`` conversions minus the tare offset, in counts."""
        return self._median([self.raw() for _ in range(n)]) - self.offset

    def tare(self, n=9):
        """Take the current load as zero; returns the offset in counts."""
        self.offset = self._median([self.raw() for _ in range(n)])
        return self.offset

    def calibrate(self, known, n=9):
        """With a ``known`` weight on the cell (after ``tare()``): set and return counts per unit."""
        counts = self.value(n)
        if not counts:
            raise ValueError("HX711 reads the tare value with the weight on: check the load cell")
        self.scale = counts / known
        return self.scale

    def weight(self, n=5):
        """Median of ``n`` conversions in the calibration's unit."""
        return self.value(n) / self.scale

    async def aweight(self, n=5):
        vals = []
        for _ in range(n):
            vals.append(await self.araw())
        return (self._median(vals) - self.offset) / self.scale

    def power_down(self):
        """PD_SCK high for over 60 us powers the chip down (datasheet "Power-down control")."""
        self._sck.value(0)
        self._sck.value(1)
        sleep_us(80)

    def power_up(self):
        """PD_SCK low wakes it; it resets to channel A, gain 128, and settles for ~400 ms."""
        self._sck.value(0)
        self._stale = self._extra != 1
