"""Serial ingest over a real pty: frames in, acks out, a port that vanishes and comes back,
and the whole gateway taking a node's frames from a serial line while MQTT keeps going."""

import asyncio
import json
import time

from linli.config import Config, SerialSection
from linli.link import Kind, LinkKeys, Role, open_frame, seal
from linli.link.crypto import DOWN
from linli.link.receiver import Receiver
from linli.link.serial import Decoder, wire
from linli.serial_ports import SerialPort

from gateway_peer import GatewayThread, PeerNode, Upstream, gateway_toml

KEY = LinkKeys(bytes(32))


def frame(c, node="bin-1", keys=KEY, body=b"{}"):
    return wire(seal(keys, Kind.TELEMETRY, Role.BIN, node, counter=c, ts=0, payload=body))


async def until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


def test_frames_in_acks_out_and_replug(serial_pty):
    async def main():
        rx = Receiver(lambda n: (KEY, Role.BIN))
        got = []

        def on_bytes(port, chunk, write):
            for r in rx.feed_wire(chunk, port):
                if r.ok:
                    rx.commit(r.frame)
                    got.append(r.frame.counter)
                    ack = seal(KEY, Kind.ACK, Role.BIN, "bin-1", counter=r.frame.counter, ts=0, payload=b'{"c":%d,"r":0}' % r.frame.counter, flags=1)
                    asyncio.ensure_future(write(wire(ack)))

        port = SerialPort(SerialSection(port=serial_pty.device, baudrate=115200), on_bytes, backoff=(0.05, 0.2))
        await port.start()
        await until(lambda: port.state == "open")
        serial_pty.write(b"\xff\x13garbage" + frame(1) + frame(2))
        await until(lambda: got == [1, 2])
        data = await asyncio.get_running_loop().run_in_executor(None, serial_pty.read, 200, 2.0)
        acks = [open_frame(f, lambda n: (KEY, Role.BIN), direction=DOWN).body["c"] for r, f in Decoder().feed(data) if r == 0]
        assert acks == [1, 2] and rx.counts["bad_crc"] == 1
        # Unplugged: the port notices and backs off; replugged: it reopens by itself.
        serial_pty.unplug()
        await until(lambda: port.state == "down")
        assert port.counts["errors"] >= 1
        serial_pty.replug()
        await until(lambda: port.state == "open" and port.counts["opens"] == 2)
        serial_pty.write(frame(3))
        await until(lambda: got == [1, 2, 3])
        await port.stop()

    asyncio.run(main())


def test_gateway_serial_port_alongside_mqtt(tmp_path, serial_pty, mosquitto_factory):
    local, upstream = mosquitto_factory(), mosquitto_factory()
    extra = '[[serial]]\nport = "%s"\nbaudrate = 115200\nname = "rs485"\n' % serial_pty.device
    cfg = Config.from_text(gateway_toml(tmp_path / "data", local, upstream, extra), "gateway.toml")
    backend = Upstream(upstream)
    mqtt_node = PeerNode("bin-0001", Role.BIN, local, tmp_path / "data" / "keys.db")
    radio = PeerNode("bin-0009", Role.BIN, local, tmp_path / "data" / "keys.db")  # keys only: it talks serial
    gw = GatewayThread(cfg).start()
    try:
        backend.events(until_type="gateway.started")
        for _ in range(50):
            if gw.gw.ports[0].state == "open":
                break
            time.sleep(0.05)
        serial_pty.write(b"\x00\x55noise\x00" + frame(1, "bin-0009", radio.keys, b'{"fill":95}'))
        assert mqtt_node.wait_ack(mqtt_node.send(Kind.TELEMETRY, {"fill": 10})) == 0
        data = serial_pty.read(200, 3.0)
        acks = [open_frame(f, lambda n: (radio.keys, Role.BIN), direction=DOWN).body for r, f in Decoder().feed(data) if r == 0]
        assert {"c": 1, "r": 0} in acks
        # The port goes away: MQTT keeps flowing; it comes back: serial flows again.
        serial_pty.unplug()
        assert mqtt_node.wait_ack(mqtt_node.send(Kind.TELEMETRY, {"fill": 12})) == 0
        serial_pty.replug()
        for _ in range(100):
            if gw.gw.ports[0].state == "open" and gw.gw.ports[0].counts["opens"] == 2:
                break
            time.sleep(0.05)
        serial_pty.write(frame(2, "bin-0009", radio.keys, b'{"fill":40}'))
        evs = backend.events(until_type="bin.emptied")
        full = [e for e in evs if e["type"] == "linli.bin.full"]
        assert [e["subject"] for e in full] == ["bin-0009"]
        assert [e["subject"] for e in evs if e["type"] == "linli.bin.emptied"] == ["bin-0009"]
        assert gw.gw.ingest.counts.get("bad_crc", 0) >= 1
    finally:
        gw.stop()
        mqtt_node.close()
        radio.close()
        backend.close()
