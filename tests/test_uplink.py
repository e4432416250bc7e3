"""The uplink against a real Mosquitto: QoS 1 in order, broker outages, a SIGKILLed gateway, the
outbox bound while the broker is away, MQTT 5 properties, the 3.1.1 fallback, TLS and login."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from harness.mosquitto import MqttProbe, free_port
from linli.contract import Contract
from linli.errors import ConfigError
from linli.events import new_event
from linli.outbox import Outbox
from linli.uplink import Uplink, UplinkAuthError, UplinkProtocolError, UplinkSettings, UplinkTLSError
from linli.verify import verify_lines

pytestmark = pytest.mark.mosquitto

C = Contract("site-1", "gw-1")
ALL = "linli/v1/site-1/gw-1/#"
EVENTS = "linli/v1/site-1/gw-1/events/#"
# A subscriber that falls behind must not lose QoS 1 messages in the broker's queue.
UNQUEUED = ["max_queued_messages 0"]


CLIENT = ["native"]


@pytest.fixture(autouse=True, params=["native", "paho"])
def client(request):
    """Every uplink test runs on both MQTT clients: our own (the default) and paho-mqtt 2."""
    CLIENT[0] = request.param
    yield request.param
    CLIENT[0] = "native"


def settings(broker, **kw) -> UplinkSettings:
    kw.setdefault("reconnect_min_s", 0.05)
    kw.setdefault("reconnect_max_s", 0.5)
    kw.setdefault("connect_timeout_s", 5.0)
    kw.setdefault("client", CLIENT[0])
    return UplinkSettings(host=broker.host, port=broker.port, **kw)


def tel(i, node):
    return new_event("node.telemetry", node=node, data={"readings": {"i": i}})


def drain(probe, timeout=0.5) -> list:
    out = []
    while True:
        try:
            out.append(probe.get(timeout))
        except queue.Empty:
            return out


def events_of(msgs) -> list[dict]:
    return [json.loads(m.payload) for m in msgs if "/events/" in m.topic]


def check_stream(ces: list[dict], expect_seqs: range) -> None:
    """Nothing lost, duplicates only identical, first copies in order per source, chain intact."""
    by_seq: dict[int, dict] = {}
    for ce in ces:
        if ce["seq"] in by_seq:
            assert ce == by_seq[ce["seq"]], "a duplicate differs from the first copy"
        by_seq.setdefault(ce["seq"], ce)
    assert sorted(by_seq) == list(expect_seqs), "missing: %s" % sorted(set(expect_seqs) - set(by_seq))[:20]
    seen: dict[str, int] = {}
    firsts = set()
    for ce in ces:
        if ce["seq"] in firsts:
            continue
        firsts.add(ce["seq"])
        assert ce["seq"] > seen.get(ce["source"], 0), "out of order for %s" % ce["source"]
        seen[ce["source"]] = ce["seq"]
    report = verify_lines([json.dumps(c) for c in ces])
    assert report.ok, report.to_dict()


async def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_events_arrive_in_order_with_qos1_and_mqtt5_properties(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(extra=UNQUEUED)
    probe = broker.client("backend", protocol=5)
    probe.subscribe(ALL, qos=1)

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        up = Uplink(settings(broker), ob)
        await up.start()
        await up.wait_connected(5)
        assert up.stats.protocol == "5"
        for i in range(0, 600, 30):
            await ob.add([tel(i + j, "n%d" % (j % 4)) for j in range(30)])
        await ob.set_node_state("bin-0001", {"availability": "online", "fill_pct": 42})
        await up.wait_idle(20)
        await asyncio.sleep(0.2)
        await up.stop()
        await ob.close()

    asyncio.run(go())
    msgs = drain(probe)
    probe.close()
    evs = [m for m in msgs if "/events/" in m.topic]
    assert all(m.qos == 1 for m in evs)
    check_stream(events_of(evs), range(1, 601))
    props = dict(evs[0].properties.UserProperty)
    ce = json.loads(evs[0].payload)
    assert props == {"specversion": "1.0", "id": ce["id"], "source": ce["source"], "type": "linli.node.telemetry", "seq": str(ce["seq"])}
    assert evs[0].properties.ContentType.startswith("application/cloudevents+json")
    status = [json.loads(m.payload) for m in msgs if m.topic.endswith("/status")]
    assert [s["state"] for s in status] == ["online", "offline"]
    assert status[0]["protocol"] == "5" and status[-1]["reason"] == "shutdown"
    [state] = [m for m in msgs if m.topic == "linli/v1/site-1/gw-1/nodes/bin-0001/state"]
    assert json.loads(state.payload)["state"] == {"availability": "online", "fill_pct": 42}
    # Retained: a late subscriber gets the status and node state at once.
    late = broker.client("late")
    late.subscribe("linli/v1/site-1/gw-1/+", qos=1)
    late.subscribe("linli/v1/site-1/gw-1/nodes/+/state", qos=1)
    got = {m.topic: json.loads(m.payload) for m in drain(late)}
    late.close()
    assert got["linli/v1/site-1/gw-1/status"]["state"] == "offline"
    assert got["linli/v1/site-1/gw-1/nodes/bin-0001/state"]["node"] == "bin-0001"


def test_broker_outage_under_load_loses_nothing(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(persistence=True, extra=UNQUEUED)
    probes = [broker.client("backend", protocol=5, clean=False)]
    probes[0].subscribe(EVENTS, qos=1)
    got: list = []
    total = 3000

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        up = Uplink(settings(broker), ob)
        await up.start()
        await up.wait_connected(5)

        async def produce():
            for i in range(0, total, 50):
                await ob.add([tel(i + j, "n%d" % (j % 5)) for j in range(50)])
                await asyncio.sleep(0.005)

        producer = asyncio.create_task(produce())
        await _wait(lambda: up.stats.acked > 500)
        got.extend(drain(probes[0], 0.01))
        await asyncio.to_thread(broker.stop)  # graceful: the broker saves queued messages
        probes[0].client.loop_stop()
        await asyncio.sleep(1.0)  # the gateway keeps storing meanwhile
        assert not up.stats.connected
        await asyncio.to_thread(broker.start)
        await up.wait_connected(10)
        probes.append(await asyncio.to_thread(broker.client, "backend", protocol=5, clean=False))
        await producer
        await up.wait_idle(30)
        assert up.stats.connects >= 2
        await up.stop()
        await ob.close()

    asyncio.run(go())
    got.extend(drain(probes[0], 0.01) + drain(probes[1], 1.0))
    probes[1].close()
    check_stream(events_of(got), range(1, total + 1))


_GATEWAY = r"""
import asyncio, sys
from linli.contract import Contract
from linli.events import new_event
from linli.outbox import Outbox
from linli.uplink import Uplink, UplinkSettings

