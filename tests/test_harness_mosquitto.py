"""The Mosquitto harness: a broker per test, on its own port, with its own config."""

from __future__ import annotations

import queue
import socket

import pytest

import harness.mosquitto as mosquitto
from harness.mosquitto import MqttProbe, password_line

pytestmark = pytest.mark.mosquitto

ACL = """\
user alice
topic readwrite sensors/alice/#

user admin
topic readwrite #
"""


def test_publish_subscribe_across_mqtt_versions(mosquitto_broker):
    assert mosquitto_broker.port != 1883 and mosquitto_broker.running
    with mosquitto_broker.client("v5", protocol=5) as v5, mosquitto_broker.client("v311", protocol=4) as v311:
        v5.subscribe("bins/+/level", qos=1)
        v311.publish("bins/7/level", b"80", qos=1)
        msg = v5.get()
        assert (msg.topic, msg.payload, msg.qos) == ("bins/7/level", b"80", 1)
    mosquitto_broker.wait_for_log("as v311 (p2")  # the log is captured: p2 = MQTT 3.1.1
    mosquitto_broker.wait_for_log("as v5 (p5")


def test_stopped_broker_refuses_connections_and_restarts_on_the_same_port(mosquitto_broker):
    port = mosquitto_broker.port
    mosquitto_broker.stop()
    assert not mosquitto_broker.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(mosquitto_broker.address, timeout=1)
    with pytest.raises(ConnectionRefusedError):
        mosquitto_broker.client()
    mosquitto_broker.start()
    assert mosquitto_broker.port == port
    mosquitto_broker.client().close()


def test_persistence_keeps_retained_and_queued_messages(mosquitto_factory):
    broker = mosquitto_factory(persistence=True)
    # A persistent session with a QoS 1 subscription, offline while the message is sent.
    sub = broker.client("node-1", clean=False, protocol=4)
    sub.subscribe("cmd/node-1", qos=1)
    sub.close()
    with broker.client("gw") as gw:
        gw.publish("state/bin-1", b"full", qos=1, retain=True)
        gw.publish("cmd/node-1", b"empty-now", qos=1)
    broker.restart()
    with broker.client("late") as late:
        late.subscribe("state/#")
        assert late.get().payload == b"full"
    with broker.client("node-1", clean=False, protocol=4) as sub:
        assert sub.get().payload == b"empty-now"


def test_without_persistence_a_restart_forgets(mosquitto_broker):
    with mosquitto_broker.client() as c:
        c.publish("state/bin-1", b"full", qos=1, retain=True)
    mosquitto_broker.restart()
    with mosquitto_broker.client() as c:
        c.subscribe("state/#")
        with pytest.raises(queue.Empty):
            c.get(timeout=0.3)


def test_password_auth(mosquitto_factory):
    broker = mosquitto_factory(allow_anonymous=False, users={"gw": "s3cret"})
    broker.client(username="gw", password="s3cret").close()
    wrong = MqttProbe(broker, username="gw", password="guess")
    assert wrong.connect_reason().is_failure
    wrong.close()
    anonymous = MqttProbe(broker, protocol=4)
    assert anonymous.connect_reason().is_failure
    anonymous.close()


def test_generated_password_file_is_accepted(mosquitto_factory, monkeypatch):
    # Where mosquitto_passwd is missing, the harness writes the PBKDF2-SHA512 lines itself.
    monkeypatch.setattr(mosquitto, "find_mosquitto_passwd", lambda: None)
    broker = mosquitto_factory(allow_anonymous=False, users={"gw": "s3cret", "node": "n0de"})
    assert "gw:$7$101$" in (broker.workdir / "passwd").read_text()
    broker.client(username="node", password="n0de").close()
    bad = MqttProbe(broker, username="gw", password="n0de")
    assert bad.connect_reason().is_failure
    bad.close()
    assert password_line("u", "p", salt=b"\0" * 12).startswith("u:$7$101$AAAAAAAAAAAAAAAA$")


def test_acl_denies_a_topic(mosquitto_factory):
    broker = mosquitto_factory(allow_anonymous=False, users={"alice": "a", "admin": "x"}, acl=ACL)
    with broker.client("alice", username="alice", password="a") as alice, \
            broker.client("admin", username="admin", password="x") as admin:
        admin.subscribe("sensors/#", qos=1)
        alice.publish("sensors/bob/level", b"forged", qos=1)
        alice.publish("sensors/alice/level", b"42", qos=1)
        assert admin.get().topic == "sensors/alice/level"  # the forged one never arrives first
        with pytest.raises(queue.Empty):
            admin.get(timeout=0.3)


def test_reconfigure_restarts_with_extra_config(mosquitto_broker):
    port = mosquitto_broker.port
    mosquitto_broker.reconfigure(extra=["max_packet_size 100"])
    assert mosquitto_broker.port == port and mosquitto_broker.running
    with mosquitto_broker.client("big", protocol=4) as c:
        c.subscribe("t")
        c.publish("t", b"x" * 10)
        assert c.get().payload == b"x" * 10
        c.publish("t", b"y" * 200)
        mosquitto_broker.wait_for_log("disconnected due to oversize packet")
    with pytest.raises(TypeError, match="no_such_option"):
        mosquitto_broker.reconfigure(no_such_option=1)


def test_bad_config_fails_with_the_log(mosquitto_factory):
    with pytest.raises(mosquitto.BrokerError, match="no_such_directive"):
        mosquitto_factory(extra=["no_such_directive 1"])
