"""The GPIO panel inside a running gateway (gpiozero's mock pins): its LED follows the gateway's
state, the local broker going down is a fault with the buzzer, and a panel that cannot claim its
pins never stops the gateway."""

import time

import pytest
from gpiozero import Device

from linli.config import Config

from gateway_peer import GatewayThread, gateway_toml

PANEL = '[panel]\nenabled = true\nprofile = "raspberry-pi"\n'


@pytest.fixture
def mock_pins(monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    yield
    if Device.pin_factory is not None:
        Device.pin_factory.reset()
        Device.pin_factory.close()
    Device.pin_factory = None


def until(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_panel_follows_the_gateway_and_beeps_on_a_fault(tmp_path, mosquitto_factory, mock_pins):
    local = mosquitto_factory()
    cfg = Config.from_text(gateway_toml(tmp_path / "data", local, None, PANEL), "gateway.toml")
    gw = GatewayThread(cfg).start()
    try:
        assert until(lambda: gw.gw.panel is not None and gw.gw.panel.state == "ok"), gw.gw.panel_error
        panel = gw.gw.panel
        buzzer = Device.pin_factory.pin(27)
        assert not [s for s in buzzer.states if s.state]  # no beep while all is well
        local.stop()  # nodes can no longer report: a fault
        assert until(lambda: panel.state == "fault")
        assert until(lambda: sum(1 for s in buzzer.states if s.state) >= 3)  # the three-beep alarm
        led = Device.pin_factory.pin(17)
        assert until(lambda: len(led.states) > 6)  # the LED is flickering
        local.start()
        assert until(lambda: panel.state == "ok", timeout=30)
    finally:
        gw.stop()
    assert panel._closed and not led.state and not buzzer.state  # pins released, LED and buzzer off


def test_a_panel_that_cannot_claim_its_pins_does_not_stop_the_gateway(tmp_path, mosquitto_factory, mock_pins):
    local = mosquitto_factory()
    cfg = Config.from_text(gateway_toml(tmp_path / "data", local, None, PANEL), "gateway.toml")
    from gpiozero import LED

    squatter = LED(17)  # another program holds the status LED's pin
    gw = GatewayThread(cfg).start()
    try:
        assert until(lambda: gw.gw.panel_error is not None)
        assert "17" in gw.gw.panel_error or "in use" in gw.gw.panel_error.lower(), gw.gw.panel_error
        assert gw.gw.panel is None and gw.gw.node_broker.connected.is_set()
    finally:
        gw.stop()
        squatter.close()
