# A 1-Wire bus with DS18B20s on it, with onewire.OneWire's methods (micropython-lib
# micropython/drivers/bus/onewire): reset() -> presence, writebyte(), readbyte(), readinto(),
# write(), select_rom(), scan(). ROM commands SKIP (CC) / MATCH (55 + 8 bytes); function commands
# CONVERT T (44), READ SCRATCHPAD (BE), WRITE SCRATCHPAD (4E + TH, TL, config), after the
# DS18B20 datasheet ("DS18B20 function commands"). Everything the driver does lands in ``log``.


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
            raise OSError(19)
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
