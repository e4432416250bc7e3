# The streetlight role (roles.streetlight) on the simulated ESP32 with the real HAL and drivers:
# BH1750 and INA219 on the sim's I2C, the PIR on a pin schedule, the lamp PWM recorded by the
# sim. Commands arrive at 1.8 s and 2 s. Runs until the harness stops it (main="streetlight_run:main").
import asyncio
import json

from fakenode import FakeNode

from hal import Board

CFG = {"node_id": "sl-01", "role": "streetlight", "report_s": 300,
       "streetlight": {"profile": [[0, 40]], "ina_pv": None, "tick_ms": 200, "settle_s": 1, "fault_s": 0,
                       "rated_ma": 1000, "hold_s": 1, "boost": 100}}


async def command_later(role, ms, op, args):
    await asyncio.sleep_ms(ms)
    try:
        res = role.on_command(op, args)
        print(json.dumps({"k": "result", "op": op, "ok": True, "r": res}))
    except ValueError as e:
        print(json.dumps({"k": "result", "op": op, "ok": False, "err": str(e)}))


async def main():
    from roles.streetlight import Streetlight

    hal = Board()
    node = FakeNode(hal, CFG)
    role = Streetlight(node, hal, CFG)
    asyncio.create_task(command_later(role, 1800, "lamp.level", {"level": 101}))
    asyncio.create_task(command_later(role, 2000, "lamp.mode", {"mode": "off"}))
    await role.run()
