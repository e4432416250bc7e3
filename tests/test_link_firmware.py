"""The node side of the link (firmware/lib/link) on the MicroPython unix port, loaded as .mpy.

Each test runs a short MicroPython script under ``-X heapsize=64wK`` and checks what it prints
against independent references: RFC 4231 for HMAC-SHA256, the CRC-16/CCITT-FALSE check value,
the COBS examples of the Wikipedia article, and frames built in this (CPython) process straight
from docs/protocol.md with ``cryptography``'s AES-CTR and ``hmac`` (not with the gateway's code).
The golden vectors shared with the gateway are in test_link_firmware_vectors.py.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK_SRC = ROOT / "firmware" / "lib" / "link"
MP_SCRIPTS = ROOT / "tests" / "mp"
HEAP = "64wK"


from harness.mpybuild import find_micropython, find_mpy_cross

MICROPYTHON = find_micropython()
MPY_CROSS = find_mpy_cross()

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not (MICROPYTHON and MPY_CROSS), reason="needs the MicroPython unix port and mpy-cross"),
]


@pytest.fixture(scope="module")
def link_mpy(tmp_path_factory) -> Path:
    """firmware/lib/link compiled with mpy-cross, as it is deployed: a folder holding link/*.mpy."""
    out = tmp_path_factory.mktemp("link_mpy")
    (out / "link").mkdir()
    for src in sorted(LINK_SRC.glob("*.py")):
        p = subprocess.run(
            [MPY_CROSS, "-o", str(out / "link" / (src.stem + ".mpy")), str(src)], capture_output=True, text=True
        )
        assert p.returncode == 0, "mpy-cross %s failed:\n%s%s" % (src.name, p.stdout, p.stderr)
    return out


@pytest.fixture
def mp(link_mpy, tmp_path):
    """Run MicroPython code (a string) or a script (a Path) with the .mpy link package on its path.

    Runs in ``tmp_path`` (so files the code writes land there); returns stdout. Fails the test on
    a non-zero exit with MicroPython's output.
    """

    def run(code: str | Path, *args: str, stdin: str | None = None) -> str:
        if isinstance(code, Path):
            script = code
        else:
            script = tmp_path / "t_script.py"
            script.write_text(textwrap.dedent(code))
        env = dict(os.environ, MICROPYPATH="%s:.frozen" % link_mpy)
        p = subprocess.run(
            [MICROPYTHON, "-X", "heapsize=" + HEAP, str(script), *args],
            cwd=tmp_path,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
        )
        assert p.returncode == 0, "micropython exited %d:\n%s%s" % (p.returncode, p.stdout, p.stderr)
        return p.stdout

    return run


def lines(out: str) -> list:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


# ---- a reference implementation of the frame, written from docs/protocol.md only ----------


def ref_keys(key: bytes) -> tuple[bytes, bytes]:
    return hmac.digest(key, b"linli v1 enc", "sha256")[:16], hmac.digest(key, b"linli v1 mac", "sha256")


def ref_ctr(enc_key: bytes, node: bytes, down: int, counter: int, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    block0 = hashlib.sha256(node).digest()[:7] + bytes([down]) + counter.to_bytes(4, "big") + bytes(4)
    enc = Cipher(algorithms.AES(enc_key), modes.CTR(block0)).encryptor()
    return enc.update(data) + enc.finalize()


def ref_frame(key, kind, flags, role, node, counter, ts, payload) -> bytes:
    enc_key, mac_key = ref_keys(key)
    head = bytes([1, kind, flags, role, len(node)]) + node + counter.to_bytes(4, "big") + ts.to_bytes(4, "big")
    body = head + ref_ctr(enc_key, node, flags & 1, counter, payload)
    return body + hmac.digest(mac_key, body, "sha256")[:8]


def ref_cobs(data: bytes) -> bytes:
    """COBS as in Cheshire & Baker / the Wikipedia article (no delimiter)."""
    out = bytearray()
    block = bytearray()
    for i, b in enumerate(data):
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
            continue
        block.append(b)
        if len(block) == 254:
            out += b"\xff" + block
            block = bytearray()
            if i == len(data) - 1:
                return bytes(out)
    return bytes(out + bytes([len(block) + 1]) + block)


def ref_crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)  # CRC-CCITT, init 0xFFFF, MSB first = CCITT-FALSE


def ref_wire(frame: bytes) -> bytes:
    return b"\x00" + ref_cobs(frame + ref_crc(frame).to_bytes(2, "big")) + b"\x00"


NODE_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def random_cases(seed: int, count: int) -> list[dict]:
    rnd = random.Random(seed)
    cases = []
    up_kinds, down_kinds = (1, 2, 3, 6, 7, 8), (4, 5, 7)
    for i in range(count):
        node = bytes(rnd.choice(NODE_CHARS) for _ in range(rnd.randint(1, 16)))
        down = rnd.random() < 0.5
        kind = rnd.choice(down_kinds if down else up_kinds)
        flags = (1 if down else 0) | (2 if rnd.random() < 0.3 else 0)
        room = 250 - 21 - len(node)
        n = rnd.choice([0, 1, 15, 16, 17, 31, 32, 33, rnd.randint(0, room), room])
        text = "".join(rnd.choice("abcxyz0123456789 狗") for _ in range(n))
        payload = json.dumps({"k": text}, ensure_ascii=False, separators=(",", ":")).encode()
        while len(payload) > room:
            text = text[:-1]
            payload = json.dumps({"k": text}, ensure_ascii=False, separators=(",", ":")).encode()
        if i % 7 == 0:
            payload = b""
        cases.append(
            {
                "key": rnd.randbytes(32).hex(),
                "kind": kind,
                "flags": flags,
                "role": rnd.randint(1, 3),
                "node": node.decode(),
                "counter": rnd.choice([1, 2, 255, 256, 65536, 2**31, 2**32 - 1, rnd.randint(1, 2**32 - 1)]),
                "ts": rnd.choice([0, 1795880000, 2**32 - 1]),
                "payload": payload.hex(),
            }
        )
    return cases


# ---- loading -------------------------------------------------------------------------------


def test_modules_load_as_mpy_without_side_effects(mp, tmp_path):
    out = mp(
        """
        import gc, os, json
        gc.collect(); a = gc.mem_alloc()
        import link, link.crypto, link.frame, link.serial, link.replay
        gc.collect()
        print(json.dumps({"files": [m.__file__ for m in (link.crypto, link.frame, link.serial, link.replay)],
                          "heap": gc.mem_alloc() - a, "cwd": os.listdir(".")}))
        """
    )
    (r,) = lines(out)
    assert all(f.endswith(".mpy") for f in r["files"]), r["files"]
    assert r["cwd"] == ["t_script.py"], "importing the link package must not touch the filesystem"
    print("link modules, imported as .mpy: %d bytes of heap (64-bit unix port)" % r["heap"])


# ---- crypto --------------------------------------------------------------------------------

RFC4231 = [
    ("0b" * 20, b"Hi There".hex(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, "dd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)).hex(), "cd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    ("0c" * 20, b"Test With Truncation".hex(), "a3b6167473100ee06e0c796c2955552b"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("aa" * 131, b"This is a test using a larger than block-size key and a larger than block-size data. The key "
     b"needs to be hashed before being used by the HMAC algorithm.".hex(),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def test_hmac_sha256_rfc4231(mp):
    out = mp(
        """
        import sys, json
        from binascii import hexlify, unhexlify
        from link.crypto import hmac_sha256, Mac
        for line in sys.stdin:
            k, m = json.loads(line)
            k = unhexlify(k); m = unhexlify(m)
            mac = Mac(k)
            buf = bytearray(len(m) + 4); buf[2:2 + len(m)] = m
            print(json.dumps([hexlify(hmac_sha256(k, m)).decode(), hexlify(mac.digest(m)).decode(),
                              hexlify(mac.digest(memoryview(buf)[2:2 + len(m)])).decode(),
                              hexlify(mac.digest(m)).decode()]))
        """,
        stdin="".join(json.dumps([k, m]) + "\n" for k, m, _ in RFC4231),
    )
    got = lines(out)
    assert len(got) == len(RFC4231)
    for (_, _, want), results in zip(RFC4231, got):
        for r in results:  # plain, precomputed pads, from a memoryview slice, Mac reused
            assert r.startswith(want)


def test_hmac_and_key_derivation_match_cpython(mp):
    rnd = random.Random(4231)
    cases = [(rnd.randbytes(rnd.choice([0, 1, 31, 32, 63, 64, 65, 200])), rnd.randbytes(rnd.randint(0, 300)))
             for _ in range(60)]
    out = mp(
        """
        import sys, json
        from binascii import hexlify, unhexlify
        from link.crypto import hmac_sha256, derive
        for line in sys.stdin:
            k, m = json.loads(line)
            k = unhexlify(k); m = unhexlify(m)
            r = [hexlify(hmac_sha256(k, m)).decode()]
            if len(k) == 32:
                e, a = derive(k)
                r += [hexlify(e).decode(), hexlify(a).decode()]
            print(json.dumps(r))
        """,
        stdin="".join(json.dumps([k.hex(), m.hex()]) + "\n" for k, m in cases),
    )
    got = lines(out)
    assert len(got) == len(cases)
    for (k, m), r in zip(cases, got):
        assert r[0] == hmac.digest(k, m, "sha256").hex()
        if len(k) == 32:
            assert r[1:] == [x.hex() for x in ref_keys(k)]


def test_aes_ctr_matches_cryptography(mp):
    rnd = random.Random(38)
    cases = []
    for n in [0, 1, 15, 16, 17, 32, 33, 100, 229, 250]:
        cases.append(
            (rnd.randbytes(32), bytes(rnd.choice(NODE_CHARS) for _ in range(rnd.randint(1, 16))), rnd.randint(0, 1),
             rnd.choice([1, 2**32 - 1, rnd.randint(1, 2**32 - 1)]), rnd.randbytes(n))
        )
    out = mp(
        """
        import sys, json
        from binascii import hexlify, unhexlify
        from link.crypto import LinkKeys
        keys = None
        for line in sys.stdin:
            k, node, down, c, data = json.loads(line)
            keys = LinkKeys(unhexlify(k))
            buf = bytearray(unhexlify(data))
            keys.ctr(node.encode(), down, c, buf)
            enc = hexlify(buf).decode()
            keys.ctr(node.encode(), down, c, memoryview(buf))   # CTR twice: the plaintext again
            print(json.dumps([enc, hexlify(buf).decode() == data]))
        """,
        stdin="".join(json.dumps([k.hex(), nd.decode(), d, c, x.hex()]) + "\n" for k, nd, d, c, x in cases),
    )
    got = lines(out)
    assert len(got) == len(cases)
    for (k, node, down, c, data), (enc, back) in zip(cases, got):
        assert enc == ref_ctr(ref_keys(k)[0], node, down, c, data).hex()
        assert back


def test_link_keys_rejects_wrong_key_size(mp):
    out = mp(
        """
        from link.crypto import LinkKeys
        for n in (0, 16, 31, 33):
            try:
                LinkKeys(bytes(n)); print("accepted", n)
            except ValueError as e:
                print("ValueError")
        """
    )
    assert out.split() == ["ValueError"] * 4


# ---- frames --------------------------------------------------------------------------------

SEAL_SCRIPT = """
import sys, json, gc
from binascii import hexlify, unhexlify
from link import frame, serial
from link.crypto import LinkKeys
buf = bytearray(frame.MAX_FRAME)
out = bytearray(serial.WIRE_MAX)
for line in sys.stdin:
    v = json.loads(line)
    keys = LinkKeys(unhexlify(v["key"]))
    node = v["node"].encode()
    payload = unhexlify(v["payload"])
    n = frame.seal(buf, keys, v["kind"], v["flags"], v["role"], node, v["counter"], v["ts"], payload)
    fr = memoryview(buf)[0:n]
    w = serial.wire(fr, out)
    r = [hexlify(fr).decode(), hexlify(memoryview(out)[0:w]).decode(), hexlify(payload).decode() == v["payload"]]
    n2 = frame.seal(memoryview(out)[serial.FRAME_OFFSET:], keys, v["kind"], v["flags"], v["role"], node,
                    v["counter"], v["ts"], payload)
    r.append(hexlify(memoryview(out)[0:serial.wrap(out, n2)]).decode())
    print(json.dumps(r))
    gc.collect()
"""


def test_seal_and_wire_match_the_spec_reference(mp):
    cases = random_cases(1, 150)
    got = lines(mp(SEAL_SCRIPT, stdin="".join(json.dumps(c) + "\n" for c in cases)))
    assert len(got) == len(cases)
    for c, (fr, wire, payload_untouched, wire_inplace) in zip(cases, got):
        want = ref_frame(bytes.fromhex(c["key"]), c["kind"], c["flags"], c["role"], c["node"].encode(), c["counter"],
                         c["ts"], bytes.fromhex(c["payload"]))
        assert fr == want.hex(), c
        assert wire == ref_wire(want).hex(), c
        assert wire_inplace == wire
        assert payload_untouched, "seal must not encrypt the caller's payload in place"


OPEN_SCRIPT = """
import sys, json, gc
from binascii import unhexlify
from link import frame
from link.crypto import LinkKeys
from link.replay import Window
NAMES = ("ok", "bad_version", "bad_length", "bad_crc", "bad_tag", "unknown_node", "replayed", "too_large", "malformed")
scratch = bytearray(frame.MAX_FRAME)
for line in sys.stdin:
    v = json.loads(line)
    keys = LinkKeys(unhexlify(v["key"]))
    entry = (keys, v["role"], Window(*v["window"]) if v.get("window") else None)
    node = v["node"].encode()
    lookup = lambda nid: entry if nid == node else None
    data = unhexlify(v["frame"])
    rc, f = frame.open(data, lookup, v.get("down", 1), None, scratch if v.get("scratch") else None)
    r = {"rc": NAMES[rc]}
    if f:
        r.update(body=f.payload, kind=f.kind, flags=f.flags, role=f.role, node=f.node.decode(), counter=f.counter,
                 ts=f.ts, verdict=f.verdict)
    print(json.dumps(r))
    gc.collect()
"""


def _open_case(c: dict, **over) -> dict:
    c = dict(c, **over)
    if "frame" not in over:
        c["frame"] = ref_frame(bytes.fromhex(c["key"]), c["kind"], c["flags"], c["role"], c["node"].encode(),
                               c["counter"], c["ts"], bytes.fromhex(c["payload"])).hex()
    return c


def test_open_decodes_reference_downlink_frames(mp):
    cases = [_open_case(c, scratch=i % 2) for i, c in enumerate(random_cases(2, 120)) if c["flags"] & 1]
    got = lines(mp(OPEN_SCRIPT, stdin="".join(json.dumps(c) + "\n" for c in cases)))
    assert len(got) == len(cases)
    for c, r in zip(cases, got):
        payload = bytes.fromhex(c["payload"])
        assert r["rc"] == "ok", c
        assert r["body"] == (json.loads(payload) if payload else {})
        assert [r[k] for k in ("kind", "flags", "role", "node", "counter", "ts", "verdict")] == [
            c["kind"], c["flags"], c["role"], c["node"], c["counter"], c["ts"], 0]


def test_open_rejections_in_spec_order(mp):
    key = bytes(range(32))
    base = {"key": key.hex(), "kind": 5, "flags": 1, "role": 2, "node": "lamp-7", "counter": 9, "ts": 1795880000,
            "payload": b'{"id":7,"op":"lamp.level","a":{"level":40}}'.hex()}
    good = bytes.fromhex(_open_case(base)["frame"])

    def raw(kind=5, flags=1, role=2, node=b"lamp-7", counter=9, payload=b"{}", k=key):
        return ref_frame(k, kind, flags, role, node, counter, 1795880000, payload).hex()

    flipped = bytearray(good)
    flipped[-1] ^= 1
    cases = {
        "ok": _open_case(base),
        "ok-dup-window": _open_case(base, window=[9, 1]),
        "too_large-before-all": _open_case(base, frame="02" * 251),
        "bad_length-empty": _open_case(base, frame=""),
        "bad_version": _open_case(base, frame="02" + good.hex()[2:]),
        "bad_length-short": _open_case(base, frame=good[:21].hex()),
        "bad_length-overrun": _open_case(base, frame=(good[:4] + b"\x10" + good[5:30]).hex()),
        "malformed-kind-before-tag": _open_case(base, frame=(good[:1] + b"\x09" + good[2:]).hex()),
        "malformed-flag-before-tag": _open_case(base, frame=(good[:2] + b"\x41" + good[3:]).hex()),
        "malformed-id-before-lookup": _open_case(base, frame=(good[:5] + b"lamp 7" + good[11:]).hex()),
        "unknown_node-role": _open_case(base, frame=raw(role=1)),
        "unknown_node-other-node": _open_case(base, frame=raw(node=b"lamp-8")),
        "bad_tag": _open_case(base, frame=bytes(flipped).hex()),
        "bad_tag-wrong-key": _open_case(base, frame=raw(k=bytes(32))),
        "replayed-counter-0": _open_case(base, frame=raw(counter=0)),
        "replayed-uplink-to-node": _open_case(base, frame=raw(kind=2, flags=0)),
        "replayed-uplink-kind-sent-down": _open_case(base, frame=raw(kind=2, flags=1)),
        "replayed-window-before-payload": _open_case(base, frame=raw(payload=b"nope"), window=[100, 1]),
        "malformed-payload": _open_case(base, frame=raw(payload=b"nope")),
        "malformed-array": _open_case(base, frame=raw(payload=b"[1]")),
        "malformed-utf8": _open_case(base, frame=raw(payload=b'{"a":"\xff"}')),
        "ok-empty-payload": _open_case(base, frame=raw(kind=7, payload=b"")),
        "ok-gateway-side": _open_case(base, frame=raw(kind=2, flags=0), down=0),
    }
    got = lines(mp(OPEN_SCRIPT, stdin="".join(json.dumps(c) + "\n" for c in cases.values())))
    assert len(got) == len(cases)
    for name, r in zip(cases, got):
        want = name.split("-")[0]
        assert r["rc"] == want, (name, r)
    results = dict(zip(cases, got))
    assert results["ok-dup-window"]["verdict"] == 1
    assert results["ok-empty-payload"]["body"] == {}


def test_open_topic_check(mp):
    out = mp(
        """
        from link import frame
        from link.crypto import LinkKeys
        k = LinkKeys(bytes(32))
        buf = bytearray(250)
        n = frame.seal(buf, k, frame.ACK, frame.DOWN, frame.BIN, b"bin-1", 3, 0, b'{"c":1,"r":0}')
        look = lambda nid: (k, frame.BIN, None) if nid == b"bin-1" else None
        print(frame.open(buf[:n], look, 1, b"bin-1")[0], frame.open(buf[:n], look, 1, b"bin-2")[0])
        """
    )
    assert out.split() == ["0", "8"]


def test_seal_refuses_what_no_receiver_accepts(mp):
    out = mp(
        """
        from link import frame
        from link.crypto import LinkKeys
        k = LinkKeys(bytes(32))
        buf = bytearray(300)
        def t(kind=2, flags=0, role=1, node=b"bin-1", counter=1, ts=0, payload=b"{}"):
            try:
                return frame.seal(buf, k, kind, flags, role, node, counter, ts, payload)
            except ValueError:
                return "ValueError"
        print(t(payload=b"x" * (250 - 21 - 5)), t(payload=b"x" * (250 - 21 - 4)))
        print(t(node=b""), t(node=b"a" * 17), t(node=b"bin 1"), t(node=b"a" * 16))
        print(t(counter=0), t(counter=2**32), t(counter=2**32 - 1), t(ts=2**32), t(ts=-1))
        print(t(kind=0), t(kind=9), t(role=4), t(flags=4), t(flags=1), t(kind=4), t(kind=7, flags=1))
        """
    )
    assert out.split("\n")[:4] == [
        "250 ValueError",
        "ValueError ValueError ValueError 39",
        "ValueError ValueError 28 ValueError ValueError",
        "ValueError ValueError ValueError ValueError ValueError ValueError 28",
    ]


# ---- serial --------------------------------------------------------------------------------


def test_crc16_ccitt_false(mp):
    rnd = random.Random(16)
    data = [rnd.randbytes(rnd.randint(0, 300)) for _ in range(30)]
    out = mp(
        """
        import sys
        from binascii import unhexlify
        from link.serial import crc16
        print(hex(crc16(b"123456789")), crc16(b""))
        print(crc16(b"56789", crc16(b"1234")) == 0x29B1)
        for line in sys.stdin:
            print(crc16(unhexlify(line.strip())))
        """,
        stdin="".join(d.hex() + "\n" for d in data),
    )
    first, cont, *rest = out.splitlines()
    assert first == "0x29b1 65535"
    assert cont == "True"
    assert [int(x) for x in rest] == [ref_crc(d) for d in data]


WIKIPEDIA_COBS = [
    ("00", "0101"),
    ("0000", "010101"),
    ("001100", "01021101"),
    ("11220033", "0311220233"),
    ("11223344", "0511223344"),
    ("11000000", "0211010101"),
    (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
    (bytes(range(0, 255)).hex(), "01ff" + bytes(range(1, 255)).hex()),
    (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02ff"),
    (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "0101"),
    (bytes(range(3, 256)).hex() + "0001", "fe" + bytes(range(3, 256)).hex() + "0201"),
]


def test_cobs_wikipedia_examples_and_roundtrip(mp):
    rnd = random.Random(1999)
    extra = [bytes(rnd.choice([0, 0, 1, 2, 255, rnd.randint(0, 255)]) for _ in range(rnd.randint(0, 600)))
             for _ in range(40)]
    extra += [b"\x01" * 253, b"\x01" * 508, b"\x01" * 509, b"", b"\x00" * 300]
    cases = [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in WIKIPEDIA_COBS] + [(d, ref_cobs(d)) for d in extra]
    out = mp(
        """
        import sys, json
        from binascii import hexlify, unhexlify
        from link.serial import cobs_encode, cobs_decode
        for line in sys.stdin:
            src = unhexlify(line.strip())
            dst = bytearray(len(src) + len(src) // 254 + 2)
            n = cobs_encode(src, len(src), dst, 0)
            enc = bytes(dst[0:n])
            back = bytearray(enc)
            m = cobs_decode(back, n)
            print(json.dumps([hexlify(enc).decode(), hexlify(back[0:m]).decode() if m >= 0 else m]))
        """,
        stdin="".join(a.hex() + "\n" for a, _ in cases),
    )
    got = lines(out)
    assert len(got) == len(cases)
    for (src, want), (enc, back) in zip(cases, got):
        assert enc == want.hex(), src.hex()
        assert back == src.hex()


def test_cobs_decode_refuses_bad_structure(mp):
    out = mp(
        """
        from link.serial import cobs_decode
        for b in (b"\\x05\\x01\\x02", b"\\x02\\x00", b"\\x00", b"\\x03\\x11\\x22\\x09"):
            print(cobs_decode(bytearray(b), len(b)))
        """
    )
    assert out.split() == ["-1"] * 4


def _wire_of(counter: int, payload: bytes = b'{"n":1}', node=b"bin-0001") -> bytes:
    return ref_wire(ref_frame(bytes(32), 2, 0, 1, node, counter, 1795880000, payload))


DECODE_SCRIPT = """
import sys, json
from binascii import hexlify, unhexlify
from link.serial import Decoder
chunk = int(sys.argv[1])
dec = Decoder()
data = unhexlify(sys.stdin.read().strip())
out = []
for i in range(0, len(data), chunk or len(data) or 1):
    for rc, fr in dec.feed(memoryview(data)[i:i + (chunk or len(data))]):
        out.append([rc, hexlify(fr).decode() if fr is not None else None])
print(json.dumps(out))
"""


def _decode(mp, data: bytes, chunk: int = 0) -> list:
    return lines(mp(DECODE_SCRIPT, str(chunk), stdin=data.hex()))[0]


@pytest.mark.parametrize("chunk", [0, 1, 7, 64])
def test_decoder_resyncs_after_a_256_byte_garbage_burst(mp, chunk):
    rnd = random.Random(256)
    burst = bytes(rnd.randint(1, 255) for _ in range(256))  # no delimiter anywhere
    f1, f2 = _wire_of(1), _wire_of(2)
    got = _decode(mp, burst + f1 + f2, chunk)
    frame1 = ref_frame(bytes(32), 2, 0, 1, b"bin-0001", 1, 1795880000, b'{"n":1}')
    assert [rc for rc, _ in got] == [7, 0, 0], "too_large exactly once, then both frames"
    assert got[1][1] == frame1.hex()


@pytest.mark.parametrize("chunk", [0, 1, 5])
def test_decoder_resyncs_after_a_cut_frame(mp, chunk):
    f1, f2, f3 = _wire_of(1), _wire_of(2), _wire_of(3)
    stream = f1[:20] + f2 + f3[: len(f3) // 2] + b"\x00\x00" + f1 + b"\x00\x00\x00"
    got = _decode(mp, stream, chunk)
    assert [rc for rc, _ in got] == [3, 0, 3, 0]
    assert got[1][1] == ref_frame(bytes(32), 2, 0, 1, b"bin-0001", 2, 1795880000, b'{"n":1}').hex()


def test_decoder_garbage_with_zeros_and_noise(mp):
    rnd = random.Random(3)
    garbage = rnd.randbytes(300)
    f = _wire_of(4)
    noisy = bytearray(f)
    noisy[10] ^= 0x40
    assert noisy[10] != 0
    got = _decode(mp, garbage + f + bytes(noisy) + f, 3)
    rcs = [rc for rc, _ in got]
    assert rcs[-3:] == [0, 3, 0]
    assert set(rcs[:-3]) <= {3, 7}, "garbage only ever yields bad_crc or too_large"


def test_decoder_wire_limit(mp):
    # the largest frame (250 bytes) makes a 255-byte wire frame, which must pass
    room = 250 - 21 - 8 - len(b'{"p":""}')
    big = _wire_of(5, b'{"p":"' + b"x" * room + b'"}')
    assert len(big) == 255
    # 254 body bytes still fit the 256-byte wire limit (bad CRC: they are garbage);
    # 255 body bytes do not: too_large, once, and the next frame still decodes
    got = _decode(mp, big + b"\x01" * 254 + b"\x00" + b"\x01" * 255 + big)
    assert [rc for rc, _ in got] == [0, 3, 7, 0]
    assert len(bytes.fromhex(got[0][1])) == 250


def test_decoder_ignores_empty_frames(mp):
    assert _decode(mp, b"\x00" * 10) == []
    assert [rc for rc, _ in _decode(mp, b"\x00" * 5 + _wire_of(1) + b"\x00" * 5)] == [0]


def test_wire_refuses_an_oversize_frame(mp):
    out = mp(
        """
        from link import serial
        out = bytearray(300)
        try:
            serial.wire(bytes(251), out); print("accepted")
        except ValueError:
            print("ValueError")
        print(serial.wire(b"\\x01" * 250, out))
        """
    )
    assert out.split() == ["ValueError", "255"]


# ---- replay window and counter reservation --------------------------------------------------


def test_window_verdicts(mp):
    out = mp(
        """
        from link.replay import Window
        w = Window()
        r = [w.check(0), w.check(1)]
        for c in (5, 3, 70, 7, 70):
            r.append(w.check(c)); w.update(c)
        r += [w.check(7), w.check(6), w.check(69), w.check(71), w.last, w.bitmap == (1 | 1 << 63)]
        w.update(70 + 64)  # a jump of exactly 64 forgets everything
        r += [w.bitmap, w.check(70), w.check(71)]
        w.update(200); w.update(199); w.update(137)
        r += [w.bitmap == (1 | 2 | 1 << 63), w.check(137), w.check(136)]
        w.update(201)  # bit 63 slides out of the 64-bit map
        r += [w.bitmap == 7, w.check(137)]
        w.update(12)  # replayed: ignored
        r += [w.last, w.bitmap]
        print(r)
        """
    )
    assert out.strip() == "[6, 0, 0, 0, 0, 0, 1, 1, 6, 0, 0, 70, True, 1, 6, 0, True, 1, 6, True, 6, 201, 7]"


def test_window_save_and_load(mp):
    out = mp(
        """
        from link.replay import Window
        print(Window.load("w.bin").last)
        w = Window()
        for c in (2**32 - 5, 2**32 - 1, 2**32 - 3):
            w.update(c)
        w.save("w.bin")
        v = Window.load("w.bin")
        print(v.last == 2**32 - 1, v.bitmap == w.bitmap, v.check(2**32 - 3), v.check(2**32 - 2))
        """
    )
    assert out.split("\n")[:2] == ["0", "True True 1 0"]


def test_reservation_reboot_skips_ahead_and_never_reuses(mp, tmp_path):
    out = mp(
        """
        import json, os
        from link.replay import Reservation
        used = []
        writes = []
        # reboot after these many frames each time (0: a reboot before sending anything)
        for run in (3, 0, 256, 255, 257, 1, 600, 2):
            r = Reservation("up.ctr")
            first = r.peek()
            for _ in range(run):
                used.append(r.next())
            writes.append(first)
        print(json.dumps({"used": used, "starts": writes, "files": sorted(os.listdir())}))
        """
    )
    r = lines(out)[0]
    used = r["used"]
    assert used[:3] == [1, 2, 3]
    assert all(b > a for a, b in zip(used, used[1:])), "counters strictly increase across reboots"
    assert len(set(used)) == len(used)
    # every reboot starts at the stored reservation: at most 256 values skipped, never fewer
    # than the ones already used
    starts = r["starts"]
    assert starts == [1, 257, 257, 513, 769, 1281, 1537, 2305]
    ends = [3, 3, 512, 767, 1025, 1281, 2136]  # the last counter used before each reboot
    for start, end in zip(starts[1:], ends):
        assert end < start <= end + 257
    assert r["files"] == ["t_script.py", "up.ctr"], "no temporary file left behind"


def test_reservation_power_loss_leaves_a_stray_temp_file(mp):
    out = mp(
        """
        import json, os
        from link.replay import Reservation, _encode
        res = {}
        def fresh():
            for f in ("c", "c.tmp"):
                try: os.remove(f)
                except OSError: pass
        def put(name, data):
            with open(name, "wb") as f: f.write(data)
        # power lost while the new reservation (257 + 256) was being written: torn temp file
        fresh(); r = Reservation("c"); [r.next() for _ in range(256)]
        put("c.tmp", _encode(">Q", 513)[0:5])
        res["torn_tmp"] = Reservation("c").next()
        # power lost after the temp file was written, before the rename
        fresh(); r = Reservation("c"); [r.next() for _ in range(256)]
        put("c.tmp", _encode(">Q", 513))
        res["whole_tmp"] = Reservation("c").next()
        # FAT: old file removed, rename not done yet
        fresh(); put("c.tmp", _encode(">Q", 769))
        res["tmp_only"] = Reservation("c").next()
        # first boot interrupted while writing the very first reservation
        fresh(); put("c.tmp", b"\\x00\\x01")
        res["first_boot_torn"] = Reservation("c").next()
        # the counter file itself torn, nothing to stand in: refuse rather than restart at 1
        fresh(); put("c", _encode(">Q", 513)[0:9])
        try:
            Reservation("c"); res["torn_main"] = "accepted"
        except ValueError:
            res["torn_main"] = "ValueError"
        # after recovering, the stray file is gone again and counting goes on
        fresh(); put("c", _encode(">Q", 257)); put("c.tmp", b"junk")
        r = Reservation("c"); res["after"] = [r.next(), r.next()]; res["files"] = sorted(os.listdir())
        print(json.dumps(res))
        """
    )
    r = lines(out)[0]
    assert r["torn_tmp"] == 257  # the stored block: 257 was never sent
    assert r["whole_tmp"] == 513  # skips further ahead, still safe
    assert r["tmp_only"] == 769
    assert r["first_boot_torn"] == 1
    assert r["torn_main"] == "ValueError"
    assert r["after"] == [257, 258]
    assert r["files"] == ["c", "t_script.py"]


def test_reservation_end_of_counter_space(mp):
    out = mp(
        """
        from link.replay import Reservation, _encode
        with open("c", "wb") as f:
            f.write(_encode(">Q", 2**32 - 2))
        r = Reservation("c")
        a = r.next(); b = r.next()
        try:
            r.next(); print("accepted")
        except ValueError:
            print(a == 2**32 - 2, b == 2**32 - 1, "ValueError")
        try:
            Reservation("c").next(); print("accepted")
        except ValueError:
            print("ValueError")
        """
    )
    assert out.split() == ["True", "True", "ValueError", "ValueError"]


# ---- memory --------------------------------------------------------------------------------


def test_heap_of_seal_and_wire_for_a_200_byte_payload(mp):
    out = mp(
        """
        import gc, json, micropython
        from link import frame, serial
        from link.crypto import LinkKeys
        keys = LinkKeys(b"\\x42" * 32)
        out = bytearray(serial.WIRE_MAX)
        buf = bytearray(frame.MAX_FRAME)
        payload = b'{"p":"' + b"x" * 192 + b'"}'
        assert len(payload) == 200
        wbuf = memoryview(out)[serial.FRAME_OFFSET:]
        frame.seal(buf, keys, frame.TELEMETRY, 0, frame.BIN, b"bin-0001", 1, 0, b"{}")  # caches the id hash
        res = {}
        for label in ("seal_wire", "seal_wrap", "seal_wire_again"):
            gc.collect()
            gc.disable()
            a0 = gc.mem_alloc()
            if label == "seal_wrap":
                n = serial.wrap(out, frame.seal(wbuf, keys, frame.TELEMETRY, 0, frame.BIN, b"bin-0001", 7, 0, payload))
            else:
                n = serial.wire(memoryview(buf)[0:frame.seal(buf, keys, frame.TELEMETRY, 0, frame.BIN, b"bin-0001",
                                                             7, 0, payload)], out)
            res[label] = gc.mem_alloc() - a0
            gc.enable()
        res["wire_len"] = n
        # and the whole thing repeated 500 times stays in a 64 KB (32-bit) heap with gc on
        gc.collect()
        low = gc.mem_free()
        for c in range(1, 501):
            serial.wrap(out, frame.seal(wbuf, keys, frame.TELEMETRY, 0, frame.BIN, b"bin-0001", c, 0, payload))
        res["free_before"] = low
        print(json.dumps(res))
        """
    )
    r = lines(out)[0]
    print("seal+wire of a 200-byte payload: %(seal_wire)d bytes allocated; seal in place + wrap: %(seal_wrap)d "
          "(64-bit unix port, gc off: an upper bound of the peak)" % r)
    assert r["wire_len"] == 234
    # two SHA-256 states and digests plus a few memoryview objects; nothing per byte: the
    # figure must not grow with the payload (a 200-byte payload copied would show as 200+)
    assert r["seal_wire"] <= 1024, r
    assert r["seal_wrap"] <= 1024, r
    assert r["seal_wire_again"] == r["seal_wire"]


def test_heap_does_not_grow_with_payload_size(mp):
    out = mp(
        """
        import gc, json
        from link import frame, serial
        from link.crypto import LinkKeys
        keys = LinkKeys(b"\\x42" * 32)
        out = bytearray(serial.WIRE_MAX)
        wbuf = memoryview(out)[serial.FRAME_OFFSET:]
        frame.seal(wbuf, keys, frame.TELEMETRY, 0, frame.BIN, b"bin-0001", 1, 0, b"{}")  # caches the id hash
        res = []
        for size in (8, 64, 200, 221):
            payload = b'{"p":"' + b"x" * (size - 8) + b'"}'
            gc.collect(); gc.disable(); a0 = gc.mem_alloc()
            serial.wrap(out, frame.seal(wbuf, keys, frame.TELEMETRY, 0, frame.BIN, b"bin-0001", 7, 0, payload))
            res.append(gc.mem_alloc() - a0)
            gc.enable()
        print(json.dumps(res))
        """
    )
    sizes = lines(out)[0]
    assert max(sizes) == min(sizes), sizes


def test_bench_script_reports_figures(link_mpy, tmp_path):
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % link_mpy)
    p = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=" + HEAP, str(MP_SCRIPTS / "bench_link.py"), "50", "200"],
        cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print("bench_link.py:", json.dumps(r, sort_keys=True))
    assert r["mpy"] is True
    assert r["frames"] == 50 and r["payload"] == 200 and r["frame_bytes"] == 229 and r["wire_bytes"] == 234
    for k in ("us_per_seal", "us_per_seal_wire", "us_per_open", "heap_seal_wire", "heap_open", "heap_static"):
        assert isinstance(r[k], int) and r[k] > 0, k
