"""BH1750FVI ambient light sensor (I2C at 0x23 with ADDR low, 0x5C with ADDR high).

It has no registers: you write a one-byte opcode, wait, and read two bytes (big-endian);
lux = count / 1.2 at the default sensitivity (datasheet "Measurement sequence example")::

    from drivers.bh1750 import BH1750
    light = BH1750(i2c)                  # i2c = machine.I2C(0, ...) made by the HAL
    lux = light.measure()                # one-time high-res: start, wait 180 ms, read

    async def task():                    # without blocking the loop
        light.start()
        await asyncio.sleep_ms(light.wait_ms)
        lux = light.read()

One-time modes power the chip down after each measurement (~1 uA); continuous modes keep it
measuring, ``read()`` then returns the latest result at any time.
"""

from micropython import const
from time import sleep_ms


# Datasheet "Instruction Set Architecture".
ONCE_H = const(0x20)  # 1 lx resolution, 120 ms (max 180)
ONCE_H2 = const(0x21)  # 0.5 lx resolution, 120 ms
ONCE_L = const(0x23)  # 4 lx resolution, 16 ms (max 24)
CONT_H = const(0x10)
CONT_H2 = const(0x11)
CONT_L = const(0x13)
_POWER_DOWN = const(0x00)
_POWER_ON = const(0x01)
_MT_DEFAULT = const(69)


class BH1750:
    def __init__(self, i2c, addr=0x23, mode=ONCE_H, mtreg=_MT_DEFAULT):
        if mode not in (ONCE_H, ONCE_H2, ONCE_L, CONT_H, CONT_H2, CONT_L):
            raise ValueError("BH1750 mode 0x%02x unknown" % mode)
        self._i2c = i2c
        self.addr = addr
        self.mode = mode
        self._cmd = bytearray(1)
        self._buf = bytearray(2)
        self.mtreg = _MT_DEFAULT
        if mtreg != _MT_DEFAULT:
            self.set_mtreg(mtreg)

    def _send(self, op):
        self._cmd[0] = op
        try:
            self._i2c.writeto(self.addr, self._cmd)
        except OSError as e:
            from drivers.errors import NoDevice  # loaded by the first error only

            raise NoDevice("BH1750 not answering at 0x%02x (%s): check ADDR pin and wiring" % (self.addr, e))

    @property
    def wait_ms(self):
        """Worst-case time of one measurement in the current mode and sensitivity."""
        ms = 24 if self.mode & 0x03 == 0x03 else 180
        return (ms * self.mtreg + _MT_DEFAULT - 1) // _MT_DEFAULT

    def set_mtreg(self, mt):
        """Sensitivity (measurement time register) 31..254, default 69: higher sees darker."""
        if not 31 <= mt <= 254:
            raise ValueError("BH1750 MTreg %r outside 31..254" % (mt,))
        # Datasheet "Adjust measurement result": high bits 01000_MT[7:5], low bits 011_MT[4:0].
        self._send(0x40 | (mt >> 5))
        self._send(0x60 | (mt & 0x1F))
        self.mtreg = mt

    def start(self):
        """Start a measurement in ``mode``; read it ``wait_ms`` later."""
        self._send(self.mode)

    def read(self):
        """The last result in lux (float)."""
        buf = self._buf
        try:
            self._i2c.readfrom_into(self.addr, buf)
        except OSError as e:
            from drivers.errors import NoDevice  # loaded by the first error only

            raise NoDevice("BH1750 not answering at 0x%02x (%s)" % (self.addr, e))
        count = (buf[0] << 8) | buf[1]
        lux = count * _MT_DEFAULT / (1.2 * self.mtreg)
        if self.mode & 0x03 == 0x01:  # H-resolution mode 2 counts half-lux
            lux /= 2
        return lux

    def measure(self):
        """Start, wait (blocking) and read: lux."""
        self.start()
        sleep_ms(self.wait_ms)
        return self.read()

    def power_down(self):
        self._send(_POWER_DOWN)

    def power_on(self):
        self._send(_POWER_ON)
