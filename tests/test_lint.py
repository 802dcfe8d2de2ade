"""pressor lint: the bundled pack lints clean, each broken pack shows exactly its code, and every witness holds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.errors import RuleFileError
from pressor.engine.evaluation.evaluate import evaluate, flatten_state
from pressor.engine.authoring.lint import CODES, Finding, lint_pack
from pressor.engine.evaluation.logic import derive, truth
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

LINT_PACKS = Path(__file__).resolve().parent / "lint_packs"
CASES = sorted(p.name for p in LINT_PACKS.iterdir() if p.is_dir())
#: A sound pack linted with a tiny search budget is how the solver's limit is exercised.
BUDGETS = {"solver-incomplete": 3}
#: A case whose finding needs a site profile keeps it beside the pack (not a .yaml: not a rule file).
PROFILES = {"profile-out-of-range": "site.profile"}


@pytest.fixture(scope="module")
def bundled():
    return lint_pack()


@pytest.fixture(scope="module")
def broken():
    return {name: lint_pack(LINT_PACKS / name, budget=BUDGETS.get(name, 200_000),
                            profile=LINT_PACKS / name / PROFILES[name] if name in PROFILES else None) for name in CASES}


def test_every_code_has_a_broken_pack():
    assert set(CASES) == set(CODES)


def test_bundled_pack_has_no_error(bundled):
    assert bundled.ok, [f.message for f in bundled.findings if f.severity == "error"]
    codes = {f.code for f in bundled.findings}
    assert {"arithmetic-stated-equivalent-mismatch", "citation-unresolved"} <= codes
    assert "waiver-unused" not in codes


def test_bundled_stated_equivalent_is_a_warning_with_the_computed_figures(bundled):
    (f,) = [f for f in bundled.findings if f.code == "arithmetic-stated-equivalent-mismatch"]
    assert f.severity == "warning" and f.rules == ("norepinephrine.dose-adult",)
    assert f.file.endswith("norepinephrine.yaml") and f.line
    assert "1.4-3.5 mcg/min" in f.message and "0.084-0.21 mg/h" in f.message
    assert f.details["computed"] == ["0.084-0.21 mg/h", "1.4-3.5 mcg/min"]
    assert f.details["stated"] == ["0.5 mg/h", "8-12 mcg/min"]


def test_bundled_contradictions_are_all_reviewed(bundled):
    """Pack 2.0.0 has no gap and no contradiction between approved rules; the one left is with the disputed draft."""
    found = [f for f in bundled.findings if f.code.startswith(("contradiction", "gap"))]
    assert [(f.code, f.severity, f.rules) for f in found] == [
        ("contradiction-dose", "warning", ("norepinephrine.titrate", "titration.every-4h-0.5mg-h"))]
    assert all(f.witness for f in found)
    assert not [f for f in bundled.findings if f.severity == "error"]


def test_profile_is_checked_against_ranges_then_linted_with(tmp_path):
    report = lint_pack(LINT_PACKS / "profile-out-of-range", profile=LINT_PACKS / "profile-out-of-range" / "site.profile")
    messages = [f.message for f in report.findings if f.code == "profile-out-of-range"]
    assert any("0.8 mcg/kg/min is outside its allowed range 0.1-0.5" in m for m in messages)
    assert any("no parameter 'vasopresin_units'" in m for m in messages)
    assert all(f.file.endswith("site.profile") and f.line for f in report.findings if f.code == "profile-out-of-range")
    good = tmp_path / "ok.yaml"
    good.write_text("profile: {name: ok}\nparameters: {vasopressin_start_norepinephrine_mcg_kg_min: 0.2}\n")
    assert lint_pack(LINT_PACKS / "profile-out-of-range", profile=good).ok


@pytest.mark.parametrize("name", CASES)
def test_broken_pack_reports_exactly_its_code(name, broken):
    report = broken[name]
    codes = {f.code for f in report.findings}
    assert name in codes, [f.code for f in report.findings]
    other_errors = {f.code for f in report.findings if f.severity == "error"} - {name}
    assert not other_errors
    mine = [f for f in report.findings if f.code == name]
    assert all(f.file and f.message for f in mine)
    assert all(f.severity == CODES[name][0] for f in mine if name != "status-retired-referenced")


def _confirm(pack, finding: Finding, now) -> None:
    if finding.code.startswith("contradiction"):
        drafts = any(pack.rule(r).status != "approved" for r in finding.rules)
        result = evaluate(pack, finding.witness, now=now, include_draft=drafts)
        assert set(finding.rules) <= set(result.fired_ids()), (finding.code, finding.rules)
    elif finding.code == "gap-decision":
        decision = next(d for d in pack.decisions if d.id == finding.details["decision"])
        result = evaluate(pack, finding.witness, now=now)
        facts = flatten_state(finding.witness)
        derive(pack.derived, facts)
        assert truth(decision.population, facts) is True
        assert set(finding.rules).isdisjoint(result.fired_ids())
        assert set(finding.rules).isdisjoint(n.rule_id for n in result.not_evaluable)
    elif finding.code == "absent-means-hides-rule":
        # Recorded as "none", the rule fires; left out, the declaration lists it as not applicable.
        assert set(finding.rules) <= set(evaluate(pack, finding.witness, now=now).fired_ids())
        (decl,) = [d for d in pack.absent_means if d.file == finding.file and d.line == finding.line]
        absent = {k: {f: v for f, v in sec.items() if f"{k}.{f}" != decl.fact} if isinstance(sec, dict) else sec
                  for k, sec in finding.witness.items() if k != decl.fact}
        result = evaluate(pack, absent, now=now)
        assert set(finding.rules) <= {n.rule_id for n in result.not_applicable}
    else:
        raise AssertionError(f"unexpected witness on {finding.code}")


def test_every_witness_is_confirmed_by_evaluate(bundled, broken, now):
    checked = 0
    for directory, report in [(default_rules_dir(), bundled)] + [(LINT_PACKS / n, r) for n, r in broken.items()]:
        witnessed = [f for f in report.findings if f.witness is not None]
        pack = load_pack(directory) if witnessed else None
        for f in witnessed:
            _confirm(pack, f, now)
            checked += 1
    assert checked >= 5  # the broken packs' witnesses and the bundled pack's one waived gap


def test_unreachable_names_the_conflict_and_the_schema_range(broken):
    messages = {f.rules[0]: f.message for f in broken["unreachable-rule"].findings}
    assert "vitals.map_mmhg < 60; vitals.map_mmhg > 70" in messages["case.never"]
    assert "[10, 250]" in messages["case.below-range"]


def test_waived_stated_equivalent_becomes_a_warning_only_with_the_note(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(LINT_PACKS / "arithmetic-stated-equivalent-mismatch", pack)
    text = (pack / "rules.yaml").read_text()
    (pack / "rules.yaml").write_text(text + "    notes: [\"CONTRADICTION in the source: recorded for review\"]\n")
    (f,) = [f for f in lint_pack(pack).findings if f.code == "arithmetic-stated-equivalent-mismatch"]
    assert f.severity == "warning"


def test_supersedes_removes_the_pair_from_the_findings(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(LINT_PACKS / "contradiction-dose", pack)
    text = (pack / "rules.yaml").read_text()
    marker = "  - id: case.dose-high\n    version: 1.0.0\n    status: approved\n    title: Rule case.dose-high\n    source: {section: Test, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"}\n"
    assert marker in text
    (pack / "rules.yaml").write_text(text.replace(marker, marker + "    supersedes: [case.dose-low]\n"))
    assert "contradiction-dose" not in {f.code for f in lint_pack(pack).findings}


@pytest.mark.parametrize("supersedes, message", [
    ("[case.nowhere]", "no rule 'case.nowhere'"),
    ("[case.dose-high]", "cannot supersede itself"),
])
def test_supersedes_is_checked_when_the_pack_loads(tmp_path, supersedes, message):
    pack = tmp_path / "pack"
    shutil.copytree(LINT_PACKS / "contradiction-dose", pack)
    text = (pack / "rules.yaml").read_text()
    marker = "    title: Rule case.dose-high\n    source: {section: Test, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"}\n"
    (pack / "rules.yaml").write_text(text.replace(marker, marker + f"    supersedes: {supersedes}\n"))
    with pytest.raises(RuleFileError) as err:
        load_pack(pack)
    assert message in str(err.value)


def test_supersedes_cycle_is_refused(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(LINT_PACKS / "contradiction-dose", pack)
    text = (pack / "rules.yaml").read_text()
    for me, other in (("case.dose-high", "case.dose-low"), ("case.dose-low", "case.dose-high")):
        marker = f"    title: Rule {me}\n    source: {{section: Test, sha256: \"{'0' * 64}\"}}\n"
        text = text.replace(marker, marker + f"    supersedes: [{other}]\n")
    (pack / "rules.yaml").write_text(text)
    with pytest.raises(RuleFileError, match="cycle"):
        load_pack(pack)


def test_decision_naming_an_unknown_rule_is_refused(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(LINT_PACKS / "gap-decision", pack)
    text = (pack / "rules.yaml").read_text().replace("rules: [case.map-70]", "rules: [case.map-7]")
    (pack / "rules.yaml").write_text(text)
    with pytest.raises(RuleFileError, match="did you mean 'case.map-70'"):
        load_pack(pack)


# --- CLI ------------------------------------------------------------------------

def test_cli_lint_bundled_pack_exits_0_with_text_on_stderr():
    out = CliRunner().invoke(cli, ["lint"])
    assert out.exit_code == 0 and out.stdout == ""
    assert "warning arithmetic-stated-equivalent-mismatch" in out.stderr
    assert out.stderr.rstrip().splitlines()[-1].startswith("lint norepinephrine-refractory-hypotension")


def test_cli_lint_json_is_machine_output_only():
    out = CliRunner().invoke(cli, ["lint", str(LINT_PACKS / "contradiction-do-avoid"), "--json"])
    assert out.exit_code == 1 and out.stderr == ""
    data = json.loads(out.stdout)
    assert data["ok"] is False and data["counts"]["error"] == 1
    (f,) = data["findings"]
    assert f["code"] == "contradiction-do-avoid" and f["rules"] == ["case.start", "case.stop"]
    assert f["witness"] == {"vitals": {"map_mmhg": 59}} and f["line"] == 3


def test_cli_lint_load_error_exits_1_with_location():
    out = CliRunner().invoke(cli, ["lint", str(LINT_PACKS / "load-error")])
    assert out.exit_code == 1
    assert "rules.yaml:8: error load-error: unknown fact 'vitals.map'" in out.stderr


def test_cli_lint_missing_directory_is_an_input_error(tmp_path):
    out = CliRunner().invoke(cli, ["lint", str(tmp_path / "nope")])
    assert out.exit_code == 1 and "rule directory not found" in out.stderr


def test_every_code_is_documented_for_authors():
    guide = (Path(__file__).resolve().parent.parent / "docs" / "authoring.md").read_text()
    assert all(f"`{code}`" in guide for code in CODES)


def test_overlap_without_a_plausible_patient_is_only_a_warning(tmp_path):
    """MAP above 100 with systolic below 90 is schema-valid but not a real patient: no witness, warning only."""
    pack = tmp_path / "pack"
    shutil.copytree(LINT_PACKS / "contradiction-do-avoid", pack)
    text = (pack / "rules.yaml").read_text()
    text = text.replace('{fact: vitals.map_mmhg, op: "<", value: 65}', '{fact: vitals.map_mmhg, op: ">", value: 100}')
    text = text.replace('{fact: vitals.map_mmhg, op: "<", value: 60}', '{fact: vitals.sbp_mmhg, op: "<", value: 90}')
    (pack / "rules.yaml").write_text(text)
    (f,) = lint_pack(pack).findings
    assert f.code == "contradiction-do-avoid" and f.severity == "warning" and f.witness is None
    assert "no plausible example" in f.message


def test_pint_stays_off_the_evaluation_path():
    import subprocess
    import sys

    code = ("import sys; from pressor.cli.main import cli; from pressor.engine.evaluation.pack import load_pack; "
            "from pressor.engine.evaluation.evaluate import evaluate; import datetime as d; "
            "evaluate(load_pack(), {}, now=d.datetime.now(d.timezone.utc)); print('pint' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_dose_unit_the_rule_explains_is_a_reviewed_warning(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(LINT_PACKS / "dose-unit-implausible", pack)
    text = (pack / "rules.yaml").read_text()
    (pack / "rules.yaml").write_text(text.replace("unit: mcg/kg/h}}", "unit: mcg/kg/h}, unit_reason: a depot given over hours}"))
    report = lint_pack(pack)
    (finding,) = [f for f in report.findings if f.code == "dose-unit-implausible"]
    assert report.ok and finding.severity == "warning" and "a depot given over hours" in finding.message


def test_the_bundled_pack_declares_every_drug_it_doses_and_explains_its_one_odd_unit(bundled):
    mine = [f for f in bundled.findings if f.code.startswith("dose-")]
    assert [(f.code, f.rules, f.severity) for f in mine] == [
        ("dose-unit-implausible", ("preparation.pediatric-rule-of-6",), "warning")]
