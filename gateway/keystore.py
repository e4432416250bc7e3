"""The node key store: which nodes exist, their role and their 32-byte link key.

``linli flash`` writes to it directly (same machine) or hands the gateway an export file
(JSON lines, ``{"node": ..., "role": ..., "key": hex}``) that ``KeyStore.import_file`` reads.
The file is created owner-only (0600): whoever reads it can impersonate every node.

>>> import tempfile, os
>>> ks = KeyStore(os.path.join(tempfile.mkdtemp(), "keys.db"))
>>> ks.add("bin-0001", "bin", bytes(32))
>>> ks.lookup("bin-0001")[1].label
'bin'
>>> ks.lookup("nobody") is None
True
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Optional

from linli.errors import KeyStoreError
from linli.link import LinkKeys, Role

_NODE = re.compile(r"^[A-Za-z0-9._-]{1,16}$")


class KeyStore:
    """``recheck_s``: how often a lookup looks for changes another process (``linli flash``,
    ``--import-keys``) committed to the file; a change drops the cache, so a node flashed while
    the gateway runs is accepted, and a replaced key takes over, within that time."""

    def __init__(self, path: str | os.PathLike, *, recheck_s: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS node_keys (node TEXT PRIMARY KEY, role TEXT NOT NULL, "
                "key BLOB NOT NULL, added REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"
            )
        except sqlite3.DatabaseError as exc:
            raise KeyStoreError("key store %s is unreadable: %s" % (self.path, exc)) from None
        self._lock = threading.Lock()
        self.recheck_s = recheck_s
        self._checked = time.monotonic()
        self._version = self._data_version()
        self._cache: dict[str, Optional[tuple[LinkKeys, Role]]] = {}

    def add(self, node: str, role: str, key: bytes, *, replace: bool = False) -> None:
        """Register a node. Re-adding the same key is a no-op; a different key needs ``replace``."""
        if not _NODE.match(node):
            raise KeyStoreError("node id %r: use 1-16 chars of A-Z a-z 0-9 . _ -" % node)
        try:
            Role.from_label(role)
        except ValueError as exc:
            raise KeyStoreError(str(exc)) from None
        if len(key) != 32:
            raise KeyStoreError("node %s: a key is 32 bytes, got %d" % (node, len(key)))
        with self._lock:
            row = self._db.execute("SELECT key, role FROM node_keys WHERE node=? AND revoked=0", (node,)).fetchone()
            if row and (bytes(row[0]) != key or row[1] != role) and not replace:
                raise KeyStoreError("node %s already has a different key or role; re-provision with replace" % node)
            self._db.execute(
                "INSERT OR REPLACE INTO node_keys (node, role, key, added, revoked) VALUES (?,?,?,?,0)",
                (node, role, key, time.time()),
            )
            self._cache.pop(node, None)

    def revoke(self, node: str) -> bool:
        with self._lock:
            n = self._db.execute("UPDATE node_keys SET revoked=1 WHERE node=?", (node,)).rowcount
            self._cache.pop(node, None)
        return n > 0

    def lookup(self, node: str) -> Optional[tuple[LinkKeys, Role]]:
        """(keys, role) for a registered node, None otherwise. Cached; safe from any thread."""
        now = time.monotonic()
        if now - self._checked >= self.recheck_s:
            self._checked = now
            version = self._data_version()
            if version != self._version:  # another connection committed: keys may have changed
                self._version = version
                self._cache.clear()
        hit = self._cache.get(node, ...)
        if hit is not ...:
            return hit
        with self._lock:
            row = self._db.execute("SELECT key, role FROM node_keys WHERE node=? AND revoked=0", (node,)).fetchone()
        entry = (LinkKeys(bytes(row[0])), Role.from_label(row[1])) if row else None
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[node] = entry
        return entry

    def _data_version(self) -> int:
        # Changes whenever another connection commits to the file (not for our own commits,
        # which already update the cache).
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def nodes(self) -> list[tuple[str, str]]:
        with self._lock:
            return [tuple(r) for r in self._db.execute("SELECT node, role FROM node_keys WHERE revoked=0 ORDER BY node")]

    def import_file(self, path: str | os.PathLike, *, replace: bool = False) -> int:
        """Import an export file from ``linli flash``; returns how many nodes were added."""
        n = 0
        for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.add(rec["node"], rec["role"], bytes.fromhex(rec["key"]), replace=replace)
            except (ValueError, KeyError, TypeError) as exc:
                raise KeyStoreError("%s line %d: %s" % (path, lineno, exc)) from None
            n += 1
        return n

    @staticmethod
    def export_lines(records: Iterable[tuple[str, str, bytes]]) -> str:
        return "".join(json.dumps({"node": n, "role": r, "key": k.hex()}) + "\n" for n, r, k in records)

    def close(self) -> None:
        self._db.close()
