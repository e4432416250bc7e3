"""`linli flash` without a board: port detection, the image check, plans, batch files, keys."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from linli.cli import main as linli
from linli.flash import image, ports, provision
from linli.flash.errors import PlanError, PortAmbiguous, PortNotFound, RegisterError, WrongBoard
from linli.flash.progress import Progress
from linli.flash.provision import Identity, Network, Registry
from linli.keystore import KeyStore


def port(device, vid, desc=""):
    return SimpleNamespace(device=device, vid=vid, pid=1, description=desc)


# -- ports ----------------------------------------------------------------------------------

def test_port_detection():
    cp, ch, s3 = port("/dev/ttyUSB0", 0x10C4, "CP2102N"), port("/dev/ttyUSB1", 0x1A86, "CH340"), port("/dev/ttyACM0", 0x303A)
    other = port("/dev/ttyACM9", 0x2341, "Arduino Uno")
    assert ports.find_port(lambda: [other, cp]) == "/dev/ttyUSB0"
    with pytest.raises(PortNotFound, match="charge-only.*dialout.*--port"):
        ports.find_port(lambda: [other])
    with pytest.raises(PortAmbiguous, match="/dev/ttyACM0, /dev/ttyUSB0, /dev/ttyUSB1"):
        ports.find_port(lambda: [cp, ch, s3])
    asked = []
    answers = iter(["", "9", "2"])
    choice = ports.find_port(lambda: [cp, ch, s3], ask=lambda lines: ports.ask_on_terminal(
        lines, read=lambda prompt: next(answers), write=asked.append))
    assert choice == "/dev/ttyUSB0" and "Espressif native USB" in asked[0] and "CH340" in asked[2]


# -- the image ------------------------------------------------------------------------------

def make_image(tmp_path: Path, chip: str) -> Path:
    """A minimal firmware image made with esptool's own image classes (one IRAM segment)."""
    from esptool.bin_image import ELFSection, ESP32FirmwareImage, ESP32S3FirmwareImage

    cls, addr = {"ESP32": (ESP32FirmwareImage, 0x40080000), "ESP32-S3": (ESP32S3FirmwareImage, 0x40378000)}[chip]
    img = cls()
    img.entrypoint = addr
    img.segments = [ELFSection(b".iram0.text", addr, bytes(range(64)), 0)]
    path = tmp_path / ("%s.bin" % chip)
    path.write_bytes(img.save(None))
    return path


def test_image_header_names_the_chip_and_offset(tmp_path):
    esp32, s3 = image.read_image(make_image(tmp_path, "ESP32")), image.read_image(make_image(tmp_path, "ESP32-S3"))
    assert (esp32.chip, esp32.offset) == ("ESP32", 0x1000) and (s3.chip, s3.offset) == ("ESP32-S3", 0)
    image.check_for_board(esp32, "esp32-devkitc", "ESP32")
    with pytest.raises(WrongBoard, match="is an ESP32-S3 image, but board esp32-devkitc has an ESP32"):
        image.check_for_board(s3, "esp32-devkitc", "ESP32")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PlanError, match="not an ESP32 firmware image"):
        image.read_image(tmp_path / "notes.txt")
    cut = tmp_path / "cut.bin"
    cut.write_bytes(make_image(tmp_path, "ESP32").read_bytes()[:40])
    with pytest.raises(PlanError, match="damaged"):
        image.read_image(cut)


def test_the_connected_chip_must_be_the_boards(tmp_path):
    closed = []
    fake = SimpleNamespace(CHIP_NAME="ESP32-S3", _port=SimpleNamespace(close=lambda: closed.append(1)))
    img = image.read_image(make_image(tmp_path, "ESP32"))
    with pytest.raises(WrongBoard, match="the board on this port is an ESP32-S3, but esp32-devkitc is an ESP32"):
        image.write(img, "/dev/ttyUSB0", "esp32-devkitc", "ESP32", detect=lambda p: fake)
    assert closed == [1]


def base_args(tmp_path, *extra):
    return ["flash", "--port", "/dev/ttyUSB7", "--board", "esp32-devkitc", "--role", "bin", "--site", "dong-3",
            "--node-id", "bin-0001", "--gateway", "192.168.4.1:1883", "--wifi-ssid", "linli",
            "--keystore", str(tmp_path / "keys.db"), *extra]


