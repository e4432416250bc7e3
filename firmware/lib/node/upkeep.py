"""The housekeeping tasks every node runs next to its role: time sync, the health report and
the watchdog. A mixin of :class:`node.runtime.Node` (it uses the node's queue, link, boot state
and events); one failure domain each, started by ``Node.run()``.

* **time sync** (docs/protocol.md, section 6): ``time_sync {}`` while the clock is unset, then
  every ``time_sync_s``; only while the queue is empty (see :meth:`Upkeep._timesync`);
* **health report** every ``health_s`` (kept across deep sleep in RTC memory): telemetry with
  ``up``, ``heap``, ``q``, ``drop``, ``rssi``, ``bat`` and the role's extras;
* **watchdog**: the hardware WDT is fed only while the sender and the link show signs of life
  (a blocked loop starves it too) and no crash is being handled (the handler resets the board;
  should it fail, the watchdog does); the boot is marked healthy after ``healthy_s``; the downlink
  window is persisted at most a minute after an ack moved it.
"""

import asyncio
import gc
import time

from micropython import const

from link import frame
from node import log

_STALL_MS = const(30000)  # a task silent this long is stuck: stop feeding the watchdog
_WIN_SAVE_MS = const(60000)  # persist the downlink window at most this often for acks


class Upkeep:
    """Time sync, health report and watchdog tasks; see the module docstring."""

    async def _timesync(self):
        hal = self.hal
        wait_ms = self.cfg["ack_timeout_s"] * 1000
        while True:
            st = self.boot
            if self.link.up and not self.queue.live and (not hal.synced() or hal.time() >= st.sync_at):
                self._synced.clear()
                # Sealed and sent without queueing, and only while the queue is empty: a frame
                # that overtook queued ones would move the gateway's replay window past them
                # (a reboot skips up to 256 counters), and they would be refused as replayed.
                try:
                    n = frame.seal(self._dbuf, self.keys, frame.TIME_SYNC, 0, self._code, self._nid,
                                   self.ctr.next(), self.time(), b"{}")
                    await self.link.send(memoryview(self._dbuf)[0:n])
                    if await self._synced.wait(wait_ms):
                        continue
                except OSError:
                    pass
            self._linked.clear()
            await self._linked.wait(1000)

    def health_report(self):
        """The health report: telemetry with the common keys of docs/protocol.md section 8
        (``up``, ``heap``, ``q``, ``drop`` since the last report, ``rssi``, ``bat``) and the
        role's own (:meth:`node.role.Role.health`). Takes the dropped count: reported once."""
        gc.collect()
        b = {"up": self.uptime(), "heap": gc.mem_free(), "q": self.queue.live, "drop": self.queue.take_dropped()}
        r = self.link.rssi()
        if r is not None:
            b["rssi"] = r
        bat = self.hal.battery(self.cfg["bat_pin"], self.cfg["bat_div_pct"])
        if bat is not None:
            b["bat"] = bat
        extra = self.role.health() if self.role is not None else None
        if extra:
            b.update(extra)
        return b

    async def _health(self):
        period = self.cfg["health_s"]
        st = self.boot
        # Give the link a moment so the first report can carry the RSSI.
        if not self.link.up:
            await self._linked.wait(10000)
        while True:
            now = self.hal.time()
            if self._kick.is_set() or not st.health_at or now >= st.health_at or st.health_at - now > period:
                self._kick.clear()
                self.telemetry(self.health_report())
                st.health_at = now + period
                st.save()
                continue
            await self._kick.wait(min(st.health_at - now, 60) * 1000)

    async def _watchdog(self):
        cfg = self.cfg
        wdt_ms = cfg["wdt_s"] * 1000
        wdt = self.hal.watchdog(wdt_ms)
        tick = min(1000, wdt_ms // 4) if wdt_ms else 1000
        healthy_ms = cfg["healthy_s"] * 1000
        starving = False
        while True:
            await asyncio.sleep_ms(tick)
            now = time.ticks_ms()
            stuck = None
            if time.ticks_diff(now, self._sender_beat) > _STALL_MS:
                stuck = "sender"
            elif time.ticks_diff(now, self.link.beat) > _STALL_MS:
                stuck = "link"
            if self._crashing:
                stuck = "crash handler"  # it resets the board; if it cannot, the watchdog does
            if stuck is None:
                wdt.feed()
            elif not starving:
                log("node", "watchdog: %s task stuck, not feeding", stuck)
            starving = stuck is not None
            if not self._ok and time.ticks_diff(now, self._t0) >= healthy_ms and self.role is not None:
                self.healthy()
            if self._win_dirty and time.ticks_diff(now, self._win_dirty) >= _WIN_SAVE_MS:
                self._save_window()
