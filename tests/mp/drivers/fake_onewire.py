# A 1-Wire bus with DS18B20s on it, for the driver tests: the simulated board's bus engine
# (gateway/simboard/board/onewire.py, on the path first in every run) without the world.
from onewire import DS18B20Dev, OneWireBus  # noqa: F401
