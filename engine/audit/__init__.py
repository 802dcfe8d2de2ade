"""The audit log: an append-only, hash-chained record of every evaluation and feedback."""
