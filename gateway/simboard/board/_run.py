# Runs firmware on the simulated board (started by tests/harness/micropython.py).
#
#   micropython _run.py STATE_DIR code            exec STATE_DIR/code.py as __main__
#   micropython _run.py STATE_DIR module NAME     import NAME ("pkg.mod" or "pkg.mod:func")
#   micropython _run.py STATE_DIR board           boot.py then main.py, as an ESP32 does
# The end of the run (normal, deepsleep/reset, exception, Ctrl-C from the harness) is recorded.
import sys

sys.path.pop(0)  # this script's folder; MICROPYPATH already starts with the sim
import _sim

_sim.setup(sys.argv[1])
import machine  # noqa: E402,F401  (loaded before the heap mark: on an ESP32 it costs no heap)
import time  # noqa: E402,F401
import esp32  # noqa: E402,F401  (frozen on an ESP32 too: no heap there)
import onewire  # noqa: E402,F401
import network  # noqa: E402,F401  (built into an ESP32's firmware: no heap; here a .py compiled at import)


def _exists(name):
    import os

    for d in sys.path:
        for ext in (".py", ".mpy"):
            try:
                os.stat((d or ".") + "/" + name + ext)
                return True
            except OSError:
                pass
    return False


def _module(spec):
    name, _, fn = spec.partition(":")
    mod = __import__(name)
    for part in name.split(".")[1:]:
        mod = getattr(mod, part)
    if fn:
        ret = getattr(mod, fn)()
        if type(ret).__name__ == "generator":  # a coroutine
            import asyncio

            asyncio.run(ret)


def _main(kind):
    _sim.mark_heap()
    if kind == "code":
        with open(sys.argv[1] + "/code.py") as f:
            src = f.read()
        code = compile(src, "<test code>", "exec")
        del src
        exec(code, {"__name__": "__main__"})
    elif kind == "module":
        _module(sys.argv[3])
    else:
        for name in ("boot", "main"):
            if _exists(name):
                __import__(name)


try:
    _main(sys.argv[2])
except _sim.End:
    pass
except KeyboardInterrupt as e:  # the harness stopping the run (SIGINT)
    _sim.crash(e, "stopped")
    sys.print_exception(e, sys.stderr)
    sys.exit(130)
except SystemExit as e:
    _sim.finish("exit", e.args[0] if e.args else None)
    raise
except BaseException as e:  # noqa: B902  (the firmware's crash is what we record)
    _sim.crash(e)
    sys.print_exception(e, sys.stderr)
    sys.exit(1)
else:
    _sim.finish("exit", 0)
