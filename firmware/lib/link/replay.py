"""Counters and the replay window (docs/protocol.md, section 3).

:class:`Window` is the receiver's 64-frame anti-replay window (RFC 4303, 3.4.3): ``last`` is the
highest counter accepted, ``bitmap`` bit ``k`` says ``last - k`` was seen. Checking and updating
are separate, because the state may change only once the frame has been handled::

    from link.replay import Window, Reservation, NEW, DUPLICATE
    w = Window()
    v = w.check(c)        # NEW, DUPLICATE, or 6 (replayed: 0 or older than last-63)
    if v == NEW:
        handle(frame)
    if v != 6:
        w.update(c)       # after handling; a duplicate is acknowledged again, never handled

:class:`Reservation` hands out the sender's counters and persists a *reservation block*: before
it uses ``next`` it stores ``reserved = next + 256`` (write a temporary file, then rename) and
stores again only when ``next`` reaches the reserved value. After a reboot it starts at the stored
reservation, so it skips at most 256 counters and never reuses one::

    r = Reservation("/link_up.ctr")   # reads the file (construct it at boot, not at import)
    c = r.next()                      # 1, 2, 3, ... ; writes the file every 256 counters

Files hold a value followed by its bitwise complement, so a torn write is detected. A power loss
during a write leaves ``PATH.tmp`` behind; the next start takes the larger valid value of the
two files, which is always safe (it may only skip further ahead).
"""

import os
import struct

from micropython import const

NEW = const(0)
DUPLICATE = const(1)
_REPLAYED = const(6)  # the frame reason code `replayed`
_SIZE = const(64)  # window width, in counters
_COUNTER_MAX = const(0xFFFFFFFF)
_STEP = const(256)


def _encode(fmt, *values):
    """``values`` packed with ``fmt`` followed by the complement of those bytes."""
    data = struct.pack(fmt, *values)
    n = len(data)
    rec = bytearray(2 * n)
    for i in range(n):
        rec[i] = data[i]
        rec[n + i] = data[i] ^ 0xFF
    return rec


def _read(path, fmt):
    """Return the values stored at ``path``; None if the file is missing, False if torn."""
    try:
        with open(path, "rb") as f:
            rec = f.read()
    except OSError:
        return None
    n = struct.calcsize(fmt)
    if len(rec) != 2 * n:
        return False
    for i in range(n):
        if rec[i] ^ rec[n + i] != 0xFF:
            return False
    return struct.unpack_from(fmt, rec, 0)


def write_atomic(path, data):
    """Write ``data`` to ``PATH.tmp`` and rename it over ``path`` (node.flash offers it to the
    rest of the firmware: one implementation).

    Rename is atomic on LittleFS and POSIX. FAT refuses to rename over an existing file: then
    the old file is removed first, and a reader that finds only ``PATH.tmp`` uses it.
    """
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


def _newest(path, fmt):
    """The values of ``path`` or of a stray ``PATH.tmp`` whose first value is larger.

    Returns None when neither file holds a valid record; raises ``ValueError`` when ``path``
    exists but is torn and no valid ``PATH.tmp`` can stand in for it.
    """
    main = _read(path, fmt)
    tmp = _read(path + ".tmp", fmt)
    if not tmp:
        if main is False:
            raise ValueError("%s is corrupt" % path)
        return main
    if not main or tmp[0] > main[0]:
        return tmp
    return main


class Window:
    """The anti-replay window of one node and direction; see the module docstring."""

    def __init__(self, last=0, bitmap=0):
        self.last = last
        self.bitmap = bitmap

    def check(self, c):
        """Return NEW, DUPLICATE or 6 (``replayed``) for counter ``c``; changes nothing."""
        last = self.last
        if c == 0:
            return _REPLAYED
        if c > last:
            return NEW
        d = last - c
        if d >= _SIZE:
            return _REPLAYED
        if (self.bitmap >> d) & 1:
            return DUPLICATE
        return NEW

    def update(self, c):
        """Record counter ``c`` as seen (call after handling it); ignores a replayed one."""
        last = self.last
        if c == 0:
            return
        if c > last:
            shift = c - last
            if shift >= _SIZE:
                self.bitmap = 1
            else:
                self.bitmap = ((self.bitmap << shift) | 1) & ((1 << _SIZE) - 1)
            self.last = c
        elif last - c < _SIZE:
            self.bitmap |= 1 << (last - c)

    def save(self, path):
        """Persist the window (temporary file + rename): a node keeps its downlink window across
        deep sleep, else an old downlink frame could be replayed to it after every wake."""
        write_atomic(path, _encode(">IQ", self.last, self.bitmap))

    @classmethod
    def load(cls, path):
        """A window read from ``path`` (see :meth:`save`); a fresh one if there is none."""
        v = _newest(path, ">IQ")
        if v is None:
            return cls()
        return cls(v[0], v[1])


class Reservation:
    """The sender's counter with its persisted reservation block; see the module docstring.

    ``step`` is the block size (256 in the protocol; tests may use less).
    """

    def __init__(self, path, step=_STEP):
        self.path = path
        self.step = step
        v = _newest(path, ">Q")
        start = 1 if v is None else v[0]
        if start < 1:
            start = 1
        self._next = start
        self._reserved = start  # nothing is covered yet: the first next() stores a block

    def peek(self):
        """The counter the next call of :meth:`next` returns."""
        return self._next

    def next(self):
        """Return the next counter (1 .. 2**32-1), storing a new block first when needed.

        Raises ``ValueError`` when the counter space is used up (the node must be re-keyed).
        """
        c = self._next
        if c > _COUNTER_MAX:
            raise ValueError("counter space of %s used up: re-key the node" % self.path)
        if c >= self._reserved:
            r = c + self.step
            if r > _COUNTER_MAX + 1:
                r = _COUNTER_MAX + 1
            write_atomic(self.path, _encode(">Q", r))
            self._reserved = r
        self._next = c + 1
        return c
