"""The gateway's exception hierarchy: callers catch what they mean, messages say what to do."""

from __future__ import annotations


class LinliError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(LinliError, ValueError):
    """A configuration file is invalid. ``key`` is the dotted path of the offending key.

    >>> print(ConfigError("gateway.toml", "outbox.max_events", "must be an integer >= 100, got 'x'"))
    gateway.toml: outbox.max_events: must be an integer >= 100, got 'x'
    """

    def __init__(self, file: str, key: str, message: str):
        super().__init__("%s: %s: %s" % (file, key, message) if key else "%s: %s" % (file, message))
        self.file = file
        self.key = key
        self.message = message


class KeyStoreError(LinliError):
    """The node key store could not be read or written."""


class CommandError(LinliError, ValueError):
    """A backend command is invalid (unknown node, op or argument)."""


class HwError(ConfigError):
    """A ``hw/`` profile (board, wiring, bill of materials, gateway pins) is missing or invalid.

    ``file`` and ``key`` name the first problem; ``problems`` holds every one found (each
    printable as ``FILE: KEY: why. fix``), ``warnings`` the same file's warnings.

    >>> print(HwError("hw/boards/x.toml", "roles.bin.pins.lid", "GPIO 6 is a flash pin"))
    hw/boards/x.toml: roles.bin.pins.lid: GPIO 6 is a flash pin
    """

    def __init__(self, file: str, key: str, message: str, problems=()):
        super().__init__(file, key, message)
        self.problems = list(problems)
        self.warnings: list = []

    def __str__(self) -> str:
        if len(self.problems) > 1:
            return "\n".join(str(p) for p in self.problems)
        return super().__str__()
