"""`linli nodes`, `linli node NODE` and `linli events tail` against a gateway that ingested frames."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from linli.cli import main
from linli.config import Config
from linli.contract import Contract
from linli.events import new_event
from linli.keystore import KeyStore
from linli.link import Kind, Role
from linli.nodes_cli import LocalTail, NodesError, node_detail, node_rows, tail_events
from linli.outbox import Outbox

from gateway_peer import GatewayThread, PeerNode, Upstream, gateway_toml


@pytest.fixture
def site(tmp_path, mosquitto_factory):
    local, upstream = mosquitto_factory(), mosquitto_factory()
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml(tmp_path / "data", local, upstream))
    cfg = Config.load(path)
    keys = tmp_path / "data" / "keys.db"
    ks = KeyStore(keys)
    ks.add("street-09", "streetlight", bytes(32))  # registered, never reports
    ks.close()
    node = PeerNode("bin-0001", Role.BIN, local, keys)
    gw = GatewayThread(cfg).start()
    backend = Upstream(upstream)
    try:
        backend.events(until_type="gateway.started")
        assert node.wait_ack(node.send(Kind.HELLO, {"fw": "0.3.1", "rc": "pwron", "bc": 4, "sm": 0})) == 0
        assert node.wait_ack(node.send(Kind.TELEMETRY, {"fill": 55, "bat": 3.87, "rssi": -61, "depth": 110, "q": 0})) == 0
        backend.probe.publish("linli/v1/test-site/gw-1/commands/bin-0001", json.dumps({"id": "cmd-1", "op": "bin.config", "args": {"report_s": 600}}), qos=1)
        kind, body = node.down()
        assert kind == "command" and body["op"] == "bin.config"
        yield {"cfg": cfg, "path": path, "node": node, "gw": gw, "backend": backend}
    finally:
        gw.stop()
        node.close()
        backend.close()


def test_nodes_table_and_node_detail(site, capsys):
    cfg, path = site["cfg"], str(site["path"])
    rows = {r["node"]: r for r in node_rows(cfg)}
    b, s = rows["bin-0001"], rows["street-09"]
    assert (b["role"], b["fw"], b["bat"], b["rssi"], b["availability"]) == ("bin", "0.3.1", 3.87, -61, "online")
    assert b["age_s"] < 60 and b["registered"]
    assert (s["role"], s["last_seen"], s["availability"]) == ("streetlight", None, "never")
    # Availability is worked out for "now", as the gateway would: a day later the bin is offline.
    assert {r["node"]: r for r in node_rows(cfg, now=time.time() + 86400)}["bin-0001"]["availability"] == "offline"

    assert main(["nodes", "--config", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NODE", "ROLE", "FIRMWARE", "LAST", "SEEN", "BATTERY", "RSSI", "AVAILABILITY"]
    assert out[1].split()[:3] == ["bin-0001", "bin", "0.3.1"] and "3.87 V" in out[1] and "-61 dBm" in out[1] and out[1].endswith("online")
    assert out[2].split() == ["street-09", "streetlight", "-", "never", "-", "-", "never"]
    assert main(["nodes", "--config", path, "--json"]) == 0
    assert [r["node"] for r in json.loads(capsys.readouterr().out)] == ["bin-0001", "street-09"]

    d = node_detail(cfg, "bin-0001")
    assert [h["kind"] for h in d["history"]][:2] == ["hello", "telemetry"]
    assert d["history"][1]["summary"].replace(" ", "") == '{"c":2}'  # the frame counter
    assert [(c["id"], c["op"], c["args"], c["status"]) for c in d["commands"]] == [("cmd-1", "bin.config", {"report_s": 600}, "sent")]
    assert d["state"]["fw"] == "0.3.1" and d["state"]["boot_count"] == 4
    assert main(["node", "bin-0001", "--config", path]) == 0
    text = capsys.readouterr().out
    assert text.startswith("bin-0001  bin  firmware 0.3.1  online  last seen")
    assert "pending commands (1):" in text and "cmd-1  bin.config {\"report_s\": 600}  sent" in text
    assert "hello" in text and "telemetry" in text
    assert main(["node", "nobody", "--config", path]) == 1
    assert "no node 'nobody' on this gateway (known: bin-0001, street-09)" in capsys.readouterr().err
    with pytest.raises(NodesError, match="no node"):
        node_detail(cfg, "nobody")


def test_events_tail_follows_upstream(site):
    cfg, node = site["cfg"], site["node"]
    said, got = [], []
    it = tail_events(cfg, type_pattern="bin.*", node="bin-0001", poll_s=0.1, say=said.append)
    done = threading.Event()

    def follow():
        for ce in it:
            got.append(ce)
            if len(got) == 2:
                break
        done.set()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        time.sleep(0.05)
    assert said and said[0].startswith("following linli/v1/test-site/gw-1/events/# on 127.0.0.1")
    node.wait_ack(node.send(Kind.TELEMETRY, {"fill": 95, "bat": 3.86, "depth": 110}))  # bin.full (and node.telemetry, filtered out)
    node.wait_ack(node.send(Kind.EVENT, {"ev": "tipped", "tilt": 80}, flags=2))
    assert done.wait(10), (said, got)
    it.close()
    assert [ce["type"] for ce in got] == ["linli.bin.full", "linli.bin.tipped"]
    assert all(ce["subject"] == "bin-0001" for ce in got)


def test_events_tail_cli_stops_cleanly_on_ctrl_c(site, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "linli.cli", "events", "tail", "--config", str(site["path"]), "--type", "bin.*"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stderr.readline().decode()
        assert "following linli/v1/test-site/gw-1/events/#" in line, line
        site["node"].wait_ack(site["node"].send(Kind.TELEMETRY, {"fill": 96, "bat": 3.86, "depth": 110}))
        first = proc.stdout.readline().decode()
        assert "bin.full" in first and "bin-0001" in first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err.decode() and "1 event(s) shown" in err.decode()


def test_local_tail_follows_the_outbox_and_counts_what_it_missed(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gateway.db", Contract("s", "g"))
        await ob.add([new_event("bin.tipped", node="bin-1", data={"tilt_deg": 80})])  # before the tail: not shown
        tail = LocalTail(tmp_path / "gateway.db")
        assert tail.poll() == []
        await ob.add([new_event("bin.tipped", node="bin-%d" % i, data={"tilt_deg": 80}) for i in (2, 3)])
        first = tail.poll()
        await ob.add([new_event("bin.tipped", node="bin-4", data={"tilt_deg": 80})])
        await ob.ack([4])  # published and deleted before the next poll
        await ob.add([new_event("bin.tipped", node="bin-5", data={"tilt_deg": 80})])
        second = tail.poll()
        await ob.close()
        return first, second, tail.missed

    first, second, missed = asyncio.run(go())
    assert [(e["seq"], e["subject"]) for e in first] == [(2, "bin-2"), (3, "bin-3")]
    assert [(e["seq"], e["subject"]) for e in second] == [(5, "bin-5")]
    assert missed == 1


def test_auto_falls_back_to_the_local_outbox(tmp_path, mosquitto_factory):
    dead = mosquitto_factory()
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml(tmp_path / "data", dead, dead))
    cfg = Config.load(path)
    dead.kill()

    async def make_db():
        ob = await Outbox.from_config(cfg)
        await ob.close()

    asyncio.run(make_db())
    said = []
    it = tail_events(cfg, timeout=1.0, poll_s=0.05, say=said.append)

    async def add():
        ob = await Outbox.from_config(cfg)
        await ob.add([new_event("bin.tipped", node="bin-7", data={"tilt_deg": 80})])
        await ob.close()

    t = threading.Timer(0.3, lambda: asyncio.run(add()))
    t.start()
    ce = next(it)
    it.close()
    t.join()
    assert ce["subject"] == "bin-7"
    assert "upstream not usable (connection refused" in said[0] and "following the local outbox" in said[1]
    with pytest.raises(NodesError, match="cannot follow upstream: connection refused"):
        next(tail_events(cfg, source="upstream", timeout=1.0))


def test_node_shows_its_events_waiting_upstream(tmp_path, capsys):
    from types import SimpleNamespace

    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml(tmp_path / "data", SimpleNamespace(port=1883)))  # upstream disabled: events stay
    cfg = Config.load(path)
    ks = KeyStore(tmp_path / "data" / "keys.db")
    ks.add("bin-1", "bin", bytes(32))
    ks.close()

    async def fill():
        ob = await Outbox.from_config(cfg)
        await ob.add([new_event("bin.tipped", node="bin-1", data={"tilt_deg": 80}), new_event("bin.tipped", node="bin-2", data={"tilt_deg": 70}),
                      new_event("bin.fire_risk", node="bin-1", data={"temp_c": 71.5, "rise_c_per_min": None, "threshold_c": 60.0})])
        await ob.close()

    asyncio.run(fill())
    d = node_detail(cfg, "bin-1")
    assert [(e["seq"], e["type"]) for e in d["waiting_events"]] == [(1, "linli.bin.tipped"), (3, "linli.bin.fire_risk")]
    assert d["node"]["availability"] == "never" and d["history"] == [] and d["commands"] == []
    assert main(["node", "bin-1", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "events waiting upstream (2):" in text and "bin.fire_risk" in text and "never" in text.splitlines()[0]
