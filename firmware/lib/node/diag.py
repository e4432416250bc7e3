"""The safe-mode role (``diag``): loaded only by a node that boots in safe mode (after repeated
crash-boots), where it is the only role that runs::

    from node.diag import Diagnostics
    node.role = Diagnostics(node, hal, cfg)     # answers diag.info, diag.exit, diag.files
"""

import asyncio

from node.cmd import info
from node.role import Role


class Diagnostics(Role):
    """The safe-mode role: runs nothing, answers ``diag.*`` commands.

    ``diag.info`` -> boot count, crash boots, reset cause, free heap, queue depth;
    ``diag.exit`` -> leave safe mode and reboot; ``diag.files`` -> the flash's top folder.
    """

    name = "diag"

    def on_command(self, op, args):
        n = self.node
        if op == "diag.info":
            return info(n)
        if op == "diag.exit":  # leave safe mode: clear the crash-boot count and reboot (soon,
            n.boot.clear()     # once the result is acked)
            asyncio.create_task(n.reboot_soon())
            return None
        if op == "diag.files":
            import os

            return sorted(os.listdir())
        return Role.on_command(self, op, args)
