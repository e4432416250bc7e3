"""The board layer: the only module that imports ``machine`` and ``network``.

Everything above it (the node runtime, roles, drivers) gets objects from a :class:`Board` and
never builds hardware itself, so the same code runs on an ESP32 and on the simulated board of
the tests (``gateway/simboard/board/``)::

    from hal import Board
    hal = Board()                    # no I/O until a method is called
    i2c = hal.i2c(0, scl=22, sda=21) # give this to a driver: HTS221(i2c)
    hal.time()                       # Unix seconds from the RTC (see synced())
    hal.deepsleep(60000)             # does not return

Time is Unix seconds whatever the port's epoch (an ESP32 build may count from 2000). What only
some nodes use (SPI, 1-Wire, pulse timing, the unique id) is in ``hal_extra``, loaded when first
called through the board (``hal.onewire(4)``), so the others never hold its code.
"""

import time

import machine
from micropython import const

# Unix time of 2024-01-01: an RTC showing less has never been set (it starts at 2000 on power-on).
_SYNC_MIN = const(1704067200)
_EPOCH_2000 = const(946684800)
_NVRAM_FILE = "nvram.bin"

_CAUSES = {
    machine.PWRON_RESET: "pwron",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "wdt",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}
_WAKES = {2: "pin", 3: "pins", 4: "timer", 5: "touch", 6: "ulp"}  # machine.*_WAKE on an ESP32


class _NoWatchdog:
    def feed(self):
        pass


