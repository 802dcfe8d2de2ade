"""Issue 11, items 1-4 and 6: what a careless user or an attacker feeds pressor is refused
with a located one-line message, never read wrongly and never a traceback or a 500.

1. duplicate JSON keys (patient states, bundles, hook requests, configs, rule and scenario files);
2. YAML 1.1 spellings and anchors in what pressor reads (the YAML 1.2 core-schema policy);
3. YAML tags, in every command that reads YAML;
4. nesting deeper than ``MAX_DEPTH``, in JSON and YAML;
6. conditions durable-rules cannot compile, named with their rule, file and line.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.errors import InputError, RuleFileError
from pressor.engine.evaluation.load import MAX_DEPTH, loads_json, parse
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

ROOT = Path(__file__).resolve().parent.parent
FHIR = ROOT / "examples" / "fhir"
NOW = ["--now", "2026-11-24T12:00:00Z", "--no-audit"]


def run(args, stdin=None):
    result = CliRunner().invoke(cli, args, input=stdin)
    assert "Traceback" not in result.output + result.stderr, result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def one_line_error(result, pattern: str) -> None:
    """Exit 1, nothing on stdout, and the first stderr line matches ``pattern``."""
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert re.search(pattern, first), result.stderr


@pytest.fixture
def pack_copy(tmp_path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    return target


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The CDS Hooks app in-process (no authentication: this is about bodies, not tokens)."""
    from fastapi.testclient import TestClient

    from pressor.service.app import Settings, create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRESSOR_AUDIT_DB", str(tmp_path_factory.mktemp("audit") / "audit.db"))
        with TestClient(create_app(Settings(insecure=True)), raise_server_exceptions=False) as client:
            yield client


# --- 1. duplicate JSON keys -------------------------------------------------------------

DUPLICATE_STATE = """{
  "patient": {
    "age_years": 68,
    "weight_kg": 72,
    "weight_kg": 7
  },
  "shock": {"type": "septic"},
  "vitals": {"map_mmhg": 58}
}
"""


def test_duplicate_json_key_in_a_patient_state_is_refused_with_its_line(tmp_path):
    result = run(["recommend", write(tmp_path, "dup.json", DUPLICATE_STATE), *NOW])
    one_line_error(result, r"^error: .*dup\.json:5:5 /patient/weight_kg: duplicate key 'weight_kg' \(each key may appear once; the first is at line 4\)$")


def test_duplicate_json_key_on_stdin_and_in_explain(tmp_path):
    one_line_error(run(["recommend", "-", *NOW], stdin=DUPLICATE_STATE), r"<stdin>:5:5 /patient/weight_kg: duplicate key")
    one_line_error(run(["explain", write(tmp_path, "dup.json", DUPLICATE_STATE), "--now", "2026-11-24T12:00:00Z"]),
                   r"dup\.json:5:5 /patient/weight_kg: duplicate key 'weight_kg'")


def test_duplicate_json_key_in_a_fhir_bundle(tmp_path):
    text = (FHIR / "septic-adult.json").read_text()
    doubled = text.replace('"resourceType": "Bundle",', '"resourceType": "Bundle",\n  "type": "collection",', 1)
    assert doubled != text
    result = run(["recommend", "--fhir", write(tmp_path, "b.json", doubled), *NOW])
    one_line_error(result, r"b\.json:5:3 /type: duplicate key 'type' \(each key may appear once; the first is at line 3\)")


