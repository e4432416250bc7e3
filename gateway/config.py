"""Gateway configuration: one TOML file, validated at load; errors name the file, key and rule.

Secrets never need to sit in the file: any secret value may be ``"env:NAME"`` (read from the
environment) or ``"file:/path"`` (first line of a file, e.g. a Docker/systemd credential).

>>> cfg = Config.from_text('''
... [gateway]
... site = "xinhua-1"
... id = "gw-01"
... [privacy]
... site_secret = "correct horse battery staple"
... ''', "gateway.toml")
>>> cfg.gateway.site, cfg.rules.bin_full_pct, cfg.local.port
('xinhua-1', 85.0, 1883)
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from linli.config_vision import CameraSection, PanelSection, VisionSection, read_cameras, read_panel, read_vision
from linli.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_NODE = re.compile(r"^[A-Za-z0-9._-]{1,16}$")


class _Reader:
    """Takes keys out of one TOML table, checking each; complains about leftovers."""

    def __init__(self, file: str, path: str, table: Any):
        self.file, self.path = file, path
        if table is None:
            table = {}
        if not isinstance(table, dict):
            self.fail("", "must be a table ([%s])" % path)
        self.table = dict(table)

    def key(self, name: str) -> str:
        return "%s.%s" % (self.path, name) if self.path else name

    def fail(self, name: str, msg: str):
        raise ConfigError(self.file, self.key(name) if name else self.path, msg)

    def take(self, name: str, kind, default: Any = ..., *, check=None, allowed: str = ""):
        if name not in self.table:
            if default is ...:
                self.fail(name, "is required%s" % (" (%s)" % allowed if allowed else ""))
            return default
        v = self.table.pop(name)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            self.fail(name, "must be %s, got %r" % (allowed or " or ".join(k.__name__ for k in kinds), v))
        if check is not None and not check(v):
            self.fail(name, "must be %s, got %r" % (allowed, v))
        return v

    def secret(self, name: str, default: Any = ...) -> Optional[str]:
        v = self.take(name, str, default, allowed="a string, 'env:NAME' or 'file:/path'")
        if v is None or v is ...:
            return v
        if v.startswith("env:"):
            if v[4:] not in os.environ:
                self.fail(name, "environment variable %s is not set" % v[4:])
            return os.environ[v[4:]]
        if v.startswith("file:"):
            try:
                return Path(v[5:]).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                self.fail(name, "cannot read secret file %s: %s" % (v[5:], exc))
        return v

    def done(self) -> None:
        if self.table:
            extra = sorted(self.table)[0]
            self.fail(extra, "unknown key (check the spelling; see docs/config.md)")


def _port(v):
    return 0 < v < 65536


def _pos(v):
    return v > 0


@dataclass(frozen=True)
class GatewaySection:
    site: str
    id: str
    data_dir: Path


@dataclass(frozen=True)
class BrokerSection:
    """An MQTT broker: the local one the nodes use, or the upstream one."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 1883
    username: Optional[str] = None
    password: Optional[str] = None
    client_id: Optional[str] = None
    keepalive: int = 30
    tls: bool = False
    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    protocol: str = "auto"
    client: str = "native"  # upstream only: "native" or "paho" (paho-mqtt 2)


@dataclass(frozen=True)
class SerialSection:
    port: str
    baudrate: int = 115200
    name: str = ""


@dataclass(frozen=True)
class RuleSection:
    """Thresholds; every key may be overridden per node under [rules.nodes."ID"]."""

    bin_full_pct: float = 85.0
    bin_empty_pct: float = 40.0
    bin_overflow_pct: float = 100.0
    fire_temp_c: float = 60.0
    fire_rise_c_per_min: float = 3.0
    tilt_deg: float = 45.0
    bin_battery_low_v: float = 3.45
    streetlight_battery_low_v: float = 11.6
    battery_hysteresis_v: float = 0.15
    deposit_points_per_kg: float = 10.0


@dataclass(frozen=True)
class AvailabilitySection:
    grace_s: float = 300.0
    heartbeat_misses: int = 3
    default_heartbeat_s: float = 60.0
    check_s: float = 5.0


