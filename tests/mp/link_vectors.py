# Runs the golden vectors (tests/vectors/*.jsonl) through firmware/lib/link on MicroPython.
#
#   MICROPYPATH=<dir holding link/*.mpy> micropython -X heapsize=64wK \
#       tests/mp/link_vectors.py tests/vectors
#
# Streams each file line by line (one vector in memory at a time) and prints one JSON line per
# vector with what the firmware produced; tests/test_link_firmware_vectors.py compares them with
# the expected values. Last line: {"done": COUNT, "heap_peak": BYTES}.
import gc
import json
import sys
from binascii import hexlify, unhexlify

from link import frame, serial
from link.crypto import LinkKeys
from link.replay import DUPLICATE, NEW, Window

ROLES = {"gateway": 0, "bin": 1, "streetlight": 2, "petscan": 3}
KINDS = {
    "hello": 1, "telemetry": 2, "event": 3, "ack": 4,
    "command": 5, "command_result": 6, "time_sync": 7, "status": 8,
}
REASONS = (
    "ok", "bad_version", "bad_length", "bad_crc", "bad_tag",
    "unknown_node", "replayed", "too_large", "malformed",
)
VERDICTS = {NEW: "new", DUPLICATE: "duplicate"}


def hx(b):
    return hexlify(b).decode()


def key_table(keys, windows):
    """{node id bytes: (LinkKeys, role, Window)} from a vector's key store and replay state."""
    t = {}
    for nid, (khex, role) in keys.items():
        last, bitmap = windows.get(nid, (0, 0)) if windows else (0, 0)
        t[nid.encode()] = (LinkKeys(unhexlify(khex)), ROLES[role], Window(last, bitmap))
    return t


def good(v, buf, out):
    keys = LinkKeys(unhexlify(v["key"]))
    node = v["node"].encode()
    payload = unhexlify(v["payload"])
    kind = KINDS[v["kind"]]
    role = ROLES[v["role"]]
    n = frame.seal(buf, keys, kind, v["flags"], role, node, v["counter"], v["ts"], payload)
    fr = memoryview(buf)[0:n]
    res = {"f": "frames", "name": v["name"], "frame": hx(fr), "crc": serial.crc16(fr)}
    w = serial.wire(fr, out)
    res["wire"] = hx(memoryview(out)[0:w])
    # sealing straight into the wire buffer must give the same bytes
    n2 = frame.seal(memoryview(out)[serial.FRAME_OFFSET :], keys, kind, v["flags"], role, node,
                    v["counter"], v["ts"], payload)
    res["wire_inplace"] = hx(memoryview(out)[0 : serial.wrap(out, n2)])
    # open the expected frame (the gateway's bytes), as its receiver would
    down = v["flags"] & frame.DOWN
    table = {node: (keys, role, Window())}
    rc, f = frame.open(unhexlify(v["frame"]), table.get, down)
    res["open"] = REASONS[rc]
    if f is not None:
        res["body"] = f.payload
        res["fields"] = [f.kind, f.flags, f.role, f.node.decode(), f.counter, f.ts,
                         VERDICTS[f.verdict]]
    # and decode the expected wire bytes with the streaming decoder
    dec = serial.Decoder()
    got = [(r, hx(d) if d is not None else None) for r, d in dec.feed(unhexlify(v["wire"]))]
    res["unwire"] = got
    return res


def reject(v):
    table = key_table(v["keys"], v.get("window"))
    data = unhexlify(v["data"])
    down = 1 if v["direction"] == "down" else 0
    topic = v["topic"].encode() if v.get("topic") is not None else None
    res = {"f": "rejects", "name": v["name"]}
    if v["input"] == "wire":
        got = list(serial.Decoder().feed(data))
        if len(got) != 1:
            res["reason"] = "frames:%d" % len(got)
            return res
        rc, data = got[0]
        if rc:
            res["reason"] = REASONS[rc]
            return res
    rc, f = frame.open(data, table.get, down, topic)
    res["reason"] = REASONS[rc]
    res["verdict"] = VERDICTS[f.verdict] if f is not None else None
    return res


def stream(v):
    table = key_table(v["keys"], None)
    data = unhexlify(v["data"])
    chunk = v["chunk"] or len(data)
    dec = serial.Decoder()
    scratch = bytearray(frame.MAX_FRAME)
    out = []
    mv = memoryview(data)
    for i in range(0, len(data), chunk):
        for rc, fr in dec.feed(mv[i : i + chunk]):
            if rc:
                out.append(REASONS[rc])
                continue
            rc, f = frame.open(fr, table.get, 0, None, scratch)
            if rc:
                out.append(REASONS[rc])
                continue
            table[f.node][2].update(f.counter)
            out.append("ok:%s:%d" % (VERDICTS[f.verdict], f.counter))
    return {"f": "streams", "name": v["name"], "expect": out}


def main(folder):
    buf = bytearray(frame.MAX_FRAME)
    out = bytearray(serial.WIRE_MAX)
    count = 0
    peak = 0
    for name, fn in (("frames", None), ("rejects", reject), ("streams", stream)):
        with open("%s/%s.jsonl" % (folder, name)) as fh:
            for line in fh:
                if not line.strip():
                    continue
                v = json.loads(line)
                line = None
                res = good(v, buf, out) if fn is None else fn(v)
                v = None
                print(json.dumps(res))
                res = None
                count += 1
                a = gc.mem_alloc()
                if a > peak:
                    peak = a
                gc.collect()
    print(json.dumps({"done": count, "heap_peak": peak}))


main(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors")
