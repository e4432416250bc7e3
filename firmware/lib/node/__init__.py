"""The node runtime shared by every role (issue 3): config, the link client over MQTT or serial,
the offline queue in flash, time sync, watchdog, safe mode and health reports.

Nothing is loaded here but the version; import the part you need::

    from node import runtime
    runtime.main()                      # what main.py does: config, HAL, one asyncio loop

Parts, one failure domain each:

=================  ======================================================================
``config``         defaults in code, ``config.json`` + ``secrets.json``, one ``validate()``
``mqtt``           MQTT 3.1.1 packets over a good connection (a stream)
``mqttlink``       keeps that connection alive: Wi-Fi, DNS once, backoff, re-subscribe
``seriallink``     the same link over a UART (COBS + CRC-16 wire frames)
``queue``          sealed frames in a flash segment log until the gateway acks them
``bootstate``      boot count and crash-boot count (safe mode), in RTC memory
``runtime``        the :class:`~node.runtime.Node`: boot, sender, acks, commands
``upkeep``         time sync, health report, watchdog (tasks of the Node)
``role``           the role interface, the role table, the diagnostics role of safe mode
``flash``          atomic small-file writes
``log``            ``log(tag, fmt, *args)``: one ``%``-formatted line on the console
=================  ======================================================================

The board itself is ``hal.Board`` (``firmware/lib/hal.py``), the only module that imports
``machine`` and ``network``.
"""

VERSION = "0.1.0"
