# I2C, SPI and UART of the simulated ESP32 (re-exported by machine.py).
import io
import select
import utime
import _sim

_ENODEV = 19
_devs = None  # I2C address -> _Dev, built from the world once per run


class _Dev:
    def __init__(self, addr, spec):
        self.addr = addr
        self.bus = spec.get("bus")
        self.error = spec.get("error")
        self.regs = {}
        for k, v in (spec.get("regs") or {}).items():
            self.regs[int(k)] = _sim.data(v)
        self.reads = [_sim.data(v) for v in spec.get("reads") or ()]
        self.ptr = 0

    def read_regs(self, reg, n):
        out = b""
        while len(out) < n:
            out += self.regs.get(reg, b"\x00")
            reg += 1
        return out[:n]

    def read(self, n):
        if self.reads:
            r = self.reads[0] if len(self.reads) == 1 else self.reads.pop(0)
            return (r + bytes(n))[:n]
        return self.read_regs(self.ptr, n)


class I2C:
    """I2C bus over the world's devices: {addr: {"regs": {reg: bytes}, "reads": [bytes]}}."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        global _devs
        self._bus = id
        if _devs is None:
            _devs = {}
            for k, v in (_sim.world.get("i2c") or {}).items():
                _devs[int(k)] = _Dev(int(k), v)

    def init(self, *args, **kw):
        pass

    def deinit(self):
        pass

    def _dev(self, addr):
        d = _devs.get(addr)
        if d is None or (d.bus is not None and self._bus is not None and d.bus != self._bus):
            raise OSError(_ENODEV)
        if d.error:
            raise OSError(d.error)
        return d

    def _rec(self, addr, reg, buf):
        _sim.emit("i2c", self._bus, addr, reg, _sim.hx(buf), _sim.ms())

    def scan(self):
        return sorted(a for a, d in _devs.items()
                      if d.bus is None or self._bus is None or d.bus == self._bus)

    def readfrom(self, addr, nbytes, stop=True):
        return self._dev(addr).read(nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        buf[:] = self._dev(addr).read(len(buf))

    def writeto(self, addr, buf, stop=True):
        d = self._dev(addr)
        buf = bytes(buf)
        self._rec(addr, None, buf)
        if buf and not d.reads:
            # A register device: the first byte sets the pointer, the rest is written there.
            d.ptr = buf[0]
            if len(buf) > 1:
                d.regs[buf[0]] = buf[1:]
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        return self.writeto(addr, b"".join(bytes(b) for b in vector), stop)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        return self._dev(addr).read_regs(memaddr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        buf[:] = self._dev(addr).read_regs(memaddr, len(buf))

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        d = self._dev(addr)
        buf = bytes(buf)
        self._rec(addr, memaddr, buf)
        d.regs[memaddr] = buf


class SoftI2C(I2C):
    def __init__(self, scl=None, sda=None, *, freq=400000, timeout=50000):
        super().__init__(None, scl=scl, sda=sda, freq=freq)


class SPI:
    """SPI bus: reads come from world["spi"]["reads"] in turn, or from a model module."""

    MSB = 0
    LSB = 1
    CONTROLLER = 0

    def __init__(self, id=1, *args, **kw):
        self._bus = id
        spec = _sim.world.get("spi") or {}
        self._reads = [_sim.data(v) for v in spec.get("reads") or ()]
        self._fill = spec.get("fill", 0)
        self._model = None
        if spec.get("model"):
            self._model = __import__(spec["model"])

    def init(self, *args, **kw):
        pass

    def deinit(self):
        pass

    def _xfer(self, tx, n):
        if self._model:
            rx = self._model.transfer(self._bus, tx)
        elif self._reads:
            rx = self._reads.pop(0)
        else:
            rx = b""
        return (bytes(rx) + bytes([self._fill]) * n)[:n]

    def write(self, buf):
        _sim.emit("spi", self._bus, _sim.hx(buf), _sim.ms())
        if self._model:
            self._model.transfer(self._bus, bytes(buf))

    def read(self, nbytes, write=0x00):
        return self._xfer(bytes([write]) * nbytes, nbytes)

    def readinto(self, buf, write=0x00):
        buf[:] = self._xfer(bytes([write]) * len(buf), len(buf))

    def write_readinto(self, write_buf, read_buf):
        _sim.emit("spi", self._bus, _sim.hx(write_buf), _sim.ms())
        read_buf[:] = self._xfer(bytes(write_buf), len(read_buf))


class SoftSPI(SPI):
    def __init__(self, *args, **kw):
        super().__init__(-1)


class UART(io.IOBase):
    """UART whose RX is the world's bytes (optionally timed) or a real device (a pty).

    The world entry: {"rx": bytes, "schedule": [[at_ms, bytes], ...], "device": path, "fd": n}.
    TX is recorded, and written to the device when there is one. Written bytes take their time
    on the wire (10 bits a byte at the baud rate, queued after what is still going out):
    ``txdone()`` is False and ``flush()`` blocks until the last one is out, as on an ESP32.
    """

    INV_TX = 32
    INV_RX = 4
    INV_RTS = 64
    INV_CTS = 8
    RTS = 64
    CTS = 128

    def __init__(self, id, baudrate=115200, *args, **kw):
        self._id = id
        self._rx = bytearray()
        self._dev = None
        self._poll = None
        self._timeout = 0
        self._baud = 115200
        self._tx_end = 0  # run ms when the last written byte is out
        spec = _sim.get("uart", id)
        if not isinstance(spec, dict):
            spec = {"rx": spec}
        self._rx.extend(_sim.data(spec.get("rx")))
        self._sched = [[at, _sim.data(v)] for at, v in spec.get("schedule") or ()]
        dev = spec.get("device")
        if dev is None:
            dev = spec.get("fd")
        if dev is not None:
            self._dev = open(dev, "r+b")
            try:
                import termios

                termios.setraw(self._dev.fileno())
            except Exception:
                pass  # not a tty (a pipe, a file)
            self._poll = select.poll()
            self._poll.register(self._dev, select.POLLIN)
        self.init(baudrate, *args, **kw)

    def init(self, baudrate=None, bits=8, parity=None, stop=1, *, timeout=None, **kw):
        if timeout is not None:
            self._timeout = timeout
        if baudrate:
            self._baud = baudrate

    def deinit(self):
        if self._dev:
            self._dev.close()
            self._dev = None

    def _fill(self):
        now = _sim.ms()
        while self._sched and self._sched[0][0] <= now:
            self._rx.extend(self._sched.pop(0)[1])
        while self._dev and self._poll.poll(0):
            try:
                b = self._dev.read(1)
            except OSError:  # EIO: the other end went away
                b = None
            if not b:
                self._poll.unregister(self._dev)
                self._dev = None
                break
            self._rx.extend(b)

    def _wait(self, ok):
        self._fill()
        if ok() or not self._timeout:
            return
        end = utime.ticks_add(utime.ticks_ms(), self._timeout)
        while not ok() and utime.ticks_diff(end, utime.ticks_ms()) > 0:
            utime.sleep_ms(1)
            self._fill()

    def any(self):
        self._fill()
        return len(self._rx)

    def read(self, n=-1):
        want = n if n is not None and n >= 0 else 1 << 30
        self._wait(lambda: len(self._rx) >= want)
        if not self._rx:
            return None
        k = min(want, len(self._rx))
        out = bytes(self._rx[:k])
        self._rx[:k] = b""
        return out

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        self._wait(lambda: b"\n" in self._rx)
        if not self._rx:
            return None
        i = self._rx.find(b"\n")
        k = len(self._rx) if i < 0 else i + 1
        out = bytes(self._rx[:k])
        self._rx[:k] = b""
        return out

    def write(self, buf):
        buf = bytes(buf)
        now = _sim.ms()
        _sim.emit("uart", self._id, now, _sim.hx(buf))
        self._tx_end = max(now, self._tx_end) + (len(buf) * 10000 + self._baud - 1) // self._baud
        if self._dev:
            self._dev.write(buf)
        return len(buf)

    def flush(self):
        while _sim.ms() < self._tx_end:
            utime.sleep_ms(1)

    def txdone(self):
        return _sim.ms() >= self._tx_end

    def sendbreak(self):
        _sim.emit("uart_break", self._id, _sim.ms())

    def ioctl(self, req, arg):
        # Stream protocol, so asyncio.StreamReader(uart) and select.poll work on it.
        if req == 3:  # MP_STREAM_POLL
            ret = 0
            if arg & 1 and self.any():
                ret |= 1
            if arg & 4:
                ret |= 4
            return ret
        return 0