def test_dry_run_plans_the_image_and_touches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LINLI_WIFI_PASSWORD", "s3cret-wifi")
    img = make_image(tmp_path, "ESP32")
    assert linli(base_args(tmp_path, "--firmware", str(img), "--erase", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "esptool --chip esp32 --port /dev/ttyUSB7 erase-flash && esptool --chip esp32 --port /dev/ttyUSB7 " \
           "write-flash 0x1000 %s" % img in out
    assert "built into %s" % (tmp_path / "cache") in out and "s3cret-wifi" not in out
    assert not (tmp_path / "keys.db").exists() and not (tmp_path / "cache").exists()
    # The wrong image is refused before anything happens, dry run or not.
    assert linli(base_args(tmp_path, "--firmware", str(make_image(tmp_path, "ESP32-S3")), "--dry-run")) == 1
    assert "is an ESP32-S3 image" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--node-id", "bin 01"], "secrets.json: node_id must be 1..16 chars"),
    (["--board", "esp32-wrover"], "unknown board 'esp32-wrover' (known: esp32-devkitc"),
    (["--gateway", "gw.local:http"], "the port must be a number"),
    (["--report-s", "2"], "config.json: report_s must be an int >= 5, got 2"),
    (["--wifi-ssid", ""], "no Wi-Fi network: pass --wifi-ssid"),
    (["--erase"], "it needs --firmware IMAGE"),
])
def test_bad_plans_name_what_is_wrong(tmp_path, capsys, extra, message):
    assert linli(base_args(tmp_path, "--dry-run", *extra)) == 2
    assert message in capsys.readouterr().err


def test_missing_arguments_and_bad_secrets_file(tmp_path, capsys):
    assert linli(["flash", "--board", "esp32-devkitc", "--export", str(tmp_path / "k.txt")]) == 2
    assert "missing --role, --site, --node-id" in capsys.readouterr().err
    sec = tmp_path / "site.json"
    sec.write_text(json.dumps({"wifi_ssid": "linli", "wifi_pasword": "x"}))
    assert linli(base_args(tmp_path, "--secrets", str(sec), "--dry-run")) == 2
    assert "%s: unknown key wifi_pasword" % sec in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("port,board,role,site,nodeid\n", "line: unknown column nodeid"),
    ("port,board,role,site\nx,y,bin,z\n", "missing column node_id"),
    ("port,board,role,site,node_id\n", "no rows below the header"),
])
def test_batch_file_errors(tmp_path, capsys, text, message):
    plan = tmp_path / "tray.csv"
    plan.write_text(text)
    assert linli(["flash", "--batch", str(plan), "--export", str(tmp_path / "k.txt")]) == 2
    err = capsys.readouterr().err
    assert str(plan) in err and message.split("line: ")[-1] in err


