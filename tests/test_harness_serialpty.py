"""The serial pty harness, with pyserial on the code-under-test side."""

from __future__ import annotations

import os
import time

import pytest
import serial

from harness.serialpty import SerialPty


def test_bytes_pass_both_ways_unchanged(serial_pty):
    port = serial.serial_for_url(serial_pty.device, baudrate=115200, timeout=1)
    raw = bytes(range(256)) + b"\r\n\n\r\x03\x04\x11\x13"  # raw mode: no CR/LF mapping, no ^C/^D/XON
    port.write(raw)
    assert serial_pty.read(len(raw)) == raw
    serial_pty.write(raw)
    assert port.read(len(raw)) == raw
    port.close()


def test_read_timeouts_and_read_until(serial_pty):
    port = serial.Serial(serial_pty.device, timeout=1)
    started = time.monotonic()
    assert serial_pty.read(1, timeout=0.2) == b""
    assert 0.15 < time.monotonic() - started < 1
    port.write(b"line one\nrest")
    assert serial_pty.read_until(b"\n") == b"line one\n"
    assert serial_pty.drain() == b"rest"
    port.close()


def test_unplug_makes_pyserial_fail_and_replug_keeps_the_path(serial_pty):
    port = serial.Serial(serial_pty.device, timeout=1)
    old_pts = serial_pty.pts
    serial_pty.unplug()
    assert not serial_pty.plugged
    with pytest.raises(serial.SerialException):
        port.read(1)
    port.close()
    with pytest.raises(OSError):
        serial_pty.write(b"x")
    serial_pty.replug()
    assert serial_pty.plugged and os.path.realpath(serial_pty.device) == serial_pty.pts
    port = serial.Serial(serial_pty.device, timeout=1)
    serial_pty.write(b"back")
    assert port.read(4) == b"back"
    port.close()
    assert old_pts  # the old pty is gone; the device path is what the code keeps


def test_two_ptys_side_by_side(tmp_path):
    with SerialPty(tmp_path, "ttyA") as a, SerialPty(tmp_path, "ttyB") as b:
        pa, pb = serial.Serial(a.device, timeout=1), serial.Serial(b.device, timeout=1)
        pa.write(b"to a")
        pb.write(b"to b")
        assert (a.read(4), b.read(4)) == (b"to a", b"to b")
        pa.close()
        pb.close()
