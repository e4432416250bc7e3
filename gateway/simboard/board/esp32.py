# Simulated `esp32` module for the MicroPython unix port (tests only): the deep-sleep wake
# sources. Each call is recorded ("wake" events; the run's record["wake"] holds the last
# setting of each source). EXT0/EXT1 also act: after a deep sleep, a pin the next run's world
# holds at the armed level from its start makes that run's wake reason EXT0/EXT1 (see
# _sim.wake_reason; a world "wake_reason" still overrides it).
import _sim

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True


def _pid(p):
    return getattr(p, "_id", p)


def wake_on_ext0(pin, level):
    """Wake from deep sleep when ``pin`` is at ``level``; ``pin`` None disables EXT0."""
    pins = None if pin is None else [_pid(pin)]
    _sim.arm("ext0", pins, 1 if level else 0)
    _sim.emit("wake", "ext0", pins, 1 if level else 0, _sim.ms())


def wake_on_ext1(pins, level):
    """Wake when all ``pins`` are low (WAKEUP_ALL_LOW) or any is high; None/() disables EXT1."""
    ids = [_pid(p) for p in pins] if pins else None
    _sim.arm("ext1", ids, 1 if level else 0)
    _sim.emit("wake", "ext1", ids, 1 if level else 0, _sim.ms())


def wake_on_touch(wake):
    _sim.emit("wake", "touch", None, 1 if wake else 0, _sim.ms())


def wake_on_ulp(wake):
    _sim.emit("wake", "ulp", None, 1 if wake else 0, _sim.ms())
