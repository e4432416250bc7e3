# One wake of the bin role (roles.bin) on the simulated ESP32: the real HAL and drivers (the
# DS18B20 on the sim's 1-Wire bus, world "onewire"), a fake load cell (the sim cannot clock an
# HX711), a fake RC522 on the sim's SPI (world {"spi": {"model": "fake_rc522"}}), and FakeNode
# for the runtime.
# Run by tests/test_role_bin.py as main="bin_wake:main" (or main_card: a card on the reader).
import _sim  # the sim's clock (tests only): the load cell's weight follows it
from fake_hx711 import HX711Chip
from fakenode import FakeNode

from hal import Board

COUNTS_PER_G = 10


class Scale(HX711Chip):
    """The load cell: 2000 g, and 2500 g once the lid has closed on a deposit (2.5 s in)."""

    def _load(self):
        g = 2000 if _sim.ms() < 2500 else 2500
        self.values = [g * COUNTS_PER_G]
        # The fake keeps every clock edge for its own tests: not needed here, and it grows.
        self.sck.history.clear()
        self.pulse_counts.clear()
        self.read_gains.clear()
        HX711Chip._load(self)


class TestBoard(Board):
    def __init__(self):
        Board.__init__(self)
        self.scale = Scale([])

    def pin(self, n, mode="in", pull=None, value=None):
        if n == 33:
            return self.scale.sck
        if n == 32:
            return self.scale.dout
        return Board.pin(self, n, mode, pull, value)


CFG = {"node_id": "bin-01", "role": "bin", "report_s": 300, "bat_pin": 35, "bat_div_pct": 200, "sleep_flush_s": 1,
       "bin": {"hx_scale": float(COUNTS_PER_G), "cat": "kitchen", "settle_s": 1}}


async def main():
    from roles.bin import Bin

    hal = TestBoard()
    node = FakeNode(hal, CFG)
    role = Bin(node, hal, CFG)
    await role.run()


async def main_card():
    import fake_rc522

    fake_rc522.cards.append(fake_rc522.Card(b"\xde\xad\xbe\xef"))
    await main()


async def main_hcsr04():
    CFG["bin"]["sonar"] = "hcsr04"
    await main()


def _late_card(uid, at_ms):
    """A card in the reader's field only from ``at_ms`` of the run on."""
    import fake_rc522

    class Card(fake_rc522.Card):
        @property
        def present(self):
            return _sim.ms() >= at_ms

        @present.setter
        def present(self, v):
            pass

    fake_rc522.cards.append(Card(uid))


async def main_card_wake():
    """The card-reader wake line on GPIO 36 (EXT1, active low); a card held up 1.2 s after the
    wake, after the role's first look: only a wake by that line keeps it looking (``card_s``)."""
    CFG["bin"]["pins"] = {"wake": 36}
    CFG["bin"]["card_s"] = 3
    _late_card(b"\xca\xfe\xf0\x0d", 1200)
    await main()
