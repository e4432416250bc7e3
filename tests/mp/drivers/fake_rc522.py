# An MFRC522 with ISO/IEC 14443 A cards in its field, as a model for the sim's SPI
# (world {"spi": {"model": "fake_rc522"}}; gateway/simboard/board/_simbus.py calls transfer(bus, tx) once per
# SPI write / write_readinto). Runs on MicroPython, in the same process as the driver under test.
#
# Register behaviour after the MFRC522 datasheet (NXP rev. 3.9, sections 8.1.2.3 and 9.3), card
# behaviour after ISO/IEC 14443-3 (REQA/WUPA 7-bit short frames, ANTICOLLISION/SELECT per cascade
# level with BCC and CRC_A, HLTA). The test configures it directly:
#     import fake_rc522
#     fake_rc522.cards.append(fake_rc522.Card(b"\xde\xad\xbe\xef"))
_COMMAND = 0x01
_COMIRQ = 0x04
_ERROR = 0x06
_FIFODATA = 0x09
_FIFOLEVEL = 0x0A
_CONTROL = 0x0C
_BITFRAMING = 0x0D
_TXCONTROL = 0x14
_VERSION = 0x37
_TRANSCEIVE = 0x0C
_SOFTRESET = 0x0F
_SEL = (0x93, 0x95, 0x97)

regs = bytearray(64)
fifo = bytearray()
frames = []  # (bytes sent to the cards, TxLastBits), in order
cards = []
version = 0x92
resets = 0
_pd_reads = 0  # reads of CommandReg that still show PowerDown after a soft reset


def crc_a(data):
    """ISO/IEC 14443-3 CRC_A, bit by bit (reflected 0x8408, preset 0x6363)."""
    crc = 0x6363
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def _with_crc(data):
    c = crc_a(data)
    return bytes(data) + bytes((c & 0xFF, c >> 8))


class Card:
    def __init__(self, uid, sak=0x08, bad_bcc=False):
        self.uid = bytes(uid)
        self.sak = sak
        self.bad_bcc = bad_bcc
        self.present = True
        self.state = "idle"  # idle, ready, active, halt
        self.level = 0
        if len(uid) == 4:
            parts = [self.uid]
        elif len(uid) == 7:
            parts = [b"\x88" + self.uid[0:3], self.uid[3:7]]
        else:
            parts = [b"\x88" + self.uid[0:3], b"\x88" + self.uid[3:6], self.uid[6:10]]
        self.cl = []
        for p in parts:
            bcc = p[0] ^ p[1] ^ p[2] ^ p[3]
            self.cl.append(p + bytes((bcc ^ (0x5A if bad_bcc else 0),)))
        # ATQA bits 7-6 of the first byte: UID size single/double/triple.
        self.atqa = bytes(((len(parts) - 1) << 6 | 0x04, 0x00))

    def answer(self, frame, bits):
        if bits == 7 and len(frame) == 1:
            if frame[0] == 0x26 and self.state == "idle" or frame[0] == 0x52 and self.state in ("idle", "halt"):
                self.state = "ready"
                self.level = 0
                return self.atqa
            if self.state != "halt":
                self.state = "idle"  # an unexpected frame sends a READY/ACTIVE card back to IDLE
            return None
        if bits:
            return None
        if self.state == "ready" and len(frame) == 2 and frame[1] == 0x20 and frame[0] == _SEL[self.level]:
            return self.cl[self.level]
        if self.state == "ready" and len(frame) == 9 and frame[1] == 0x70 and frame[0] == _SEL[self.level]:
            if crc_a(frame[0:7]) != frame[7] | frame[8] << 8 or frame[2:7] != self.cl[self.level]:
                self.state = "idle"
                return None
            self.level += 1
            if self.level == len(self.cl):
                self.state = "active"
                return _with_crc(bytes((self.sak,)))
            return _with_crc(b"\x04")
        if self.state == "active" and frame == _with_crc(b"\x50\x00"):
            self.state = "halt"
            return None
        self.state = "idle" if self.state != "halt" else "halt"
        return None


def _reset():
    global _pd_reads, resets
    for i in range(64):
        regs[i] = 0
    regs[_TXCONTROL] = 0x80
    regs[0x0E] = 0xA0  # CollReg reset value
    fifo[:] = b""
    _pd_reads = 2
    resets += 1


def _transceive(bits):
    frame = bytes(fifo)
    fifo[:] = b""
    frames.append((frame, bits))
    regs[_ERROR] = 0
    if regs[_TXCONTROL] & 3 != 3:  # antenna off: no field, no card hears anything
        regs[_COMIRQ] |= 0x01
        return
    got = [a for a in (c.answer(frame, bits) for c in cards if c.present) if a is not None]
    if not got:
        regs[_COMIRQ] |= 0x01  # TimerIRq: the receive timeout ran out
        return
    if any(a != got[0] for a in got):
        regs[_ERROR] |= 0x08  # CollErr
    fifo.extend(got[0])
    regs[_COMIRQ] |= 0x20  # RxIRq


def _read(reg):
    global _pd_reads
    if reg == _COMMAND:
        if _pd_reads:
            _pd_reads -= 1
            return 0x10 | regs[_COMMAND]
        return regs[_COMMAND]
    if reg == _FIFODATA:
        if not fifo:
            return 0
        v = fifo[0]
        fifo[:] = fifo[1:]
        return v
    if reg == _FIFOLEVEL:
        return len(fifo)
    if reg == _VERSION:
        return version
    return regs[reg]


def _write(reg, v):
    if reg == _COMMAND:
        if v == _SOFTRESET:
            _reset()
        else:
            regs[_COMMAND] = v
    elif reg == _COMIRQ:
        if v & 0x80:
            regs[_COMIRQ] |= v & 0x7F
        else:
            regs[_COMIRQ] &= ~v & 0x7F
    elif reg == _FIFOLEVEL:
        if v & 0x80:
            fifo[:] = b""
    elif reg == _FIFODATA:
        fifo.append(v)
    elif reg == _BITFRAMING:
        regs[reg] = v & 0x7F
        if v & 0x80 and regs[_COMMAND] == _TRANSCEIVE:
            _transceive(v & 7)
    else:
        regs[reg] = v


def transfer(bus, tx):
    a = tx[0]
    reg = (a >> 1) & 0x3F
    out = bytearray(len(tx))
    if a & 0x81 == 0x80:  # read: address byte, then one register value per following byte
        for i in range(1, len(tx)):
            out[i] = _read(reg)
    elif not a & 0x81:
        for v in tx[1:]:
            _write(reg, v)
    return out


_reset()
resets = 0
