"""`linli nodes`, `linli node NODE` and `linli events tail`: what the gateway knows, for a technician.

All three read the gateway's own files (``data_dir/gateway.db`` and ``keys.db``) read-only, so
they work whether or not the gateway is running and never disturb it.

* ``linli nodes``: one row per node: role, firmware, last seen, battery, RSSI, availability
  (worked out now from the last report, as the gateway does; registered nodes that never
  reported show "never").
* ``linli node NODE``: that node's state, its recent history (the gateway keeps the last 500
  frames and availability changes per node in ``node_history``), its events still waiting in
  the outbox (published events are deleted once the broker acks them) and pending commands.
* ``linli events tail``: follows events as they are published. With ``--source upstream`` it
  subscribes to ``linli/v1/{site}/{gateway}/events/#`` on the upstream broker with the gateway's
  own settings (TLS, credentials; a client id of its own) and shows exactly what the backend
  receives. With ``--source local`` it follows the outbox: events stored and not yet published,
  which is where they are when upstream is down. ``auto`` (the default) takes upstream when it
  connects and subscribes, else the outbox, and says which on stderr. Ctrl-C stops it cleanly.

>>> # linli nodes --config gateway.toml
>>> # linli events tail --config gateway.toml --type 'bin.*' --node bin-0001
"""

from __future__ import annotations

import fnmatch
import json
import queue
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from linli.config import Config
from linli.errors import ConfigError, LinliError

_COLS = ("node", "role", "fw", "last_seen", "bat", "rssi", "availability")


class NodesError(LinliError):
    """The gateway's state cannot be read (no database yet, unknown node)."""


def _ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise NodesError("no gateway database at %s yet: has `linli run` started once with this config?" % path)
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5.0)


