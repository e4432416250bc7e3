"""The gateway's own MQTT client of the local broker (linli.node_mqtt.NodeBroker).

Against a real Mosquitto: frames in order, bad topics counted, replies on the down topic, a
broker restart, login and ACL. Against a scripted fake broker for what Mosquitto will not do on
demand: packets cut across reads, a broker that falls silent, a refused subscription."""

import asyncio
import time
from types import SimpleNamespace

import pytest

from harness.mosquitto import MqttProbe, free_port
from linli import mqtt_wire as wire
from linli.config import BrokerSection
from linli.node_mqtt import UP, NodeBroker

pytestmark = pytest.mark.mosquitto


async def until(pred, timeout=10.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        await asyncio.sleep(0.02)


def in_thread(fn, *args):
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Recorder:
    def __init__(self):
        self.frames = []

    def __call__(self, raw, node, reply):
        self.frames.append((node, raw, reply))


def test_frames_arrive_in_order_bad_topics_are_counted_and_replies_reach_the_node(mosquitto_broker):
    broker = mosquitto_broker
    rec = Recorder()

    def publish_all(probe):
        for i in range(300):
            probe.client.publish("linli/node/bin-1/up", b"frame-%d" % i, qos=1)
        probe.publish("linli/node/not an id/up", b"x", qos=1)
        probe.publish("linli/node/a-node-id-much-too-long/up", b"x", qos=1)
        probe.publish("linli/node/bin-2/up", b"last", qos=1)

    async def go():
        nb = NodeBroker(BrokerSection(port=broker.port, keepalive=5), rec)
        await nb.start()
        await until(nb.connected.is_set, what="the connection")
        with broker.client("bin-1", protocol=4) as node:
            node.subscribe("linli/node/bin-1/down", qos=1)
            await in_thread(publish_all, node)
            await until(lambda: len(rec.frames) == 301, what="301 frames")
            reply = rec.frames[0][2]
            await reply(b"\x01ack")
            msg = await in_thread(node.get)
        await nb.stop()
        return nb, msg

    nb, msg = asyncio.run(go())
    assert [raw for node, raw, _ in rec.frames[:300]] == [b"frame-%d" % i for i in range(300)]
    assert {node for node, _, _ in rec.frames[:300]} == {"bin-1"}
    assert rec.frames[300][:2] == ("bin-2", b"last")
    assert nb.counts["bad_topic"] == 2 and nb.counts["frames"] == 301
    assert (msg.topic, msg.payload, msg.qos) == ("linli/node/bin-1/down", b"\x01ack", 1)
    assert not nb.connected.is_set()


def test_reconnects_after_a_broker_restart_and_refuses_replies_meanwhile(mosquitto_factory):
    broker = mosquitto_factory()
    rec = Recorder()

    async def go():
        nb = NodeBroker(BrokerSection(port=broker.port), rec)
        await nb.start()
        await until(nb.connected.is_set)
        with broker.client("n1", protocol=4) as node:
            await in_thread(node.publish, "linli/node/n1/up", b"before", 1)
        await until(lambda: rec.frames)
        reply = rec.frames[0][2]
        await in_thread(broker.stop)
        await until(lambda: not nb.connected.is_set(), what="the loss to be noticed")
        with pytest.raises(ConnectionError, match="not connected"):
            await reply(b"ack")
        await in_thread(broker.start)
        await until(nb.connected.is_set, timeout=15, what="the reconnect")
        with broker.client("n1", protocol=4) as node:
            await in_thread(node.publish, "linli/node/n1/up", b"after", 1)
        await until(lambda: len(rec.frames) == 2)
        await nb.stop()
        return nb

    nb = asyncio.run(go())
    assert [raw for _, raw, _ in rec.frames] == [b"before", b"after"]
    assert nb.counts["connects"] == 2 and nb.counts["disconnects"] == 2


def test_login_and_acl(mosquitto_factory):
    acl = "user gw\ntopic read linli/node/+/up\ntopic write linli/node/+/down\n\nuser bin-1\ntopic write linli/node/bin-1/up\n"
    broker = mosquitto_factory(allow_anonymous=False, users={"gw": "gw-pass", "bin-1": "node-pass"}, acl=acl)
    rec = Recorder()

    async def go(password):
        nb = NodeBroker(BrokerSection(port=broker.port, username="gw", password=password), rec)
        await nb.start()
        await until(lambda: nb.connected.is_set() or nb.last_error, what="a connection or an error")
        if nb.connected.is_set():
            with broker.client("bin-1", username="bin-1", password="node-pass", protocol=4) as node:
                await in_thread(node.publish, "linli/node/bin-1/up", b"hello", 1)
            await until(lambda: rec.frames)
        await nb.stop()
        return nb

    good = asyncio.run(go("gw-pass"))
    assert good.counts["connects"] == 1 and [raw for _, raw, _ in rec.frames] == [b"hello"]
    bad = asyncio.run(go("wrong"))
    assert bad.counts["connects"] == 0
    assert "refused the connection: not authorised" in bad.last_error and "local.username/password" in bad.last_error


class FakeBroker:
    """A scripted MQTT 3.1.1 broker: answers CONNECT and SUBSCRIBE (granting ``granted``),
    then runs ``script(reader, writer)`` for each connection; records what the client sent."""

    def __init__(self, script=None, granted=1, pong=True):
        self.script = script
        self.granted = granted
        self.pong = pong
        self.connections = 0
        self.received = []  # (first byte, body) after the handshake
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _packets(self, reader):
        rest = b""
        while True:
            data = await reader.read(4096)
            if not data:
                return
            packets, rest = wire.split(rest + data)
            for p in packets:
                yield p

    async def _serve(self, reader, writer):
        self.connections += 1
        packets = self._packets(reader)
        b0, body = await packets.__anext__()
        assert b0 == wire.CONNECT and body[6] == 4  # protocol level 4: 3.1.1
        writer.write(b"\x20\x02\x00\x00")
        b0, body = await packets.__anext__()
        assert b0 == wire.SUBSCRIBE and body[2:].startswith(wire.field(UP.encode()))
        writer.write(bytes((wire.SUBACK, 3)) + body[:2] + bytes((self.granted,)))
        await writer.drain()
        if self.script:
            asyncio.ensure_future(self.script(writer))
        try:
            async for b0, body in packets:
                self.received.append((b0, body))
                if b0 == 0xC0 and self.pong:
                    writer.write(b"\xd0\x00")
        finally:
            writer.close()

    def close(self):
        self.server.close()


def test_packets_cut_across_reads_are_put_together_and_each_publish_is_acked():
    sent = [("n%d" % (i % 3), bytes(range(i % 120)) * 2) for i in range(40)]
    # One that needs a two-byte remaining length (the biggest a link frame can be is 250 bytes).
    sent.append(("big", b"B" * 250))
    stream = b"".join(wire.publish(b"linli/node/%s/up" % node.encode(), raw, i + 1) for i, (node, raw) in enumerate(sent))

    async def script(writer):
        # Dribbled in growing pieces: a byte at a time first, so lengths and headers are cut too.
        pos, i, sizes = 0, 0, [1, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610]
        while pos < len(stream):
            n = sizes[i % len(sizes)]
            writer.write(stream[pos : pos + n])
            await writer.drain()
            await asyncio.sleep(0.001)
            pos += n
            i += 1

    rec = Recorder()

    async def go():
        fake = await FakeBroker(script).start()
        nb = NodeBroker(BrokerSection(port=fake.port, keepalive=30), rec)
        await nb.start()
        await until(lambda: len(rec.frames) == 41, what="41 frames")
        await until(lambda: len([p for p in fake.received if p[0] == wire.PUBACK]) == 41, what="41 PUBACKs")
        await nb.stop()
        fake.close()
        return fake

    fake = asyncio.run(go())
    assert [(node, raw) for node, raw, _ in rec.frames] == sent
    assert [body for b0, body in fake.received if b0 == wire.PUBACK] == [(i + 1).to_bytes(2, "big") for i in range(41)]


def test_keepalive_pings_and_a_silent_broker_is_dropped_and_reconnected(caplog):
    async def go(pong):
        fake = await FakeBroker(pong=pong).start()
        nb = NodeBroker(BrokerSection(port=fake.port, keepalive=1), Recorder())
        await nb.start()
        await until(nb.connected.is_set)
        await asyncio.sleep(3.0)
        await nb.stop()
        fake.close()
        return nb, fake

    nb, fake = asyncio.run(go(pong=True))
    assert nb.counts["pings"] >= 2 and sum(1 for b0, _ in fake.received if b0 == 0xC0) >= 2
    assert fake.connections == 1 and nb.counts["connects"] == 1  # the pongs kept it up
    nb, fake = asyncio.run(go(pong=False))
    assert fake.connections >= 2 and nb.counts["disconnects"] >= 1  # silence: dropped, reconnected
    assert "silent for 2 s (keepalive 1 s)" in caplog.text


def test_a_refused_subscription_says_what_to_fix_and_retries():
    async def go():
        fake = await FakeBroker(granted=0x80).start()
        nb = NodeBroker(BrokerSection(port=fake.port, username="gw"), Recorder())
        await nb.start()
        await until(lambda: nb.last_error, what="the error")
        await until(lambda: fake.connections >= 2, timeout=5, what="a retry")
        connected = nb.connected.is_set()
        await nb.stop()
        fake.close()
        return nb, connected

    nb, connected = asyncio.run(go())
    assert not connected and nb.counts["connects"] == 0
    assert "refused the subscription to linli/node/+/up" in nb.last_error and "ACL" in nb.last_error and "'gw'" in nb.last_error


def test_tls_with_a_client_certificate(tmp_path, mosquitto_factory):
    from test_uplink import _pki  # the test CA and certificates

    pki = _pki(tmp_path)
    plain = free_port()
    broker = mosquitto_factory(extra=[
        "cafile %s" % pki["ca"], "certfile %s" % pki["server"], "keyfile %s" % pki["server_key"],
        "require_certificate true", "use_identity_as_username true",
        "listener %d 127.0.0.1" % plain,  # for the test's node
    ])
    rec = Recorder()

    async def go():
        sec = BrokerSection(port=broker.port, tls=True, ca_file=pki["ca"], cert_file=pki["client"], key_file=pki["client_key"])
        nb = NodeBroker(sec, rec)
        await nb.start()
        await until(nb.connected.is_set, what="the TLS connection")
        node = MqttProbe(SimpleNamespace(host="127.0.0.1", port=plain), "bin-1", protocol=4)
        node.connect()
        await in_thread(node.publish, "linli/node/bin-1/up", b"over tls", 1)
        await until(lambda: rec.frames)
        node.close()
        await nb.stop()

    asyncio.run(go())
    assert [(n, raw) for n, raw, _ in rec.frames] == [("bin-1", b"over tls")]


def test_a_full_consumer_pauses_reading_and_no_frame_is_lost(mosquitto_broker):
    """Ingest holds ``backlog()`` frames: at ``high`` the client stops reading (the broker keeps
    the rest), at ``low`` it reads on; every frame arrives once, in order."""
    broker = mosquitto_broker
    rec = Recorder()
    done = [0]  # frames the consumer has finished with

    def publish_all(probe):
        for i in range(400):
            probe.client.publish("linli/node/bin-1/up", b"frame-%d" % i, qos=1)

    async def go():
        nb = NodeBroker(BrokerSection(port=broker.port, keepalive=5), rec, backlog=lambda: len(rec.frames) - done[0], high=50, low=10)
        await nb.start()
        await until(nb.connected.is_set, what="the connection")
        with broker.client("bin-1", protocol=4) as node:
            await in_thread(publish_all, node)
            await until(lambda: nb.counts["paused"] >= 1, what="reading paused")
            await asyncio.sleep(1.0)  # the broker has everything; we hold back
            held = len(rec.frames)
            assert held < 200, held  # bounded by high + the broker's in-flight window, not 400
            while len(rec.frames) < 400:  # the consumer catches up in bursts
                done[0] = len(rec.frames)
                await asyncio.sleep(0.02)
        assert [raw for _, raw, _ in rec.frames] == [b"frame-%d" % i for i in range(400)]
        assert nb.counts["paused"] >= 2
        await nb.stop()

    asyncio.run(go())
