"""A Mosquitto broker the test starts itself, and a small paho client to poke at it.

Each :class:`Broker` listens on a free loopback port with its own config, password, ACL,
persistence and log files in the test's tmp dir (never the system broker on 1883). It speaks
MQTT 3.1.1 and 5 on the same listener.

    def test_retained_survives_restart(mosquitto_factory):
        broker = mosquitto_factory(persistence=True)
        with broker.client() as c:
            c.publish("bins/1/state", b"full", qos=1, retain=True)
        broker.restart()
        with broker.client() as c:
            c.subscribe("bins/+/state")
            assert c.get().payload == b"full"
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

_START_TIMEOUT = 10.0


def find_mosquitto() -> str | None:
    """$MOSQUITTO, then PATH, then /usr/sbin (not on a normal user's PATH)."""
    if os.environ.get("MOSQUITTO"):
        return shutil.which(os.environ["MOSQUITTO"])
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def find_mosquitto_passwd() -> str | None:
    return shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def password_line(user: str, password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """One password-file line in mosquitto 2's PBKDF2-SHA512 format ($7$), as mosquitto_passwd writes."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "%s:$7$%d$%s$%s" % (user, iterations, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


class BrokerError(RuntimeError):
    """The broker would not start (the message holds the end of its log)."""


class Broker:
    """One mosquitto process; ``start()``/``stop()``/``restart()`` keep the same port.

    Options (also for :meth:`reconfigure`): ``allow_anonymous``, ``users`` {name: password},
    ``acl`` (acl_file text), ``persistence`` (keeps retained messages and persistent sessions'
    queued QoS 1/2 messages across a graceful restart), ``extra`` (more config lines, e.g.
    ``["max_packet_size 1024"]``).
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, binary: str | None = None, port: int | None = None, **options):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or find_mosquitto()
        if not self.binary:
            raise BrokerError("mosquitto not found (apt install mosquitto, or set $MOSQUITTO)")
        self._fixed_port = port is not None
        self.port = port or free_port()
        self._started_once = False
        self.options = {"allow_anonymous": True, "users": {}, "acl": None, "persistence": False, "extra": ()}
        self._set(options)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    def _set(self, options: dict) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError("unknown broker option(s): %s" % ", ".join(sorted(unknown)))
        self.options.update(options)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self) -> str:
        """Everything the broker logged, over all its starts."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> None:
        """Wait until ``text`` appears in the log (AssertionError with the log if it does not)."""
        deadline = time.monotonic() + timeout
        while text not in self.log:
            assert time.monotonic() < deadline, "%r not in the broker log:\n%s" % (text, self.log[-3000:])
            time.sleep(0.02)

    def write_config(self) -> Path:
        o = self.options
        lines = [
            "listener %d %s" % (self.port, self.host),
            "allow_anonymous %s" % ("true" if o["allow_anonymous"] else "false"),
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto switches to the "mosquitto" user, which cannot write here.
            lines.append("user root")
        if o["users"]:
            lines.append("password_file %s" % self._write_passwords(o["users"]))
        if o["acl"] is not None:
            acl = self.workdir / "acl"
            acl.write_text(o["acl"])
            lines.append("acl_file %s" % acl)
        if o["persistence"]:
            lines += ["persistence true", "persistence_location %s/" % self.workdir,
                      "persistence_file mosquitto.db", "autosave_interval 1800"]
        lines += list(o["extra"])
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _write_passwords(self, users: dict[str, str]) -> Path:
        path = self.workdir / "passwd"
        path.unlink(missing_ok=True)
        tool = find_mosquitto_passwd()
        if tool:
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password],
                               check=True, capture_output=True)
        else:
            path.write_text("".join(password_line(u, p) + "\n" for u, p in users.items()))
        path.chmod(0o600)
        return path

    def start(self) -> Broker:
        """Start and wait until the port accepts connections."""
        for _ in range(5):
            try:
                return self._start()
            except BrokerError as e:
                # Another process took the free port we picked: pick again (first start only).
                if self._fixed_port or self._started_once or "Address already in use" not in str(e):
                    raise
                self.port = free_port()
        raise BrokerError("no free port found")

    def _start(self) -> Broker:
        if self.running:
            return self
        conf = self.write_config()
        with open(self.log_path, "ab") as log:
            log.write(b"---- start\n")
            log.flush()
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BrokerError("mosquitto exited with %s:\n%s" % (self.proc.returncode, self.log[-3000:]))
            try:
                socket.create_connection(self.address, timeout=0.5).close()
                self._started_once = True
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise BrokerError("mosquitto did not listen on %d:\n%s" % (self.port, self.log[-3000:]))
                time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully (SIGTERM: the broker saves its persistence file first)."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Die like a crash or a power cut: nothing is saved."""
        if self.running:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    def reconfigure(self, **options) -> Broker:
        """Change options; restart if running."""
        self._set(options)
        return self.restart() if self.proc is not None else self

    def client(self, client_id: str = "", **kw) -> MqttProbe:
        """A connected :class:`MqttProbe` (use it as a context manager)."""
        probe = MqttProbe(self, client_id, **kw)
        probe.connect()
        return probe


class MqttProbe:
    """A paho-mqtt 2 client for assertions: the callbacks only queue, the test thread waits.

    ``protocol`` 5 or 4 (3.1.1); ``clean`` False keeps the session (and its queued messages).
    """

    def __init__(self, broker: Broker, client_id: str = "", *, username: str | None = None,
                 password: str | None = None, protocol: int = 5, clean: bool = True, timeout: float = 5.0):
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.broker = broker
        self.timeout = timeout
        self.clean = clean
        self.protocol = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=self.protocol,
            clean_session=clean if self.protocol != mqtt.MQTTv5 else None, reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue = queue.Queue()
        self._acks: queue.Queue = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, props: self._acks.put(("connect", rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self._acks.put(("subscribe", rcs))
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)

    def _ack(self, kind: str):
        while True:
            got, value = self._acks.get(timeout=self.timeout)
            if got == kind:
                return value

    def connect(self):
        """Connect; return the CONNACK reason code (AssertionError on a refusal, ConnectionRefusedError
        when nothing listens)."""
        rc = self.connect_reason()
        assert not rc.is_failure, "broker refused the connection: %s" % rc
        return rc

    def connect_reason(self):
        """Connect and return the CONNACK reason code, refused or not."""
        kw = {}
        if self.protocol == self._mqtt.MQTTv5:
            kw["clean_start"] = self.clean
            if not self.clean:
                from paho.mqtt.properties import Properties
                from paho.mqtt.packettypes import PacketTypes

                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 3600
                kw["properties"] = props
        self.client.connect(self.broker.host, self.broker.port, keepalive=30, **kw)
        self.client.loop_start()
        return self._ack("connect")

    def subscribe(self, topic: str, qos: int = 0) -> list:
        """Subscribe and wait for the SUBACK; return its reason codes."""
        self.client.subscribe(topic, qos)
        return self._ack("subscribe")

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(self.timeout)

    def get(self, timeout: float | None = None):
        """The next message (queue.Empty after ``timeout`` s)."""
        return self.messages.get(timeout=self.timeout if timeout is None else timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
