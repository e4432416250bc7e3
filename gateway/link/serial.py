"""Serial framing of link frames: 0x00 || COBS(frame || CRC-16) || 0x00 (docs/protocol.md 4.2).

>>> wire(b"\\x01\\x02")[0], wire(b"\\x01\\x02")[-1]
(0, 0)
>>> d = Decoder(); [f for f in d.feed(b"junk" + wire(b"hello"))]
[(<Reason.BAD_CRC: 3>, b'junk'), (<Reason.OK: 0>, b'hello')]
"""

from __future__ import annotations

from typing import Iterator

from linli.link.errors import Reason
from linli.link.frame import MAX_FRAME

MAX_WIRE = 256


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE. ``crc16(b"123456789") == 0x29B1``."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ b]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Canonical COBS: a 254-byte run at the very end gets no extra code byte."""
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    last = len(data) - 1
    for i, b in enumerate(data):
        if b:
            out.append(b)
            code += 1
        if not b or code == 0xFF:
            out[code_at] = code
            code = 1
            code_at = len(out)
            if not b or i < last:
                out.append(0)
    if code_at < len(out):
        out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of cobs_encode; raises ValueError on a structure no encoder produces."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end of the frame")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def wire(frame: bytes) -> bytes:
    """The bytes to write on the line for one frame."""
    if len(frame) > MAX_FRAME:
        raise ValueError("frame is %d bytes; the limit is %d" % (len(frame), MAX_FRAME))
    return b"\x00" + cobs_encode(frame + crc16(frame).to_bytes(2, "big")) + b"\x00"


def unwire(body: bytes) -> tuple[Reason, bytes]:
    """Decode what stood between two delimiters: (Reason.OK, frame) or (reason, raw body)."""
    try:
        data = cobs_decode(body)
    except ValueError:
        return Reason.BAD_CRC, body
    # Exactly two bytes with a good CRC is an empty frame: the frame checks call it bad_length.
    if len(data) < 2 or crc16(data[:-2]) != int.from_bytes(data[-2:], "big"):
        return Reason.BAD_CRC, body
    return Reason.OK, data[:-2]


class Decoder:
    """Splits a byte stream into frames and resynchronises after garbage.

    ``feed(chunk)`` yields ``(Reason.OK, frame)`` for each good frame and ``(reason, bytes)`` for
    each bad one; it never raises. A run of more than 256 bytes without a delimiter yields one
    ``TOO_LARGE`` and everything up to the next 0x00 is discarded.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self.counts: dict[Reason, int] = {}

    def feed(self, chunk: bytes) -> Iterator[tuple[Reason, bytes]]:
        start = 0
        n = len(chunk)
        while start < n:
            z = chunk.find(b"\x00", start)
            end = n if z < 0 else z
            if not self._discarding:
                self._buf += chunk[start:end]
                # The two delimiters are not buffered, so the body may hold MAX_WIRE - 2 bytes.
                if len(self._buf) > MAX_WIRE - 2:
                    self._discarding = True
                    dropped = bytes(self._buf[:64])
                    self._buf.clear()
                    yield self._count(Reason.TOO_LARGE, dropped)
            if z < 0:
                return
            start = z + 1
            if self._discarding:
                self._discarding = False
                continue
            if self._buf:
                body = bytes(self._buf)
                self._buf.clear()
                yield self._count(*unwire(body))

    def _count(self, reason: Reason, data: bytes) -> tuple[Reason, bytes]:
        if reason is not Reason.OK:
            self.counts[reason] = self.counts.get(reason, 0) + 1
        return reason, data
