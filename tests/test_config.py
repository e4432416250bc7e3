"""Config errors name the file, the key and what is allowed."""

import pytest

from linli.config import Config
from linli.errors import ConfigError

BASE = """
[gateway]
site = "xinhua-1"
id = "gw-01"
[privacy]
site_secret = "0123456789abcdef"
"""


def load(extra="", base=BASE):
    return Config.from_text(base + extra, "gateway.toml")


def test_minimal_config_has_defaults():
    cfg = load()
    assert cfg.local.port == 1883 and not cfg.upstream.enabled
    assert cfg.rules_for("bin-1").bin_full_pct == 85.0


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ("[outbox]\nmax_events = 'lots'\n", "outbox.max_events", "positive integer"),
        ("[outbox]\nmax_evnts = 5\n", "outbox.max_evnts", "unknown key"),
        ("[local]\nport = 70000\n", "local.port", "1-65535"),
        ("[upstream]\nprotocol = '4'\n", "upstream.protocol", "'auto', '5' or '3.1.1'"),
        ("[upstream]\nca_file = 'nope.pem'\n", "upstream.ca_file", "does not exist"),
        ("[rules]\nbin_empty_pct = 90\n", "rules.bin_empty_pct", "below rules.bin_full_pct"),
        ("[rules.nodes.'bad id!']\nbin_full_pct = 80\n", "rules.nodes.bad id!", "not a valid node id"),
        ("[rules.nodes.bin-1]\nbin_ful_pct = 80\n", "rules.nodes.bin-1.bin_ful_pct", "unknown key"),
        ("[[serial]]\nport = '/dev/ttyUSB0'\nbaudrate = 1234\n", "serial[0].baudrate", "standard baud rate"),
        ("[[serial]]\nbaudrate = 9600\n", "serial[0].port", "required"),
        ("[whatever]\n", "whatever", "unknown key"),
    ],
)
def test_bad_values_name_the_key(extra, key, words):
    with pytest.raises(ConfigError) as e:
        load(extra)
    assert e.value.key == key
    assert e.value.file == "gateway.toml"
    assert words in str(e.value)


def test_missing_sections_and_bad_toml():
    with pytest.raises(ConfigError, match="gateway: is required"):
        Config.from_text("[privacy]\nsite_secret='0123456789abcdef'\n", "g.toml")
    with pytest.raises(ConfigError, match="privacy.site_secret: must be at least 16"):
        load(base=BASE.replace("0123456789abcdef", "short"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_text("[gateway\n", "g.toml")
    with pytest.raises(ConfigError, match="gateway.site: must be 1-32 chars"):
        load(base=BASE.replace("xinhua-1", "Xinhua Road"))


def test_secrets_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LINLI_SECRET", "from-the-environment!")
    cfg = load(base=BASE.replace('"0123456789abcdef"', '"env:LINLI_SECRET"'))
    assert cfg.site_secret == "from-the-environment!"
    f = tmp_path / "secret"
    f.write_text("from-a-file-0123456\n")
    cfg = load(base=BASE.replace('"0123456789abcdef"', '"file:%s"' % f))
    assert cfg.site_secret == "from-a-file-0123456"
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        load(base=BASE.replace('"0123456789abcdef"', '"env:NOPE"'))


def test_per_node_overrides_inherit_site_rules():
    cfg = load("[rules]\nfire_temp_c = 55\n[rules.nodes.bin-7]\nbin_full_pct = 70\n")
    r = cfg.rules_for("bin-7")
    assert (r.bin_full_pct, r.fire_temp_c) == (70.0, 55.0)
    assert cfg.rules_for("bin-8").bin_full_pct == 85.0


def test_load_from_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        Config.load(tmp_path / "missing.toml")
    p = tmp_path / "gw.toml"
    p.write_text(BASE + "[outbox]\nmax_mb = -1\n")
    with pytest.raises(ConfigError) as e:
        Config.load(p)
    assert e.value.file == str(p) and e.value.key == "outbox.max_mb"
