"""Receiving frames on the gateway: serial decoding, verification, replay windows and counts.

The window is only *checked* when a frame is opened; the caller calls :meth:`Receiver.commit`
once the frame is durably stored, so a crash between the two re-accepts the frame as new
instead of losing it (docs/protocol.md section 3).

>>> from linli.link import LinkKeys, Kind, Role, seal
>>> from linli.link.serial import wire
>>> k = LinkKeys(bytes(32))
>>> rx = Receiver(lambda n: (k, Role.BIN))
>>> [r.reason.label for r in rx.feed_wire(b"noise" + wire(seal(k, Kind.HELLO, Role.BIN, "b1", counter=1, ts=0)))]
['bad_crc', 'ok']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from linli.link.crypto import UP
from linli.link.errors import LinkError, Reason
from linli.link.frame import Frame, KeyLookup, open_frame
from linli.link.replay import Verdict, Window
from linli.link.serial import Decoder


@dataclass(frozen=True)
class Received:
    reason: Reason
    frame: Optional[Frame] = None
    detail: str = ""
    node_id: Optional[str] = None
    counter: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


class Receiver:
    """One per gateway; ``windows`` maps node id -> Window (pass a persistent mapping to keep them)."""

    def __init__(
        self,
        lookup: KeyLookup,
        windows: Optional[dict[str, Window]] = None,
        *,
        direction: int = UP,
        window_for: Optional[Callable[[str], Window]] = None,
    ):
        self.lookup = lookup
        self.windows = {} if windows is None else windows
        self._window_for = window_for
        self.direction = direction
        self.counts: Counter[str] = Counter()
        self._decoders: dict[str, Decoder] = {}

    def window(self, node_id: str) -> Window:
        w = self.windows.get(node_id)
        if w is None:
            w = self._window_for(node_id) if self._window_for else Window()
            self.windows[node_id] = w
        return w

    def open(self, raw: bytes, *, topic_id: Optional[str] = None) -> Received:
        """Verify one frame; never raises for bad input."""
        nid = _peek_id(raw)
        w = None
        if nid:
            w = self.window(nid)
            entry = self.lookup(nid)
            if entry is not None and w.keyfp != entry[0].fp:
                if w.keyfp is not None:  # re-keyed: the new board's counters start again at 1
                    w = self.windows[nid] = Window()
                    self.counts["rekeyed"] += 1
                w.keyfp = entry[0].fp
        try:
            fr = open_frame(raw, self.lookup, w, direction=self.direction, topic_id=topic_id)
        except LinkError as e:
            self.counts[e.reason.label] += 1
            return Received(e.reason, None, e.detail, e.node_id, e.counter)
        self.counts[_VERDICT_LABELS[fr.verdict] if fr.verdict else "new"] += 1
        # The frozen dataclass without its __init__ (a setattr per field): once per frame.
        r = _new(Received)
        r.__dict__.update(reason=Reason.OK, frame=fr, detail="", node_id=fr.node_id, counter=fr.counter)
        return r

    def commit(self, frame: Frame) -> None:
        """Mark the frame's counter as seen (after it is durably stored)."""
        self.window(frame.node_id).accept(frame.counter)

    def feed_wire(self, chunk: bytes, port: str = "") -> Iterator[Received]:
        """Decode serial bytes from ``port`` (one decoder per port keeps partial frames apart).

        A generator: commit() each accepted frame before asking for the next, so a replay
        right behind it in the same chunk is seen as a duplicate.
        """
        dec = self._decoders.get(port)
        if dec is None:
            dec = self._decoders[port] = Decoder()
        for reason, data in dec.feed(chunk):
            if reason is Reason.OK:
                yield self.open(data)
            else:
                self.counts[reason.label] += 1
                yield Received(reason, None, "%d bytes of line noise" % len(data))


_new = object.__new__
_VERDICT_LABELS = {v: v.value for v in Verdict}  # an enum's .value is a property: slow per frame


def _peek_id(raw: bytes) -> Optional[str]:
    """The node id from a header that is long enough to hold one (not yet trusted)."""
    if len(raw) > 5 and 0 < raw[4] <= 16 and len(raw) >= 5 + raw[4]:
        try:
            return bytes(raw[5 : 5 + raw[4]]).decode("ascii")
        except UnicodeDecodeError:
            return None
    return None
