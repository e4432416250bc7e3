"""The nodes' side of the local Mosquitto: frames in on ``linli/node/+/up``, acks and commands
out on ``linli/node/{id}/down`` (docs/protocol.md 4.1).

paho runs its network loop in its own thread; its callbacks only hand messages to the asyncio
loop with ``call_soon_threadsafe`` (never publish, block or lock inside a callback: paho issues
#354/#346).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Callable, Optional

import paho.mqtt.client as mqtt

from linli.config import BrokerSection

log = logging.getLogger("linli.node_mqtt")

UP = "linli/node/+/up"
_UP_RE = re.compile(r"^linli/node/([A-Za-z0-9._-]{1,16})/up$")


def down_topic(node: str) -> str:
    return "linli/node/%s/down" % node


class NodeBroker:
    """Connects to the local broker; ``on_frame(raw, node_id, reply)`` runs on the event loop."""

    def __init__(self, cfg: BrokerSection, on_frame: Callable, *, client_id: Optional[str] = None):
        self.cfg = cfg
        self.on_frame = on_frame
        self.connected = asyncio.Event()
        self.counts = {"frames": 0, "bad_topic": 0, "connects": 0, "disconnects": 0}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        cid = client_id or cfg.client_id or "linli-gw-ingest-%s" % uuid.uuid4().hex[:8]
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311, clean_session=True)
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None, certfile=str(cfg.cert_file) if cfg.cert_file else None, keyfile=str(cfg.key_file) if cfg.key_file else None)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # paho thread -------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("local broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        # Subscribing from on_connect is paho's documented way to resubscribe on reconnect.
        client.subscribe(UP, qos=1)
        self._loop.call_soon_threadsafe(self._set_connected, True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._loop.call_soon_threadsafe(self._set_connected, False)

    def _on_message(self, client, userdata, msg):
        self._loop.call_soon_threadsafe(self._dispatch, msg.topic, bytes(msg.payload))

    # event loop ---------------------------------------------------------------------------
    def _set_connected(self, up: bool) -> None:
        if up:
            self.counts["connects"] += 1
            self.connected.set()
        else:
            self.counts["disconnects"] += 1
            self.connected.clear()

    def _dispatch(self, topic: str, payload: bytes) -> None:
        m = _UP_RE.match(topic)
        if not m:
            self.counts["bad_topic"] += 1
            return
        node = m.group(1)
        self.counts["frames"] += 1
        self.on_frame(payload, node, self._replier(node))

    def _replier(self, node: str):
        topic = down_topic(node)

        async def reply(raw: bytes) -> None:
            info = self.client.publish(topic, raw, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError("local broker publish failed: %s" % mqtt.error_string(info.rc))

        return reply

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self.client.loop_start()

    async def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
