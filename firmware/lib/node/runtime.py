"""The node runtime: boot, one asyncio loop, and the tasks every role shares.

``main()`` is what ``main.py`` runs::

    from node import runtime
    runtime.main()           # config (ValueError naming a bad key), HAL, Node, asyncio.run

Tasks of the loop (each in its own failure domain; an exception in one is a crash: logged,
then a reboot):

* the link (:class:`node.mqttlink.MQTTLink` or :class:`node.seriallink.SerialLink`), which
  hands downlink frames to :meth:`Node._on_frame` (acks, time sync, commands); a role with
  ``link_later`` (the bin) gets it only when it first waits for it (:meth:`Node.online`);
* the sender: frames go from the flash queue to the link in counter order, at most 32 in flight,
  resent after ``ack_timeout_s`` and after every reconnect;
* time sync, the health report and the watchdog (:mod:`node.upkeep`, a mixin of Node);
* the role (:mod:`node.role`), or the diagnostics role in safe mode.

Frames the node sends: ``hello`` at boot (``{"fw","rc","bc","sm"}``), the role's telemetry and
events, health reports, ``command_result``, ``status`` before deep sleep; every one is sealed
with the next counter, queued in flash and deleted only when its ack arrives. A crash is logged
and its text kept in RTC memory for ``node.info`` (``err``).

**Heap at boot.** The order keeps the big transient things apart: the config checks are
unloaded before the HAL, the role is built (its settings module loaded and unloaded, its
drivers made) before the link's code is imported, and command handling lives in
:mod:`node.cmd`: imported at boot for always-on roles, at the first command for a
``link_later`` one (most bin wakes get none).

A crash always ends in a reboot, even when the heap is full (a leak, then a MemoryError): the
watchdog stops being fed as the crash handler starts, so it bites should the handler fail or
hang; the handler first gives back a reserve kept since boot and drops the role (whatever it
leaked goes with it), and the boot state is written from a buffer made at boot.
"""

import asyncio
import gc
import json
import sys
import time
from binascii import unhexlify

from micropython import const

from link import frame
from link.crypto import LinkKeys
from link.replay import NEW, Reservation, Window
from node import VERSION, log
from node.bootstate import BootState
from node.flag import Flag
from node.queue import FrameQueue
from node.upkeep import Upkeep

_MAX_INFLIGHT = const(32)  # docs/protocol.md section 3: half the replay window
_CRASH_FLUSH_S = const(5)
_RESERVE = const(1024)  # heap kept back at boot for the crash handler (a MemoryError crash)
CTR_FILE = "link_up.ctr"
WIN_FILE = "link_down.win"
QUEUE_DIR = "q"
_ROLE_CODES = {"bin": frame.BIN, "streetlight": frame.STREETLIGHT, "petscan": frame.PETSCAN}


def _json(body):
    return json.dumps(body, separators=(",", ":")).encode()


