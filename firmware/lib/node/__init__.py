"""The node runtime shared by every role (issue 3): config, the link client over MQTT or serial,
the offline queue in flash, time sync, watchdog, safe mode and health reports.

Nothing is here but the version and :func:`log` (one function: a module of its own would cost
more heap than its code); import the part you need::

    from node import runtime
    runtime.main()                      # what main.py does: config, HAL, one asyncio loop

Parts, one failure domain each:

=================  ======================================================================
``config``         defaults in code, ``config.json`` + ``secrets.json``, one ``validate()``
``mqtt``           MQTT 3.1.1 packets over a good connection (a stream)
``mqttlink``       keeps that connection alive: Wi-Fi, DNS once, backoff, re-subscribe
``seriallink``     the same link over a UART (COBS + CRC-16 wire frames)
``later``          the link's stand-in while a role defers it (the bin), until it is up
``queue``          sealed frames in a flash segment log until the gateway acks them
``qscan``          the queue's boot scan and segment copy (loaded for them, then dropped)
``bootstate``      boot count and crash-boot count (safe mode), in RTC memory
``runtime``        the :class:`~node.runtime.Node`: boot, sender, acks, commands
``cmd``            the ``node.*`` commands and diagnostics (``node.info``)
``diag``           the safe-mode role: ``diag.info``, ``diag.exit``, ``diag.files``
``upkeep``         time sync, health report, watchdog (tasks of the Node)
``role``           the role interface and the role table
``flash``          atomic small-file writes
``flag``           ``Flag`` (an event with a timed wait), ``Mutex``, ``within`` (a timeout)
=================  ======================================================================

The board itself is ``hal.Board`` (``firmware/lib/hal.py``), the only module that imports
``machine`` and ``network``.
"""

VERSION = "0.1.0"


def log(tag, fmt, *args):
    """One line on the console (the REPL UART on a board, stdout in the simulator):
    ``log("mqtt", "connected to %s:%d", host, port)`` prints ``mqtt: connected to ...``; the
    formatting happens only here, with ``%``, so callers build no strings."""
    try:
        print("%s: %s" % (tag, fmt % args if args else fmt))
    except Exception:  # a bad format must never take the node down
        print(tag, fmt, args)
