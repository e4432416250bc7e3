"""Test harness: real processes where the product uses them.

- :mod:`harness.micropython` runs firmware on the MicroPython unix port with a simulated ESP32
  (``gateway/simboard/board``), under a heap limit (fixture ``mpy``; tools and build in :mod:`harness.mpybuild`).
- :mod:`harness.mosquitto` starts a Mosquitto broker per test (``mosquitto_broker``).
- :mod:`harness.serialpty` gives a pty standing in for a serial port (``serial_pty``).

The fixtures are in tests/conftest.py.
"""
