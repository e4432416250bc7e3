"""node.mqtt's packets, byte for byte (MQTT 3.1.1, OASIS standard, section 3), on the unix port.

tests/mp/node/mqtt_bytes.py drives the class over a fake stream (io.BytesIO, as micropython-lib's
umqtt tests do) and prints what it wrote and returned; the expected bytes here are built from the
standard by a tiny independent encoder, not from the firmware.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.micropython

SCRIPT = (Path(__file__).parent / "mp" / "node" / "mqtt_bytes.py").read_text()


def varlen(n: int) -> bytes:
    """Remaining length (MQTT 3.1.1, 2.2.3)."""
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(b: bytes) -> bytes:
    """A UTF-8 string / binary field: 2-byte length + data (1.5.3)."""
    return len(b).to_bytes(2, "big") + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varlen(len(body)) + body


def connect(cid, keepalive, flags, *payload) -> bytes:
    return packet(0x10, s(b"MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + b"".join(s(p) for p in (cid,) + payload))


def publish(topic, payload, qos=0, retain=False, pid=None) -> bytes:
    var = s(topic) + (pid.to_bytes(2, "big") if qos else b"")
    return packet(0x30 | qos << 1 | int(retain), var + payload)


AVAIL = b"linli/node/bin-01/avail"


@pytest.fixture(scope="module")
def cases(tmp_path_factory, micropython_tools, firmware_build):
    from harness.micropython import MicroPython

    board = MicroPython(tmp_path_factory.mktemp("mqtt"), micropython_tools, firmware_build)
    try:
        r = board.run(SCRIPT, timeout=20).expect_ok()
    finally:
        board.close()
    out = {}
    for line in r.stdout.splitlines():
        d = json.loads(line)
        d["out"] = bytes.fromhex(d["out"])
        out[d["case"]] = d
    return out


def test_connect_with_will_user_and_password(cases):
    c = cases["connect"]
    # flags: user 0x80, password 0x40, will retain 0x20, will QoS 1 0x08, will 0x04, clean 0x02
    assert c["out"] == connect(b"bin-01", 60, 0xEE, AVAIL, b"offline", b"bin-01", b"pw")
    assert c["err"] is None and c["ret"] == 0  # session present: no


def test_connect_minimal_and_session_present(cases):
    assert cases["connect_min"]["out"] == connect(b"c", 30, 0x02)
    assert cases["connect_min"]["ret"] == 1


def test_connect_refused_names_the_return_code(cases):
    assert cases["connect_refused"]["err"] == ["MQTTError", [5, "not authorised"]]
    assert cases["connect_not_connack"]["err"][0] == "MQTTError"
    assert cases["connect_eof"]["err"][0] == "OSError"


def test_publish_qos0_and_qos1(cases):
    assert cases["publish_qos0"]["out"] == publish(b"t", b"hi")
    assert cases["publish_qos0"]["ret"] == 0
    c = cases["publish_qos1_retain"]
    assert c["out"] == publish(AVAIL, b"online", 1, True, 1)
    assert c["unacked"] == [1]  # waits for its PUBACK


def test_publish_lengths_past_one_byte_and_past_the_buffer(cases):
    body = bytes(range(200))
    assert cases["publish_200"]["out"] == publish(b"linli/node/bin-01/up", body, 1, False, 1)
    assert cases["publish_600"]["out"] == publish(b"x", bytes(600))
    assert cases["publish_600"]["out"][1:3] == b"\xdb\x04"


def test_packet_ids_count_up(cases):
    assert cases["pids"]["out"] == publish(b"a", b"1", 1, pid=1) + publish(b"a", b"2", 1, pid=2)
    assert cases["pids"]["ret"] == [1, 2]


def test_subscribe_ping_disconnect(cases):
    assert cases["subscribe"]["out"] == packet(0x82, b"\x00\x01" + s(b"linli/node/bin-01/down") + b"\x01")
    assert cases["ping"]["out"] == b"\xc0\x00"
    assert cases["disconnect"]["out"] == b"\xe0\x00"


@pytest.mark.parametrize("name", ["read_publish_qos1", "read_publish_qos1_trickle"])
def test_incoming_qos1_publish_is_delivered_then_acked(cases, name):
    # "trickle": one byte per read and None every other read, as a non-blocking socket gives
    c = cases[name]
    assert c["msgs"] == [[b"down".hex(), b"abcd".hex()]]
    assert c["out"] == b"\x40\x02\x12\x34"
    assert c["ret"] == [0x30, 0x1234, None]


def test_incoming_qos0_publish_is_not_acked(cases):
    assert cases["read_publish_qos0"]["msgs"] == [[b"t".hex(), b"abcd".hex()]]
    assert cases["read_publish_qos0"]["out"] == b""


def test_puback_tracking(cases):
    before, got, ok = cases["read_puback"]["ret"]
    assert before == [1] and got == [0x40, 1, None] and ok is True
    assert cases["read_puback"]["unacked"] == []
    assert cases["puback_timeout"]["ret"] is False and cases["puback_timeout"]["unacked"] == [1]


def test_suback_pingresp_and_errors(cases):
    assert cases["read_suback"]["ret"] == [0x90, 7, 1]
    assert cases["read_suback_refused"]["ret"] == [0x90, 7, 0x80]
    assert cases["read_pingresp"]["ret"] == [0xD0, None, None]
    assert cases["read_oversize"]["ret"] == [[0x30, None, None], [0xD0, None, None]]
    assert cases["read_oversize"]["msgs"] == []
    assert cases["read_eof"]["err"][0] == "OSError"
    assert cases["read_bad_length"]["err"] == ["MQTTError", ["bad remaining length"]]
