"""`linli flash` with a ROMFS partition: the modules as one image in it, boot.py and main.py as files.

The board is MicroPython's unix port behind a pty with a ROMFS partition (``UnixBoard(romfs=...)``:
a ``vfs.rom_ioctl`` over ``<board>/sim/romfs.img`` that erases and writes like flash), the file
the simulated ESP32 mounts on /rom when the node boots (tests/test_flash_node.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from linli.cli import main as linli
from linli.flash import job as jobs
from linli.flash.deploy import MANIFEST, deploy
from linli.flash.device import Device
from linli.flash.errors import WriteFailed
from linli.flash.provision import Network, Registry
from linli.romfs import image_of as build_image

from test_flash import args, assert_complete, board_key, boards, bundle, manifest_of, registered  # noqa: F401 (fixtures)

pytestmark = pytest.mark.micropython

PARTITION = 131072  # 128 KiB, as partitions-4MiB-romfs.csv


def image_of(bundle) -> bytes:
    return (bundle / manifest_of(bundle)["romfs"]["path"]).read_bytes()


def holds(board, image: bytes) -> bool:
    """The board's partition starts with ``image``."""
    return board.rom.read_bytes()[:len(image)] == image


def modules_on_flash(board) -> list[str]:
    return sorted(p for p in board.files() if p.endswith(".mpy"))


def stamps(board) -> dict:
    return {p: p.stat().st_mtime_ns for p in [*board.flash.rglob("*"), board.rom] if p.is_file()}


def test_romfs_deploy_then_an_identical_rerun_writes_nothing(tmp_path, boards, bundle, capsys):
    board = boards(romfs=PARTITION)
    img = image_of(bundle)
    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert holds(board, img) and board.rom.stat().st_size == PARTITION
    assert modules_on_flash(board) == [] and not (board.flash / "lib").exists()
    assert {"boot.py", "main.py", "config.json", "secrets.json", MANIFEST} == set(board.files())
    assert_complete(board.flash, bundle, "romfs")
    assert manifest_of(board.flash)["romfs"]["sha256"] == hashlib.sha256(img).hexdigest()
    assert "ROMFS: the modules run in place from the board's ROMFS partition (the board has a 128 KiB" in out
    assert "ROMFS image written (%.1f KiB), 2 file(s) written" % (len(img) / 1024) in out
    assert registered(tmp_path / "keys.db", "bin-0042", board_key(board.flash))

    # Powered again: the board mounts the image on /rom (the deploy must unmount it to write).
    board.start()
    before = stamps(board)
    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "ROMFS image unchanged, 0 file(s) written (0.0 KiB), 2 unchanged, 0 old removed" in out
    assert stamps(board) == before

    # A newer bundle (one module changed): the image is written over the old one (erased first).
    newer = tmp_path / "newer"
    shutil.copytree(bundle, newer)
    m = manifest_of(newer)
    (newer / "lib" / "hal.mpy").write_bytes((newer / "lib" / "hal.mpy").read_bytes() + b"\0" * 64)
    for f in m["files"]:
        f["sha256"] = hashlib.sha256((newer / f["path"]).read_bytes()).hexdigest()
        f["size"] = (newer / f["path"]).stat().st_size
    new_img = build_image(newer, m["romfs"]["files"])
    (newer / m["romfs"]["path"]).write_bytes(new_img)
    m["romfs"].update(sha256=hashlib.sha256(new_img).hexdigest(), size=len(new_img))
    (newer / MANIFEST).write_text(json.dumps(m))
    assert new_img != img
    assert linli(args(board.device, newer, tmp_path)) == 0
    assert "ROMFS image written" in capsys.readouterr().out
    assert holds(board, new_img)
    assert_complete(board.flash, newer, "romfs")


@pytest.mark.parametrize("cut", ["image", "file"])
def test_a_deploy_cut_mid_image_or_mid_file_is_repaired(tmp_path, boards, bundle, cut, capsys):
    # rom_block: a port with ranged erases (rom_ioctl(6) answers), the other path of write_rom.
    board = boards(romfs=PARTITION, rom_block=4096)
    img = image_of(bundle)

    class PullThePlug:
        """A progress bar that kills the board half-way through the image."""

        def __init__(self, _total):
            self.sent = 0

        def advance(self, n, note):
            self.sent += n
            if cut == "image" and self.sent > len(img) // 2 and board.running:
                board.kill()

        def done(self):
            pass

    def after_file(i, path):  # the image is in; cut after the first file
        board.kill()

    dev = Device(board.device, tries=2, answer_s=0.5).open()
    with pytest.raises(WriteFailed) as e:
        deploy(dev, bundle, progress=PullThePlug, on_file=after_file if cut == "file" else None)
    dev.close()
    assert "run the same command again" in str(e.value)
    assert not (board.flash / MANIFEST).exists()  # the board says "incomplete"
    rom = board.rom.read_bytes()
    if cut == "image":  # a partial partition: the first half written, the rest still erased
        assert rom[:1024] == img[:1024] and rom[:len(img)] != img and rom[len(img) - 1024:] == b"\xff" * (PARTITION - len(img) + 1024)
    else:
        assert holds(board, img) and set(board.files()) == {"boot.py"}

    board.start()
    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert ("ROMFS image written" if cut == "image" else "ROMFS image unchanged, 1 file(s) written") in out
    assert holds(board, img)
    assert_complete(board.flash, bundle, "romfs")


