"""`linli flash` against MicroPython's unix port behind a pty: fresh, re-run, interrupted, refused.

Each board is a real interpreter whose REPL is reached through mpremote's SerialTransport on a
pty (tests/harness/unixboard.py); its flash folder is where the files land.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest
import serial

from linli.cli import main as linli
from linli.flash import job as jobs
from linli.flash.deploy import MANIFEST, board_manifest, deploy
from linli.flash.device import Device
from linli.flash.errors import WriteFailed
from linli.flash.provision import Network, Registry, fingerprint
from linli.keystore import KeyStore
from linli.link import LinkKeys

from harness.unixboard import UnixBoard

pytestmark = pytest.mark.micropython

FAST = ["--tries", "2", "--answer-timeout", "0.5"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, micropython_tools):
    from linli import fwbuild

    out = tmp_path_factory.mktemp("bundle") / "bin"
    fwbuild.build("bin", out, arch=None)
    return out


@pytest.fixture
def boards(tmp_path, micropython_tools):
    made: list[UnixBoard] = []

    def make(name="board", **kw) -> UnixBoard:
        b = UnixBoard(tmp_path / name, micropython_tools.micropython, **kw).start()
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.kill()


def args(board_port, bundle, tmp_path, node="bin-0042", *extra):
    return ["flash", "--port", board_port, "--board", "esp32-devkitc", "--role", "bin", "--site", "dong-3",
            "--node-id", node, "--bundle", str(bundle), "--gateway", "192.168.4.1", "--wifi-ssid", "linli",
            "--wifi-password", "pw", "--keystore", str(tmp_path / "keys.db"), *FAST, *extra]


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def assert_complete(flash: Path, bundle: Path, mode: str = "files") -> None:
    """Every file the mode puts on the filesystem with its manifest hash (in ROMFS mode: no module),
    the board's manifest saying how it was deployed, no temp files."""
    m = manifest_of(bundle)
    inside = set(m["romfs"]["files"]) if mode == "romfs" else set()
    for f in m["files"]:
        if f["path"] in inside:
            assert not (flash / f["path"]).exists(), f["path"]
        else:
            assert hashlib.sha256((flash / f["path"]).read_bytes()).hexdigest() == f["sha256"], f["path"]
    assert (flash / MANIFEST).read_bytes() == board_manifest(m, mode)
    assert manifest_of(flash)["deploy"] == mode
    assert not list(flash.rglob("*.tmp")) and not (flash / "manifest.old.json").exists()


def board_key(flash: Path) -> bytes:
    return bytes.fromhex(json.loads((flash / "secrets.json").read_text())["key"])


def registered(keys: Path, node: str, key: bytes) -> bool:
    ks = KeyStore(keys)
    try:
        hit = ks.lookup(node)
    finally:
        ks.close()
    return hit is not None and hit[0].mac_key == LinkKeys(key).mac_key


