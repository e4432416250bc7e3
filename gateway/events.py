"""The one event contract: every source (nodes, cameras, the gateway itself) emits these.

An :class:`Event` is created once, gets its unique ``id`` at creation and keeps it through the
outbox, retries and restarts, so a backend can deduplicate on (``source``, ``id``). The outbox
adds the per-gateway sequence number and the hash chain when it stores the event
(docs/events.md).

>>> e = new_event("bin.full", node="bin-0001", data={"fill": 91})
>>> e.priority.name, e.type, e.subject
('ALARM', 'bin.full', 'bin-0001')
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional


class Priority(enum.IntEnum):
    """What the outbox may drop when full: TELEMETRY first, then NORMAL; ALARM never."""

    TELEMETRY = 0
    NORMAL = 1
    ALARM = 2


@dataclass(frozen=True)
class EventType:
    name: str
    priority: Priority
    summary: str


_T, _N, _A = Priority.TELEMETRY, Priority.NORMAL, Priority.ALARM

# name -> (priority, one line for docs/events.md and the AsyncAPI document). Keep sorted by area.
EVENT_TYPES: dict[str, EventType] = {
    t.name: t
    for t in [
        EventType("bin.full", _A, "A bin's fill level crossed the full threshold (with hysteresis)."),
        EventType("bin.emptied", _N, "A full bin dropped below the empty threshold: it was emptied."),
        EventType("bin.overflow", _A, "A bin node reports refuse above the rim (range sensor)."),
        EventType("bin.fire_risk", _A, "A bin's temperature is over the limit or rising too fast."),
        EventType("bin.tipped", _A, "A bin's tilt says it has been knocked over."),
        EventType("bin.deposit", _N, "A resident deposited sorted waste: pseudonymous resident, weight, points."),
        EventType("bin.battery_low", _N, "A bin node's battery is low."),
        EventType("streetlight.lamp_fault", _A, "A lamp is commanded on but its current is too low or too high."),
        EventType("streetlight.battery_low", _N, "A streetlight's battery protection dimmed or switched off the lamp."),
        EventType("streetlight.energy_daily", _T, "A streetlight's daily energy: harvested, used, hours lit."),
        EventType("petscan.scan", _N, "A pet tag was scanned; the answer shown (green/yellow/red)."),
        EventType("petscan.fouling", _N, "A resident reported dog fouling at a scanner."),
        EventType("node.telemetry", _T, "A node's latest readings (changed values only)."),
        EventType("node.online", _N, "A node came (back) online."),
        EventType("node.offline", _A, "A node is silent past its expected report (sleep-aware)."),
        EventType("node.rebooted", _N, "A node booted: firmware version and reset cause."),
        EventType("node.safe_mode", _A, "A node entered safe mode after repeated crash-boots."),
        EventType("node.health", _T, "A node's periodic health report (heap, uptime, queue, RSSI, battery)."),
        EventType("node.rejected", _N, "Frames from a node were rejected (reason counts)."),
        EventType("command.result", _N, "A node executed (or refused) a backend command."),
        EventType("command.timeout", _N, "A command was not executed before its deadline."),
        EventType("garbage.pile.detected", _A, "A garbage pile was confirmed on a camera."),
        EventType("garbage.pile.updated", _N, "A confirmed pile grew or shrank markedly."),
        EventType("garbage.pile.cleared", _N, "A pile is gone; carries its dwell time."),
        EventType("bin.overflow.detected", _A, "A camera confirmed an overflowing bin."),
        EventType("bin.overflow.cleared", _N, "A camera sees the overflowing bin cleared; carries its dwell time."),
        EventType("gateway.outbox.dropped", _A, "The outbox was full and dropped events (counts by type)."),
        EventType("gateway.started", _N, "The gateway started (version, config digest)."),
    ]
}


class UnknownEventType(ValueError):
    """An event type that is not in EVENT_TYPES (every type must be in the contract)."""


@dataclass
class Event:
    """One event before the outbox numbers and chains it."""

    type: str
    source: str
    subject: Optional[str]
    data: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)

    @property
    def priority(self) -> Priority:
        return EVENT_TYPES[self.type].priority


def new_event(type: str, *, node: Optional[str] = None, data: Optional[dict] = None, source: Optional[str] = None, at: Optional[float] = None) -> Event:
    """Create an event of a known type. ``source`` defaults to the node (or the gateway) path."""
    if type not in EVENT_TYPES:
        raise UnknownEventType("event type %r is not in the contract (linli.events.EVENT_TYPES)" % type)
    ev = Event(type=type, source=source or ("node/%s" % node if node else "gateway"), subject=node, data=dict(data or {}))
    if at is not None:
        ev.time = at
    return ev
