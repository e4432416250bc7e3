"""The role interface and the role table (the diagnostics role of safe mode is :mod:`node.diag`).

A role is what makes a node a bin, a streetlight or a pet scanner. It gets the node (to send
frames, read the time, sleep), the HAL (to build its drivers) and the config, and runs as one
task of the node's asyncio loop::

    from node.role import Role

    class Bin(Role):
        name = "bin"

        def __init__(self, node, hal, cfg):
            super().__init__(node, hal, cfg)
            mine = self.section()                       # cfg["bin"], {} if absent
            self.full = mine.get("full_pct", 85)
            if not isinstance(self.full, int):
                raise ValueError("config.json: bin.full_pct must be an int, got %r" % (self.full,))
            self.sonar = HCSR04(hal.pin(5, "out"), hal.pin(18, "in"))   # drivers get objects

        async def run(self):
            while True:
                fill = self.sonar.fill()
                self.node.telemetry({"fill": fill})
                if fill >= self.full:
                    self.node.event({"ev": "full", "fill": fill}, alarm=True)
                await self.node.sleep(self.cfg["report_s"])      # deep sleep: does not return

        def on_command(self, op, args):
            if op == "bin.calibrate":
                return {"empty_cm": self.sonar.calibrate()}
            return super().on_command(op, args)                # raises ValueError("unknown_op")

What the node provides (:class:`node.runtime.Node`): ``telemetry(body)``, ``event(body,
alarm=False)`` (seal, queue in flash, send; False if the queue dropped it), ``time()`` (Unix
seconds, 0 until synced), ``synced``, ``await sleep(seconds)`` (flush, say asleep, deep sleep),
``await idle(timeout_s)`` (wait for every queued frame to be acked), ``healthy()`` (this boot
works), ``safe``, ``id``, ``log(fmt, *args)``.

Rules: ``run()`` must never block the loop (await; drivers that wait must be async or quick);
an exception out of ``__init__`` or ``run()`` is a crash (the node reports it and reboots; three
boots in a row that crash put it in safe mode); ``on_command`` runs on the loop and must be
quick: return None, a dict (its keys go into the ``command_result`` next to ``id`` and ``ok``:
``{"id":7,"ok":true,"empty_cm":112}``) or another JSON value (sent as ``r``), or raise
``ValueError("short_reason")`` to refuse (``{"id":7,"ok":false,"err":"short_reason"}``).
Ops starting with ``node.`` are the runtime's own (``node.health``, ``node.reboot``,
``node.sync``, ``node.info``).

A role that works offline first (the bin: read, decide, queue, then flush and sleep) sets
``link_later = True``: the node then imports and starts its link only when the role first
waits for it (``idle``/``sleep``) or calls ``node.online()``, so the role can drop what it no
longer needs before the link takes its share of the heap. On Wi-Fi the association starts at
boot all the same.

Roles are named in :data:`ROLES` (``name -> "module:Class"``) and imported only when used, so a
missing or broken role module fails that node's boot with a clear message and nothing else.
"""

ROLES = {
    "bin": "roles.bin:Bin",
    "streetlight": "roles.streetlight:Streetlight",
    "petscan": "roles.petscan:Petscan",
    "diag": "node.diag:Diagnostics",
}


def load(name):
    """The role class registered as ``name``; ImportError with the reason if it is missing."""
    spec = ROLES.get(name)
    if spec is None:
        raise ImportError("no role %r (known: %s)" % (name, ", ".join(ROLES)))
    mod, _, cls = spec.partition(":")
    try:
        m = __import__(mod)
    except ImportError as e:
        raise ImportError("role %s: cannot import %s (%s)" % (name, mod, e))
    for part in mod.split(".")[1:]:
        m = getattr(m, part)
    return getattr(m, cls)


class Role:
    """Base class of the roles; see the module docstring."""

    name = "role"
    link_later = False  # see the module docstring

    def __init__(self, node, hal, cfg):
        self.node = node
        self.hal = hal
        self.cfg = cfg

    def section(self):
        """This role's own config object (``cfg[self.name]``), ``{}`` when absent."""
        return self.cfg.get(self.name) or {}

    async def run(self):
        """The role's work; returning is fine (the node keeps its link and commands)."""

    def on_command(self, op, args):
        """Handle one command; return None, a dict of result keys or a JSON value, or raise
        ValueError("reason")."""
        raise ValueError("unknown_op")

    def health(self):
        """Extra fields for the health report (a dict), e.g. a sensor's error count."""
        return None
