"""The outbox's bound: what goes when it is full, and how drops are reported upstream.

The oldest TELEMETRY events go first, then the oldest NORMAL ones; ALARM events are never
dropped (the outbox goes over its bound instead, with a warning). Every drop is recorded and
turned into ``gateway.outbox.dropped`` events (alarms) carrying the dropped sequence numbers and
the chain hashes at the edges of each run, so a verifier tells a reported drop from a loss.

A mixin of :class:`linli.outbox.Outbox`: it runs on the outbox's SQLite thread, inside the
transaction that stores the events which made room necessary.
"""

from __future__ import annotations

import logging

from linli.events import Priority, new_event

log = logging.getLogger("linli.outbox")

_MAX_RANGES_PER_REPORT = 500
SQL_VARS = 500  # ids per IN (...) list; SQLite's limit is 32766 on 3.32+, 999 before


class BoundPolicy:
    """Drop by priority, report drops (uses the Outbox's state, insert and submit)."""

    def _over(self, count: int, nbytes: int) -> bool:
        return count > self.max_events or nbytes > self.max_bytes

    def _enforce_bound(self, conn, room_events: int = 0, room_bytes: int = 0) -> None:
        """Drop by priority until the outbox fits its bound, with ``room_*`` to spare."""
        st = self._st
        max_events, max_bytes = self.max_events - room_events, self.max_bytes - room_bytes

        def over(count, nbytes):
            return count > max_events or nbytes > max_bytes

        if not over(st.count, st.bytes):
            return
        for prio in (Priority.TELEMETRY, Priority.NORMAL):
            while over(st.count, st.bytes):
                need = max(st.count - max_events, 16)
                rows = conn.execute("SELECT seq, type, length(payload), prevhash, hash FROM outbox_events WHERE priority = ? ORDER BY seq LIMIT ?", (int(prio), need)).fetchall()
                if not rows:
                    break
                victims = []
                count, nbytes = st.count, st.bytes
                for r in rows:
                    if not over(count, nbytes):
                        break
                    victims.append(r)
                    count -= 1
                    nbytes -= r[2]
                seqs = [r[0] for r in victims]
                for i in range(0, len(seqs), SQL_VARS):
                    chunk = seqs[i : i + SQL_VARS]
                    conn.execute("DELETE FROM outbox_events WHERE seq IN (%s)" % ",".join("?" * len(chunk)), chunk)
                conn.executemany("INSERT OR IGNORE INTO outbox_drops VALUES (?, ?, ?, ?)", [(r[0], r[1], r[3], r[4]) for r in victims])
                st.count, st.bytes = count, nbytes
                st.dropped += len(victims)
                st.pending_drops += len(victims)
        over = self._over(st.count, st.bytes)
        if over and not st.over_bound:
            log.warning(
                "outbox full of alarms: keeping %d events / %d bytes over the bound (%d / %d) rather than drop an alarm",
                st.count, st.bytes, self.max_events, self.max_bytes,
            )
        st.over_bound = over

    def _report_drops(self, conn, force: bool = False) -> None:
        """Turn recorded drops into ``gateway.outbox.dropped`` events (first at once, then at
        most every ``drop_report_s``)."""
        st = self._st
        if not st.pending_drops:
            return
        now = self.clock()
        if not force and now - st.last_report < self.drop_report_s:
            return
        # Make room for the report first, so that it never evicts events it does not report
        # (which would need another report, and so on). Its size is estimated generously.
        runs_now = conn.execute("SELECT count(*) FROM outbox_drops d WHERE NOT EXISTS (SELECT 1 FROM outbox_drops e WHERE e.seq = d.seq - 1)").fetchone()[0]
        n_reports = runs_now // _MAX_RANGES_PER_REPORT + 1
        self._enforce_bound(conn, room_events=n_reports, room_bytes=n_reports * 800 + (runs_now + 1) * 200)
        rows = conn.execute("SELECT seq, type, prevhash, hash FROM outbox_drops ORDER BY seq").fetchall()
        conn.execute("DELETE FROM outbox_drops")
        st.pending_drops = 0
        st.last_report = now
        runs: list[dict] = []
        by_type: dict[str, int] = {}
        for seq, type_, prevhash, h in rows:
            by_type[type_] = by_type.get(type_, 0) + 1
            if runs and runs[-1]["last"] == seq - 1:
                runs[-1]["last"], runs[-1]["hash"] = seq, h
            else:
                runs.append({"first": seq, "last": seq, "prevhash": prevhash, "hash": h})
        reports = []
        for i in range(0, len(runs), _MAX_RANGES_PER_REPORT):
            part = runs[i : i + _MAX_RANGES_PER_REPORT]
            seqs = {s for r in part for s in range(r["first"], r["last"] + 1)}
            counts: dict[str, int] = {}
            for seq, type_, _, _ in rows:
                if seq in seqs:
                    counts[type_] = counts.get(type_, 0) + 1
            reports.append(new_event("gateway.outbox.dropped", data={"count": len(seqs), "by_type": counts, "ranges": part, "max_events": self.max_events, "max_bytes": self.max_bytes}, at=now))
        log.warning("outbox full: dropped %d events (%s); reported as gateway.outbox.dropped", len(rows), ", ".join("%s=%d" % kv for kv in sorted(by_type.items())))
        self._insert(conn, reports)
        st.over_bound = self._over(st.count, st.bytes)

    def _schedule_report(self) -> None:
        """Drops waiting for the report interval: make sure they are reported even if no
        further event arrives."""
        if self._report_timer is not None or self._closed:
            return

        def fire():
            self._report_timer = None
            if not self._closed:
                fut = self._submit(lambda conn: self._report_drops(conn), write=True)
                fut.add_done_callback(lambda f: f.exception())

        wait = max(0.0, self._st.last_report + self.drop_report_s - self.clock()) + 0.01
        self._report_timer = self._loop.call_later(wait, fire)
