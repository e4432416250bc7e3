"""Properties of the gateway's link code: what the vectors cannot enumerate."""

import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from linli.link import Kind, LinkError, LinkKeys, Reason, Reservation, Role, Verdict, Window, open_frame, seal
from linli.link.crypto import DOWN
from linli.link.receiver import Receiver
from linli.link.serial import Decoder, cobs_decode, cobs_encode, wire

KEY = LinkKeys(bytes(range(32)))
NODE = "bin-0001"


def lookup(node_id):
    return (KEY, Role.BIN) if node_id == NODE else None


def frame(counter, payload=b'{"fill":1}'):
    return seal(KEY, Kind.TELEMETRY, Role.BIN, NODE, counter=counter, ts=1795880000, payload=payload)


node_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=16)


@given(node_ids, st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=200), st.sampled_from(list(Kind)))
def test_seal_open_round_trip(node_id, counter, ts, blob, kind):
    payload = b'{"b":"%s"}' % blob.hex()[: 200 - 13 - len(node_id) - 8 - 8].encode()
    keys = LinkKeys(os.urandom(32))
    flags = 1 if kind in (Kind.ACK, Kind.COMMAND) else 0
    raw = seal(keys, kind, Role.PETSCAN, node_id, counter=counter, ts=ts, payload=payload, flags=flags)
    fr = open_frame(raw, lambda n: (keys, Role.PETSCAN), direction=DOWN if flags else 0)
    assert (fr.node_id, fr.counter, fr.ts, fr.payload) == (node_id, counter, ts, payload)
    assert payload[4:] not in raw or len(payload) < 12  # the payload really is encrypted


@given(st.binary(min_size=1, max_size=600))
@settings(max_examples=400)
def test_decoder_only_yields_reasons_and_resyncs(garbage):
    """Random garbage never raises, and the good frame right after it is accepted."""
    rx = Receiver(lookup)
    good = frame(7)
    results = list(rx.feed_wire(garbage + wire(good)))
    assert all(isinstance(r.reason, Reason) for r in results)
    assert results[-1].ok and results[-1].frame.counter == 7


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_wire_frames_never_accepted_and_never_crash(data):
    good = wire(frame(9))
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
    assume(bytes(mutated) != good)
    rx = Receiver(lookup)
    results = list(rx.feed_wire(bytes(mutated) + wire(frame(10))))
    for r in results[:-1]:
        # A mutation may only yield a frame if it left the frame itself intact (e.g. a delimiter).
        assert not r.ok or r.frame.counter == 9
    assert results[-1].ok and results[-1].frame.counter == 10


@given(st.binary(max_size=300))
def test_open_random_bytes_only_raises_link_error(blob):
    try:
        open_frame(blob, lookup)
    except LinkError as e:
        assert isinstance(e.reason, Reason)


@given(st.binary(max_size=400))
def test_cobs_round_trip(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data


@given(st.lists(st.integers(1, 300), max_size=80))
def test_window_matches_a_model(counters):
    """check() agrees with 'seen before / too old' computed from the full history."""
    w = Window()
    seen = set()
    for c in counters:
        top = max(seen, default=0)
        expect = Verdict.NEW if c > top else (Verdict.REPLAYED if top - c >= 64 else (Verdict.DUPLICATE if c in seen else Verdict.NEW))
        assert w.check(c) is expect
        if expect is not Verdict.REPLAYED:
            w.accept(c)
            seen.add(c)


def test_done_criteria_each_rejected_then_next_good_accepted():
    """Issue 2's check: flipped bit, replay, unknown node, garbage burst, each followed by a good frame."""
    rx = Receiver(lookup)
    out = []

    def feed(data):
        for r in rx.feed_wire(data):
            if r.ok:
                rx.commit(r.frame)
            out.append(r.reason.label if not r.ok else "ok:%d" % r.frame.counter)

    feed(wire(frame(1)))
    flipped = bytearray(frame(2))
    flipped[-3] ^= 0x10  # one bit of the tag; CRC recomputed by wire(), so only the HMAC sees it
    feed(wire(bytes(flipped)) + wire(frame(3)))
    feed(wire(frame(1)) + wire(frame(4)))  # 1 again: duplicate, re-acked, no new event
    for _ in range(70):
        feed(wire(frame(100 + _)))
    feed(wire(frame(5)) + wire(frame(200)))  # 5 is now below the window: replayed
    other = LinkKeys(bytes(32))
    feed(wire(seal(other, Kind.TELEMETRY, Role.BIN, "bin-9999", counter=1, ts=0)) + wire(frame(201)))
    feed(bytes((i * 37 + 11) & 0xFF or 1 for i in range(256)) + wire(frame(202)))  # no zero byte: too_large
    burst = os.urandom(256)
    feed(burst + wire(frame(203)))
    assert out[:3] == ["ok:1", "bad_tag", "ok:3"]
    assert rx.counts["duplicate"] == 1
    assert out[out.index("replayed") + 1] == "ok:200"
    assert out[out.index("unknown_node") + 1] == "ok:201"
    assert out[out.index("too_large") + 1] == "ok:202"
    assert out[-1] == "ok:203"
    assert rx.counts["bad_tag"] == 1 and rx.counts["replayed"] == 1 and rx.counts["unknown_node"] == 1


def test_mqtt_topic_id_must_match():
    rx = Receiver(lookup)
    assert rx.open(frame(1), topic_id="bin-0002").reason is Reason.MALFORMED
    assert rx.open(frame(1), topic_id=NODE).ok


def test_reservation_never_reuses_after_reboot_or_power_loss(tmp_path):
    path = tmp_path / "ctr"
    used = []
    r = Reservation(path, block=16)
    used += [r.next() for _ in range(20)]
    r = Reservation(path, block=16)  # reboot mid-block
    used += [r.next() for _ in range(3)]
    (tmp_path / "ctr.tmp").write_text("9")  # power lost before the rename: the stray file is ignored
    r = Reservation(path, block=16)
    used += [r.next() for _ in range(40)]
    assert len(set(used)) == len(used)
    assert used == sorted(used)


def test_seal_refuses_what_no_receiver_accepts():
    import pytest

    for kwargs in ({"counter": 0}, {"counter": 2**32}, {"counter": 1, "ts": -1}):
        with pytest.raises(ValueError):
            seal(KEY, Kind.HELLO, Role.BIN, NODE, **{"ts": 0, **kwargs})
    with pytest.raises(ValueError):
        seal(KEY, Kind.HELLO, Role.BIN, "no spaces", counter=1, ts=0)
    with pytest.raises(ValueError):
        seal(KEY, Kind.HELLO, Role.BIN, NODE, counter=1, ts=0, payload=b"x" * 240)


def test_tag_is_truncated_hmac_sha256():
    # LinkKeys.tag() keeps HMAC's keyed states instead of calling hmac.digest(): same bytes.
    import hmac

    for n in (0, 1, 55, 56, 63, 64, 65, 250):
        k = LinkKeys(os.urandom(32))
        data = os.urandom(n)
        assert k.tag(data) == hmac.digest(k.mac_key, data, "sha256")[:8]
        assert k.tag(data) == k.tag(data)  # the kept states are not consumed
