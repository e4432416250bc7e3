"""The gateway's end of the link, for the node tests: verifies what a node sends with
``linli.link`` (the gateway's own implementation), acknowledges it, answers time sync and sends
commands, over a Mosquitto broker (:class:`MqttPeer`) or a serial pty (:class:`SerialPeer`).

Paho's callbacks only queue what arrives; the test thread does the work in :meth:`pump`
(never publish from a paho callback).

    peer = MqttPeer(broker, NODE, KEY)
    node = mpy.start(code, files=node_files(broker))
    peer.wait(lambda p: p.kinds().count("telemetry") >= 2)
"""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass, field

from linli.link import Flag, Kind, LinkKeys, Role, seal
from linli.link.frame import encode_body
from linli.link.receiver import Receiver
from linli.link.serial import wire

NODE = "bin-01"
KEY = bytes(range(1, 33))
# Frozen "now" the peer answers time_sync with (2026-03-01 00:00:00 UTC).
NOW = 1772323200


def node_config(**over) -> dict:
    """A node's config for tests: short intervals so a test takes seconds."""
    cfg = {
        "node_id": NODE, "role": "bin", "key": KEY.hex(),
        "wifi_ssid": "linli", "wifi_password": "pw", "broker_host": "127.0.0.1", "broker_port": 1883,
        "keepalive_s": 5, "health_s": 3600, "ack_timeout_s": 1, "backoff_min_ms": 100,
        "backoff_max_s": 1, "wdt_s": 10, "healthy_s": 2, "sleep_flush_s": 2, "time_sync_s": 3600,
    }
    cfg.update(over)
    return cfg


# The heap a whole node gets in the tests: the 64 K words with its modules loaded from
# files, and the goal, 48 K words, when they run in place from a ROMFS partition (as ``linli
# flash`` deploys them where the board has one; bench/firmware.py finds the smallest of each).
NODE_HEAP = {"files": "64wK", "romfs": "48wK"}


def deployed(mpy, how: str) -> str:
    """Deploy the firmware on ``mpy`` as ``how`` ("files" | "romfs"); the heap to run it in."""
    if how == "romfs":
        mpy.flash_romfs(mpy.build.romfs())
    return NODE_HEAP[how]


def node_files(**over) -> dict:
    """``files=`` for mpy.start: secrets.json with the test config (config.json left out)."""
    return {"secrets.json": json.dumps(node_config(**over))}


@dataclass
class Seen:
    """One frame from the node, verified (or not) by the gateway's Receiver."""

    reason: str
    kind: str | None = None
    counter: int | None = None
    verdict: str | None = None
    body: dict = field(default_factory=dict)
    flags: int = 0
    ts: int = 0
    at: float = 0.0


