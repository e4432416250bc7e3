"""Gateway throughput: node frames -> verify, registry, rules, outbox -> upstream PUBACK.

In one run, against the same local Mosquitto brokers:

* ``gateway_eps``: events per second from node frames (published QoS 1 on the local broker) to
  the upstream broker's PUBACK, through the whole gateway (one event per frame);
* ``raw_paho_eps``: paho publishing QoS 1 straight to the upstream broker (the ceiling);
* ``ratio`` = gateway / raw (goal: >= 0.5);
* ``drain_eps``: how fast a 100,000-event backlog (an outage's worth) drains once the uplink
  is back.

The line before the figures says where the CPU went during the gateway run (microseconds per
event: the gateway process, the nodes' publisher, both brokers): on a small machine the gateway
shares its cores with all of them, so that line tells how close a run came to the ceiling. The
nodes' publisher is a plain socket writing pre-encoded QoS 1 PUBLISH packets (100 in flight,
like paho's default window): on site the nodes are other devices, so their MQTT client must not
take the gateway's CPU in the bench (a paho publisher cost about 110 us per frame here, half as
much as the whole gateway). The raw baseline stays paho, QoS 1, through the same broker.

Run: ``.venv/bin/python bench/ingest.py [--frames N] [--backlog N]``; figures on the last line.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from linli.broker import EmbeddedBroker
from linli.config import Config
from linli.contract import Contract
from linli.events import new_event
from linli.keystore import KeyStore
from linli.link import Kind, LinkKeys, Role, seal
from linli.outbox import Outbox
from linli.service import Gateway
from linli.uplink import Uplink, UplinkSettings


def raw_paho(port: int, n: int) -> float:
    done = threading.Event()
    acked = [0]

    def on_publish(c, u, mid, rc, props):
        acked[0] += 1
        if acked[0] == n:
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    payload = b"x" * 600  # about a CloudEvent's size
    t0 = time.perf_counter()
    for i in range(n):
        c.publish("bench/raw/%d" % (i % 10), payload, qos=1)
    done.wait(300)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return n / dt


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


async def gateway_rate(local: int, upstream: int, n: int, tmp: Path, broker_pids: tuple = (), client: str = "native") -> float:
    cfg = Config.from_text(
        '[gateway]\nsite="bench"\nid="gw"\ndata_dir="%s"\n[privacy]\nsite_secret="0123456789abcdef"\n'
        '[local]\nport=%d\n[upstream]\nhost="127.0.0.1"\nport=%d\ntls=false\nclient="%s"\n' % (tmp / "gw", local, upstream, client)
    )
    key = bytes(range(32))
    ks = KeyStore(cfg.gateway.data_dir / "keys.db")
    nodes = ["bin-%04d" % i for i in range(20)]
    for nd in nodes:
        ks.add(nd, "bin", key)
    ks.close()
    keys = LinkKeys(key)
    frames = [
        (nodes[i % 20], seal(keys, Kind.TELEMETRY, Role.BIN, nodes[i % 20], counter=i // 20 + 1, ts=int(time.time()), payload=b'{"fill":%d,"temp":21.5}' % (i % 80)))
        for i in range(n)
    ]
    gw = Gateway(cfg)
    await gw.start()
    await gw.uplink.wait_connected(10)
    await gw.uplink.wait_idle(10)
    # The nodes are other devices: publish their frames from another process, as they would.
    blob = tmp / "frames.bin"
    blob.write_bytes(b"".join(len(node).to_bytes(1, "big") + node.encode() + len(raw).to_bytes(2, "big") + raw for node, raw in frames))
    base = (await gw.outbox.stats()).last_seq
    cpu0 = _own_cpu_s(resource.RUSAGE_SELF), _own_cpu_s(resource.RUSAGE_CHILDREN), sum(map(_cpu_s, broker_pids))
    pub = await asyncio.create_subprocess_exec(sys.executable, "-c", _NODES, str(blob), str(local), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    await pub.stdout.readline()  # connected: start the clock when the nodes start sending
    t0 = time.perf_counter()
    pub.stdin.write(b"go\n")
    await pub.stdin.drain()
    # Done when every frame's event is stored and the uplink has nothing left unacked.
    while (await gw.outbox.stats()).last_seq - base < n:
        await asyncio.sleep(0.01)
    stored = time.perf_counter() - t0
    await gw.uplink.wait_idle(300)
    dt = time.perf_counter() - t0
    print("gateway: all %d events stored after %.2f s, all PUBACKed after %.2f s" % (n, stored, dt))
    await pub.wait()
    gw_cpu = _own_cpu_s(resource.RUSAGE_SELF) - cpu0[0]
    pub_cpu = _own_cpu_s(resource.RUSAGE_CHILDREN) - cpu0[1]
    brokers_cpu = sum(map(_cpu_s, broker_pids)) - cpu0[2]
    print("cpu per event: gateway %.0f us, nodes' publisher %.0f us, brokers %.0f us (%d cores)" % (gw_cpu / n * 1e6, pub_cpu / n * 1e6, brokers_cpu / n * 1e6, os.cpu_count() or 0))
    await gw.stop()
    return n / dt


_NODES = """
# The nodes: frames pre-encoded as MQTT 3.1.1 PUBLISH QoS 1 packets and written from a plain
# socket with up to 100 unacknowledged (paho's default window), PUBACKs counted by a reader. On
# site the nodes are other devices: their MQTT encoding must not eat the gateway's CPU here.
import socket, sys, threading
from linli import mqtt_wire as wire
data = open(sys.argv[1], "rb").read()
packets = []
i = 0
while i < len(data):
    n = data[i]; node = data[i + 1:i + 1 + n].decode(); i += 1 + n
    m = int.from_bytes(data[i:i + 2], "big"); raw = data[i + 2:i + 2 + m]; i += 2 + m
    pid = len(packets) % 65535 + 1
    packets.append(wire.publish(("linli/node/%s/up" % node).encode(), raw, pid))
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(wire.connect("bench-nodes", keepalive=60))
assert s.recv(4)[:2] == bytes([0x20, 2])
window = threading.Semaphore(100)
acked = [0]

