"""One-line logs on the console (the REPL UART on a board, stdout in the simulator).

``log("mqtt", "connected to %s:%d", host, port)`` prints ``mqtt: connected to ...``; the
formatting happens only here, with ``%``, so callers build no strings.
"""


def log(tag, fmt, *args):
    try:
        print("%s: %s" % (tag, fmt % args if args else fmt))
    except Exception:  # a bad format must never take the node down
        print(tag, fmt, args)
