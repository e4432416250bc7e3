"""The node key store, shared between the running gateway and `linli flash` in another process."""

import os

import pytest

from linli.errors import KeyStoreError
from linli.keystore import KeyStore


def test_a_node_registered_by_another_process_is_seen_after_recheck(tmp_path):
    path = tmp_path / "keys.db"
    gateway = KeyStore(path, recheck_s=0.0)  # the gateway's store; 0: look for changes on every lookup
    assert gateway.lookup("bin-0009") is None  # an unknown node reports first: cached as unknown
    flash = KeyStore(path)  # linli flash, another process, registers it
    flash.add("bin-0009", "bin", b"\x01" * 32)
    keys, role = gateway.lookup("bin-0009")
    assert role.label == "bin"
    old = keys
    flash.add("bin-0009", "bin", b"\x02" * 32, replace=True)  # the board was replaced: new key
    assert gateway.lookup("bin-0009")[0] != old
    flash.revoke("bin-0009")
    assert gateway.lookup("bin-0009") is None


def test_without_recheck_the_cache_answers(tmp_path):
    path = tmp_path / "keys.db"
    gateway = KeyStore(path, recheck_s=3600.0)
    assert gateway.lookup("bin-0009") is None
    KeyStore(path).add("bin-0009", "bin", b"\x01" * 32)
    assert gateway.lookup("bin-0009") is None  # cached until the next recheck (what recheck_s bounds)


def test_file_is_owner_only_and_a_corrupt_one_is_named(tmp_path):
    path = tmp_path / "keys.db"
    KeyStore(path).close()
    assert os.stat(path).st_mode & 0o077 == 0
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(KeyStoreError, match="bad.db"):
        KeyStore(bad)


def test_import_file_names_the_bad_line(tmp_path):
    ks = KeyStore(tmp_path / "keys.db")
    f = tmp_path / "keys.txt"
    f.write_text(KeyStore.export_lines([("bin-1", "bin", b"\x01" * 32)]) + '{"node": "x"}\n')
    with pytest.raises(KeyStoreError, match="line 2"):
        ks.import_file(f)
