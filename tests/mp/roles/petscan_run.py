# The pet scanner role (roles.petscan) on the simulated ESP32 with the real HAL and drivers:
# the GM65 on the sim's UART 1 (timed lines), the RGB LED pins, the buzzer PWM and the button
# pin recorded by the sim. A fake gateway answers the scan of ANSWER_TAG after ANSWER_MS with
# pet.status; ONLINE says whether the link is up. The test prepends ANSWER_TAG, ANSWER_ID,
# ANSWER_MS and ONLINE. Runs until the harness stops it (main="petscan_run:main").
import asyncio
import json
from time import ticks_ms

import _sim  # the sim's clock (tests only), to print when things happened
from fakenode import FakeNode

from hal import Board

CFG = {"node_id": "pet-01", "role": "petscan", "report_s": 300, "petscan": {}}


class Gateway(FakeNode):
    role = None

    def event(self, body, alarm=False):
        FakeNode.event(self, body, alarm)
        print(json.dumps({"k": "at", "what": body["ev"], "ms": _sim.ms()}))
        if body["ev"] == "scan" and body["tag"] == ANSWER_TAG and self.link.up:  # noqa: F821
            asyncio.create_task(self.answer())
        return True

    async def answer(self):
        await asyncio.sleep_ms(ANSWER_MS)  # noqa: F821
        print(json.dumps({"k": "at", "what": "answer", "ms": _sim.ms()}))
        self.role.on_command("pet.status", {"tag": ANSWER_ID, "status": "green", "buzz": "ok"})  # noqa: F821


async def main():
    from roles.petscan import Petscan

    hal = Board()
    node = Gateway(hal, CFG, up=ONLINE)  # noqa: F821
    node.role = Petscan(node, hal, CFG)
    await node.role.run()