class Board:
    """One ESP32 board. Methods build (and cache where a second one would clash) the
    peripherals; ``pins`` names board pins for roles (``{"lamp": 25, "bat": 35}``)."""

    def __init__(self, pins=None):
        self.pins = pins or {}
        self._rtc = None
        self._wlan = None
        self._epoch = None
        self._ext0 = None  # the pin wake_on_pin() gave EXT0
        self._ext1 = []  # the pins it gave EXT1, and their common level
        self._ext1_level = None

    # -- time ----------------------------------------------------------------------------

    def _off(self):
        if self._epoch is None:
            self._epoch = 0 if time.gmtime(0)[0] == 1970 else _EPOCH_2000
        return self._epoch

    def rtc(self):
        if self._rtc is None:
            self._rtc = machine.RTC()
        return self._rtc

    def time(self):
        """Unix seconds from the RTC (kept across deep sleep; 2000-01-01 after power-on)."""
        return time.time() + self._off()

    def synced(self):
        """True once the RTC has been set (it shows 2024 or later)."""
        return self.time() >= _SYNC_MIN

    def set_time(self, t):
        """Set the RTC to Unix seconds ``t``."""
        tm = time.gmtime(t - self._off())
        self.rtc().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))

    # -- resets, sleep, watchdog ---------------------------------------------------------

    def reset_cause(self):
        """``pwron``, ``hard``, ``wdt``, ``deepsleep`` or ``soft`` (docs/protocol.md section 8;
        an ESP32 build reports a brownout or a panic as ``hard``), ``unknown`` otherwise."""
        return _CAUSES.get(machine.reset_cause(), "unknown")

    def wake_reason(self):
        """Why a deep sleep ended: ``timer``, ``pin`` (EXT0), ``pins`` (EXT1), ``touch``,
        ``ulp``, or None (not a wake from deep sleep)."""
        return _WAKES.get(machine.wake_reason())

    def reset(self):
        machine.reset()

    def deepsleep(self, ms):
        """Sleep ``ms`` milliseconds with everything off but the RTC; wakes as a reboot."""
        machine.deepsleep(ms)

    def wake_on_pin(self, pin, level):
        """Also wake from deep sleep when GPIO ``pin`` (an RTC GPIO: 0, 2, 4, 12-15, 25-27,
        32-39) is at ``level`` (0 or 1). The first pin gets EXT0 (``wake_reason()`` "pin"),
        the others EXT1 ("pins"), which wakes on *all* its pins low or *any* high: they must
        share one level (ValueError otherwise). Set it again before every deep sleep."""
        import esp32

        lvl = esp32.WAKEUP_ANY_HIGH if level else esp32.WAKEUP_ALL_LOW
        if self._ext0 is None or self._ext0 == pin:
            self._ext0 = pin
            esp32.wake_on_ext0(machine.Pin(pin, machine.Pin.IN), lvl)
            return
        if self._ext1 and self._ext1_level != lvl:
            raise ValueError("wake pin %d: EXT1 pins share one level (%d has the other)" % (pin, self._ext1[0]))
        if pin not in self._ext1:
            self._ext1.append(pin)
        self._ext1_level = lvl
        esp32.wake_on_ext1(tuple(machine.Pin(p, machine.Pin.IN) for p in self._ext1), lvl)

    def watchdog(self, timeout_ms):
        """The hardware watchdog (it cannot be stopped once started); ``timeout_ms`` 0 gives a
        stand-in whose ``feed()`` does nothing (bench use)."""
        if not timeout_ms:
            return _NoWatchdog()
        return machine.WDT(timeout=timeout_ms)

    # -- memory that survives deep sleep and resets (not power loss) ----------------------

    def nvram(self):
        """The bytes last stored with :meth:`set_nvram` (RTC slow memory; b"" after power-on)."""
        try:
            return bytes(self.rtc().memory())
        except AttributeError:  # a port without RTC memory: a flash file
            try:
                with open(_NVRAM_FILE, "rb") as f:
                    return f.read()
            except OSError:
                return b""

    def set_nvram(self, data):
        try:
            self.rtc().memory(data)
        except AttributeError:
            with open(_NVRAM_FILE, "wb") as f:
                f.write(data)

    # -- radio ---------------------------------------------------------------------------

    def wlan(self):
        """The station interface (``network.WLAN(STA_IF)``), made once."""
        if self._wlan is None:
            import network

            self._wlan = network.WLAN(network.STA_IF)
        return self._wlan

    def rssi(self):
        """Wi-Fi signal in dBm, or None when not connected (or no Wi-Fi in use)."""
        w = self._wlan
        if w is None or not w.isconnected():
            return None
        try:
            return w.status("rssi")
        except (OSError, ValueError):
            return None

    # -- buses and pins, for roles and drivers -------------------------------------------

    def uart(self, uart_id, baud, tx=None, rx=None):
        """A UART in 8N1 with a receive buffer for whole wire frames; ``tx``/``rx`` None keep
        the port's default pins."""
        kw = {"baudrate": baud, "rxbuf": 1024, "timeout": 0}
        if tx is not None:
            kw["tx"] = tx
        if rx is not None:
            kw["rx"] = rx
        return machine.UART(uart_id, **kw)

    def pin(self, n, mode="in", pull=None, value=None):
        """A GPIO: ``mode`` "in", "out" or "od" (open drain); ``pull`` None, "up" or "down"."""
        P = machine.Pin
        m = P.OUT if mode == "out" else P.OPEN_DRAIN if mode == "od" else P.IN
        p = P.PULL_UP if pull == "up" else P.PULL_DOWN if pull == "down" else None
        if value is None:
            return P(n, m, p)
        return P(n, m, p, value=value)

    def adc(self, n, atten=3):
        """An ADC on pin ``n``; ``atten`` 3 = 11 dB, about 0..3.1 V (``read_uv()``)."""
        return machine.ADC(machine.Pin(n), atten=atten)

    def pwm(self, n, freq=1000, duty_u16=0):
        return machine.PWM(machine.Pin(n), freq=freq, duty_u16=duty_u16)

    def i2c(self, bus=0, scl=None, sda=None, freq=400000):
        if scl is None:
            return machine.I2C(bus, freq=freq)
        return machine.I2C(bus, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)

    def battery(self, pin, div_pct=200):
        """Battery volts through a divider on ADC ``pin`` (``div_pct`` 200: halved), or None."""
        if pin is None:
            return None
        uv = self.adc(pin).read_uv()
        return round(uv * div_pct / 100 / 1000000, 2)

    # -- the rest ------------------------------------------------------------------------

    def __getattr__(self, name):
        # What only a bin uses (SPI, 1-Wire, pulse timing) is in hal_extra, loaded at its
        # first use (a bin unloads it again before its link comes up): a streetlight or a pet
        # scanner never holds that code. The call is the same, ``hal.onewire(4)``.
        import hal_extra

        f = getattr(hal_extra, name)  # AttributeError: the board has no such thing
        return lambda *a, **kw: f(self, *a, **kw)
