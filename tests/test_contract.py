"""The upstream contract: CloudEvents as a backend parses them, the schemas, the AsyncAPI document,
the canonical JSON and hash chain, and `linli verify`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from linli import contract
from linli.contract import GENESIS, Contract, canonical_json, event_hash, example_event, generated_docs
from linli.events import EVENT_TYPES, InvalidEventData, new_event
from linli.outbox import Outbox
from linli.verify import verify_lines

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REQUIRE_ALL = bool(os.environ.get("LINLI_REQUIRE_ALL"))

def _skip_or_fail(why: str):
    if REQUIRE_ALL:
        pytest.fail(why + " (LINLI_REQUIRE_ALL is set)", pytrace=False)
    pytest.skip(why)


def _need(module: str):
    """Import a test dependency (a backend's tools: jsonschema, cloudevents) or skip/fail."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        _skip_or_fail("%s is not installed: pip install jsonschema cloudevents (%s)" % (module, exc))


def _validator(type_: str):
    jsonschema = _need("jsonschema")
    schema = json.loads((DOCS / "schemas" / ("%s.json" % type_)).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# -- generated files are current -----------------------------------------------------------------
def test_generated_docs_are_current():
    stale = [rel for rel, text in generated_docs().items() if not (DOCS / rel).exists() or (DOCS / rel).read_text(encoding="utf-8") != text]
    assert not stale, "regenerate with `python -m linli.contract --write docs`: %s" % ", ".join(stale)


def test_every_type_is_documented_for_backends():
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    missing = [t for t in EVENT_TYPES if "`%s`" % t not in text]
    assert not missing, "docs/events.md does not list: %s" % ", ".join(missing)


# -- schemas ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_catalog_example_is_valid(type_):
    _validator(type_).validate(example_event(type_))


def test_schema_rejects_what_a_backend_relies_on():
    ce = example_event("bin.deposit")
    ce["data"] = dict(ce["data"], category="glass")
    with pytest.raises(_need("jsonschema").ValidationError):
        _validator("bin.deposit").validate(ce)
    ce = example_event("streetlight.lamp_fault")
    del ce["data"]["fault"]
    with pytest.raises(_need("jsonschema").ValidationError):
        _validator("streetlight.lamp_fault").validate(ce)
    ce = example_event("bin.full")
    ce["type"] = "linli.bin.emptied"
    with pytest.raises(_need("jsonschema").ValidationError):
        _validator("bin.full").validate(ce)


def test_telemetry_schema_is_permissive():
    ce = example_event("node.telemetry")
    ce["data"]["readings"]["new_sensor"] = 1.5
    ce["data"]["extra"] = {"anything": [1, 2]}
    _validator("node.telemetry").validate(ce)


def _emit(tmp_path, events, **kw) -> list[bytes]:
    async def go():
        ob = await Outbox.open(tmp_path / "gw.db", Contract("xinhua-1", "gw-01"), **kw)
        await ob.add(events)
        rows = await ob.read(0, 10_000)
        await ob.close()
        return rows

    return asyncio.run(go())


def test_emitted_events_validate_and_parse_with_the_cloudevents_sdk(tmp_path):
    """What the outbox stores (and the uplink publishes) is what a backend's SDK accepts."""
    sdk = _need("cloudevents.core.formats.json")
    events = []
    for type_, et in EVENT_TYPES.items():
        src = "camera/%s" % et.example["camera"] if "camera" in et.example else None
        node = None if src or type_.startswith("gateway.") else "bin-0001"
        events.append(new_event(type_, node=node, source=src, data=et.example))
    rows = _emit(tmp_path, events)
    assert [r.type for r in rows] == list(EVENT_TYPES)
    fmt = sdk.JSONFormat()
    for row, ev in zip(rows, events):
        ce = json.loads(row.payload)
        _validator(row.type).validate(ce)
        parsed = fmt.read(None, row.payload)
        assert parsed.get_id() == ev.id
        assert parsed.get_type() == "linli." + ev.type
        assert parsed.get_source() == "/linli/xinhua-1/gw-01/" + ev.source
        assert parsed.get_subject() == ev.subject
        assert parsed.get_extension("seq") == row.seq
        assert parsed.get_extension("hash") == ce["hash"]
        assert parsed.get_data() == ev.data
        assert row.topic == "linli/v1/xinhua-1/gw-01/events/%s" % ev.type
        assert row.payload == canonical_json(ce)  # published bytes are the canonical form


# -- the AsyncAPI document -------------------------------------------------------------------------
def _asyncapi_validator():
    node = shutil.which("node")
    if not node:
        _skip_or_fail("node not found: the AsyncAPI document is checked with @asyncapi/parser on Node 20")
    ci = ROOT / ".ci" / "asyncapi"
    if not (ci / "node_modules" / "@asyncapi" / "parser").is_dir():
        npm = shutil.which("npm")
        if not npm:
            _skip_or_fail("npm not found")
        env = dict(os.environ, SCARF_ANALYTICS="false")
        r = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ci, capture_output=True, text=True, timeout=600, env=env)
        if r.returncode != 0:
            _skip_or_fail("npm ci in .ci/asyncapi failed:\n" + r.stderr[-2000:])
    return node, ci


def test_asyncapi_document_is_valid_for_the_official_parser(tmp_path):
    node, ci = _asyncapi_validator()
    r = subprocess.run([node, "validate.mjs", str(DOCS / "asyncapi.yaml")], cwd=ci, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid AsyncAPI 3." in r.stdout
    # ... and the validator does reject a broken document.
    bad = tmp_path / "bad.yaml"
    bad.write_text((DOCS / "asyncapi.yaml").read_text().replace('action: "send"', 'action: "shout"', 1))
    r = subprocess.run([node, "validate.mjs", str(bad)], cwd=ci, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr


def test_asyncapi_covers_every_type():
    doc = contract.asyncapi_document()
    addresses = {c["address"] for c in doc["channels"].values()}
    for t in EVENT_TYPES:
        assert "linli/v1/{site}/{gateway}/events/%s" % t in addresses
    assert "linli/v1/{site}/{gateway}/status" in addresses
    assert "linli/v1/{site}/{gateway}/nodes/{node}/state" in addresses


# -- canonical JSON and the chain -----------------------------------------------------------------
@pytest.mark.parametrize(
    "value, text",
    [
        # RFC 8785 appendix B number samples (IEEE 754 -> ECMAScript text).
        (0.0, "0"), (-0.0, "0"), (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"), (1e21, "1e+21"), (999999999999999900000.0, "999999999999999900000"),
        (1e-7, "1e-7"), (0.000001, "0.000001"), (333333333.3333333, "333333333.3333333"), (1.0, "1"), (-1.5, "-1.5"),
        ({"b": 1, "a": "\u20ac\n", "\U0001f600": 0, "\ufb01": 1}, '{"a":"\u20ac\\n","b":1,"\U0001f600":0,"\ufb01":1}'),
    ],
)
def test_canonical_json_follows_rfc8785(value, text):
    assert canonical_json(value) == text.encode("utf-8")


def test_nan_is_rejected_when_the_event_is_made():
    with pytest.raises(InvalidEventData, match="data.readings.t"):
        new_event("node.telemetry", node="n1", data={"readings": {"t": float("inf")}})
    with pytest.raises(InvalidEventData, match="key 1"):
        new_event("node.telemetry", node="n1", data={"readings": {1: 2}})


def _chain(n, key=None, start=1, prevhash=GENESIS):
    c, out = Contract("s", "g"), []
    for i in range(start, start + n):
        ce = c.cloudevent(new_event("bin.tipped", node="b%d" % (i % 3), data={"tilt_deg": 10.5 + i}), seq=i, chain="ab" * 8, prevhash=prevhash, key=key)
        prevhash = ce["hash"]
        out.append(ce)
    return out


def test_verify_accepts_duplicates_and_any_order():
    evs = _chain(20)
    lines = [json.dumps(e) for e in evs] + [json.dumps(evs[3]), json.dumps(evs[17])]
    lines.reverse()
    r = verify_lines(lines)
    assert r.ok, r.to_dict()
    [c] = r.chains
    assert (c.first, c.last, c.events, c.duplicates) == (1, 20, 20, 2)


def test_verify_reports_gaps_alterations_and_conflicts():
    evs = _chain(10)
    altered = dict(evs[4], data={"tilt_deg": 99})  # content changed, hash kept
    rehashed = dict(evs[6], data={"tilt_deg": 99})
    rehashed["hash"] = event_hash(rehashed)  # consistent on its own, but the next link breaks
    conflict = dict(_chain(1, start=9, prevhash=evs[7]["hash"])[0])
    lines = [json.dumps(e) for i, e in enumerate(evs) if i not in (2, 3, 4, 6)]
    lines += [json.dumps(altered), json.dumps(rehashed), json.dumps(conflict)]
    r = verify_lines(lines)
    assert not r.ok
    [c] = r.chains
    assert c.gaps == [(3, 4)]
    why = dict(c.altered)
    assert "does not match its hash" in why[5]
    assert "prevhash does not match" in why[8]
    assert "two different events" in why[9]


def test_verify_keyed_chain(tmp_path):
    evs = _chain(5, key=b"k" * 32)
    lines = [json.dumps(e) for e in evs]
    r = verify_lines(lines)
    assert r.ok and r.chains[0].unchecked_hashes == 5
    assert verify_lines(lines, key=b"k" * 32).ok
    assert not verify_lines(lines, key=b"wrong").ok
    # Without the key nobody can forge a keyed chain: a re-hashed event fails with the key.
    forged = dict(evs[2], data={"tilt_deg": 0})
    forged["hash"] = event_hash(forged, b"guess")
    lines[2] = json.dumps(forged)
    assert not verify_lines(lines, key=b"k" * 32).ok


def test_verify_cli(tmp_path):
    f = tmp_path / "capture.jsonl"
    evs = _chain(5)
    f.write_text("\n".join(json.dumps(e) for e in evs[:2] + evs[3:]) + "\nnot json\n")
    import argparse

    from linli import verify

    p = argparse.ArgumentParser()
    verify.register(p.add_subparsers())
    args = p.parse_args(["verify", str(f), "--json"])
    assert args.handler(args) == 1
    f.write_text("\n".join(json.dumps(e) for e in evs) + "\n")
    args = p.parse_args(["verify", str(f)])
    assert args.handler(args) == 0
    args = p.parse_args(["verify", str(tmp_path / "missing")])
    assert args.handler(args) == 2


@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_fast_encoding_is_the_canonical_json(key):
    # The outbox's per-event template (encode_fast) must write exactly what the careful
    # RFC 8785 encoder writes, or say it cannot (None) and leave the event to encode().
    c = Contract("xinhua-1", "gw-01")
    datas = [dict(et.example) for et in EVENT_TYPES.values()] + [
        {"role": "bin", "readings": {"fill": 42, "temp": 21.5}},
        {"s": 'quote " backslash \\ newline \n tab \t \u00e9 \u4e2d \U0001f600', "n": None, "b": [True, False, 1, -2.5]},
        {"big": 1e21, "small": 1e-7, "int_float": 3.0},  # the careful encoder's numbers
        {"\u00fcber": 1},  # a non-ASCII key: the careful encoder's sort
    ]
    h = GENESIS
    for i, data in enumerate(datas):
        node = None if i % 5 == 0 else "bin-%d" % i
        ev = new_event("node.telemetry", node=node, data=data, at=1764322200.0 + i * 0.3337)
        ce, payload = c.encode(ev, seq=i + 1, chain="5e2a9d01c4b7f366", prevhash=h, key=key)
        full = {k: v for k, v in ce.items() if k != "hash"}
        assert payload == canonical_json(ce)
        assert ce["hash"] == event_hash(full, key)
        fast = c.encode_fast(ev, seq=i + 1, chain="5e2a9d01c4b7f366", prevhash=h, key=key)
        if fast is not None:
            assert fast == (ce["source"], ce["hash"], payload)
        h = ce["hash"]
    assert c.encode_fast(new_event("node.telemetry", node="b", data={"x": 1e21}), seq=1, chain="c", prevhash=GENESIS) is None
