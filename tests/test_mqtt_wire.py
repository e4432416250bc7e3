"""linli.mqtt_wire: the packet codec of the gateway's own MQTT clients (no broker needed; the
clients are tested against Mosquitto in test_node_broker.py and test_uplink.py)."""

import pytest

from linli import mqtt_wire as wire


def test_split_finds_every_packet_wherever_the_reads_are_cut():
    packets = [wire.publish(b"linli/node/n%d/up" % i, bytes([i]) * (i * 9), i + 1) for i in range(40)]  # up to 351 bytes
    packets += [wire.puback(7), wire.PINGREQ, wire.subscribe(3, "linli/node/+/up")]
    stream = b"".join(packets)
    for step in (1, 2, 3, 5, 64, 127, 128, 129, len(stream)):
        got, rest = [], b""
        for i in range(0, len(stream), step):
            out, rest = wire.split(rest + stream[i : i + step])
            got += out
        assert rest == b"" and len(got) == len(packets), step
        assert [bytes((b0,)) + wire.varint(len(body)) + body for b0, body in got] == packets
    b0, body = got[39]
    assert wire.parse_publish(b0, body) == (b"linli/node/n39/up", 40, bytes([39]) * 351)


def test_split_rejects_a_length_over_four_bytes_and_oversize_packets():
    with pytest.raises(wire.MQTTProtocolError, match="longer than 4 bytes"):
        wire.split(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(wire.MQTTProtocolError, match="limit"):
        wire.split(b"\x30" + wire.varint(wire.MAX_PACKET + 1))


def test_mqtt5_publish_properties_and_connect():
    props = wire.varint(2) + b"\x01\x01"  # PayloadFormatIndicator = 1
    pkt = wire.publish(b"t/1", b"{}", 9, props=props)
    [(b0, body)], _ = wire.split(pkt)
    assert wire.parse_publish(b0, body, v5=True) == (b"t/1", 9, b"{}")
    c5 = wire.connect("gw", keepalive=30, username="u", password="p", will=("s", b"off", 1, True), v5=True)
    c4 = wire.connect("gw", keepalive=30, username="u", password="p", will=("s", b"off", 1, True))
    assert c5[8] == 5 and c4[8] == 4  # protocol level
    assert c4[9] == c5[9] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, will retain/QoS 1/flag, clean
    assert len(c5) == len(c4) + 2  # an empty property list for CONNECT and one for the will


def test_properties_and_reasons():
    body = b"\x21\x00\x14" + b"\x26" + wire.field(b"k") + wire.field(b"v") + b"\x1f" + wire.field(b"because") + b"\x27\x00\x01\x00\x00"
    data = wire.varint(len(body)) + body + b"rest"
    props, end = wire.parse_properties(data, 0)
    assert end == len(data) - 4 == 26
    assert props == {0x21: 20, 0x26: [("k", "v")], 0x1F: b"because", 0x27: 65536}
    with pytest.raises(wire.MQTTProtocolError, match="unknown MQTT 5 property 0x7f"):
        wire.parse_properties(b"\x02\x7f\x00", 0)
    with pytest.raises(wire.MQTTProtocolError, match="truncated"):
        wire.parse_properties(b"\x03\x21\x00", 0)
    assert str(wire.Reason(0x10)) == "No matching subscribers" and not wire.Reason(0x10).is_failure
    assert wire.Reason(0x87).is_failure and wire.Reason(1, connack=True).is_failure
    assert str(wire.Reason(wire.V311_CONNACK[5], connack=True)) == "Not authorized"
