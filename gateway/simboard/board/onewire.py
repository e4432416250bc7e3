# Simulated `onewire` module (micropython-lib micropython/drivers/bus/onewire, frozen into the
# ESP32 build) for the MicroPython unix port (tests only).
#
# OneWire(pin) is a bus over the world's devices on that pin:
#   "onewire": {"4": {"ds18b20": [{"rom": "28ff4c5c62160345", "temp": 21.5}]}}
# ("rom": 8 bytes as hex, or 7 and the CRC is added; "temp": degC, or a list taken one per CONVERT T,
# the last repeating; "pad": 9 scratchpad bytes instead, the CRC as given).
# A DS18B20 shows its power-on scratchpad (85 degC) until its first CONVERT T.
#
# The bus engine (OneWireBus, DS18B20Dev) also serves the driver tests directly
# (tests/mp/drivers/fake_onewire.py): reset() -> presence, writebyte(), readbyte(), readinto(),
# write(), select_rom(), scan(). ROM commands SKIP (CC) / MATCH (55 + 8 bytes); function commands
# CONVERT T (44), READ SCRATCHPAD (BE), WRITE SCRATCHPAD (4E + TH, TL, config), after the
# DS18B20 datasheet ("DS18B20 function commands"). Everything the driver does lands in ``log``.
import _sim


class OneWireError(Exception):
    pass


def crc8(data):
    """Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, LSB first)."""
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


def pad_for(t_c):
    """The scratchpad of a DS18B20 at 12 bit showing ``t_c`` degC, CRC included."""
    raw = int(round(t_c * 16)) & 0xFFFF
    p = bytearray([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10, 0])
    p[8] = crc8(p[0:8])
    return p


class DS18B20Dev:
    def __init__(self, rom, pads):
        self.rom = bytes(rom)
        self.pads = [bytearray(p) for p in pads]  # pads[0] now; each CONVERT T moves to the next
        self.pad = self.pads.pop(0)
        self.written = []

    def convert(self):
        if self.pads:
            self.pad = self.pads.pop(0)


class OneWireBus:
    def __init__(self, devices=()):
        self.devices = list(devices)
        self.log = []
        self._state = None
        self._sel = []
        self._rom = bytearray()
        self._out = bytearray()

    def reset(self, required=False):
        self.log.append("reset")
        self._state = "rom"
        self._sel = []
        self._out = bytearray()
        present = bool(self.devices)
        if required and not present:
            raise OneWireError(19)
        return present

    def writebyte(self, b):
        self.log.append(b)
        st = self._state
        if st == "rom":
            if b == 0xCC:
                self._sel = list(self.devices)
                self._state = "func"
            elif b == 0x55:
                self._rom = bytearray()
                self._state = "match"
            else:
                self._state = None
        elif st == "match":
            self._rom.append(b)
            if len(self._rom) == 8:
                self._sel = [d for d in self.devices if d.rom == bytes(self._rom)]
                self._state = "func"
        elif st == "func":
            if b == 0x44:
                for d in self._sel:
                    d.convert()
                self._state = None
            elif b == 0xBE:
                # Several devices answering at once: wired-AND of their bits.
                out = bytearray(b"\xff" * 9)
                for d in self._sel:
                    for i in range(9):
                        out[i] &= d.pad[i]
                self._out = out
                self._state = None
            elif b == 0x4E:
                self._state = ("ws", 0)
        elif isinstance(st, tuple):
            i = st[1]
            for d in self._sel:
                d.pad[2 + i] = b
                d.written.append(b)
            self._state = ("ws", i + 1) if i < 2 else None

    def write(self, buf):
        for b in buf:
            self.writebyte(b)

    def readbyte(self):
        if not self._out:
            return 0xFF  # nobody pulls the line low: all ones
        v = self._out[0]
        self._out = self._out[1:]
        return v

    def readinto(self, buf):
        self.log.append("read%d" % len(buf))
        for i in range(len(buf)):
            buf[i] = self.readbyte()

    def select_rom(self, rom):
        self.reset()
        self.writebyte(0x55)
        self.write(rom)

    def scan(self):
        return [bytearray(d.rom) for d in self.devices]


def _hex(v):
    return _sim.data({"hex": v} if isinstance(v, str) else v)  # a str here is hex, not text


def _world_devices(pin_id):
    devs = []
    for spec in (_sim.get("onewire", pin_id) or {}).get("ds18b20") or ():
        rom = _hex(spec["rom"])
        if len(rom) == 7:
            rom = rom + bytes((crc8(rom),))
        if "pad" in spec:
            pads = [_hex(spec["pad"])]
        else:
            t = spec.get("temp", 85.0)
            pads = [pad_for(85.0)] + [pad_for(x) for x in (t if isinstance(t, list) else [t])]
        devs.append(DS18B20Dev(rom, pads))
    return devs


class OneWire(OneWireBus):
    """onewire.OneWire(pin): the world's devices on that pin (none: no presence pulse)."""

    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        self.pin = pin
        OneWireBus.__init__(self, _world_devices(getattr(pin, "_id", pin)))

    def reset(self, required=False):
        self.log.clear()  # the driver tests read the log; here it would only grow
        return OneWireBus.reset(self, required)

    def crc8(self, data):
        return crc8(data)
