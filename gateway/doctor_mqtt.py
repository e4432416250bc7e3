"""`linli doctor`'s broker checks: the local Mosquitto the nodes use, and the upstream broker.

Each tells apart *connection refused* (nothing listens), a *timeout* (firewall, wrong host),
a *TLS* failure (expired, not yet valid, wrong host name, unknown CA) and a *CONNACK refusal*
(credentials), then checks what the gateway needs to do there: subscribe to the nodes' frames
and publish replies locally (the MQTT 5 PUBACK says whether the ACL allows it), subscribe to its
commands upstream. Paho with ``CallbackAPIVersion.VERSION2`` and short timeouts; the callbacks
only queue what happened.
"""

from __future__ import annotations

import datetime
import queue
import socket
import ssl
import uuid
from typing import Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from linli.doctor import FAIL, PASS, SKIP, WARN, Context, Result
from linli.doctor_checks import no_config

_UNSUPPORTED = 132  # CONNACK reason "Unsupported protocol version"
_AUTH = (134, 135, 138)  # bad user name or password, not authorized, banned


class ProbeError(Exception):
    """A connection attempt failed; ``kind`` is refused, timeout, tls, dns, closed or connack."""

    def __init__(self, kind: str, text: str, code=None):
        super().__init__(text)
        self.kind, self.code = kind, code


class _Client:
    """One short-lived paho client; blocking helpers that wait on what the callbacks queued."""

    def __init__(self, host: str, port: int, *, protocol: int, timeout: float, username=None, password=None, ssl_context=None):
        self.host, self.port, self.timeout = host, port, timeout
        self.q: queue.Queue = queue.Queue()
        c = self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="linli-doctor-%s" % uuid.uuid4().hex[:8], protocol=protocol, reconnect_on_failure=False)
        if username is not None:
            c.username_pw_set(username, password)
        if ssl_context is not None:
            c.tls_set_context(ssl_context)
        c.connect_timeout = timeout
        c.on_connect = lambda cl, u, flags, rc, props: self.q.put(("connect", rc))
        c.on_disconnect = lambda cl, u, flags, rc, props: self.q.put(("disconnect", rc))
        c.on_subscribe = lambda cl, u, mid, rcs, props: self.q.put(("subscribe", rcs))
        c.on_publish = lambda cl, u, mid, rc, props: self.q.put(("publish", rc))

    def _wait(self, kind: str):
        try:
            while True:
                got, value = self.q.get(timeout=self.timeout)
                if got == kind:
                    return value
                if got == "disconnect":
                    raise ProbeError("closed", "the broker closed the connection (%s)" % value)
        except queue.Empty:
            raise ProbeError("timeout", "no %s within %g s" % ({"connect": "CONNACK", "subscribe": "SUBACK", "publish": "PUBACK"}[kind], self.timeout)) from None

    def connect(self) -> None:
        try:
            self.c.connect(self.host, self.port, keepalive=max(5, int(self.timeout * 2)))
        except ConnectionRefusedError:
            raise ProbeError("refused", "connection refused: nothing listens on %s:%d" % (self.host, self.port)) from None
        except ssl.SSLError as exc:
            raise ProbeError("tls", "TLS handshake failed: %s" % (getattr(exc, "verify_message", None) or exc.reason or exc)) from None
        except socket.gaierror as exc:
            raise ProbeError("dns", "cannot resolve %s: %s" % (self.host, exc.strerror)) from None
        except (socket.timeout, TimeoutError):
            raise ProbeError("timeout", "no answer from %s:%d within %g s" % (self.host, self.port, self.timeout)) from None
        except OSError as exc:
            raise ProbeError("refused", "cannot connect to %s:%d: %s" % (self.host, self.port, exc.strerror or exc)) from None
        self.c.loop_start()
        rc = self._wait("connect")
        if rc.is_failure:
            raise ProbeError("connack", "the broker refused the connection: %s" % rc, rc.value)

    def subscribe(self, topic: str) -> list:
        self.c.subscribe(topic, qos=1)
        return self._wait("subscribe")

    def publish(self, topic: str, payload: bytes):
        self.c.publish(topic, payload, qos=1)
        return self._wait("publish")

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def _connect(host, port, *, protocol: str, timeout, **kw) -> tuple[_Client, str]:
    """Connect with MQTT 5 (then 3.1.1 if the broker refuses 5 and ``protocol`` allows it)."""
    order = {"5": ["5"], "3.1.1": ["3.1.1"]}.get(protocol, ["5", "3.1.1"])
    for i, p in enumerate(order):
        cl = _Client(host, port, protocol=mqtt.MQTTv5 if p == "5" else mqtt.MQTTv311, timeout=timeout, **kw)
        try:
            cl.connect()
            return cl, p
        except ProbeError as exc:
            cl.close()
            if i + 1 < len(order) and (exc.code == _UNSUPPORTED or exc.kind == "closed"):
                continue
            raise
    raise AssertionError("unreachable")


