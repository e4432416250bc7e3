"""HC-SR04 ultrasonic range sensor on a trigger pin and an echo pin.

A 10 us pulse on TRIG starts a burst; ECHO then stays high for the round-trip time of the
sound (datasheet "Timing diagram": distance = high time * speed of sound / 2). The speed of
sound follows the air temperature (c = 331.3 + 0.606 * T m/s), which matters outdoors: from
-10 to +40 degC it changes by 9 %::

    import machine
    from drivers.hcsr04 import HCSR04
    sonar = HCSR04(trig_pin, echo_pin, machine.time_pulse_us)   # pins made by the HAL
    mm = sonar.distance_mm(t_c=28)       # None: nothing within range

``time_pulse_us`` is injected (any callable with ``machine.time_pulse_us``'s signature), so a
test can drive the echo; without it the driver imports ``machine.time_pulse_us`` when built.
The echo pin of a 5 V module needs a divider to 3.3 V. Wait 60 ms between measurements
(datasheet: "we suggest to use over 60ms measurement cycle").
"""

from micropython import const
from time import sleep_us

from filters import echo_mm

from .errors import NoDevice, SensorError

# 4.5 m there and back at 40 degC is ~25.5 ms; the datasheet's "no obstacle" echo is 38 ms.
_TIMEOUT_US = const(30000)


class HCSR04:
    def __init__(self, trig, echo, time_pulse_us=None, timeout_us=_TIMEOUT_US):
        if time_pulse_us is None:
            from machine import time_pulse_us  # only when the caller did not inject one
        self._trig = trig
        self._echo = echo
        self._pulse = time_pulse_us
        self._timeout = timeout_us

    def echo_us(self):
        """Trigger once; the echo's high time in us, or -1 when it lasted past the timeout."""
        echo = self._echo
        if echo.value():
            # Some clones hold ECHO high up to 200 ms after an unanswered burst: a pulse
            # timed now would start in the middle of the old one.
            raise SensorError("HC-SR04 echo still high from the last burst: wait 60 ms between reads")
        trig = self._trig
        trig.value(0)
        sleep_us(2)
        trig.value(1)
        sleep_us(10)  # datasheet: "supply a short 10uS pulse to the trigger input"
        trig.value(0)
        t = self._pulse(echo, 1, self._timeout)
        if t == -2:
            # machine.time_pulse_us: -2 = the pulse never started, -1 = it outlasted the timeout.
            raise NoDevice("HC-SR04 echo never went high: check ECHO/TRIG wiring and the 5 V supply")
        return t if t >= 0 else -1

    def distance_mm(self, t_c=20):
        """Distance in mm in air at ``t_c`` degC, or None when no echo came back in time."""
        t = self.echo_us()
        if t < 0:
            return None
        return echo_mm(t, t_c)
