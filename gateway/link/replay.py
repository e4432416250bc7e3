"""The replay window and the counter reservation block (docs/protocol.md section 3)."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Optional

WINDOW = 64
RESERVE = 256
_MASK = (1 << WINDOW) - 1


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    REPLAYED = "replayed"


class Window:
    """Highest counter accepted plus a 64-bit bitmap of the ones just below it.

    >>> w = Window()
    >>> w.accept(5); w.check(5), w.check(4), w.check(6)
    (<Verdict.DUPLICATE: 'duplicate'>, <Verdict.NEW: 'new'>, <Verdict.NEW: 'new'>)
    """

    __slots__ = ("last", "bitmap", "keyfp")

    def __init__(self, last: int = 0, bitmap: int = 0, keyfp: Optional[str] = None):
        self.last = last
        self.bitmap = bitmap & _MASK
        # The key these counters were seen under (LinkKeys.fp): a node given a new key (a
        # replaced board, `linli flash --new-key`) counts from 1 again, in a fresh window.
        self.keyfp = keyfp

    def check(self, c: int) -> Verdict:
        if c <= 0:
            return Verdict.REPLAYED
        if c > self.last:
            return Verdict.NEW
        back = self.last - c
        if back >= WINDOW:
            return Verdict.REPLAYED
        return Verdict.DUPLICATE if self.bitmap >> back & 1 else Verdict.NEW

    def accept(self, c: int) -> None:
        """Record ``c`` as seen (call only after check() said NEW or DUPLICATE)."""
        if c > self.last:
            shift = c - self.last
            self.bitmap = ((self.bitmap << shift) | 1) & _MASK if shift < WINDOW else 1
            self.last = c
        else:
            self.bitmap |= 1 << (self.last - c)

    def __repr__(self) -> str:
        return "Window(last=%d, bitmap=%#x)" % (self.last, self.bitmap)


class Reservation:
    """A sender's counter, persisted in blocks so a reboot never reuses a value.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "ctr")
    >>> r = Reservation(p); [r.next() for _ in range(3)]
    [1, 2, 3]
    >>> Reservation(p).next()   # "reboot": skips to the reserved block
    257
    """

    def __init__(self, path: str | os.PathLike, block: int = RESERVE):
        self.path = Path(path)
        self.block = block
        try:
            start = int(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            start = 0
        except ValueError as exc:
            raise ValueError("counter file %s is corrupt: %s" % (self.path, exc)) from None
        self._next = max(start, 1)
        self._reserved = self._next  # nothing reserved yet for this run

    def next(self) -> int:
        if self._next >= self._reserved:
            self._reserve(self._next + self.block)
        c = self._next
        if c >= 2**32:
            raise OverflowError("counter space exhausted: re-provision the node with a new key")
        self._next += 1
        return c

    def _reserve(self, upto: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(str(upto))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._reserved = upto
