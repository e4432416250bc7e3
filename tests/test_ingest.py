"""Ingest: frames -> verified -> rules -> stored in one transaction -> acked (with a real SQLite sink)."""

import asyncio
import json
import sqlite3

import pytest

from linli import commands as cmdstore
from linli.config import Config
from linli.ingest import Ingest
from linli.keystore import KeyStore
from linli.link import Flag, Kind, LinkKeys, Role, open_frame, seal
from linli.link.crypto import DOWN
from linli.link.frame import encode_body
from linli.pets import PetRegistry
from linli.pettag import make_tag

TAG_KEY = b"t" * 32
CFG = """
[gateway]
site = "test-site"
id = "gw-1"
data_dir = "{d}"
[privacy]
site_secret = "0123456789abcdef0123"
[availability]
grace_s = 10
heartbeat_misses = 3
default_heartbeat_s = 60
"""


class SqliteSink:
    """A minimal real sink: events and fn(conn) in one SQLite transaction (fn first)."""

    def __init__(self, path):
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("CREATE TABLE IF NOT EXISTS ev (id TEXT PRIMARY KEY, type TEXT, subject TEXT, data TEXT)")
        self.fail = False

    async def add(self, events, fn=None):
        self.conn.execute("BEGIN")
        try:
            r = fn(self.conn) if fn else None
            if self.fail:
                raise sqlite3.OperationalError("disk I/O error (injected)")
            for e in events:
                self.conn.execute("INSERT INTO ev VALUES (?,?,?,?)", (e.id, e.type, e.subject, json.dumps(e.data)))
            self.conn.execute("COMMIT")
            return r
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def events(self, type_=None):
        rows = self.conn.execute("SELECT type, subject, data FROM ev ORDER BY rowid").fetchall()
        return [(t, s, json.loads(d)) for t, s, d in rows if type_ is None or t == type_]


class Node:
    def __init__(self, node_id, role, ks):
        self.id, self.role = node_id, role
        self.key = LinkKeys(bytes([len(node_id)]) * 32)
        ks.add(node_id, role.label, bytes([len(node_id)]) * 32)
        self.counter = 0
        self.down = []
        self.down_window = None

    def frame(self, kind, body, counter=None, flags=0, ts=0):
        if counter is None:
            self.counter += 1
            counter = self.counter
        self.counter = max(self.counter, counter)
        return seal(self.key, kind, self.role, self.id, counter=counter, ts=ts, payload=encode_body(body), flags=flags)

    async def reply(self, raw):
        f = open_frame(raw, lambda n: (self.key, self.role), direction=DOWN)
        self.down.append((f.kind.label, f.body, f.counter))

    def acks(self):
        return [(b["c"], b["r"]) for k, b, _ in self.down if k == "ack"]


@pytest.fixture
def gw(tmp_path):
    def make():
        cfg = Config.from_text(CFG.format(d=tmp_path))
        ks = KeyStore(tmp_path / "keys.db")
        sink = SqliteSink(tmp_path / "gw.db")
        pets = PetRegistry(tmp_path / "pets.json", tag_key=TAG_KEY)
        ing = Ingest(cfg, ks.lookup, sink, pets)
        return ing, ks, sink, pets

    return make


async def run(ing, node, *frames, topic=True):
    for raw in frames:
        ing.submit(raw, node.reply, topic_id=node.id if topic else None)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if ing.queue.empty():
            await asyncio.sleep(0.01)
            if ing.queue.empty():
                return


def test_frames_become_events_and_acks_only_after_storage(gw):
    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        await run(ing, b, b.frame(Kind.HELLO, {"fw": "0.1.0", "rc": "pwron", "bc": 1, "sm": 0}), b.frame(Kind.TELEMETRY, {"fill": 30, "bat": 3.9, "hb": 3600}))
        assert [t for t, _, _ in sink.events()] == ["node.rebooted", "node.telemetry"]
        assert b.acks() == [(1, 0), (2, 0)]
        # The same counter again: acked again, never a second event.
        await run(ing, b, b.frame(Kind.TELEMETRY, {"fill": 30}, counter=2))
        assert b.acks()[-1] == (2, 0) and len(sink.events()) == 2
        assert ing.counts["duplicate"] == 1
        st = ing.nodes["bin-0001"]
        assert (st.fw, st.bat, st.heartbeat_s) == ("0.1.0", 3.9, 3600)
        await ing.stop()

    asyncio.run(main())


