"""Golden vectors shared by the firmware and gateway implementations (tests/vectors/).

``linli vectors --write`` regenerates them from this module; ``linli vectors --check`` (run by
the tests) proves the gateway still produces exactly the committed bytes. Everything here is
deterministic: keys and garbage come from SHA-256 of fixed labels.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Iterator

from linli.link.crypto import DOWN, UP, LinkKeys
from linli.link.errors import LinkError, Reason
from linli.link.frame import Flag, Kind, Role, encode_body, open_frame, seal
from linli.link.replay import Window
from linli.link.serial import Decoder, crc16, wire

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "tests" / "vectors"
TS = 1795880000


def key_for(label: str) -> bytes:
    return hashlib.sha256(b"linli test key " + label.encode()).digest()


def stream(label: str, n: int) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s %d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


def _retag(keys: LinkKeys, raw: bytes) -> bytes:
    """Recompute the tag over a tampered header: for cases that must fail a later check."""
    body = raw[:-8]
    return body + keys.tag(body)


def _raw(keys: LinkKeys, kind: int, flags: int, role: int, nid: bytes, counter: int, payload: bytes) -> bytes:
    """A frame built without seal()'s argument checks, for fields seal() refuses."""
    direction = DOWN if flags & 1 else UP
    header = bytes((1, kind, flags, role, len(nid))) + nid + counter.to_bytes(4, "big") + TS.to_bytes(4, "big")
    body = header + keys.crypt(nid, direction, counter, payload)
    return body + keys.tag(body)


GOOD = [
    # name, node, role, kind, flags, counter, ts, body (dict) or raw payload bytes
    ("hello", "bin-0001", Role.BIN, Kind.HELLO, Flag.NONE, 1, TS, {"fw": "0.1.0", "rc": "pwron", "bc": 1, "sm": 0}),
    ("telemetry-bin", "bin-0001", Role.BIN, Kind.TELEMETRY, Flag.NONE, 2, TS + 60, {"fill": 62, "bat": 3.91, "rssi": -67, "q": 0}),
    ("event-alarm", "bin-0001", Role.BIN, Kind.EVENT, Flag.ALARM, 3, TS + 61, {"ev": "fire_risk", "temp": 71.5}),
    ("empty-payload", "l", Role.STREETLIGHT, Kind.TIME_SYNC, Flag.NONE, 1, 0, b""),
    ("one-byte-id-16-byte-payload", "p", Role.PETSCAN, Kind.TELEMETRY, Flag.NONE, 7, TS, b'{"a":"01234567"}'),  # exactly one AES block
    ("block-boundary-16", "petscan-01", Role.PETSCAN, Kind.EVENT, Flag.NONE, 16, TS, {"ev": "s", "x": 1234}),
    ("block-boundary-17", "petscan-01", Role.PETSCAN, Kind.EVENT, Flag.NONE, 17, TS, {"ev": "s", "x": 12345}),
    ("max-id", "streetlight-0042", Role.STREETLIGHT, Kind.TELEMETRY, Flag.NONE, 4000000000, TS, {"lux": 3.5, "pv": 17.2, "bat": 12.6}),
    ("max-counter", "bin-0002", Role.BIN, Kind.STATUS, Flag.NONE, 2**32 - 1, TS, {"st": "asleep", "until": TS + 3600}),
    ("utf8", "petscan-01", Role.PETSCAN, Kind.EVENT, Flag.NONE, 18, TS, {"ev": "fouling", "note": "狗粪 near gate 3"}),
    ("command-result", "streetlight-0042", Role.STREETLIGHT, Kind.COMMAND_RESULT, Flag.NONE, 4000000001, TS, {"id": 7, "ok": True}),
    ("down-ack", "bin-0001", Role.BIN, Kind.ACK, Flag.DOWN, 1, TS, {"c": 3, "r": 0}),
    ("down-command", "streetlight-0042", Role.STREETLIGHT, Kind.COMMAND, Flag.DOWN, 2, TS, {"id": 7, "op": "lamp.level", "a": {"level": 40}}),
    ("down-time", "l", Role.STREETLIGHT, Kind.TIME_SYNC, Flag.DOWN, 3, TS, {"t": TS + 5}),
    ("max-frame", "bin-0003", Role.BIN, Kind.TELEMETRY, Flag.NONE, 5, TS, None),  # payload filled to 250 bytes
]


