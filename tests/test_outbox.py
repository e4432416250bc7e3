"""The durable outbox: numbering and chaining at insertion, transactions shared with ingest, the
bound and its drop policy, restarts and crashes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from linli.contract import GENESIS, Contract
from linli.events import Priority, new_event
from linli.outbox import ChainBroken, Outbox, OutboxError
from linli.verify import verify_lines

C = Contract("site-1", "gw-1")


def run(coro):
    return asyncio.run(coro)


def tel(i, node="n1"):
    return new_event("node.telemetry", node=node, data={"readings": {"i": i}})


def alarm(i, node="n1"):
    return new_event("bin.tipped", node=node, data={"tilt_deg": 40 + i})


def normal(i, node="n1"):
    return new_event("bin.emptied", node=node, data={"fill_pct": i})


async def everything(ob) -> list:
    return await ob.read(0, 1_000_000)


def test_numbered_chained_and_deleted_only_when_acked(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        evs = [tel(i, "n%d" % (i % 3)) for i in range(10)]
        await ob.add(evs[:4])
        await ob.add(evs[4:])
        rows = await everything(ob)
        assert [r.seq for r in rows] == list(range(1, 11))
        assert [r.id for r in rows] == [e.id for e in evs]
        ces = [json.loads(r.payload) for r in rows]
        assert ces[0]["prevhash"] == GENESIS
        assert all(b["prevhash"] == a["hash"] for a, b in zip(ces, ces[1:]))
        assert verify_lines([r.payload.decode() for r in rows]).ok
        assert await ob.ack([1, 2, 5, 99]) == 3
        assert [r.seq for r in await ob.read(0, 100)] == [3, 4, 6, 7, 8, 9, 10]
        assert [r.seq for r in await ob.read(after=6, limit=2)] == [7, 8]
        st = await ob.stats()
        assert (st.pending, st.last_seq, st.dropped) == (7, 10, 0)
        assert st.bytes == sum(len(r.payload) for r in await everything(ob))
        await ob.close()

    run(go())


def test_fn_shares_the_transaction_and_rolls_back_with_it(tmp_path):
    """Ingest stores a node's replay window with the frame's events: both or neither."""

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        await ob.transaction(lambda conn: conn.execute("CREATE TABLE windows (node TEXT PRIMARY KEY, last INTEGER)"))

        def store(conn, last, fail=False):
            conn.execute("INSERT OR REPLACE INTO windows VALUES ('n1', ?)", (last,))
            if fail:
                raise ValueError("disk on fire")
            return last

        assert await ob.add([tel(1)], lambda c: store(c, 7)) == 7
        with pytest.raises(ValueError, match="disk on fire"):
            await ob.add([tel(2), tel(3)], lambda c: store(c, 9, fail=True))
        assert await ob.query(lambda c: c.execute("SELECT last FROM windows").fetchone()[0]) == 7
        rows = await everything(ob)
        assert [r.seq for r in rows] == [1]  # the failed call used no sequence numbers
        await ob.add([tel(4)])
        rows = await everything(ob)
        assert [r.seq for r in rows] == [1, 2]
        assert verify_lines([r.payload.decode() for r in rows]).ok
        await ob.close()

    run(go())


def test_concurrent_adds_commit_together_but_fail_alone(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)

        def boom(conn):
            raise RuntimeError("bad frame")

        calls = [ob.add([tel(i)], boom if i % 5 == 0 else None) for i in range(50)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sum(isinstance(r, RuntimeError) for r in results) == 10
        rows = await everything(ob)
        assert [r.seq for r in rows] == list(range(1, 41))
        assert verify_lines([r.payload.decode() for r in rows]).ok
        await ob.close()

    run(go())


def test_a_write_chain_stops_at_the_first_failure_until_reset(tmp_path):
    """Writes that build on each other (ingest's overlapping batches): after one fails, the
    later ones of the same chain are not stored; other writes and, after reset(), the chain
    itself go on."""

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        chain = ob.new_chain()

        def boom(conn):
            raise RuntimeError("disk full (injected)")

        calls = [ob.add([tel(1)], chain=chain), ob.add([tel(2)], boom, chain=chain), ob.add([tel(3)], chain=chain), ob.add([tel(4)]), ob.add([tel(5)], chain=chain)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[0] is None and results[3] is None
        assert isinstance(results[1], RuntimeError)
        assert isinstance(results[2], ChainBroken) and isinstance(results[4], ChainBroken)
        assert [json.loads(r.payload)["data"]["readings"]["i"] for r in await everything(ob)] == [1, 4]
        # An event the contract does not know breaks the chain too, before anything is queued.
        chain.reset()
        bad = tel(6)
        bad.type = "no.such.type"
        results = await asyncio.gather(ob.add([bad], chain=chain), ob.add([tel(7)], chain=chain), return_exceptions=True)
        assert isinstance(results[0], OutboxError) and isinstance(results[1], ChainBroken)
        chain.reset()
        await ob.add([tel(8)], chain=chain)
        assert [json.loads(r.payload)["data"]["readings"]["i"] for r in await everything(ob)] == [1, 4, 8]
        await ob.close()

    run(go())


def test_chain_continues_across_restarts(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        await ob.add([tel(i) for i in range(5)])
        first = await everything(ob)
        chain = ob.chain
        await ob.ack([r.seq for r in first])
        await ob.close()
        ob = await Outbox.open(tmp_path / "gw.db", C)
        assert ob.chain == chain
        await ob.add([tel(i) for i in range(3)])
        second = await everything(ob)
        await ob.close()
        return first, second

    first, second = run(go())
    assert [r.seq for r in second] == [6, 7, 8]
    assert verify_lines([r.payload.decode() for r in first + second]).ok


def _priorities(rows):
    from linli.events import EVENT_TYPES

    return [EVENT_TYPES[r.type].priority for r in rows]


def test_full_drops_oldest_telemetry_then_normal_never_alarms(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C, max_events=10, drop_report_s=3600)
        await ob.add([alarm(0), tel(1), normal(2), tel(3), alarm(4), normal(5), tel(6), tel(7)])  # 8 stored
        await ob.add([tel(8), normal(9), alarm(10)])  # 11 -> drop oldest telemetry (seq 2)
        rows = await everything(ob)
        dropped_reports = [r for r in rows if r.type == "gateway.outbox.dropped"]
        # The report is an alarm too and takes a slot: seq 2 and 4 (telemetry) went.
        assert [r.seq for r in rows if r.type != "gateway.outbox.dropped"] == [1, 3, 5, 6, 7, 8, 9, 10, 11]
        assert len(dropped_reports) == 1
        data = json.loads(dropped_reports[0].payload)["data"]
        assert data["count"] == 2 and data["by_type"] == {"node.telemetry": 2}
        assert [(x["first"], x["last"]) for x in data["ranges"]] == [(2, 2), (4, 4)]
        # More alarms: telemetry goes first, then normal, alarms stay even over the bound.
        await ob.add([alarm(20 + i) for i in range(12)])
        rows = await everything(ob)
        assert Priority.TELEMETRY not in _priorities(rows) and Priority.NORMAL not in _priorities(rows)
        st = await ob.stats()
        assert st.over_bound and st.pending > 10
        assert st.dropped == 8  # 5 telemetry + 3 normal
        await ob.close()
        return rows

    rows = run(go())
    # The verifier accepts the reported drops; the chain links across them.
    ob_rows = rows
    report = verify_lines([r.payload.decode() for r in ob_rows])
    # Drops after the first report are not reported yet (interval 3600 s): a verifier sees gaps.
    assert report.chains[0].dropped == [(2, 2), (4, 4)]
    assert report.chains[0].gaps


def test_drops_are_reported_within_the_interval_even_without_new_events(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C, max_events=5, drop_report_s=0.3)
        await ob.add([tel(i) for i in range(6)])  # first drop: reported at once
        await ob.add([tel(i) for i in range(3)])  # more drops: wait for the interval
        rows = await everything(ob)
        assert sum(r.type == "gateway.outbox.dropped" for r in rows) == 1
        await asyncio.sleep(0.6)
        rows = await everything(ob)
        reports = [json.loads(r.payload)["data"] for r in rows if r.type == "gateway.outbox.dropped"]
        await ob.close()
        return rows, reports

    rows, reports = run(go())
    assert len(reports) == 2
    # Every event ever stored is either present or in a reported range: the chain verifies
    # from seq 1, and a report never evicts events it does not itself report.
    r = verify_lines([x.payload.decode() for x in rows])
    assert r.ok, r.to_dict()
    assert r.chains[0].first == 1 and r.chains[0].dropped == [(1, 6)]
    assert sum(x["count"] for x in reports) == 6


def test_byte_bound(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C, max_bytes=4096, drop_report_s=3600)
        big = {"readings": {"blob": "x" * 900}}
        for i in range(10):
            await ob.add([new_event("node.telemetry", node="n1", data=big)])
        st = await ob.stats()
        await ob.close()
        return st

    st = run(go())
    assert st.bytes <= 4096 and st.dropped >= 6


def test_node_state_keeps_the_latest_until_published(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        await ob.set_node_state("bin-1", {"fill_pct": 10}, at=0)
        await ob.set_node_state("bin-1", {"fill_pct": 20}, at=0)
        await ob.add([tel(1)], lambda conn: ob.stage_node_state(conn, "bin-2", {"fill_pct": 5}, at=0))
        states = await ob.node_states()
        assert [(s.node, s.version) for s in states] == [("bin-1", 2), ("bin-2", 1)]
        assert json.loads(states[0].payload) == {"node": "bin-1", "time": "1970-01-01T00:00:00.000Z", "state": {"fill_pct": 20}}
        assert states[0].topic == "linli/v1/site-1/gw-1/nodes/bin-1/state"
        await ob.node_state_published("bin-1", 2)
        await ob.node_state_published("bin-2", 0)
        assert [s.node for s in await ob.node_states()] == ["bin-2"]
        await ob.close()

    run(go())


def test_bad_arguments_and_closed_outbox(tmp_path):
    with pytest.raises(OutboxError, match="max_events"):
        Outbox(tmp_path / "x.db", C, max_events=0)

    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        await ob.close()
        with pytest.raises(OutboxError, match="closed"):
            await ob.add([tel(1)])

    run(go())


_WRITER = r"""
import asyncio, sys
from linli.contract import Contract
from linli.events import new_event
from linli.outbox import Outbox

async def main():
    ob = await Outbox.open(sys.argv[1], Contract("site-1", "gw-1"), synchronous="normal")
    i = 0
    while True:
        await ob.add([new_event("node.telemetry", node="n%d" % (j % 4), data={"readings": {"i": i + j}}) for j in range(20)])
        i += 20
        print(i, flush=True)

asyncio.run(main())
"""


def test_sigkill_mid_write_leaves_a_whole_chain(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    db = tmp_path / "gw.db"
    for _ in range(2):
        p = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(15):  # let it commit a few batches, then kill it mid-stream
                assert p.stdout.readline()
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()

    async def go():
        ob = await Outbox.open(db, C)
        rows = await everything(ob)
        await ob.close()
        return rows

    rows = run(go())
    assert len(rows) >= 600 and len(rows) % 20 == 0  # whole transactions only
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    r = verify_lines([x.payload.decode() for x in rows])
    assert r.ok and r.chains[0].first == 1
    assert len({x.id for x in rows}) == len(rows)


def test_keyed_chain_and_duplicate_guard(tmp_path):
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C, chain_key=b"site secret chain key")
        await ob.add([tel(i) for i in range(5)])
        e = tel(9)
        with pytest.raises(OutboxError, match="twice"):
            await ob.add([e, e])
        rows = await everything(ob)
        await ob.close()
        return rows

    lines = [r.payload.decode() for r in run(go())]
    assert {json.loads(x)["hashalg"] for x in lines} == {"hmac-sha256"}
    assert verify_lines(lines, key=b"site secret chain key").ok
    assert not verify_lines(lines, key=b"another key").ok


def test_from_config(tmp_path):
    from linli.config import Config

    cfg = Config.from_text('[gateway]\nsite = "xinhua-1"\nid = "gw-01"\ndata_dir = "data"\n[privacy]\nsite_secret = "correct horse battery staple"\n[outbox]\nmax_events = 500\nmax_mb = 1.5\n', "gw.toml", base=tmp_path)

    async def go():
        ob = await Outbox.from_config(cfg)
        await ob.add([tel(1)])
        [row] = await everything(ob)
        await ob.close()
        return ob, row

    ob, row = run(go())
    assert (ob.max_events, ob.max_bytes, ob.path) == (500, int(1.5 * 1024 * 1024), tmp_path / "data" / "gateway.db")
    assert row.topic == "linli/v1/xinhua-1/gw-01/events/node.telemetry"


def test_acks_commit_without_fsync_and_events_with_it(tmp_path):
    # Deletes after PUBACK may be lost on power loss (republished, same bytes); events may not:
    # the connection is back at synchronous=FULL (2) for the next write after an ack.
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", C)
        await ob.add([tel(1), tel(2)])
        assert await ob.ack([1]) == 1
        level = await ob.query(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        await ob.node_state_published("bin-1", 1)  # queued, not awaited on the thread
        [p] = await ob.read(after=0)
        await ob.close()
        return level, p.seq

    assert run(go()) == (2, 2)
