# Simulated ESP32 `machine` module for the MicroPython unix port (tests only).
#
# Placed first on MICROPYPATH it shadows the port's built-in `machine`, so firmware imports it
# unchanged. What the firmware does is recorded through _sim; what it reads comes from the
# world the test sets (see tests/harness/micropython.py for the world's layout).
import utime
import _sim
from _simbus import I2C, SPI, UART, SoftI2C, SoftSPI  # noqa: F401
from _simperiph import ADC, PWM, RTC, WDT, Timer  # noqa: F401

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
PIN_WAKE = EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6


def _pid(p):
    return p._id if isinstance(p, Pin) else p


class Pin:
    """A GPIO. Outputs record their changes; inputs read the world's level (or schedule)."""

    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0, DRIVE_1, DRIVE_2, DRIVE_3 = 0, 1, 2, 3
    _out = {}  # pin id -> driven level, shared by every Pin object on the same GPIO

    def __init__(self, id, mode=-1, pull=-1, value=None, drive=None, hold=None):
        self._id = id
        self._mode = None
        self._pull = None
        self._irq = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, drive=None, hold=None):
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self._drive(value)

    def _drive(self, v):
        v = 1 if v else 0
        if Pin._out.get(self._id) != v:
            Pin._out[self._id] = v
            _sim.emit("pin", self._id, _sim.ms(), v)

    def _input(self, t=None):
        default = 1 if self._pull == Pin.PULL_UP else 0
        spec = _sim.get("pins", self._id)
        v = _sim.level_at(spec, _sim.ms() if t is None else t, default)
        return 1 if v else 0

    def value(self, v=None):
        if v is not None:
            self._drive(v)
            return None
        if self._mode in (Pin.OUT, Pin.OPEN_DRAIN) and self._id in Pin._out:
            out = Pin._out[self._id]
            # Open drain: a released line reads what the world pulls it to.
            return out if self._mode == Pin.OUT or out == 0 else self._input()
        return self._input()

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self._drive(1)

    def off(self):
        self._drive(0)

    def irq(self, handler=None, trigger=3, wake=None, hard=False):
        """Register a handler; the world's schedule for this pin fires it as a soft IRQ."""
        if self._irq:
            for t in self._irq:
                _sim.cancel_timer(t)
        self._irq = []
        spec = _sim.get("pins", self._id)
        if handler is None or not isinstance(spec, list):
            return self
        now = _sim.ms()
        prev = self._input(now)
        for at, val in spec:
            val = 1 if val else 0
            if at > now and val != prev:
                if trigger & (Pin.IRQ_RISING if val else Pin.IRQ_FALLING):
                    self._irq.append(_sim.add_timer(at, 0, handler, self))
            if at > now:
                prev = val
        return self

    def __repr__(self):
        return "Pin(%s)" % self._id


class Signal:
    def __init__(self, pin, *args, invert=False, **kw):
        self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kw)
        self._inv = 1 if invert else 0

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ self._inv
        self._pin.value((1 if v else 0) ^ self._inv)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def reset_cause():
    return _sim.cause


def wake_reason():
    return _sim.wake_reason()


def deepsleep(time_ms=0):
    """Ends the run; the next run wakes with DEEPSLEEP_RESET and the RTC moved on by time_ms."""
    _sim.release()
    _sim.emit("deepsleep", _sim.ms(), time_ms)
    _sim.finish("deepsleep", time_ms, time_ms)
    raise _sim.End(0)


def lightsleep(time_ms=0):
    # Returns at once; the RTC (wall time) jumps by time_ms, ticks_ms() does not.
    _sim.emit("lightsleep", _sim.ms(), time_ms)
    _sim.set_now_ms(_sim.now_ms() + time_ms)


sleep = lightsleep


def reset():
    _sim.release()
    _sim.emit("reset", _sim.ms(), "soft")
    _sim.finish("reset", "soft")
    raise _sim.End(0)


def soft_reset():
    _sim.release()
    _sim.emit("reset", _sim.ms(), "soft")
    _sim.finish("reset", "soft")
    raise _sim.End(0)


def unique_id():
    return _sim.data(_sim.world.get("unique_id", {"hex": "240ac4a1b2c3"}))


_freq = [160000000]


def freq(hz=None):
    if hz is None:
        return _freq[0]
    _freq[0] = hz
    _sim.emit("freq", _sim.ms(), hz)


def idle():
    utime.sleep_ms(1)


def disable_irq():
    return 1


def enable_irq(state=1):
    pass


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    """The world's pulse width for this pin (a number, or a list taken a call at a time).

    As on the port: -2 when no pulse starts within the timeout (no world value), -1 when the
    pulse outlasts it. A negative world value is returned as it is.
    """
    pid = _pid(pin)
    spec = _sim.get("pulses", pid)
    us = _sim.next_item("pulse%s" % pid, spec) if isinstance(spec, list) else spec
    if us is None:
        utime.sleep_us(timeout_us)
        return -2
    if us < 0:
        utime.sleep_us(timeout_us)
        return us
    if us > timeout_us:
        utime.sleep_us(timeout_us)
        return -1
    utime.sleep_us(us)
    return us
