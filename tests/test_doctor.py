"""`linli doctor` against a healthy gateway setup and against each failure a technician meets."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from linli import doctor
from linli.cli import main
from linli.detector import DEFAULT_MODEL
from linli.doctor import Options, Probes, run_checks
from linli.keystore import KeyStore

from harness.mosquitto import free_port

IMAGES = Path(__file__).parent / "data" / "detector" / "images"
Usage = namedtuple("Usage", "total used free")
GIB = 1024 ** 3


def fake_run(outputs: dict):
    """A ``Probes.run`` answering from ``{command name: (rc, stdout)}``; others are 'not installed'."""

    def run(cmd, timeout):
        if cmd[0] not in outputs:
            return None
        rc, out = outputs[cmd[0]]
        return subprocess.CompletedProcess(cmd, rc, out, "")

    return run


def probes(**kw) -> Probes:
    kw.setdefault("disk_usage", lambda p: Usage(64 * GIB, 32 * GIB, 32 * GIB))
    kw.setdefault("read_text", lambda p: None)  # not a Pi
    kw.setdefault("run", fake_run({"timedatectl": (0, "yes\n")}))
    return Probes(**kw)


def pki(d: Path, *, days_left: float = 365, names=("localhost", "127.0.0.1")) -> dict:
    """A CA and a broker certificate (valid until ``days_left`` from now; negative: expired)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("doctor CA")).issuer_name(name("doctor CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=400))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    san = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
    end = now + datetime.timedelta(days=days_left)
    srv = (x509.CertificateBuilder().subject_name(name(names[0])).issuer_name(name("doctor CA")).public_key(key.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(min(now, end) - datetime.timedelta(days=30))
           .not_valid_after(end)
           .add_extension(x509.SubjectAlternativeName(san), critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
           .sign(ca_key, hashes.SHA256()))
    f = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    f["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    f["cert"].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    f["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return f


def tls_broker(mosquitto_factory, files):
    return mosquitto_factory(extra=["cafile %s" % files["ca"], "certfile %s" % files["cert"], "keyfile %s" % files["key"]])


class Site:
    """A gateway setup on disk: config file, data dir with a key store, brokers."""

    def __init__(self, tmp_path, local, upstream=None, ca=None, extra=""):
        self.dir = tmp_path
        self.data = tmp_path / "data"
        ks = KeyStore(self.data / "keys.db")
        ks.add("bin-0001", "bin", bytes(range(32)))
        ks.close()
        up = "[upstream]\nenabled = false\n"
        if upstream is not None:
            up = '[upstream]\nhost = "127.0.0.1"\nport = %d\ntls = true\nca_file = "%s"\n' % (upstream.port, ca)
        self.text = (
            '[gateway]\nsite = "test-site"\nid = "gw-1"\ndata_dir = "%s"\n'
            '[privacy]\nsite_secret = "0123456789abcdef-site"\n'
            '[local]\nhost = "127.0.0.1"\nport = %d\nusername = "gw"\npassword = "s3cret"\n%s'
            '[[camera]]\nname = "gate"\nurl = "folder:%s"\n%s' % (self.data, local.port, up, IMAGES, extra)
        )
        self.path = tmp_path / "gateway.toml"
        self.path.write_text(self.text)

    def run(self, only=None, **kw):
        opts = kw.pop("options", Options(timeout=3.0, camera_timeout=10.0))
        return {r.check: r for r in run_checks(str(self.path), only=only, options=opts, probes=probes(**kw))}


@pytest.fixture
def local(mosquitto_factory):
    return mosquitto_factory(allow_anonymous=False, users={"gw": "s3cret"})


def test_healthy_setup_passes(tmp_path, local, mosquitto_factory):
    files = pki(tmp_path / "pki")
    upstream = tls_broker(mosquitto_factory, files)
    site = Site(tmp_path, local, upstream, files["ca"], extra='[panel]\nenabled = true\n')
    got = site.run()
    bad = {k: (r.status, r.finding) for k, r in got.items() if r.status not in ("pass", "skip")}
    assert not bad, bad
    for name in ("config", "keystore", "local-broker", "upstream-tls", "upstream-broker", "camera:gate", "model", "disk", "clock", "gpio"):
        assert got[name].status == "pass", (name, got[name])
    assert "1 node(s) registered" in got["keystore"].finding
    assert "as gw" in got["local-broker"].finding and "publish to linli/node/+/down" in got["local-broker"].finding
    assert got["upstream-tls"].data["days_left"] > 300
    assert "SHA-256 matches" in got["model"].finding and got["model"].data["inference_ms"] > 0
    assert "mock pins" in got["gpio"].finding and got["gpio"].data["pins"] == {"status_led": 17, "buzzer": 27, "button": 22}
    assert got["thermal"].status == "skip" and "not a Raspberry Pi" in got["thermal"].finding
    assert doctor.exit_code(list(got.values())) == 0


def test_cli_json_and_exit_codes(tmp_path, local, capsys):
    site = Site(tmp_path, local)
    assert main(["doctor", "--config", str(site.path), "--json", "--only", "config,keystore,local-broker"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["check"] for r in out] == ["config", "keystore", "local-broker"]
    assert all(r["status"] == "pass" and r["finding"] for r in out)
    local.kill()
    assert main(["doctor", "--config", str(site.path), "--only", "local-broker", "--timeout", "2"]) == 1
    text = capsys.readouterr().out
    assert "FAIL  local-broker" in text and "fix: start the broker" in text and "0 pass, 0 warn, 1 fail" in text
    assert main(["doctor", "--config", str(site.path), "--only", "nonsense"]) == 2
    assert "unknown check(s) nonsense" in capsys.readouterr().err


def test_broker_down(tmp_path, local):
    site = Site(tmp_path, local)
    local.kill()
    r = site.run(only=["local-broker"])["local-broker"]
    assert r.status == "fail" and r.data["kind"] == "refused"
    assert r.finding == "connection refused: nothing listens on 127.0.0.1:%d" % local.port, r.finding
    assert "sudo systemctl start mosquitto" in r.fix and "local.port" in r.fix


def test_wrong_password(tmp_path, local):
    site = Site(tmp_path, local)
    site.path.write_text(site.text.replace('password = "s3cret"', 'password = "wrong"'))
    r = site.run(only=["local-broker"])["local-broker"]
    assert r.status == "fail" and r.data["kind"] == "connack"
    assert "refused the connection" in r.finding and "authorized" in r.finding
    assert "local.username and local.password" in r.fix and str(site.path) in r.fix


def test_local_acl_forbids_replies(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(allow_anonymous=False, users={"gw": "s3cret"}, acl="user gw\ntopic read linli/node/+/up\n")
    r = Site(tmp_path, broker).run(only=["local-broker"])["local-broker"]
    assert r.status == "fail" and "may not publish replies" in r.finding and "acl_file" in r.fix


def test_timeout_is_not_refusal(tmp_path, local):
    import socket

    # A listener that accepts TCP and never answers MQTT: a CONNACK timeout, not a refusal.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    try:
        site = Site(tmp_path, local)
        site.path.write_text(site.text.replace("port = %d" % local.port, "port = %d" % silent.getsockname()[1]))
        r = site.run(only=["local-broker"], options=Options(timeout=1.0))["local-broker"]
    finally:
        silent.close()
    assert r.status == "fail" and r.data["kind"] == "timeout" and "no CONNACK within 1 s" in r.finding


def test_expired_certificate(tmp_path, local, mosquitto_factory):
    files = pki(tmp_path / "pki", days_left=-3)
    upstream = tls_broker(mosquitto_factory, files)
    got = Site(tmp_path, local, upstream, files["ca"]).run(only=["upstream-broker"])
    r = got["upstream-tls"]
    assert r.status == "fail" and "certificate expired on" in r.finding and "ago" in r.finding
    assert "renew the broker's certificate" in r.fix
    assert got["upstream-broker"].status == "skip"
    # A gateway whose clock is behind sees a certificate that is not valid yet: the fix is the clock.
    r = Site(tmp_path, local, upstream, files["ca"]).run(only=["upstream-broker"], now=lambda: time.time() - 40 * 86400)["upstream-tls"]
    assert r.status == "fail" and "is not valid before" in r.finding and "clock" in r.fix


def test_certificate_expiring_soon_and_wrong_name(tmp_path, local, mosquitto_factory):
    files = pki(tmp_path / "soon", days_left=10)
    r = Site(tmp_path, local, tls_broker(mosquitto_factory, files), files["ca"]).run(only=["upstream-broker"])
    assert r["upstream-tls"].status == "warn" and "expires in" in r["upstream-tls"].finding
    assert r["upstream-broker"].status == "pass"
    files = pki(tmp_path / "name", names=("mqtt.example.com",))
    r = Site(tmp_path, local, tls_broker(mosquitto_factory, files), files["ca"]).run(only=["upstream-broker"])["upstream-tls"]
    assert r.status == "fail" and "is for mqtt.example.com, not 127.0.0.1" in r.finding and "upstream.host" in r.fix


def test_camera_dead(tmp_path, local):
    site = Site(tmp_path, local)
    url = "http://127.0.0.1:%d/snapshot.jpg" % free_port()
    rtsp = "rtsp://admin:hunter2@127.0.0.1:%d/stream1" % free_port()
    site.path.write_text(site.text.replace('url = "folder:%s"' % IMAGES, 'url = "%s"' % url) + '[[camera]]\nname = "east"\nurl = "%s"\n' % rtsp)
    got = site.run(only=["camera"])
    r = got["camera:gate"]
    assert r.status == "fail" and url in r.finding and "refused" in r.finding.lower()
    assert "camera[0].url" in r.fix
    r = got["camera:east"]
    assert r.status == "fail" and "cannot open camera" in r.finding and "camera[1].url" in r.fix
    assert "hunter2" not in json.dumps(r.as_dict()) and "rtsp://admin:***@127.0.0.1" in r.finding


def test_camera_reported_by_the_running_gateway(tmp_path, local):
    site = Site(tmp_path, local)
    (site.data / "status").mkdir(parents=True)
    status = {"updated": time.time(), "cameras": {"gate": {"state": "degraded", "fps": 0.0, "decode_ms": None, "inference_ms": None,
                                                            "last_frame_age_s": 312.0, "reconnects": 4, "last_error": "cannot open camera rtsp://x"}}}
    (site.data / "status" / "cameras.json").write_text(json.dumps(status))
    r = site.run(only=["camera"])["camera:gate"]
    assert r.status == "fail" and r.data["source"] == "gateway"
    assert "degraded in the running gateway: cannot open camera rtsp://x" in r.finding and "4 reconnect(s)" in r.finding
    status["updated"] -= 3600  # stale: the gateway is not running, the doctor opens the camera itself
    (site.data / "status" / "cameras.json").write_text(json.dumps(status))
    r = site.run(only=["camera"])["camera:gate"]
    assert r.status == "pass" and r.data["source"] == "doctor"


def test_model_corrupt(tmp_path, local):
    bad = tmp_path / "models" / DEFAULT_MODEL.name
    bad.parent.mkdir()
    bad.write_bytes(DEFAULT_MODEL.read_bytes()[: 100_000])
    site = Site(tmp_path, local, extra='[vision]\nmodel = "%s"\n' % bad)
    r = site.run(only=["model"])["model"]
    assert r.status == "fail" and "does not match the manifest" in r.finding
    assert r.fix.startswith("re-install the model file %s" % bad)
    bad.unlink()
    r = site.run(only=["model"])["model"]
    assert r.status == "fail" and "is missing" in r.finding


def test_disk_nearly_full(tmp_path, local):
    site = Site(tmp_path, local)
    r = site.run(only=["disk"], disk_usage=lambda p: Usage(32 * GIB, 32 * GIB - 150 * 2**20, 150 * 2**20))["disk"]
    assert r.status == "fail" and "0.15 GiB free" in r.finding and "below 200 MiB" in r.finding and "free space" in r.fix
    r = site.run(only=["disk"], disk_usage=lambda p: Usage(32 * GIB, 31 * GIB, GIB - 2**20))["disk"]
    assert r.status == "warn"
    # Thresholds are flags.
    r = site.run(only=["disk"], disk_usage=lambda p: Usage(32 * GIB, 31 * GIB, GIB - 2**20), options=Options(disk_warn_gib=0.5, disk_warn_pct=1))["disk"]
    assert r.status == "pass"


def test_hot_throttled_pi(tmp_path, local):
    files = {"/proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\0", "/sys/class/thermal/thermal_zone0/temp": "83500\n"}
    got = Site(tmp_path, local).run(only=["thermal"], read_text=files.get, run=fake_run({"vcgencmd": (0, "throttled=0x50005\n")}))
    assert got["thermal"].status == "fail" and "CPU at 83.5 °C" in got["thermal"].finding and "heatsink" in got["thermal"].fix
    t = got["throttling"]
    assert t.status == "fail" and t.finding.startswith("now: under-voltage, throttled") and "supply" in t.fix
    files["/sys/class/thermal/thermal_zone0/temp"] = "52000\n"
    got = Site(tmp_path, local).run(only=["thermal"], read_text=files.get, run=fake_run({"vcgencmd": (0, "throttled=0x50000\n")}))
    assert got["thermal"].status == "pass" and got["throttling"].status == "warn" and "since boot: under-voltage" in got["throttling"].finding


def test_clock(tmp_path, local):
    site = Site(tmp_path, local)
    assert site.run(only=["clock"], run=fake_run({"timedatectl": (0, "no\n")}))["clock"].status == "warn"
    r = site.run(only=["clock"], run=fake_run({"chronyc": (0, "Reference ID : 0\nLeap status     : Not synchronised\n")}))["clock"]
    assert r.status == "warn" and "Not synchronised" in r.finding
    r = site.run(only=["clock"], run=fake_run({}))["clock"]
    assert r.status == "skip" and "timedatectl not installed" in r.finding
    r = site.run(only=["clock"], now=lambda: 86400.0 * 200)["clock"]
    assert r.status == "fail" and "1970" in r.finding


def test_keystore_corrupt_and_config_error(tmp_path, local):
    site = Site(tmp_path, local)
    (site.data / "keys.db").write_bytes(b"this is not a database" * 100)
    r = site.run(only=["keystore"])["keystore"]
    assert r.status == "fail" and "corrupt" in r.finding and "re-provision" in r.fix
    site.path.write_text(site.text.replace('[local]\n', '[local]\nkeepalive = 1\n'))
    got = site.run()
    assert got["config"].status == "fail" and "local.keepalive: must be 5..3600 seconds" in got["config"].finding
    assert got["local-broker"].status == "skip" and "config did not load" in got["local-broker"].finding


def test_serial_ports(tmp_path, local, serial_pty):
    site = Site(tmp_path, local)
    text = site.text + '[[serial]]\nport = "%s"\nname = "radio"\n[[serial]]\nport = "/dev/ttyNOPE9"\n' % serial_pty.device
    site.path.write_text(text)
    got = site.run(only=["serial"])
    assert got["serial:radio"].status == "pass" and "opens at 115200 baud" in got["serial:radio"].finding
    nope = got["serial:/dev/ttyNOPE9"]
    assert nope.status == "fail" and "missing" in nope.finding and "serial[1].port" in nope.fix
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'rb', buffering=0); print('open', flush=True); time.sleep(60)", serial_pty.device], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"open\n"
        r = site.run(only=["serial"])["serial:radio"]
    finally:
        holder.kill()
        holder.wait()
    assert r.status == "fail" and "busy: held by pid %d" % holder.pid in r.finding


def test_outbox_backlog(tmp_path, local):
    import asyncio

    from linli.config import Config
    from linli.events import new_event
    from linli.outbox import Outbox

    site = Site(tmp_path, local)
    cfg = Config.load(site.path)

    async def fill():
        ob = await Outbox.from_config(cfg)
        await ob.add([new_event("gateway.started", data={"version": "x", "config_digest": "0" * 64})])
        await ob.close()

    asyncio.run(fill())
    r = site.run(only=["outbox"])["outbox"]
    assert r.status == "pass" and r.data["pending"] == 1
    r = site.run(only=["outbox"], now=lambda: time.time() + 3 * 3600)["outbox"]
    assert r.status == "warn" and "1 event(s) waiting upstream, the oldest for 3.0 h" in r.finding


def test_a_crashing_check_is_reported_and_the_rest_run(tmp_path, local):
    site = Site(tmp_path, local)

    def boom(path):
        raise RuntimeError("statvfs exploded")

    got = site.run(only=["disk", "config"], disk_usage=boom)
    assert got["disk"].status == "fail" and "RuntimeError: statvfs exploded" in got["disk"].finding
    assert got["config"].status == "pass"
