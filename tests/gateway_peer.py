"""Test helpers for running the whole gateway: a thread with its own loop, and a CPython node."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from pathlib import Path

from linli.config import Config
from linli.keystore import KeyStore
from linli.link import Kind, LinkKeys, Role, open_frame, seal
from linli.link.crypto import DOWN
from linli.link.frame import encode_body
from linli.service import Gateway

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


def gateway_toml(data_dir, local, upstream=None, extra="") -> str:
    up = (
        '[upstream]\nhost = "127.0.0.1"\nport = %d\ntls = false\nkeepalive = 10\n' % upstream.port
        if upstream
        else "[upstream]\nenabled = false\n"
    )
    return (
        '[gateway]\nsite = "test-site"\nid = "gw-1"\ndata_dir = "%s"\n'
        '[privacy]\nsite_secret = "0123456789abcdef-site"\n'
        '[local]\nhost = "127.0.0.1"\nport = %d\nkeepalive = 10\n%s'
        "[availability]\ncheck_s = 0.2\n%s" % (data_dir, local.port, up, extra)
    )


class GatewayThread:
    """Runs a Gateway on its own event loop in a thread (so tests can block on MQTT probes)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.gw: Gateway | None = None
        self.events: "queue.Queue" = queue.Queue()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.gw = Gateway(self.cfg, on_events=lambda evs: [self.events.put(e) for e in evs])
            await self.gw.start()

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> "GatewayThread":
        self._thread.start()
        self._ready.wait(20)
        if self._error:
            raise self._error
        return self

    def call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        if self.gw is not None and self.loop.is_running():
            self.call(self.gw.stop(), timeout=20)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class PeerNode:
    """A node speaking link v1 from CPython over the local broker (the firmware tests use the real one)."""

    def __init__(self, node_id: str, role: Role, broker, keystore_path):
        self.id, self.role = node_id, role
        raw_key = bytes([sum(node_id.encode()) % 251 + 1]) * 32
        self.keys = LinkKeys(raw_key)
        ks = KeyStore(keystore_path)
        ks.add(node_id, role.label, raw_key, replace=True)
        ks.close()
        self.counter = 0
        self.probe = broker.client(client_id="node-" + node_id, protocol=4)
        self.probe.connect()
        self.probe.subscribe("linli/node/%s/down" % node_id, qos=1)

    def send(self, kind: Kind, body: dict, *, counter: int | None = None, flags: int = 0) -> int:
        if counter is None:
            self.counter += 1
            counter = self.counter
        raw = seal(self.keys, kind, self.role, self.id, counter=counter, ts=int(time.time()), payload=encode_body(body), flags=flags)
        self.probe.publish("linli/node/%s/up" % self.id, raw, qos=1)
        return counter

    def down(self, timeout: float = 5.0):
        """The next downlink frame: (kind label, body)."""
        msg = self.probe.get(timeout)
        f = open_frame(msg.payload, lambda n: (self.keys, self.role), direction=DOWN)
        return f.kind.label, f.body

    def wait_ack(self, counter: int, timeout: float = 5.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            kind, body = self.down(end - time.monotonic())
            if kind == "ack" and body["c"] == counter:
                return body["r"]
        raise AssertionError("no ack for %d" % counter)

    def close(self):
        self.probe.close()


class Upstream:
    """The backend: subscribes to everything the gateway publishes upstream."""

    def __init__(self, broker):
        self.probe = broker.client(client_id="backend", protocol=5)
        self.probe.connect()
        self.probe.subscribe("linli/v1/#", qos=1)
        self.seen: list[dict] = []
        self.other: list = []

    def events(self, until_type: str | None = None, timeout: float = 10.0, count: int | None = None) -> list[dict]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if until_type and any(e["type"] == "linli." + until_type for e in self.seen):
                break
            if count is not None and len(self.seen) >= count:
                break
            try:
                msg = self.probe.get(max(0.05, end - time.monotonic()))
            except queue.Empty:
                break
            if "/events/" in msg.topic:
                self.seen.append(json.loads(msg.payload))
            else:
                self.other.append(msg)
        return self.seen

    def of(self, type_: str) -> list[dict]:
        return [e for e in self.seen if e["type"] == "linli." + type_]

    def close(self):
        self.probe.close()


def validator(type_: str):
    import jsonschema

    schema = json.loads((SCHEMAS / ("%s.json" % type_)).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
