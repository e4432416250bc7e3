# Link protocol figures on MicroPython, for bench/protocol.py.
#
#   MICROPYPATH=<dir holding link/*.mpy> micropython -X heapsize=64wK \
#       tests/mp/bench_link.py [FRAMES] [PAYLOAD_BYTES]
#
# Seals FRAMES uplink frames (default 200) with a PAYLOAD_BYTES JSON payload (default 200; the
# frame limit allows up to 250 - 21 - len(node id)), wraps each one for the serial line, then
# opens FRAMES downlink frames of the same size, and prints one JSON line:
#
#   frames, payload, frame_bytes, wire_bytes   what was measured
#   us_per_seal         seal only (AES-CTR + HMAC-SHA256), microseconds per frame
#   us_per_seal_wire    seal straight into the wire buffer + COBS/CRC wrap
#   us_per_open         verify + decrypt + json.loads of a downlink frame
#   heap_seal_wire      bytes allocated by one seal + wrap (gc off: an upper bound on the peak
#                       heap it needs above what is already allocated)
#   heap_open           the same for one open() with a scratch buffer
#   heap_static         bytes held by the imported modules, one LinkKeys, the wire buffer,
#                       a scratch buffer and a serial Decoder
#   heap_peak           heap_static + the larger of heap_seal_wire and heap_open: what the link
#                       needs at most while sending or receiving
#   mpy                 true if the link modules were loaded from .mpy files
#
# Without MICROPYPATH it falls back to firmware/lib next to this script (source, slower import).
import gc
import json
import sys
import time

gc.collect()
_base = gc.mem_alloc()
try:
    from link import frame, serial
except ImportError:
    sys.path.append((__file__.rsplit("/", 1)[0] if "/" in __file__ else ".") + "/../../firmware/lib")
    from link import frame, serial
from link.crypto import LinkKeys
from link.replay import Window


def main(count, size):
    node = b"bin-0001"
    keys = LinkKeys(b"\x42" * 32)
    out = bytearray(serial.WIRE_MAX)
    scratch = bytearray(frame.MAX_FRAME)
    dec = serial.Decoder()
    gc.collect()
    static = gc.mem_alloc() - _base
    # '{"p":"xxx...x"}' of exactly `size` bytes
    payload = b'{"p":"' + b"x" * (size - 8) + b'"}'
    buf = memoryview(out)[serial.FRAME_OFFSET :]

    gc.collect()
    t0 = time.ticks_us()
    for c in range(1, count + 1):
        n = frame.seal(buf, keys, frame.TELEMETRY, 0, frame.BIN, node, c, 1795880000, payload)
    t_seal = time.ticks_diff(time.ticks_us(), t0)

    gc.collect()
    t0 = time.ticks_us()
    for c in range(1, count + 1):
        n = frame.seal(buf, keys, frame.TELEMETRY, 0, frame.BIN, node, c, 1795880000, payload)
        w = serial.wrap(out, n)
    t_wire = time.ticks_diff(time.ticks_us(), t0)

    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    n = frame.seal(buf, keys, frame.TELEMETRY, 0, frame.BIN, node, 1, 1795880000, payload)
    w = serial.wrap(out, n)
    heap_sw = gc.mem_alloc() - a0
    gc.enable()

    # downlink frames to open, as the node receives them
    down = bytearray(frame.MAX_FRAME)
    dn = frame.seal(down, keys, frame.COMMAND, frame.DOWN, frame.BIN, node, 1, 1795880000,
                    payload)
    data = memoryview(down)[0:dn]
    entry = (keys, frame.BIN, None)

    def lookup(nid):
        return entry if nid == node else None

    gc.collect()
    t0 = time.ticks_us()
    for _ in range(count):
        rc, f = frame.open(data, lookup, 1, None, scratch)
    t_open = time.ticks_diff(time.ticks_us(), t0)
    if rc:
        raise SystemExit("open failed: %d" % rc)

    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    rc, f = frame.open(data, lookup, 1, None, scratch)
    heap_open = gc.mem_alloc() - a0
    gc.enable()
    f = None

    print(json.dumps({
        "frames": count,
        "payload": size,
        "frame_bytes": n,
        "wire_bytes": w,
        "us_per_seal": t_seal // count,
        "us_per_seal_wire": t_wire // count,
        "us_per_open": t_open // count,
        "heap_seal_wire": heap_sw,
        "heap_open": heap_open,
        "heap_static": static,
        "heap_peak": static + max(heap_sw, heap_open),
        "mpy": frame.__file__.endswith(".mpy"),
        "platform": sys.platform,
    }))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, int(sys.argv[2]) if len(sys.argv) > 2 else 200)
