"""What can go wrong in ``linli flash``: one class per cause, each message ends with what to do.

Every error leaves the board in a state a re-run repairs (files are written under a temporary
name and renamed; the manifest goes last), so "run it again" is always a valid next step.

>>> str(NoAnswer("/dev/ttyUSB0", "check the cable"))
'/dev/ttyUSB0: nothing answers: check the cable'
"""

from __future__ import annotations

from linli.errors import LinliError


class FlashError(LinliError):
    """Base of every ``linli flash`` error. ``port`` names the board's port (or the plan file)."""

    exit_code = 1

    def __init__(self, port: str | None, message: str):
        super().__init__("%s: %s" % (port, message) if port else message)
        self.port = port
        self.message = message


class PlanError(FlashError, ValueError):
    """The command line, a batch row or the generated config is invalid; nothing was touched."""

    exit_code = 2


class PortNotFound(FlashError):
    """No USB-serial board is plugged in, or the named port does not exist."""


class PortAmbiguous(FlashError):
    """Several boards are plugged in and none was chosen with ``--port``."""


class PortDenied(FlashError):
    """The port exists but this user may not open it (not in the ``dialout`` group)."""


class PortBusy(FlashError):
    """Another program (a serial monitor, mpremote, a second ``linli flash``) holds the port."""


class NoAnswer(FlashError):
    """The port opens but nothing answers: cable, power, boot mode or baud rate."""

    def __init__(self, port: str | None, hint: str):
        super().__init__(port, "nothing answers: " + hint)


class NoMicroPython(FlashError):
    """Something answers, but it is not MicroPython's REPL (no firmware yet, or another one)."""


class WrongBoard(FlashError):
    """The image, the connected chip and the board profile do not agree."""


class FlashFull(FlashError):
    """The board's filesystem has not enough free space for the bundle."""


class NoRomfs(FlashError):
    """``--deploy romfs``, but the board has no ROMFS partition big enough (or the bundle no image)."""


class WriteFailed(FlashError):
    """A write, a rename or a hash check on the board failed, or the board went away mid-way."""


class RegisterError(FlashError):
    """The node's key could not be registered with the gateway (conflict, unreadable store)."""
