"""`linli firmware build`: per-role bundles with exactly the modules the role needs, and a manifest."""

import json
import os
import subprocess

import pytest

from linli import fwbuild
from linli.simboard.build import SIM


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, micropython_tools):
    out = tmp_path_factory.mktemp("bundles")
    return out, {role: fwbuild.build(role, out / role, arch=None) for role in fwbuild.ROLES}


def test_each_role_gets_its_own_modules(bundles):
    out, manifests = bundles
    paths = {role: {f["path"] for f in m["files"]} for role, m in manifests.items()}
    assert "lib/roles/bin.mpy" in paths["bin"] and "lib/roles/streetlight.mpy" not in paths["bin"]
    assert "lib/roles/petscan.mpy" in paths["petscan"] and "lib/drivers/mfrc522.mpy" not in paths["petscan"]
    assert "lib/drivers/bh1750.mpy" in paths["streetlight"] and "lib/drivers/gm65.mpy" not in paths["streetlight"]
    for p in paths.values():
        assert {"boot.py", "main.py", "lib/link/frame.mpy", "lib/node/runtime.mpy", "lib/hal.mpy"} <= p
    assert "lib/drivers/errors.mpy" in paths["bin"]  # reached only by "from .errors import ..."


def test_manifest_hashes_match_and_tampering_is_found(bundles):
    out, manifests = bundles
    assert fwbuild.verify(out / "bin") == []
    on_disk = json.loads((out / "bin" / "manifest.json").read_text())
    assert on_disk == manifests["bin"] and on_disk["version"] == "0.1.0"
    victim = out / "bin" / "lib" / "link" / "crypto.mpy"
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    try:
        assert fwbuild.verify(out / "bin") == ["lib/link/crypto.mpy"]
    finally:
        victim.write_bytes(data)


def test_every_module_of_a_bundle_imports_from_the_bundle_alone(bundles, micropython_tools):
    """Nothing a module imports at load time is missing (relative imports included: the bin's
    DS18B20 driver once came without drivers/errors.mpy)."""
    out, manifests = bundles
    for role in fwbuild.ROLES:
        mods = [f["path"][4:-4].replace("/", ".").removesuffix(".__init__")
                for f in manifests[role]["files"] if f["path"].startswith("lib/")]
        env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (SIM, out / role / "lib"))
        code = "for m in %r:\n    __import__(m)\nprint('ok')" % sorted(mods)
        r = subprocess.run([micropython_tools.micropython, "-c", code], capture_output=True, text=True, env=env, timeout=30)
        assert r.stdout.strip() == "ok", "%s: %s" % (role, r.stderr)


def test_cli_builds_for_the_esp32(tmp_path, micropython_tools):
    from linli.cli import main

    assert main(["firmware", "build", "--role", "bin", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "bin" / "manifest.json").read_text())
    assert m["arch"] == "xtensawin" and fwbuild.verify(tmp_path / "bin") == []
    with pytest.raises(fwbuild.FirmwareBuildError, match="unknown role"):
        fwbuild.modules_for("toaster")


_ROM_LIST = """
import vfs, sys, os, hashlib, binascii
buf = open(sys.argv[1], 'rb').read()
vfs.mount(vfs.VfsRom(buf), '/rom')
sys.path[:0] = ['/rom/lib']
def walk(d):
    for name, kind, *_ in os.ilistdir(d):
        p = d + '/' + name
        if kind == 0x4000:
            walk(p)
        else:
            h = hashlib.sha256(open(p, 'rb').read()).digest()
            print(p[5:], binascii.hexlify(h).decode())
walk('/rom')
mod = __import__('roles.' + sys.argv[2])
print('imported', getattr(mod, sys.argv[2]).__file__)
"""


def test_the_romfs_image_holds_exactly_the_role_modules_and_they_import_from_it(bundles, micropython_tools, tmp_path):
    """The image MicroPython mounts: every lib/ module of the bundle, byte for byte, and no more;
    the role imports from /rom/lib (so its .mpy run in place on a board)."""
    out, manifests = bundles
    script = tmp_path / "romlist.py"
    script.write_text(_ROM_LIST)
    for role, m in manifests.items():
        rom = m["romfs"]
        image = (out / role / rom["path"]).read_bytes()
        assert image[:3] == b"\xd2\xcd\x31" and rom["size"] == len(image)
        libs = {f["path"]: f["sha256"] for f in m["files"] if f["path"].startswith("lib/")}
        assert rom["files"] == sorted(libs)
        env = dict(os.environ, MICROPYPATH=".frozen")
        r = subprocess.run([micropython_tools.micropython, str(script), str(out / role / rom["path"]), role],
                           capture_output=True, text=True, env=env, timeout=30)
        lines = r.stdout.split("\n")
        assert lines[-2] == "imported /rom/lib/roles/%s.mpy" % role, r.stdout + r.stderr
        assert dict(x.split() for x in lines[:-2]) == libs


def test_a_damaged_romfs_image_is_found(bundles):
    out, manifests = bundles
    img = out / "streetlight" / "romfs.img"
    data = img.read_bytes()
    img.write_bytes(data[:100] + bytes([data[100] ^ 0x10]) + data[101:])
    try:
        assert fwbuild.verify(out / "streetlight") == ["romfs.img"]
    finally:
        img.write_bytes(data)
    assert fwbuild.verify(out / "streetlight") == []
