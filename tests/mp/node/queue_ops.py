# Drives node.queue.FrameQueue from ops.json in the flash (tests/test_node_queue.py) and prints
# one JSON line per op: [op, result, counters, live, dropped, inflight, {segment: bytes}].
#   ["open", max_bytes, max_frames, seg_bytes]   ["put", counter, size, alarm]
#   ["ack", counter]   ["take_dropped"]   ["due", now_ms, timeout_ms, max_inflight]  (marks sent)
#   ["unsend"]   ["read", counter]  (the frame's bytes, hex)
import json
import os
import struct
from binascii import hexlify

from node.queue import FrameQueue

NID = b"bin-01"


def frame(counter, size):
    b = bytearray(size)
    b[0] = 1
    b[4] = len(NID)
    b[5 : 5 + len(NID)] = NID
    struct.pack_into(">I", b, 5 + len(NID), counter)
    for i in range(13 + len(NID), size):
        b[i] = (counter + i) & 0xFF
    return b


def files():
    out = {}
    try:
        for e in os.ilistdir("q"):
            if e[0].isdigit():
                out[e[0]] = os.stat("q/" + e[0])[6]
    except OSError:
        pass
    return out


with open("ops.json") as f:
    ops = json.load(f)
q = None
buf = bytearray(250)
for op in ops:
    name = op[0]
    res = None
    if name == "open":
        q = FrameQueue("q", op[1], op[2], op[3])
        q.open()
    elif name == "put":
        res = q.put(frame(op[1], op[2]), op[3])
    elif name == "ack":
        res = q.ack(op[1])
    elif name == "take_dropped":
        res = q.take_dropped()
    elif name == "due":
        i = q.due(op[1], op[2], op[3])
        res = -1 if i < 0 else q.counter_at(i)
        if i >= 0:
            q.mark_sent(i, op[1])
    elif name == "unsend":
        q.unsend()
    elif name == "read":
        for i in range(q._head, q._n):
            if q.counter_at(i) == op[1]:
                n = q.read(i, buf)
                res = hexlify(buf[0:n]).decode() == hexlify(frame(op[1], n)).decode()
    print(json.dumps([name, res, q.counters(), q.live, q.dropped, q.inflight, files()]))