def _has(conn, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


def registered(cfg: Config) -> dict[str, str]:
    """node -> role from the key store (empty when there is none)."""
    path = cfg.gateway.data_dir / "keys.db"
    if not path.exists():
        return {}
    conn = _ro(path)
    try:
        return dict(conn.execute("SELECT node, role FROM node_keys WHERE revoked=0"))
    finally:
        conn.close()


def node_rows(cfg: Config, now: Optional[float] = None) -> list[dict]:
    """Every node the gateway knows (registered or seen), with its availability as of ``now``.

    >>> # [{'node': 'bin-0001', 'role': 'bin', 'fw': '0.1.0', 'last_seen': 1764..., 'age_s': 12.0,
    >>> #   'bat': 3.9, 'rssi': -61, 'availability': 'online', 'registered': True}, ...]
    """
    from linli import registry

    now = time.time() if now is None else now
    keys = registered(cfg)
    states: dict = {}
    db = cfg.db_path
    if db.exists():
        conn = _ro(db)
        try:
            if _has(conn, "nodes"):
                states = registry.load_all(conn)
        finally:
            conn.close()
    a = cfg.availability
    out = []
    for node in sorted(set(keys) | set(states)):
        st = states.get(node)
        row = {"node": node, "role": st.role if st else keys[node], "registered": node in keys, "fw": None, "last_seen": None,
               "age_s": None, "bat": None, "rssi": None, "availability": "never"}
        if st is not None:
            row.update(fw=st.fw, last_seen=st.last_seen, bat=st.bat, rssi=st.rssi, safe_mode=st.safe_mode, queue=st.queue)
            if st.last_seen is not None:
                row["age_s"] = round(now - st.last_seen, 1)
                row["availability"] = registry.availability(st, now, a.grace_s, a.heartbeat_misses, a.default_heartbeat_s)
        out.append(row)
    return out


def age_text(s: Optional[float]) -> str:
    """'12 s ago', '5 min ago', '3.2 h ago', '2.0 days ago', or 'never'.

    >>> age_text(None), age_text(42), age_text(600), age_text(90000)
    ('never', '42 s ago', '10 min ago', '1.0 days ago')
    """
    if s is None:
        return "never"
    if s < 120:
        return "%d s ago" % max(0, s)
    if s < 7200:
        return "%d min ago" % (s // 60)
    if s < 86400:
        return "%.1f h ago" % (s / 3600)
    return "%.1f days ago" % (s / 86400)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def format_nodes(rows: list[dict]) -> str:
    if not rows:
        return "no nodes: none registered (linli flash) and none seen"
    body = [[r["node"], r["role"], r["fw"] or "-", age_text(r["age_s"]), "-" if r["bat"] is None else "%.2f V" % r["bat"],
             "-" if r["rssi"] is None else "%d dBm" % r["rssi"], r["availability"] + ("" if r["registered"] else " (not registered)")] for r in rows]
    return _table(body, ["NODE", "ROLE", "FIRMWARE", "LAST SEEN", "BATTERY", "RSSI", "AVAILABILITY"])


def node_detail(cfg: Config, node: str, *, limit: int = 20, now: Optional[float] = None) -> dict:
    """One node: its row, full state (readings, rejected frames), recent history, pending commands."""
    from linli import commands as cmdstore
    from linli import registry

    rows = {r["node"]: r for r in node_rows(cfg, now)}
    if node not in rows:
        known = ", ".join(sorted(rows)[:10]) or "none"
        raise NodesError("no node %r on this gateway (known: %s)" % (node, known))
    out = {"node": rows[node], "state": None, "history": [], "commands": [], "waiting_events": []}
    if cfg.db_path.exists():
        conn = _ro(cfg.db_path)
        try:
            if _has(conn, "nodes"):
                st = registry.load_all(conn).get(node)
                out["state"] = st.public() if st else None
            if _has(conn, "node_history"):
                hist = conn.execute("SELECT at, kind, summary FROM node_history WHERE node=? ORDER BY id DESC LIMIT ?", (node, limit)).fetchall()
                out["history"] = [{"at": at, "kind": k, "summary": s} for at, k, s in reversed(hist)]
            if _has(conn, "commands"):
                out["commands"] = cmdstore.pending_for(conn, node)
            if _has(conn, "outbox_events"):
                # Events are kept only until the upstream broker acks them: these are the unsent ones.
                rows_ = conn.execute("SELECT payload FROM outbox_events WHERE json_extract(CAST(payload AS TEXT), '$.subject') = ? ORDER BY seq DESC LIMIT ?", (node, limit)).fetchall()
                out["waiting_events"] = [json.loads(p) for (p,) in reversed(rows_)]
        finally:
            conn.close()
    return out


def format_node(d: dict, now: Optional[float] = None) -> str:
    from linli.doctor_checks import time_text

    now = time.time() if now is None else now
    r = d["node"]
    lines = ["%s  %s  firmware %s  %s  last seen %s" % (r["node"], r["role"], r["fw"] or "?", r["availability"], age_text(r["age_s"]))]
    st = d["state"] or {}
    for k in ("bat", "rssi", "queue", "reset_cause", "boot_count", "safe_mode", "asleep_until"):
        if st.get(k) is not None:
            lines.append("  %-12s %s" % (k, time_text(st[k]) if k == "asleep_until" else st[k]))
    if st.get("readings"):
        lines.append("  readings     %s" % json.dumps(st["readings"], sort_keys=True))
    if st.get("rejected"):
        lines.append("  rejected     %s" % json.dumps(st["rejected"], sort_keys=True))
    lines.append("recent history (%d):" % len(d["history"]))
    for h in d["history"]:
        lines.append("  %s  %-12s %s" % (age_text(now - h["at"]).rjust(12), h["kind"], h["summary"]))
    lines.append("events waiting upstream (%d):" % len(d["waiting_events"]))
    lines += ["  " + format_event(ce) for ce in d["waiting_events"]]
    lines.append("pending commands (%d):" % len(d["commands"]))
    for c in d["commands"]:
        lines.append("  %s  %s %s  %s, created %s, deadline in %s" % (c["id"], c["op"], json.dumps(c["args"]), c["status"], age_text(now - c["created"]), _left(c["deadline"] - now)))
    return "\n".join(lines)


def _left(s: float) -> str:
    return age_text(s)[:-4] if s > 0 else "the past"


# -- events tail -------------------------------------------------------------------------------
def _matches(ce: dict, type_pattern: Optional[str], node: Optional[str]) -> bool:
    t = ce.get("type", "")
    t = t[6:] if t.startswith("linli.") else t
    if type_pattern and not fnmatch.fnmatchcase(t, type_pattern):
        return False
    return not node or ce.get("subject") == node


def format_event(ce: dict) -> str:
    t = ce.get("type", "")
    data = json.dumps(ce.get("data"), sort_keys=True, ensure_ascii=False)
    if len(data) > 160:
        data = data[:157] + "..."
    return "%s  #%-6s %-28s %-16s %s" % (ce.get("time", "?"), ce.get("seq", "?"), t[6:] if t.startswith("linli.") else t, ce.get("subject", "-"), data)


class LocalTail:
    """Follows the outbox: events with a higher ``seq`` than the last shown, polled read-only.

    Events the uplink published and deleted between two polls are not in the outbox any more;
    the gap is counted in ``missed`` (they reached the backend; use the upstream source to see them).
    """

    def __init__(self, db: Path, poll_s: float = 0.5):
        self.db, self.poll_s = db, poll_s
        self.missed = 0
        conn = _ro(db)
        try:
            self.last = int(dict(conn.execute("SELECT key, value FROM outbox_meta")).get("seq", 0))
        finally:
            conn.close()

    def poll(self) -> list[dict]:
        conn = _ro(self.db)
        try:
            rows = conn.execute("SELECT seq, payload FROM outbox_events WHERE seq > ? ORDER BY seq LIMIT 1000", (self.last,)).fetchall()
            top = int(dict(conn.execute("SELECT key, value FROM outbox_meta")).get("seq", 0))
        finally:
            conn.close()
        out = []
        for seq, payload in rows:
            self.missed += seq - self.last - 1
            self.last = seq
            out.append(json.loads(payload))
        if not rows and top > self.last:
            self.missed += top - self.last
            self.last = top
        return out


class UpstreamTail:
    """Subscribes to this gateway's event topics upstream; messages are queued by paho's thread."""

    def __init__(self, cfg: Config, timeout: float = 5.0):
        from linli.doctor_mqtt import ProbeError, _connect, _ssl_context

        sec = cfg.upstream
        self.topic = "linli/v1/%s/%s/events/#" % (cfg.gateway.site, cfg.gateway.id)
        ssl_ctx = _ssl_context(sec, "upstream") if sec.tls else None
        self.client, _ = _connect(sec.host, sec.port, protocol=sec.protocol, timeout=timeout, username=sec.username, password=sec.password, ssl_context=ssl_ctx)
        self.messages: queue.Queue = queue.Queue()
        self.client.c.on_message = lambda c, u, msg: self.messages.put(bytes(msg.payload))
        rcs = self.client.subscribe(self.topic)
        if any(getattr(rc, "is_failure", False) for rc in rcs):
            self.close()
            raise ProbeError("connack", "the upstream broker refused the subscription to %s (%s)" % (self.topic, rcs[0]))

    def poll(self, wait: float) -> list[dict]:
        out = []
        try:
            out.append(self.messages.get(timeout=wait))
            while True:
                out.append(self.messages.get_nowait())
        except queue.Empty:
            pass
        evs = []
        for raw in out:
            try:
                evs.append(json.loads(raw))
            except ValueError:
                continue
        return evs

    def close(self) -> None:
        self.client.close()


def open_tail(cfg: Config, source: str, timeout: float, say: Callable[[str], None]):
    """(tail, source used): upstream when asked or reachable in ``auto``, else the outbox."""
    if source in ("auto", "upstream"):
        if not cfg.upstream.enabled:
            if source == "upstream":
                raise NodesError("upstream is disabled in %s ([upstream] enabled = false)" % cfg.file)
        else:
            try:
                tail = UpstreamTail(cfg, timeout)
                say("following %s on %s:%d (what the backend receives); Ctrl-C stops" % (tail.topic, cfg.upstream.host, cfg.upstream.port))
                return tail, "upstream"
            except Exception as exc:  # ProbeError, ConfigError from TLS files
                if source == "upstream":
                    raise NodesError("cannot follow upstream: %s" % exc) from None
                say("upstream not usable (%s): following the local outbox instead" % exc)
    tail = LocalTail(cfg.db_path)
    say("following the local outbox %s (events not yet published upstream); Ctrl-C stops" % cfg.db_path)
    return tail, "local"


def tail_events(cfg: Config, *, source: str = "auto", type_pattern: Optional[str] = None, node: Optional[str] = None,
                timeout: float = 5.0, poll_s: float = 0.5, say: Callable[[str], None] = lambda s: None) -> Iterator[dict]:
    """Yield matching CloudEvents as they are published, until the caller stops iterating."""
    tail, used = open_tail(cfg, source, timeout, say)
    missed = 0
    try:
        while True:
            evs = tail.poll(poll_s) if used == "upstream" else tail.poll()
            if used == "local":
                if tail.missed > missed:
                    say("%d event(s) were published upstream before they could be shown" % (tail.missed - missed))
                    missed = tail.missed
                if not evs:
                    time.sleep(poll_s)
            for ce in evs:
                if _matches(ce, type_pattern, node):
                    yield ce
    finally:
        if used == "upstream":
            tail.close()


# -- command line ------------------------------------------------------------------------------
def _config_arg(p) -> None:
    p.add_argument("--config", "-c", default="gateway.toml", help="gateway.toml (default: ./gateway.toml)")


def register_nodes(sub) -> None:
    p = sub.add_parser("nodes", help="the nodes this gateway knows: role, firmware, last seen, battery, RSSI, availability")
    _config_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_nodes_main)


def register_node(sub) -> None:
    p = sub.add_parser("node", help="one node: its state, recent history and pending commands")
    p.add_argument("node_id", metavar="NODE")
    _config_arg(p)
    p.add_argument("--limit", type=int, default=20, help="history entries (default %(default)s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_node_main)


def register_events(sub) -> None:
    p = sub.add_parser("events", help="follow the gateway's events")
    esub = p.add_subparsers(dest="events_command", metavar="SUBCOMMAND")
    t = esub.add_parser("tail", help="follow events as they are published (Ctrl-C stops)")
    _config_arg(t)
    t.add_argument("--type", dest="type_pattern", metavar="PATTERN", help="event types to show, shell pattern (e.g. 'bin.*')")
    t.add_argument("--node", metavar="ID", help="only events about this node")
    t.add_argument("--source", choices=("auto", "upstream", "local"), default="auto", help="upstream broker, local outbox, or auto (default)")
    t.add_argument("--count", type=int, default=0, help="stop after N events (default: follow until Ctrl-C)")
    t.add_argument("--timeout", type=float, default=5.0, help="seconds to connect upstream (default %(default)s)")
    t.add_argument("--json", action="store_true", help="one CloudEvent per line, as published")
    t.set_defaults(handler=_tail_main)
    p.set_defaults(handler=lambda a: (p.print_help(), 2)[1])


def _load(args) -> Config:
    return Config.load(args.config)


def _nodes_main(args) -> int:
    try:
        rows = node_rows(_load(args))
    except (ConfigError, NodesError, sqlite3.DatabaseError) as exc:
        print("linli nodes: %s" % exc, file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=1) if args.json else format_nodes(rows))
    return 0


def _node_main(args) -> int:
    try:
        d = node_detail(_load(args), args.node_id, limit=args.limit)
    except (ConfigError, NodesError, sqlite3.DatabaseError) as exc:
        print("linli node: %s" % exc, file=sys.stderr)
        return 1 if isinstance(exc, NodesError) and "no node" in str(exc) else 2
    print(json.dumps(d, indent=1) if args.json else format_node(d))
    return 0


def _tail_main(args) -> int:
    def say(s: str) -> None:
        print("linli events tail: %s" % s, file=sys.stderr, flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM (systemd, a supervisor) stops like Ctrl-C does.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    n = 0
    it = None
    try:
        cfg = _load(args)
        it = tail_events(cfg, source=args.source, type_pattern=args.type_pattern, node=args.node, timeout=args.timeout, say=say)
        for ce in it:
            n += 1
            print(json.dumps(ce, ensure_ascii=False) if args.json else format_event(ce), flush=True)
            if args.count and n >= args.count:
                break
    except KeyboardInterrupt:
        pass
    except (ConfigError, NodesError, sqlite3.DatabaseError) as exc:
        print("linli events tail: %s" % exc, file=sys.stderr)
        return 2
    finally:
        if it is not None:
            it.close()  # disconnects from the broker
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    say("%d event(s) shown" % n)
    return 0