def test_a_file_deployed_board_moves_to_romfs_and_back(tmp_path, boards, bundle, capsys):
    img = image_of(bundle)
    n_mods = len(manifest_of(bundle)["romfs"]["files"])
    # Flashed when its MicroPython had no ROMFS partition: every file on the filesystem.
    board = boards()
    assert linli(args(board.device, bundle, tmp_path)) == 0
    assert len(modules_on_flash(board)) == n_mods
    board.kill()

    # New MicroPython with a romfs partition table (the filesystem stays): auto moves to ROMFS and
    # the module files go (in /lib they would only take space).
    board.romfs = PARTITION
    board.start()
    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "%d old removed" % n_mods in out and "2 unchanged" in out
    assert holds(board, img) and modules_on_flash(board) == [] and not (board.flash / "lib").exists()
    assert_complete(board.flash, bundle, "romfs")

    # And back when asked: the files again, and the image erased (/rom/lib would shadow /lib).
    board.start()  # /rom mounted again
    assert linli(args(board.device, bundle, tmp_path, "bin-0042", "--deploy", "files")) == 0
    out = capsys.readouterr().out
    assert "old ROMFS image erased, %d file(s) written" % n_mods in out and "(--deploy files)" in out
    assert board.rom.read_bytes()[:4096] == b"\xff" * 4096
    assert_complete(board.flash, bundle, "files")
    before = stamps(board)
    assert linli(args(board.device, bundle, tmp_path, "bin-0042", "--deploy", "files")) == 0
    assert "0 file(s) written" in capsys.readouterr().out and stamps(board) == before


@pytest.mark.parametrize("romfs, why", [
    (None, "the board has no ROMFS partition"),
    (32768, "the board's ROMFS partition (32.0 KiB) is smaller than the image"),
])
def test_without_a_usable_partition_auto_deploys_files_and_romfs_refuses(tmp_path, boards, bundle, capsys, romfs, why):
    board = boards(romfs=romfs)
    assert linli(args(board.device, bundle, tmp_path, "bin-0042", "--deploy", "romfs")) == 1
    err = capsys.readouterr().err
    assert "--deploy romfs, but %s" % why in err
    assert "partition table has a romfs partition" in err and "partitions-4MiB-romfs.csv" in err and "--deploy files" in err
    assert board.files() == {} and not (tmp_path / "keys.db").exists()
    if romfs:
        assert board.rom.read_bytes() == b"\xff" * romfs

    assert linli(args(board.device, bundle, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "files: every file on the filesystem (%s" % why in out and "the node needs more heap" in out
    assert_complete(board.flash, bundle, "files")


def test_a_batch_row_can_choose_the_mode(tmp_path, boards, bundle, capsys):
    a, b = boards("a", romfs=PARTITION), boards("b", romfs=PARTITION)
    plan = tmp_path / "tray.csv"
    plan.write_text("port,board,role,site,node_id,deploy\n"
                    "%s,esp32-devkitc,bin,dong-3,bin-0101,\n"
                    "%s,esp32-devkitc,bin,dong-3,bin-0102,files\n" % (a.device, b.device))
    rc = linli(["flash", "--batch", str(plan), "--bundle", str(bundle), "--gateway", "192.168.4.1",
                "--wifi-ssid", "linli", "--wifi-password", "pw", "--export", str(tmp_path / "keys.txt"),
                "--tries", "2", "--answer-timeout", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("bin-01")}
    assert rows["bin-0101"][3] == "romfs" and rows["bin-0102"][3] == "files"
    assert_complete(a.flash, bundle, "romfs")
    assert_complete(b.flash, bundle, "files")


def test_the_job_reports_the_mode(tmp_path, boards, bundle):
    board = boards(romfs=PARTITION)
    job = jobs.Job(board="esp32-devkitc", role="bin", site="dong-3", node_id="bin-0042", port=board.device,
                   bundle=bundle, net=Network("192.168.4.1", None, "linli", "pw"), tries=2, answer_s=0.5,
                   deploy_mode="romfs")
    res = jobs.run(job, Registry(keystore=tmp_path / "keys.db"), out=lambda s: None)
    d = res.deploy
    assert (d.mode, d.image_bytes, sorted(d.written)) == ("romfs", len(image_of(bundle)), ["boot.py", "main.py"])
    assert json.loads((board.flash / MANIFEST).read_text())["deploy"] == "romfs"


def test_modules_a_cut_file_deploy_left_are_removed_in_romfs_mode(tmp_path, boards, bundle):
    """A files deploy cut short leaves modules that no manifest lists; ROMFS mode still removes them."""
    board = boards(romfs=PARTITION)
    dev = Device(board.device, tries=2, answer_s=0.5).open()

    def cut(i, path):
        if i == 5:
            board.kill()

    with pytest.raises(WriteFailed):
        deploy(dev, bundle, mode="files", on_file=cut)
    dev.close()
    assert len(modules_on_flash(board)) == 5 and not (board.flash / MANIFEST).exists()
    board.start()
    with Device(board.device, tries=2, answer_s=0.5).open() as dev:
        res = deploy(dev, bundle)
    assert res.mode == "romfs" and len(res.removed) == 5
    assert modules_on_flash(board) == [] and holds(board, image_of(bundle))
    assert_complete(board.flash, bundle, "romfs")
