"""A simulated ESP32 board: the firmware on the real MicroPython unix port, with a simulated
``machine``/``time``/``network`` (the MicroPython modules in ``board/``) first on its path.

Used by the test harness (tests/harness) and by ``linli demo``. The firmware does not know it
is simulated: it imports ``machine`` as on the device.
"""

from linli.simboard.build import BuildError, FirmwareBuild, ToolError, Tools, find_micropython, find_mpy_cross, probe
from linli.simboard.runner import MicroPython, RunResult, heap_bytes

__all__ = ["BuildError", "FirmwareBuild", "MicroPython", "RunResult", "ToolError", "Tools", "find_micropython", "find_mpy_cross", "heap_bytes", "probe"]
