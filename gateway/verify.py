"""``linli verify FILE``: check a captured event stream for gaps, alterations and duplicates.

The input is JSON lines, one CloudEvent per line, as a consumer captured them: duplicates and
any order are fine (the checker sorts by ``seq`` per gateway chain). For each chain
(``source`` prefix ``/linli/{site}/{gateway}`` and ``chain``) it checks that

* every event's ``hash`` matches its content (with ``--key-file`` for ``hmac-sha256`` chains),
* each event's ``prevhash`` is the ``hash`` of the event before it (so nothing was removed,
  inserted or reordered),
* the sequence has no gaps, except runs the gateway itself reported as dropped in a
  ``gateway.outbox.dropped`` event, whose edge hashes must link up,
* copies of one ``seq`` are identical (a duplicate is fine; two different events with one
  ``seq`` are an alteration).

It cannot see events missing after the last one captured; compare the last ``seq`` with the
gateway's retained status (``seq`` when it last connected) for that.

>>> import json, tempfile, os
>>> from linli.contract import Contract, GENESIS
>>> from linli.events import new_event
>>> c, h, lines = Contract("s", "g"), GENESIS, []
>>> for i in range(1, 4):
...     ce = c.cloudevent(new_event("bin.tipped", node="b1", data={"tilt_deg": 80}), seq=i, chain="00" * 8, prevhash=h)
...     h = ce["hash"]; lines.append(json.dumps(ce))
>>> r = verify_lines([lines[2], lines[0], lines[0]])
>>> r.ok, r.chains[0].gaps, r.chains[0].duplicates
(False, [(2, 2)], 1)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from linli.contract import GENESIS, HASHALG_KEYED, canonical_json, event_hash

_DROPPED = "linli.gateway.outbox.dropped"


@dataclass
class ChainReport:
    gateway: str  # /linli/{site}/{gateway}
    chain: str
    first: int = 0
    last: int = 0
    events: int = 0  # distinct sequence numbers seen
    duplicates: int = 0  # extra identical copies
    gaps: list = field(default_factory=list)  # (first, last) missing and not reported dropped
    dropped: list = field(default_factory=list)  # (first, last) the gateway reported dropping
    altered: list = field(default_factory=list)  # (seq, why)
    unchecked_hashes: int = 0  # keyed hashes not checked (no key given)

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.altered


@dataclass
class Report:
    chains: list = field(default_factory=list)
    malformed: list = field(default_factory=list)  # (line number, why)

    @property
    def ok(self) -> bool:
        return not self.malformed and all(c.ok for c in self.chains)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "malformed": [{"line": n, "error": e} for n, e in self.malformed],
            "chains": [
                {
                    "gateway": c.gateway, "chain": c.chain, "first": c.first, "last": c.last, "events": c.events,
                    "duplicates": c.duplicates, "gaps": c.gaps, "dropped": c.dropped,
                    "altered": [{"seq": s, "why": w} for s, w in c.altered], "unchecked_hashes": c.unchecked_hashes, "ok": c.ok,
                }
                for c in self.chains
            ],
        }


def _gateway_of(source: str) -> str:
    parts = source.split("/")
    return "/".join(parts[:4]) if len(parts) >= 4 and parts[1] == "linli" else source


def verify_lines(lines: Iterable[str], key: Optional[bytes] = None) -> Report:
    """Check JSON lines (one CloudEvent each); see the module doc."""
    report = Report()
    chains: dict[tuple[str, str], dict[int, list]] = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            ce = json.loads(line)
            seq, chain, source = ce["seq"], ce["chain"], ce["source"]
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                raise ValueError("seq must be a positive integer")
            ce["hash"], ce["prevhash"]
        except (ValueError, KeyError, TypeError) as exc:
            report.malformed.append((n, "not a linli CloudEvent: %s" % exc))
            continue
        chains.setdefault((_gateway_of(source), chain), {}).setdefault(seq, []).append(ce)
    for (gw, chain), by_seq in sorted(chains.items()):
        report.chains.append(_check_chain(gw, chain, by_seq, key))
    return report


def _check_chain(gw: str, chain: str, by_seq: dict[int, list], key: Optional[bytes]) -> ChainReport:
    r = ChainReport(gw, chain)
    seqs = sorted(by_seq)
    r.first, r.last, r.events = seqs[0], seqs[-1], len(seqs)
    events: dict[int, dict] = {}
    for seq in seqs:
        copies = by_seq[seq]
        ce = copies[0]
        body = canonical_json(ce)
        for other in copies[1:]:
            if canonical_json(other) == body:
                r.duplicates += 1
            else:
                r.altered.append((seq, "two different events carry this seq (ids %s and %s)" % (ce.get("id"), other.get("id"))))
        keyed = ce.get("hashalg") == HASHALG_KEYED
        if keyed and key is None:
            r.unchecked_hashes += 1
        else:
            try:
                ok = event_hash(ce, key if keyed else None) == ce["hash"]
            except ValueError as exc:
                ok = False
                r.altered.append((seq, "cannot be canonicalized: %s" % exc))
            if not ok:
                r.altered.append((seq, "content does not match its hash (altered%s)" % (", or a wrong key" if keyed else "")))
        events[seq] = ce
    # Runs the gateway reported dropping: seq -> (first, last, prevhash of first, hash of last).
    runs: dict[int, dict] = {}
    for ce in events.values():
        if ce.get("type") == _DROPPED and isinstance(ce.get("data"), dict):
            for run in ce["data"].get("ranges", []):
                try:
                    runs[int(run["first"])] = {"first": int(run["first"]), "last": int(run["last"]), "prevhash": run["prevhash"], "hash": run["hash"]}
                except (KeyError, TypeError, ValueError):
                    r.altered.append((ce["seq"], "malformed dropped range %r" % (run,)))
    # Walk the sequence: real events and reported runs, each linking to the one before.
    if runs:
        r.first = min(r.first, min(runs))
    seq = r.first
    prev_hash: Optional[str] = GENESIS if r.first == 1 else None
    while seq <= r.last:
        if seq in events:
            ce = events[seq]
            if prev_hash is not None and ce["prevhash"] != prev_hash:
                if seq == 1:
                    r.altered.append((1, "the first event of a chain must have prevhash 0...0"))
                else:
                    r.altered.append((seq, "prevhash does not match the hash of seq %d (an event before it was removed, replaced or inserted)" % (seq - 1)))
            prev_hash = ce["hash"]
            seq += 1
        elif seq in runs:
            run = runs[seq]
            if prev_hash is not None and run["prevhash"] != prev_hash:
                r.altered.append((seq, "reported drop %d-%d does not link to seq %d" % (run["first"], run["last"], seq - 1)))
            r.dropped.append((run["first"], run["last"]))
            prev_hash = run["hash"]
            seq = run["last"] + 1
        else:
            start = seq
            while seq <= r.last and seq not in events and seq not in runs:
                seq += 1
            r.gaps.append((start, seq - 1))
            prev_hash = None  # cannot check the link across a gap
    r.dropped = _merge(r.dropped)
    return r


def _merge(ranges: list) -> list:
    out: list = []
    for a, b in sorted(ranges):
        if out and a == out[-1][1] + 1:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _fmt(ranges) -> str:
    return ", ".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in ranges)


def render(report: Report) -> str:
    out = []
    for n, why in report.malformed:
        out.append("line %d: %s" % (n, why))
    for c in report.chains:
        out.append("%s chain %s: seq %d..%d, %d events, %d duplicate copies -> %s" % (c.gateway, c.chain, c.first, c.last, c.events, c.duplicates, "OK" if c.ok else "PROBLEMS"))
        if c.first > 1:
            out.append("  note: the capture starts at seq %d (events before it were not checked)" % c.first)
        if c.gaps:
            out.append("  missing (not reported dropped): %s" % _fmt(c.gaps))
        if c.dropped:
            out.append("  dropped by the gateway's outbox (reported): %s" % _fmt(c.dropped))
        for seq, why in c.altered:
            out.append("  seq %d: %s" % (seq, why))
        if c.unchecked_hashes:
            out.append("  %d keyed (hmac-sha256) hashes not checked: pass --key-file" % c.unchecked_hashes)
    if not report.chains and not report.malformed:
        out.append("no events")
    return "\n".join(out)


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="check a captured upstream event stream (gaps, alterations, duplicates)", description=__doc__.split("\n>>>")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="JSON lines, one CloudEvent per line ('-' for stdin)")
    p.add_argument("--key-file", help="the chain key for hmac-sha256 chains (the file's bytes, a trailing newline stripped)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Exit status: 0 all chains intact, 1 gaps/alterations/malformed lines, 2 unreadable input."""
    try:
        key = Path(args.key_file).read_bytes().rstrip(b"\r\n") if args.key_file else None
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        print("linli verify: %s" % exc, file=sys.stderr)
        return 2
    report = verify_lines(text.splitlines(), key)
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1
