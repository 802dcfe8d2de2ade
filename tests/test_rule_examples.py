"""Every rule's examples, one pytest case each (ids "rule_id::example name"), run as scenarios."""
from __future__ import annotations

import pytest

from pressor.engine.evaluation.pack import load_pack
from pressor.engine.authoring.scenarios import example_scenarios, run_scenario

PACK = load_pack()
EXAMPLES = example_scenarios(PACK)


@pytest.mark.parametrize("scenario", EXAMPLES, ids=[s.name for s in EXAMPLES])
def test_rule_example(scenario, result_validator):
    outcome = run_scenario(PACK, scenario)
    assert outcome.result is not None
    result_validator.validate(outcome.result.to_dict())
    assert outcome.ok, "; ".join(f.describe() for f in outcome.failures)


