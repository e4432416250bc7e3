"""The whole gateway against real brokers: node frames in, CloudEvents out, commands and pets."""

import json
import time

import pytest

from linli.config import Config
from linli.link import Kind, Role
from linli.pettag import make_tag
from linli.verify import verify_lines

from gateway_peer import GatewayThread, PeerNode, Upstream, gateway_toml, validator

TAG_KEY = "ab" * 32


@pytest.fixture
def site(tmp_path, mosquitto_factory):
    local = mosquitto_factory()
    upstream = mosquitto_factory()
    cfg = Config.from_text(gateway_toml(tmp_path / "data", local, upstream, '[pets]\ntag_key = "%s"\n' % TAG_KEY), "gateway.toml")
    return cfg, local, upstream, tmp_path / "data" / "keys.db"


def test_end_to_end_events_commands_and_pets(site):
    cfg, local, upstream, keys = site
    backend = Upstream(upstream)
    # The backend's pet registry is retained: the gateway picks it up when it connects.
    backend.probe.publish("linli/v1/test-site/pets/registry", json.dumps({"version": 3, "pets": {"7Q2M9XKD": {"status": "green"}}}), qos=1, retain=True)
    b = PeerNode("bin-0001", Role.BIN, local, keys)
    s = PeerNode("street-01", Role.STREETLIGHT, local, keys)
    p = PeerNode("pet-01", Role.PETSCAN, local, keys)
    gw = GatewayThread(cfg).start()
    try:
        backend.events(until_type="gateway.started")
        assert b.wait_ack(b.send(Kind.HELLO, {"fw": "0.1.0", "rc": "pwron", "bc": 1, "sm": 0})) == 0
        for fill in (40, 90):
            assert b.wait_ack(b.send(Kind.TELEMETRY, {"fill": fill, "bat": 3.9, "depth": 110})) == 0
        assert b.wait_ack(b.send(Kind.EVENT, {"ev": "deposit", "card": "04A1B2C3", "w_g": 800, "cat": "recyclable"})) == 0
        assert s.wait_ack(s.send(Kind.EVENT, {"ev": "lamp_fault", "fault": "open", "ma": 2, "lamp": 80}, flags=2)) == 0
        # A pet scan is answered on the node's down topic well within 500 ms.
        t0 = time.monotonic()
        p.send(Kind.EVENT, {"ev": "scan", "tag": make_tag("7Q2M9XKD", bytes.fromhex(TAG_KEY))})
        answers = [p.down() for _ in range(2)]
        elapsed = time.monotonic() - t0
        shown = [body["a"] for kind, body in answers if kind == "command"]
        assert shown == [{"tag": "7Q2M9XKD", "status": "green", "buzz": "ok"}]
        assert elapsed < 0.5, elapsed
        # A backend command for the streetlight reaches it (always on: sent at once) and its result goes up.
        backend.probe.publish("linli/v1/test-site/gw-1/commands/street-01", json.dumps({"id": "cmd-7", "op": "lamp.level", "args": {"level": 40}}), qos=1)
        kind, body = s.down()
        assert (kind, body["op"], body["a"]) == ("command", "lamp.level", {"level": 40})
        s.send(Kind.COMMAND_RESULT, {"id": body["id"], "ok": True, "level": 40})
        # A bad command is refused at the gateway with a reason.
        backend.probe.publish("linli/v1/test-site/gw-1/commands/bin-0001", json.dumps({"id": "cmd-8", "op": "lamp.level", "args": {"level": 40}}), qos=1)
        evs = backend.events(until_type="command.timeout", timeout=4)
        types = [e["type"][6:] for e in evs]
        for t in ("gateway.started", "node.rebooted", "node.telemetry", "bin.full", "bin.deposit", "streetlight.lamp_fault", "petscan.scan", "command.result"):
            assert t in types, (t, types)
        results = {e["data"]["command_id"]: e["data"] for e in backend.of("command.result")}
        assert results["cmd-7"]["ok"] is True and results["cmd-7"]["op"] == "lamp.level"
        assert results["cmd-8"]["ok"] is False and "streetlight" in results["cmd-8"]["error"]
        (dep,) = backend.of("bin.deposit")
        assert dep["data"]["resident"] != "04A1B2C3" and "04a1b2c3" not in json.dumps(evs).lower()
        # Every event is valid against its published schema, and the chain verifies.
        for e in evs:
            validator(e["type"][6:]).validate(e)
        report = verify_lines([json.dumps(e) for e in evs])
        assert report.ok, report.to_dict()
        # Node state is retained upstream per node.
        states = [m for m in backend.other if m.topic.endswith("/nodes/bin-0001/state")]
        assert states and json.loads(states[-1].payload)["state"]["fw"] == "0.1.0"
    finally:
        gw.stop()
        for n in (b, s, p):
            n.close()
        backend.close()


def test_forged_and_malformed_frames_are_counted_and_traffic_flows(site):
    cfg, local, upstream, keys = site
    backend = Upstream(upstream)
    b = PeerNode("bin-0001", Role.BIN, local, keys)
    gw = GatewayThread(cfg).start()
    try:
        backend.events(until_type="gateway.started")
        b.probe.publish("linli/node/bin-0001/up", b"\x01garbage that is no frame at all", qos=1)
        c = b.send(Kind.EVENT, {"ev": "no-such-event"})
        assert b.wait_ack(c) == 8  # malformed: told to drop it
        forged = PeerNode("bin-0002", Role.BIN, local, keys)
        forged.keys = b.keys  # right id, wrong key
        forged.send(Kind.EVENT, {"ev": "tipped", "tilt": 90})
        assert b.wait_ack(b.send(Kind.TELEMETRY, {"fill": 20})) == 0
        evs = backend.events(until_type="node.rejected")
        assert "linli.bin.tipped" not in [e["type"] for e in evs]
        # The backend hears which node sends bad frames, and why.
        rej = [e for e in evs if e["type"] == "linli.node.rejected"]
        assert rej and rej[0]["subject"] == "bin-0001" and rej[0]["data"]["counts"] == {"malformed": 1}
        counts = gw.gw.ingest.counts
        assert counts["malformed"] == 1 and counts["bad_tag"] == 1 and counts["bad_length"] == 1
        forged.close()
    finally:
        gw.stop()
        b.close()
        backend.close()
