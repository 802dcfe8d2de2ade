"""Issue 24 item 6: the engine's limit on the facts of one patient is declared and checked when a pack loads
(a generated pack of 200 derived facts used to pass ``validate`` and fail every complete patient with
durable-rules error 302), and so is the depth of derived facts reading derived facts."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pressor.engine.errors import EvaluationError, RuleFileError
from pressor.engine.evaluation._durable import ENGINE_MAX_FACTS, MAX_FACTS, Matcher, leaf
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document
from pressor.engine.evaluation.compile import state_vocabulary
from pressor.engine.evaluation.pack import default_rules_dir, load_pack
from pressor.engine.evaluation.pack_facts import MAX_DERIVED_DEPTH
from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def generated(tmp_path: Path, n: int, *, chained: bool) -> Path:
    """The bundled pack with ``n`` boolean derived facts added, each reading the last one or the age."""
    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d, ignore=shutil.ignore_patterns("fhir", "__init__.py", "__pycache__"))
    items = []
    for i in range(n):
        when = (f'{{fact: derived.c{i - 1}, op: "==", value: true}}' if chained and i
                else '{fact: patient.age_years, op: ">=", value: 1}')
        items.append(f"  - name: derived.c{i}\n    type: boolean\n    description: generated {i}.\n    when: {when}\n")
    (d / "derived.yaml").write_text((d / "derived.yaml").read_text().rstrip("\n") + "\n\n" + "\n".join(items))
    return d


def test_the_engines_limit_is_what_the_constant_says():
    m = Matcher({"r": leaf("a0", ">", 0)})
    try:
        assert m.match({f"a{i}": 1 for i in range(ENGINE_MAX_FACTS)}) == {"r"}
    finally:
        m.close()
    m = Matcher({"r": leaf("a0", ">", 0)})
    with pytest.raises(EvaluationError, match="302"):
        m.match({f"a{i}": 1 for i in range(ENGINE_MAX_FACTS + 1)})
    assert MAX_FACTS <= ENGINE_MAX_FACTS - 16  # a margin


@pytest.mark.slow
@pytest.mark.parametrize("chained", [False, True])
def test_a_pack_of_200_derived_facts_is_refused_at_load_naming_the_limit(tmp_path, chained):
    with pytest.raises(RuleFileError, match=f"pressor takes at most {MAX_FACTS}") as exc:
        load_pack(generated(tmp_path, 200, chained=chained))
    assert exc.value.problems[0].file.endswith("derived.yaml")


@pytest.mark.slow
def test_a_pack_at_the_limit_loads_and_evaluates(tmp_path, now):
    vocab = state_vocabulary(schema(STATE_SCHEMA))
    width = sum(len(ft.values) if ft.kind == "array" else 1 for ft in vocab.values()) + len(load_pack().derived)
    pack = load_pack(generated(tmp_path, MAX_FACTS - width, chained=False))
    state = load_document(EXAMPLES / "septic-shock-adult.yaml").data
    result = evaluate(pack, state, now=now)
    assert result.recommendations


@pytest.mark.slow
def test_a_chain_deeper_than_the_limit_is_refused_at_load(tmp_path):
    with pytest.raises(RuleFileError, match=f"at most {MAX_DERIVED_DEPTH}"):
        load_pack(generated(tmp_path, MAX_DERIVED_DEPTH + 10, chained=True))
    load_pack(generated(tmp_path / "ok", MAX_DERIVED_DEPTH - 5, chained=True))
