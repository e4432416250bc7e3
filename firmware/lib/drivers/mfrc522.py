"""MFRC522 (RC522 module) 13.56 MHz reader: the UID of an ISO/IEC 14443 A card or tag.

SPI mode 0, MSB first, up to 10 MHz, plus a chip-select pin (active low); the HAL builds both::

    from drivers.mfrc522 import MFRC522
    rfid = MFRC522(spi, cs_pin)          # soft-resets and configures the chip
    uid = rfid.read_uid()                # b'\\x04\\x8a...' (4 or 7 bytes), or None: no card

``read_uid()`` runs REQA, the anticollision loop over the cascade levels (checking each BCC)
and SELECT, then halts the card (HLTA), so a tag left on the reader is reported once: it
answers again only after it has left the field. ``halt=False`` keeps it answering.
Two cards at once raise ``SensorError``; a bad BCC or CRC raises ``ChecksumError``.
"""

from micropython import const
from time import sleep_ms, ticks_diff, ticks_ms

from .errors import ChecksumError, NoDevice, SensorError, SensorTimeout

# MFRC522 datasheet (NXP, rev. 3.9) section 9.2, register overview.
_COMMAND = const(0x01)
_COMIRQ = const(0x04)
_ERROR = const(0x06)
_FIFODATA = const(0x09)
_FIFOLEVEL = const(0x0A)
_BITFRAMING = const(0x0D)
_MODE = const(0x11)
_TXCONTROL = const(0x14)
_TXASK = const(0x15)
_TMODE = const(0x2A)
_TPRESCALER = const(0x2B)
_TRELOADH = const(0x2C)
_TRELOADL = const(0x2D)
_VERSION = const(0x37)
# Section 10.3, commands.
_IDLE = const(0x00)
_TRANSCEIVE = const(0x0C)
_SOFTRESET = const(0x0F)
# ISO/IEC 14443-3 type A.
_REQA = const(0x26)
_HLTA = const(0x50)
_CASCADE_TAG = const(0x88)
_NVB_ANTICOLL = const(0x20)
_NVB_SELECT = const(0x70)
_SAK_MORE = const(0x04)  # SAK bit 3: UID not complete, go to the next cascade level
_WAIT_MS = const(50)  # the chip's own timer ends a transceive after ~15 ms


def crc_a(buf, n):
    """ISO/IEC 14443-3 CRC_A of ``buf[0:n]`` (preset 0x6363, reflected 0x8408): low byte first."""
    crc = 0x6363
    for i in range(n):
        b = buf[i] ^ (crc & 0xFF)
        b = (b ^ (b << 4)) & 0xFF
        crc = (crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)
    return crc