class Peer:
    """Transport-free part: verify, commit, ack, answer time sync, send commands."""

    def __init__(self, node: str = NODE, key: bytes = KEY, role: Role = Role.BIN, *, ack: bool = True,
                 time_sync: int | None = NOW):
        self.node = node
        self.keys = LinkKeys(key)
        self.role = role
        self.ack = ack
        self.time_sync = time_sync
        self.rx = Receiver(lambda n: (self.keys, role) if n == node else None)
        self.down = 0
        self.seen: list[Seen] = []
        self.inbox: queue.Queue = queue.Queue()

    # what the transport implements
    def _send(self, frame: bytes) -> None:
        raise NotImplementedError

    def _poll(self, timeout: float) -> None:
        """Move what arrived into self.inbox (raw frames)."""

    def seal_down(self, kind: Kind, body: dict) -> bytes:
        self.down += 1
        return seal(self.keys, kind, self.role, self.node, counter=self.down, ts=NOW,
                    payload=encode_body(body), flags=Flag.DOWN)

    def send(self, kind: Kind, body: dict) -> None:
        self._send(self.seal_down(kind, body))

    def command(self, cid: int, op: str, args: dict | None = None) -> None:
        body = {"id": cid, "op": op}
        if args:
            body["a"] = args
        self.send(Kind.COMMAND, body)

    def handle(self, raw: bytes, topic_id: str | None = None) -> Seen:
        return self.received(self.rx.open(raw, topic_id=topic_id))

    def received(self, r) -> Seen:
        """Record one Received; commit and ack it (or ack its rejection), answer time sync."""
        if not r.ok:
            s = Seen(r.reason.label, counter=r.counter, at=time.monotonic())
            self.seen.append(s)
            if self.ack and r.counter and r.node_id == self.node:
                self.send(Kind.ACK, {"c": r.counter, "r": int(r.reason)})
            return s
        f = r.frame
        s = Seen("ok", f.kind.label, f.counter, f.verdict.value if f.verdict else None, f.body, int(f.flags),
                 f.ts, time.monotonic())
        self.seen.append(s)
        self.rx.commit(f)  # "stored"
        if f.kind is Kind.TIME_SYNC:
            if self.time_sync is not None:
                self.send(Kind.TIME_SYNC, {"t": self.time_sync})
        elif self.ack:
            self.send(Kind.ACK, {"c": f.counter, "r": 0})
        return s

    def pump(self, timeout: float = 0.1) -> None:
        self._poll(timeout)
        while True:
            try:
                raw, topic_id = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.handle(raw, topic_id)

    def wait(self, pred, timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not pred(self):
            assert time.monotonic() < deadline, "timed out waiting for %s; seen: %s" % (what or pred, self.summary())
            self.pump(0.05)

    def idle(self, seconds: float) -> None:
        """Keep answering for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(0.05)

    # views
    def ok(self, kind: str | None = None) -> list[Seen]:
        return [s for s in self.seen if s.reason == "ok" and (kind is None or s.kind == kind)]

    def new(self, kind: str | None = None) -> list[Seen]:
        """Frames accepted for the first time (not duplicates), in arrival order."""
        return [s for s in self.ok(kind) if s.verdict == "new"]

    def kinds(self) -> list[str]:
        return [s.kind for s in self.new()]

    def summary(self) -> str:
        return "; ".join("%s %s c=%s %s %s" % (s.reason, s.kind, s.counter, s.verdict, s.body) for s in self.seen[-30:])


class MqttPeer(Peer):
    """The peer on a broker: subscribes to the node's ``up`` and ``avail``, publishes on ``down``.

    ``client_id``/``clean=False`` give it a persistent session (with a broker that has
    ``persistence=True``), so nothing the node publishes while the peer reconnects is lost.
    """

    def __init__(self, broker, *args, client_id: str = "gw-test", clean: bool = True, **kw):
        super().__init__(*args, **kw)
        self.broker = broker
        self.client_id = client_id
        self.clean = clean
        self.avail: list[tuple[bytes, bool]] = []
        self.client = None
        self.connect()

    def connect(self) -> None:
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                        clean_session=self.clean, reconnect_on_failure=False)
        acks: queue.Queue = queue.Queue()
        c.on_connect = lambda *a: acks.put("connect")
        c.on_subscribe = lambda *a: acks.put("subscribe")
        c.on_message = lambda cl, u, msg: self._raw.put((msg.topic, bytes(msg.payload), bool(msg.retain)))
        self._raw: queue.Queue = queue.Queue()
        c.connect(self.broker.host, self.broker.port, keepalive=30)
        c.loop_start()
        assert acks.get(timeout=5) == "connect"
        c.subscribe([("linli/node/%s/up" % self.node, 1), ("linli/node/%s/avail" % self.node, 1)])
        assert acks.get(timeout=5) == "subscribe"
        self.client = c

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def _send(self, frame: bytes) -> None:
        self.client.publish("linli/node/%s/down" % self.node, frame, qos=1)

    def _poll(self, timeout: float) -> None:
        try:
            item = self._raw.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            topic, payload, retain = item
            if topic.endswith("/avail"):
                self.avail.append((payload, retain))
            else:
                self.inbox.put((payload, topic.split("/")[2]))
            try:
                item = self._raw.get_nowait()
            except queue.Empty:
                return


class SerialPeer(Peer):
    """The peer on the master side of a pty (``serial_pty``)."""

    def __init__(self, pty, *args, **kw):
        super().__init__(*args, **kw)
        self.pty = pty
        self.errors: list[str] = []

    def _send(self, frame: bytes) -> None:
        self.pty.write(wire(frame))

    def _poll(self, timeout: float) -> None:
        data = self.pty.read(4096, timeout)
        if not data:
            return
        for r in self.rx.feed_wire(data):
            if r.ok or r.counter:
                self.received(r)
            else:
                self.errors.append(r.reason.label)


def run_with(peer: Peer, run, timeout: float = 15.0, stop_after: float | None = None):
    """Pump ``peer`` while the firmware ``run`` (from mpy.start) goes on; return its RunResult.

    Ends when the firmware ends by itself (reset, deep sleep) or, with ``stop_after``, when that
    many seconds have passed (the harness then stops it)."""
    deadline = time.monotonic() + (stop_after if stop_after is not None else timeout)
    while run.proc.poll() is None and time.monotonic() < deadline:
        peer.pump(0.05)
    if stop_after is not None and run.proc.poll() is None:
        return run.wait(timeout=timeout, stop_after=0.01)
    r = run.wait(timeout=max(0.1, deadline - time.monotonic()))
    peer.pump(0.2)
    return r