def test_duplicate_json_key_in_a_hook_request_is_a_400_naming_key_and_line(service):
    body = '{"hook": "patient-view",\n "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",\n "hook": "order-select", "context": {}}'
    r = service.post("/cds-services/pressor-patient-view", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "malformed_json"
    assert r.json()["message"] == "duplicate key 'hook' at line 3 column 2 (/hook)"
    assert r.json()["problems"][0]["line"] == 3


def test_duplicate_json_key_in_a_service_config(tmp_path):
    from pressor.service.app import load_config

    path = write(tmp_path, "serve.json", '{"max_body_bytes": 1048576,\n "max_body_bytes": 5}\n')
    with pytest.raises(InputError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2:2 /max_body_bytes: duplicate key 'max_body_bytes' (each key may appear once; the first is at line 1)"


def test_duplicate_json_key_in_a_rule_file_written_as_json(pack_copy):
    (pack_copy / "extra.yaml").write_text('{"rules": [],\n "rules": []}\n')
    with pytest.raises(RuleFileError) as info:
        load_pack(pack_copy)
    assert any(p.file.endswith("extra.yaml") and p.line == 2 and p.message == "duplicate key 'rules'" for p in info.value.problems), info.value


def test_duplicate_json_key_in_a_scenario_file(tmp_path):
    path = write(tmp_path, "s.yaml", '{"scenarios": [{"name": "x", "name": "y", "state": {}, "fires": []}]}\n')
    one_line_error(run(["test", path, "--no-examples"]), r"s\.yaml:1:30 /scenarios/0/name: duplicate key 'name'")


def test_strict_json_is_the_only_json_reader():
    """Every JSON text from outside goes through load.py: no other json.load(s) on input in engine, service, cli."""
    allowed = {  # (file, why json.loads is fine there)
        "engine/evaluation/validate.py",  # the bundled schemas (package data)
        "engine/evaluation/wording.py",  # the bundled fact wording (package data)
        # the audit log's own canonical JSON, written by pressor (engine/audit/ since the package split)
        "engine/audit/records.py", "engine/audit/chain.py", "engine/audit/replay.py", "engine/audit/store.py",
        "service/app.py",  # Settings.from_env: written by `pressor serve` itself for its workers
        "service/ui/auth.py",  # the web app's session cookie: pressor's own JSON, parsed after its HMAC is checked
        "engine/ehr/terminology.py",  # the bundled value-set expansions (package data)
        "engine/ehr/valueset_build.py",  # a maintainer's generator of that package data, never run by pressor
    }
    offenders = []
    for folder in ("engine", "service", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            if rel == "engine/evaluation/load.py":
                continue
            if re.search(r"json\.loads?\(|\.json\(\)", text) and rel not in allowed:
                offenders.append(rel)
    assert offenders == []
    app = (ROOT / "service" / "app.py").read_text()
    assert app.count("json.loads(") == 0 and "loads_json(" in app  # the body goes through the strict loader


# --- 2. YAML 1.1 spellings, anchors: what a patient state may contain ----------------------

@pytest.mark.parametrize("line, pattern", [
    ("patient: {pregnant: no}", r"s\.yaml:1:21 /patient/pregnant: 'no' is not a boolean in YAML 1\.2 \(YAML 1\.1 reads it as false\) \(write true or false, or quote it if you mean the text\)"),
    ("perfusion: {altered_mental_status: on}", r"/perfusion/altered_mental_status: 'on' is not a boolean in YAML 1\.2 \(YAML 1\.1 reads it as true\)"),
    ("patient: {pregnant: Yes}", r"'Yes' is not a boolean in YAML 1\.2 \(YAML 1\.1 reads it as true\)"),
    ("patient: {weight_kg: 0x48}", r"s\.yaml:1:22 /patient/weight_kg: '0x48' is a hexadecimal number \(72\); pressor reads decimal numbers only \(write 72 if you mean it\)"),
    ("patient: {weight_kg: 0o110}", r"'0o110' is an octal number \(72\); pressor reads decimal numbers only"),
    ("patient: {age_years: 060}", r"/patient/age_years: '060' has a leading zero, which YAML 1\.1 reads as octal \(48\) \(write 60 without the leading zero\)"),
    ("patient: {weight_kg: 7_2}", r"'7_2' has a digit separator, which YAML 1\.1 reads as 72 and YAML 1\.2 as text \(write 72\)"),
    ("fluids: {hours_since_recognition: 1:30}", r"'1:30' is a YAML 1\.1 base-60 number \(90\) \(write a decimal number; quote it if it is a time of day\)"),
])
def test_yaml_1_1_spellings_are_refused_saying_what_was_read(tmp_path, line, pattern):
    one_line_error(run(["recommend", write(tmp_path, "s.yaml", line + "\n"), *NOW]), pattern)


def test_quoted_yes_is_text_and_the_schema_says_so(tmp_path):
    result = run(["recommend", write(tmp_path, "s.yaml", "patient: {pregnant: 'yes'}\n"), *NOW])
    one_line_error(result, r"/patient/pregnant: 'yes' is not of type boolean")


@pytest.mark.parametrize("text", [
    "patient: {weight_kg: &w 72, age_years: 60}\n",
    "patient: {weight_kg: &w 72, age_years: *w}\n",
    "vitals: &v {map_mmhg: 60}\n",
])
def test_anchors_of_any_kind_are_refused(tmp_path, text):
    one_line_error(run(["recommend", write(tmp_path, "s.yaml", text), *NOW]), r"s\.yaml:1:\d+ /\S*: YAML anchors and aliases are not allowed")


def test_yaml_1_2_core_scalars_are_read_as_written():
    doc = parse("a: true\nb: False\nc: ~\nd: 1e2\ne: -0.5\nf: 2026-11-24\ng: septic\nh: 0\ni: .5\nj: NULL\n", file="x.yaml")
    assert doc.data == {"a": True, "b": False, "c": None, "d": 100.0, "e": -0.5, "f": "2026-11-24", "g": "septic",
                        "h": 0, "i": 0.5, "j": None}


def test_the_docs_state_the_patient_state_policy_and_the_depth():
    readme = (ROOT / "docs" / "patient-state.md").read_text()
    assert "YAML 1.2 core schema" in readme
    assert f"{MAX_DEPTH} levels" in readme


# --- 3. YAML tags, in every command ------------------------------------------------------

@pytest.mark.parametrize("line, tag", [
    ("patient: {age_years: !foo 60}", "!foo"),
    ('patient: {age_years: !!timestamp "x"}', "!!timestamp"),
    ("patient: {age_years: !!python/object:os.system 60}", "!!python/object:os.system"),
    ("patient: !!map {age_years: 60}", "!!map"),
])
def test_a_tag_in_a_patient_state_is_refused_in_recommend_and_explain(tmp_path, line, tag):
    path = write(tmp_path, "s.yaml", line + "\n")
    expected = rf"s\.yaml:1:\d+ /patient\S*: YAML tags are not allowed \(found '{re.escape(tag)}'\) \(remove the tag"
    one_line_error(run(["recommend", path, *NOW]), expected)
    one_line_error(run(["explain", path, "--now", "2026-11-24T12:00:00Z"]), expected)


def test_a_tag_in_a_rule_file_is_refused_in_validate_lint_and_test(pack_copy):
    target = pack_copy / "target.yaml"
    text = target.read_text()
    target.write_text(text.replace("version: 1.0.0", "version: !!str 1.0.0", 1))
    line = next(i for i, l in enumerate(target.read_text().splitlines(), 1) if "!!str" in l)
    expected = rf"target\.yaml:{line}:\d+ /rules/\d+/version: YAML tags are not allowed \(found '!!str'\)"
    one_line_error(run(["validate", str(pack_copy)]), expected)
    # lint reports a file it cannot read as a finding, in its own file:line format
    one_line_error(run(["lint", str(pack_copy)]), rf"target\.yaml:{line}: error load-error: YAML tags are not allowed \(found '!!str'\)")
    one_line_error(run(["test", "--rules", str(pack_copy)]), expected)


def test_a_tag_in_a_scenario_file_is_refused_in_test(tmp_path):
    path = write(tmp_path, "s.yaml", "scenarios:\n  - name: !foo x\n    state: {}\n    fires: []\n")
    one_line_error(run(["test", path, "--no-examples"]), r"s\.yaml:2:11 /scenarios/0/name: YAML tags are not allowed \(found '!foo'\)")


# --- 4. nesting depth ----------------------------------------------------------------------

def nested_json(depth: int, *, key: str = "patient") -> str:
    return '{"%s": ' % key + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 100_000])
def test_a_deep_json_state_is_refused_before_anything_recurses(tmp_path, depth):
    result = run(["recommend", write(tmp_path, "deep.json", nested_json(depth)), *NOW])
    one_line_error(result, rf"deep\.json:1:{MAX_DEPTH + 12} /patient(/0)+: nested deeper than {MAX_DEPTH} levels; refused \(a patient state")


def test_a_state_at_the_limit_is_read_and_judged_by_the_schema(tmp_path):
    result = run(["recommend", write(tmp_path, "ok.json", nested_json(MAX_DEPTH)), *NOW])
    one_line_error(result, r"/patient: \[\[.*is not of type object")


@pytest.mark.parametrize("text", [
    "patient: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "".join(f"{'  ' * i}k{i}:\n" for i in range(300)) + "  " * 300 + "x: 1\n",
])
def test_deep_yaml_is_refused(tmp_path, text):
    one_line_error(run(["recommend", write(tmp_path, "deep.yaml", text), *NOW]),
                   rf"deep\.yaml:\d+:\d+( /\S+)?: nested deeper than {MAX_DEPTH} levels; refused")


def test_a_deep_bundle_is_refused(tmp_path):
    bundle = '{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Observation", "code": ' \
        + "[" * 250 + "]" * 250 + "}}]}"
    one_line_error(run(["recommend", "--fhir", write(tmp_path, "b.json", bundle), *NOW]),
                   rf"b\.json:1:\d+ /entry/0/resource/code(/0)+: nested deeper than {MAX_DEPTH} levels")


def test_a_deep_hook_request_is_a_400(service):
    body = '{"hook": "patient-view", "hookInstance": "x", "context": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = service.post("/cds-services/pressor-patient-view", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(f"nested deeper than {MAX_DEPTH} levels; refused at line 1 column ")


def test_a_deep_rule_condition_is_refused_at_load(pack_copy):
    deep = "{all: [" * 40 + "{fact: vitals.map_mmhg, op: '<', value: 65}" + "]}" * 40
    target = pack_copy / "target.yaml"
    text = target.read_text()
    target.write_text(text.replace("    when:\n      all:\n", f"    when: {deep}\n    unused:\n      all:\n", 1))
    with pytest.raises(RuleFileError) as info:
        load_pack(pack_copy)
    assert re.search(rf"target\.yaml:\d+:\d+ /rules/0/when[/a-z0-9]+: nested deeper than {MAX_DEPTH} levels", str(info.value)), info.value


def test_loads_json_refuses_deep_json_at_its_position():
    with pytest.raises(InputError) as info:
        loads_json("[" * 100_000 + "]" * 100_000, file="body")
    problem = info.value.problems[0]
    assert (problem.line, problem.column, problem.pointer) == (1, MAX_DEPTH + 1, "/0" * MAX_DEPTH)
    assert problem.message == f"nested deeper than {MAX_DEPTH} levels; refused"
    with pytest.raises(InputError) as info:  # deep but not past the recursion limit: json reads it, the check refuses it
        loads_json('{"a": ' + "[" * 500 + "]" * 500 + "}", file="body")
    assert (info.value.problems[0].column, info.value.problems[0].pointer) == (MAX_DEPTH + 6, "/a" + "/0" * (MAX_DEPTH - 1))
    assert loads_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, file="body") is not None