def test_forged_replayed_unknown_and_malformed_never_make_events(gw):
    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        await run(ing, b, b.frame(Kind.TELEMETRY, {"fill": 10}, counter=100))
        forged = bytearray(b.frame(Kind.EVENT, {"ev": "fire_risk", "temp": 90}))
        forged[-1] ^= 1
        stranger = Node("bin-9", Role.BIN, ks)
        ks.revoke("bin-9")
        await run(ing, b, bytes(forged), b.frame(Kind.TELEMETRY, {"fill": 11}, counter=5))
        await run(ing, stranger, stranger.frame(Kind.TELEMETRY, {"fill": 1}))
        await run(ing, b, b.frame(Kind.EVENT, {"ev": "explode"}), b.frame(Kind.TELEMETRY, {"fill": "lots"}), b.frame(Kind.TELEMETRY, {"fill": 12}))
        types = [t for t, _, _ in sink.events()]
        assert "bin.fire_risk" not in types
        assert [d["readings"]["fill"] for t, _, d in sink.events("node.telemetry")] == [10, 12]
        assert ing.counts["bad_tag"] == 1 and ing.counts["replayed"] == 1 and ing.counts["unknown_node"] == 1
        assert ing.counts["malformed"] == 2
        assert ing.nodes["bin-0001"].rejected == {"accepted": 4, "bad_tag": 1, "replayed": 1, "malformed": 2}
        acks = dict(b.acks())
        assert acks[5] == 6  # replayed: told to stop retrying
        assert sorted(r for c, r in b.acks() if r == 8) == [8, 8]  # malformed: dropped by the node
        await ing.stop()

    asyncio.run(main())


def test_storage_failure_means_no_ack_and_the_retry_is_accepted(gw):
    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        sink.fail = True
        raw = b.frame(Kind.EVENT, {"ev": "tipped", "tilt": 80})
        await run(ing, b, raw)
        assert b.acks() == [] and sink.events() == []
        sink.fail = False
        await run(ing, b, raw)  # the node retries the same frame
        assert b.acks() == [(1, 0)]
        assert [t for t, _, _ in sink.events()] == ["bin.tipped"]
        await ing.stop()

    asyncio.run(main())


def test_state_survives_a_restart(gw):
    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        raw = b.frame(Kind.TELEMETRY, {"fill": 90})
        await run(ing, b, raw)
        await ing.stop()
        ing2, _, sink2, _ = gw()
        await ing2.start()
        await run(ing2, b, raw, b.frame(Kind.TELEMETRY, {"fill": 95}))
        assert [t for t, _, _ in sink2.events("bin.full")] == ["bin.full"]  # latch state survived
        assert ing2.counts["duplicate"] == 1
        await ing2.stop()

    asyncio.run(main())


def test_a_replaced_board_with_a_new_key_counts_from_one_again(gw):
    """A broken bin's board is swapped and flashed under the same node id with a new key (`linli
    flash --new-key`): its counters start at 1 again and must be accepted, while frames under
    the old key are refused, whether the key changed while the gateway was down or running."""

    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        await run(ing, b, *[b.frame(Kind.TELEMETRY, {"fill": 10 + i}) for i in range(5)])
        assert b.acks() == [(c, 0) for c in range(1, 6)]
        old_key = b.key
        await ing.stop()
        KeyStore(ks.path).add("bin-0001", "bin", b"\x42" * 32, replace=True)  # flashed while the gateway is down
        ing2, ks2, sink2, _ = gw()
        await ing2.start()
        b.key, b.counter, b.down = LinkKeys(b"\x42" * 32), 0, []
        await run(ing2, b, b.frame(Kind.TELEMETRY, {"fill": 20}), b.frame(Kind.TELEMETRY, {"fill": 21}))
        assert b.acks() == [(1, 0), (2, 0)] and ing2.receiver.counts["rekeyed"] == 1
        assert [d["readings"]["fill"] for _, _, d in sink2.events("node.telemetry")][-2:] == [20, 21]
        forged = seal(old_key, Kind.TELEMETRY, Role.BIN, "bin-0001", counter=9, ts=0, payload=encode_body({"fill": 99}))
        await run(ing2, b, forged)
        assert ing2.counts["bad_tag"] == 1  # the old board (or a recording of it) is locked out
        ks2.add("bin-0001", "bin", b"\x43" * 32, replace=True)  # and again, with the gateway running
        b.key, b.counter, b.down = LinkKeys(b"\x43" * 32), 0, []
        await run(ing2, b, b.frame(Kind.TELEMETRY, {"fill": 22}))
        assert b.acks() == [(1, 0)] and ing2.receiver.counts["rekeyed"] == 2
        await run(ing2, b, b.frame(Kind.TELEMETRY, {"fill": 22}, counter=1))
        assert ing2.counts["duplicate"] == 1  # the fresh window still stops replays
        await ing2.stop()

    asyncio.run(main())


