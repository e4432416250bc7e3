# An HX711 behind two fake pins, after the datasheet (Avia Semiconductor HX711, "Serial
# Interface"): DOUT low = a conversion is ready; each PD_SCK rising edge shifts out the next bit,
# MSB first, 24 bits of two's complement; the 25th pulse pulls DOUT high again; 25/26/27 pulses
# in all choose A/128, B/32, A/64 for the *next* conversion. After a power cycle (power_cycle())
# the chip converts on A/128 again.
#     chip = HX711Chip([0x012345, -1000])      # successive conversions (signed 24-bit)
#     hx = HX711(chip.sck, chip.dout)
_GAIN = {25: 128, 26: 32, 27: 64}


class _Sck:
    def __init__(self, chip):
        self.chip = chip
        self.level = 0
        self.history = []

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v != self.level:
            self.history.append(v)
            if v:
                self.chip._rise()
        self.level = v


class _Dout:
    def __init__(self, chip):
        self.chip = chip

    def value(self, v=None):
        return self.chip._dout()


class HX711Chip:
    def __init__(self, values, busy_polls=0):
        self.values = list(values)
        self.busy_polls = busy_polls  # DOUT reads "not ready" this many times before each conversion
        self._busy = busy_polls
        self.sck = _Sck(self)
        self.dout = _Dout(self)
        self.pulses = 0  # PD_SCK pulses in the conversion being read
        self.gain = 128  # gain of the conversion now in the output register
        self.read_gains = []  # the gain each conversion the driver clocked out was made with
        self.pulse_counts = []  # pulses the driver gave each conversion
        self.word = None
        self._load()

    def _load(self):
        self.word = self.values.pop(0) & 0xFFFFFF if self.values else None
        self.pulses = 0
        self._busy = self.busy_polls

    def power_cycle(self):
        if self.pulses > 24:
            self.pulse_counts.append(self.pulses)
            self.read_gains.append(self.gain)
        self.gain = 128
        self._load()

    def _rise(self):
        self.pulses += 1

    def _dout(self):
        p = self.pulses
        if p == 0:
            if self.word is None:
                return 1
            if self._busy:
                self._busy -= 1
                return 1
            return 0
        if p <= 24:
            return (self.word >> (24 - p)) & 1
        # Past the 24th bit: the conversion is done; the pulses so far set the next gain.
        self.pulse_counts.append(p)
        self.read_gains.append(self.gain)
        self.gain = _GAIN.get(p, 128)
        self._load()
        return self._dout()