def reader():
    buf = b""
    while acked[0] < len(packets):
        chunk = s.recv(65536)
        if not chunk:
            return
        buf += chunk
        while len(buf) >= 4 and buf[0] == 0x40:
            buf = buf[4:]
            acked[0] += 1
            window.release()

t = threading.Thread(target=reader, daemon=True)
t.start()
print("ready", flush=True)
sys.stdin.readline()
for p in packets:
    window.acquire()
    s.sendall(p)
t.join(120)
s.sendall(bytes([0xE0, 0]))
s.close()
"""


async def drain_rate(upstream: int, n: int, tmp: Path, client: str = "native") -> float:
    ob = await Outbox.open(tmp / "drain.db", Contract("bench", "gw"), synchronous="normal")
    batch = []
    for i in range(n):
        batch.append(new_event("node.telemetry", node="bin-%04d" % (i % 50), data={"role": "bin", "readings": {"fill": i % 100}}))
        if len(batch) == 1000:
            await ob.add(batch)
            batch = []
    if batch:
        await ob.add(batch)
    up = Uplink(UplinkSettings(host="127.0.0.1", port=upstream, tls=False, client_id="bench-drain", client=client), ob)
    t0 = time.perf_counter()
    await up.start()
    await up.wait_idle(600)
    dt = time.perf_counter() - t0
    await up.stop()
    await ob.close()
    return n / dt


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--client", choices=("native", "paho"), default="native", help="the uplink's MQTT client ([upstream] client)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        async with EmbeddedBroker() as local, EmbeddedBroker() as upstream:
            raw = await asyncio.get_running_loop().run_in_executor(None, raw_paho, upstream.port, args.frames)
            pids = tuple(b._proc.pid for b in (local, upstream) if b._proc is not None)
            gw = await gateway_rate(local.port, upstream.port, args.frames, tmp, pids, args.client)
            drain = await drain_rate(upstream.port, args.backlog, tmp, args.client)
    print("broker: %s; uplink client: %s; frames: %d; backlog: %d" % (local.kind, args.client, args.frames, args.backlog))
    print("gateway_eps=%.0f raw_paho_eps=%.0f ratio=%.2f drain_eps=%.0f" % (gw, raw, gw / raw, drain))


if __name__ == "__main__":
    asyncio.run(main())