def good_vectors() -> Iterator[dict]:
    for name, node, role, kind, flags, counter, ts, body in GOOD:
        key = key_for(node)
        keys = LinkKeys(key)
        if body is None:
            pad = 250 - (13 + len(node) + 8) - len(b'{"pad":""}')
            payload = b'{"pad":"' + b"x" * pad + b'"}'
        elif isinstance(body, dict):
            payload = encode_body(body)
        else:
            payload = body
        raw = seal(keys, kind, role, node, counter=counter, ts=ts, payload=payload, flags=flags)
        yield {
            "name": name,
            "key": key.hex(),
            "node": node,
            "role": role.label,
            "kind": kind.label,
            "flags": int(flags),
            "counter": counter,
            "ts": ts,
            "payload": payload.hex(),
            "body": json.loads(payload) if payload else {},
            "crc": crc16(raw),
            "frame": raw.hex(),
            "wire": wire(raw).hex(),
        }


def _reject(name, data: bytes, reason, *, wire_level=False, keys=None, window=None, direction="up", topic=None, verdict=None):
    return {
        "name": name,
        "input": "wire" if wire_level else "frame",
        "data": data.hex(),
        "keys": keys if keys is not None else {"bin-0001": [key_for("bin-0001").hex(), "bin"]},
        "window": window or {},
        "direction": direction,
        "topic": topic,
        "reason": reason.label if isinstance(reason, Reason) else reason,
        "verdict": verdict,
    }


