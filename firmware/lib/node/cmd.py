"""The runtime's commands (``node.*``) and diagnostics, loaded at the first command (at boot
for an always-on role).

Kept out of :mod:`node.runtime` so a node that gets no command (most bin wakes) never holds
their code in its heap; the runtime imports this module when a ``command`` frame arrives and
keeps it from then on (a pet scanner gets one per scan)::

    from node import cmd
    cmd.handle(node, {"id": 7, "op": "node.info"})   # seals and queues the command_result
    cmd.info(node)                                     # {"fw": ..., "up": ..., "heap": ...}
"""

import asyncio
import gc

from link import frame
from node import VERSION


def handle(node, p):
    """Run command ``p`` (``{"id", "op", "a"}``) and queue its ``command_result``: ``ok`` and
    the result's keys, or ``ok: false`` and ``err`` (the ValueError's reason)."""
    cid = p.get("id")
    op = p.get("op")
    args = p.get("a") or {}
    try:
        if not isinstance(op, str):
            raise ValueError("bad_op")
        if op.startswith("node."):
            res = _node(node, op, args)
        elif node.role is None:
            raise ValueError("not_ready")
        else:
            res = node.role.on_command(op, args)
        body = {"id": cid, "ok": True}
        if isinstance(res, dict):  # the result's keys go next to id and ok
            for k in res:
                if k != "id" and k != "ok":
                    body[k] = res[k]
        elif res is not None:
            body["r"] = res
    except Exception as e:
        body = {"id": cid, "ok": False, "err": (str(e) or type(e).__name__)[:40]}
    try:
        node.send(frame.COMMAND_RESULT, body)
    except ValueError:  # the result does not fit in a frame
        node.send(frame.COMMAND_RESULT, {"id": cid, "ok": False, "err": "too_large"})


def _node(node, op, args):
    if op == "node.info":
        return info(node)
    if op == "node.health":
        node._kick.set()
        return None
    if op == "node.sync":
        node.boot.sync_at = 0
        return None
    if op == "node.reboot":
        asyncio.create_task(node.reboot_soon())
        return None
    raise ValueError("unknown_op")


def info(node):
    """Diagnostics for ``node.info`` / ``diag.info``: ``fw``, ``up``, ``heap``, ``q`` (as in
    docs/protocol.md section 8), and ``rc``, ``bc``, ``sm``, ``fails`` (crash boots),
    ``drop`` (not yet reported), ``rx_bad`` (downlink frames refused), ``ctr`` (next
    counter), ``rom`` (1: running from ROMFS), ``err`` (why it last crashed). Sized to fit
    one frame."""
    gc.collect()
    b = node.boot
    d = {
        "fw": VERSION, "up": node.uptime(), "heap": gc.mem_free(), "q": node.queue.live,
        "rc": node.reset_cause, "bc": b.boots, "sm": 1 if node.safe else 0,
        "fails": b.fails, "drop": node.queue.dropped, "rx_bad": node.rejected,
        "ctr": node.ctr.peek(),
        # 1: the modules run in place from the ROMFS partition; 0: from files, in the heap.
        "rom": 1 if __file__.startswith("/rom/") else 0,
    }
    if b.err:
        d["err"] = b.err[:32]
    return d