def test_strings_with_brackets_do_not_count_as_nesting():
    text = json.dumps({"a": "[" * 1000, "b": '\\"[[[' * 100})
    assert loads_json(text, file="x") == json.loads(text)


# --- 6. compile limits of durable-rules ----------------------------------------------------

def any_pairs_rule(pairs: int) -> str:
    facts = ["vitals.map_mmhg", "vitals.sbp_mmhg", "vitals.dbp_mmhg", "vitals.heart_rate_bpm",
             "perfusion.lactate_mmol_l", "perfusion.capillary_refill_s", "patient.age_years"]
    items = []
    for i in range(pairs):
        fact = facts[i % len(facts)]
        items.append(f"        - any: [{{fact: {fact}, op: '>', value: {i + 1}}}, {{fact: {fact}, op: '<', value: {i + 1000}}}]")
    return "\n".join(items) + "\n"


def rule_with(pack_copy: Path, pairs: int) -> tuple[Path, int]:
    target = pack_copy / "target.yaml"
    text = target.read_text()
    old = "        - {fact: shock.type, op: in, value: [septic, cardiogenic, anaphylactic, hypovolemic, other]}\n        - {fact: patient.chronic_hypertension, op: \"==\", value: false}\n"
    assert old in text
    target.write_text(text.replace(old, any_pairs_rule(pairs), 1))
    line = next(i for i, l in enumerate(target.read_text().splitlines(), 1) if l.strip() == "when:")
    return target, line


