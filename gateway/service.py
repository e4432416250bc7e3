"""`linli run`: the gateway service, one asyncio loop.

Wires the parts together: the node key store, the outbox (SQLite, also holding the registry
and replay state), ingest (local Mosquitto + serial ports), the rules, the pet registry, backend
commands, the uplink, and the periodic availability / command-timeout checks.

>>> # linli run --config gateway.toml
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import time
import uuid
from dataclasses import asdict
from typing import Callable, Optional

from linli import __version__
from linli import commands as cmdstore
from linli.config import Config
from linli.errors import CommandError
from linli.events import Event, new_event
from linli.ingest import Ingest
from linli.keystore import KeyStore
from linli.link import Reason
from linli.link.serial import Decoder, wire
from linli.node_mqtt import NodeBroker
from linli.outbox import Outbox
from linli.pets import PetRegistry, RegistryError
from linli.serial_ports import SerialPort

log = logging.getLogger("linli.service")


def config_digest(cfg: Config) -> str:
    """SHA-256 of the effective config without secrets (shows upstream which config runs)."""
    d = asdict(cfg)
    d.pop("site_secret", None)
    for sec in ("local", "upstream"):
        d[sec].pop("password", None)
    d["pets"].pop("tag_key", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


class Gateway:
    """The running gateway. ``await Gateway(cfg).start()`` ... ``await gw.stop()``."""

    def __init__(self, cfg: Config, *, on_events: Optional[Callable[[list[Event]], None]] = None):
        self.cfg = cfg
        self.on_events = on_events
        self.keystore = KeyStore(cfg.gateway.data_dir / "keys.db")
        self.pets = PetRegistry(cfg.gateway.data_dir / "pets.json", tag_key=cfg.pets.tag_key)
        self.outbox: Optional[Outbox] = None
        self.uplink = None
        self.ingest: Optional[Ingest] = None
        self.node_broker: Optional[NodeBroker] = None
        self.ports: list[SerialPort] = []
        self._decoders: dict[str, Decoder] = {}
        self._tasks: list[asyncio.Task] = []
        self.started = asyncio.Event()

    @property
    def prefix(self) -> str:
        return "linli/v1/%s/%s" % (self.cfg.gateway.site, self.cfg.gateway.id)

    async def start(self) -> "Gateway":
        cfg = self.cfg
        cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = await Outbox.from_config(cfg)
        self.ingest = Ingest(cfg, self.keystore.lookup, self.outbox, self.pets, stage_state=self._stage_state)
        self.ingest.on_events = self.on_events
        await self.ingest.start()
        await self.outbox.add([new_event("gateway.started", data={"version": __version__, "config_digest": config_digest(cfg)})])
        if cfg.upstream.enabled:
            from linli.uplink import Uplink, UplinkSettings

            self.uplink = Uplink(UplinkSettings.from_config(cfg.upstream, client_id=cfg.upstream.client_id or "linli-%s-%s" % (cfg.gateway.site, cfg.gateway.id)), self.outbox)
            self.uplink.subscribe(self.prefix + "/commands/+", self._on_command)
            self.uplink.subscribe("linli/v1/%s/pets/registry" % cfg.gateway.site, self._on_pets)
            await self.uplink.start()
        if cfg.local.enabled:
            self.node_broker = NodeBroker(cfg.local, self._on_mqtt_frame)
            await self.node_broker.start()
        for sec in cfg.serial:
            port = SerialPort(sec, self._on_serial_bytes)
            self.ports.append(port)
            await port.start()
        self._tasks.append(asyncio.create_task(self._periodic(), name="periodic"))
        self.started.set()
        log.info("gateway %s/%s running: local broker %s, %d serial port(s), uplink %s", cfg.gateway.site, cfg.gateway.id, "on" if cfg.local.enabled else "off", len(self.ports), "on" if self.uplink else "off")
        return self

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        for port in self.ports:
            await port.stop()
        if self.node_broker:
            await self.node_broker.stop()
        if self.ingest:
            await self.ingest.stop()
        if self.uplink:
            await self.uplink.stop()
        if self.outbox:
            await self.outbox.close()
        self.keystore.close()

    # -- node side ---------------------------------------------------------------------------
    def _stage_state(self, conn, st) -> None:
        self.outbox.stage_node_state(conn, st.node, st.public())

    def _on_mqtt_frame(self, raw: bytes, node: str, reply) -> None:
        self.ingest.submit(raw, reply, topic_id=node, source="mqtt")

    def _on_serial_bytes(self, port: str, chunk: bytes, write) -> None:
        dec = self._decoders.setdefault(port, Decoder())

        async def reply(raw: bytes) -> None:
            await write(wire(raw))

        for reason, data in dec.feed(chunk):
            if reason is Reason.OK:
                self.ingest.submit(data, reply, source="serial:%s" % port)
            else:
                self.ingest.count_line_error(reason.label)

    # -- backend side (called on the loop by the uplink) -------------------------------------
    async def _on_command(self, topic: str, payload: bytes) -> None:
        node = topic.rsplit("/", 1)[-1]
        cmd_id, op = None, None
        try:
            msg = json.loads(payload)
            if not isinstance(msg, dict):
                raise CommandError("a command is a JSON object")
            cmd_id = msg.get("id") or uuid.uuid4().hex
            op = msg.get("op")
            if not isinstance(cmd_id, str) or not isinstance(op, str):
                raise CommandError("a command needs id (string) and op (string)")
            entry = self.keystore.lookup(node)
            if entry is None:
                raise CommandError("unknown node %r" % node)
            args = cmdstore.validate(entry[1].label, op, msg.get("args", {}))
            await self.outbox.transaction(lambda conn: cmdstore.enqueue(conn, cmd_id, node, op, args, float(msg.get("timeout_s", self.cfg.commands.timeout_s)), self.cfg.commands.max_pending_per_node))
        except (ValueError, CommandError) as exc:
            log.info("command for %s refused: %s", node, exc)
            await self.outbox.add([new_event("command.result", node=node if self.keystore.lookup(node) else None, data={"command_id": cmd_id, "op": op, "ok": False, "error": str(exc), "stage": "gateway"})])
            return
        await self.ingest.send_due(node)

    async def _on_pets(self, topic: str, payload: bytes) -> None:
        try:
            n = self.pets.update(json.loads(payload))
            log.info("pet registry updated: %d pets", n)
        except (ValueError, RegistryError) as exc:
            log.warning("pet registry from the backend refused, keeping the previous one: %s", exc)

    # -- periodic ----------------------------------------------------------------------------
    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.availability.check_s)
            try:
                await self.ingest.check_availability()
                rejected = self.ingest.rejection_events()
                if rejected:
                    await self.outbox.add(rejected)
                now = time.time()

                def expire(conn):
                    return cmdstore.expire(conn, now)

                expired = await self.outbox.transaction(expire)
                if expired:
                    await self.outbox.add([new_event("command.timeout", node=n, data={"command_id": c, "op": o, "deadline": now}) for n, c, o in expired])
            except Exception:
                log.exception("periodic check failed (will retry)")


async def run_until_signal(cfg: Config) -> int:
    gw = Gateway(cfg)
    await gw.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await gw.stop()
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run the gateway service")
    p.add_argument("--config", "-c", required=True, help="gateway.toml")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(handler=_main)


def _main(args) -> int:
    import sys

    from linli.errors import ConfigError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = Config.load(args.config)
    except ConfigError as exc:
        print("linli run: %s" % exc, file=sys.stderr)
        return 2
    return asyncio.run(run_until_signal(cfg))
