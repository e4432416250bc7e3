# ADC, PWM, RTC, WDT and Timer of the simulated ESP32 (re-exported by machine.py).
import utime
import _sim


def _pid(p):
    return getattr(p, "_id", p)


class ADC:
    """Reads the world's "adc" value for its pin: read_u16 scale, constant or schedule."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    # Full scale in microvolts per attenuation (ESP32 datasheet, uncalibrated).
    _FULL_UV = (950000, 1250000, 1750000, 3100000)

    def __init__(self, pin, *, atten=0):
        self._id = _pid(pin)
        self._atten = atten
        self._bits = 12

    def init(self, *, atten=None):
        if atten is not None:
            self._atten = atten

    def atten(self, a):
        self._atten = a

    def width(self, w):
        self._bits = w if w >= 9 else w + 9  # accepts WIDTH_* and the old 0..3 codes

    def read_u16(self):
        v = _sim.level_at(_sim.get("adc", self._id), _sim.ms(), 0)
        return max(0, min(65535, int(v)))

    def read(self):
        return self.read_u16() >> (16 - self._bits)

    def read_uv(self):
        return self.read_u16() * ADC._FULL_UV[self._atten] // 65535


class PWM:
    """Records (ms, freq, duty_u16) each time freq or duty changes; None duty after deinit."""

    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        self._id = _pid(dest)
        self._freq = 5000
        self._u16 = 32768
        self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        if freq is not None:
            self._freq = freq
        if duty is not None:
            self._u16 = duty * 65535 // 1023
        if duty_u16 is not None:
            self._u16 = duty_u16
        if duty_ns is not None:
            self._u16 = min(65535, duty_ns * self._freq * 65535 // 1000000000)
        self._rec()

    def _rec(self):
        _sim.emit("pwm", self._id, _sim.ms(), self._freq, self._u16)

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        self._rec()

    def duty(self, d=None):
        if d is None:
            return self._u16 * 1023 // 65535
        self._u16 = d * 65535 // 1023
        self._rec()

    def duty_u16(self, d=None):
        if d is None:
            return self._u16
        self._u16 = d
        self._rec()

    def duty_ns(self, ns=None):
        if ns is None:
            return self._u16 * 1000000000 // (self._freq * 65535)
        self._u16 = min(65535, ns * self._freq * 65535 // 1000000000)
        self._rec()

    def deinit(self):
        _sim.emit("pwm", self._id, _sim.ms(), self._freq, None)


class RTC:
    """Wall time of the sim (kept across soft resets and deep sleep) and RTC slow memory."""

    def __init__(self, id=0):
        pass

    def init(self, dt):
        self.datetime(dt)

    def datetime(self, dt=None):
        if dt is not None:
            _sim.set_now_ms(_sim._dt_to_ms(dt))
            _sim.emit("rtc", _sim.ms(), _sim.now_ms())
            return None
        t = _sim.now_ms()
        tm = utime.gmtime(t // 1000)
        return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], (t % 1000) * 1000)

    def memory(self, data=None):
        if data is None:
            return _sim.data({"hex": _sim.state.get("rtc_memory", "")})
        if len(data) > 2048:
            raise ValueError("data too large")
        _sim.state["rtc_memory"] = _sim.hx(data)


class WDT:
    """Records its timeout and each feed; when not fed in time the chip resets (ends the run)."""

    def __init__(self, id=0, timeout=5000):
        self._timeout = timeout
        _sim.wdt = [timeout, _sim.ms() + timeout]
        _sim.emit("wdt", _sim.ms(), timeout)
        _sim._start_clock()

    def feed(self):
        _sim.wdt[1] = _sim.ms() + _sim.wdt[0]
        _sim.emit("wdt_feed", _sim.ms())


class Timer:
    """A soft timer: its callback runs on the main thread, as ESP32 timers do by default."""

    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        self._t = None
        if kw:
            self.init(**kw)

    def init(self, *, mode=1, period=-1, freq=-1, callback=None):
        self.deinit()
        if freq > 0:
            period = 1000 // freq
        if period < 0 or callback is None:
            return
        self._t = _sim.add_timer(_sim.ms() + period, period if mode else 0, callback, self)

    def deinit(self):
        if self._t:
            _sim.cancel_timer(self._t)
            self._t = None

    def value(self):
        return max(0, self._t[0] - _sim.ms()) if self._t else 0