async def main(db, port, total):
    ob = await Outbox.open(db, Contract("site-1", "gw-1"))
    up = Uplink(UplinkSettings(host="127.0.0.1", port=port, reconnect_min_s=0.05, reconnect_max_s=0.5, client=sys.argv[4]), ob)
    await up.start()
    stored = (await ob.stats()).last_seq  # after a restart: go on up to `total` events
    while stored < total:
        await ob.add([new_event("node.telemetry", node="n%d" % (j % 4), data={"readings": {"i": stored + j}}) for j in range(40)])
        stored += 40
        print("stored", stored, up.stats.acked, flush=True)
        await asyncio.sleep(0.002)
    await up.wait_idle(60)
    print("idle", flush=True)
    await up.stop()
    await ob.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def test_gateway_sigkilled_mid_load_loses_nothing(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(extra=UNQUEUED)
    probe = broker.client("backend", protocol=5)
    probe.subscribe(EVENTS, qos=1)
    script = tmp_path / "gateway.py"
    script.write_text(_GATEWAY)
    db = tmp_path / "gw.db"
    p = subprocess.Popen([sys.executable, str(script), str(db), str(broker.port), "4000", CLIENT[0]], stdout=subprocess.PIPE, text=True)
    try:
        stored = 0
        while True:  # kill it while it stores and publishes, with events in flight
            line = p.stdout.readline()
            assert line, "the gateway script died"
            _, n, acked = line.split()
            stored = int(n)
            if int(acked) > 800 and stored > 1600:
                break
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert stored < 4000
    # Restart: it re-publishes what was not acked (same ids), then stores and sends the rest.
    out = subprocess.run([sys.executable, str(script), str(db), str(broker.port), "4000", CLIENT[0]], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "idle" in out.stdout, out.stderr[-3000:]
    ces = events_of(drain(probe, 1.0))
    probe.close()
    check_stream(ces, range(1, 4001))
    assert len({c["id"] for c in ces}) == 4000


def test_outbox_full_during_outage_drops_by_policy_and_reports_it(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(persistence=True, extra=UNQUEUED)
    probe = broker.client("backend", protocol=5, clean=False)
    probe.subscribe(EVENTS, qos=1)
    probe.client.loop_stop()
    probe.client.disconnect()

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C, max_events=100, drop_report_s=0.2)
        await asyncio.to_thread(broker.stop)
        up = Uplink(settings(broker), ob)
        await up.start()
        alarms = []
        for i in range(10):
            batch = [tel(i * 30 + j, "n1") for j in range(25)] + [new_event("bin.tipped", node="b%d" % i, data={"tilt_deg": 80})] + [new_event("bin.emptied", node="b1", data={"fill_pct": 3}) for _ in range(4)]
            alarms.append(batch[25].id)
            await ob.add(batch)
        await asyncio.sleep(0.4)  # let the last drop report fire
        st = await ob.stats()
        assert st.dropped > 0 and st.pending <= 100
        await asyncio.to_thread(broker.start)
        await up.wait_idle(20)
        await up.stop()
        await ob.close()
        return alarms, st

    alarms, st = asyncio.run(go())
    late = broker.client("backend", protocol=5, clean=False)
    ces = events_of(drain(late, 1.0))
    late.close()
    report = verify_lines([json.dumps(c) for c in ces])
    assert report.ok, report.to_dict()
    [chain] = report.chains
    assert chain.first == 1 and chain.last == max(c["seq"] for c in ces)
    reports = [c["data"] for c in ces if c["type"] == "linli.gateway.outbox.dropped"]
    assert sum(r["count"] for r in reports) == st.dropped == sum(b - a + 1 for a, b in chain.dropped)
    assert {c["id"] for c in ces} >= set(alarms), "an alarm was dropped"
    types = {t for r in reports for t in r["by_type"]}
    assert types <= {"node.telemetry", "bin.emptied"}


# -- MQTT 3.1.1-only brokers ------------------------------------------------------------------------
class V311OnlyProxy:
    """A TCP front for a real broker that refuses MQTT 5 CONNECTs, as a 3.1.1-only broker does:
    ``mode`` "connack" answers CONNACK 'unacceptable protocol version', "close" just hangs up."""

    def __init__(self, target, mode: str):
        self.target, self.mode = target, mode
        self.port = free_port()
        self.host = "127.0.0.1"
        self.refused = 0
        self.srv = socket.create_server((self.host, self.port))
        self.srv.settimeout(0.2)
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(5)
        head = b""
        while len(head) < 12:  # fixed header (<=2 bytes of length here), "MQTT" name, level
            chunk = c.recv(64)
            if not chunk:
                c.close()
                return
            head += chunk
        level = head[2 + 2 + 4] if head[1] < 0x80 else head[3 + 2 + 4]
        if level == 5:
            self.refused += 1
            if self.mode == "connack":
                c.sendall(b"\x20\x02\x00\x01")
            c.close()
            return
        u = socket.create_connection((self.target.host, self.target.port))
        u.sendall(head)
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        a.settimeout(None)
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.srv.close()


@pytest.mark.parametrize("mode", ["connack", "close"])
def test_falls_back_to_mqtt311(tmp_path, mosquitto_factory, mode):
    broker = mosquitto_factory(extra=UNQUEUED)
    proxy = V311OnlyProxy(broker, mode)
    probe = broker.client("backend", protocol=5)
    probe.subscribe(EVENTS, qos=1)

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        up = Uplink(settings(SimpleNamespace(host=proxy.host, port=proxy.port)), ob)
        await ob.add([tel(i, "n%d" % (i % 2)) for i in range(50)])
        await up.start()
        await up.wait_connected(10)
        assert up.stats.protocol == "3.1.1"
        await up.wait_idle(10)
        await up.stop()
        await ob.close()

    try:
        asyncio.run(go())
    finally:
        proxy.close()
    msgs = drain(probe)
    probe.close()
    assert proxy.refused == 1
    check_stream(events_of(msgs), range(1, 51))
    assert not msgs[0].properties.UserProperty if hasattr(msgs[0].properties, "UserProperty") else True


def test_protocol_5_only_reports_the_refusal(tmp_path, mosquitto_factory):
    broker = mosquitto_factory()
    proxy = V311OnlyProxy(broker, "connack")

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        up = Uplink(settings(SimpleNamespace(host=proxy.host, port=proxy.port), protocol="5"), ob)
        await up.start()
        await _wait(lambda: up.last_exception is not None)
        await up.stop()
        await ob.close()
        return up.last_exception

    try:
        exc = asyncio.run(go())
    finally:
        proxy.close()
    assert isinstance(exc, UplinkProtocolError) and "refused MQTT 5" in str(exc)


# -- login and TLS -----------------------------------------------------------------------------------
def test_username_password(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(allow_anonymous=False, users={"gw-1": "s3cret-pass"})

    async def go(password):
        ob = await Outbox.open(tmp_path / ("gw-%s.db" % password), C)
        up = Uplink(settings(broker, username="gw-1", password=password), ob)
        await up.start()
        await _wait(lambda: up.last_exception is not None or up.stats.connects, 5)
        await up.stop()
        await ob.close()
        return up

    assert asyncio.run(go("s3cret-pass")).stats.connects == 1
    bad = asyncio.run(go("wrong"))
    assert bad.stats.connects == 0
    assert isinstance(bad.last_exception, UplinkAuthError) and "upstream.username/password" in str(bad.last_exception)


def _pki(tmp_path):
    """A CA, a broker certificate for 127.0.0.1/localhost, a client certificate, and a stranger CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject, key, issuer, issuer_key, *, ca=False, san=None, usage=None):
        b = (
            x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(path, obj):
        if hasattr(obj, "private_bytes"):
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        else:
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        return path

    d = tmp_path / "pki"
    d.mkdir()
    f = {}
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    f["ca"] = write(d / "ca.pem", cert("linli test CA", ca_key, "linli test CA", ca_key, ca=True))
    f["other_ca"] = write(d / "other-ca.pem", cert("stranger CA", other_key, "stranger CA", other_key, ca=True))
    for who, san, usage in (("server", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], ExtendedKeyUsageOID.SERVER_AUTH), ("client", None, ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        f[who + "_key"] = write(d / ("%s.key" % who), key)
        f[who] = write(d / ("%s.pem" % who), cert("gw-1" if who == "client" else "localhost", key, "linli test CA", ca_key, san=san, usage=usage))
    return f


def test_tls_with_client_certificates(tmp_path, mosquitto_factory):
    pki = _pki(tmp_path)
    plain = free_port()
    broker = mosquitto_factory(extra=UNQUEUED + [
        "cafile %s" % pki["ca"], "certfile %s" % pki["server"], "keyfile %s" % pki["server_key"],
        "require_certificate true", "use_identity_as_username true",
        "listener %d 127.0.0.1" % plain,  # a plain listener for the test's subscriber
    ])
    probe = MqttProbe(SimpleNamespace(host="127.0.0.1", port=plain), "backend")
    probe.connect()
    probe.subscribe(EVENTS, qos=1)

    async def go(**tls):
        ob = await Outbox.open(tmp_path / ("gw-%d.db" % len(tls)), C)
        await ob.add([tel(i, "n1") for i in range(20)])
        up = Uplink(settings(broker, tls=True, **tls), ob)
        await up.start()
        await _wait(lambda: up.last_exception is not None or up.stats.acked == 20, 10)
        await up.stop()
        await ob.close()
        return up

    good = asyncio.run(go(ca_file=pki["ca"], cert_file=pki["client"], key_file=pki["client_key"]))
    assert good.stats.connects == 1 and good.stats.acked == 20
    check_stream(events_of(drain(probe)), range(1, 21))
    probe.close()

    wrong_ca = asyncio.run(go(ca_file=pki["other_ca"], cert_file=pki["client"], key_file=pki["client_key"]))
    assert wrong_ca.stats.connects == 0
    exc = wrong_ca.last_exception
    assert isinstance(exc, UplinkTLSError)
    assert "certificate verify failed" in str(exc)
    assert "upstream.ca_file" in str(exc) and str(pki["other_ca"]) in str(exc)

    no_cert = asyncio.run(go(ca_file=pki["ca"], cert_file=None, key_file=None, username="gw-1"))
    assert no_cert.stats.connects == 0
    assert isinstance(no_cert.last_exception, UplinkTLSError), no_cert.last_exception


def test_settings_name_the_bad_key(tmp_path):
    from linli.errors import ConfigError

    with pytest.raises(ConfigError, match="upstream.key_file: cert_file and key_file go together"):
        UplinkSettings(host="h", tls=True, cert_file=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="upstream.tls: must be true"):
        UplinkSettings(host="h", ca_file=tmp_path / "ca.pem")
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="upstream.ca_file: cannot load CA certificates"):
        UplinkSettings(host="h", tls=True, ca_file=tmp_path / "ca.pem").ssl_context()
    from linli.config import BrokerSection

    s = UplinkSettings.from_config(BrokerSection(host="mqtt.example.com", port=8883, tls=True, protocol="3.1.1"), window=50)
    assert (s.host, s.port, s.tls, s.protocol, s.window) == ("mqtt.example.com", 8883, True, "3.1.1", 50)


def test_rejected_puback_keeps_the_event(tmp_path, mosquitto_factory):
    """MQTT 5 PUBACK 'Not authorized' (an ACL): the event stays in the outbox, others go on."""
    broker = mosquitto_factory(acl="topic readwrite linli/v1/site-1/gw-1/events/node.telemetry\ntopic readwrite linli/v1/site-1/gw-1/status\n")

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        denied = new_event("bin.tipped", node="b1", data={"tilt_deg": 50})
        await ob.add([tel(1, "n1"), denied, tel(2, "n1")])
        up = Uplink(settings(broker), ob)
        await up.start()
        await _wait(lambda: up.stats.acked == 2 and up.stats.rejected == 1)
        await asyncio.sleep(0.1)
        left = await ob.read(0, 10)
        await up.stop()
        await ob.close()
        return up.stats, left, denied

    stats, left, denied = asyncio.run(go())
    assert [r.id for r in left] == [denied.id]
    assert stats.rejected_reasons == {"Not authorized": 1}


def test_backend_messages_reach_subscribers_on_the_loop(tmp_path, mosquitto_factory):
    broker = mosquitto_factory()
    got = []

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        up = Uplink(settings(broker), ob)
        loop = asyncio.get_running_loop()

        async def on_registry(topic, payload):
            got.append((topic, json.loads(payload), asyncio.get_running_loop() is loop))

        up.subscribe("linli/v1/site-1/pets/registry", on_registry)
        await up.start()
        await up.wait_connected(5)
        with broker.client("backend") as backend:
            backend.publish("linli/v1/site-1/pets/registry", json.dumps({"version": 3}), qos=1, retain=True)
        await _wait(lambda: got)
        await up.stop()
        await ob.close()

    asyncio.run(go())
    assert got == [("linli/v1/site-1/pets/registry", {"version": 3}, True)]


def test_packed_user_properties_match_paho():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from linli.contract import CONTENT_TYPE
    from linli.outbox import Pending
    from linli.uplink_conn import event_properties

    row = Pending(7, "9f1b6c2e", "bin.full", "/linli/s/g/node/bin-\u00e91", "t", b"{}")
    ref = Properties(PacketTypes.PUBLISH)
    ref.PayloadFormatIndicator = 1
    ref.ContentType = CONTENT_TYPE
    ref.UserProperty = [("specversion", "1.0"), ("id", row.id), ("source", row.source), ("type", "linli.bin.full"), ("seq", "7")]
    assert event_properties(row).pack() == ref.pack()


class FakeV5Broker:
    """A scripted MQTT 5 broker: CONNACK with Receive Maximum 3; each PUBLISH PUBACKed a little
    later, counting how many were unacknowledged at once; on the first connection it falls
    silent (no PUBACK, no PINGRESP) after ``silent_after`` PUBLISHes."""

    def __init__(self, silent_after=10):
        self.silent_after = silent_after
        self.connections = 0
        self.published = []  # (connection, seq) in arrival order
        self.max_unacked = 0

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.host, self.port = "127.0.0.1", self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        from linli import mqtt_wire as wire

        self.connections += 1
        conn, unacked, rest = self.connections, [0], b""
        silent = False

        async def ack_later(pid):
            await asyncio.sleep(0.005)
            if not silent:
                unacked[0] -= 1
                writer.write(wire.puback(pid))

        while data := await reader.read(65536):
            packets, rest = wire.split(rest + data)
            for b0, body in packets:
                t = b0 & 0xF0
                if t == 0x10:
                    assert body[6] == 5, "expected an MQTT 5 CONNECT"
                    writer.write(b"\x20\x06\x00\x00" + b"\x03\x21\x00\x03")  # Receive Maximum 3
                elif t == 0x30 and not silent:
                    topic, pid, payload = wire.parse_publish(b0, body, v5=True)
                    if b"/events/" in topic:
                        self.published.append((conn, json.loads(payload)["seq"]))
                    unacked[0] += 1
                    self.max_unacked = max(self.max_unacked, unacked[0])
                    asyncio.ensure_future(ack_later(pid))
                    silent = conn == 1 and len(self.published) >= self.silent_after
                elif t == 0x80 and not silent:
                    writer.write(bytes((0x90, 4)) + body[:2] + b"\x00\x01")
                elif b0 == 0xC0 and not silent:
                    writer.write(b"\xd0\x00")
        writer.close()


def test_receive_maximum_is_kept_and_a_silent_broker_is_left_for_a_new_connection(tmp_path, client):
    """The client speaks for itself here (no Mosquitto): at most Receive Maximum PUBLISHes
    unacknowledged, PINGREQ on an idle connection, and a broker that stops answering is
    dropped after 1.5 keepalives; what it never acked is published again, oldest first.
    (paho sets its in-flight window before the CONNACK tells the Receive Maximum, so it keeps
    it only from the next connection.)"""

    async def go():
        fake = await FakeV5Broker(silent_after=10).start()
        ob = await Outbox.open(tmp_path / "gw.db", C)
        await ob.add([tel(i, "n%d" % (i % 3)) for i in range(30)])
        up = Uplink(settings(fake, protocol="5", keepalive=1, inflight=20), ob)
        await up.start()
        await up.wait_idle(15)
        await up.stop()
        await ob.close()
        fake.server.close()
        return fake, up

    fake, up = asyncio.run(go())
    assert fake.max_unacked <= (3 if client == "native" else 20)
    assert fake.connections == 2 and up.stats.connects == 2
    first = [s for c, s in fake.published if c == 1]
    again = [s for c, s in fake.published if c == 2]
    assert first[:10] == list(range(1, 11))
    assert sorted(set(first) | set(again)) == list(range(1, 31))
    assert again == sorted(again) and again[0] <= 11  # the unacked ones again, oldest first


def test_the_client_setting_picks_the_mqtt_client(tmp_path, client):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        up = Uplink(settings(SimpleNamespace(host="127.0.0.1", port=1), client=client), ob)
        name = up._impl.__name__
        await ob.close()
        return name

    assert asyncio.run(go()) == {"native": "linli.uplink_conn", "paho": "linli.uplink_paho"}[client]
    with pytest.raises(ConfigError, match="client"):
        UplinkSettings(host="h", client="mosquitto_pub")
