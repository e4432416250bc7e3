"""Serial ingest over a real pty: frames in, acks out, and a port that vanishes and comes back."""

import asyncio
import os
import tty

from linli.config import SerialSection
from linli.link import Kind, LinkKeys, Role, open_frame, seal
from linli.link.crypto import DOWN
from linli.link.receiver import Receiver
from linli.link.serial import Decoder, wire
from linli.serial_ports import SerialPort

KEY = LinkKeys(bytes(32))


def pty_pair(link):
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    name = os.ttyname(slave)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(name, link)  # like /dev/serial/by-id/...: the name survives a replug
    return master, slave


def read_available(fd, timeout=2.0):
    import select
    import time

    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            out += os.read(fd, 4096)
        elif out:
            break
    return out


def test_frames_in_acks_out_and_replug(tmp_path):
    link = str(tmp_path / "ttyRS485")

    async def main():
        master, slave = pty_pair(link)
        rx = Receiver(lambda n: (KEY, Role.BIN))
        got = []

        def on_bytes(port, chunk, write):
            for r in rx.feed_wire(chunk, port):
                if r.ok:
                    rx.commit(r.frame)
                    got.append(r.frame.counter)
                    ack = seal(KEY, Kind.ACK, Role.BIN, "bin-1", counter=r.frame.counter, ts=0, payload=b'{"c":%d,"r":0}' % r.frame.counter, flags=1)
                    asyncio.ensure_future(write(wire(ack)))

        port = SerialPort(SerialSection(port=link, baudrate=115200), on_bytes, backoff=(0.05, 0.2))
        await port.start()
        for _ in range(100):
            if port.state == "open":
                break
            await asyncio.sleep(0.02)
        frame = lambda c: wire(seal(KEY, Kind.TELEMETRY, Role.BIN, "bin-1", counter=c, ts=0, payload=b"{}"))
        os.write(master, b"\xff\x13garbage" + frame(1) + frame(2))
        data = await asyncio.get_running_loop().run_in_executor(None, read_available, master)
        acks = [open_frame(f, lambda n: (KEY, Role.BIN), direction=DOWN).body["c"] for r, f in Decoder().feed(data) if r == 0]
        assert got == [1, 2] and acks == [1, 2]
        assert rx.counts["bad_crc"] == 1

        # Unplug: the device goes away; the port notices, backs off, and reopens when it is back.
        os.close(master)
        os.close(slave)
        os.unlink(link)
        for _ in range(100):
            if port.state == "down":
                break
            await asyncio.sleep(0.02)
        assert port.state == "down" and port.counts["errors"] >= 1
        master, slave = pty_pair(link)
        for _ in range(200):
            if port.state == "open" and port.counts["opens"] == 2:
                break
            await asyncio.sleep(0.02)
        assert port.counts["opens"] == 2
        os.write(master, frame(3))
        for _ in range(100):
            if 3 in got:
                break
            await asyncio.sleep(0.02)
        assert got == [1, 2, 3]
        await port.stop()
        os.close(master)
        os.close(slave)

    asyncio.run(main())