def test_fourteen_any_pairs_name_the_rule_its_line_and_the_fix(pack_copy):
    _, line = rule_with(pack_copy, 14)
    with pytest.raises(RuleFileError) as info:
        load_pack(pack_copy)
    assert len(info.value.problems) == 1  # the rule is not dropped: nothing naming it reports it missing
    problem = info.value.problems[0]
    assert (problem.file.endswith("target.yaml"), problem.line, problem.pointer, problem.rule_id) == (True, line, "/rules/0/when", "target.map-65")
    assert problem.message == ("rule 'target.map-65' is too complex for durable-rules: its condition compiles to 15 "
                               "all/any groups, and the engine takes at most 14 per rule (error 113)")
    assert problem.suggestion == ("count each all, any, negated all/any and 'in' list of two or more values as one group; "
                                  "move part of the condition into a derived fact in derived.yaml, or split the rule")


def test_thirteen_any_pairs_still_compile(pack_copy):
    rule_with(pack_copy, 13)
    load_pack(pack_copy)  # 14 groups: the engine's limit, reached and not passed


def test_the_cli_shows_the_limit_as_one_line(pack_copy):
    rule_with(pack_copy, 14)
    result = run(["validate", str(pack_copy)])
    one_line_error(result, r"target\.yaml:\d+:\d+ /rules/0/when: rule 'target\.map-65' is too complex for durable-rules")
    assert "<input>" not in result.stderr


