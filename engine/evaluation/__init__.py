"""Evaluation: load and check a rule pack, check a patient state, match it with durable-rules,
decide each rule in three-valued logic, compute doses, and explain the result."""