def test_a_bad_batch_row_does_not_stop_the_tray(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINLI_CACHE", str(tmp_path / "cache"))
    plan = tmp_path / "tray.csv"
    plan.write_text("# tray 3, Dong-3 bins\nport,board,role,site,node_id,report_s\n"
                    "/dev/ttyUSB0,esp32-devkitc,bin,dong-3,bin-0001,\n"
                    "/dev/ttyUSB1,esp32-devkitc,lamp,dong-3,bin-0002,\n"
                    "/dev/ttyUSB2,esp32-s3-devkitc-1,petscan,dong-3,pet-0003,60\n")
    rc = linli(["flash", "--batch", str(plan), "--gateway", "192.168.4.1", "--wifi-ssid", "linli",
                "--export", str(tmp_path / "k.txt"), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "%s line 4: role 'lamp'" % plan in err
    assert "report_s=60" in out and "2 of 3 node(s) done" in out


def test_the_deploy_mode_in_plans_and_batch_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINLI_CACHE", str(tmp_path / "cache"))
    assert linli(base_args(tmp_path, "--dry-run", "--deploy", "romfs")) == 0
    out = capsys.readouterr().out
    assert "--deploy romfs: the ROMFS image into the board's ROMFS partition" in out
    assert "a board without a partition big enough is refused" in out
    plan = tmp_path / "tray.csv"
    plan.write_text("port,board,role,site,node_id,deploy\n"
                    "/dev/ttyUSB0,esp32-devkitc,bin,dong-3,bin-0001,files\n"
                    "/dev/ttyUSB1,esp32-devkitc,bin,dong-3,bin-0002,rom\n")
    rc = linli(["flash", "--batch", str(plan), "--gateway", "192.168.4.1", "--wifi-ssid", "linli",
                "--export", str(tmp_path / "k.txt"), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 1 and "--deploy files: every file on the filesystem" in out
    assert "%s line 3: deploy 'rom': use one of auto, romfs, files" % plan in err


# -- provisioning and keys ------------------------------------------------------------------

def test_node_files_follow_the_board_profile():
    from linli import hw

    cfg, sec = provision.node_files(Identity("pet-7", "petscan", "esp32-s3-devkitc-1", "dong-3"), bytes(32),
                                    Network("192.168.4.1", 1884, "linli", "pw"), report_s=120)
    assert cfg["petscan"] == hw.node_config("esp32-s3-devkitc-1", "petscan")["petscan"]
    assert (cfg["_site"], cfg["broker_port"], cfg["report_s"]) == ("dong-3", 1884, 120)
    assert set(sec) == {"node_id", "role", "key", "wifi_ssid", "wifi_password", "broker_host", "broker_password"}
    assert sec["key"] == "00" * 32 and "key" not in cfg and "wifi_password" not in cfg
    serial_cfg, serial_sec = provision.node_files(Identity("lamp-1", "streetlight", "esp32-devkitc", "dong-3"),
                                                  bytes(32), Network(transport="serial"))
    assert serial_cfg["transport"] == "serial" and "wifi_ssid" not in serial_sec
    assert (serial_cfg["uart_tx"], serial_cfg["uart_rx"]) == (17, 16)


def test_serial_link_needs_uart_pins_in_the_profile():
    # The DevKitC bin map uses 16/17 for the sonar and fits no radio: without pins UART1 would
    # land on the module's flash lines (GPIO 9/10).
    with pytest.raises(PlanError, match=r"roles.bin has no uart_tx/uart_rx.*--transport mqtt"):
        provision.node_files(Identity("bin-1", "bin", "esp32-devkitc", "dong-3"), bytes(32), Network(transport="serial"))


def test_choose_key():
    ident = Identity("bin-1", "bin", "esp32-devkitc", "s")
    mine = {"node_id": "bin-1", "role": "bin", "key": b"\x07" * 32}
    assert provision.choose_key(mine, ident, False) == (b"\x07" * 32, "kept")
    k, how = provision.choose_key(mine, ident, True)
    assert how == "renewed" and k != b"\x07" * 32 and len(k) == 32
    assert provision.choose_key(dict(mine, node_id="bin-2"), ident, False)[1] == "new"
    assert provision.existing(b'{"node_id": "bin-1", "role": "bin", "key": "abc"}') is None
    assert provision.existing(b"not json") is None


def test_export_file_replaces_a_nodes_line_and_imports(tmp_path):
    export = tmp_path / "keys.txt"
    reg = Registry(export=export)
    reg.add("bin-1", "bin", b"\x01" * 32, replace=False)
    reg.add("bin-2", "bin", b"\x02" * 32, replace=False)
    assert reg.conflict("bin-1", "bin", b"\x01" * 32) is None
    assert "another key" in reg.conflict("bin-1", "bin", b"\x09" * 32)
    reg.add("bin-1", "bin", b"\x09" * 32, replace=True)
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert [(x["node"], x["key"][:2]) for x in lines] == [("bin-2", "02"), ("bin-1", "09")]
    assert export.stat().st_mode & 0o777 == 0o600
    keys = tmp_path / "gw" / "keys.db"
    assert provision.import_keys(export, keys) == 2
    ks = KeyStore(keys)
    assert sorted(ks.nodes()) == [("bin-1", "bin"), ("bin-2", "bin")]
    ks.close()
    # The store now has bin-1; a changed key is refused unless replaced.
    Registry(export=export).add("bin-1", "bin", b"\x0a" * 32, replace=True)
    with pytest.raises(RegisterError, match="--new-key"):
        provision.import_keys(export, keys)
    assert provision.import_keys(export, keys, replace=True) == 2


def test_registry_needs_exactly_one_place():
    with pytest.raises(PlanError, match="--keystore PATH .* or --export FILE"):
        Registry()


def test_progress_without_a_terminal():
    out = io.StringIO()
    bar = Progress(20480, "deploy", out, tty=False)
    for _ in range(20):
        bar.advance(1024, "lib/x.mpy")
    bar.done()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("deploy [" + "#" * 30 + "] 100%  20/20 KiB")
    assert "\r" not in out.getvalue()
    tty = io.StringIO()
    bar = Progress(100, "deploy", tty, tty=True)
    bar.advance(50, "a")
    assert tty.getvalue().startswith("\r\033[K") and " 50%" in tty.getvalue()