def test_the_engine_group_limit_is_the_engines():
    """The predicted limit is the measured one: 14 groups compile, 15 are refused by durable-rules itself."""
    from pressor.engine.evaluation._durable import MAX_GROUPS_PER_RULE, Matcher, engine_groups

    def pairs(n):
        return {"$and": [{"$or": [{"$gt": {f"f{2 * i}": 1}}, {"$lt": {f"f{2 * i + 1}": 2}}]} for i in range(n)]}

    assert engine_groups(pairs(MAX_GROUPS_PER_RULE - 1)) == MAX_GROUPS_PER_RULE
    Matcher({"ok": pairs(MAX_GROUPS_PER_RULE - 1)}).close()
    with pytest.raises(RuleFileError) as info:  # the engine's own refusal, translated and attributed
        Matcher({"fine": pairs(2), "r": pairs(MAX_GROUPS_PER_RULE)})
    problem = info.value.problems[0]
    assert problem.rule_id == "r"
    assert problem.message == ("durable-rules refused rule 'r' (error 113: more all/any groups than the engine "
                               f"takes in one rule, at most {MAX_GROUPS_PER_RULE})")


# --- found by the fuzz test: what the input puts in a message stays on one line ------------------

SHOCK_TYPES = ", ".join(f"'{t}'" for t in json.loads((Path(__file__).resolve().parent.parent / "schemas" / "patient-state.schema.json")
                                                     .read_text())["properties"]["shock"]["properties"]["type"]["enum"])
PATIENT_KEYS = ", ".join(sorted(json.loads((Path(__file__).resolve().parent.parent / "schemas" / "patient-state.schema.json")
                                           .read_text())["properties"]["patient"]["properties"]))