def test_bin_rules_and_deposit_pseudonym(gw):
    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        fills = [20, 50, 86, 90, 60, 41, 39, 88]
        await run(ing, b, *[b.frame(Kind.TELEMETRY, {"fill": f}) for f in fills])
        seq = [t for t, _, _ in sink.events() if t.startswith("bin.")]
        assert seq == ["bin.full", "bin.emptied", "bin.full"]
        await run(ing, b, b.frame(Kind.EVENT, {"ev": "deposit", "card": "04A1B2C3D4", "w_g": 1500, "cat": "kitchen"}))
        (_, _, d), = sink.events("bin.deposit")
        assert d["resident"] == ing.rules.pseudonym("04a1b2c3d4") and len(d["resident"]) == 32
        assert d["points"] == 15.0
        dump = json.dumps(sink.events())
        assert "04A1B2C3D4" not in dump.upper()
        await ing.stop()

    asyncio.run(main())


def test_pet_scan_answered_with_status(gw):
    async def main():
        ing, ks, sink, pets = gw()
        await ing.start()
        pets.update({"version": 1, "pets": {"7Q2M9XKD": {"status": "green"}, "AB12CD34": {"status": "red"}}})
        p = Node("petscan-01", Role.PETSCAN, ks)
        await run(ing, p, p.frame(Kind.EVENT, {"ev": "scan", "tag": make_tag("7Q2M9XKD", TAG_KEY)}))
        await run(ing, p, p.frame(Kind.EVENT, {"ev": "scan", "tag": make_tag("AB12CD34", b"x" * 32)}))
        shown = [b["a"] for k, b, _ in p.down if k == "command"]
        assert shown[0] == {"tag": "7Q2M9XKD", "status": "green", "buzz": "ok"}
        assert shown[1]["status"] == "red"  # forged signature
        assert [d["status"] for _, _, d in sink.events("petscan.scan")] == ["green", "red"]
        await ing.stop()

    asyncio.run(main())


def test_commands_wait_for_a_sleeping_node_and_resolve(gw):
    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        await run(ing, b, b.frame(Kind.TELEMETRY, {"fill": 5}))

        def enqueue(conn):
            return cmdstore.enqueue(conn, "cmd-42", "bin-0001", "bin.config", {"report_s": 600}, 3600, 8)

        seq = await sink.add([], enqueue)
        assert not [1 for k, *_ in b.down if k == "command"]  # asleep: nothing sent yet
        await run(ing, b, b.frame(Kind.STATUS, {"st": "online"}))
        cmds = [body for k, body, _ in b.down if k == "command"]
        assert cmds == [{"id": seq, "op": "bin.config", "a": {"report_s": 600}}]
        await run(ing, b, b.frame(Kind.COMMAND_RESULT, {"id": seq, "ok": True}))
        (_, _, d), = sink.events("command.result")
        assert d["command_id"] == "cmd-42" and d["op"] == "bin.config" and d["ok"] is True
        # Downlink counters strictly increase.
        counters = [c for *_, c in b.down]
        assert counters == sorted(set(counters))
        await ing.stop()

    asyncio.run(main())


