"""What every rule pack must satisfy, checked on the bundled pack and on a copy with one correct rule added
the way an informaticist would (``pressor new-rule`` and edits: tests/new_rule_pack.py). Nothing here counts
rules or names dates: adding a correct rule to ``rules/`` breaks none of these tests (issue 23)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.authoring.lint import lint_pack
from pressor.engine.authoring.scenarios import coverage, example_scenarios, load_scenarios, run_scenario
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

from .new_rule_pack import RULE_ID, build

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


@pytest.fixture(scope="module", params=["bundled", "with-new-rule"])
def pack_dirs(request, tmp_path_factory) -> tuple[Path, Path]:
    """(rules, scenarios) of the pack under test."""
    if request.param == "bundled":
        return default_rules_dir(), SCENARIOS
    return build(tmp_path_factory.mktemp("new-rule"))


@pytest.fixture(scope="module")
def a_pack(pack_dirs):
    return load_pack(pack_dirs[0], check_examples=True, cache=False)


def test_the_added_rule_is_in_the_copy_only(pack_dirs, a_pack):
    assert (pack_dirs[0] != default_rules_dir()) == any(r.id == RULE_ID for r in a_pack.rules)


def test_validate_lint_and_test_with_coverage_are_green(pack_dirs):
    rules, scenarios = (str(p) for p in pack_dirs)
    runner = CliRunner()
    assert runner.invoke(cli, ["validate", rules]).exit_code == 0
    lint = runner.invoke(cli, ["lint", rules, "--json"])
    assert lint.exit_code == 0, [f["message"] for f in json.loads(lint.stdout)["findings"] if f["severity"] == "error"]
    test = runner.invoke(cli, ["test", scenarios, "--rules", rules, "--coverage", "--min-coverage", "100", "--json"])
    data = json.loads(test.stdout)
    assert test.exit_code == 0 and data["ok"], data["counts"]
    assert data["coverage"]["rules"]["missing"] == {}


def test_lint_finds_no_error(pack_dirs):
    report = lint_pack(pack_dirs[0])
    assert report.ok, [f.message for f in report.findings if f.severity == "error"]


def test_every_rule_has_its_provenance(a_pack):
    for rule in a_pack.rules:
        assert rule.author and rule.reviewers, rule.id
        assert rule.source_sha256 == a_pack.document["sha256"], rule.id
        assert rule.status_history[-1].status == rule.status, rule.id
        assert all(h.comment for h in rule.status_history), rule.id
        dates = [h.date for h in rule.status_history]
        assert dates == sorted(dates), rule.id


def test_approved_rules_went_through_review(a_pack):
    for rule in a_pack.rules:
        steps = [(h.date, h.status) for h in rule.status_history]
        if rule.status == "approved":
            # a draft first, approved once (through review, or directly for a safety fix, whose comment says
            # so), then one more approved entry per later version bump, taking effect with its pack
            assert steps[0][1] == "draft", rule.id
            first = next(i for i, (_, status) in enumerate(steps) if status == "approved")
            assert all(status in ("draft", "in-review") for _, status in steps[1:first]), rule.id
            assert all(status == "approved" for _, status in steps[first:]), rule.id
            if "in-review" not in [status for _, status in steps[:first]]:
                assert "safety fix" in (rule.status_history[first].comment or ""), rule.id
            assert rule.effective == steps[-1][0]


def test_every_citation_has_an_evidence_note(a_pack):
    owners = [(r.id, r.raw["citations"]) for r in a_pack.rules]
    owners += [(d.name, d.raw.get("citations", [])) for d in a_pack.derived]
    owners += [(p.id, p.raw["citations"]) for p in a_pack.preparations]
    for owner, citations in owners:
        assert citations or owner.startswith("derived."), owner
        for c in citations:
            assert len(c.get("evidence", "")) >= 20, (owner, c)


def test_manifest_hashes_every_file_and_the_pack(a_pack):
    manifest = a_pack.manifest()
    directory = Path(manifest["directory"])
    assert [f["name"] for f in manifest["files"]] == sorted(p.name for p in directory.glob("*.yaml"))
    for f in manifest["files"]:
        assert f["sha256"] == hashlib.sha256((directory / f["name"]).read_bytes()).hexdigest()
    joined = "".join(f"{f['name']}\0{f['sha256']}\n" for f in manifest["files"])
    assert manifest["sha256"] == hashlib.sha256(joined.encode()).hexdigest() == a_pack.sha256
    assert (manifest["name"], manifest["version"], manifest["rules"]) == (a_pack.name, a_pack.version, len(a_pack.rules))
    assert all(manifest["effective"] >= (r.effective or "") for r in a_pack.rules if r.status == "approved")


def test_every_rule_has_passing_firing_and_non_firing_examples(a_pack):
    examples = example_scenarios(a_pack)
    assert {s.name.split("::")[0] for s in examples} == {r.id for r in a_pack.rules}
    for rule in a_pack.rules:
        assert {"fires", "does_not_fire"} <= {ex["expect"] for ex in rule.raw.get("examples", [])}, rule.id
    failed = [(s.name, [f.describe() for f in o.failures]) for s in examples if not (o := run_scenario(a_pack, s)).ok]
    assert not failed


def test_the_scenarios_alone_cover_every_rule_outcome(a_pack, pack_dirs):
    cov = coverage(a_pack, load_scenarios([pack_dirs[1]], a_pack))
    assert cov.missing_rules() == {} and cov.rule_percent() == 100.0