class MFRC522:
    def __init__(self, spi, cs):
        self._spi = spi
        self._cs = cs
        self._tx = bytearray(2)
        self._rx = bytearray(2)
        self._buf = bytearray(16)  # one ISO 14443 frame to or from the card
        self._uid = bytearray(10)
        self._part = bytearray(4)  # the UID bytes of one cascade level
        cs.value(1)
        self.version = 0
        self.init()

    def _wr(self, reg, val):
        # Datasheet 8.1.2.3: address byte = 0 (write) | reg << 1 | 0.
        tx = self._tx
        tx[0] = (reg << 1) & 0x7E
        tx[1] = val
        self._cs.value(0)
        self._spi.write(tx)
        self._cs.value(1)

    def _rd(self, reg):
        # Address byte with bit 7 set (read); the data byte sent after it must be 0x00.
        tx = self._tx
        tx[0] = ((reg << 1) & 0x7E) | 0x80
        tx[1] = 0
        self._cs.value(0)
        self._spi.write_readinto(tx, self._rx)
        self._cs.value(1)
        return self._rx[1]

    def init(self):
        """Soft-reset and configure the chip, antenna on; ``NoDevice`` if it does not answer."""
        self._wr(_COMMAND, _SOFTRESET)
        t0 = ticks_ms()
        # CommandReg bit 4 (PowerDown) stays set until the oscillator runs (section 8.6.2).
        while self._rd(_COMMAND) & 0x10:
            if ticks_diff(ticks_ms(), t0) > _WAIT_MS:
                raise NoDevice("MFRC522 stays in soft reset: check its 3.3 V supply and RST pin")
            sleep_ms(1)
        v = self._rd(_VERSION)
        if v == 0x00 or v == 0xFF:
            raise NoDevice("MFRC522 not answering on SPI (VersionReg 0x%02x): check CS, SCK, MISO" % v)
        self.version = v  # 0x91 v1.0, 0x92 v2.0; clones report 0x88, 0xB2, 0x12
        # Timer: 13.56 MHz / (2 * 0xD3E + 1) = 2 kHz, reload 30 -> a 15 ms receive timeout;
        # TAuto starts it at the end of each transmission (section 9.3.3.10).
        self._wr(_TMODE, 0x8D)
        self._wr(_TPRESCALER, 0x3E)
        self._wr(_TRELOADH, 0)
        self._wr(_TRELOADL, 30)
        self._wr(_TXASK, 0x40)  # Force100ASK: type A needs 100 % ASK modulation
        self._wr(_MODE, 0x3D)  # CRC coprocessor preset 0x6363 (CRC_A)
        c = self._rd(_TXCONTROL)
        if c & 0x03 != 0x03:
            self._wr(_TXCONTROL, c | 0x03)  # Tx1RFEn, Tx2RFEn: antenna drivers on

    def antenna(self, on):
        """Switch the RF field off (saves ~10 mA between scans) or back on."""
        c = self._rd(_TXCONTROL)
        self._wr(_TXCONTROL, (c | 0x03) if on else (c & 0xFC))

    def _transceive(self, n_tx, last_bits=0):
        """Send ``_buf[0:n_tx]`` (``last_bits`` of the last byte; 0 = all 8) and receive into
        ``_buf``. Returns the number of bytes received, 0 when no card answered."""
        wr = self._wr
        rd = self._rd
        buf = self._buf
        wr(_COMMAND, _IDLE)
        wr(_COMIRQ, 0x7F)  # Set1 = 0: clear every interrupt request bit
        wr(_FIFOLEVEL, 0x80)  # FlushBuffer
        for i in range(n_tx):
            wr(_FIFODATA, buf[i])
        wr(_COMMAND, _TRANSCEIVE)
        wr(_BITFRAMING, 0x80 | last_bits)  # StartSend, TxLastBits
        t0 = ticks_ms()
        while True:
            irq = rd(_COMIRQ)
            if irq & 0x30:  # RxIRq or IdleIRq: the command ended
                break
            if irq & 0x01:  # TimerIRq: nobody answered within the timeout
                wr(_BITFRAMING, 0)
                return 0
            if ticks_diff(ticks_ms(), t0) > _WAIT_MS:
                raise SensorTimeout("MFRC522 transceive never ended: chip reset? call init()")
        wr(_BITFRAMING, 0)
        err = rd(_ERROR)
        if err & 0x08:
            raise SensorError("MFRC522: two or more cards in the field at once (bit collision)")
        if err & 0x13:  # BufferOvfl, ParityErr, ProtocolErr
            raise SensorError("MFRC522 error register 0x%02x: card moved away while reading?" % err)
        n = rd(_FIFOLEVEL) & 0x7F
        if n > len(buf):
            n = len(buf)
        for i in range(n):
            buf[i] = rd(_FIFODATA)
        return n

    def request(self):
        """REQA: the ATQA of a card in the field (int), or None."""
        self._buf[0] = _REQA
        # REQA is a 7-bit short frame (ISO/IEC 14443-3 6.4.1).
        if self._transceive(1, 7) != 2:
            return None
        return self._buf[0] | (self._buf[1] << 8)

    def _level(self, sel):
        """Anticollision + SELECT at one cascade level: the SAK (UID part in ``_part``), or None."""
        buf = self._buf
        part = self._part
        buf[0] = sel
        buf[1] = _NVB_ANTICOLL
        if self._transceive(2) != 5:
            return None
        bcc = buf[0] ^ buf[1] ^ buf[2] ^ buf[3]
        if bcc != buf[4]:
            raise ChecksumError("card UID BCC 0x%02x, computed 0x%02x: read again" % (buf[4], bcc))
        for i in range(4, -1, -1):  # SEL, NVB in front of the UID part and its BCC
            buf[i + 2] = buf[i]
        for i in range(4):
            part[i] = buf[2 + i]
        buf[0] = sel
        buf[1] = _NVB_SELECT
        crc = crc_a(buf, 7)
        buf[7] = crc & 0xFF
        buf[8] = crc >> 8
        if self._transceive(9) != 3:
            return None
        if crc_a(buf, 1) != buf[1] | (buf[2] << 8):
            raise ChecksumError("card SAK CRC_A mismatch: read again")
        return buf[0]

    def read_uid(self, halt=True):
        """UID of the card in the field as bytes (4, 7 or 10 long), or None when there is none."""
        if self.request() is None:
            return None
        uid = self._uid
        part = self._part
        buf = self._buf
        n = 0
        for sel in (0x93, 0x95, 0x97):  # cascade levels 1, 2, 3
            sak = self._level(sel)
            if sak is None:
                return None  # the card left during anticollision
            if sak & _SAK_MORE:
                if part[0] != _CASCADE_TAG:
                    raise SensorError("card says its UID goes on but sent no cascade tag")
                for i in range(3):
                    uid[n + i] = part[1 + i]
                n += 3
                continue
            for i in range(4):
                uid[n + i] = part[i]
            n += 4
            break
        else:
            raise SensorError("card UID longer than 3 cascade levels")
        if halt:
            buf[0] = _HLTA
            buf[1] = 0
            crc = crc_a(buf, 2)
            buf[2] = crc & 0xFF
            buf[3] = crc >> 8
            self._transceive(4)  # a halted card does not answer: the timer ends it
        return bytes(memoryview(uid)[0:n])
