"""Every rule carries examples: one that fires it and one at its boundary that does not."""
from __future__ import annotations

import pytest

from pressor.engine.evaluate import evaluate
from pressor.engine.pack import load_pack

PACK = load_pack(check_examples=True)
CASES = [(rule.id, ex) for rule in PACK.rules for ex in rule.raw.get("examples", [])]


def test_every_rule_has_a_firing_and_a_non_firing_example():
    for rule in PACK.rules:
        expects = {ex["expect"] for ex in rule.raw.get("examples", [])}
        assert {"fires", "does_not_fire"} <= expects, rule.id


@pytest.mark.parametrize("rule_id, example", CASES, ids=[f"{r}::{e['name']}" for r, e in CASES])
def test_rule_example(rule_id, example, now, result_validator):
    result = evaluate(PACK, example["state"], now=now, include_draft=example.get("include_draft", False))
    result_validator.validate(result.to_dict())
    not_evaluable = {n.rule_id for n in result.not_evaluable}
    got = "fires" if rule_id in result.fired_ids() else "not_evaluable" if rule_id in not_evaluable else "does_not_fire"
    assert got == example["expect"]
