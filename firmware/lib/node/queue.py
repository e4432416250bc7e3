"""The offline queue: sealed frames in a flash segment log until the gateway acks them.

Every frame a node sends is appended here first and sent from here; it is deleted only when the
gateway's ``ack`` for its counter arrives (docs/protocol.md, section 3), so neither a broken
link nor a reboot nor a power loss loses it::

    q = FrameQueue("q", max_bytes=16384, max_frames=64)
    q.open()                                  # at boot: scan the log, drop a torn tail record
    q.put(frame_mv, alarm=False)              # False if it was dropped (queue full)
    i = q.due(time.ticks_ms(), 10000, 32)     # next frame to (re)send, in counter order, or -1
    n = q.read(i, buf); q.mark_sent(i, time.ticks_ms())
    q.ack(counter)                            # the gateway stored it: delete it

**On flash.** A folder of segment files ``q/1``, ``q/2``, ... appended to in turn (the last one
is active). Each record is ``type (1) | length (1) | CRC-32 (4, big-endian, over type, length
and data) | data``: a frame (type 0xF1, 0xF3 with the ALARM flag) or a tombstone for a counter
(0xD1 acked, 0xD2 dropped; data = the counter). A power loss mid-write leaves a short or
corrupt last record: :meth:`open` stops reading that segment there and appends to a new one.
Segments are removed oldest first once all their frames are dead, and all at once when the
queue empties; so a tombstone never outlives an older segment's frame it deletes. When dead
records pile up (flash use over twice ``max_bytes``), the oldest segment's live frames are
copied to the active one and it is removed; a power loss in between leaves two copies, which
:meth:`open` merges (same counter).

**Bounds.** ``max_bytes`` of live records and ``max_frames`` frames. When a new frame does not
fit, the oldest frames without the ALARM flag are dropped first (counted in :attr:`dropped`,
persisted, reported by the next health report); alarms are never dropped: they may use a
headroom of a quarter more frames and twice the bytes, and only when that is full too is the
*new* frame refused (and counted).

**RAM.** An index of 16 bytes per frame (counter, segment, offset, length, flags, ticks sent),
in one preallocated ``bytearray``, in counter order.
"""

import os
import struct
from binascii import crc32

from micropython import const

from node.flash import write_atomic

_T_FRAME = const(0xF1)
_T_ALARM = const(0xF3)
_T_ACKED = const(0xD1)
_T_DROPPED = const(0xD2)
_HDR = const(6)
_E = const(16)  # index entry: counter I, seg I, off H, len B, flags B, sent I
_ALARM = const(2)  # frame.ALARM
_MAX_FRAME = const(250)
_FMT = "<IIHBBI"


def _qscan():
    from node import qscan

    return qscan


def _unload():
    import sys

    import node

    sys.modules.pop("node.qscan", None)
    try:
        del node.qscan
    except (AttributeError, KeyError):
        pass


def _counter(frame):
    """The counter in a frame's header."""
    return struct.unpack_from(">I", frame, 5 + frame[4])[0]