def _refusal(name: str, exc: ProbeError, sec_key: str, ctx: Context) -> Result:
    file = ctx.cfg.file
    fixes = {
        "refused": "start the broker (sudo systemctl start mosquitto) or correct %s.host / %s.port in %s" % (sec_key, sec_key, file)
        if sec_key == "local" else "check that the backend's broker is up (ask its operator) and that %s.host / %s.port in %s are right" % (sec_key, sec_key, file),
        "timeout": "check that %s.host is right and that no firewall drops the port (try: nc -vz HOST PORT)" % sec_key,
        "dns": "correct %s.host in %s, or fix the gateway's DNS (resolvectl status)" % (sec_key, file),
        "tls": "check %s.tls, ca_file, cert_file and key_file in %s against the broker's TLS listener" % (sec_key, file),
        "closed": "the broker dropped the connection: check its log for the reason (client certificate, max connections, protocol)",
        "connack": "check %s.username and %s.password in %s against the broker's password file / account" % (sec_key, sec_key, file)
        if exc.code in _AUTH else "check the broker's log for why it refused the connection",
    }
    return Result(name, FAIL, str(exc), fixes[exc.kind], {"kind": exc.kind, "code": exc.code})


def _ssl_context(sec, key: str):
    from linli.uplink import UplinkSettings

    return UplinkSettings.from_config(sec, key=key).ssl_context()


# -- local broker ------------------------------------------------------------------------------
def check_local_broker(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("local-broker", ctx)
    sec = ctx.cfg.local
    if not sec.enabled:
        return [Result("local-broker", SKIP, "the local broker is disabled ([local] enabled = false)")]
    where = "%s:%d" % (sec.host, sec.port)
    try:
        ssl_ctx = _ssl_context(sec, "local") if sec.tls else None
        cl, proto = _connect(sec.host, sec.port, protocol="auto", timeout=ctx.options.timeout, username=sec.username, password=sec.password, ssl_context=ssl_ctx)
    except ProbeError as exc:
        return [_refusal("local-broker", exc, "local", ctx)]
    except Exception as exc:  # ConfigError from a bad CA file
        return [Result("local-broker", FAIL, "%s: %s" % (where, exc), "fix the TLS files named in the message")]
    try:
        from linli.node_mqtt import UP, down_topic

        rcs = cl.subscribe(UP)
        if any(getattr(rc, "is_failure", False) or rc == 128 for rc in rcs):
            return [Result("local-broker", FAIL, "%s refused the subscription to %s (%s)" % (where, UP, rcs[0]),
                           "allow the gateway's user to read linli/node/+/up in the broker's acl_file")]
        if proto != "5":
            return [Result("local-broker", PASS, "%s: connected%s and subscribed to %s (MQTT 3.1.1: publish permission not verifiable)" % (where, " as %s" % sec.username if sec.username else "", UP))]
        rc = cl.publish(down_topic("_doctor"), b"")
        if rc.is_failure:
            return [Result("local-broker", FAIL, "%s: may not publish replies to linli/node/+/down (%s)" % (where, rc),
                           "allow the gateway's user to write linli/node/+/down in the broker's acl_file")]
    except ProbeError as exc:
        return [_refusal("local-broker", exc, "local", ctx)]
    finally:
        cl.close()
    return [Result("local-broker", PASS, "%s: connected%s, may subscribe to %s and publish to linli/node/+/down" % (where, " as %s" % sec.username if sec.username else "", UP))]


# -- upstream broker ---------------------------------------------------------------------------
def _names(cert) -> list[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n) for n in san.get_values_for_type(x509.DNSName)] + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]


def _fetch_cert(host, port, timeout, ctx_client):
    """The server's certificate, fetched without verifying it (to report its dates and names)."""
    from cryptography import x509

    ctx_client.check_hostname = False
    ctx_client.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as s:
        with ctx_client.wrap_socket(s, server_hostname=host) as t:
            return x509.load_der_x509_certificate(t.getpeercert(binary_form=True))


def _days(d: datetime.timedelta) -> str:
    return "%.0f days" % abs(d.total_seconds() / 86400) if abs(d.total_seconds()) >= 86400 else "%.1f h" % abs(d.total_seconds() / 3600)


