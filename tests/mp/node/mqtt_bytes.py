# MQTT packets of node.mqtt over a fake stream (tests/test_node_mqtt_packets.py).
# Prints one JSON object a line: {"case", "out": hex written, "ret": what the call returned,
# "msgs": [[topic, payload] hex pairs given to on_msg], "err": exception or null}.
import asyncio
import io
import json
from binascii import hexlify, unhexlify

from node.mqtt import MQTT


class Fake:
    """A stream over io.BytesIO, like micropython-lib's umqtt tests. ``chunk`` limits each
    read; ``nones`` makes every other read return None, as a non-blocking socket may."""

    def __init__(self, data=b"", chunk=1 << 20, nones=False):
        self.i = io.BytesIO(data)
        self.o = io.BytesIO()
        self.chunk = chunk
        self.nones = nones
        self._flip = False

    async def readinto(self, buf):
        if self.nones:
            self._flip = not self._flip
            if self._flip:
                return None
        n = min(len(buf), self.chunk)
        data = self.i.read(n)
        buf[0 : len(data)] = data
        return len(data)

    def write(self, buf):
        self.o.write(bytes(buf))

    async def drain(self):
        pass


def h(b):
    return hexlify(bytes(b)).decode()


def plain(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return h(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


async def case(name, fn, data=b"", **kw):
    msgs = []
    m = MQTT(lambda t, p: msgs.append([h(t), h(p)]))
    s = Fake(data, **kw)
    m.attach(s, s)
    ret = err = None
    try:
        ret = await fn(m)
    except Exception as e:
        err = [type(e).__name__, list(e.args)]
    print(json.dumps({"case": name, "out": h(s.o.getvalue()), "ret": plain(ret), "msgs": msgs, "err": err,
                      "unacked": sorted(m.unacked)}))


WILL = (b"linli/node/bin-01/avail", b"offline")
CONNACK_OK = b"\x20\x02\x00\x00"


async def main():
    await case("connect", lambda m: m.connect(b"bin-01", b"bin-01", b"pw", WILL, 60), CONNACK_OK)
    await case("connect_min", lambda m: m.connect(b"c", None, None, None, 30), b"\x20\x02\x01\x00")
    await case("connect_refused", lambda m: m.connect(b"bin-01", b"bin-01", b"bad", WILL, 60), b"\x20\x02\x00\x05")
    await case("connect_not_connack", lambda m: m.connect(b"c", keepalive=5), b"\xd0\x00")
    await case("connect_eof", lambda m: m.connect(b"c", keepalive=5), b"\x20")
    await case("publish_qos0", lambda m: m.publish(b"t", b"hi"))
    await case("publish_qos1_retain", lambda m: m.publish(b"linli/node/bin-01/avail", b"online", 1, True))
    big = bytes(range(200))
    await case("publish_200", lambda m: m.publish(b"linli/node/bin-01/up", memoryview(big), 1))
    huge = bytes(600)  # larger than the packet buffer: header and payload go out separately
    await case("publish_600", lambda m: m.publish(b"x", huge, 0))

    async def two(m):
        a = await m.publish(b"a", b"1", 1)
        b = await m.publish(b"a", b"2", 1)
        return [a, b]

    await case("pids", two)
    await case("subscribe", lambda m: m.subscribe(b"linli/node/bin-01/down", 1))
    await case("ping", lambda m: m.ping())
    await case("disconnect", lambda m: m.disconnect())
    pub1 = b"\x32\x0c\x00\x04down\x12\x34abcd"  # QoS 1, pid 0x1234
    await case("read_publish_qos1", lambda m: m.read(), pub1)
    await case("read_publish_qos1_trickle", lambda m: m.read(), pub1, chunk=1, nones=True)
    await case("read_publish_qos0", lambda m: m.read(), b"\x30\x07\x00\x01tabcd")

    async def acked(m):
        pid = await m.publish(b"t", b"x", 1)
        before = list(m.unacked)
        r = await m.read()
        ok = await m.wait_puback(pid, 10)
        return [before, r, ok]

    await case("read_puback", acked, b"\x40\x02\x00\x01")

    async def not_acked(m):
        pid = await m.publish(b"t", b"x", 1)
        return await m.wait_puback(pid, 50)

    await case("puback_timeout", not_acked)
    await case("read_suback", lambda m: m.read(), b"\x90\x03\x00\x07\x01")
    await case("read_suback_refused", lambda m: m.read(), b"\x90\x03\x00\x07\x80")
    await case("read_pingresp", lambda m: m.read(), b"\xd0\x00")
    # 600-byte PUBLISH (remaining length 0xD8 0x04) is skipped, then a PINGRESP is read.
    long_pub = b"\x30\xd8\x04\x00\x01t" + bytes(597)

    async def skip(m):
        return [await m.read(), await m.read()]

    await case("read_oversize", skip, long_pub + b"\xd0\x00")
    await case("read_eof", lambda m: m.read(), b"")
    await case("read_bad_length", lambda m: m.read(), b"\x30\xff\xff\xff\xff\x01")


asyncio.run(main())
