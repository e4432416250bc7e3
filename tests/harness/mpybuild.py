"""Tool lookup and the firmware build live in the package (``linli.simboard.build``)."""

from linli.simboard.build import *  # noqa: F401,F403
from linli.simboard.build import BUILD, FIRMWARE, RUNNER, SIM, BuildError, FirmwareBuild, ToolError, Tools, find_micropython, find_mpy_cross, mpy_cross_args, probe  # noqa: F401
