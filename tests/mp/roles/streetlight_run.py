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


async def main_energy():
    """The day's energy across a reboot (main="streetlight_run:main_energy"): on a power-on,
    half an hour of 1 s ticks at night (the role's clock is stepped, the RTC is the world's),
    the lamp drawing 500 mA at 12 V; prints the saved sums and reboots. After the reboot, one
    tick, on the next local day (the world's time): the energy_daily it sends."""
    from roles.common import load_json
    from roles.streetlight import ENERGY_FILE, Streetlight

    hal = Board()
    node = FakeNode(hal, CFG)
    role = Streetlight(node, hal, CFG)
    T = [0]
    role.now = lambda: T[0]
    r = {"lux": 2.0, "motion": False, "ma": 500.0, "lv": 12.0}
    if hal.reset_cause() == "pwron":
        for i in range(1, 1802):
            T[0] = i
            role.step(r)
        print(json.dumps({"k": "saved", "e": load_json(ENERGY_FILE), "lit": role.core.lit_s}))
        hal.reset()
    T[0] = 1
    role.step(r)
