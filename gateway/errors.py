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
