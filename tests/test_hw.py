"""hw/ board profiles: each kind of bad wiring is refused naming the file and key, the shipped
profiles are clean, the DevKitC maps are the firmware's defaults, the generated pin config
passes the firmware's own validator on MicroPython, and `linli hw` prints and exits right."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from linli import hw
from linli.cli import main
from linli.errors import ConfigError, HwError, LinliError

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "firmware" / "lib" / "roles" / "settings.py"
DEVKITC = "boards/esp32-devkitc.toml"
S3 = "boards/esp32-s3-devkitc-1.toml"

# The warnings the shipped profiles are expected to carry (the DevKitC bin map is the firmware's
# default wiring and uses two strapping pins, both high at reset like their pull-ups); anything
# else is a regression.
EXPECTED_WARNINGS = {
    "hw/boards/esp32-devkitc.toml": ["roles.bin.pins.trig", "roles.bin.pins.rfid_cs"],
}


@pytest.fixture
def hwcopy(tmp_path, monkeypatch):
    """A copy of hw/ under tmp_path/hw, made the hw root; ``edit(rel, old, new)`` changes one
    file's text (``old`` must occur exactly once)."""
    root = tmp_path / "hw"
    shutil.copytree(ROOT / "hw", root)
    monkeypatch.setenv("LINLI_HW", str(root))

    def edit(rel: str, old: str, new: str) -> Path:
        p = root / rel
        text = p.read_text()
        assert text.count(old) == 1, "%r occurs %d times in %s" % (old, text.count(old), rel)
        p.write_text(text.replace(old, new))
        return p

    edit.root = root
    return edit


def _error(path: Path) -> HwError:
    with pytest.raises(HwError) as info:
        hw.validate(path)
    return info.value


# -- shipped profiles ------------------------------------------------------------------------


def test_shipped_files_validate_with_only_the_expected_warnings():
    files = hw.all_files()
    kinds = {p.parent.name for p in files}
    assert {"boards", "wiring", "bom", "gateways"} <= kinds and (ROOT / "hw" / "roles.toml") in files
    seen = {}
    for path in files:
        for w in hw.validate(path):  # raises on any error
            assert w.level == "warning"
            seen.setdefault(w.file, []).append(w.key)
    assert seen == EXPECTED_WARNINGS


def test_boards_and_their_facts():
    assert hw.boards() == ["esp32-devkitc", "esp32-s3-devkitc-1"]
    b = hw.load_board("esp32-devkitc")
    assert (b.id, b.chip, b.flash_mb, b.roles) == ("esp32-devkitc", "ESP32", 4, ("bin", "streetlight", "petscan"))
    assert b.gpio.flash == set(range(6, 12)) and b.gpio.input_only == {34, 35, 36, 39}
    assert set(b.gpio.strapping) == {0, 2, 5, 12, 15} and b.gpio.strapping[12]["boot"] == "low"
    assert b.gpio.adc1[35] == 7 and b.gpio.adc2[25] == 8 and b.gpio.boot_button == 0
    s3 = hw.load_board("esp32-s3-devkitc-1")
    assert (s3.chip, s3.flash_mb, s3.psram_mb) == ("ESP32-S3", 8, 8)
    assert s3.gpio.flash == set(range(26, 33)) and s3.gpio.psram == set(range(33, 38))
    assert set(s3.gpio.strapping) == {0, 3, 45, 46} and s3.gpio.usb == {19, 20}
    assert s3.warnings == ()


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(HwError) as info:
        hw.load_board("esp32-wrover")
    e = info.value
    assert isinstance(e, LinliError) and isinstance(e, ConfigError)
    assert e.file == "hw/boards" and e.key == "board"
    assert "unknown board 'esp32-wrover' (known: esp32-devkitc, esp32-s3-devkitc-1)" in str(e)


def test_unknown_role_on_a_board_and_in_node_config():
    b = hw.load_board("esp32-devkitc")
    with pytest.raises(HwError, match="no pin map for role 'lamp'"):
        b.pins("lamp")
    with pytest.raises(HwError, match="unknown role 'lamp'"):
        hw.node_config("esp32-devkitc", "lamp")


def _firmware_pins(name: str) -> dict:
    """settings.py's ``_NAME_PINS`` default string, parsed the way settings.section() does."""
    m = re.search(r'^_%s_PINS = "([^"]*)"' % name.upper(), SETTINGS.read_text(), re.M)
    assert m, "_%s_PINS not found in %s" % (name.upper(), SETTINGS)
    out = {}
    for kv in m.group(1).split():
        k, _, v = kv.partition("=")
        out[k] = None if v == "-" else int(v)
    return out