@dataclass(frozen=True)
class OutboxSection:
    max_events: int = 200_000
    max_mb: float = 256.0


@dataclass(frozen=True)
class CommandSection:
    timeout_s: float = 86_400.0
    max_pending_per_node: int = 32


@dataclass(frozen=True)
class PetSection:
    """The pet registry: ``tag_key`` (hex, 32 bytes) verifies tag signatures (docs/protocol.md 7)."""

    tag_key: Optional[bytes] = None


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection
    site_secret: str
    local: BrokerSection = field(default_factory=BrokerSection)
    upstream: BrokerSection = field(default_factory=lambda: BrokerSection(enabled=False))
    serial: tuple[SerialSection, ...] = ()
    rules: RuleSection = field(default_factory=RuleSection)
    node_rules: dict = field(default_factory=dict)  # node id -> RuleSection
    availability: AvailabilitySection = field(default_factory=AvailabilitySection)
    outbox: OutboxSection = field(default_factory=OutboxSection)
    commands: CommandSection = field(default_factory=CommandSection)
    pets: PetSection = field(default_factory=PetSection)
    vision: VisionSection = field(default_factory=VisionSection)
    cameras: tuple[CameraSection, ...] = ()
    panel: PanelSection = field(default_factory=PanelSection)
    file: str = "<defaults>"

    def rules_for(self, node_id: str) -> RuleSection:
        return self.node_rules.get(node_id, self.rules)

    @property
    def db_path(self) -> Path:
        return self.gateway.data_dir / "gateway.db"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Config":
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(p), "", "cannot read the file: %s" % exc.strerror) from None
        return cls.from_text(text, str(p), base=p.parent)

    @classmethod
    def from_text(cls, text: str, file: str = "<text>", base: Path = Path(".")) -> "Config":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(file, "", "not valid TOML: %s" % exc) from None
        return cls.from_dict(data, file, base)

    @classmethod
    def from_dict(cls, data: dict, file: str = "<dict>", base: Path = Path(".")) -> "Config":
        top = _Reader(file, "", data)
        g = _Reader(file, "gateway", top.take("gateway", dict, allowed="a [gateway] table with site and id"))
        gw = GatewaySection(
            site=g.take("site", str, check=_NAME.match, allowed="1-32 chars of a-z, 0-9 and '-'"),
            id=g.take("id", str, check=_NAME.match, allowed="1-32 chars of a-z, 0-9 and '-'"),
            data_dir=(base / g.take("data_dir", str, "linli-data")).resolve(),
        )
        g.done()
        pr = _Reader(file, "privacy", top.take("privacy", dict, allowed="a [privacy] table with site_secret"))
        secret = pr.secret("site_secret")
        if len(secret) < 16:
            pr.fail("site_secret", "must be at least 16 characters (it keys the resident pseudonyms)")
        pr.done()
        local = _broker(file, "local", top.take("local", dict, {}), BrokerSection(), base)
        upstream = _broker(file, "upstream", top.take("upstream", dict, {"enabled": False}), BrokerSection(port=8883, tls=True), base)
        serials = []
        for i, s in enumerate(top.take("serial", list, [], allowed="an array of [[serial]] tables")):
            r = _Reader(file, "serial[%d]" % i, s)
            serials.append(
                SerialSection(
                    port=r.take("port", str, allowed="a device path such as /dev/ttyUSB0 or a pyserial URL"),
                    baudrate=r.take("baudrate", int, 115200, check=lambda v: v in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600), allowed="a standard baud rate (9600 .. 921600)"),
                    name=r.take("name", str, ""),
                )
            )
            r.done()
        names = [s.port for s in serials]
        if len(set(names)) != len(names):
            top.fail("serial", "the same port is listed twice")
        rt = top.take("rules", dict, {})
        nodes_tbl = rt.pop("nodes", {}) if isinstance(rt, dict) else {}
        rules = _section(_Reader(file, "rules", rt), RuleSection())
        if rules.bin_empty_pct >= rules.bin_full_pct:
            raise ConfigError(file, "rules.bin_empty_pct", "must be below rules.bin_full_pct (%s), got %s" % (rules.bin_full_pct, rules.bin_empty_pct))
        node_rules = {}
        if not isinstance(nodes_tbl, dict):
            raise ConfigError(file, "rules.nodes", "must be a table of node id -> overrides")
        for nid, over in nodes_tbl.items():
            if not _NODE.match(nid):
                raise ConfigError(file, "rules.nodes.%s" % nid, "is not a valid node id (1-16 chars of A-Z a-z 0-9 . _ -)")
            node_rules[nid] = _section(_Reader(file, "rules.nodes.%s" % nid, over), rules)
        cfg = cls(
            gateway=gw,
            site_secret=secret,
            local=local,
            upstream=upstream,
            serial=tuple(serials),
            rules=rules,
            node_rules=node_rules,
            availability=_section(_Reader(file, "availability", top.take("availability", dict, {})), AvailabilitySection()),
            outbox=_section(_Reader(file, "outbox", top.take("outbox", dict, {})), OutboxSection()),
            commands=_section(_Reader(file, "commands", top.take("commands", dict, {})), CommandSection()),
            pets=_pets(_Reader(file, "pets", top.take("pets", dict, {}))),
            vision=read_vision(_Reader(file, "vision", top.take("vision", dict, {})), base),
            cameras=read_cameras(file, top.take("camera", list, [], allowed="an array of [[camera]] tables"), base, lambda path, t: _Reader(file, path, t)),
            panel=read_panel(_Reader(file, "panel", top.take("panel", dict, {}))),
            file=file,
        )
        top.done()
        return cfg