def test_control_characters_from_the_input_are_escaped_in_messages(tmp_path):
    path = write(tmp_path, "nl.json", '{"patient": {"a\\nb": 1}, "shock": {"type": "x\\u001b[31mred"}}')
    result = run(["recommend", path, *NOW])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {path}:1:36 /shock/type: 'x\\x1b[31mred' is not one of {SHOCK_TYPES}",
        f"error: {path}:1:14 /patient/a\\nb: unknown key 'a\\nb' (expected one of: {PATIENT_KEYS})",
    ]


def test_an_engine_refusal_the_loader_did_not_predict_is_still_named_and_located(pack_copy, monkeypatch):
    """Were the prediction ever wrong, the engine's own refusal is attributed to the rule and located."""
    _, line = rule_with(pack_copy, 14)
    monkeypatch.setattr("pressor.engine.evaluation._durable.limit_problem", lambda key, cond: None)
    with pytest.raises(RuleFileError) as info:
        load_pack(pack_copy)
    problem = info.value.problems[0]
    assert (problem.line, problem.pointer, problem.rule_id) == (line, "/rules/0/when", "target.map-65")
    assert problem.message == ("durable-rules refused rule 'target.map-65' (error 113: more all/any groups than the engine "
                               "takes in one rule, at most 14)")


def test_a_coding_system_of_the_wrong_type_is_a_note_not_a_traceback(tmp_path, service):
    """Found by the fuzz test after item 5 landed: a component coding whose system is a list raised TypeError."""
    bundle = json.loads((FHIR / "septic-adult.json").read_text())
    for entry in bundle["entry"]:
        for comp in entry["resource"].get("component", []):
            comp["code"]["coding"][0]["system"] = ["http://loinc.org"]
    result = run(["recommend", "--fhir", write(tmp_path, "b.json", json.dumps(bundle)), *NOW])
    assert result.exit_code in (0, 1), result.stderr
    resources = [e["resource"] for e in bundle["entry"]]
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": {"patientId": "x"},
            "prefetch": {"patient": next(r for r in resources if r["resourceType"] == "Patient"),
                         "observations": {"resourceType": "Bundle", "type": "searchset",
                                          "entry": [{"resource": r} for r in resources if r["resourceType"] == "Observation"]}}}
    r = service.post("/cds-services/pressor-patient-view", json=body)
    assert r.status_code in (200, 400), r.text


def _nesting(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_nesting(v) for v in value), default=0)
    return 0


_TRICKY = st.sampled_from(['[', ']', '{', '}', '"', '\\', '\\"', '\\\\', 'é', '\n', 'a', '":[', '\\u005b'])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.lists(_TRICKY, max_size=6).map("".join),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.lists(_TRICKY, max_size=4).map("".join), inner, max_size=3),
    max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(value=_JSON, limit=st.integers(0, 8), ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_the_text_depth_check_agrees_with_the_parsed_nesting(value, limit, ascii_only, indent):
    """The C-speed depth check on the text (strings, escapes and brackets inside strings dropped) gives
    the nesting of the parsed value, for any JSON and any limit."""
    from pressor.engine.evaluation.load import _deeper_than

    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert _deeper_than(text, limit) == (_nesting(value) > limit)


# --- issue 24 item 4: text that cannot be encoded, cookies and state, timeline values ---------------

from tests.test_ui import local, post, reports, signed_in  # noqa: E402,F401  (the web app's fixtures)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("text, pointer", [
    ('{"patient": {"weight_kg": 70, "name": "a\\ud800b"}}', "/patient/name"),
    ('{"patient": {"weight_kg": 70}, "x\\udfff": 1}', "/x\\udfff"),
    ('{"findings": ["\\udc00"]}', "/findings/0"),
])
def test_half_a_character_is_refused_where_it_enters_naming_the_pointer(text, pointer):
    with pytest.raises(InputError) as caught:
        loads_json(text, file="state.json")
    problem = caught.value.problems[0]
    assert problem.pointer == pointer and "half a character" in problem.message


