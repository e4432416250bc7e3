"""The MicroPython harness: the simulated ESP32 (linli.simboard) and the ``mpy`` fixture."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
import serial

from harness.micropython import heap_bytes
from harness.mpybuild import BuildError, FirmwareBuild

pytestmark = pytest.mark.micropython


def run(mpy, code, **kw):
    return mpy.run(textwrap.dedent(code), **kw)


def lines(result):
    return result.stdout.split()


# -- the module path ------------------------------------------------------------------------

def test_sim_machine_and_time_shadow_the_builtins(mpy):
    r = run(mpy, """
        import machine, time, utime
        print(machine.__file__.endswith('simboard/board/machine.py'), time.__file__.endswith('simboard/board/time.py'))
        print(hasattr(utime, '__file__'), type(time.time()).__name__)
    """).expect_ok()
    # utime stays the port's built-in (no __file__); time.time() is an int as on an ESP32.
    assert lines(r) == ["True", "True", "False", "int"]


def test_firmware_loads_as_mpy_or_as_source(mpy, tmp_path):
    code = "import link\nprint(link.__file__)"
    assert run(mpy, code).stdout.strip().endswith("firmware/build/test-mpy/lib/link/__init__.mpy")
    assert run(mpy, code, compiled=False).stdout.strip().endswith("firmware/lib/link/__init__.py")


def test_extra_path_comes_before_the_firmware(mpy, tmp_path):
    (tmp_path / "x" / "link").mkdir(parents=True)
    (tmp_path / "x" / "link" / "__init__.py").write_text("FAKE = 1\n")
    r = run(mpy, "import link\nprint(link.FAKE)", extra_path=[tmp_path / "x"]).expect_ok()
    assert r.stdout.strip() == "1"


def test_firmware_build_recompiles_only_what_changed(micropython_tools, tmp_path):
    src = tmp_path / "fw"
    (src / "lib" / "pkg").mkdir(parents=True)
    (src / "lib" / "pkg" / "a.py").write_text("A = 1\n")
    (src / "main.py").write_text("import pkg.a\n")
    (src / "build").mkdir()
    (src / "build" / "junk.py").write_text("this is not python\n")  # never compiled
    build = FirmwareBuild(micropython_tools.mpy_cross, src, tmp_path / "out")
    assert {p.name for p in build.update()} == {"a.py", "main.py"}
    assert (build.lib / "pkg" / "a.mpy").exists() and (build.out / "main.mpy").exists()
    assert build.update() == []
    (src / "lib" / "pkg" / "a.py").write_text("A = 2\n")
    assert [p.name for p in build.update()] == ["a.py"]
    (src / "main.py").unlink()
    build.update()
    assert not (build.out / "main.mpy").exists()
    (src / "lib" / "pkg" / "a.py").write_text("def (:\n")
    with pytest.raises(BuildError, match="lib/pkg/a.py"):
        build.update()


def test_heap_limit_counts_words_as_on_a_32_bit_esp32(mpy):
    assert heap_bytes("64wK") == 128 * 1024 and heap_bytes("64K") == 64 * 1024
    big = "b = bytearray(200 * 1024)\nprint('allocated')"
    r = run(mpy, big)
    assert r.end == "exception" and r.exception["type"] == "MemoryError" and r.returncode == 1
    assert run(mpy, big, heap="512wK").expect_ok().stdout.strip() == "allocated"
    # The sim's own heap is added on top: the firmware starts with (nearly) all it asked for.
    r = run(mpy, "import gc\ngc.collect()\nprint(gc.mem_free())").expect_ok()
    assert int(r.stdout) > 0.9 * heap_bytes("64wK")
    assert r.record["heap"]["sim"] > 0


def test_a_romfs_partition_is_mounted_and_its_modules_run_from_it(mpy, tmp_path):
    import subprocess

    from linli.romfs import build_image

    src = tmp_path / "blob.py"
    src.write_text("X = 'x' * 3\ndef f():\n    return X + 'y'\n")
    subprocess.run([mpy.tools.mpy_cross, "-o", str(tmp_path / "blob.mpy"), str(src)], check=True)
    pad = bytes(range(256)) * 256  # 64 KiB of other files: the partition is the sim's, added on top
    image = build_image({"lib/blob.mpy": (tmp_path / "blob.mpy").read_bytes(), "data.bin": pad})
    probe = "import gc\ngc.collect()\nprint(gc.mem_free())\n"
    free_without = int(run(mpy, probe, heap="48wK").expect_ok().stdout)
    mpy.write_romfs(image)
    r = run(mpy, probe + "import blob\nprint(blob.__file__, blob.f())\nimport link", heap="48wK")
    free_with, loaded = r.stdout.split("\n", 1)
    assert loaded.split() == ["/rom/lib/blob.mpy", "xxxy"], r.describe()
    # The compiled firmware tree is off the path: the board's code is what its partition holds.
    assert r.exception["type"] == "ImportError" and "link" in r.exception["message"]
    # The firmware gets the heap it asked for, the partition's bytes aside (within 1 %).
    assert abs(int(free_with) - free_without) < 0.01 * heap_bytes("48wK"), (free_with, free_without)


def test_without_a_valid_romfs_image_the_board_boots_without_it(mpy):
    mpy.write_romfs(b"not an image" * 10)
    r = run(mpy, "import sys\nprint('/rom' in sys.path)\nimport link")
    assert r.stdout.split() == ["False"] and r.exception["type"] == "ImportError", r.describe()
    mpy.write_romfs(None)
    assert run(mpy, "import link\nprint(link.__file__)").expect_ok().stdout.strip().endswith("lib/link/__init__.mpy")


# -- runs: entry points, the end of a run, the flash -----------------------------------------

def test_uncaught_exception_is_recorded(mpy):
    r = run(mpy, """
        def boom():
            raise ValueError('bad key: port')
        boom()
    """)
    assert r.returncode == 1 and r.end == "exception"
    assert r.exception["type"] == "ValueError" and r.exception["message"] == "bad key: port"
    assert "line 3" in r.exception["traceback"] and "ValueError" in r.stderr
    with pytest.raises(AssertionError, match="bad key"):
        r.expect_ok()


def test_module_entry_point_runs_a_coroutine(mpy, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "role.py").write_text(textwrap.dedent("""
        import asyncio
        async def run():
            await asyncio.sleep_ms(20)
            print('ran')
    """))
    assert mpy.run(main="role:run", extra_path=[tmp_path / "m"]).expect_ok().stdout == "ran\n"


def test_board_runs_boot_then_main_from_flash_with_cwd_at_flash(mpy):
    r = mpy.run(files={
        "boot.py": "print('boot')",
        "main.py": "import json\nprint(json.load(open('config.json'))['role'])",
        "config.json": '{"role": "bin"}',
    }).expect_ok()
    assert lines(r) == ["boot", "bin"]


def test_flash_persists_across_runs(mpy):
    run(mpy, "open('count.txt', 'w').write('7')").expect_ok()
    assert (mpy.flash / "count.txt").read_text() == "7"
    assert run(mpy, "print(open('count.txt').read())").stdout.strip() == "7"


def test_stop_after_ends_a_forever_loop_and_tells_where(mpy):
    started = time.monotonic()
    r = run(mpy, """
        import asyncio
        async def main():
            while True:
                await asyncio.sleep_ms(10)
        asyncio.run(main())
    """, stop_after=0.5)
    assert time.monotonic() - started < 5
    assert r.stopped and not r.timed_out and r.end == "stopped" and r.exception is None
    assert "KeyboardInterrupt" in r.record["stopped_at"]["traceback"]
    r.expect_ok()


def test_timeout_is_a_failure(mpy):
    r = run(mpy, "while True:\n    pass", timeout=0.5)
    assert r.timed_out and not r.stopped
    with pytest.raises(AssertionError):
        r.expect_ok()


def test_run_vectors_streams_a_jsonl_file(mpy, tmp_path):
    vectors = tmp_path / "v.jsonl"
    vectors.write_text("".join(json.dumps({"a": i, "b": 2}) + "\n" for i in range(50)) + "\n")
    got = mpy.run_vectors(vectors, """
        def check(v):
            if v["a"] == 3:
                raise ValueError("three")
            return {"sum": v["a"] + v["b"], "raw": bytes([v["a"]])}
    """)
    assert len(got) == 50
    assert got[0] == {"sum": 2, "raw": "00"} and got[49] == {"sum": 51, "raw": "31"}
    assert got[3] == {"error": "ValueError", "message": "three"}


# -- pins, IRQs, timers ---------------------------------------------------------------------

def test_output_pin_records_changes(mpy):
    r = run(mpy, """
        from machine import Pin
        led = Pin(2, Pin.OUT, value=0)
        led.on(); led.on(); led.off(); led(1); led.value(0)
        Pin(2).value(1)   # another object on the same GPIO
        print(led.value())
    """).expect_ok()
    assert r.pin_values(2) == [0, 1, 0, 1, 0, 1] and r.stdout.strip() == "1"
    assert all(isinstance(ms, int) for ms, _ in r.pin(2))


def test_input_pins_read_the_world(mpy):
    r = run(mpy, """
        import time
        from machine import Pin
        a, b, c = Pin(4, Pin.IN), Pin(5, Pin.IN, Pin.PULL_UP), Pin(6, Pin.IN)
        print(a.value(), b.value(), c.value())
        time.sleep_ms(350)
        print(a.value(), b.value(), c.value())
        od = Pin(7, Pin.OPEN_DRAIN, value=1)
        print(od.value())
    """, world={"pins": {4: 1, 6: [(0, 0), (300, 1)], 7: 0}}).expect_ok()
    # 5 has only its pull-up; 6 follows its schedule; the released open drain reads the world's 0.
    assert r.stdout.split("\n")[:3] == ["1 1 0", "1 1 1", "0"]


def test_scheduled_edges_fire_irq_handlers_as_soft_irqs(mpy):
    r = run(mpy, """
        import asyncio
        from machine import Pin
        flag = asyncio.ThreadSafeFlag()
        edges = []
        def on_press(pin):
            edges.append(pin.value())
            flag.set()
        Pin(0, Pin.IN, Pin.PULL_UP).irq(on_press, Pin.IRQ_FALLING)
        async def main():
            for _ in range(2):
                await flag.wait()   # nothing else runs: only the IRQ can wake this
        asyncio.run(main())
        print(edges)
    """, world={"pins": {0: [(0, 1), (300, 0), (330, 1), (370, 0), (400, 1)]}}, timeout=5).expect_ok()
    assert r.stdout.strip() == "[0, 0]"  # two falling edges, the rising ones filtered out
    assert 370 <= r.record["end_ms"] < 2000


def test_irq_handler_errors_are_recorded_and_deepsleep_in_a_handler_ends_the_run(mpy):
    r = run(mpy, """
        import time, machine
        from machine import Pin
        def handler(pin):
            if pin.value() == 0:
                raise ValueError('handler bug')
            machine.deepsleep(1000)
        Pin(0, Pin.IN).irq(handler, Pin.IRQ_FALLING | Pin.IRQ_RISING)
        while True:
            time.sleep_ms(5)
    """, world={"pins": {0: [(0, 1), (300, 0), (330, 1)]}}, timeout=5)
    assert not r.timed_out and r.end == "deepsleep" and r.deepsleep_ms == 1000
    assert [e["message"] for e in r.record["irq_exceptions"]] == ["handler bug"]


def test_timer_calls_back_periodically(mpy):
    r = run(mpy, """
        import time
        from machine import Timer
        ticks = []
        t = Timer(0)
        t.init(period=20, mode=Timer.PERIODIC, callback=lambda t: ticks.append(1))
        time.sleep_ms(210)
        t.deinit()
        time.sleep_ms(60)   # a callback already scheduled may still run
        n = len(ticks)
        time.sleep_ms(100)
        print(n, len(ticks))
    """).expect_ok()
    n, after = map(int, lines(r))
    assert 5 <= n <= 12 and after == n


def test_time_pulse_us_from_the_world(mpy):
    r = run(mpy, """
        from machine import Pin, time_pulse_us
        echo = Pin(18, Pin.IN)
        print(time_pulse_us(echo, 1, 30000), time_pulse_us(echo, 1, 30000), time_pulse_us(echo, 1, 30000))
        print(time_pulse_us(19, 1, 1000), time_pulse_us(Pin(20), 1, 1000))
    """, world={"pulses": {18: [580, 40000, 600], 19: 5000}}).expect_ok()
    assert lines(r) == ["580", "-1", "600", "-1", "-2"]


# -- buses ----------------------------------------------------------------------------------

def test_i2c_register_devices_and_missing_ones(mpy):
    r = run(mpy, """
        from machine import I2C, Pin
        i2c = I2C(0, scl=Pin(22), sda=Pin(21), freq=400000)
        print(i2c.scan())
        print(i2c.readfrom_mem(0x76, 0xD0, 1).hex(), i2c.readfrom_mem(0x76, 0xF7, 3).hex())
        i2c.writeto_mem(0x76, 0xF4, b'\\x27')
        print(i2c.readfrom_mem(0x76, 0xF4, 1).hex())
        i2c.writeto(0x76, bytes([0xD0]))             # set the register pointer
        buf = bytearray(1); i2c.readfrom_into(0x76, buf); print(buf.hex())
        for addr in (0x40, 0x41):
            try:
                i2c.readfrom(addr, 2)
            except OSError as e:
                print('err', e.errno)
    """, world={"i2c": {0x76: {"regs": {0xD0: b"\x60", 0xF7: b"\x01\x02"}}, 0x41: {"error": 5}}}).expect_ok()
    assert r.stdout.split("\n")[:6] == ["[65, 118]", "60 010200", "27", "60", "err 19", "err 5"]
    assert r.i2c_writes(0x76) == [(0xF4, b"\x27"), (None, b"\xd0")]


def test_i2c_queued_reads_for_a_register_less_device(mpy):
    # A BH1750: a command byte, then 2-byte readings; the last reading repeats.
    r = run(mpy, """
        from machine import SoftI2C, Pin
        i2c = SoftI2C(scl=Pin(22), sda=Pin(21))
        i2c.writeto(0x23, b'\\x20')
        print([i2c.readfrom(0x23, 2).hex() for _ in range(3)])
    """, world={"i2c": {0x23: {"reads": [b"\x12\x34", b"\x00\x10"]}}}).expect_ok()
    assert r.stdout.strip() == "['1234', '0010', '0010']"
    assert r.i2c_writes() == [(None, b"\x20")]


def test_i2c_device_on_one_bus_only(mpy):
    r = run(mpy, """
        from machine import I2C
        print(I2C(0).scan(), I2C(1).scan())
    """, world={"i2c": {0x23: {"bus": 1}}}).expect_ok()
    assert r.stdout.strip() == "[] [35]"


def test_spi_scripted_reads_and_recorded_writes(mpy):
    r = run(mpy, """
        from machine import SPI, Pin
        spi = SPI(1, baudrate=1000000, sck=Pin(18), mosi=Pin(23), miso=Pin(19))
        spi.write(b'\\x37')
        buf = bytearray(2)
        spi.write_readinto(b'\\xee\\x00', buf)
        print(buf.hex(), spi.read(2).hex(), spi.read(1).hex())
    """, world={"spi": {"reads": [b"\x00\x92", b"\xab"], "fill": 0xFF}}).expect_ok()
    assert r.stdout.strip() == "0092 abff ff"
    assert [b for _, b, _ in r.record["spi_writes"]] == [b"\x37", b"\xee\x00"]


def test_spi_model_module_answers_transfers(mpy, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "sim_chip.py").write_text(
        "def transfer(bus, tx):\n    return bytes(b ^ 0xFF for b in tx)\n"  # runs inside MicroPython
    )
    r = run(mpy, """
        from machine import SPI
        spi = SPI(2)
        buf = bytearray(2)
        spi.write_readinto(b'\\x0f\\xf0', buf)
        print(buf.hex(), spi.read(1, 0x01).hex())
    """, world={"spi": {"model": "sim_chip"}}, extra_path=[tmp_path / "m"]).expect_ok()
    assert r.stdout.strip() == "f00f fe"


def test_onewire_ds18b20s_from_the_world(mpy):
    # Through the firmware's HAL and driver: power-on 85 degC, then one temperature per CONVERT T.
    r = run(mpy, """
        from hal import Board
        from drivers.ds18b20 import DS18B20, scan
        ow = Board().onewire(4)
        roms = scan(ow)
        print(len(roms), roms[0].hex())
        a, b = DS18B20(ow, roms[0]), DS18B20(ow, roms[1])
        print(a.read(), b.read())
        for _ in range(3):
            a.convert()
            print(a.read(), b.read())
        print(ow.reset(), Board().onewire(5).reset())
    """, world={"onewire": {4: {"ds18b20": [
        {"rom": "28ff4c5c621603", "temp": [21.5, -10.125]},
        {"rom": "28a1b2c3d4e5f6", "pad": "50054b467fff0c101c"}]}}}).expect_ok()
    # The first sensor's ROM CRC was added (0x04); the second shows a fixed scratchpad.
    out = r.stdout.splitlines()
    assert out[0] == "2 28ff4c5c62160304"
    assert out[1:] == ["85.0 85.0", "21.5 85.0", "-10.125 85.0", "-10.125 85.0", "True False"]


def test_esp32_wake_sources_are_recorded(mpy):
    r = run(mpy, """
        from hal import Board
        hal = Board()
        hal.wake_on_pin(27, 1)
        hal.wake_on_pin(33, 0)
        hal.wake_on_pin(32, 0)
        try:
            hal.wake_on_pin(25, 1)
        except ValueError as e:
            print("ValueError")
        hal.deepsleep(1000)
    """).expect_ok()
    assert lines(r) == ["ValueError"]
    w = r.record["wake"]
    assert (w["ext0"]["pins"], w["ext0"]["level"]) == ([27], 1)
    assert (w["ext1"]["pins"], w["ext1"]["level"]) == ([33, 32], 0)
    assert r.end == "deepsleep"


def test_uart_reads_world_bytes_and_records_tx(mpy):
    r = run(mpy, """
        from machine import UART
        u = UART(1, 9600, tx=17, rx=16, timeout=1000)
        print(u.any(), u.readline(), u.read(2))
        print(u.readline())                  # waits for the scheduled line
        u.init(timeout=100)
        print(u.read(5))                     # nothing more: None after the timeout
        u.write(b'AT+SEND\\r\\n')
    """, world={"uart": {1: {"rx": b"OK\r\nxy", "schedule": [(400, b"+RX 1\r\n")]}}}).expect_ok()
    assert r.stdout.split("\n")[:3] == ["6 b'OK\\r\\n' b'xy'", "b'+RX 1\\r\\n'", "None"]
    assert r.uart_tx(1) == b"AT+SEND\r\n"


def test_uart_works_with_asyncio_streams(mpy):
    r = run(mpy, """
        import asyncio
        from machine import UART
        async def main():
            reader = asyncio.StreamReader(UART(2, 9600))
            print(await reader.readline(), await reader.readline())
        asyncio.run(main())
    """, world={"uart": {2: {"schedule": [(50, b"he"), (100, b"llo\n"), (150, b"x\n")]}}}, timeout=5).expect_ok()
    assert r.stdout.strip() == "b'hello\\n' b'x\\n'"


def test_uart_on_a_pty_device(mpy, serial_pty):
    # The firmware opens the pty slave path; the test is the peer on the master.
    proc = mpy.start(textwrap.dedent("""
        import time
        from machine import UART
        u = UART(2, 115200, timeout=2000)
        u.write(b'hello\\n')
        line = u.readline()
        u.write(b'echo:' + line)
    """), world={"uart": {2: {"device": serial_pty.device}}})
    assert serial_pty.read_until(b"\n", timeout=5) == b"hello\n"
    serial_pty.write(b"ping\n")
    assert serial_pty.read_until(b"\n", timeout=5) == b"echo:ping\n"
    r = proc.wait(timeout=10).expect_ok()
    assert r.uart_tx(2) == b"hello\necho:ping\n"


def test_uart_talks_to_pyserial_through_the_pty_master(mpy, serial_pty):
    # Node <-> gateway: the firmware gets the master fd, the gateway's pyserial opens the device.
    gateway = serial.Serial(serial_pty.device, 115200, timeout=5)
    proc = mpy.start(textwrap.dedent("""
        from machine import UART
        u = UART(1, 115200, timeout=3000)
        u.write(b'up\\n')
        u.write(b'got:' + u.readline())
    """), world={"uart": {1: {"fd": serial_pty.fd}}})
    assert gateway.readline() == b"up\n"
    gateway.write(b"down\n")
    assert gateway.readline() == b"got:down\n"
    proc.wait(timeout=10).expect_ok()
    gateway.close()


# -- ADC, PWM -------------------------------------------------------------------------------

def test_adc_reads_the_world(mpy):
    r = run(mpy, """
        import time
        from machine import ADC, Pin
        a = ADC(Pin(34), atten=ADC.ATTN_11DB)
        print(a.read_u16(), a.read(), a.read_uv())
        a.width(ADC.WIDTH_10BIT)
        print(a.read())
        time.sleep_ms(120)
        print(ADC(35).read_u16(), ADC(Pin(32)).read_u16())
    """, world={"adc": {34: 32768, 35: [(0, 100), (100, 60000)]}}).expect_ok()
    assert lines(r) == ["32768", "2048", "1550023", "512", "60000", "0"]


def test_pwm_records_duty_history(mpy):
    r = run(mpy, """
        from machine import PWM, Pin
        p = PWM(Pin(13), freq=1000, duty_u16=0)
        p.duty_u16(32768)
        p.duty(1023)
        p.freq(500)
        print(p.duty_u16(), p.duty(), p.freq(), p.duty_ns())
        p.deinit()
    """).expect_ok()
    assert lines(r) == ["65535", "1023", "500", "2000000"]
    assert [(f, d) for _, f, d in r.pwm(13)] == [(1000, 0), (1000, 32768), (1000, 65535), (500, 65535), (500, None)]


# -- RTC, deep sleep, resets, watchdog ------------------------------------------------------

def test_rtc_starts_in_2000_and_can_be_set(mpy):
    r = run(mpy, """
        import time
        from machine import RTC
        print(RTC().datetime()[:3], time.gmtime()[:3])
        RTC().datetime((2024, 5, 1, 2, 12, 30, 0, 0))
        print(RTC().datetime()[:7], time.time(), time.localtime()[:6])
        print(time.mktime(time.localtime()) == time.time())
    """).expect_ok()
    assert r.stdout.split("\n")[:3] == [
        "(2000, 1, 1) (2000, 1, 1)", "(2024, 5, 1, 2, 12, 30, 0) 1714566600 (2024, 5, 1, 12, 30, 0)", "True",
    ]
    assert [epoch for _, epoch in r.record["rtc_sets"]] == [1714566600000]


def test_world_sets_wall_time(mpy):
    r = run(mpy, "import time\nprint(time.time())", world={"time": 1795880000}).expect_ok()
    assert 1795880000 <= int(r.stdout) <= 1795880003


def test_deep_sleep_ends_the_run_and_wakes_the_next(mpy):
    code = """
        import machine, time
        from machine import RTC
        mem = RTC().memory()
        n = int(mem) if mem else 0
        print(machine.reset_cause(), machine.wake_reason(), n, time.time())
        RTC().memory(str(n + 1).encode())
        try:
            machine.deepsleep(60000)
        finally:
            machine.Pin(2, machine.Pin.OUT).on()   # runs after SystemExit, but is not recorded
        print('never')
    """
    first = run(mpy, code, world={"time": 1700000000}).expect_ok()
    assert first.deepsleep_ms == 60000 and first.end == "deepsleep" and first.pin(2) == []
    assert "never" not in first.stdout
    second = run(mpy, code).expect_ok()
    cause, wake, n, t = map(int, lines(second))
    assert (cause, wake, n) == (4, 4, 1) and 1700000060 <= t <= 1700000065
    assert second.reset_cause == "DEEPSLEEP_RESET"
    # The test can say how it woke up.
    third = run(mpy, code, world={"wake_reason": "EXT0"}).expect_ok()
    assert lines(third)[:3] == ["4", "2", "2"]


def test_anything_but_sleep_or_reset_is_a_power_cycle(mpy):
    run(mpy, "from machine import RTC\nRTC().memory(b'kept?')\nimport time\nprint(time.time())").expect_ok()
    r = run(mpy, "import machine\nprint(machine.reset_cause(), machine.RTC().memory())").expect_ok()
    assert r.stdout.strip() == "1 b''"


def test_reset_is_a_soft_reset_next_time(mpy):
    r = run(mpy, "import machine\nmachine.reset()\nprint('never')").expect_ok()
    assert r.reset == "soft" and r.stdout == ""
    assert run(mpy, "import machine\nprint(machine.reset_cause())").stdout.strip() == "5"


def test_watchdog_fed_in_time(mpy):
    r = run(mpy, """
        import time
        from machine import WDT
        w = WDT(timeout=500)
        for _ in range(6):
            time.sleep_ms(100)
            w.feed()
    """).expect_ok()
    assert r.record["wdt"] == {"timeout": 500, "feeds": 6, "expired_ms": None}


def test_watchdog_expiry_can_be_only_recorded(mpy):
    r = run(mpy, "import time\nfrom machine import WDT\nWDT(timeout=50)\ntime.sleep_ms(200)",
            world={"wdt": {"reset": False}}).expect_ok()
    assert r.end == "exit" and r.record["wdt"]["expired_ms"] >= 50 and r.reset is None


def test_watchdog_resets_a_hung_firmware(mpy):
    started = time.monotonic()
    r = run(mpy, """
        from machine import WDT
        w = WDT(timeout=200)
        w.feed()
        while True:
            pass
    """, timeout=10)
    assert time.monotonic() - started < 5 and not r.timed_out
    assert r.end == "wdt" and r.reset == "wdt" and 200 <= r.record["wdt"]["expired_ms"] < 1000
    assert run(mpy, "import machine\nprint(machine.reset_cause())").stdout.strip() == "3"


def test_misc_machine_functions(mpy):
    r = run(mpy, """
        import machine
        print(machine.unique_id().hex(), machine.freq())
        machine.freq(240000000)
        s = machine.disable_irq(); machine.enable_irq(s); machine.idle()
        machine.lightsleep(5000)
        led = machine.Signal(machine.Pin(2, machine.Pin.OUT), invert=True)
        led.on(); led.off()
        print(machine.freq(), led.value())
    """, world={"unique_id": b"\x24\x0a\xc4\x00\x00\x01"}).expect_ok()
    assert lines(r) == ["240ac4000001", "160000000", "240000000", "0"]
    assert r.pin_values(2) == [0, 1]
    assert [d for _, d in r.record["lightsleeps"]] == [5000]
