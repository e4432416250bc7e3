"""`linli run`: the gateway service, one asyncio loop.

Wires the parts together: the node key store, the outbox (SQLite, also holding the registry
and replay state), ingest (local Mosquitto + serial ports), the rules, the pet registry, backend
commands, the uplink, the periodic availability / command-timeout checks and, when cameras are
configured, the vision pipeline: its snapshots go upstream on ``.../snapshots/{id}`` and its
health is written to ``data_dir/status/cameras.json`` every ~10 s (read by ``linli doctor``).

>>> # linli run --config gateway.toml
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import time
import uuid
from dataclasses import asdict
from pathlib import Path
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
STATUS_EVERY_S = 10.0  # cameras.json refresh
SNAPSHOT_RETRY_S = 5.0  # a snapshot the broker did not ack goes again after this (or a reconnect)
PRUNE_EVERY_S = 300.0
HEALTH_KEYS = ("state", "fps", "decode_ms", "inference_ms", "last_frame_age_s", "reconnects", "last_error")


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
        self.vision = None  # linli.vision.pipeline.VisionPipeline when cameras run
        self.panel = None  # linli.panel.Panel when [panel] is enabled and its pins could be claimed
        self.panel_error: Optional[str] = None
        self.snapshots = None  # linli.vision.snapshots.SnapshotStore
        self.vision_error: Optional[str] = None  # why the cameras are off (model failed)
        self.snapshot_stats = {"published": 0, "failed": 0, "unreadable": 0}
        self._snapshot_added = asyncio.Event()

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
            self.node_broker = NodeBroker(cfg.local, self._on_mqtt_frame, backlog=self.ingest.queue.qsize)
            await self.node_broker.start()
        for sec in cfg.serial:
            port = SerialPort(sec, self._on_serial_bytes)
            self.ports.append(port)
            await port.start()
        self._tasks.append(asyncio.create_task(self._periodic(), name="periodic"))
        if cfg.cameras:
            await self._start_vision()
        if cfg.panel.enabled:
            from linli import panel

            self._tasks.append(asyncio.create_task(panel.drive(self), name="panel"))
        self.started.set()
        log.info("gateway %s/%s running: local broker %s, %d serial port(s), uplink %s", cfg.gateway.site, cfg.gateway.id, "on" if cfg.local.enabled else "off", len(self.ports), "on" if self.uplink else "off")
        return self

    async def stop(self) -> None:
        if self.vision is not None:
            try:
                await self.vision.stop()
            except Exception:
                log.exception("stopping the cameras failed")
        if self.cfg.cameras:
            await self._write_camera_status()
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

    # -- cameras -----------------------------------------------------------------------------
    async def _start_vision(self) -> None:
        """Detector, privacy filter, snapshot store, pipeline. A model that cannot be loaded is
        reported (``vision.model_failed``, cameras.json) and the cameras run without detection,
        still watched; any other failure here is logged and turns the cameras off. Either way
        the nodes' side of the gateway keeps running."""
        try:
            await self._build_vision(asyncio.get_running_loop())
        finally:
            # cameras.json from now on, whatever happened (doctor reads why cameras are off).
            self._tasks.append(asyncio.create_task(self._camera_status(), name="camera-status"))

    async def _build_vision(self, loop) -> None:
        cfg, v = self.cfg, self.cfg.vision
        try:
            from linli.detector import DEFAULT_MODEL
            from linli.vision.pipeline import VisionPipeline, model_failed_event
            from linli.vision.privacy import PrivacyError, PrivacyFilter
            from linli.vision.snapshots import SnapshotStore

            detector, snapshots, privacy = None, None, None
            try:
                detector = await loop.run_in_executor(None, self._load_detector)
            except Exception as exc:  # DetectorError, or onnxruntime's own on a broken file
                model = v.model or DEFAULT_MODEL
                self.vision_error = "model %s cannot be loaded: %s" % (model, exc)
                log.error("camera detection disabled: %s", self.vision_error)
                await self.outbox.add([model_failed_event(model, exc)])
            if detector is not None:
                try:
                    # blur = false (only with a reason in the config) keeps the masks, drops the detectors.
                    privacy = PrivacyFilter() if v.blur else PrivacyFilter(faces=False, people=False)
                    snapshots = SnapshotStore(cfg.gateway.data_dir / "snapshots", retention_s=v.snapshot_retention_days * 86400.0, max_bytes=int(v.snapshot_max_mb * 1e6))
                except (PrivacyError, OSError, ValueError) as exc:
                    # No redaction, no images: events still go, without snapshots.
                    self.vision_error = "snapshots disabled: %s" % exc
                    log.error("cameras run without snapshots: %s", exc)
                    privacy = snapshots = None
            cams = [(c.spec(), c.source()) for c in cfg.cameras]
            self.vision = VisionPipeline(cams, detector, _VisionSink(self), threads=v.threads, state_dir=cfg.gateway.data_dir / "vision", snapshots=snapshots, privacy=privacy)
            await self.vision.start()
            self.snapshots = snapshots
        except Exception as exc:
            self.vision_error = "cameras could not start: %s" % exc
            log.exception("cameras disabled")
            if self.vision is not None:  # started in part: stop what runs
                try:
                    await self.vision.stop()
                except Exception:
                    log.exception("stopping the cameras failed")
            self.vision = None
            return
        if self.snapshots is not None:
            self._tasks.append(asyncio.create_task(self._snapshots(), name="snapshots"))
        log.info("%d camera(s) running%s", len(cfg.cameras), "" if detector else " without detection")

    def _load_detector(self):
        """In an executor: the configured model, or the shipped one (checked against its manifest)."""
        from linli.detector import Detector

        v = self.cfg.vision
        # Scores below the lowest camera threshold are never used: let the decoder drop them.
        conf = min([0.25] + [t for c in self.cfg.cameras for t in c.thresholds.values()])
        kw = {"threads": v.threads, "conf": max(conf, 0.01)}
        return Detector(v.model, **kw) if v.model else Detector.default(**kw)

    def camera_health(self) -> dict:
        """``{camera: {state, fps, decode_ms, inference_ms, last_frame_age_s, reconnects,
        last_error, ...}}`` for every configured camera (the shape of cameras.json)."""
        out: dict = {}
        live = {}
        if self.vision is not None:
            try:
                live = self.vision.health()
            except Exception as exc:
                log.warning("camera health unavailable: %s", exc)
        for c in self.cfg.cameras:
            h = dict.fromkeys(HEALTH_KEYS)
            h.update(state="degraded" if self.vision_error else "starting", reconnects=0)
            h.update(live.get(c.name) or {})
            if self.vision_error:
                h["last_error"] = self.vision_error
            out[c.name] = h
        return out

    async def _write_camera_status(self) -> None:
        doc = {"updated": time.time(), "cameras": self.camera_health()}
        if self.vision_error:
            doc["error"] = self.vision_error
        path = self.cfg.gateway.data_dir / "status" / "cameras.json"
        try:
            await asyncio.get_running_loop().run_in_executor(None, _write_atomic, path, json.dumps(doc, sort_keys=True, default=str))
        except Exception as exc:  # a full disk must not stop the cameras
            log.warning("cannot write %s: %s", path, exc)

    async def _camera_status(self) -> None:
        while True:
            await self._write_camera_status()
            await asyncio.sleep(STATUS_EVERY_S)

    async def _snapshots(self) -> None:
        """Publishes stored snapshots upstream, oldest first; one is marked sent only after its
        PUBACK, so a lost connection sends it again later. Prunes by retention and size. With
        no upstream, snapshots stay local until retention removes them."""
        from linli.vision.snapshots import SnapshotError

        store, loop = self.snapshots, asyncio.get_running_loop()
        last_prune = 0.0
        unreadable: set[str] = set()
        while True:
            self._snapshot_added.clear()
            try:
                if time.monotonic() - last_prune >= PRUNE_EVERY_S:
                    last_prune = time.monotonic()
                    await loop.run_in_executor(None, store.prune, time.time())
                if self.uplink is not None and self.uplink.stats.connected:
                    for ref in await loop.run_in_executor(None, store.pending):
                        if ref["id"] in unreadable:
                            continue
                        try:
                            data = await loop.run_in_executor(None, store.get, ref)
                        except SnapshotError as exc:  # altered on disk: never sent, aged out by prune
                            unreadable.add(ref["id"])
                            self.snapshot_stats["unreadable"] += 1
                            log.warning("snapshot not published: %s", exc)
                            continue
                        if not await self.uplink.publish_blob("%s/snapshots/%s" % (self.prefix, ref["id"]), data):
                            self.snapshot_stats["failed"] += 1
                            break
                        await loop.run_in_executor(None, store.mark_sent, ref)
                        self.snapshot_stats["published"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("snapshot publishing failed (will retry)")
            # Sleep until a new snapshot, the uplink (re)connecting, or the retry time.
            waiters = [asyncio.ensure_future(self._snapshot_added.wait())]
            if self.uplink is not None and not self.uplink.stats.connected:
                waiters.append(asyncio.ensure_future(self.uplink.wait_connected()))
            try:
                await asyncio.wait(waiters, timeout=SNAPSHOT_RETRY_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

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


class _VisionSink:
    """The pipeline's sink: its events go to the outbox (and ``on_events``), and a new
    snapshot wakes the publisher."""

    def __init__(self, gw: Gateway):
        self.gw = gw

    async def add(self, events, *args, **kwargs):
        r = await self.gw.outbox.add(events, *args, **kwargs)
        if self.gw.on_events:
            self.gw.on_events(events)
        self.gw._snapshot_added.set()
        return r


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
