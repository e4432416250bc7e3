"""The pet scanner's readers on the MicroPython unix port (as .mpy, 64 KiB heap).

MFRC522 runs over the simulated SPI with a register-level chip model and ISO/IEC 14443 A cards
(tests/mp/drivers/fake_rc522.py); the GM65 QR scanner over the simulated UART. Expected bytes
(SPI address bytes, BCC, CRC_A, the GM65 command frame) are worked out here from the datasheets.
"""

from __future__ import annotations

import json
import textwrap
from functools import reduce
from pathlib import Path

import pytest

from drivers_run import MP_DRIVERS, run  # noqa: F401
pytestmark = pytest.mark.micropython


# -- MFRC522 ---------------------------------------------------------------------------------

_CS = 5
_SPI_WORLD = {"spi": {"model": "fake_rc522"}}


def _rev(v: int, bits: int) -> int:
    return int(format(v, "0%db" % bits)[::-1], 2)


def crc_a(data: bytes) -> bytes:
    """CRC-16/ISO-IEC-14443-3-A from its catalogue parameters (poly 0x1021, init 0xC6C6,
    reflected in and out), low byte first as sent."""
    crc = 0xC6C6
    for b in data:
        crc ^= _rev(b, 8) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    crc = _rev(crc, 16)
    return bytes([crc & 0xFF, crc >> 8])


def test_crc_a_reference():
    assert crc_a(b"123456789") == bytes.fromhex("05bf")  # check value 0xBF05
    assert crc_a(b"\x50\x00") == bytes.fromhex("57cd")  # HLTA as every reader sends it


def wr(reg: int, val: int) -> bytes:
    return bytes([(reg << 1) & 0x7E, val])  # datasheet 8.1.2.3: 0 | address | 0


def rd(reg: int) -> bytes:
    return bytes([0x80 | (reg << 1) & 0x7E, 0])


def cascade(uid: bytes) -> list[bytes]:
    """ISO/IEC 14443-3 cascade levels: CT (0x88) + 3 bytes while more follow, + BCC each."""
    parts = {4: [uid], 7: [b"\x88" + uid[:3], uid[3:]], 10: [b"\x88" + uid[:3], b"\x88" + uid[3:6], uid[6:]]}[len(uid)]
    return [p + bytes([reduce(lambda a, b: a ^ b, p)]) for p in parts]


def expected_frames(uid: bytes, halt: bool = True) -> list[list]:
    frames = [["26", 7]]
    for sel, cl in zip((0x93, 0x95, 0x97), cascade(uid)):
        frames.append([bytes([sel, 0x20]).hex(), 0])
        select = bytes([sel, 0x70]) + cl
        frames.append([(select + crc_a(select)).hex(), 0])
    if halt:
        frames.append(["500057cd", 0])
    return frames


def test_mfrc522_init_register_writes_and_chip_select(mpy):
    r, res = run(mpy, """
        from machine import Pin, SPI
        import fake_rc522
        from drivers.mfrc522 import MFRC522
        from drvtest import out
        rfid = MFRC522(SPI(1), Pin(%d, Pin.OUT))
        out("version", rfid.version)
        """ % _CS, world=_SPI_WORLD)
    assert res["version"] == 0x92
    sent = [b for _, b, _ in r.record["spi_writes"]]
    assert sent == [
        wr(0x01, 0x0F),  # CommandReg <- SoftReset
        rd(0x01), rd(0x01), rd(0x01),  # until PowerDown (bit 4) clears
        rd(0x37),  # VersionReg
        wr(0x2A, 0x8D), wr(0x2B, 0x3E), wr(0x2C, 0), wr(0x2D, 30),  # timer: 2 kHz, 15 ms
        wr(0x15, 0x40),  # TxASKReg: Force100ASK
        wr(0x11, 0x3D),  # ModeReg: CRC preset 6363h
        rd(0x14), wr(0x14, 0x83),  # TxControlReg: antenna drivers on
    ]
    # CS idles high, goes low around every one of those transfers.
    assert r.pin_values(_CS) == [1] + [0, 1] * len(sent)


@pytest.mark.parametrize(
    "uid, sak",
    [
        (bytes.fromhex("deadbeef"), 0x08),  # MIFARE Classic 1K: single size
        (bytes.fromhex("04a2246a2f5b80"), 0x00),  # NTAG / Ultralight: double size
        (bytes.fromhex("04112233445566778899"), 0x20),  # triple size
    ],
)
def test_mfrc522_reads_uid_checks_bcc_and_halts_the_card(mpy, uid, sak):
    _, res = run(mpy, """
        from machine import Pin, SPI
        import fake_rc522
        from drivers.mfrc522 import MFRC522
        from drvtest import out
        card = fake_rc522.Card(bytes.fromhex(%r), sak=%d)
        fake_rc522.cards.append(card)
        rfid = MFRC522(SPI(1), Pin(%d, Pin.OUT))
        out("uid", rfid.read_uid())
        out("state", card.state)
        out("frames", fake_rc522.frames)
        fake_rc522.frames[:] = []
        out("again", rfid.read_uid())          # halted: does not answer REQA
        out("frames2", fake_rc522.frames)
        card.state = "idle"                    # taken away and presented again
        out("back", rfid.read_uid())
        """ % (uid.hex(), sak, _CS), world=_SPI_WORLD)
    assert res["uid"] == uid.hex()
    assert res["state"] == "halt"
    assert res["frames"] == expected_frames(uid)
    assert res["again"] is None
    assert res["frames2"] == [["26", 7]]
    assert res["back"] == uid.hex()


