"""The node registry: what the gateway knows about each node, in SQLite, with sleep-aware
availability.

State lives in memory (one asyncio loop owns it) and is written through ``save(conn, node)``
inside the same transaction that stores the node's events, so registry, replay window and
outbox never disagree after a crash.

Availability (docs/protocol.md 4.1):

* a node that said "asleep until T" is ``asleep``, and only ``offline`` after T + grace;
* an always-on node is ``offline`` after ``heartbeat_misses`` missed heartbeats (its ``hb``
  telemetry key, or the configured default) + grace.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    fw TEXT, reset_cause TEXT, boot_count INTEGER, safe_mode INTEGER DEFAULT 0,
    first_seen REAL, last_seen REAL,
    bat REAL, rssi REAL, queue INTEGER,
    asleep_until REAL, heartbeat_s REAL,
    availability TEXT NOT NULL DEFAULT 'unknown',
    readings TEXT NOT NULL DEFAULT '{}',
    rule_state TEXT NOT NULL DEFAULT '{}',
    rejected TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS link_state (
    node TEXT PRIMARY KEY,
    up_last INTEGER NOT NULL DEFAULT 0,
    up_bitmap TEXT NOT NULL DEFAULT '0',
    down_reserved INTEGER NOT NULL DEFAULT 0,
    key_fp TEXT
);
CREATE TABLE IF NOT EXISTS node_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS node_history_node ON node_history(node, id);
"""

_COLUMNS = (
    "node", "role", "fw", "reset_cause", "boot_count", "safe_mode", "first_seen", "last_seen",
    "bat", "rssi", "queue", "asleep_until", "heartbeat_s", "availability",
)


@dataclass
class NodeState:
    node: str
    role: str
    fw: Optional[str] = None
    reset_cause: Optional[str] = None
    boot_count: Optional[int] = None
    safe_mode: int = 0
    first_seen: Optional[float] = None
    last_seen: Optional[float] = None
    bat: Optional[float] = None
    rssi: Optional[float] = None
    queue: Optional[int] = None
    asleep_until: Optional[float] = None
    heartbeat_s: Optional[float] = None
    availability: str = "unknown"
    readings: dict = field(default_factory=dict)
    rule_state: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=dict)

    def public(self) -> dict:
        """The node state snapshot published upstream (retained per node)."""
        d = {c: getattr(self, c) for c in _COLUMNS}  # asdict() deep-copies: slow per batch
        d["readings"] = dict(self.readings)
        d["rejected"] = dict(self.rejected)
        return d

    def copy(self) -> "NodeState":
        """A copy to roll back to: the dicts copied, and the lists in ``rule_state`` too
        (``copy.deepcopy`` costs ten times as much and ingest takes one per node per batch)."""
        c = object.__new__(NodeState)  # dataclasses.replace() re-reads the fields: 10x slower
        c.__dict__.update(self.__dict__)
        c.readings = dict(self.readings)
        c.rule_state = {k: list(v) if isinstance(v, list) else v for k, v in self.rule_state.items()}
        c.rejected = dict(self.rejected)
        return c


def init(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the caller's open transaction.
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    if "key_fp" not in {r[1] for r in conn.execute("PRAGMA table_info(link_state)")}:
        conn.execute("ALTER TABLE link_state ADD COLUMN key_fp TEXT")  # a gateway.db from before


def load_all(conn: sqlite3.Connection) -> dict[str, NodeState]:
    out = {}
    for row in conn.execute("SELECT %s, readings, rule_state, rejected FROM nodes" % ", ".join(_COLUMNS)):
        vals = dict(zip(_COLUMNS, row[: len(_COLUMNS)]))
        out[vals["node"]] = NodeState(**vals, readings=json.loads(row[-3]), rule_state=json.loads(row[-2]), rejected=json.loads(row[-1]))
    return out


def save(conn: sqlite3.Connection, st: NodeState) -> None:
    vals = [getattr(st, c) for c in _COLUMNS] + [json.dumps(st.readings), json.dumps(st.rule_state), json.dumps(st.rejected)]
    conn.execute(
        "INSERT OR REPLACE INTO nodes (%s, readings, rule_state, rejected) VALUES (%s)" % (", ".join(_COLUMNS), ",".join("?" * len(vals))),
        vals,
    )


def history(conn: sqlite3.Connection, node: str, kind: str, summary: str, at: Optional[float] = None) -> None:
    conn.execute("INSERT INTO node_history (node, at, kind, summary) VALUES (?,?,?,?)", (node, at or time.time(), kind, summary))
    _prune(conn, node)


def history_many(conn: sqlite3.Connection, rows: list[tuple[str, float, str, str]]) -> None:
    """Several ``(node, at, kind, summary)`` entries at once, pruned once per node."""
    conn.executemany("INSERT INTO node_history (node, at, kind, summary) VALUES (?,?,?,?)", rows)
    for node in {r[0] for r in rows}:
        _prune(conn, node)


def _prune(conn: sqlite3.Connection, node: str) -> None:
    # Keep the last 500 entries per node: enough for a technician, bounded on disk.
    conn.execute(
        "DELETE FROM node_history WHERE node=? AND id <= (SELECT id FROM node_history WHERE node=? ORDER BY id DESC LIMIT 1 OFFSET 500)",
        (node, node),
    )


def load_windows(conn: sqlite3.Connection) -> dict[str, tuple[int, int, Optional[str]]]:
    """node -> (last counter, bitmap, fingerprint of the key they were seen under)."""
    return {n: (last, int(bm, 16), fp) for n, last, bm, fp in conn.execute("SELECT node, up_last, up_bitmap, key_fp FROM link_state")}


def save_window(conn: sqlite3.Connection, node: str, last: int, bitmap: int, keyfp: Optional[str] = None) -> None:
    conn.execute(
        "INSERT INTO link_state (node, up_last, up_bitmap, key_fp) VALUES (?,?,?,?) "
        "ON CONFLICT(node) DO UPDATE SET up_last=excluded.up_last, up_bitmap=excluded.up_bitmap, key_fp=excluded.key_fp",
        (node, last, "%x" % bitmap, keyfp),
    )


def reserve_downlink(conn: sqlite3.Connection, node: str, block: int = 256) -> int:
    """Reserve the next block of downlink counters for ``node``; returns the first one."""
    row = conn.execute("SELECT down_reserved FROM link_state WHERE node=?", (node,)).fetchone()
    start = max(row[0] if row else 0, 1)
    conn.execute(
        "INSERT INTO link_state (node, down_reserved) VALUES (?,?) ON CONFLICT(node) DO UPDATE SET down_reserved=excluded.down_reserved",
        (node, start + block),
    )
    return start


def availability(st: NodeState, now: float, grace_s: float, misses: int, default_hb: float) -> str:
    """What the node's availability should be now (pure: the caller emits the change events)."""
    if st.last_seen is None:
        return "unknown"
    if st.asleep_until is not None and st.asleep_until >= st.last_seen:
        return "asleep" if now <= st.asleep_until + grace_s else "offline"
    hb = st.heartbeat_s or default_hb
    return "online" if now - st.last_seen <= hb * misses + grace_s else "offline"
