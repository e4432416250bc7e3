"""A node's identity on flash (``config.json`` + ``secrets.json``) and its key at the gateway.

``config.json`` is the board profile's pin section (``linli.hw.node_config``) plus the site, the
gateway's port and report intervals; ``secrets.json`` holds who the node is and its credentials.
Both are checked on the host by the firmware's own ``node/config.py`` before anything is written,
so a bad value is refused here, not on the lamp post::

    cfg, sec = node_files(Identity("bin-0001", "bin", "esp32-devkitc", "dong-3"), key,
                          Network("192.168.4.1", 1883, "linli", "pw"))

The key is 32 random bytes (``secrets.token_bytes``); it is printed only as a fingerprint. A
re-run keeps the key the board already has (unless ``--new-key``), so re-flashing never
breaks a registered node. Registration goes into the gateway's key store (``--keystore``) or an
export file (``--export``, the JSON lines ``KeyStore.export_lines`` writes and
``KeyStore.import_file`` reads).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import secrets as _secrets
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from linli import fwbuild
from linli.errors import KeyStoreError
from linli.flash.errors import PlanError, RegisterError

KEY_BYTES = 32


@dataclass(frozen=True)
class Identity:
    node_id: str
    role: str
    board: str
    site: str


@dataclass(frozen=True)
class Network:
    """How the node reaches the gateway: MQTT over Wi-Fi, or a serial line (``transport="serial"``)."""

    host: Optional[str] = None
    port: Optional[int] = None
    wifi_ssid: Optional[str] = None
    wifi_password: str = ""
    broker_password: str = ""
    transport: str = "mqtt"


def new_key() -> bytes:
    return _secrets.token_bytes(KEY_BYTES)


def fingerprint(key: bytes) -> str:
    """What the summary shows instead of the key: 8 hex digits of its SHA-256.

    >>> fingerprint(bytes(32))
    '66687aad'
    """
    return hashlib.sha256(key).hexdigest()[:8]


def _firmware_config():
    """The firmware's ``node/config.py``, loaded on CPython (``micropython.const`` is the identity)."""
    path = fwbuild.FIRMWARE / "lib" / "node" / "config.py"
    spec = importlib.util.spec_from_file_location("_linli_node_config", path)
    mod = importlib.util.module_from_spec(spec)
    shim = types.ModuleType("micropython")
    shim.const = lambda x: x
    saved = sys.modules.get("micropython")
    sys.modules["micropython"] = shim
    try:
        spec.loader.exec_module(mod)
    finally:
        if saved is None:
            sys.modules.pop("micropython", None)
        else:
            sys.modules["micropython"] = saved
    return mod


def check(config: dict, secrets: dict) -> dict:
    """Validate the two files as the node will at boot; PlanError("FILE: KEY ...") if it would refuse."""
    fw = _firmware_config()
    merged, src = {}, {}
    for name, data in (("config.json", config), ("secrets.json", secrets)):
        for k, v in data.items():
            if name == "config.json" and k in fw.SECRETS:
                raise PlanError(None, "%s: %s belongs in secrets.json" % (name, k))
            merged[k], src[k] = v, name
    try:
        return fw.validate(merged, src)
    except ValueError as exc:
        raise PlanError(None, "the node would refuse this config: %s" % exc) from None


def node_files(ident: Identity, key: bytes, net: Network, *, report_s: Optional[int] = None,
               health_s: Optional[int] = None) -> tuple[dict, dict]:
    """(config.json, secrets.json) for one node, validated like the firmware does at boot."""
    from linli import hw
    from linli.errors import HwError

    try:
        pins = hw.node_config(ident.board, ident.role)
    except HwError as exc:
        raise PlanError(None, str(exc)) from None
    config: dict = {
        "_about": "written by linli flash; pins from hw/boards/%s.toml" % ident.board,
        "_site": ident.site,
        "_board": ident.board,
    }
    config.update(pins)
    if net.transport != "mqtt":
        if pins.get("uart_tx") is None or pins.get("uart_rx") is None:
            # With no pins the ESP32's UART1 falls back to GPIO 9/10, the module's flash lines.
            raise PlanError(None, "hw/boards/%s.toml: roles.%s has no uart_tx/uart_rx for the serial link: "
                            "wire the radio or RS-485 adapter and add both pins to the profile, or use --transport mqtt"
                            % (ident.board, ident.role))
        config["transport"] = net.transport
    if net.port is not None:
        config["broker_port"] = net.port
    if report_s is not None:
        config["report_s"] = report_s
    if health_s is not None:
        config["health_s"] = health_s
    secrets = {"node_id": ident.node_id, "role": ident.role, "key": key.hex()}
    if net.transport == "mqtt":
        if not net.host:
            raise PlanError(None, "no gateway address: pass --gateway HOST[:PORT] (the gateway's broker)")
        if not net.wifi_ssid:
            raise PlanError(None, "no Wi-Fi network: pass --wifi-ssid (and --wifi-password or --secrets FILE)")
        secrets.update(wifi_ssid=net.wifi_ssid, wifi_password=net.wifi_password, broker_host=net.host,
                       broker_password=net.broker_password)
    check(config, secrets)
    return config, secrets


