# Extends MicroPython's built-in time for the simulated ESP32 (tests only).
#
# Wall time (time(), gmtime(), localtime(), time_ns()) follows the sim RTC, which survives soft
# resets and moves on during deep sleep. ticks_*() and sleep*() are the port's own, real ones,
# so asyncio keeps working. As on an ESP32, time() is an int and localtime() is UTC.
from utime import *  # noqa: F401,F403  (utime is always the built-in module)
import utime as _utime
import _sim


def time():
    return _sim.now_ms() // 1000


def time_ns():
    return _sim.now_ms() * 1000000


def gmtime(secs=None):
    return _utime.gmtime(time() if secs is None else secs)


localtime = gmtime


def mktime(tm):
    return _sim._dt_to_ms((tm[0], tm[1], tm[2], 0, tm[3], tm[4], tm[5])) // 1000
