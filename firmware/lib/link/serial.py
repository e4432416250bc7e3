"""Serial wire frames: COBS + CRC-16 with 0x00 delimiters (docs/protocol.md, section 4.2).

``wire frame = 0x00 || COBS(frame || CRC-16/CCITT-FALSE(frame)) || 0x00``, at most 256 bytes::

    from link import serial
    out = bytearray(serial.WIRE_MAX)
    n = serial.wire(frame_mv, out)          # copies the frame in; returns the wire length
    uart.write(memoryview(out)[0:n])

    # or seal straight into the wire buffer and skip the copy:
    n = frame.seal(memoryview(out)[serial.FRAME_OFFSET:], keys, ...)
    n = serial.wrap(out, n)

    dec = serial.Decoder()
    for reason, data in dec.feed(chunk):    # reason 0: data is a frame (memoryview), else None
        ...                                 # 3 bad_crc, 7 too_large; data is valid only until
                                            # the next iteration (it points into dec's buffer)

The decoder keeps one 256-byte buffer and decodes COBS in place. It ignores empty frames
(0x00 0x00), reports a frame whose COBS structure or CRC is wrong as ``bad_crc``, and when a
255th byte arrives without a delimiter (the wire frame, with its two delimiters, would be over
256 bytes) reports ``too_large`` once and drops bytes until the next 0x00, where it resyncs. It does not check the frame itself (length, version...): pass ``data`` to
``frame.open``.
"""

from micropython import const

WIRE_MAX = const(256)  # the longest wire frame, delimiters included
FRAME_OFFSET = const(3)  # where wrap() expects the frame in its buffer
_MAX_FRAME = const(250)
_BODY_MAX = const(254)  # COBS body between the delimiters: WIRE_MAX - 2
_BAD_CRC = const(3)
_TOO_LARGE = const(7)

# CRC-16/CCITT-FALSE, four bits at a time: _T[i] is the CRC register step for nibble i.
_T = (
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
)


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection); ``crc16(b"123456789")``
    is 0x29B1. Pass the previous result as ``crc`` to continue over more data."""
    t = _T
    for b in data:
        crc = ((crc << 4) & 0xFFFF) ^ t[(crc >> 12) ^ (b >> 4)]
        crc = ((crc << 4) & 0xFFFF) ^ t[(crc >> 12) ^ (b & 0x0F)]
    return crc


def cobs_encode(src, n, dst, o, s=0):
    """COBS-encode ``src[s:s+n]`` into ``dst`` from index ``o``; returns the index after it.

    ``dst`` may be ``src`` itself when ``o <= s - 1`` and the input has no run of 254 non-zero
    bytes (always true for a link frame): every output byte then lands on input already read.
    """
    code_at = o
    o += 1
    code = 1
    end = s + n
    while s < end:
        b = src[s]
        s += 1
        if b == 0:
            dst[code_at] = code
            code_at = o
            o += 1
            code = 1
            continue
        dst[o] = b
        o += 1
        code += 1
        if code == 0xFF:
            dst[code_at] = code
            if s == end:
                return o  # canonical: a 254-byte run at the very end opens no empty block
            code_at = o
            o += 1
            code = 1
    dst[code_at] = code
    return o


def cobs_decode(buf, n):
    """Decode ``buf[0:n]`` (COBS, no delimiters) in place; return the decoded length or -1
    if the structure is invalid (a code byte points past the end, or a 0x00 in the body)."""
    i = 0
    o = 0
    while i < n:
        code = buf[i]
        if code == 0:
            return -1
        i += 1
        end = i + code - 1
        if end > n:
            return -1
        while i < end:
            b = buf[i]
            if b == 0:
                return -1
            buf[o] = b
            o += 1
            i += 1
        if code != 0xFF and i < n:
            buf[o] = 0
            o += 1
    return o


def wrap(buf, n):
    """Turn the frame at ``buf[FRAME_OFFSET:FRAME_OFFSET+n]`` into a wire frame at ``buf[0:]``
    in place; return its length. ``buf`` needs ``FRAME_OFFSET + n + 2`` bytes (256 will do)."""
    if n > _MAX_FRAME:
        raise ValueError("frame of %d bytes over %d" % (n, _MAX_FRAME))
    s = FRAME_OFFSET
    crc = crc16(memoryview(buf)[s : s + n])
    buf[s + n] = crc >> 8
    buf[s + n + 1] = crc & 0xFF
    buf[0] = 0
    o = cobs_encode(buf, n + 2, buf, 1, s)
    buf[o] = 0
    return o + 1


def wire(frame, out):
    """Write the wire frame of ``frame`` (at most 250 bytes) into ``out``; return its length.

    ``out`` needs ``len(frame) + 5`` bytes; ``WIRE_MAX`` always suffices. ``frame`` must not
    overlap ``out`` (use :func:`wrap` for that).
    """
    n = len(frame)
    if n > _MAX_FRAME:
        raise ValueError("frame of %d bytes over %d" % (n, _MAX_FRAME))
    out[FRAME_OFFSET : FRAME_OFFSET + n] = frame
    return wrap(out, n)


class Decoder:
    """Streaming wire-frame decoder with resync; see the module docstring."""

    def __init__(self):
        self._buf = bytearray(WIRE_MAX)
        self._mv = memoryview(self._buf)
        self._n = 0  # body bytes buffered since the last 0x00
        self._skip = False  # dropping bytes after too_large, until the next 0x00

    def reset(self):
        """Drop any partial frame (after a UART error, say)."""
        self._n = 0
        self._skip = False

    def feed(self, data):
        """Consume ``data`` (bytes-like); yield ``(reason, frame)`` for each delimited frame."""
        buf = self._buf
        for b in data:
            if b == 0:
                n = self._n
                self._n = 0
                if self._skip:
                    self._skip = False
                    continue
                if n == 0:
                    continue  # two delimiters in a row: an empty frame, ignored
                m = cobs_decode(buf, n)
                if m < 2:
                    yield _BAD_CRC, None
                    continue
                m -= 2
                if crc16(self._mv[0:m]) != (buf[m] << 8) | buf[m + 1]:
                    yield _BAD_CRC, None
                    continue
                yield 0, self._mv[0:m]
                continue
            if self._skip:
                continue
            n = self._n
            if n == _BODY_MAX:
                self._skip = True
                self._n = 0
                yield _TOO_LARGE, None
                continue
            buf[n] = b
            self._n = n + 1