def reject_vectors() -> Iterator[dict]:
    node = "bin-0001"
    k = LinkKeys(key_for(node))
    good = seal(k, Kind.TELEMETRY, Role.BIN, node, counter=100, ts=TS, payload=b'{"fill":50}')
    flip_payload = bytearray(good)
    flip_payload[22] ^= 0x04
    flip_tag = bytearray(good)
    flip_tag[-1] ^= 0x80
    flip_header = bytearray(good)
    flip_header[2] ^= 0x02  # turns on ALARM: a valid-looking header, so only the tag catches it
    w = {node: [100, 1]}

    yield _reject("accept-new", good, "ok", verdict="new")
    yield _reject("accept-after-window", good, "ok", window={node: [90, 0x3FF]}, verdict="new")
    yield _reject("duplicate", good, "ok", window=w, verdict="duplicate")
    yield _reject("late-inside-window", good, "ok", window={node: [130, 1]}, verdict="new")
    yield _reject("duplicate-inside-window", good, "ok", window={node: [130, 1 | 1 << 30]}, verdict="duplicate")
    yield _reject("replayed-below-window", good, Reason.REPLAYED, window={node: [164, 1]})
    yield _reject("edge-of-window", good, "ok", window={node: [163, 1]}, verdict="new")
    yield _reject("counter-zero", _raw(k, 2, 0, 1, node.encode(), 0, b"{}"), Reason.REPLAYED)
    yield _reject("reflected-downlink", seal(k, Kind.ACK, Role.BIN, node, counter=5, ts=TS, payload=b'{"c":1,"r":0}', flags=Flag.DOWN), Reason.REPLAYED)
    yield _reject("uplink-kind-sent-down", seal(k, Kind.TELEMETRY, Role.BIN, node, counter=5, ts=TS, payload=b"{}", flags=Flag.DOWN), Reason.REPLAYED)
    yield _reject("down-accepted-by-node", seal(k, Kind.ACK, Role.BIN, node, counter=5, ts=TS, payload=b'{"c":1,"r":0}', flags=Flag.DOWN), "ok", direction="down", verdict="new")
    yield _reject("uplink-refused-by-node", good, Reason.REPLAYED, direction="down")
    yield _reject("flipped-payload-bit", bytes(flip_payload), Reason.BAD_TAG)
    yield _reject("flipped-tag-bit", bytes(flip_tag), Reason.BAD_TAG)
    yield _reject("flipped-header-bit", bytes(flip_header), Reason.BAD_TAG)
    yield _reject("wrong-key", seal(LinkKeys(key_for("other")), Kind.TELEMETRY, Role.BIN, node, counter=101, ts=TS, payload=b"{}"), Reason.BAD_TAG)
    yield _reject("unknown-node", seal(LinkKeys(key_for("bin-9999")), Kind.TELEMETRY, Role.BIN, "bin-9999", counter=1, ts=TS, payload=b"{}"), Reason.UNKNOWN_NODE)
    yield _reject("role-mismatch", seal(k, Kind.TELEMETRY, Role.STREETLIGHT, node, counter=101, ts=TS, payload=b"{}"), Reason.UNKNOWN_NODE)
    yield _reject("topic-mismatch", good, Reason.MALFORMED, topic="bin-0002")
    yield _reject("topic-match", good, "ok", topic=node, verdict="new")
    yield _reject("empty", b"", Reason.BAD_LENGTH)
    yield _reject("bad-version", bytes([2]) + good[1:], Reason.BAD_VERSION)
    yield _reject("bad-version-short", b"\x07", Reason.BAD_VERSION)
    yield _reject("short", good[:21], Reason.BAD_LENGTH)
    yield _reject("id-len-zero", good[:4] + b"\x00" + good[5:], Reason.BAD_LENGTH)
    yield _reject("id-len-17", good[:4] + b"\x11" + good[5:], Reason.BAD_LENGTH)
    yield _reject("id-overruns", good[:4] + b"\x10" + good[5:13] + bytes(12), Reason.BAD_LENGTH)
    yield _reject("too-large", _raw(k, 2, 0, 1, node.encode(), 102, b'{"p":"' + b"x" * 216 + b'"}'), Reason.TOO_LARGE)
    yield _reject("unknown-kind", _raw(k, 9, 0, 1, node.encode(), 101, b"{}"), Reason.MALFORMED)
    yield _reject("unknown-role", _raw(k, 2, 0, 9, node.encode(), 101, b"{}"), Reason.MALFORMED)
    yield _reject("unknown-flag", _raw(k, 2, 0x80, 1, node.encode(), 101, b"{}"), Reason.MALFORMED)
    yield _reject("bad-id-chars", _raw(k, 2, 0, 1, b"bin 0001", 101, b"{}"), Reason.MALFORMED, keys={"bin 0001": [key_for("bin-0001").hex(), "bin"]})
    yield _reject("payload-not-json", _raw(k, 2, 0, 1, node.encode(), 101, b"fill=50"), Reason.MALFORMED)
    yield _reject("payload-json-array", _raw(k, 2, 0, 1, node.encode(), 101, b"[1,2]"), Reason.MALFORMED)
    yield _reject("payload-bad-utf8", _raw(k, 2, 0, 1, node.encode(), 101, b'{"a":"\xff"}'), Reason.MALFORMED)
    yield _reject("payload-malformed-but-replayed", _raw(k, 2, 0, 1, node.encode(), 5, b"nope"), Reason.REPLAYED, window={node: [200, 1]})

    # Wire-level: CRC and COBS checks come before the frame checks.
    gw = wire(good)
    flipped = bytearray(gw)
    flipped[30] ^= 0x01
    if flipped[30] == 0:
        flipped[30] = 0x55
    yield _reject("wire-ok", gw, "ok", wire_level=True, verdict="new")
    yield _reject("wire-flipped-bit", bytes(flipped), Reason.BAD_CRC, wire_level=True)
    yield _reject("wire-cut", gw[: len(gw) // 2] + b"\x00", Reason.BAD_CRC, wire_level=True)
    yield _reject("wire-cobs-overrun", b"\x00\x30\x01\x02\x03\x00", Reason.BAD_CRC, wire_level=True)
    yield _reject("wire-crc-ok-tag-bad", wire(bytes(flip_payload)), Reason.BAD_TAG, wire_level=True)
    yield _reject("wire-empty-frame-good-crc", b"\x00\x03\xff\xff\x00", Reason.BAD_LENGTH, wire_level=True)
    yield _reject("wire-one-byte-body", b"\x00\x02\x41\x00", Reason.BAD_CRC, wire_level=True)


def stream_vectors() -> Iterator[dict]:
    """Byte streams for the serial decoder: what each frame in them must decode to, in order."""
    node = "bin-0001"
    k = LinkKeys(key_for(node))
    f = [seal(k, Kind.TELEMETRY, Role.BIN, node, counter=c, ts=TS, payload=b'{"n":%d}' % c) for c in range(1, 6)]
    keys = {node: [key_for(node).hex(), "bin"]}
    garbage = stream("garbage", 256)
    nozero = bytes(b or 0x55 for b in stream("nozero", 300))
    cases = [
        ("two-good", wire(f[0]) + wire(f[1])),
        ("garbage-burst-then-good", garbage + wire(f[0])),
        ("long-run-without-delimiter", nozero + wire(f[0]) + wire(f[1])),
        ("cut-frame-then-good", wire(f[0])[:20] + wire(f[1])),
        ("flipped-bit-then-good", bytes([wire(f[0])[0]]) + bytes([wire(f[0])[1] ^ 0x10]) + wire(f[0])[2:] + wire(f[1])),
        ("replay-in-stream", wire(f[0]) + wire(f[1]) + wire(f[0]) + wire(f[2])),
        ("chunked", wire(f[3]) + wire(f[4])),
    ]
    for name, data in cases:
        yield {"name": name, "data": data.hex(), "keys": keys, "chunk": 7 if name == "chunked" else 0, "expect": run_stream(data, keys, chunk=7 if name == "chunked" else 0)}


def lookup_from(keys: dict):
    table = {n: (LinkKeys(bytes.fromhex(h)), Role.from_label(r)) for n, (h, r) in keys.items()}
    return table.get


def run_stream(data: bytes, keys: dict, chunk: int = 0) -> list[str]:
    """Decode a serial stream as the gateway's ingest does: label of each frame's outcome."""
    lookup = lookup_from(keys)
    windows: dict[str, Window] = {}
    dec = Decoder()
    out = []
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for c in chunks:
        for reason, raw in dec.feed(c):
            if reason is not Reason.OK:
                out.append(reason.label)
                continue
            try:
                h_window = windows.setdefault(raw[5 : 5 + raw[4]].decode("ascii", "replace"), Window())
                fr = open_frame(raw, lookup, h_window)
            except LinkError as e:
                out.append(e.reason.label)
                continue
            h_window.accept(fr.counter)
            out.append("ok:%s:%d" % (fr.verdict.value, fr.counter))
    return out


def check_reject(v: dict) -> tuple[str, str | None]:
    """Run one reject vector through the gateway: (reason label or 'ok', verdict)."""
    data = bytes.fromhex(v["data"])
    if v["input"] == "wire":
        dec = Decoder()
        results = list(dec.feed(data))
        if len(results) != 1:
            return "frames:%d" % len(results), None
        reason, data = results[0]
        if reason is not Reason.OK:
            return reason.label, None
    window = None
    if data[4:5] and 0 < data[4] <= 16 and len(data) >= 5 + data[4]:
        nid = data[5 : 5 + data[4]].decode("ascii", "replace")
        last, bitmap = v["window"].get(nid, (0, 0))
        window = Window(last, bitmap)
    try:
        fr = open_frame(data, lookup_from(v["keys"]), window, direction=DOWN if v["direction"] == "down" else UP, topic_id=v["topic"])
    except LinkError as e:
        return e.reason.label, None
    return "ok", fr.verdict.value if fr.verdict else None


FILES = {"frames.jsonl": good_vectors, "rejects.jsonl": reject_vectors, "streams.jsonl": stream_vectors}


def render() -> dict[str, str]:
    return {name: "".join(json.dumps(v, ensure_ascii=False, sort_keys=True) + "\n" for v in fn()) for name, fn in FILES.items()}


def register(sub) -> None:
    p = sub.add_parser("vectors", help="write or check the link protocol's golden vectors")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="regenerate the files")
    g.add_argument("--check", action="store_true", help="exit 1 if the files differ from what this code makes")
    p.set_defaults(handler=_main)


def _main(args) -> int:
    rendered = render()
    bad = 0
    for name, text in rendered.items():
        path = args.dir / name
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print("wrote %s (%d vectors)" % (path, text.count("\n")))
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            print("%s differs from what the code produces" % path, file=sys.stderr)
            bad += 1
    return 1 if bad else 0
