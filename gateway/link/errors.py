"""Reason codes for rejected frames and the one exception the link layer raises."""

from __future__ import annotations

import enum


class Reason(enum.IntEnum):
    """Why a frame was rejected (docs/protocol.md section 5). The values go on the wire in acks."""

    OK = 0
    BAD_VERSION = 1
    BAD_LENGTH = 2
    BAD_CRC = 3
    BAD_TAG = 4
    UNKNOWN_NODE = 5
    REPLAYED = 6
    TOO_LARGE = 7
    MALFORMED = 8

    @property
    def label(self) -> str:
        return self.name.lower()


class LinkError(Exception):
    """A frame was rejected. ``reason`` says why; ``node_id`` is set once the header parsed.

    >>> try:
    ...     raise LinkError(Reason.BAD_TAG, "tag mismatch", node_id="bin-1")
    ... except LinkError as e:
    ...     print(e.reason.label, e.node_id)
    bad_tag bin-1
    """

    def __init__(self, reason: Reason, detail: str, *, node_id: str | None = None, counter: int | None = None):
        super().__init__("%s: %s" % (reason.label, detail))
        self.reason = reason
        self.detail = detail
        self.node_id = node_id
        self.counter = counter