def test_half_a_character_in_yaml_is_refused_and_whole_pairs_are_kept():
    with pytest.raises(InputError):
        parse('patient:\n  name: "a\\ud800"\n', file="state.yaml")
    assert loads_json('{"x": "\\ud83d\\ude00"}', file="s.json") == {"x": "\U0001F600"}


def test_half_a_character_never_reaches_output_the_audit_log_or_a_batch(tmp_path, audit_db):
    state = tmp_path / "state.json"
    state.write_text('{"patient": {"weight_kg": 70, "age_years": 60}, "shock": {"type": "septic\\ud800"}}')
    result = CliRunner().invoke(cli, ["recommend", str(state), "--json"])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "half a character" in result.stdout + result.stderr and not audit_db.exists()
    lines = tmp_path / "states.jsonl"
    good = '{"patient": {"weight_kg": 70}}'
    lines.write_text("\n".join([good] * 4 + ['{"shock": {"type": "\\udfff"}}'] + [good] * 2) + "\n")
    result = CliRunner().invoke(cli, ["recommend", "--batch", str(lines), "--no-audit"])
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 7 and [a["ok"] for a in answers] == [True] * 4 + [False] + [True] * 2


def test_half_a_character_in_a_cds_hooks_body_is_a_400(service):
    body = b'{"hook": "patient-view", "hookInstance": "\\ud800", "context": {}}'
    answer = service.post("/cds-services/pressor-patient-view", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "half a character" in answer.text


@pytest.mark.parametrize("cookie", ["é.abc", "abc.é", "\u00ff" * 40 + ".x"])
def test_a_cookie_or_state_that_does_not_decode_means_not_signed_in(local, cookie):
    ctx, client = local
    assert ctx.auth.signer.unsign(cookie) is None
    page = client.get("/ui/", headers={"cookie": b"pressor_ui=" + cookie.encode("utf-8")})  # raw bytes, as a browser may
    assert page.status_code in (200, 401) and "Content-Security-Policy" in page.headers


def test_a_form_field_sent_twice_is_refused(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    page = post(client, "/ui/advice", [("patient.weight_kg", "70"), ("patient.weight_kg", "40"), ("csrf_token", csrf)],
                **{"hx-request": "true"})
    assert page.status_code == 400 and "patient.weight_kg" in page.text and "more than once" in page.text


@pytest.mark.parametrize("edit, message", [
    (("at: -3h, marker", "at: -99999999d, marker"), "is not a time within 3,650 days"),
    (("at: -3h, marker", "at: -99999999999999999999999h, marker"), "is not a time within"),
    (("at: -3h, marker", "at: 0001-01-01T00:00:00Z, marker"), "is not a time within"),
    (("perfusion.lactate_mmol_l, value: 3.2", 'perfusion.lactate_mmol_l, value: "low"'), "'low' is not of type number"),
    (("vitals.map_mmhg, value: 58", "vitals.map_mmhg, value: true"), "true is not of type number"),
    (("vitals.map_mmhg, value: 58", "vitals.map_mmhg, value: 9999"), "9999"),
])
def test_timeline_values_are_checked_before_any_arithmetic(tmp_path, edit, message):
    text = (EXAMPLES / "timeline" / "septic-persisting.yaml").read_text()
    assert edit[0] in text
    path = tmp_path / "timeline.yaml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    result = CliRunner().invoke(cli, ["recommend", str(path), "--no-audit"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and message in result.stderr, result.stderr[-400:]


# --- issue 24 item 6: strict SemVer -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["01.0.0", "1.00.0", "1.0.07", "1.0", "1.0.0.0", "\u0661.0.0", "1.0.0-"])
def test_a_rule_version_must_be_strict_semver(pack_copy, version):
    target = pack_copy
    path = target / "access.yaml"
    text = path.read_text()
    path.write_text(text.replace("version: 1.1.0", f"version: '{version}'", 1))
    result = CliRunner().invoke(cli, ["validate", str(target)])
    assert result.exit_code == 1 and "is not a semantic version" in result.stderr, result.stderr[-300:]
