"""pressor diff: a changed threshold with and without a version bump, on a copy of the 1.2.0 pack
(kept as test data, with the escalation scenarios of its time), and the bundled pack's thresholds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.evaluation.pack import load_pack
from pressor.engine.authoring.pack_diff import diff_packs, field_changes, thresholds

PACKS = Path(__file__).resolve().parent / "packs"
V1 = PACKS / "v1.2.0"
ESCALATION = str(PACKS / "v1.2.0-scenarios" / "escalation.yaml")


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(V1, target, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def _edit(path: Path, old: str, new: str, *, after: str = "") -> None:
    text = path.read_text()
    start = text.index(after) if after else 0
    at = text.index(old, start)
    path.write_text(text[:at] + new + text[at + len(old):])


def _raise_vasopressin_threshold(pack: Path, *, bump: bool) -> None:
    rule = "id: escalation.add-vasopressin"
    _edit(pack / "escalation.yaml", '{fact: infusions.norepinephrine_mcg_kg_min, op: ">=", value: 0.1}',
          '{fact: infusions.norepinephrine_mcg_kg_min, op: ">=", value: 0.2}', after=rule)
    if bump:
        _edit(pack / "escalation.yaml", "version: 1.0.0", "version: 1.1.0", after=rule)
        _edit(pack / "pack.yaml", "version: 1.2.0", "version: 1.3.0")


def diff(old: Path, new: Path, *extra: str):
    return CliRunner().invoke(cli, ["diff", str(old), str(new), "--scenarios", ESCALATION, *extra])


def test_threshold_change_without_version_bump_is_an_error(tmp_path):
    new = _copy(tmp_path, "new")
    _raise_vasopressin_threshold(new, bump=False)
    out = diff(V1, new, "--json")
    assert out.exit_code == 1 and out.stderr == ""
    data = json.loads(out.stdout)
    assert data["ok"] is False
    (change,) = [c for c in data["changed"] if c["kind"] == "rule"]
    assert change["id"] == "escalation.add-vasopressin" and change["old_version"] == change["new_version"] == "1.0.0"
    assert change["changes"] == [{"path": "when.all.0.value", "old": 0.1, "new": 0.2}]
    codes = {f["code"]: f["severity"] for f in data["findings"]}
    assert codes == {"diff-version-not-bumped": "error", "diff-pack-version-not-bumped": "warning"}
    (gone,) = data["behaviour"]["changes"]
    assert gone["rule_id"] == "escalation.add-vasopressin" and gone["change"] == "disappears"
    # the corpus patient on 0.15 loses the recommendation, and so do the boundary states at 0.1 and just above
    assert gone["states"] >= 3
    assert gone["example"]["facts"]["infusions.norepinephrine_mcg_kg_min"] < 0.2


def test_threshold_change_with_version_bump_passes_and_still_shows_behaviour(tmp_path):
    new = _copy(tmp_path, "new")
    _raise_vasopressin_threshold(new, bump=True)
    out = diff(V1, new)
    assert out.exit_code == 0 and out.stdout == ""
    assert "~ rule escalation.add-vasopressin 1.0.0 -> 1.1.0" in out.stderr
    assert "when.all.0.value: 0.1 -> 0.2" in out.stderr
    assert "escalation.add-vasopressin disappears in" in out.stderr
    assert "error" not in out.stderr


def test_dose_change_is_reported_as_a_dose_change(tmp_path):
    new = _copy(tmp_path, "new")
    rule = "id: escalation.add-epinephrine"
    _edit(new / "escalation.yaml", "range: {low: 0.1, high: 0.5, unit: mcg/kg/min}", "range: {low: 0.05, high: 0.5, unit: mcg/kg/min}", after=rule)
    _edit(new / "escalation.yaml", "version: 1.0.0", "version: 1.0.1", after=rule)
    _edit(new / "pack.yaml", "version: 1.2.0", "version: 1.2.1")
    result = diff_packs(load_pack(V1), load_pack(new), [ESCALATION])
    assert result.ok
    (dose,) = result.behaviour
    assert (dose.rule_id, dose.change) == ("escalation.add-epinephrine", "dose")
    assert dose.example["old_dose"]["range"]["low"] == 0.1 and dose.example["new_dose"]["range"]["low"] == 0.05


def test_added_and_removed_rules_and_a_version_going_down(tmp_path):
    new = _copy(tmp_path, "new")
    (new / "titration.yaml").unlink()
    _edit(new / "special.yaml", "version: 1.1.0", "version: 1.0.0")
    _edit(new / "pack.yaml", "version: 1.2.0", "version: 1.3.0")
    result = diff_packs(load_pack(V1), load_pack(new), [ESCALATION])
    assert result.removed == ["titration.every-4h-0.5mg-h"] and result.added == []
    assert [f.code for f in result.findings] == ["diff-version-decreased"]
    assert not result.ok
    assert any(b.rule_id == "titration.every-4h-0.5mg-h" and b.change == "disappears" for b in result.behaviour)


def test_derived_change_names_the_rules_it_decides(tmp_path):
    new = _copy(tmp_path, "new")
    _edit(new / "derived.yaml", '{fact: patient.age_years, op: "<", value: 18}', '{fact: patient.age_years, op: "<", value: 16}')
    _edit(new / "pack.yaml", "version: 1.2.0", "version: 1.3.0")
    result = diff_packs(load_pack(V1), load_pack(new), [str(PACKS / "v1.2.0-scenarios" / "pediatric.yaml")])
    (finding,) = result.findings
    assert finding.code == "diff-derived-changed" and "norepinephrine.dose-pediatric" in finding.message
    moved = {(b.rule_id, b.change) for b in result.behaviour}
    assert ("norepinephrine.dose-adult", "appears") in moved and ("norepinephrine.dose-pediatric", "disappears") in moved


def test_identical_packs_have_no_difference():
    out = diff(V1, V1)
    assert out.exit_code == 0
    assert "no recommendation appears, disappears or changes dose" in out.stderr


def test_thresholds_include_the_map_target_cases(pack):
    found = thresholds(pack)
    assert {("derived.map_mmhg", 65.0), ("derived.map_mmhg", 70.0), ("derived.crystalloid_ml", 1000.0),
            ("infusions.norepinephrine_mcg_kg_min", 0.25), ("vitals.sbp_mmhg", 60.0), ("vitals.sbp_mmhg", 90.0)} <= found


@pytest.mark.parametrize("old, new, paths", [
    ({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": [1, 3]}}, ["b.c"]),
    ({"when": {"all": [{"fact": "x", "value": 1}]}}, {"when": {"all": [{"fact": "x", "value": 2}]}}, ["when.all.0.value"]),
    ({"notes": ["a"]}, {}, ["notes"]),
])
def test_field_changes(old, new, paths):
    assert [c.path for c in field_changes(old, new)] == paths


def test_every_diff_code_is_documented_for_authors():
    from pressor.engine.authoring.pack_diff import DIFF_CODES

    guide = (Path(__file__).resolve().parent.parent / "docs" / "authoring.md").read_text()
    assert all(f"`{code}`" in guide for code in DIFF_CODES)
