"""The node's link over a serial line: the firmware's UART is one end of a pty, the gateway's
Receiver (linli.link) the other; frames, acks and time sync as wire frames (COBS + CRC-16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from linli.link import Kind, LinkKeys, Role, seal
from linli.link.serial import wire
from node_peer import NOW, SerialPeer, node_files, run_with

pytestmark = pytest.mark.micropython

TICKER = (Path(__file__).parent / "mp" / "node" / "ticker.py").read_text()


def test_serial_link_over_a_pty_with_acks(mpy, serial_pty):
    peer = SerialPeer(serial_pty)
    files = node_files(transport="serial", uart_id=1, uart_baud=115200, bin={"count": 4, "period_ms": 300})
    run = mpy.start(TICKER, files=files, world={"uart": {1: {"device": serial_pty.device}}})
    try:
        peer.wait(lambda p: len(p.new("telemetry")) >= 1, what="a first report")
        # Line noise, an empty frame, and a frame for another node on the bus: ignored.
        serial_pty.write(b"\x00\x17garbage\x42\x00\x00")
        other = LinkKeys(bytes(32))
        serial_pty.write(wire(seal(other, Kind.ACK, Role.BIN, "bin-02", counter=1, ts=0, payload=b'{"c":1}',
                                   flags=1)))
        peer.wait(lambda p: len([s for s in p.new("telemetry") if "n" in s.body]) == 4, what="4 reports")
        peer.wait(lambda p: any("heap" in s.body for s in p.new("telemetry")), what="a health report")
        peer.command(5, "node.info")
        peer.wait(lambda p: p.new("command_result"), what="the command result")
        r = run_with(peer, run, stop_after=0.5)
    finally:
        run.kill()
    assert peer.kinds()[0] == "hello"
    assert [s.body["n"] for s in peer.new("telemetry") if "n" in s.body] == [1, 2, 3, 4]
    assert peer.errors == []  # every frame the node wrote was well formed
    info = peer.new("command_result")[0].body
    assert info["ok"] and info["rx_bad"] == 0  # noise and the neighbour's frame: not counted
    # Synced over the line: frames after the sync carry the gateway's time.
    assert peer.new("hello")[0].ts == 0 and peer.new("command_result")[0].ts >= NOW
    assert not any(p.name.isdigit() for p in (r.flash / "q").iterdir()), "acked frames left in flash"


def test_rs485_driver_enable_is_high_exactly_while_a_frame_goes_out(mpy, serial_pty):
    """``uart_de``: the transceiver's DE pin rises before each wire frame is written and falls
    only once its last byte is out (the sim's UART takes 10 bits a byte at the baud rate:
    9600 baud here, ~1 ms a byte), then the bus is free again until the next frame."""
    de_pin, baud = 21, 9600
    peer = SerialPeer(serial_pty)
    files = node_files(transport="serial", uart_id=1, uart_baud=baud, uart_de=de_pin, bin={"count": 3, "period_ms": 300})
    run = mpy.start(TICKER, files=files, world={"uart": {1: {"device": serial_pty.device}}})
    try:
        peer.wait(lambda p: len([s for s in p.new("telemetry") if "n" in s.body]) == 3, what="3 reports")
        r = run_with(peer, run, stop_after=0.5)
    finally:
        run.kill()
    assert peer.errors == [] and peer.kinds()[0] == "hello"
    writes = r.record["uart_tx"][1]
    de = r.pin(de_pin)
    assert len(writes) >= 5, writes  # hello, time_sync, 3 reports (and maybe a health report)
    assert de[0][1] == 0 and de[-1][1] == 0, de  # made low (receiving), left low
    # One pulse per frame: DE goes 1, 0, 1, 0, ... (never left high between frames).
    assert [v for _, v in de[1:]] == [1, 0] * len(writes), de
    for i, (ms, data) in enumerate(writes):
        rise, fall = de[1 + 2 * i][0], de[2 + 2 * i][0]
        on_wire_ms = -(-len(data) * 10000 // baud)  # ceil: the last stop bit
        assert rise <= ms, (i, rise, ms)
        assert fall >= ms + on_wire_ms, (i, ms, len(data), fall)  # not a byte cut off
    # Every frame the node wrote reached the gateway whole.
    assert len(peer.seen) == len(writes), peer.summary()
