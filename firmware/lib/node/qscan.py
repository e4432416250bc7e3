"""The offline queue's rarely run parts: the boot scan of its log and the copy of an old
segment's live frames. :mod:`node.queue` loads this module for each and drops it again, so
its code is not on the heap while the node runs (see the queue's docstring for the format)::

    from node import qscan
    qscan.scan(q)         # what FrameQueue.open() does: read every segment into q's index
    qscan.move(q, seg)    # copy seg's live frames to the active segment (before removing it)
"""

import os
import struct
from binascii import crc32

from micropython import const

from node.flash import read

# As in node.queue.
_T_FRAME = const(0xF1)
_T_ALARM = const(0xF3)
_T_ACKED = const(0xD1)
_T_DROPPED = const(0xD2)
_HDR = const(6)
_E = const(16)
_ALARM = const(2)
_MAX_FRAME = const(250)
_MIN_FRAME = const(22)


def scan(q):
    """Scan the log of ``q`` into its index (the caller then runs ``q._gc()``)."""
    try:
        os.mkdir(q.path)
    except OSError:
        pass
    segs = []
    for e in os.ilistdir(q.path):
        if e[0].isdigit():
            segs.append(int(e[0]))
    segs.sort()
    torn = False
    for s in segs:
        torn = _scan(q, s)
    q._active = 0 if (torn or not segs) else segs[-1]
    try:
        q.dropped = int(read(q.path + "/meta") or 0)
    except ValueError:
        q.dropped = 0


def _scan(q, seg):
    """Read one segment into the index; return True if it ends in a torn record."""
    rv = q._rv
    off = 0
    live = 0
    torn = False
    name = q._name(seg)
    with open(name, "rb") as f:
        while True:
            k = f.readinto(rv[0:_HDR])
            if not k:
                break
            t = rv[0]
            ln = rv[1]
            if k < _HDR:
                torn = True
                break
            if t == _T_FRAME or t == _T_ALARM:
                ok = _MIN_FRAME <= ln <= _MAX_FRAME
            else:
                ok = (t == _T_ACKED or t == _T_DROPPED) and ln == 4
            if not ok or f.readinto(rv[_HDR : _HDR + ln]) != ln:
                torn = True
                break
            if crc32(rv[_HDR : _HDR + ln], crc32(rv[0:2])) != struct.unpack_from(">I", rv, 2)[0]:
                torn = True
                break
            if t == _T_ACKED or t == _T_DROPPED:
                i = q._find(struct.unpack_from(">I", rv, _HDR)[0])
                if i >= 0:
                    s = struct.unpack_from("<I", q._idx, i * _E + 4)[0]
                    if s == seg:
                        live -= 1
                    else:
                        q._segs[s][1] -= 1
                    q._kill(i)
            elif q._insert(struct.unpack_from(">I", rv, _HDR + 5 + rv[_HDR + 4])[0], seg, off, ln,
                           _ALARM if t == _T_ALARM else 0):
                live += 1
            off += _HDR + ln
    size = os.stat(name)[6]
    q._segs[seg] = [size, live]
    q._disk += size
    return torn


def move(q, seg):
    """Copy the live frames of ``seg`` to the active segment (before removing ``seg``)."""
    buf = bytearray(_MAX_FRAME)
    idx = q._idx
    fmt = "<IIHBBI"
    for i in range(q._head, q._n):
        c, s, off, ln, fl, sent = struct.unpack_from(fmt, idx, i * _E)
        if c and s == seg:
            q.read(i, buf)
            ns, noff = q._write(_T_ALARM if fl & _ALARM else _T_FRAME, memoryview(buf)[0:ln])
            q._segs[ns][1] += 1
            q._segs[seg][1] -= 1
            struct.pack_into(fmt, idx, i * _E, c, ns, noff, ln, fl, sent)