@pytest.mark.parametrize("role", hw.ROLES)
def test_devkitc_maps_are_the_firmware_defaults(role):
    fw = _firmware_pins(role)
    assert hw.load_board("esp32-devkitc").pins(role) == fw
    # The S3 map names exactly the firmware's pins too (a missing one is "not fitted").
    assert list(hw.load_board("esp32-s3-devkitc-1").pins(role)) == list(fw)


def test_gateway_profile():
    g = hw.load_gateway_profile()
    assert g.pins == {"status_led": 17, "buzzer": 27, "button": 22}
    assert g.active_high == {"status_led": True, "buzzer": True} and g.pull_up is True and g.hold_s == 3.0
    with pytest.raises(HwError, match="unknown gateway profile 'pi-zero' \\(known: raspberry-pi\\)"):
        hw.load_gateway_profile("pi-zero")


def test_hw_root_follows_the_environment(hwcopy):
    assert hw.hw_root() == hwcopy.root
    hwcopy("boards/esp32-devkitc.toml", 'name = "ESP32-DevKitC V4 (ESP32-WROOM-32E)"', 'name = "copy"')
    assert hw.load_board("esp32-devkitc").name == "copy"


# -- each kind of bad wiring -----------------------------------------------------------------

# (file, old text, new text, key, words in the message)
BAD = [
    ("flash_pin", S3, "lid = 16", "lid = 30", "roles.bin.pins.lid", ["GPIO 30 is wired to the module's SPI flash", "Move lid to a free GPIO"]),
    ("psram_pin", S3, "lamp = 21", "lamp = 35", "roles.streetlight.pins.lamp", ["GPIO 35 is wired to the module's PSRAM"]),
    ("input_only_output", DEVKITC, "lamp = 25", "lamp = 34", "roles.streetlight.pins.lamp",
     ["GPIO 34 is input-only", "lamp is an output", "output-capable GPIO such as"]),
    ("input_only_de", DEVKITC, "uart_rx = 16\n", "uart_rx = 16\nuart_de = 36\n", "roles.streetlight.node.uart_de",
     ["GPIO 36 is input-only"]),
    ("input_only_bidir", DEVKITC, "ow = 4", "ow = 39", "roles.bin.pins.ow", ["GPIO 39 is input-only", "input/output"]),
    ("duplicate", S3, "g = 5", "g = 4", "roles.petscan.pins.g", ["GPIO 4 is already used by roles.petscan.pins.r", "one pin used twice"]),
    ("duplicate_node_pin", DEVKITC, "bat_pin = 35", "bat_pin = 32", "roles.bin.node.bat_pin",
     ["GPIO 32 is already used by roles.bin.pins.hx_dout"]),
    ("unknown_pin", DEVKITC, "button = 33", "button = 20", "roles.petscan.pins.button",
     ["GPIO 20 does not exist on esp32-devkitc", "0-19, 21-23, 25-27, 32-36, 39"]),
    ("adc2_with_wifi", DEVKITC, "bat_pin = 35", "bat_pin = 25", "roles.bin.node.bat_pin",
     ["GPIO 25 is ADC2_CH8", "Wi-Fi", "Move bat_pin to an ADC1 pin such as GPIO 34, GPIO 35, GPIO 36"]),
    ("no_adc", S3, "bat_pin = 1", "bat_pin = 21", "roles.bin.node.bat_pin", ["GPIO 21 has no ADC channel"]),
    ("no_pull_up", DEVKITC, "button = 33", "button = 36", "roles.petscan.pins.button",
     ["GPIO 36 has no internal pull-up", "10k resistor to 3V3"]),
    ("unknown_firmware_pin", S3, "tilt = 8", "tilt = 8\nlidd = 3", "roles.bin.pins.lidd",
     ["the firmware has no bin pin named 'lidd'", "Use one of: echo"]),
    ("not_a_number", S3, "pir = 14", 'pir = "14"', "roles.streetlight.pins.pir", ["must be a GPIO number"]),
    ("uart_pair", S3, "uart_rx = 18\n", "", "roles.streetlight.node", ["uart_tx and uart_rx go together"]),
    ("node_value_range", DEVKITC, "uart_id = 2", "uart_id = 3", "roles.streetlight.node.uart_id", ["must be an int from 0 to 2"]),
    ("bad_chip", S3, 'chip = "ESP32-S3"', 'chip = "ESP32S3"', "chip", ["esptool's chip name"]),
    ("id_not_file_name", S3, 'id = "esp32-s3-devkitc-1"', 'id = "s3"', "id", ["must equal the file name"]),
    ("unknown_role", S3, "[roles.petscan.pins]", "[roles.lamp.pins]", "roles.lamp", ["unknown role 'lamp'"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_wiring_is_refused_naming_file_and_key(hwcopy, case):
    _, rel, old, new, key, words = case
    e = _error(hwcopy(rel, old, new))
    assert e.file == "hw/" + rel and e.key == key
    assert len(e.problems) == 1, [str(p) for p in e.problems]
    msg = str(e)
    assert msg.startswith("hw/%s: %s: " % (rel, key))
    for w in words:
        assert w in msg
    assert msg.rstrip().endswith(".")  # the fix sentence
    # Loading the board refuses it the same way.
    with pytest.raises(HwError) as info:
        hw.load_board(Path(rel).stem)
    assert info.value.key == key


def test_adc2_is_fine_on_a_node_without_wifi(hwcopy):
    p = hwcopy(DEVKITC, "bat_pin = 35", "bat_pin = 25")
    hwcopy(DEVKITC, "[roles.bin.node]", "[roles.bin]\nwifi = false\n\n[roles.bin.node]")
    assert [w.key for w in hw.validate(p)] == EXPECTED_WARNINGS["hw/boards/esp32-devkitc.toml"]


def test_strapping_pin_is_a_warning_with_the_level_at_reset(hwcopy):
    p = hwcopy(S3, "tilt = 8", "tilt = 45")
    (w,) = hw.validate(p)
    assert (w.level, w.file, w.key) == ("warning", "hw/" + S3, "roles.bin.pins.tilt")
    assert "GPIO 45 is a strapping pin: it must be low at reset" in str(w) and "1.8 V" in str(w)
    assert "Make sure what tilt connects to leaves it low while the board resets" in str(w)
    assert hw.load_board("esp32-s3-devkitc-1").warnings == (w,)
    assert hw.node_config("esp32-s3-devkitc-1", "bin")["bin"]["pins"]["tilt"] == 45  # a warning does not block


def test_console_usb_and_onboard_pins_warn(hwcopy):
    p = hwcopy(S3, "pir = 14", "pir = 19")
    hwcopy(S3, "lamp = 21", "lamp = 38")
    hwcopy(DEVKITC, "button = 33", "button = 3")
    assert [(w.key, w.why.split(":")[0]) for w in hw.validate(p)] == [
        ("roles.streetlight.pins.pir", "GPIO 19 is a native USB data line"),
        ("roles.streetlight.pins.lamp", "GPIO 38 also drives the board's WS2812 RGB LED (GPIO 48 on v1.0 boards)"),
    ]
    (w,) = [w for w in hw.validate(hwcopy.root / DEVKITC) if "petscan" in w.key]
    assert "GPIO 3 is UART0 to the USB bridge" in str(w)


def test_every_error_of_a_file_is_reported(hwcopy):
    hwcopy(S3, "lid = 16", "lid = 30")
    e = _error(hwcopy(S3, "g = 5", "g = 4"))
    assert [p.key for p in e.problems] == ["roles.bin.pins.lid", "roles.petscan.pins.g"]
    assert str(e).splitlines() == [str(p) for p in e.problems]


def test_not_toml_and_missing_file(hwcopy):
    e = _error(hwcopy(S3, "lid = 16", "lid = "))
    assert e.file == "hw/" + S3 and "not valid TOML" in str(e)
    with pytest.raises(HwError, match="no such file"):
        hw.validate(hwcopy.root / "bom" / "lamp.toml")
    with pytest.raises(HwError, match="not a hw/ file"):
        hw.validate(hwcopy.root / "README.md")


def test_wiring_non_bus_pin_twice_is_refused_bus_pins_are_shared(hwcopy):
    # scl/sda carry three I2C parts in the shipped table: fine (declared bus "i2c").
    assert hw.validate(hwcopy.root / "wiring" / "streetlight.toml") == []
    e = _error(hwcopy("wiring/petscan.toml", 'pin = "g"\npart = "rgb_led"', 'pin = "r"\npart = "rgb_led"'))
    assert e.file == "hw/wiring/petscan.toml" and e.key == "wire[5].pin"
    assert "r is already wired to r_220.red channel by wire[4]: one pin used twice (it is not a bus pin)" in str(e)


def test_wiring_unknown_pin_and_part(hwcopy):
    e = _error(hwcopy("wiring/bin.toml", 'pin = "tilt"', 'pin = "tlit"'))
    assert e.key.endswith(".pin") and "'tlit' is neither a bin pin nor a rail" in str(e)
    e = _error(hwcopy("wiring/petscan.toml", 'part = "gm65"\npart_pin = "RX (pin 4)"', 'part = "gm66"\npart_pin = "RX (pin 4)"'))
    assert e.key == "wire[0].part" and "'gm66' is not in hw/bom/petscan.toml" in str(e)


def test_bom_errors(hwcopy):
    e = _error(hwcopy("bom/petscan.toml", "qty = 3", "qty = 0"))
    assert e.file == "hw/bom/petscan.toml" and e.key == "item[3].qty" and "whole number >= 1" in str(e)
    e = _error(hwcopy("bom/bin.toml", 'part = "hx711"', 'part = "sonar"'))
    assert e.key == "item[2].part" and "'sonar' is already item[1]" in str(e)


def test_gateway_profile_errors(hwcopy):
    e = _error(hwcopy("gateways/raspberry-pi.toml", "[buzzer]\npin = 27", "[buzzer]\npin = 17"))
    assert (e.file, e.key) == ("hw/gateways/raspberry-pi.toml", "buzzer.pin")
    assert "BCM 17 is already used by status_led.pin" in str(e)
    hwcopy("gateways/raspberry-pi.toml", "[buzzer]\npin = 17", "[buzzer]\npin = 27")
    e = _error(hwcopy("gateways/raspberry-pi.toml", "[status_led]\npin = 17", "[status_led]\npin = 14"))
    assert e.key == "status_led.pin" and "BCM 14 is reserved: UART TX" in str(e)
    with pytest.raises(HwError) as info:
        hw.load_gateway_profile()
    assert info.value.key == "status_led.pin"


# -- the generated config on the firmware's own validators -----------------------------------

IDENTITY = {"node_id": "n-1", "key": "ab" * 32, "wifi_ssid": "linli", "wifi_password": "pw", "broker_host": "192.168.4.1"}

FIRMWARE_CHECK = """
import json, os
from node import config
from roles import settings
for name in sorted(os.listdir("cases")):
    for f in ("config.json", "secrets.json"):
        with open("cases/%s/%s" % (name, f)) as src, open(f, "w") as dst:
            dst.write(src.read())
    try:
        cfg = config.load()
        role = cfg["role"]
        s = settings.load(role, cfg.get(role))
        print(json.dumps([name, "ok", {"pins": s["pins"], "uart_id": cfg["uart_id"], "uart_tx": cfg["uart_tx"],
                                       "uart_rx": cfg["uart_rx"], "bat_pin": cfg["bat_pin"], "bat_div_pct": cfg["bat_div_pct"]}]))
    except ValueError as e:
        print(json.dumps([name, str(e), None]))
"""


@pytest.mark.micropython
def test_generated_configs_pass_the_firmware_validators(mpy):
    files = {}
    expected = {}
    for board in hw.boards():
        for role in hw.load_board(board).roles:
            name = "%s.%s" % (board, role)
            cfg = hw.node_config(board, role)
            files["cases/%s/config.json" % name] = json.dumps(cfg)
            files["cases/%s/secrets.json" % name] = json.dumps(dict(IDENTITY, role=role))
            expected[name] = cfg
    # A control case: a pin the firmware does not know is refused there too.
    bad = hw.node_config("esp32-devkitc", "petscan")
    bad["petscan"]["pins"]["lidd"] = 3
    files["cases/zz-bad/config.json"] = json.dumps(bad)
    files["cases/zz-bad/secrets.json"] = json.dumps(dict(IDENTITY, role="petscan"))
    r = mpy.run(FIRMWARE_CHECK, files=files, timeout=60).expect_ok()
    got = {name: (msg, out) for name, msg, out in map(json.loads, r.stdout.splitlines())}
    assert got.pop("zz-bad")[0].startswith("petscan: unknown pin petscan.pins.lidd")
    assert set(got) == set(expected) and len(got) == 6
    for name, cfg in expected.items():
        msg, out = got[name]
        role = name.split(".")[1]
        assert msg == "ok", (name, msg)
        assert out["pins"] == cfg[role]["pins"]  # the firmware uses exactly the profile's pins
        for k in ("uart_tx", "uart_rx", "bat_pin", "uart_id", "bat_div_pct"):
            if k in cfg:
                assert out[k] == cfg[k], (name, k)


def test_node_config_shape():
    cfg = hw.node_config("esp32-devkitc", "bin")
    assert set(cfg) == {"bin", "uart_tx", "uart_rx", "uart_de", "bat_pin", "bat_div_pct"}
    assert cfg["bin"] == {"pins": _firmware_pins("bin")} and cfg["bat_pin"] == 35 and cfg["uart_tx"] is None
    cfg = hw.node_config("esp32-s3-devkitc-1", "streetlight")
    assert cfg == {"streetlight": {"pins": {"scl": 9, "sda": 8, "pir": 14, "lamp": 21}},
                   "uart_id": 2, "uart_tx": 17, "uart_rx": 18, "uart_de": None, "bat_pin": None}


# -- linli hw --------------------------------------------------------------------------------


def test_cli_list(capsys):
    assert main(["hw", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^esp32-devkitc\s+ESP32\s+4 MB\s+0 MB\s+bin, streetlight, petscan", out, re.M)
    assert re.search(r"^esp32-s3-devkitc-1\s+ESP32-S3\s+8 MB\s+8 MB", out, re.M)
    assert "gateway profiles: raspberry-pi" in out


def test_cli_show(capsys):
    assert main(["hw", "show", "esp32-devkitc", "--role", "bin"]) == 0
    out = capsys.readouterr().out
    assert "chip ESP32, 4 MB flash" in out and "[bin]" in out and "[petscan]" not in out
    assert re.search(r"^19\s+spi_miso\s+in\s+SPI MISO from the RC522\s+rc522 MISO \[purple\]", out, re.M)
    assert re.search(r"^-\s+wake\s+in\s+.*not fitted", out, re.M)
    assert re.search(r"^35\s+\(node\) bat_pin\s+adc\s+.*ADC1_CH7, input only", out, re.M)
    assert "warnings:" in out and "roles.bin.pins.rfid_cs: GPIO 15 is a strapping pin" in out
    assert main(["hw", "show", "esp32-s3-devkitc-1"]) == 0
    out = capsys.readouterr().out
    assert "[bin]" in out and "[streetlight]" in out and "[petscan]" in out and "warnings:" not in out
    assert re.search(r"^9\s+scl\s+bidir\s+.*bh1750 SCL \[yellow\]; ina_lamp SCL \[yellow\]; ina_pv SCL", out, re.M)


def test_cli_check_clean_tree_prints_warnings_and_exits_0(capsys):
    assert main(["hw", "check"]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: hw/boards/esp32-devkitc.toml: roles.bin.pins.") == 2
    assert out.splitlines()[-1] == "%d file(s): 0 error(s), 2 warning(s)" % len(hw.all_files())


def test_cli_check_bad_file_exits_1(hwcopy, capsys):
    p = hwcopy(S3, "lid = 16", "lid = 30")
    q = hwcopy(S3.replace("esp32-s3-devkitc-1", "esp32-devkitc"), "lamp = 25", "lamp = 34")
    assert main(["hw", "check", str(p), str(q)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("error: hw/boards/esp32-s3-devkitc-1.toml: roles.bin.pins.lid: GPIO 30 is wired to the module's SPI flash")
    assert any(line.startswith("error: hw/boards/esp32-devkitc.toml: roles.streetlight.pins.lamp: GPIO 34 is input-only") for line in out)
    assert out[-1] == "2 file(s): 2 error(s), 2 warning(s)"


def test_cli_config_prints_the_generated_json(capsys):
    assert main(["hw", "config", "esp32-devkitc", "petscan"]) == 0
    assert json.loads(capsys.readouterr().out) == hw.node_config("esp32-devkitc", "petscan")


def test_cli_bom_totals(capsys):
    assert main(["hw", "bom", "petscan"]) == 0
    out = capsys.readouterr().out
    items = hw.load_bom("petscan")
    total = sum(it["qty"] * it["unit_cny"] for it in items)
    assert re.search(r"^r_220\s+220 ohm .*\s3\s+0\.05\s+0\.15$", out, re.M)
    assert out.splitlines()[-1] == "%d parts, %d pieces, total %.2f CNY" % (len(items), sum(i["qty"] for i in items), total)
    assert {"esp32", "gm65", "rgb_led", "buzzer", "button"} <= {it["part"] for it in items}


def test_cli_errors_exit_1_with_the_reason(hwcopy, capsys):
    assert main(["hw", "show", "nope"]) == 1
    assert "linli hw: hw/boards: board: unknown board 'nope'" in capsys.readouterr().err
    hwcopy(DEVKITC, "button = 33", "button = 36")
    assert main(["hw", "config", "esp32-devkitc", "petscan"]) == 1
    err = capsys.readouterr().err
    assert "hw/boards/esp32-devkitc.toml: roles.petscan.pins.button: GPIO 36 has no internal pull-up" in err
