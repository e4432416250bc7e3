"""A throw-away MQTT broker for `linli demo`: Mosquitto when installed, else amqtt (pure Python).

>>> import asyncio
>>> async def demo():
...     async with EmbeddedBroker() as b:
...         return b.kind in ("mosquitto", "amqtt") and b.port > 0
>>> asyncio.run(demo())
True
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("linli.broker")


class BrokerUnavailable(RuntimeError):
    """Neither Mosquitto nor amqtt could be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_mosquitto() -> Optional[str]:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)


class EmbeddedBroker:
    """Starts a broker on a free loopback port; ``prefer="amqtt"`` skips Mosquitto."""

    def __init__(self, prefer: str = "mosquitto"):
        self.prefer = prefer
        self.port = 0
        self.kind = ""
        self._proc: Optional[subprocess.Popen] = None
        self._amqtt = None
        self._dir: Optional[tempfile.TemporaryDirectory] = None

    async def start(self) -> "EmbeddedBroker":
        self.port = free_port()
        exe = find_mosquitto() if self.prefer == "mosquitto" else None
        if exe:
            self._dir = tempfile.TemporaryDirectory(prefix="linli-broker-")
            conf = Path(self._dir.name) / "mosquitto.conf"
            conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n" % self.port)
            self._proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.kind = "mosquitto"
        else:
            try:
                from amqtt.broker import Broker
            except ImportError as exc:
                raise BrokerUnavailable("no MQTT broker: install Mosquitto (apt-get install mosquitto) or `pip install amqtt` (%s)" % exc) from None
            logging.getLogger("amqtt").setLevel(logging.ERROR)
            self._amqtt = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:%d" % self.port}}})
            await self._amqtt.start()
            self.kind = "amqtt"
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port, 0.2):
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerUnavailable("mosquitto exited: %s" % self._proc.stderr.read().decode(errors="replace").strip())
            if time.monotonic() > deadline:
                raise BrokerUnavailable("%s did not accept connections on port %d" % (self.kind, self.port))
            await asyncio.sleep(0.05)
        return self

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._amqtt is not None:
            await self._amqtt.shutdown()
            self._amqtt = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    async def __aenter__(self) -> "EmbeddedBroker":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
