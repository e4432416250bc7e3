"""Which serial port the board is on, when ``--port`` is not given.

Candidates are the USB-serial bridges ESP32 boards carry (by USB vendor id), as pyserial's
``list_ports`` sees them. One candidate: that one. None: a message that says what to check.
Several: ask (on a terminal) or name them all.

>>> from types import SimpleNamespace as P
>>> find_port(lambda: [P(device="/dev/ttyUSB0", vid=0x10C4, pid=0xEA60, description="CP2102")])
'/dev/ttyUSB0'
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from linli.flash.errors import PortAmbiguous, PortNotFound

# USB vendor ids of the bridges on ESP32 boards (and the S3's own USB); the name is for messages.
BRIDGES = {
    0x10C4: "Silicon Labs CP210x",
    0x1A86: "WCH CH340/CH9102",
    0x0403: "FTDI",
    0x303A: "Espressif native USB",
}

NONE_FOUND = (
    "no USB-serial board found: check the cable carries data (not a charge-only one), the board "
    "is powered, and you may open serial ports (group dialout: `sudo usermod -aG dialout $USER`, "
    "then log in again); or name the port with --port"
)


def _comports():
    from serial.tools import list_ports

    return list_ports.comports()


def candidates(comports: Callable[[], Iterable] = _comports) -> list:
    """The ports whose USB vendor id is a known ESP32 board bridge, sorted by device name."""
    return sorted((p for p in comports() if getattr(p, "vid", None) in BRIDGES), key=lambda p: p.device)


def describe(port) -> str:
    """One line for a person: device, bridge and what the port says about itself."""
    return "%s  (%s%s)" % (port.device, BRIDGES.get(port.vid, "?"), ", " + port.description if getattr(port, "description", None) else "")


def find_port(comports: Callable[[], Iterable] = _comports, ask: Optional[Callable[[list[str]], int]] = None) -> str:
    """The one board's port. ``ask(lines) -> index`` chooses among several (None: refuse)."""
    found = candidates(comports)
    if not found:
        raise PortNotFound(None, NONE_FOUND)
    if len(found) == 1:
        return found[0].device
    lines = [describe(p) for p in found]
    if ask is not None:
        return found[ask(lines)].device
    raise PortAmbiguous(None, "%d boards are plugged in, pass --port with one of: %s"
                        % (len(found), ", ".join(p.device for p in found)))


def ask_on_terminal(lines: list[str], *, read=input, write=print) -> int:
    """Number the choices and read one (an empty or bad answer asks again, EOF refuses)."""
    for i, line in enumerate(lines, 1):
        write("  %d) %s" % (i, line))
    while True:
        try:
            answer = read("which board? [1-%d] " % len(lines)).strip()
        except EOFError:
            raise PortAmbiguous(None, "no board chosen: pass --port") from None
        if answer.isdigit() and 1 <= int(answer) <= len(lines):
            return int(answer) - 1
