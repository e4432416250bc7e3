# Starts the node runtime: config.json + secrets.json, the HAL, one asyncio loop.
# Everything else lives in lib/node (see lib/node/runtime.py).
from node import runtime

runtime.main()
