"""The offline queue (node.queue) on the unix port, .mpy, 64 KiB heap: order, acks, bounds and
priorities, and power loss in the middle of a write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.micropython

SCRIPT = (Path(__file__).parent / "mp" / "node" / "queue_ops.py").read_text()
REC = 6  # record header: type, length, CRC-32


def run(mpy, *ops):
    r = mpy.run(SCRIPT, files={"ops.json": json.dumps(ops)}, timeout=20).expect_ok()
    return [dict(zip(("op", "res", "counters", "live", "dropped", "inflight", "files"), json.loads(line)))
            for line in r.stdout.splitlines()]


def last(steps):
    return steps[-1]


def test_frames_survive_a_reboot_in_order_and_acks_delete_them(mpy):
    s = run(mpy, ["open", 4096, 16, 0], *[["put", c, 40, False] for c in range(1, 6)], ["ack", 2], ["ack", 4],
            ["ack", 99])
    assert [x["res"] for x in s[-3:]] == [True, True, False]
    assert last(s)["counters"] == [1, 3, 5]
    s = run(mpy, ["open", 4096, 16, 0], ["read", 3], ["read", 5])
    assert s[0]["counters"] == [1, 3, 5] and s[1]["res"] is True and s[2]["res"] is True
    s = run(mpy, ["open", 4096, 16, 0], ["ack", 1], ["ack", 3], ["ack", 5])
    assert last(s)["counters"] == [] and last(s)["files"] == {}  # empty queue: no files left


def test_full_queue_drops_oldest_telemetry_and_counts_it(mpy):
    s = run(mpy, ["open", 4096, 8, 0], *[["put", c, 40, False] for c in range(1, 11)])
    assert last(s)["counters"] == list(range(3, 11)) and last(s)["dropped"] == 2
    s = run(mpy, ["open", 4096, 8, 0], ["take_dropped"], ["take_dropped"])
    assert s[0]["dropped"] == 2  # persisted across the reboot
    assert s[1]["res"] == 2 and s[2]["res"] == 0 and last(s)["dropped"] == 0


def test_byte_bound_drops_by_size(mpy):
    # 1024 live bytes: 4 records of 6 + 240 fit (984), the 5th pushes the oldest out
    s = run(mpy, ["open", 1024, 64, 0], *[["put", c, 240, False] for c in range(1, 6)])
    assert last(s)["counters"] == [2, 3, 4, 5] and last(s)["dropped"] == 1


def test_alarms_are_never_dropped(mpy):
    ops = [["open", 4096, 8, 0]]
    ops += [["put", c, 40, c % 2 == 1] for c in range(1, 9)]  # odd: alarms
    ops += [["put", 9, 40, False], ["put", 10, 40, False]]  # drops telemetry 2 and 4
    s = run(mpy, *ops)
    assert last(s)["counters"] == [1, 3, 5, 6, 7, 8, 9, 10] and last(s)["dropped"] == 2
    shutil.rmtree(mpy.flash / "q")
    ops = [["open", 4096, 8, 0]] + [["put", c, 40, True] for c in range(1, 9)]
    ops += [["put", 9, 40, False], ["put", 10, 40, True], ["put", 11, 40, True], ["put", 12, 40, True]]
    s = run(mpy, *ops)
    assert s[9]["res"] is False  # telemetry refused: only alarms to drop
    # alarms use a headroom of a quarter more frames; past it even a new alarm is refused
    assert [x["res"] for x in s[10:]] == [True, True, False]
    assert last(s)["counters"] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert last(s)["dropped"] == 2


def test_power_loss_mid_write_keeps_every_whole_record(mpy):
    s = run(mpy, ["open", 4096, 32, 0], *[["put", c, 50, False] for c in range(1, 6)])
    (seg,) = last(s)["files"]
    path = mpy.flash / "q" / seg
    data = path.read_bytes()
    assert len(data) == 5 * (REC + 50)
    path.write_bytes(data[: 4 * (REC + 50) + 20])  # the 5th record cut short
    s = run(mpy, ["open", 4096, 32, 0], ["put", 6, 50, False])
    assert s[0]["counters"] == [1, 2, 3, 4]
    assert last(s)["counters"] == [1, 2, 3, 4, 6]
    assert len(last(s)["files"]) == 2  # appends go to a new segment, never after the torn tail
    s = run(mpy, ["open", 4096, 32, 0], ["read", 4], ["read", 6])
    assert s[0]["counters"] == [1, 2, 3, 4, 6] and s[1]["res"] and s[2]["res"]


@pytest.mark.parametrize("cut", [1, REC - 1, REC, REC + 10])
def test_torn_header_or_body_at_the_tail(mpy, cut):
    s = run(mpy, ["open", 4096, 32, 0], ["put", 1, 40, False], ["put", 2, 40, False])
    (seg,) = last(s)["files"]
    path = mpy.flash / "q" / seg
    path.write_bytes(path.read_bytes()[: REC + 40 + cut])
    assert run(mpy, ["open", 4096, 32, 0])[0]["counters"] == [1]


def test_corrupt_tail_record_is_detected_by_its_crc(mpy):
    s = run(mpy, ["open", 4096, 32, 0], ["put", 1, 40, False], ["put", 2, 40, False])
    (seg,) = last(s)["files"]
    path = mpy.flash / "q" / seg
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # a bit flipped in the last frame's body
    path.write_bytes(bytes(data))
    assert run(mpy, ["open", 4096, 32, 0])[0]["counters"] == [1]


def test_acked_tombstones_survive_a_reboot(mpy):
    run(mpy, ["open", 4096, 32, 0], *[["put", c, 40, False] for c in range(1, 5)], ["ack", 1], ["ack", 3])
    s = run(mpy, ["open", 4096, 32, 0])
    assert s[0]["counters"] == [2, 4]


def test_flash_use_stays_bounded_behind_an_old_unacked_alarm(mpy):
    # One alarm never acked keeps its segment; thousands of dropped reports must not pile up.
    ops = [["open", 1024, 8, 512], ["put", 1, 100, True]]
    ops += [["put", c, 100, False] for c in range(2, 200)]
    s = run(mpy, *ops)
    assert last(s)["counters"][0] == 1 and len(last(s)["counters"]) <= 8
    assert max(sum(x["files"].values()) for x in s) <= 2 * 1024 + 512 + 256
    assert run(mpy, ["open", 1024, 8, 512])[0]["counters"] == last(s)["counters"]


def test_sending_window_in_order_with_32_in_flight_and_resend_after_timeout(mpy):
    ops = [["open", 16384, 64, 0]] + [["put", c, 30, False] for c in range(1, 41)]
    ops += [["due", 1000, 500, 32] for _ in range(33)]
    ops += [["ack", 1], ["due", 1100, 500, 32], ["due", 1600, 500, 32], ["unsend"], ["due", 1700, 500, 32]]
    s = run(mpy, *ops)
    dues = [x["res"] for x in s if x["op"] == "due"]
    assert dues[:32] == list(range(1, 33)) and dues[32] == -1  # 32 in flight, then wait
    assert dues[33] == 33  # an ack frees a slot
    assert dues[34] == 2  # 600 ms later, the oldest unacked one goes again
    assert dues[35] == 2 and s[-1]["inflight"] == 1  # after a reconnect: all again, in order
