"""The demo's embedded broker: Mosquitto when installed, amqtt (pure Python) otherwise."""

import asyncio
import queue

import paho.mqtt.client as mqtt
import pytest

from linli.broker import EmbeddedBroker


@pytest.mark.parametrize("prefer", ["mosquitto", "amqtt"])
def test_embedded_broker_carries_qos1_messages(prefer):
    async def main():
        async with EmbeddedBroker(prefer=prefer) as b:
            assert b.kind == prefer

            def roundtrip():
                got = queue.Queue()
                sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="s", protocol=mqtt.MQTTv311)
                sub.on_message = lambda c, u, m: got.put((m.topic, bytes(m.payload)))
                sub.connect("127.0.0.1", b.port)
                sub.loop_start()
                sub.subscribe("linli/node/+/up", qos=1)
                import time

                time.sleep(0.3)
                pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="p", protocol=mqtt.MQTTv311)
                pub.connect("127.0.0.1", b.port)
                pub.loop_start()
                pub.publish("linli/node/bin-1/up", b"\x01\x00frame", qos=1).wait_for_publish(5)
                msg = got.get(timeout=5)
                for c in (sub, pub):
                    c.disconnect()
                    c.loop_stop()
                return msg

            return await asyncio.get_running_loop().run_in_executor(None, roundtrip)

    assert asyncio.run(main()) == ("linli/node/bin-1/up", b"\x01\x00frame")
