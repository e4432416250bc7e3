"""The link protocol v1 between nodes and the gateway (see docs/protocol.md).

>>> from linli.link import LinkKeys, Kind, Role, seal, open_frame
>>> keys = LinkKeys(bytes(32))
>>> raw = seal(keys, Kind.TELEMETRY, Role.BIN, "bin-1", counter=1, ts=0, payload=b'{"fill":3}')
>>> open_frame(raw, lambda node: (keys, Role.BIN)).payload
b'{"fill":3}'
"""

from linli.link.errors import LinkError, Reason
from linli.link.crypto import LinkKeys
from linli.link.frame import (
    MAX_FRAME,
    Flag,
    Frame,
    Kind,
    Role,
    open_frame,
    parse_header,
    seal,
)
from linli.link.replay import Reservation, Verdict, Window

__all__ = [
    "MAX_FRAME",
    "Flag",
    "Frame",
    "Kind",
    "LinkError",
    "LinkKeys",
    "Reason",
    "Reservation",
    "Role",
    "Verdict",
    "Window",
    "open_frame",
    "parse_header",
    "seal",
]
