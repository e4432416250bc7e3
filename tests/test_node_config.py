"""node.config on the unix port: defaults in code, config.json + secrets.json, one validate()
that names the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node_peer import node_config

pytestmark = pytest.mark.micropython

ROOT = Path(__file__).resolve().parents[1]

# Each case: the two files' contents (None: absent) -> "ok" or the exact ValueError message.
GOOD = node_config()
CASES = [
    ("good", {}, GOOD, "ok"),
    ("report_s_str", {"report_s": "x"}, GOOD, "config.json: report_s must be an int >= 5, got 'x'"),
    ("report_s_small", {"report_s": 4}, GOOD, "config.json: report_s must be an int >= 5, got 4"),
    ("bool_is_not_int", {"queue_frames": True}, GOOD, "config.json: queue_frames must be an int from 8 to 1024, got True"),
    ("range", {}, dict(GOOD, broker_port=70000), "secrets.json: broker_port must be an int from 1 to 65535, got 70000"),
    ("secrets_win", {"health_s": 60}, GOOD, "ok"),
    ("unknown", {"reprot_s": 60}, GOOD, "config.json: unknown key reprot_s"),
    ("secret_in_config", {"key": "00" * 32}, GOOD, "config.json: key belongs in secrets.json"),
    ("no_node_id", {}, {k: v for k, v in GOOD.items() if k != "node_id"},
     "secrets.json: node_id is required (1..16 chars of [A-Za-z0-9._-])"),
    ("bad_node_id", {}, dict(GOOD, node_id="bin 01"), "secrets.json: node_id must be 1..16 chars of [A-Za-z0-9._-], got 'bin 01'"),
    ("bad_key", {}, dict(GOOD, key="abc"), "secrets.json: key must be 64 hex digits (a 32-byte key), got 'abc'"),
    ("bad_role", {}, dict(GOOD, role="lamp"), "secrets.json: role must be one of bin, streetlight, petscan, got 'lamp'"),
    ("mqtt_needs_broker", {}, {k: v for k, v in GOOD.items() if k != "broker_host"},
     "secrets.json: broker_host is required (a string)"),
    ("serial_needs_no_wifi", {}, {"node_id": "lamp-3", "role": "streetlight", "key": "ab" * 32,
                                  "transport": "serial", "uart_id": 2, "uart_tx": 17, "uart_rx": 16}, "ok"),
    ("bad_pin", {}, dict(GOOD, transport="serial", uart_tx="17"), "secrets.json: uart_tx must be a pin number or null, got '17'"),
    ("role_section", {"bin": {"full_pct": 85}}, GOOD, "ok"),
    ("role_section_not_object", {"bin": 85}, GOOD, "config.json: bin must be an object, got 85"),
    ("comment", {"_about": "tunables"}, GOOD, "ok"),
    ("not_json", "{report_s: 5", GOOD, "config.json: not valid JSON"),
    ("not_object", [1], GOOD, "config.json: must hold a JSON object"),
    ("no_files", None, None, "secrets.json: node_id is required (1..16 chars of [A-Za-z0-9._-])"),
]

CODE = """
import json, os
from node import config
for name in sorted(os.listdir("cases")):
    for f in ("config.json", "secrets.json"):
        try:
            os.remove(f)
        except OSError:
            pass
    d = "cases/" + name
    for f in [f for f in os.listdir(d) if f != ".keep"]:
        with open(d + "/" + f) as src, open(f, "w") as dst:
            dst.write(src.read())
    try:
        cfg = config.load()
        print(json.dumps([name, "ok", cfg]))
    except ValueError as e:
        print(json.dumps([name, str(e), None]))
"""


def _files():
    files = {}
    for name, conf, secrets, _ in CASES:
        files["cases/%s/.keep" % name] = ""
        if conf is not None:
            files["cases/%s/config.json" % name] = conf if isinstance(conf, str) else json.dumps(conf)
        if secrets is not None:
            files["cases/%s/secrets.json" % name] = json.dumps(secrets)
    return files


@pytest.fixture(scope="module")
def results(tmp_path_factory, micropython_tools, firmware_build):
    from harness.micropython import MicroPython

    board = MicroPython(tmp_path_factory.mktemp("cfg"), micropython_tools, firmware_build)
    try:
        r = board.run(CODE, files=_files(), timeout=20).expect_ok()
    finally:
        board.close()
    return {name: (msg, cfg) for name, msg, cfg in map(json.loads, r.stdout.splitlines())}


@pytest.mark.parametrize("name,expected", [(c[0], c[3]) for c in CASES])
def test_validate_names_the_file_and_the_key(results, name, expected):
    msg, _ = results[name]
    if expected.endswith("not valid JSON"):
        assert msg.startswith(expected)
    else:
        assert msg == expected


def test_defaults_filled_in(results):
    _, cfg = results["good"]
    assert cfg["report_s"] == 300 and cfg["transport"] == "mqtt" and cfg["broker_user"] == "bin-01"
    assert cfg["uart_tx"] is None and cfg["queue_bytes"] == 16384
    assert results["secrets_win"][1]["health_s"] == GOOD["health_s"]  # secrets.json is read last
    _, cfg = results["serial_needs_no_wifi"]
    assert cfg["uart_id"] == 2 and cfg["uart_tx"] == 17 and "wifi_ssid" not in cfg


def test_shipped_config_json_matches_the_defaults_in_code(mpy):
    """firmware/config.json documents the defaults; it must say what the code does."""
    shipped = json.loads((ROOT / "firmware" / "config.json").read_text())
    r = mpy.run("import json\nfrom node import config\nprint(json.dumps(config.defaults()))").expect_ok()
    defaults = json.loads(r.stdout)
    tunables = {k: v for k, v in shipped.items() if not k.startswith("_")}
    assert tunables == {k: v for k, v in defaults.items() if k in tunables}
    assert set(defaults) - set(tunables) == {"wifi_password", "broker_password"}
