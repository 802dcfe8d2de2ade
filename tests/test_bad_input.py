"""Bad input of every kind: a clear located message on stderr, exit 1, never a traceback."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.errors import InputError, PatientStateError, RuleFileError
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import MAX_DOCUMENT_BYTES, parse
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

GOOD = {"patient": {"age_years": 60, "weight_kg": 70}, "vitals": {"map_mmhg": 60}}


def run(args, stdin=None):
    result = CliRunner().invoke(cli, args, input=stdin)
    assert "Traceback" not in result.output + result.stderr
    return result


def state_file(tmp_path: Path, text: str, name: str = "state.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, name, expected",
    [
        ("patient:\n  age_years: 60\n   weight_kg: 70\n", "s.yaml", r"s.yaml:3:\d+: malformed YAML"),
        # Python's own JSON reader places a trailing comma's error: after it on 3.11 and 3.12 ("Expecting
        # property name"), on the comma itself from 3.13 on ("Illegal trailing comma before end of object").
        ('{"patient": {"age_years": 60,}}', "s.json", r"s.json:1:%d: malformed JSON" % (29 if sys.version_info >= (3, 13) else 30)),
        ("patient:\n  weight_kg: heavy\n", "s.yaml", r"s.yaml:2:3 /patient/weight_kg: 'heavy' is not of type number"),
        ("patient:\n  wieght_kg: 70\n", "s.yaml", r"s.yaml:2:3 /patient/wieght_kg: unknown key 'wieght_kg' \(did you mean 'weight_kg'\?\)"),
        ("patient:\n  weight_kg: 0\n", "s.yaml", r"/patient/weight_kg: 0 is less than the minimum of 0.3"),
        ("patient:\n  weight_kg: -4\n", "s.yaml", r"/patient/weight_kg: -4 is less than the minimum of 0.3"),
        ("vitals:\n  map_mmhg: 900\n", "s.yaml", r"/vitals/map_mmhg: 900 is greater than the maximum of 250"),
        ("vitals:\n  map_mmhg: .nan\n", "s.yaml", r"s.yaml:2:13 /vitals/map_mmhg: '.nan' is not a finite number"),
        ('{"vitals": {"map_mmhg": NaN}}', "s.json", r"NaN and Infinity are not allowed"),
        ('{"vitals": {"map_mmhg": Infinity}}', "s.json", r"NaN and Infinity are not allowed"),
        ("", "s.yaml", r"s.yaml: empty document"),
        ("   \n# only a comment\n", "s.yaml", r"empty document"),
        ("shock:\n  type: distributive\n", "s.yaml", r"/shock/type: 'distributive' is not one of 'septic'"),
        ("vitals:\n  sbp_mmhg: 80\n  dbp_mmhg: 90\n", "s.yaml", r"dbp_mmhg \(90\) is not below sbp_mmhg \(80\)"),
        ("patient:\n  pregnant: 1\n", "s.yaml", r"/patient/pregnant: 1 is not of type boolean"),
        ("- just\n- a list\n", "s.yaml", r"s.yaml:1:1 /: a patient state must be a mapping"),
        ("patient:\n  age_years: 60\npatient:\n  weight_kg: 2\n", "s.yaml", r"s.yaml:3:1 /patient: duplicate key 'patient'"),
    ],
)
def test_bad_patient_state_is_a_located_one_line_error(tmp_path, text, name, expected):
    result = run(["recommend", state_file(tmp_path, text, name)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert re.search(expected, result.stderr), result.stderr


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    result = run(["recommend", state_file(tmp_path, "\n".join(lines))])
    assert result.exit_code == 1
    assert "anchors and aliases are not allowed" in result.stderr


def test_oversized_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_DOCUMENT_BYTES + "\npatient: {}\n")
    result = run(["recommend", str(path)])
    assert result.exit_code == 1
    assert "larger than 1048576 bytes; refused" in result.stderr


def test_missing_file_and_stdin(tmp_path):
    result = run(["recommend", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "file not found" in result.stderr
    result = run(["recommend", "-", "--json"], stdin=json.dumps(GOOD))
    assert result.exit_code == 0 and json.loads(result.stdout)["recommendations"] is not None


def test_json_errors_go_to_stdout_as_data_with_every_problem(tmp_path):
    result = run(["recommend", state_file(tmp_path, "patient:\n  weight_kg: 0\n  age_years: 400\n"), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["error"] == "patient_state_error"
    assert {p["pointer"] for p in data["problems"]} == {"/patient/weight_kg", "/patient/age_years"}
    assert all("line" in p for p in data["problems"])


def test_usage_error_exit_code_2():
    result = run(["recommend"])
    assert result.exit_code == 2
    assert run(["recommend", "x.yaml", "--no-such-option"]).exit_code == 2


def test_evaluate_rejects_invalid_states_directly(pack, now):
    with pytest.raises(PatientStateError):
        evaluate(pack, {"vitals": {"map_mmhg": "65"}}, now=now)
    with pytest.raises(PatientStateError):
        evaluate(pack, {"vitals": {"map_mmhg": float("nan")}}, now=now)
    with pytest.raises(PatientStateError):
        evaluate(pack, {"vitals": {"map_mmhg": True}}, now=now)
    with pytest.raises(PatientStateError):
        evaluate(pack, [], now=now)


def test_parse_refuses_oversized_text():
    with pytest.raises(InputError, match="larger than"):
        parse("a: " + "x" * (MAX_DOCUMENT_BYTES + 1), file="t.yaml")


# --- rule packs --------------------------------------------------------------


@pytest.fixture
def pack_copy(tmp_path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    return target


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, count))


def problems(directory: Path) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        load_pack(directory, check_examples=True)
    return [str(p) for p in info.value.problems]


def test_duplicate_rule_ids_name_both_places(pack_copy):
    edit(pack_copy / "target.yaml", "id: target.no-map-85", "id: target.map-65")
    found = problems(pack_copy)
    assert any("duplicate rule id 'target.map-65' (first defined at" in p and "target.yaml:" in p for p in found), found


def test_unknown_fact_with_did_you_mean(pack_copy):
    edit(pack_copy / "escalation.yaml", "fact: infusions.vasopressin_units_min, op: \">\", value: 0.04", "fact: infusions.vasopressin_unit_min, op: \">\", value: 0.04")
    found = problems(pack_copy)
    assert any("escalation.yaml:" in p and "unknown fact 'infusions.vasopressin_unit_min' (did you mean 'infusions.vasopressin_units_min'?)" in p for p in found), found


def test_string_compared_with_number_fails_at_load(pack_copy):
    edit(pack_copy / "escalation.yaml", 'op: ">", value: 0.04', 'op: ">", value: "0.04"')
    found = problems(pack_copy)
    assert any("'0.04' is not a number" in p for p in found), found


def test_dangling_citation_number(pack_copy):
    edit(pack_copy / "target.yaml", "- {ref: 3, evidence: \"the only citation", "- {ref: 99, evidence: \"the only citation")
    found = problems(pack_copy)
    assert any("target.yaml:" in p and "citation [99] has no entry in references.yaml" in p for p in found), found


def test_one_broken_file_among_good_ones_is_named_with_its_line(pack_copy):
    (pack_copy / "zz-broken.yaml").write_text("rules:\n  - id: broken.rule\n    version: 1.0.0\n    status: approved\n   title: x\n")
    found = problems(pack_copy)
    assert len(found) == 1 and "zz-broken.yaml:5:" in found[0] and "malformed YAML" in found[0], found


def test_schema_error_in_a_rule_is_located(pack_copy):
    edit(pack_copy / "target.yaml", "severity: info", "severity: urgent")
    found = problems(pack_copy)
    assert any("target.yaml:" in p and "/rules/0/recommend/severity: 'urgent' is not one of" in p for p in found), found


def test_invalid_example_state_fails_validation(pack_copy):
    edit(pack_copy / "target.yaml", "state: {shock: {type: cardiogenic}}", "state: {shock: {type: cardiogenc}}")
    found = problems(pack_copy)
    assert any("'cardiogenc' is not one of" in p for p in found), found


def test_derived_cycle_is_an_error(pack_copy):
    edit(pack_copy / "derived.yaml", "when: {fact: patient.age_years, op: \"<\", value: 18}",
         "when: {fact: derived.hypoperfusion, op: \"==\", value: true}")
    edit(pack_copy / "derived.yaml", "{fact: perfusion.lactate_rising, op: \"==\", value: true}",
         "{fact: derived.pediatric, op: \"==\", value: true}")
    found = problems(pack_copy)
    assert any("cycle" in p and "derived.pediatric" in p for p in found), found


def test_validate_cli_reports_errors_and_warnings(pack_copy):
    ok = run(["validate", str(pack_copy)])
    assert ok.exit_code == 0
    assert "cites [6], which the source cites but does not list" in ok.stderr
    assert "cites [7]" in ok.stderr
    edit(pack_copy / "target.yaml", "- {ref: 3, evidence: \"the only citation", "- {ref: 99, evidence: \"the only citation")
    bad = run(["validate", str(pack_copy), "--json"])
    assert bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert data["valid"] is False and data["errors"][0]["line"] > 0
