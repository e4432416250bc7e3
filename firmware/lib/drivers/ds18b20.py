"""DS18B20 digital thermometer on a 1-Wire bus.

The driver takes a ready bus with ``onewire.OneWire``'s methods (``reset()``, ``writebyte()``,
``readinto()``, ``scan()``); it never builds one::

    from drivers.ds18b20 import DS18B20, scan
    probe = DS18B20(ow)                  # ow = onewire.OneWire(pin) made by the HAL; one sensor
    t = await probe.measure()            # convert, wait 750 ms (12 bit), read: degC (float)

    for rom in scan(ow):                 # several sensors on one bus
        probes.append(DS18B20(ow, rom))

A scratchpad with a bad CRC raises ``ChecksumError``; no presence pulse raises ``NoDevice``.
Note 85.0 degC is the power-on value of the temperature register (datasheet "Operation -
measuring temperature"): read before any conversion, or after a brown-out, it means "no
conversion yet", not heat.
"""

from micropython import const

from .errors import ChecksumError, NoDevice, SensorError

_FAMILY = const(0x28)
_MATCH_ROM = const(0x55)
_SKIP_ROM = const(0xCC)
_CONVERT_T = const(0x44)
_READ_SCRATCH = const(0xBE)
_WRITE_SCRATCH = const(0x4E)


def crc8(data, n=None):
    """Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, LSB first) of ``data[0:n]``; 0 over data+CRC."""
    crc = 0
    for i in range(len(data) if n is None else n):
        b = data[i]
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


def scan(ow):
    """ROM codes (bytes) of the DS18B20s on the bus whose ROM CRC holds."""
    return [rom for rom in ow.scan() if rom[0] == _FAMILY and crc8(rom) == 0]


class DS18B20:
    def __init__(self, ow, rom=None):
        self._ow = ow
        self._rom = rom  # None: the only device on the bus (SKIP ROM)
        self._buf = bytearray(9)
        self.bits = 12

    def _select(self):
        ow = self._ow
        if not ow.reset():
            raise NoDevice("no DS18B20 answered the reset pulse: check the data line and its 4.7k pull-up")
        rom = self._rom
        if rom is None:
            ow.writebyte(_SKIP_ROM)
        else:
            # MATCH ROM by hand: onewire's select_rom() would send a second reset pulse.
            ow.writebyte(_MATCH_ROM)
            for b in rom:
                ow.writebyte(b)

    def convert(self):
        """Start a conversion; returns how long it takes in ms at the current resolution."""
        self._select()
        self._ow.writebyte(_CONVERT_T)
        # Datasheet table "Thermometer resolution configuration": 93.75 ms at 9 bit ... 750 at 12.
        return (750 >> (12 - self.bits)) + 1

    def read_scratchpad(self):
        """The 9 scratchpad bytes (a bytearray reused by the next call), CRC checked."""
        buf = self._buf
        self._select()
        self._ow.writebyte(_READ_SCRATCH)
        self._ow.readinto(buf)
        if crc8(buf, 8) != buf[8]:
            raise ChecksumError(
                "DS18B20 scratchpad CRC 0x%02x, computed 0x%02x: noise on the 1-Wire line"
                % (buf[8], crc8(buf, 8))
            )
        for b in buf:
            if b:
                break
        else:
            # All zeros has a valid CRC (0): a data line shorted to ground reads like this.
            raise SensorError("DS18B20 scratchpad all zeros: data line shorted to ground?")
        return buf

    def read_raw(self):
        """Temperature in 1/16 degC (int) from the scratchpad of the last conversion."""
        buf = self.read_scratchpad()
        # Config byte 4, bits 6-5: resolution 9..12 bit; the unused low bits are undefined.
        self.bits = 9 + ((buf[4] >> 5) & 3)
        v = buf[0] | (buf[1] << 8)
        if v & 0x8000:
            v -= 0x10000
        return v & ~((1 << (12 - self.bits)) - 1)

    def read(self):
        """Temperature in degC (float) from the last conversion."""
        return self.read_raw() / 16

    async def measure(self):
        """Convert, await the conversion time, read: degC."""
        import asyncio

        await asyncio.sleep_ms(self.convert())
        return self.read()

    def set_resolution(self, bits, th=0x4B, tl=0x46):
        """Set 9..12 bit resolution (RAM only, lost on power-off; TH/TL alarm bytes as given)."""
        if not 9 <= bits <= 12:
            raise ValueError("DS18B20 resolution %r: use 9..12 bits" % (bits,))
        self._select()
        ow = self._ow
        ow.writebyte(_WRITE_SCRATCH)
        ow.writebyte(th)
        ow.writebyte(tl)
        ow.writebyte(((bits - 9) << 5) | 0x1F)
        self.bits = bits