def encode(data: dict) -> bytes:
    """A file's bytes: stable key order, so an unchanged config hashes the same on a re-run."""
    return (json.dumps(data, indent=1, sort_keys=False) + "\n").encode()


def existing(raw: Optional[bytes]) -> Optional[dict]:
    """What a board's secrets.json says (node_id, role, key bytes), None if absent or unusable."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        key = bytes.fromhex(data["key"])
        if len(key) != KEY_BYTES:
            return None
        return {"node_id": str(data["node_id"]), "role": str(data["role"]), "key": key}
    except (ValueError, KeyError, TypeError):
        return None


def choose_key(found: Optional[dict], ident: Identity, renew: bool) -> tuple[bytes, str]:
    """(key, how): the board's own key when it is already this node, else a new one.

    ``how`` is ``kept``, ``new`` (no usable key on the board, or another node's) or ``renewed``.
    """
    same = found is not None and found["node_id"] == ident.node_id and found["role"] == ident.role
    if same and not renew:
        return found["key"], "kept"
    return new_key(), "renewed" if same else "new"


# -- registration ---------------------------------------------------------------------------

def _same_key(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def registered_in_export(path: Path, node: str) -> Optional[tuple[str, bytes]]:
    """(role, key) of ``node`` in an export file, None if absent."""
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            if rec["node"] == node:
                return rec["role"], bytes.fromhex(rec["key"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


class Registry:
    """Where keys go: the gateway's key store file, or an export file for it to import."""

    def __init__(self, keystore: Optional[Path] = None, export: Optional[Path] = None):
        if (keystore is None) == (export is None):
            raise PlanError(None, "say where the node's key goes: --keystore PATH (the gateway's keys.db) "
                                  "or --export FILE (a file the gateway imports)")
        self.keystore = Path(keystore) if keystore else None
        self.export = Path(export) if export else None

    @property
    def where(self) -> str:
        return "key store %s" % self.keystore if self.keystore else "export file %s" % self.export

    def conflict(self, node: str, role: str, key: bytes) -> Optional[str]:
        """Why registering would replace another key (None: new, or the same key and role)."""
        if self.keystore is not None:
            if not self.keystore.exists():
                return None
            from linli.keystore import KeyStore
            from linli.link import LinkKeys

            try:
                ks = KeyStore(self.keystore)
                try:
                    hit = ks.lookup(node)
                finally:
                    ks.close()
            except KeyStoreError as exc:
                raise RegisterError(None, "%s: fix or move it, then run again" % exc) from None
            if hit is None:
                return None
            keys, have_role = hit
            if have_role.label == role and _same_key(keys.mac_key, LinkKeys(key).mac_key):
                return None
            return "%s is registered in %s with another key or role" % (node, self.keystore)
        hit = registered_in_export(self.export, node)
        if hit is None or (hit[0] == role and _same_key(hit[1], key)):
            return None
        return "%s is in %s with another key or role" % (node, self.export)

    def add(self, node: str, role: str, key: bytes, *, replace: bool) -> str:
        """Register; returns where. The key store is 0600; so is an export file."""
        if self.keystore is not None:
            from linli.keystore import KeyStore

            try:
                ks = KeyStore(self.keystore)
                try:
                    ks.add(node, role, key, replace=replace)
                finally:
                    ks.close()
            except KeyStoreError as exc:
                raise RegisterError(None, "%s: run again with --new-key to give the node a new key" % exc) from None
            return self.where
        lines = []
        if self.export.exists():
            for line in self.export.read_text().splitlines():
                try:
                    if json.loads(line).get("node") == node:
                        continue
                except ValueError:
                    pass
                if line.strip():
                    lines.append(line + "\n")
        from linli.keystore import KeyStore

        lines.append(KeyStore.export_lines([(node, role, key)]))
        self.export.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.export.with_name(self.export.name + ".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(lines))
        os.replace(tmp, self.export)
        return self.where


def import_keys(export: Path, keystore: Path, *, replace: bool = False) -> int:
    """Load an export file into the gateway's key store (``linli flash --import-keys``)."""
    from linli.keystore import KeyStore

    if not Path(export).is_file():
        raise PlanError(str(export), "no such export file")
    try:
        ks = KeyStore(keystore)
        try:
            return ks.import_file(export, replace=replace)
        finally:
            ks.close()
    except KeyStoreError as exc:
        raise RegisterError(None, "%s (pass --new-key to replace keys that changed)" % exc) from None
