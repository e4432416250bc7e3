"""`linli flash`: write, deploy and provision nodes in the field (see docs/flashing.md)."""