def check_tls(ctx: Context, sec, key: str) -> tuple[Result, Optional[ssl.SSLContext]]:
    """The upstream TLS handshake: certificate dates, host name, CA; and the client certificate."""
    from linli.errors import ConfigError

    name = "upstream-tls"
    host, port, t = sec.host, sec.port, ctx.options.timeout
    now = datetime.datetime.fromtimestamp(ctx.probes.now(), datetime.timezone.utc)
    try:
        verified = _ssl_context(sec, key)
        cert = _fetch_cert(host, port, t, _ssl_context(sec, key))
    except ConfigError as exc:
        return Result(name, FAIL, str(exc), "fix or replace the file named in the message"), None
    except ConnectionRefusedError:
        return _refusal(name, ProbeError("refused", "connection refused: nothing listens on %s:%d" % (host, port)), key, ctx), None
    except (socket.timeout, TimeoutError):
        return _refusal(name, ProbeError("timeout", "no answer from %s:%d within %g s" % (host, port, t)), key, ctx), None
    except socket.gaierror as exc:
        return _refusal(name, ProbeError("dns", "cannot resolve %s: %s" % (host, exc.strerror)), key, ctx), None
    except (ssl.SSLError, OSError) as exc:
        return _refusal(name, ProbeError("tls", "TLS handshake with %s:%d failed: %s" % (host, port, exc)), key, ctx), None
    after, before = cert.not_valid_after_utc, cert.not_valid_before_utc
    data = {"not_after": after.isoformat(), "not_before": before.isoformat(), "names": _names(cert)}
    if now > after:
        return Result(name, FAIL, "%s:%d's certificate expired on %s (%s ago)" % (host, port, after.date(), _days(now - after)),
                      "have the backend operator renew the broker's certificate (if that date looks wrong, fix this gateway's clock first)", data), None
    if now < before:
        return Result(name, FAIL, "%s:%d's certificate is not valid before %s: this gateway's clock says %s" % (host, port, before.isoformat(), now.isoformat()),
                      "fix the gateway's clock (see the clock check: NTP reachable?)", data), None
    try:
        with socket.create_connection((host, port), timeout=t) as s:
            with verified.wrap_socket(s, server_hostname=host):
                pass
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH / IP_ADDRESS_MISMATCH
            return Result(name, FAIL, "%s:%d's certificate is for %s, not %s" % (host, port, ", ".join(data["names"]) or "?", host),
                          "set %s.host in %s to a name the certificate lists (%s)" % (key, ctx.cfg.file, ", ".join(data["names"][:3])), data), None
        return Result(name, FAIL, "%s:%d's certificate is not trusted: %s" % (host, port, exc.verify_message),
                      "set %s.ca_file in %s to the CA that signed the broker's certificate (ask the backend operator)" % (key, ctx.cfg.file), data), None
    except (ssl.SSLError, OSError) as exc:
        return _refusal(name, ProbeError("tls", "TLS handshake with %s:%d failed: %s" % (host, port, exc)), key, ctx), None
    left = after - now
    data["days_left"] = round(left.total_seconds() / 86400, 1)
    own = _client_cert_days(sec, now)
    if own is not None:
        data["client_cert_days_left"] = round(own, 1)
        if own < 0:
            return Result(name, FAIL, "this gateway's client certificate %s has expired" % sec.cert_file, "install a renewed client certificate at %s.cert_file" % key, data), verified
        if own < ctx.options.cert_warn_days:
            return Result(name, WARN, "this gateway's client certificate %s expires in %.0f days" % (sec.cert_file, own), "renew the client certificate before it expires (%s.cert_file)" % key, data), verified
    if left.total_seconds() < ctx.options.cert_warn_days * 86400:
        return Result(name, WARN, "%s:%d's certificate expires in %s (%s)" % (host, port, _days(left), after.date()), "ask the backend operator to renew the broker's certificate", data), verified
    return Result(name, PASS, "%s:%d: certificate valid for %s, trusted, name matches" % (host, port, _days(left)), data=data), verified


def _client_cert_days(sec, now) -> Optional[float]:
    if not sec.cert_file:
        return None
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(sec.cert_file.read_bytes())
    except (OSError, ValueError):
        return None
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def check_upstream_broker(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("upstream-broker", ctx)
    sec = ctx.cfg.upstream
    if not sec.enabled:
        return [Result("upstream-broker", SKIP, "upstream is disabled ([upstream] enabled = false): events stay in the outbox")]
    out, ssl_ctx = [], None
    if sec.tls:
        tls, ssl_ctx = check_tls(ctx, sec, "upstream")
        out.append(tls)
        if ssl_ctx is None:
            out.append(Result("upstream-broker", SKIP, "not tried: the TLS check failed"))
            return out
    where = "%s:%d" % (sec.host, sec.port)
    try:
        cl, proto = _connect(sec.host, sec.port, protocol=sec.protocol, timeout=ctx.options.timeout, username=sec.username, password=sec.password, ssl_context=ssl_ctx)
    except ProbeError as exc:
        out.append(_refusal("upstream-broker", exc, "upstream", ctx))
        return out
    try:
        topic = "linli/v1/%s/%s/commands/+" % (ctx.cfg.gateway.site, ctx.cfg.gateway.id)
        rcs = cl.subscribe(topic)
        if any(getattr(rc, "is_failure", False) or rc == 128 for rc in rcs):
            out.append(Result("upstream-broker", WARN, "%s: connected, but may not subscribe to %s (%s): backend commands will not arrive" % (where, topic, rcs[0]),
                              "ask the backend operator to allow this gateway to read its commands topic"))
            return out
    except ProbeError as exc:
        out.append(_refusal("upstream-broker", exc, "upstream", ctx))
        return out
    finally:
        cl.close()
    who = " as %s" % sec.username if sec.username else (" with client certificate" if sec.cert_file else "")
    out.append(Result("upstream-broker", PASS, "%s: connected%s (MQTT %s), may subscribe to its commands" % (where, who, proto), data={"protocol": proto}))
    return out
