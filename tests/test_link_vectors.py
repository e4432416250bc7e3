"""The gateway's link implementation against the golden vectors (the firmware runs the same files)."""

import json
from pathlib import Path

import pytest

from linli.link import Flag, Kind, LinkKeys, Role, open_frame, seal
from linli.link.crypto import DOWN, UP
from linli.link.serial import crc16, wire
from linli.link.vectors import check_reject, render, run_stream

VECTORS = Path(__file__).parent / "vectors"


def _lines(name):
    return [json.loads(line) for line in (VECTORS / name).read_text(encoding="utf-8").splitlines()]


def test_committed_vectors_are_what_the_code_makes():
    # Catches an accidental change to the protocol: regenerate only together with docs/protocol.md.
    for name, text in render().items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, name


@pytest.mark.parametrize("v", _lines("frames.jsonl"), ids=lambda v: v["name"])
def test_good_frame_bytes_and_decode(v):
    keys = LinkKeys(bytes.fromhex(v["key"]))
    payload = bytes.fromhex(v["payload"])
    raw = seal(
        keys,
        Kind[v["kind"].upper()],
        Role.from_label(v["role"]),
        v["node"],
        counter=v["counter"],
        ts=v["ts"],
        payload=payload,
        flags=Flag(v["flags"]),
    )
    assert raw.hex() == v["frame"]
    assert crc16(raw) == v["crc"]
    assert wire(raw).hex() == v["wire"]
    direction = DOWN if v["flags"] & 1 else UP
    fr = open_frame(raw, lambda n: (keys, Role.from_label(v["role"])) if n == v["node"] else None, direction=direction)
    assert (fr.node_id, fr.counter, fr.ts, fr.payload, fr.body) == (v["node"], v["counter"], v["ts"], payload, v["body"])
    assert fr.alarm == bool(v["flags"] & 2)


@pytest.mark.parametrize("v", _lines("rejects.jsonl"), ids=lambda v: v["name"])
def test_reject_reason(v):
    assert check_reject(v) == (v["reason"], v["verdict"])


@pytest.mark.parametrize("v", _lines("streams.jsonl"), ids=lambda v: v["name"])
def test_stream(v):
    assert run_stream(bytes.fromhex(v["data"]), v["keys"], v["chunk"]) == v["expect"]


def test_vectors_cover_every_reason():
    reasons = {v["reason"] for v in _lines("rejects.jsonl")}
    assert reasons >= {"bad_version", "bad_length", "bad_crc", "bad_tag", "unknown_node", "replayed", "too_large", "malformed", "ok"}