def _section(r: _Reader, defaults):
    """Read every field of a flat dataclass of numbers, defaulting to ``defaults``."""
    values = {}
    for f in fields(defaults):
        d = getattr(defaults, f.name)
        kind = float if isinstance(d, float) else int
        values[f.name] = r.take(f.name, (int, float) if kind is float else int, d, check=_pos if kind is int else (lambda v: v >= 0), allowed="a positive number" if kind is float else "a positive integer")
        if kind is float:
            values[f.name] = float(values[f.name])
    r.done()
    return replace(defaults, **values)


def _pets(r: _Reader) -> PetSection:
    key = r.secret("tag_key", None)
    raw = None
    if key is not None:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            r.fail("tag_key", "must be 64 hex characters (a 32-byte key)")
    r.done()
    return PetSection(tag_key=raw)


def _broker(file: str, name: str, table, defaults: BrokerSection, base: Path) -> BrokerSection:
    r = _Reader(file, name, table)
    enabled = r.take("enabled", bool, True)
    tls = r.take("tls", bool, defaults.tls)

    def path(key):
        v = r.take(key, str, None)
        if v is None:
            return None
        p = (base / v).resolve()
        if enabled and not p.is_file():
            r.fail(key, "file %s does not exist" % p)
        return p

    b = BrokerSection(
        enabled=enabled,
        host=r.take("host", str, defaults.host),
        port=r.take("port", int, 8883 if tls else 1883, check=_port, allowed="a TCP port 1-65535"),
        username=r.take("username", str, None),
        password=r.secret("password", None),
        client_id=r.take("client_id", str, None),
        keepalive=r.take("keepalive", int, 30, check=lambda v: 5 <= v <= 3600, allowed="5..3600 seconds"),
        tls=tls,
        ca_file=path("ca_file"),
        cert_file=path("cert_file"),
        key_file=path("key_file"),
        protocol=r.take("protocol", str, "auto", check=lambda v: v in ("auto", "5", "3.1.1"), allowed="'auto', '5' or '3.1.1'"),
        client=r.take("client", str, "native", check=lambda v: v in ("native", "paho"), allowed="'native' or 'paho'") if name == "upstream" else "native",
    )
    if (b.cert_file is None) != (b.key_file is None):
        r.fail("cert_file" if b.cert_file is None else "key_file", "cert_file and key_file go together (client certificate)")
    if (b.cert_file or b.ca_file) and not b.tls:
        r.fail("tls", "must be true when ca_file or cert_file is set")
    r.done()
    return b
