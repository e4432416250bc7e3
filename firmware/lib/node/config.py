"""Node configuration: defaults in code, ``config.json`` and ``secrets.json`` on flash, checked
once at boot by :func:`validate`, which raises ``ValueError`` naming the file and the bad key::

    from node import config
    cfg = config.load()        # dict; ValueError("config.json: report_s must be an int >= 5, got 'x'")

``secrets.json`` is written per node by ``linli flash`` and holds what identifies and
authenticates it::

    {"node_id": "bin-01", "role": "bin", "key": "<64 hex digits>",
     "wifi_ssid": "linli", "wifi_password": "...", "broker_host": "192.168.4.1",
     "broker_password": "..."}

or, on a serial line, ``"transport": "serial"`` with ``uart_id``/``uart_baud``/``uart_tx``/
``uart_rx`` (and ``uart_de`` on RS-485) instead of the Wi-Fi and broker keys. ``config.json`` holds the tunables below; any
key may sit in either file except the secrets (``key``, ``wifi_password``,
``broker_password``), which ``config.json`` may not hold. Keys starting with ``_`` are comments.
A role's own settings sit in an object under the role's name (``"bin": {"full_pct": 85}``) and
are checked by the role.

==================  ==========  =============================================================
key                 default     meaning
==================  ==========  =============================================================
node_id             (required)  1..16 chars of [A-Za-z0-9._-]; MQTT client id and user name
role                (required)  ``bin``, ``streetlight`` or ``petscan``
key                 (required)  the node's 32-byte link key, 64 hex digits
transport           ``mqtt``    ``mqtt`` (Wi-Fi) or ``serial`` (UART: RS-485 or a radio)
wifi_ssid           (mqtt)      the access point
wifi_password       ``""``
broker_host         (mqtt)      the gateway's broker; a name is resolved once at boot
broker_port         1883
broker_user         node_id
broker_password     ``""``
keepalive_s         60          MQTT keepalive; a PINGREQ goes out every half of it
uart_id             1           UART number, and its pins (null: the board's default)
uart_baud           115200
uart_tx, uart_rx    null
uart_de             null        RS-485 driver enable (DE, tied to /RE): high while sending; null: none
report_s            300         the role's reporting period
health_s            3600        health report period (telemetry: up, heap, q, drop, rssi, bat)
ack_timeout_s       10          resend a frame not acknowledged after this long
backoff_min_ms      500         reconnect backoff: doubles from min to max, with jitter
backoff_max_s       60
wifi_timeout_s      20          give up one Wi-Fi attempt after this long
wifi_reset_n        5           after this many failed attempts in a row, restart the Wi-Fi stack
queue_bytes         16384       offline queue bound (live frames, bytes) ...
queue_frames        64          ... and count (16 bytes of heap each, plus a quarter for alarms)
wdt_s               30          hardware watchdog timeout; 0 = no watchdog (bench only)
healthy_s           60          a boot that runs this long with its link up counts as healthy
safe_boots          3           this many boots in a row that never got healthy: safe mode
time_sync_s         21600       time sync period once synced (and at once while not synced)
sleep_flush_s       10          before deep sleep, wait this long at most for acks
bat_pin             null        ADC pin of the battery divider (null: no battery reading)
bat_div_pct         200         that divider's ratio in percent (200: the ADC sees half)
==================  ==========  =============================================================
"""

import json

from micropython import const

_INT = const(0)
_STR = const(1)
_ID = const(2)
_HEX32 = const(3)
_PIN = const(4)
_CHOICE = const(5)

ROLES = ("bin", "streetlight", "petscan")
SECRETS = ("key", "wifi_password", "broker_password")

# (key, default, kind, arg): arg is (min, max or None) for ints, the options for a choice.
# A default of None on a key that is not a pin means "required" (see _required()).
_SPEC = (
    ("node_id", None, _ID, None),
    ("role", None, _CHOICE, ROLES),
    ("key", None, _HEX32, None),
    ("transport", "mqtt", _CHOICE, ("mqtt", "serial")),
    ("wifi_ssid", None, _STR, None),
    ("wifi_password", "", _STR, None),
    ("broker_host", None, _STR, None),
    ("broker_port", 1883, _INT, (1, 65535)),
    ("broker_user", None, _STR, None),
    ("broker_password", "", _STR, None),
    ("keepalive_s", 60, _INT, (5, 3600)),
    ("uart_id", 1, _INT, (0, 2)),
    ("uart_baud", 115200, _INT, (1200, 2000000)),
    ("uart_tx", None, _PIN, None),
    ("uart_rx", None, _PIN, None),
    ("uart_de", None, _PIN, None),
    ("report_s", 300, _INT, (5, None)),
    ("health_s", 3600, _INT, (1, None)),
    ("ack_timeout_s", 10, _INT, (1, 3600)),
    ("backoff_min_ms", 500, _INT, (10, 60000)),
    ("backoff_max_s", 60, _INT, (1, 3600)),
    ("wifi_timeout_s", 20, _INT, (1, 300)),
    ("wifi_reset_n", 5, _INT, (1, 1000)),
    ("queue_bytes", 16384, _INT, (1024, None)),
    ("queue_frames", 64, _INT, (8, 1024)),
    ("wdt_s", 30, _INT, (0, 600)),
    ("healthy_s", 60, _INT, (1, 3600)),
    ("safe_boots", 3, _INT, (2, 100)),
    ("time_sync_s", 21600, _INT, (60, 604800)),
    ("sleep_flush_s", 10, _INT, (0, 600)),
    ("bat_pin", None, _PIN, None),
    ("bat_div_pct", 200, _INT, (100, 10000)),
)
# Role sections (objects), checked by the role itself; "diag" is the safe-mode role.
_SECTIONS = ("bin", "streetlight", "petscan", "diag")


