"""pressor new-rule: a draft rule with the pack's provenance that loads at once; bad ids are refused, nothing written."""
from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.evaluation.pack import default_rules_dir, load_pack


def _copy(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules, ignore=shutil.ignore_patterns("__init__.py", "__pycache__", "fhir"))
    return rules


def test_the_scaffold_carries_the_packs_provenance_and_loads(tmp_path):
    rules = _copy(tmp_path)
    (tmp_path / "scenarios").mkdir()
    out = CliRunner().invoke(cli, ["new-rule", "monitoring.check-lactate-again", "--rules", str(rules), "--scenarios",
                                   str(tmp_path / "scenarios"), "--date", "2026-12-08", "--json"])
    assert out.exit_code == 0, out.output
    made = json.loads(out.stdout)
    assert made["file"].endswith("monitoring.yaml") and made["scenario_file"].endswith("monitoring.yaml")
    pack = load_pack(rules, check_examples=True, cache=False)
    rule = pack.rule("monitoring.check-lactate-again")
    assert (rule.status, rule.version, rule.effective) == ("draft", "1.0.0", "2026-12-08")
    assert rule.author == pack.raw_pack["author"] and rule.reviewers
    assert rule.source_sha256 == pack.document["sha256"]
    assert [h.status for h in rule.status_history] == ["draft"]
    assert {ex["expect"] for ex in rule.raw["examples"]} == {"fires", "does_not_fire"}
    test = CliRunner().invoke(cli, ["test", str(tmp_path / "scenarios"), "--rules", str(rules)])
    assert test.exit_code == 0, test.output


def test_a_new_family_gets_its_own_file(tmp_path):
    rules = _copy(tmp_path)
    out = CliRunner().invoke(cli, ["new-rule", "rescue.angiotensin-ii", "--rules", str(rules), "--scenarios", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert (rules / "rescue.yaml").exists() and (tmp_path / "rescue.yaml").exists()
    assert load_pack(rules, check_examples=True, cache=False).rule("rescue.angiotensin-ii").status == "draft"


def test_an_existing_or_malformed_id_is_refused_and_nothing_is_written(tmp_path):
    rules = _copy(tmp_path)
    before = {p.name: p.read_text() for p in rules.glob("*.yaml")}
    for rule_id, words in (("escalation.add-vasopressin", "already exists"), ("Escalation.New", "is not a rule id"),
                           ("nofamily", "is not a rule id")):
        out = CliRunner().invoke(cli, ["new-rule", rule_id, "--rules", str(rules)])
        assert out.exit_code == 1 and words in out.stderr, out.output
    assert {p.name: p.read_text() for p in rules.glob("*.yaml")} == before