def test_fresh_flash_then_a_rerun_skips_what_matches(tmp_path, boards, bundle, capsys):
    board = boards()
    n = len(manifest_of(bundle)["files"])
    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert_complete(board.flash, bundle)
    key = board_key(board.flash)
    assert registered(tmp_path / "keys.db", "bin-0042", key)
    assert key.hex() not in out and "%d file(s) written" % n in out and fingerprint(key) in out
    cfg = json.loads((board.flash / "config.json").read_text())
    assert cfg["_site"] == "dong-3" and cfg["bin"]["pins"]["trig"] == 5 and "key" not in cfg
    stamps = {p: p.stat().st_mtime_ns for p in board.flash.rglob("*") if p.is_file()}

    # The same command again: nothing to write, the key kept, no file touched.
    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "0 file(s) written (0.0 KiB), %d unchanged, 0 old removed" % n in out
    assert "config.json unchanged, secrets.json unchanged" in out and "kept the board's key" in out
    assert {p: p.stat().st_mtime_ns for p in board.flash.rglob("*") if p.is_file()} == stamps
    assert board_key(board.flash) == key

    # A new bundle with one file changed and one gone: one write, one removal, the rest skipped.
    newer = tmp_path / "newer"
    shutil.copytree(bundle, newer)
    m = manifest_of(newer)
    (newer / "boot.py").write_text((newer / "boot.py").read_text() + "# v2\n")
    gone = next(f for f in m["files"] if f["path"].startswith("lib/drivers/") and "__init__" not in f["path"])
    (newer / gone["path"]).unlink()
    m["files"] = [f for f in m["files"] if f is not gone]
    for f in m["files"]:
        f["sha256"] = hashlib.sha256((newer / f["path"]).read_bytes()).hexdigest()
        f["size"] = (newer / f["path"]).stat().st_size
    (newer / MANIFEST).write_text(json.dumps(m))
    assert linli(args(board.device, newer, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "1 file(s) written" in out and "%d unchanged, 1 old removed" % (n - 2) in out
    assert not (board.flash / gone["path"]).exists()
    assert_complete(board.flash, newer)


def test_a_flash_cut_off_mid_file_is_repaired_by_a_rerun(tmp_path, boards, bundle, capsys):
    board = boards()
    total = sum(f["size"] for f in manifest_of(bundle)["files"])

    class PullThePlug:
        """A progress bar that kills the board once half the bytes went out (mid-file)."""

        def __init__(self, _total):
            self.sent = 0

        def advance(self, n, note):
            self.sent += n
            if self.sent > total // 2 and board.running:
                board.kill()

        def done(self):
            pass

    dev = Device(board.device, tries=2, answer_s=0.5).open()
    with pytest.raises(WriteFailed) as e:
        deploy(dev, bundle, progress=PullThePlug)
    dev.close()
    assert "run the same command again" in str(e.value)
    # The board says "incomplete" (no manifest), and no real file name holds a wrong file.
    assert not (board.flash / MANIFEST).exists()
    want = {f["path"]: f["sha256"] for f in manifest_of(bundle)["files"]}
    present = [p for p in want if (board.flash / p).exists()]
    assert 0 < len(present) < len(want)
    for p in present:
        assert hashlib.sha256((board.flash / p).read_bytes()).hexdigest() == want[p], p
    assert list(board.flash.rglob("*.tmp")), "the cut should have left a partial temp file"

    board.start()  # power back on
    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "%d unchanged" % len(present) in out
    assert_complete(board.flash, bundle)


def test_cut_between_files_then_repaired(tmp_path, boards, bundle):
    board = boards()
    job = jobs.Job(board="esp32-devkitc", role="bin", site="dong-3", node_id="bin-0042", port=board.device,
                   bundle=bundle, net=Network("192.168.4.1", None, "linli", "pw"), tries=2, answer_s=0.5)
    reg = Registry(keystore=tmp_path / "keys.db")

    def cut(i, path):
        if i == 9:
            board.kill()

    with pytest.raises(WriteFailed):
        jobs.run(job, reg, on_file=cut, out=lambda s: None)
    # Cut before provisioning: no identity on the board, no key registered for it.
    assert not (tmp_path / "keys.db").exists() and not (board.flash / "secrets.json").exists()
    board.start()
    job.port = board.device
    res = jobs.run(job, reg, out=lambda s: None)
    assert len(res.deploy.skipped) == 10 and res.key_how == "new"
    assert_complete(board.flash, bundle)
    assert registered(tmp_path / "keys.db", "bin-0042", board_key(board.flash))


def test_a_board_that_never_answers(tmp_path, serial_pty, bundle, capsys):
    # The /dev/pts/N path itself: mpremote reads a pty with blocking reads, which must not hang.
    rc = linli(args(serial_pty.pts, bundle, tmp_path))
    err = capsys.readouterr().err
    assert rc == 1
    assert "nothing answers" in err and "cable carries data" in err and "baud" in err
    assert not (tmp_path / "keys.db").exists()


def test_something_that_is_not_micropython(tmp_path, serial_pty, bundle, capsys):
    stop = threading.Event()

    def chatter():  # an Arduino sketch printing readings all the time, whatever it is sent
        while not stop.is_set():
            serial_pty.read(64, 0.01)
            serial_pty.write(b"temp=21.5 hum=40\r\n")

    t = threading.Thread(target=chatter, daemon=True)
    t.start()
    try:
        rc = linli(args(serial_pty.device, bundle, tmp_path))
    finally:
        stop.set()
        t.join(2)
    err = capsys.readouterr().err
    assert rc == 1
    assert "not as MicroPython" in err and "temp=21.5" in err and "--firmware IMAGE" in err


def test_a_board_running_its_program_is_stopped_first(tmp_path, boards, bundle):
    """A node's main.py logging away: Ctrl-C stops it, then the raw REPL answers."""
    board = boards(running="import time\nwhile True:\n print('[bin] fill 40%')\n time.sleep_ms(5)\n")
    assert linli(args(board.device, bundle, tmp_path)) == 0
    assert_complete(board.flash, bundle)


def test_a_busy_port(tmp_path, boards, bundle, capsys):
    board = boards()
    with serial.Serial(board.device, exclusive=True):
        rc = linli(args(board.device, bundle, tmp_path))
    err = capsys.readouterr().err
    assert rc == 1 and "in use by another program" in err
    assert board.files() == {}


def test_a_full_flash_is_refused_before_writing(tmp_path, boards, bundle, capsys):
    # statvfs says 3 free blocks of 4 KiB: far less than the bundle.
    tiny = "from uos import *\nimport uos\ndef statvfs(p):\n s = uos.statvfs(p)\n return (4096, 4096, 100, 3, 3) + tuple(s[5:])\n"
    board = boards(shadow={"os": tiny})
    rc = linli(args(board.device, bundle, tmp_path))
    err = capsys.readouterr().err
    assert rc == 1 and "KiB free" in err and "needs" in err
    assert board.files() == {}


def test_micropython_for_another_chip_is_refused(tmp_path, boards, bundle, capsys):
    # os.uname() as MicroPython on an ESP32-S3 says it, on a board flashed as an esp32-devkitc.
    s3 = ("from uos import *\n"
          "def uname():\n return ('esp32', 'esp32', '1.24.1', 'v1.24.1', 'Generic ESP32S3 module with ESP32S3')\n")
    board = boards(shadow={"os": s3})
    assert linli(args(board.device, bundle, tmp_path)) == 1
    assert "runs MicroPython for an ESP32S3" in capsys.readouterr().err
    assert board.files() == {}


def test_dry_run_touches_nothing(tmp_path, boards, bundle, capsys):
    board = boards()
    assert linli(args(board.device, bundle, tmp_path, "bin-0042", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert board.files() == {} and not (tmp_path / "keys.db").exists()
    assert "nothing is touched" in out and "esp32-devkitc" in out and "trig:5" in out
    assert "wifi_password=***" in out and "pw" not in out.replace("wifi_password", "")
    assert "key store %s" % (tmp_path / "keys.db") in out
    kib = manifest_of(bundle)["romfs"]["size"] / 1024
    assert "auto: the %.1f KiB ROMFS image into the board's ROMFS partition if it has one big enough" % kib in out
    assert linli(args(board.device, bundle, tmp_path, "bin-0042", "--dry-run", "--deploy", "files")) == 0
    assert "--deploy files: every file on the filesystem" in capsys.readouterr().out and board.files() == {}


def test_keys_kept_renewed_and_conflicts(tmp_path, boards, bundle, capsys):
    keys = tmp_path / "keys.db"
    a = boards("a")
    assert linli(args(a.device, bundle, tmp_path)) == 0
    first = board_key(a.flash)
    # Another node id on the same board: refused without --yes, then a new key.
    assert linli(args(a.device, bundle, tmp_path, "bin-0043")) == 2
    assert "this board is node bin-0042 (bin): pass --yes" in capsys.readouterr().err
    assert linli(args(a.device, bundle, tmp_path, "bin-0043", "--yes")) == 0
    second = board_key(a.flash)
    assert second != first and registered(keys, "bin-0043", second) and registered(keys, "bin-0042", first)
    # --new-key replaces the registered key.
    assert linli(args(a.device, bundle, tmp_path, "bin-0043", "--new-key")) == 0
    third = board_key(a.flash)
    assert third != second and registered(keys, "bin-0043", third)
    # A fresh board claiming a registered node id is refused before anything is written.
    b = boards("b")
    capsys.readouterr()
    assert linli(args(b.device, bundle, tmp_path, "bin-0043")) == 1
    assert "--new-key" in capsys.readouterr().err
    assert b.files() == {} and registered(keys, "bin-0043", third)


def test_batch_with_one_bad_row(tmp_path, boards, bundle, serial_pty, capsys):
    a, b = boards("a"), boards("b")
    plan = tmp_path / "tray.csv"
    plan.write_text("port,board,role,site,node_id\n"
                    "%s,esp32-devkitc,bin,dong-3,bin-0101\n"
                    "%s,esp32-devkitc,bin,dong-3,bin-0102\n"
                    "%s,esp32-devkitc,bin,dong-3,bin-0103\n" % (a.device, serial_pty.device, b.device))
    export = tmp_path / "keys.txt"
    rc = linli(["flash", "--batch", str(plan), "--bundle", str(bundle), "--gateway", "192.168.4.1:1883",
                "--wifi-ssid", "linli", "--wifi-password", "pw", "--export", str(export), *FAST])
    out = capsys.readouterr().out
    assert rc == 1
    assert_complete(a.flash, bundle)
    assert_complete(b.flash, bundle)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("bin-01")}
    assert " ok " in rows["bin-0101"] and " ok " in rows["bin-0103"]
    assert rows["bin-0101"].split()[3] == "files"  # no ROMFS partition on these boards
    assert "FAILED" in rows["bin-0102"] and "nothing answers" in rows["bin-0102"]
    assert "2 of 3 node(s) done" in out
    # The export file holds both keys; the gateway imports it.
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert {x["node"]: x["key"] for x in lines} == {"bin-0101": board_key(a.flash).hex(), "bin-0103": board_key(b.flash).hex()}
    assert export.stat().st_mode & 0o077 == 0
    assert linli(["flash", "--import-keys", str(export), "--keystore", str(tmp_path / "gw" / "keys.db")]) == 0
    assert registered(tmp_path / "gw" / "keys.db", "bin-0103", board_key(b.flash))


def test_the_bundle_is_built_once_into_the_cache(tmp_path, monkeypatch, micropython_tools):
    from linli import fwbuild
    from linli.flash import bundle as bundles
    from linli.flash.errors import PlanError

    monkeypatch.setenv("LINLI_CACHE", str(tmp_path / "cache"))
    path, m = bundles.get_bundle("bin", None)
    assert path.parent == tmp_path / "cache" / "bundles" and path.name.startswith("bin-bytecode-") and m["role"] == "bin"
    stamp = (path / MANIFEST).stat().st_mtime_ns
    assert bundles.get_bundle("bin", None)[0] == path and (path / MANIFEST).stat().st_mtime_ns == stamp
    (path / "main.py").write_text("damaged\n")  # a damaged cache entry is built again
    assert bundles.get_bundle("bin", None)[0] == path and fwbuild.verify(path) == []
    with pytest.raises(PlanError, match="is a bundle for role 'bin', not 'streetlight'"):
        bundles.get_bundle("streetlight", None, path)
