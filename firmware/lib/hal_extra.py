"""The board layer's parts that only some nodes use: SPI, a 1-Wire bus, pulse timing (a bin's
card reader, thermometer and HC-SR04 sonar), the chip's unique id.

Not imported by anyone directly: :class:`hal.Board` finds these when a method is not its
own, loads this module and calls them with the board as first argument, so roles write
``hal.onewire(4)`` as for any other part. A node that never uses them never loads them::

    ow = hal.onewire(4)              # hal_extra.onewire(hal, 4)
"""

import machine


def unique_id(board):
    return machine.unique_id()


def spi(board, bus=1, **kw):
    return machine.SPI(bus, **kw)


def onewire(board, pin):
    """A 1-Wire bus on GPIO ``pin`` (``onewire.OneWire``; a 4.7k pull-up to 3V3 on the
    line), for drivers such as ``DS18B20(ow)``."""
    import onewire

    return onewire.OneWire(machine.Pin(pin))


def time_pulse_us(board, pin, level, timeout_us=1000000):
    """``machine.time_pulse_us``: the length of the next pulse at ``level`` on ``pin`` (a
    Pin from :meth:`pin`), or a negative number on timeout. Blocks for up to
    ``timeout_us``: keep it short (an HC-SR04 echo is at most 25 ms)."""
    return machine.time_pulse_us(pin, level, timeout_us)