def test_mfrc522_no_card_bad_bcc_two_cards_and_no_chip(mpy):
    _, res = run(mpy, """
        from machine import Pin, SPI
        import fake_rc522
        from drivers.mfrc522 import MFRC522
        from drivers.errors import ChecksumError
        from drvtest import catch, out
        rfid = MFRC522(SPI(1), Pin(%d, Pin.OUT))
        out("empty", rfid.read_uid())
        out("empty_frames", fake_rc522.frames)
        fake_rc522.cards.append(fake_rc522.Card(b"\\x11\\x22\\x33\\x44", bad_bcc=True))
        try:
            rfid.read_uid()
        except ChecksumError as e:
            out("bcc", str(e))
        fake_rc522.cards[:] = [fake_rc522.Card(b"\\x11\\x22\\x33\\x44"), fake_rc522.Card(b"\\x55\\x66\\x77\\x88")]
        out("two", catch(rfid.read_uid))
        fake_rc522.cards[:] = [fake_rc522.Card(b"\\x11\\x22\\x33\\x44")]
        out("nohalt", [rfid.read_uid(halt=False), fake_rc522.frames[-1]])
        rfid.antenna(False)
        fake_rc522.cards[0].state = "idle"
        out("field_off", rfid.read_uid())
        fake_rc522.version = 0
        out("nochip", catch(MFRC522, SPI(1), Pin(%d, Pin.OUT)))
        """ % (_CS, _CS), world=_SPI_WORLD)
    assert res["empty"] is None
    assert res["empty_frames"] == [["26", 7]]  # REQA only: nobody answered
    bcc = 0x11 ^ 0x22 ^ 0x33 ^ 0x44
    assert res["bcc"] == "card UID BCC 0x%02x, computed 0x%02x: read again" % (bcc ^ 0x5A, bcc)
    assert res["two"].startswith("SensorError: MFRC522: two or more cards")
    uid, last = res["nohalt"]
    assert uid == "11223344" and last[0].startswith("9370")  # selected, no HLTA after it
    assert res["field_off"] is None
    assert res["nochip"].startswith("NoDevice: MFRC522 not answering on SPI (VersionReg 0x00)")


# -- GM65 QR scanner ---------------------------------------------------------------------------

_UART = 1
_ACK = bytes.fromhex("02000001003331")  # GM65 manual: "success" reply to a write-zone command


def test_gm65_lines_crlf_overflow_utf8(mpy):
    rx = (
        b"https://linli.cn/p/1234\r"
        + b"ABC\r\nDEF\r\n"
        + b"0123456789ABCDEF\rSHORT\r"  # 16 bytes: over max_len=12, dropped whole
        + "宠物-42".encode() + b"\r"
        + b"\xff\xfe\r"
        + b"TAIL"
    )
    _, res = run(mpy, """
        from machine import UART
        from drivers.gm65 import GM65
        from drvtest import catch, out
        qr = GM65(UART(%d, 9600), max_len=24)
        out("url", qr.poll())
        qr = GM65(UART(%d, 9600), max_len=12)
        got = []
        while True:
            t = catch(qr.poll)
            if t is None:
                break
            got.append(t)
        out("lines", got)
        out("overflows", qr.overflows)
        """ % (_UART, _UART), world={"uart": {_UART: {"rx": rx}}})
    assert res["url"] == "https://linli.cn/p/1234"
    assert res["lines"] == ["ABC", "DEF", "SHORT", "宠物-42", "SensorError: GM65 sent 2 bytes that are not UTF-8 text"]
    assert res["overflows"] == 2  # the 23-byte URL (the new UART reads the stream again) and the 16 bytes


def test_gm65_trigger_command_ack_then_code(mpy):
    sched = [(40, _ACK), (90, b"PET:0042"), (140, b"\r")]
    r, res = run(mpy, """
        import asyncio
        from machine import UART
        from drivers.gm65 import GM65
        from drvtest import out
        qr = GM65(UART(%d, 9600))
        out("scan", asyncio.run(qr.scan(timeout_ms=2000, trigger=True)))
        """ % _UART, world={"uart": {_UART: {"schedule": sched}}})
    assert res["scan"] == "PET:0042"
    # 7E 00 | 08 write | 01 byte | zone 0x0002 | 01 = scan once | AB CD = no CRC check
    assert r.uart_tx(_UART) == bytes([0x7E, 0x00, 0x08, 0x01, 0x00, 0x02, 0x01, 0xAB, 0xCD])


def test_gm65_refused_silent_and_timeout(mpy):
    # The refusal is repeated every 200 ms: schedules count from the sim's start, and on a loaded
    # machine the imports can outlast a single early reply, which the driver flushes before it asks.
    sched = [(ms, bytes.fromhex("0200000100") + b"\xff\xff") for ms in range(10, 4000, 200)]
    _, res = run(mpy, """
        import asyncio
        from machine import UART
        from drivers.gm65 import GM65
        from drvtest import catch, out
        qr = GM65(UART(%d, 9600))
        out("refused", catch(asyncio.run, qr.command(0x0000, 0x01)))
        qr = GM65(UART(3, 9600))
        out("silent", catch(asyncio.run, qr.command(0x0002, 0x01, 100)))
        out("timeout", asyncio.run(qr.scan(timeout_ms=100)))
        """ % _UART, world={"uart": {_UART: {"schedule": sched}}})
    assert res["refused"] == "SensorError: GM65 refused command 0x0000 (reply byte 5 0xff)"
    assert res["silent"] == "SensorTimeout: GM65 did not acknowledge command 0x0002 in 100 ms"
    assert res["timeout"] is None
