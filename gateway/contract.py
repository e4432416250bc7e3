"""The upstream contract: CloudEvents 1.0 (JSON, structured mode) on ``linli/v1/...`` topics.

Everything a backend sees is defined here: topics, the CloudEvents envelope and its extension
attributes (``seq``, ``chain``, ``prevhash``, ``hash``, ``hashalg``), the canonical JSON the
hash chain is computed over (RFC 8785, JCS), the retained status and node-state messages, the
MQTT 5 user properties, and the JSON Schemas / AsyncAPI document generated from
:data:`linli.events.EVENT_TYPES` (``python -m linli.contract --write docs`` regenerates
docs/asyncapi.yaml and docs/schemas/; a test fails when they are stale).

>>> c = Contract("xinhua-1", "gw-01")
>>> c.event_topic("bin.full")
'linli/v1/xinhua-1/gw-01/events/bin.full'
>>> canonical_json({"b": 1.0, "a": [1e21, 1e-7, "\\u00e9"]})
b'{"a":[1e+21,1e-7,"\\xc3\\xa9"],"b":1}'
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from linli import __version__
from linli.errors import LinliError
from linli.events import EVENT_TYPES, Event

SPECVERSION = "1.0"
TYPE_PREFIX = "linli."
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
GENESIS = "0" * 64  # prevhash of the first event of a chain
HASHALG_PLAIN = "sha256"
HASHALG_KEYED = "hmac-sha256"
# The CloudEvents context attributes a producer sets; everything else is ``data``.
EXTENSIONS = ("seq", "chain", "prevhash", "hash", "hashalg")

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_NODE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ContractError(LinliError, ValueError):
    """Something cannot be expressed in the upstream contract (a bad name, a non-JSON value)."""


# -- canonical JSON (RFC 8785) -----------------------------------------------------------------
def _es_number(x: float) -> str:
    """Format a float as ECMAScript's Number.prototype.toString does (RFC 8785 section 3.2.2.3)."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ContractError("NaN and infinities are not JSON")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    r = repr(abs(x))  # shortest round-trip digits, the same digits ECMAScript picks
    mant, _, e = r.partition("e")
    ip, _, fp = mant.partition(".")
    digits = ip + fp
    n = len(ip) + (int(e) if e else 0)  # decimal point sits after n digits
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    d = stripped.rstrip("0") or "0"
    k = len(d)
    if k <= n <= 21:
        s = d + "0" * (n - k)
    elif 0 < n <= 21:
        s = d[:n] + "." + d[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * (-n) + d
    else:
        ex = n - 1
        s = (d if k == 1 else d[0] + "." + d[1:]) + "e" + ("+" if ex >= 0 else "-") + str(abs(ex))
    return sign + s


_dumps_str = json.JSONEncoder(ensure_ascii=False).encode
# The C string encoder behind it (what the C JSON encoder writes for a str with ensure_ascii=False).
_jstr = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.py_encode_basestring


def _enc(v: Any, out: list) -> None:
    if isinstance(v, str):
        out.append(_dumps_str(v))
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif v is None:
        out.append("null")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        out.append(_es_number(v))
    elif isinstance(v, dict):
        keys = list(v)
        for k in keys:
            if not isinstance(k, str):
                raise ContractError("object key %r is not a string" % (k,))
        # RFC 8785 sorts by UTF-16 code units; for ASCII keys that is plain string order.
        keys.sort(key=None if all(k.isascii() for k in keys) else (lambda k: k.encode("utf-16-be")))
        out.append("{")
        first = True
        for k in keys:
            if not first:
                out.append(",")
            first = False
            out.append(_dumps_str(k))
            out.append(":")
            _enc(v[k], out)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _enc(item, out)
        out.append("]")
    else:
        raise ContractError("%s is not JSON" % type(v).__name__)


_fast_dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode


def _plain(v: Any) -> bool:
    """True when Python's C JSON encoder already writes ``v`` exactly as RFC 8785 does: ASCII
    keys, and floats that are non-integral within [1e-4, 1e16) (where Python's repr and
    ECMAScript's number formatting agree)."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return True
    if t is float:
        a = abs(v)
        return 1e-4 <= a < 1e16 and not a.is_integer()
    if t is dict:
        for k, x in v.items():
            if type(k) is not str or not k.isascii() or not _plain(x):
                return False
        return True
    if t is list or t is tuple:
        for x in v:
            if not _plain(x):
                return False
        return True
    return False  # subclasses and the rest: let the careful encoder decide


def canonical_json(value: Any, plain: Optional[bool] = None) -> bytes:
    """The RFC 8785 (JCS) serialization of ``value`` as UTF-8: what the hash chain covers.

    ``plain=True`` skips the check that the fast encoder is exact (the caller checked)."""
    if plain or (plain is None and _plain(value)):
        return _fast_dumps(value).encode("utf-8")
    out: list = []
    _enc(value, out)
    return "".join(out).encode("utf-8")


def event_hash(ce: dict, key: Optional[bytes] = None, *, plain: Optional[bool] = None) -> str:
    """The ``hash`` attribute of a CloudEvent: SHA-256 (or HMAC-SHA256 with ``key``) over the
    canonical JSON of the event without its ``hash`` member.

    >>> event_hash({"id": "1", "prevhash": GENESIS})[:16]
    '281c44e89776b6be'
    """
    body = canonical_json({k: v for k, v in ce.items() if k != "hash"}, plain)
    if key is not None:
        return hmac.new(key, body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


def rfc3339(t: float) -> str:
    """``2025-11-28T09:30:00.123Z`` (UTC, milliseconds)."""
    # Events of one batch mostly share their time (nodes stamp whole seconds): remember the
    # last few texts instead of formatting each (this runs once per event stored).
    s = _rfc3339_memo.get(t)
    if s is None:
        dt = datetime.fromtimestamp(t, timezone.utc)
        # %-formatting, not strftime(): the same text (years 1000-9999) at a third of the cost.
        s = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond // 1000)
        if len(_rfc3339_memo) >= 256:
            _rfc3339_memo.clear()
        _rfc3339_memo[t] = s
    return s


_rfc3339_memo: dict = {}


# -- topics and envelopes ----------------------------------------------------------------------
@dataclass(frozen=True)
class Contract:
    """Names for one gateway: ``site`` and ``gateway`` are 1-32 chars of a-z, 0-9 and '-'.

    >>> c = Contract("xinhua-1", "gw-01")
    >>> c.status_topic, c.node_state_topic("bin-0001")
    ('linli/v1/xinhua-1/gw-01/status', 'linli/v1/xinhua-1/gw-01/nodes/bin-0001/state')
    >>> c.ce_source("node/bin-0001")
    '/linli/xinhua-1/gw-01/node/bin-0001'
    """

    site: str
    gateway: str

    def __post_init__(self):
        for key in ("site", "gateway"):
            if not _NAME.match(getattr(self, key)):
                raise ContractError("%s %r must be 1-32 chars of a-z, 0-9 and '-'" % (key, getattr(self, key)))

    @property
    def prefix(self) -> str:
        return "linli/v1/%s/%s" % (self.site, self.gateway)

    def event_topic(self, type: str) -> str:
        return "%s/events/%s" % (self.prefix, type)

    @property
    def status_topic(self) -> str:
        return self.prefix + "/status"

    def node_state_topic(self, node: str) -> str:
        if not _NODE.match(node):
            raise ContractError("node id %r cannot be a topic level (A-Z a-z 0-9 . _ -)" % node)
        return "%s/nodes/%s/state" % (self.prefix, node)

    def ce_source(self, event_source: str) -> str:
        return "/linli/%s/%s/%s" % (self.site, self.gateway, event_source)

    def cloudevent(self, ev: Event, *, seq: int, chain: str, prevhash: str, key: Optional[bytes] = None) -> dict:
        """The CloudEvent (a dict) for ``ev`` at position ``seq`` of the chain, with its hash.

        >>> from linli.events import new_event
        >>> ev = new_event("bin.tipped", node="bin-1", data={"tilt_deg": 80}, at=0)
        >>> ce = Contract("s", "g").cloudevent(ev, seq=1, chain="c0ffee", prevhash=GENESIS)
        >>> ce["type"], ce["source"], ce["subject"], ce["time"], ce["seq"]
        ('linli.bin.tipped', '/linli/s/g/node/bin-1', 'bin-1', '1970-01-01T00:00:00.000Z', 1)
        >>> ce["hash"] == event_hash(ce)
        True
        """
        return self.encode(ev, seq=seq, chain=chain, prevhash=prevhash, key=key)[0]

    def encode(self, ev: Event, *, seq: int, chain: str, prevhash: str, key: Optional[bytes] = None) -> tuple[dict, bytes]:
        """The CloudEvent and its published bytes (its canonical JSON, ``hash`` included)."""
        fast = self.encode_fast(ev, seq=seq, chain=chain, prevhash=prevhash, key=key)
        source = fast[0] if fast is not None else self.ce_source(ev.source)
        ce = {
            "specversion": SPECVERSION,
            "id": ev.id,
            "source": source,
            "type": TYPE_PREFIX + ev.type,
            "time": rfc3339(ev.time),
            "datacontenttype": "application/json",
            "data": ev.data,
            "seq": seq,
            "chain": chain,
            "prevhash": prevhash,
            "hashalg": HASHALG_KEYED if key is not None else HASHALG_PLAIN,
        }
        if ev.subject is not None:
            ce["subject"] = ev.subject
        if fast is not None:
            ce["hash"] = fast[1]
            return ce, fast[2]
        ce["hash"] = event_hash(ce, key)
        return ce, canonical_json(ce)

    def encode_fast(self, ev: Event, *, seq: int, chain: str, prevhash: str, key: Optional[bytes] = None) -> Optional[tuple[str, str, bytes]]:
        """``(CloudEvents source, hash, published bytes)`` of ``ev``, exactly as :meth:`encode`
        writes them, or None when the event needs the careful RFC 8785 encoder (floats outside
        the range where Python and ECMAScript agree, non-ASCII keys; then call :meth:`encode`).

        The outbox calls this once per stored event: the envelope is a fixed template in
        canonical key order (chain data datacontenttype [hash] hashalg id prevhash seq source
        specversion subject time type), so only ``data`` goes through the JSON encoder, and
        the hash is one hashlib call over the document without ``hash``.
        """
        data, subject, src = ev.data, ev.subject, ev.source
        if not (type(seq) is int and type(ev.id) is str and type(chain) is str and type(prevhash) is str and type(src) is str and (subject is None or type(subject) is str) and _plain(data)):
            return None
        source = "/linli/%s/%s/%s" % (self.site, self.gateway, src)
        head = '{"chain":%s,"data":%s,"datacontenttype":"application/json",' % (_jstr(chain), _fast_dumps(data))
        tail = '"hashalg":"%s","id":%s,"prevhash":%s,"seq":%d,"source":%s,"specversion":"1.0",%s"time":"%s","type":%s}' % (
            HASHALG_PLAIN if key is None else HASHALG_KEYED,
            _jstr(ev.id),
            _jstr(prevhash),
            seq,
            _jstr(source),
            "" if subject is None else '"subject":%s,' % _jstr(subject),
            rfc3339(ev.time),
            _jstr(TYPE_PREFIX + ev.type),
        )
        head_b, tail_b = head.encode("utf-8"), tail.encode("utf-8")
        body = head_b + tail_b
        h = hmac.digest(key, body, "sha256").hex() if key is not None else hashlib.sha256(body).hexdigest()
        return source, h, b'%s"hash":"%s",%s' % (head_b, h.encode("ascii"), tail_b)

    def status(self, state: str, **extra) -> bytes:
        """The retained status message (``online``/``offline``), JSON.

        >>> json.loads(Contract("s", "g").status("offline", reason="lost"))["state"]
        'offline'
        """
        msg = {"state": state, "site": self.site, "gateway": self.gateway, "version": __version__}
        msg.update(extra)
        return canonical_json(msg)

    def node_state(self, node: str, state: dict, at: float) -> bytes:
        """The retained node-state snapshot: ``{"node", "time", "state": {...}}``."""
        return canonical_json({"node": node, "time": rfc3339(at), "state": state})


def short_type(ce_type: str) -> str:
    """``linli.bin.full`` -> ``bin.full``."""
    return ce_type[len(TYPE_PREFIX):] if ce_type.startswith(TYPE_PREFIX) else ce_type


def user_properties(ce: dict) -> list[tuple[str, str]]:
    """The MQTT 5 user properties mirroring a CloudEvent (the CloudEvents MQTT binding names)."""
    return [("specversion", SPECVERSION), ("id", ce["id"]), ("source", ce["source"]), ("type", ce["type"]), ("seq", str(ce["seq"]))]


# -- JSON Schemas and the AsyncAPI document ------------------------------------------------------
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def envelope_schema() -> dict:
    """What every linli CloudEvent has, whatever its type."""
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data", "seq", "chain", "prevhash", "hash", "hashalg"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "minLength": 1, "description": "unique per event; with source, the deduplication key"},
            "source": {"type": "string", "pattern": "^/linli/[a-z0-9-]+/[a-z0-9-]+/[A-Za-z0-9._/-]+$", "description": "/linli/{site}/{gateway}/{node/ID | camera/NAME | gateway}"},
            "type": {"type": "string", "pattern": "^linli\\.[a-z0-9_.]+$"},
            "time": {"type": "string", "format": "date-time", "description": "when it happened (RFC 3339, UTC)"},
            "subject": {"type": "string", "description": "the node id, when the event is about a node"},
            "datacontenttype": {"const": "application/json"},
            "data": {"type": "object"},
            "seq": {"type": "integer", "minimum": 1, "description": "per-gateway sequence number, +1 per event, never reused within a chain"},
            "chain": {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "id of the gateway's chain (a new one only if its outbox database is lost)"},
            "prevhash": dict(_HEX64, description="hash of the event with seq - 1 (64 zeros for seq 1)"),
            "hash": dict(_HEX64, description="hashalg over the RFC 8785 canonical JSON of this event without `hash`"),
            "hashalg": {"enum": [HASHALG_PLAIN, HASHALG_KEYED]},
        },
        "additionalProperties": True,
    }


def event_schema(type: str) -> dict:
    """The self-contained JSON Schema of a whole CloudEvent of one type (docs/schemas/TYPE.json)."""
    et = EVENT_TYPES[type]
    env = envelope_schema()
    env["properties"]["type"] = {"const": TYPE_PREFIX + type}
    env["properties"]["data"] = et.data
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": "urn:linli:schema:v1:" + type,
        "title": "linli %s (CloudEvent)" % type,
        "description": et.summary + " Priority: %s." % et.priority.name.lower(),
        **env,
        "examples": [example_event(type)],
    }


def example_event(type: str) -> dict:
    """A complete, correctly hashed example CloudEvent of ``type`` (for docs and tests)."""
    from linli.events import new_event

    et = EVENT_TYPES[type]
    node = None if type.startswith(("gateway.", "garbage.", "bin.overflow.")) else "bin-0001"
    source = "camera/%s" % et.example["camera"] if "camera" in et.example else None
    ev = new_event(type, node=node, source=source, data=et.example, at=1764322200.0)
    ev.id = "9f1b6c2e0d7a4b3c8e5f1a2b3c4d5e6f"
    return Contract("xinhua-1", "gw-01").cloudevent(ev, seq=1042, chain="5e2a9d01c4b7f366", prevhash=hashlib.sha256(b"example").hexdigest())


STATUS_SCHEMA = {
    "$schema": SCHEMA_DIALECT,
    "$id": "urn:linli:schema:v1:status",
    "title": "linli gateway status (retained; the offline one is also the last will)",
    "type": "object",
    "required": ["state", "site", "gateway"],
    "properties": {
        "state": {"enum": ["online", "offline"]},
        "site": {"type": "string"},
        "gateway": {"type": "string"},
        "version": {"type": "string"},
        "reason": {"type": "string", "description": "for offline: 'shutdown' (clean stop) or 'lost' (the broker published the last will)"},
        "since": {"type": "string", "format": "date-time"},
        "protocol": {"enum": ["5", "3.1.1"]},
        "chain": {"type": "string"},
        "seq": {"type": "integer", "description": "the last sequence number stored when this connection started"},
    },
    "additionalProperties": True,
}

NODE_STATE_SCHEMA = {
    "$schema": SCHEMA_DIALECT,
    "$id": "urn:linli:schema:v1:node-state",
    "title": "linli node state snapshot (retained, latest only)",
    "type": "object",
    "required": ["node", "time", "state"],
    "properties": {
        "node": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "state": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": False,
}


def _cid(type: str) -> str:
    return type.replace(".", "_")


def asyncapi_document() -> dict:
    """The AsyncAPI 3.0 document of everything the gateway publishes upstream."""
    params = {
        "site": {"$ref": "#/components/parameters/site"},
        "gateway": {"$ref": "#/components/parameters/gateway"},
    }
    channels: dict = {}
    operations: dict = {}
    messages: dict = {}
    schemas: dict = {"CloudEventEnvelope": envelope_schema()}
    for type, et in EVENT_TYPES.items():
        cid = _cid(type)
        data = dict(et.data)
        schemas[cid] = {
            "allOf": [
                {"$ref": "#/components/schemas/CloudEventEnvelope"},
                {"type": "object", "properties": {"type": {"const": TYPE_PREFIX + type}, "data": data}},
            ]
        }
        messages[cid] = {
            "name": TYPE_PREFIX + type,
            "title": type,
            "summary": et.summary,
            "contentType": "application/cloudevents+json",
            "payload": {"$ref": "#/components/schemas/%s" % cid},
            "correlationId": {"description": "CloudEvents id (with source, the deduplication key)", "location": "$message.payload#/id"},
            "examples": [{"name": "example", "payload": example_event(type)}],
        }
        channels[cid] = {
            "address": "linli/v1/{site}/{gateway}/events/%s" % type,
            "title": type,
            "description": "%s Priority %s. QoS 1, not retained; ordered by `seq`." % (et.summary, et.priority.name.lower()),
            "parameters": params,
            "messages": {cid: {"$ref": "#/components/messages/%s" % cid}},
        }
        operations["publish_" + cid] = {
            "action": "send",
            "channel": {"$ref": "#/channels/%s" % cid},
            "messages": [{"$ref": "#/channels/%s/messages/%s" % (cid, cid)}],
            "bindings": {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}},
        }
    schemas["GatewayStatus"] = {k: v for k, v in STATUS_SCHEMA.items() if not k.startswith("$")}
    schemas["NodeState"] = {k: v for k, v in NODE_STATE_SCHEMA.items() if not k.startswith("$")}
    messages["status"] = {
        "name": "status",
        "title": "gateway status",
        "summary": "online when connected; offline (reason shutdown) on a clean stop; the last will says offline (reason lost).",
        "contentType": "application/json",
        "payload": {"$ref": "#/components/schemas/GatewayStatus"},
        "examples": [{"name": "online", "payload": json.loads(Contract("xinhua-1", "gw-01").status("online", since="2025-11-28T09:30:00.000Z", protocol="5", chain="5e2a9d01c4b7f366", seq=1041))}],
    }
    messages["node_state"] = {
        "name": "node_state",
        "title": "node state",
        "summary": "The latest state of one node (registry snapshot).",
        "contentType": "application/json",
        "payload": {"$ref": "#/components/schemas/NodeState"},
        "examples": [{"name": "bin", "payload": json.loads(Contract("xinhua-1", "gw-01").node_state("bin-0001", {"role": "bin", "availability": "online", "fill_pct": 42, "bat_v": 3.9}, 1764322200.0))}],
    }
    channels["status"] = {
        "address": "linli/v1/{site}/{gateway}/status",
        "title": "gateway status",
        "description": "Retained, QoS 1. Also the gateway's MQTT last will (offline).",
        "parameters": params,
        "messages": {"status": {"$ref": "#/components/messages/status"}},
    }
    channels["node_state"] = {
        "address": "linli/v1/{site}/{gateway}/nodes/{node}/state",
        "title": "node state",
        "description": "Retained, QoS 1: the latest snapshot per node.",
        "parameters": dict(params, node={"$ref": "#/components/parameters/node"}),
        "messages": {"node_state": {"$ref": "#/components/messages/node_state"}},
    }
    messages["snapshot"] = {
        "name": "snapshot",
        "title": "camera snapshot",
        "summary": "A JPEG referenced from a camera lifecycle event's data.snapshots[] (by id, sha256 and size): "
        "privacy masks blacked out and faces/people blurred before it was encoded (docs/privacy.md).",
        "contentType": "image/jpeg",
        "payload": {"type": "string", "format": "binary"},
    }
    channels["snapshot"] = {
        "address": "linli/v1/{site}/{gateway}/snapshots/{snapshot}",
        "title": "camera snapshots",
        "description": "QoS 1, not retained, published after the event that references it; re-sent until "
        "acknowledged and kept on the gateway no longer than its retention (vision.snapshot_retention_days).",
        "parameters": dict(params, snapshot={"description": "the snapshot id: <event id>-crop or <event id>-frame"}),
        "messages": {"snapshot": {"$ref": "#/components/messages/snapshot"}},
    }
    operations["publish_snapshot"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/snapshot"},
        "messages": [{"$ref": "#/channels/snapshot/messages/snapshot"}],
        "bindings": {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}},
    }
    for cid in ("status", "node_state"):
        operations["publish_" + cid] = {
            "action": "send",
            "channel": {"$ref": "#/channels/%s" % cid},
            "messages": [{"$ref": "#/channels/%s/messages/%s" % (cid, cid)}],
            "bindings": {"mqtt": {"qos": 1, "retain": True, "bindingVersion": "0.2.0"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "linli gateway upstream events",
            "version": "1.0.0",
            "description": (
                "What a linli gateway publishes to the backend broker. Every event is a CloudEvents 1.0 "
                "JSON document (structured mode) with the extension attributes seq, chain, prevhash, hash "
                "and hashalg; see docs/events.md for deduplication, ordering and chain verification. "
                "Generated from linli.events by `python -m linli.contract --write docs`; do not edit by hand."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "backend": {
                "host": "{broker}:8883",
                "protocol": "secure-mqtt",
                "description": "The backend's MQTT broker (MQTT 5 preferred, 3.1.1 accepted), TLS with client certificates.",
                "variables": {"broker": {"default": "mqtt.example.com", "description": "broker host name"}},
                "security": [{"$ref": "#/components/securitySchemes/clientCertificate"}, {"$ref": "#/components/securitySchemes/password"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "parameters": {
                "site": {"description": "site (community) id, 1-32 chars of a-z, 0-9 and '-'"},
                "gateway": {"description": "gateway id within the site"},
                "node": {"description": "node id (A-Z a-z 0-9 . _ -)"},
            },
            "securitySchemes": {
                "clientCertificate": {"type": "X509", "description": "TLS client certificate signed by the backend's CA"},
                "password": {"type": "userPassword", "description": "MQTT username and password"},
            },
        },
    }


# -- a small YAML writer (block style, JSON-quoted strings) -------------------------------------
_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$-]*$")


def _ykey(k: str) -> str:
    return k if _PLAIN_KEY.match(k) and k not in ("true", "false", "null", "yes", "no", "on", "off") else json.dumps(k)


def _yscalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(v, ensure_ascii=False)


def to_yaml(v: Any, indent: int = 0) -> str:
    """Dump plain JSON data as block-style YAML (strings double-quoted, so always unambiguous)."""
    pad = "  " * indent
    lines = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                lines.append("%s%s:" % (pad, _ykey(k)))
                lines.append(to_yaml(x, indent + 1))
            else:
                lines.append("%s%s: %s" % (pad, _ykey(k), "{}" if x == {} and isinstance(x, dict) else "[]" if x == [] and isinstance(x, list) else _yscalar(x)))
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, (dict, list)) and x:
                inner = to_yaml(x, indent + 1)
                lines.append("%s- %s" % (pad, inner.lstrip()))
            else:
                lines.append("%s- %s" % (pad, "{}" if isinstance(x, dict) else "[]" if isinstance(x, list) else _yscalar(x)))
    else:
        lines.append(pad + _yscalar(v))
    return "\n".join(lines)


def generated_docs() -> dict[str, str]:
    """Relative path under docs/ -> file text, for every generated contract file."""
    out = {"asyncapi.yaml": "# Generated by `python -m linli.contract --write docs` from gateway/events.py; do not edit.\n" + to_yaml(asyncapi_document()) + "\n"}
    for type in EVENT_TYPES:
        out["schemas/%s.json" % type] = json.dumps(event_schema(type), indent=2, ensure_ascii=False) + "\n"
    out["schemas/status.json"] = json.dumps(STATUS_SCHEMA, indent=2) + "\n"
    out["schemas/node-state.json"] = json.dumps(NODE_STATE_SCHEMA, indent=2) + "\n"
    return out


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m linli.contract", description="regenerate docs/asyncapi.yaml and docs/schemas/*.json")
    p.add_argument("--write", metavar="DOCS_DIR", required=True)
    args = p.parse_args(argv)
    root = Path(args.write)
    for rel, text in generated_docs().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