def defaults():
    """The defaults in code, as a dict (required keys absent)."""
    d = {}
    for k, v, kind, _ in _SPEC:
        if v is not None or kind == _PIN:
            d[k] = v
    return d


def load(paths=("config.json", "secrets.json")):
    """Read the files in order (later ones win), then :func:`validate`; return the config.

    A missing file is fine (its keys keep their defaults); a file that is not a JSON object
    raises ``ValueError`` naming it.
    """
    cfg = {}
    src = {}
    for p in paths:
        try:
            f = open(p)
        except OSError:
            continue
        try:
            data = json.load(f)
        except ValueError as e:
            raise ValueError("%s: not valid JSON (%s)" % (p, e))
        finally:
            f.close()
        if not isinstance(data, dict):
            raise ValueError("%s: must hold a JSON object" % p)
        for k in data:
            if p.endswith("config.json") and k in SECRETS:
                raise ValueError("%s: %s belongs in secrets.json" % (p, k))
            cfg[k] = data[k]
            src[k] = p
    return validate(cfg, src)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _id_ok(s):
    if not isinstance(s, str) or not 1 <= len(s) <= 16:
        return False
    for c in s:
        if not (c.isalpha() or c.isdigit() or c in "._-") or ord(c) > 127:
            return False
    return True


def _hex32_ok(s):
    if not isinstance(s, str) or len(s) != 64:
        return False
    for c in s:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True


def _need(kind, arg):
    """What a key of this kind must be, for the error message."""
    if kind == _INT:
        if arg[1] is None:
            return "an int >= %d" % arg[0]
        return "an int from %d to %d" % arg
    if kind == _STR:
        return "a string"
    if kind == _ID:
        return "1..16 chars of [A-Za-z0-9._-]"
    if kind == _HEX32:
        return "64 hex digits (a 32-byte key)"
    if kind == _PIN:
        return "a pin number or null"
    return "one of %s" % ", ".join(arg)


def _ok(v, kind, arg):
    if kind == _INT:
        return _is_int(v) and arg[0] <= v and (arg[1] is None or v <= arg[1])
    if kind == _STR:
        return isinstance(v, str)
    if kind == _ID:
        return _id_ok(v)
    if kind == _HEX32:
        return _hex32_ok(v)
    if kind == _PIN:
        return v is None or (_is_int(v) and 0 <= v <= 48)
    return v in arg


def _required(cfg):
    """Keys that must be present given the transport."""
    req = ["node_id", "role", "key"]
    if cfg.get("transport", "mqtt") == "mqtt":
        req.append("wifi_ssid")
        req.append("broker_host")
    return req


def validate(cfg, src=None):
    """Check ``cfg`` (a dict of file values), fill in defaults and return a new dict.

    ``src`` maps each key to the file it came from, for messages; keys not in it are blamed on
    ``secrets.json`` if they are secrets or identity, else ``config.json``. Raises
    ``ValueError("FILE: KEY must be ..., got VALUE")`` for the first bad key, in the order of
    the table in the module docstring; unknown keys are refused too (a typo would otherwise be
    silently ignored).
    """
    src = src or {}
    out = defaults()
    for k in cfg:
        if k.startswith("_"):
            continue
        if k in _SECTIONS:
            if not isinstance(cfg[k], dict):
                raise ValueError("%s: %s must be an object, got %r" % (_src(src, k), k, cfg[k]))
            out[k] = cfg[k]
            continue
        known = False
        for row in _SPEC:
            if row[0] == k:
                known = True
                break
        if not known:
            raise ValueError("%s: unknown key %s" % (_src(src, k), k))
    req = _required(cfg)
    for k, _, kind, arg in _SPEC:
        if k not in cfg or (cfg[k] is None and kind != _PIN):
            if k in req:
                raise ValueError("%s: %s is required (%s)" % (_src(src, k), k, _need(kind, arg)))
            continue
        v = cfg[k]
        if not _ok(v, kind, arg):
            raise ValueError("%s: %s must be %s, got %r" % (_src(src, k), k, _need(kind, arg), v))
        out[k] = v
    if out.get("broker_user") is None:
        out["broker_user"] = out["node_id"]
    if out["backoff_min_ms"] > out["backoff_max_s"] * 1000:
        raise ValueError(
            "%s: backoff_min_ms must not exceed backoff_max_s * 1000, got %d"
            % (_src(src, "backoff_min_ms"), out["backoff_min_ms"])
        )
    return out


def _src(src, k):
    f = src.get(k)
    if f:
        return f
    if k in SECRETS or k in ("node_id", "role", "key", "wifi_ssid", "broker_host"):
        return "secrets.json"
    return "config.json"