class FrameQueue:
    """Frames waiting for their ack, in a flash segment log; see the module docstring."""

    def __init__(self, path="q", max_bytes=16384, max_frames=64, seg_bytes=0):
        self.path = path
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        if not seg_bytes:
            seg_bytes = max(1024, min(8192, max_bytes // 4))
        self.seg_bytes = seg_bytes
        self._cap = max_frames + max_frames // 4
        self._idx = bytearray(self._cap * _E)
        self._n = 0  # index entries in use, dead ones (counter 0) included
        self._head = 0  # entries before this are all dead
        self.live = 0  # frames waiting for their ack
        self.live_bytes = 0  # their record bytes
        self.inflight = 0  # frames sent and not acked yet
        self.dropped = 0  # frames dropped since the last take_dropped()
        self._segs = {}  # segment number -> [file bytes, live frames]
        self._active = 0  # segment appended to; 0: start a new one
        self._disk = 0
        self._rec = bytearray(_HDR + 256)
        self._rv = memoryview(self._rec)
        self._c4 = bytearray(4)

    # -- files ----------------------------------------------------------------------------

    def _name(self, seg):
        return "%s/%d" % (self.path, seg)

    def open(self):
        """Scan the log (at boot). Safe to call on an empty or missing folder. The scan's code
        (:mod:`node.qscan`) is loaded for it and dropped again."""
        _qscan().scan(self)
        _unload()
        self._gc()

    def _write(self, t, data):
        """Append one record to the active segment (starting a new one when it is full)."""
        ln = len(data)
        rec = _HDR + ln
        seg = self._active
        if not seg or self._segs[seg][0] + rec > self.seg_bytes:
            seg = 1
            for s in self._segs:
                if s >= seg:
                    seg = s + 1
            self._segs[seg] = [0, 0]
            self._active = seg
        rv = self._rv
        rv[0] = t
        rv[1] = ln
        rv[_HDR : _HDR + ln] = data
        struct.pack_into(">I", rv, 2, crc32(rv[_HDR : _HDR + ln], crc32(rv[0:2])))
        with open(self._name(seg), "ab") as f:
            f.write(rv[0:rec])
        st = self._segs[seg]
        off = st[0]
        st[0] = off + rec
        self._disk += rec
        return seg, off

    def _remove(self, seg):
        try:
            os.remove(self._name(seg))
        except OSError:
            pass
        st = self._segs.pop(seg)
        self._disk -= st[0]
        if seg == self._active:
            self._active = 0

    def _gc(self):
        """Remove dead segments (oldest first, or all when empty); compact when flash use grows."""
        if not self.live:
            for s in sorted(self._segs):
                self._remove(s)
            self._n = self._head = 0
            return
        while True:
            oldest = min(self._segs)
            if oldest == self._active or self._segs[oldest][1]:
                break
            self._remove(oldest)
        while self._disk > 2 * self.max_bytes + self.seg_bytes and len(self._segs) > 1:
            oldest = min(self._segs)
            if oldest == self._active:
                break
            _qscan().move(self, oldest)
            _unload()
            self._remove(oldest)

    # -- the index ------------------------------------------------------------------------

    def _find(self, counter):
        idx = self._idx
        for i in range(self._head, self._n):
            if struct.unpack_from("<I", idx, i * _E)[0] == counter:
                return i
        return -1

    def _insert(self, counter, seg, off, ln, flags):
        """Add an entry in counter order (appends, except after a compaction); False if the
        counter is already there (a second copy) or the index is full."""
        if self._n == self._cap:
            self._compact()
            if self._n == self._cap:
                return False
        idx = self._idx
        i = self._n
        while i > self._head:
            c = struct.unpack_from("<I", idx, (i - 1) * _E)[0]
            if c == counter:
                return False
            if c and c < counter:
                break
            i -= 1
        if i < self._n:
            idx[(i + 1) * _E : (self._n + 1) * _E] = idx[i * _E : self._n * _E]
        struct.pack_into(_FMT, idx, i * _E, counter, seg, off, ln, flags, 0)
        self._n += 1
        self.live += 1
        self.live_bytes += _HDR + ln
        return True

    def _kill(self, i):
        """Mark entry ``i`` dead (its tombstone is written, or not needed)."""
        idx = self._idx
        o = i * _E
        ln = idx[o + 10]
        if struct.unpack_from("<I", idx, o + 12)[0]:
            self.inflight -= 1
        idx[o : o + 4] = b"\x00\x00\x00\x00"
        self.live -= 1
        self.live_bytes -= _HDR + ln
        while self._head < self._n and not struct.unpack_from("<I", idx, self._head * _E)[0]:
            self._head += 1
        if self._head == self._n:
            self._head = self._n = 0

    def _compact(self):
        idx = self._idx
        j = 0
        for i in range(self._head, self._n):
            if struct.unpack_from("<I", idx, i * _E)[0]:
                if i != j:
                    idx[j * _E : (j + 1) * _E] = idx[i * _E : (i + 1) * _E]
                j += 1
        self._n = j
        self._head = 0

    def _delete(self, i, t):
        """Delete entry ``i`` for good: tombstone (unless the queue empties), then gc."""
        o = i * _E
        c, seg = struct.unpack_from("<II", self._idx, o)
        self._segs[seg][1] -= 1
        self._kill(i)
        if self.live:
            struct.pack_into(">I", self._c4, 0, c)
            self._write(t, self._c4)
        self._gc()

    # -- the queue ------------------------------------------------------------------------

    def __len__(self):
        return self.live

    def put(self, frame, alarm=False):
        """Append a sealed frame; return False if it was refused (and counted as dropped).

        Makes room first by dropping the oldest frames without the ALARM flag.
        """
        ln = len(frame)
        need = _HDR + ln
        while self.live >= self.max_frames or self.live_bytes + need > self.max_bytes:
            if self._drop_oldest():
                continue
            # Only alarms are left: an alarm may use the headroom, anything else is refused.
            if alarm and self.live < self._cap and self.live_bytes + need <= 2 * self.max_bytes:
                break
            self._count_drop()
            return False
        try:
            seg, off = self._write(_T_ALARM if alarm else _T_FRAME, frame)
        except OSError:  # flash full or failing: the frame is lost, say so
            self._active = 0
            self._count_drop()
            return False
        if self._insert(_counter(frame), seg, off, ln, _ALARM if alarm else 0):
            self._segs[seg][1] += 1
        return True

    def _drop_oldest(self):
        idx = self._idx
        for i in range(self._head, self._n):
            o = i * _E
            if struct.unpack_from("<I", idx, o)[0] and not idx[o + 11] & _ALARM:
                self._delete(i, _T_DROPPED)
                self._count_drop()
                return True
        return False

    def _count_drop(self):
        self.dropped += 1
        self._save_meta()

    def _save_meta(self):
        write_atomic(self.path + "/meta", str(self.dropped))

    def take_dropped(self):
        """Return the dropped count and reset it (call when it goes into a report)."""
        d = self.dropped
        if d:
            self.dropped = 0
            self._save_meta()
        return d

    def ack(self, counter):
        """The gateway acknowledged ``counter``: delete its frame. False if it is not here."""
        i = self._find(counter)
        if i < 0:
            return False
        self._delete(i, _T_ACKED)
        return True

    def counters(self):
        """The queued counters, in order (tests and diagnostics)."""
        out = []
        for i in range(self._head, self._n):
            c = struct.unpack_from("<I", self._idx, i * _E)[0]
            if c:
                out.append(c)
        return out

    # -- sending --------------------------------------------------------------------------

    def due(self, now, timeout_ms, max_inflight):
        """Index of the next frame to send, or -1: the first frame whose last send is over
        ``timeout_ms`` old, or the first unsent one while fewer than ``max_inflight`` are out.
        Use it at once (before any ``await``): indexes move when frames are added."""
        idx = self._idx
        for i in range(self._head, self._n):
            o = i * _E
            if not struct.unpack_from("<I", idx, o)[0]:
                continue
            sent = struct.unpack_from("<I", idx, o + 12)[0]
            if sent:
                if time_diff(now, sent) >= timeout_ms:
                    return i
            elif self.inflight < max_inflight:
                return i
        return -1

    def read(self, i, buf):
        """Read the frame of entry ``i`` into ``buf``; return its length."""
        c, seg, off, ln, fl, sent = struct.unpack_from(_FMT, self._idx, i * _E)
        with open(self._name(seg), "rb") as f:
            f.seek(off + _HDR)
            f.readinto(memoryview(buf)[0:ln])
        return ln

    def counter_at(self, i):
        return struct.unpack_from("<I", self._idx, i * _E)[0]

    def mark_sent(self, i, now):
        """Record that entry ``i`` went out at ``now`` (ticks_ms)."""
        o = i * _E + 12
        if not struct.unpack_from("<I", self._idx, o)[0]:
            self.inflight += 1
        struct.pack_into("<I", self._idx, o, (now & 0x3FFFFFFF) | 0x40000000)

    def unsend(self):
        """Forget what was sent (the link dropped): everything goes out again, in order."""
        idx = self._idx
        for i in range(self._head, self._n):
            struct.pack_into("<I", idx, i * _E + 12, 0)
        self.inflight = 0


def time_diff(now, sent):
    """ticks_diff for the 30-bit ticks stored in the index (bit 30 marks 'sent')."""
    return ((now & 0x3FFFFFFF) - (sent & 0x3FFFFFFF) + 0x20000000) % 0x40000000 - 0x20000000
