"""Backend commands for nodes: validated, queued until the node is awake, resolved or timed out.

The backend publishes ``{"id": "...", "op": "lamp.level", "args": {"level": 40}}`` on
``linli/v1/{site}/{gateway}/commands/{node}``. The gateway checks it against the op table
(docs/protocol.md section 8), keeps it in SQLite until the node can take it (a sleeping bin
gets it right after its next report), and publishes ``command.result`` or ``command.timeout``.

>>> validate("streetlight", "lamp.level", {"level": 40})
{'level': 40}
>>> validate("bin", "lamp.level", {"level": 40})
Traceback (most recent call last):
...
linli.errors.CommandError: lamp.level is for streetlight nodes, not bin
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Callable, Optional

from linli.errors import CommandError

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cmd_id TEXT NOT NULL UNIQUE,
    node TEXT NOT NULL,
    op TEXT NOT NULL,
    args TEXT NOT NULL,
    created REAL NOT NULL,
    deadline REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    sent_at REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS commands_node ON commands(node, status);
"""


def _int(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _profile(v) -> bool:
    return (
        isinstance(v, list)
        and 0 < len(v) <= 8
        and all(isinstance(p, list) and len(p) == 2 and _int(0, 900)(p[0]) and _int(0, 100)(p[1]) for p in v)
    )


# op -> (roles, {arg: (check, description)}, required args)
OPS: dict[str, tuple[tuple[str, ...], dict[str, tuple[Callable[[Any], bool], str]], tuple[str, ...]]] = {
    "lamp.mode": (("streetlight",), {"mode": (lambda v: v in ("auto", "on", "off"), "'auto', 'on' or 'off'")}, ("mode",)),
    "lamp.level": (("streetlight",), {"level": (_int(0, 100), "an integer 0-100")}, ("level",)),
    "lamp.schedule": (("streetlight",), {"profile": (_profile, "up to 8 [minutes after dusk 0-900, level 0-100] pairs")}, ("profile",)),
    "lamp.test": (("streetlight",), {"s": (_int(1, 600), "seconds 1-600")}, ("s",)),
    "bin.config": (
        ("bin",),
        {
            "depth": (_int(10, 300), "cm 10-300"),
            "report_s": (_int(60, 86400), "seconds 60-86400"),
            "full_pct": (_int(50, 100), "percent 50-100"),
        },
        (),
    ),
    "node.info": (("bin", "streetlight", "petscan"), {}, ()),
}


def validate(role: str, op: str, args: Any) -> dict:
    """The command's arguments if valid for ``role``; CommandError naming the problem otherwise."""
    spec = OPS.get(op)
    if spec is None:
        raise CommandError("unknown op %r (allowed: %s)" % (op, ", ".join(sorted(OPS))))
    roles, fields, required = spec
    if role not in roles:
        raise CommandError("%s is for %s nodes, not %s" % (op, "/".join(roles), role))
    if not isinstance(args, dict):
        raise CommandError("%s: args must be an object" % op)
    for k, v in args.items():
        if k not in fields:
            raise CommandError("%s: unknown argument %r (allowed: %s)" % (op, k, ", ".join(fields) or "none"))
        check, desc = fields[k]
        if not check(v):
            raise CommandError("%s: %s must be %s, got %r" % (op, k, desc, v))
    for k in required:
        if k not in args:
            raise CommandError("%s: argument %r is required" % (op, k))
    if fields and not required and not args:
        raise CommandError("%s: give at least one of %s" % (op, ", ".join(fields)))
    return args


def init(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the caller's open transaction.
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def enqueue(conn: sqlite3.Connection, cmd_id: str, node: str, op: str, args: dict, timeout_s: float, max_pending: int, now: Optional[float] = None) -> int:
    """Store a validated command; returns its local sequence number (the `id` the node sees)."""
    now = time.time() if now is None else now
    pending = conn.execute("SELECT COUNT(*) FROM commands WHERE node=? AND status IN ('pending','sent')", (node,)).fetchone()[0]
    if pending >= max_pending:
        raise CommandError("node %s already has %d commands pending" % (node, pending))
    try:
        cur = conn.execute(
            "INSERT INTO commands (cmd_id, node, op, args, created, deadline) VALUES (?,?,?,?,?,?)",
            (cmd_id, node, op, json.dumps(args), now, now + timeout_s),
        )
    except sqlite3.IntegrityError:
        raise CommandError("command id %r was already received" % cmd_id) from None
    return cur.lastrowid


def due(conn: sqlite3.Connection, node: str) -> list[tuple[int, str, str, dict]]:
    """Commands to send to ``node`` now: (seq, cmd_id, op, args), oldest first."""
    rows = conn.execute("SELECT seq, cmd_id, op, args FROM commands WHERE node=? AND status='pending' ORDER BY seq", (node,))
    return [(s, c, o, json.loads(a)) for s, c, o, a in rows]


def mark_sent(conn: sqlite3.Connection, seq: int, now: float) -> None:
    conn.execute("UPDATE commands SET status='sent', sent_at=? WHERE seq=? AND status='pending'", (now, seq))


def resolve(conn: sqlite3.Connection, node: str, seq: int, ok: bool, result: dict) -> Optional[tuple[str, str]]:
    """Record a node's result; returns (cmd_id, op) or None for an unknown/finished command."""
    row = conn.execute("SELECT cmd_id, op FROM commands WHERE seq=? AND node=? AND status IN ('pending','sent')", (seq, node)).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE commands SET status=?, result=? WHERE seq=?", ("done" if ok else "failed", json.dumps(result), seq))
    return row[0], row[1]


def expire(conn: sqlite3.Connection, now: float) -> list[tuple[str, str, str]]:
    """Time out overdue commands: [(node, cmd_id, op)]."""
    rows = conn.execute("SELECT seq, node, cmd_id, op FROM commands WHERE status IN ('pending','sent') AND deadline < ?", (now,)).fetchall()
    for seq, *_ in rows:
        conn.execute("UPDATE commands SET status='timeout' WHERE seq=?", (seq,))
    return [(n, c, o) for _, n, c, o in rows]


def pending_for(conn: sqlite3.Connection, node: str) -> list[dict]:
    rows = conn.execute("SELECT cmd_id, op, args, status, created, deadline FROM commands WHERE node=? AND status IN ('pending','sent') ORDER BY seq", (node,))
    return [dict(zip(("id", "op", "args", "status", "created", "deadline"), (c, o, json.loads(a), s, cr, d))) for c, o, a, s, cr, d in rows]
