"""The MicroPython runner lives in the package (``linli.simboard``) so `linli demo` can use it."""

from linli.simboard.runner import *  # noqa: F401,F403
from linli.simboard.runner import MicroPython, MicroPythonProcess, RunResult, heap_bytes  # noqa: F401
