"""Typed errors of the drivers, one hierarchy: catch what you mean.

All are ``OSError`` subclasses, so code that already catches a bus error (an I2C ``OSError``)
keeps working::

    from drivers.errors import NoDevice, SensorError
    try:
        t = probe.read()
    except NoDevice:
        log("probe: %s", "not connected")     # wiring, power, address
    except SensorError as e:
        log("probe: %s", e)                   # answered, but the answer is unusable
"""


class SensorError(OSError):
    """A device answered, but what it said cannot be used (bad frame, overflow, error bit)."""


class NoDevice(SensorError):
    """Nothing answered: check the wiring, the power and the address."""


class ChecksumError(SensorError):
    """A frame, scratchpad or UID failed its checksum/CRC: noise on the line, try again."""


class SensorTimeout(SensorError):
    """The device did not become ready in time."""