def test_sleep_aware_availability(gw):
    async def main():
        ing, ks, sink, _ = gw()
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        s = Node("streetlight-01", Role.STREETLIGHT, ks)
        await run(ing, b, b.frame(Kind.STATUS, {"st": "asleep", "until": 10**10}))
        await run(ing, s, s.frame(Kind.TELEMETRY, {"lux": 3, "hb": 60}))
        t0 = ing.nodes["streetlight-01"].last_seen
        assert await ing.check_availability(t0 + 100) == []
        evs = await ing.check_availability(t0 + 60 * 3 + 11)
        assert [(e.type, e.subject) for e in evs] == [("node.offline", "streetlight-01")]
        assert ing.nodes["bin-0001"].availability == "asleep"
        evs = await ing.check_availability(10**10 + 11)
        assert [(e.type, e.subject) for e in evs] == [("node.offline", "bin-0001")]
        await run(ing, s, s.frame(Kind.TELEMETRY, {"lux": 2}))
        assert "node.online" in [t for t, _, _ in sink.events()]
        await ing.stop()

    asyncio.run(main())


def test_overlapping_batches_fail_together_and_the_retries_are_stored_once(tmp_path):
    """With the real outbox, a batch is verified while the one before is being stored. When
    that one fails, the later one (built on its in-memory state: replay windows, latches) must
    fail with it: otherwise the retried frames would look like duplicates and be lost."""
    import threading
    import time as _time

    from linli.contract import Contract
    from linli.outbox import Outbox

    async def main():
        cfg = Config.from_text(CFG.format(d=tmp_path))
        ks = KeyStore(tmp_path / "keys.db")
        ob = await Outbox.open(tmp_path / "gw.db", Contract("test-site", "gw-1"))
        fail = threading.Event()

        def stage_state(conn, st):  # runs inside each batch's transaction, on the outbox thread
            if fail.is_set():
                fail.clear()
                _time.sleep(0.3)  # the next batch is prepared and queued meanwhile
                raise sqlite3.OperationalError("disk I/O error (injected)")

        ing = Ingest(cfg, ks.lookup, ob, PetRegistry(tmp_path / "pets.json", tag_key=TAG_KEY), batch=4, stage_state=stage_state)
        await ing.start()
        b = Node("bin-0001", Role.BIN, ks)
        first = [b.frame(Kind.TELEMETRY, {"fill": 10 + i}) for i in range(4)]
        second = [b.frame(Kind.TELEMETRY, {"fill": 90 + i}) for i in range(4)]  # crosses bin.full
        fail.set()
        for raw in first:
            ing.submit(raw, b.reply, topic_id=b.id)
        while not ing._inflight:
            await asyncio.sleep(0.005)
        for raw in second:
            ing.submit(raw, b.reply, topic_id=b.id)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if ing.counts.get("batch_failed") == 2 and not ing._inflight:
                break
        assert ing.counts.get("batch_failed") == 2, ing.counts  # the second failed with the first
        assert b.acks() == [] and (await ob.stats()).last_seq == 0
        assert ing.receiver.window(b.id).last == 0 and "bin-0001" not in ing.nodes
        await run(ing, b, *(first + second))  # the node sends them all again
        for _ in range(100):
            if len(b.acks()) == 8:
                break
            await asyncio.sleep(0.01)
        assert b.acks() == [(c, 0) for c in range(1, 9)]
        rows = await ob.read(0, 100)
        types = [r.type for r in rows]
        assert types.count("node.telemetry") == 8 and types.count("bin.full") == 1, types
        assert ing.counts.get("duplicate", 0) == 0
        await ing.stop()
        await ob.close()
        ks.close()

    asyncio.run(main())


def test_a_bug_halfway_through_a_batch_leaves_nothing_half_applied(gw):
    ing, ks, sink, _ = gw()
    real = ing.rules.telemetry
    seen = []

    def flaky(st, body, at):
        seen.append(body["fill"])
        if len(seen) == 3:  # the third frame of the batch hits a bug
            raise RuntimeError("a bug in a rule (injected)")
        return real(st, body, at)

    async def main():
        b = Node("bin-0001", Role.BIN, ks)
        frames = [b.frame(Kind.TELEMETRY, {"fill": 10 + i}) for i in range(3)]
        ing.rules.telemetry = flaky
        await ing.start()
        await run(ing, b, *frames)
        assert ing.counts["batch_failed"] == 1 and b.acks() == [] and sink.events() == []
        assert ing.receiver.window(b.id).last == 0 and "bin-0001" not in ing.nodes  # all undone
        ing.rules.telemetry = real
        await run(ing, b, *frames)
        assert b.acks() == [(1, 0), (2, 0), (3, 0)] and len(sink.events("node.telemetry")) == 3
        await ing.stop()

    asyncio.run(main())
