"""linli gateway: ingest from community nodes, rules, durable outbox, upstream events."""

__version__ = "0.1.0"
