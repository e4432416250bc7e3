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


def test_a_bundle_imports_on_micropython(bundles, micropython_tools):
    out, _ = bundles
    for role in fwbuild.ROLES:
        env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (SIM, out / role / "lib"))
        code = "import node.runtime, hal, roles.%s; print('ok')" % role
        r = subprocess.run([micropython_tools.micropython, "-c", code], capture_output=True, text=True, env=env, timeout=30)
        assert r.stdout.strip() == "ok", r.stderr


def test_cli_builds_for_the_esp32(tmp_path, micropython_tools):
    from linli.cli import main

    assert main(["firmware", "build", "--role", "bin", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "bin" / "manifest.json").read_text())
    assert m["arch"] == "xtensawin" and fwbuild.verify(tmp_path / "bin") == []
    with pytest.raises(fwbuild.FirmwareBuildError, match="unknown role"):
        fwbuild.modules_for("toaster")