class Node(Upkeep):
    """One node: its keys, counter, queue, link and role. Build it at boot (it reads flash);
    ``await node.run()`` runs it. ``role`` overrides the role class of the config (tests)."""

    def __init__(self, hal, cfg, role=None):
        self.hal = hal
        self.cfg = cfg
        self.id = cfg["node_id"]
        self._nid = self.id.encode()
        self._code = _ROLE_CODES[cfg["role"]]
        self.boot = BootState(hal)
        self.safe = self.boot.begin(cfg["safe_boots"])
        self.reset_cause = hal.reset_cause()
        self.keys = LinkKeys(unhexlify(cfg.pop("key")))  # the hex text need not stay in RAM
        self.ctr = Reservation(CTR_FILE)
        try:
            self.win = Window.load(WIN_FILE)
        except ValueError as e:
            log("node", "%s: starting a fresh downlink window", e)
            self.win = Window()
        self._entry = (self.keys, self._code, self.win)
        self.queue = FrameQueue(QUEUE_DIR, cfg["queue_bytes"], cfg["queue_frames"])
        self.queue.open()
        self._fbuf = bytearray(frame.MAX_FRAME)  # sealing queued frames
        self._sbuf = bytearray(frame.MAX_FRAME)  # a frame read back from the queue to send
        self._dbuf = bytearray(frame.MAX_FRAME)  # sealing frames sent without queueing
        self._pbuf = bytearray(frame.MAX_FRAME)  # plaintext of a received frame
        self._wake = Flag()  # the sender has work
        self._idle = Flag()  # the queue just emptied
        self._synced = Flag()  # a time_sync arrived
        self._kick = Flag()  # a health report is wanted now
        self._linked = Flag()  # the link came up, or the queue emptied
        self.role = None
        self.rejected = 0  # downlink frames refused (bad tag, replayed, ...)
        self._win_dirty = 0  # ticks of the first unsaved window update, 0 = saved
        self._t0 = time.ticks_ms()
        self._sender_beat = self._t0
        self._ok = False
        self._crashing = False  # set by the crash handler: the watchdog is no longer fed
        self._crash_task = None
        self._tasks = []  # (task, name) of the node's tasks, for the crash report
        self._reserve = bytearray(_RESERVE)  # given back by the crash handler
        log("node", "%s (%s) fw %s boot %d rc %s%s", self.id, cfg["role"], VERSION, self.boot.boots,
            self.reset_cause, " SAFE MODE" if self.safe else "")
        # The role is built before the link's code is imported: its boot (the settings module
        # and tables, released again, and its drivers) and the link are never on the heap at
        # once. An error here is raised again by the role task: a crash like any other.
        self._role_err = None
        if not self.safe:
            try:
                if role is None:
                    from node.role import load

                    role = load(cfg["role"])
                self.role = role(self, hal, cfg)
            except Exception as e:
                self._role_err = e
        gc.collect()
        if getattr(self.role, "link_later", False):
            from node.later import Later

            self.link = Later(hal, cfg)  # until the role first waits for the link: online()
        else:
            # An always-on role takes commands all day (pet.status after every scan): their
            # module is loaded now, while the heap is in one piece, not in the middle of a scan.
            from node import cmd  # noqa: F401
            self._link()

    def _link(self):
        cfg = self.cfg
        if cfg["transport"] == "serial":
            from node.seriallink import SerialLink

            self.link = SerialLink(self.hal, cfg, self._on_frame, self._on_state)
            return
        from node.mqttlink import MQTTLink

        link = MQTTLink(self.hal, cfg, self._on_frame, self._on_state)
        old = getattr(self, "link", None)
        link.assoc = old is not None and old.run is None  # the deferred link started the association
        self.link = link

    # -- what roles use -------------------------------------------------------------------

    @property
    def synced(self):
        return self.hal.synced()

    def time(self):
        """Unix seconds, or 0 while the clock has not been synced (docs/protocol.md, 6)."""
        return self.hal.time() if self.hal.synced() else 0

    def uptime(self):
        return time.ticks_diff(time.ticks_ms(), self._t0) // 1000

    def log(self, fmt, *args):
        log(self.cfg["role"], fmt, *args)

    def send(self, kind, body, alarm=False):
        """Seal ``body`` (a dict, or JSON bytes) as the next frame and queue it; return False
        if the queue dropped it. Raises ValueError for a frame over 250 bytes."""
        payload = body if isinstance(body, (bytes, bytearray)) else _json(body)
        n = frame.seal(self._fbuf, self.keys, kind, frame.ALARM if alarm else 0, self._code,
                       self._nid, self.ctr.next(), self.time(), payload)
        ok = self.queue.put(memoryview(self._fbuf)[0:n], alarm)
        if not ok:
            log("node", "queue full: frame dropped (%d dropped)", self.queue.dropped)
        self._wake.set()
        return ok

    def telemetry(self, body):
        return self.send(frame.TELEMETRY, body)

    def event(self, body, alarm=False):
        return self.send(frame.EVENT, body, alarm)

    def healthy(self):
        """Declare this boot healthy (the crash-boot count starts over)."""
        if not self._ok:
            self._ok = True
            self.boot.healthy()

    def online(self):
        """Bring the link up now, if the role deferred it (``Role.link_later``); idle() and
        sleep() do it too."""
        if self.link.run is None:  # node.later's stand-in: replaced, and its module dropped
            gc.collect()
            self._link()
            sys.modules.pop("node.later", None)
            import node

            try:
                del node.later
            except (AttributeError, KeyError):
                pass
            self._start("link", self.link.run)

    async def idle(self, timeout_s):
        """Wait until every queued frame is acked (True) or ``timeout_s`` passed (False)."""
        self.online()
        end = time.ticks_add(time.ticks_ms(), int(timeout_s * 1000))
        while self.queue.live:
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return False
            self._idle.clear()
            await self._idle.wait(min(left, 500))
        return True

    async def sleep(self, seconds):
        """Deep sleep for ``seconds``: flush the queue (up to ``sleep_flush_s``), send the
        status frame and 'asleep T', disconnect, sleep. Does not return (the wake is a boot).
        ``seconds`` may be a function, asked again after each flush: a command taken meanwhile
        (bin.config's report_s) counts for this sleep, and the gateway gets a new status."""
        self.healthy()
        flush = self.cfg["sleep_flush_s"]
        await self.idle(flush)
        if not self.synced and self.link.up:  # a moment for the time sync: "until" needs it
            await self._synced.wait(self.cfg["ack_timeout_s"] * 1000)
        told = None
        while True:
            s = seconds() if callable(seconds) else seconds
            if s == told:
                break
            told = s
            until = self.time() + s if self.synced else 0
            # "for" lets the gateway place the wake on its own clock when ours is not synced.
            self.send(frame.STATUS, {"st": "asleep", "until": until, "for": s})
            await self.idle(flush)
        await self.link.asleep(until)
        self._save_window()
        self.boot.save()
        log("node", "deep sleep %d s (%d frames queued)", s, self.queue.live)
        self.hal.deepsleep(int(s * 1000))

    # -- boot and the loop ----------------------------------------------------------------

    async def run(self):
        """Run the node: the tasks of the module docstring. Returns only by reset/deep sleep."""
        self.send(frame.HELLO, {"fw": VERSION, "rc": self.reset_cause, "bc": self.boot.boots,
                                "sm": 1 if self.safe else 0})
        asyncio.get_event_loop().set_exception_handler(self._on_error)
        for name, fn in (("link", self.link.run), ("sender", self._sender),
                         ("watchdog", self._watchdog), ("time", self._timesync),
                         ("health", self._health), ("role", self._role)):
            if fn is not None:
                self._start(name, fn)
        gc.collect()
        while True:  # forever: the tasks end the run (reset, deep sleep)
            await asyncio.sleep_ms(3600000)

    def _start(self, name, fn):
        """Run ``fn()`` as a task of the node: an exception out of it is a crash (_on_error)."""
        self._tasks.append((asyncio.create_task(fn()), name))

    def _on_error(self, loop, ctx):
        """The loop's exception handler: a task ended in an exception, so the node crashed.
        (No coroutine per task waits to catch it: that would cost a frame each.)"""
        t = ctx["future"]
        if self._crashing:
            if t is self._crash_task:
                self._reset()  # the crash handler itself failed (it resets, never returns)
            return  # another task crashed first: its handler reboots
        # Before anything that allocates (the handler's task included): stop feeding the
        # watchdog, give back the reserve, drop the role (what it leaked goes with it; a role
        # that crashed is done anyway).
        self._crashing = True
        self._reserve = None
        self.role = None
        gc.collect()
        name = "task"
        for x in self._tasks:
            if x[0] is t:
                name = x[1]
        try:
            self._crash_task = asyncio.create_task(self._crash(name, ctx["exception"]))
        except Exception:
            self._reset()

    def _reset(self):
        """Reset, or, if even that raises, leave it to the watchdog, no longer fed."""
        try:
            self.hal.reset()
        except Exception:
            pass

    async def _crash(self, where, e):
        """Log a crash and keep its text for ``node.info``, give queued frames a moment to go
        out, reboot. A boot that never gets healthy counts towards safe mode. Each step may
        fail (a MemoryError crash): the reboot comes all the same, from here or the watchdog."""
        try:
            sys.print_exception(e)
            err = "%s %s: %s" % (where, type(e).__name__, e)
        except MemoryError:
            err = where  # a constant str: no allocation
        try:
            log("node", "crash: %s", err)
        except MemoryError:
            pass
        try:
            self.boot.crashed(err)  # node.info says it after the reboot
        except MemoryError:
            pass
        try:
            await self.idle(min(_CRASH_FLUSH_S, self.cfg["sleep_flush_s"]))  # what is queued, out
            self._save_window()
        except MemoryError:
            pass
        self.hal.reset()

    async def reboot_soon(self):
        """Reboot once what is queued went out (or after a few seconds)."""
        await self.idle(_CRASH_FLUSH_S)
        self._save_window()
        self.hal.reset()

    async def _role(self):
        e = self._role_err
        if e is not None:  # the role failed to build at boot: crash now (see __init__)
            self._role_err = None
            raise e
        if self.safe:
            from node.diag import Diagnostics

            self.role = Diagnostics(self, self.hal, self.cfg)
        await self.role.run()

    # -- the link -------------------------------------------------------------------------

    def _on_state(self, up):
        if up:
            self.queue.unsend()  # what was in flight goes again, in order
            self._wake.set()
            self._linked.set()
        log("node", "link %s", "up" if up else "down")

    def _lookup(self, nid):
        return self._entry if nid == self._nid else None

    def _on_frame(self, data, topic):
        """A downlink frame (MQTT ``down`` or the serial line): verify, handle, update window."""
        rc, f = frame.open(data, self._lookup, 1, topic, self._pbuf)
        if rc:
            if rc != frame.UNKNOWN_NODE or topic is not None:  # another node's, on a bus
                self.rejected += 1
                log("link", "downlink frame refused: reason %d", rc)
            return
        if f.verdict == NEW:
            try:
                self._handle(f)
            except Exception as e:
                log("link", "handling kind %d: %s %s", f.kind, type(e).__name__, e)
        self.win.update(f.counter)
        if f.kind == frame.ACK:
            if not self._win_dirty:
                self._win_dirty = time.ticks_ms() | 1
        else:
            self._save_window()  # a command or a time must never be replayed to us

    def _save_window(self):
        self._win_dirty = 0
        try:
            self.win.save(WIN_FILE)
        except OSError as e:
            log("node", "saving the downlink window: %s", e)

    def _handle(self, f):
        p = f.payload
        k = f.kind
        if k == frame.ACK:
            c = p.get("c")
            if isinstance(c, int) and self.queue.ack(c):
                self._wake.set()
                if not self.queue.live:
                    self._idle.set()
                    self._linked.set()  # time sync may go now
            r = p.get("r", 0)
            if r:
                log("link", "gateway refused frame %s: reason %s", c, r)
        elif k == frame.TIME_SYNC:
            t = p.get("t")
            if isinstance(t, int) and t > 0:
                old = self.hal.time()
                self.hal.set_time(t)
                st = self.boot
                if st.health_at:
                    st.health_at += t - old  # keep the health period across the jump
                st.sync_at = t + self.cfg["time_sync_s"]
                st.save()
                self._synced.set()
                log("node", "time set to %d (was %d)", t, old)
        elif k == frame.COMMAND:
            from node import cmd  # loaded at the first command, then kept

            cmd.handle(self, p)

    # -- tasks ----------------------------------------------------------------------------

    async def _sender(self):
        q = self.queue
        buf = self._sbuf
        mv = memoryview(buf)
        ack_ms = self.cfg["ack_timeout_s"] * 1000
        while True:
            self._sender_beat = time.ticks_ms()
            self._wake.clear()
            link = self.link  # a deferred link is swapped in by online()
            if link.up:
                i = q.due(time.ticks_ms(), ack_ms, _MAX_INFLIGHT)
                if i >= 0:
                    n = q.read(i, buf)
                    q.mark_sent(i, time.ticks_ms())
                    try:
                        await link.send(mv[0:n])
                    except OSError as e:  # the link's own task notices and reconnects
                        log("node", "send: %s", e)
                        await asyncio.sleep_ms(200)
                    continue
            await self._wake.wait(500)


def main(hal=None, role=None):
    """Boot: config, HAL, the node, one asyncio loop. A bad config raises ``ValueError``
    naming the key (on a board: to the REPL, before any watchdog runs, so it can be fixed);
    any other failure of the runtime (a corrupt counter file, a bug) reboots the board, and
    counts towards safe mode."""
    import node
    from node import config

    cfg = config.load()
    # The checks are done: give their code back to the heap (about 5 KiB on an ESP32).
    del sys.modules["node.config"]
    del node.config
    del config
    if hal is None:
        from hal import Board

        hal = Board()
    gc.collect()
    try:
        asyncio.run(Node(hal, cfg, role).run())
    except Exception as e:
        sys.print_exception(e)
        log("node", "runtime failed: %s; rebooting", e)
        hal.reset()
