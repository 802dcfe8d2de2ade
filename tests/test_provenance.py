"""Rule provenance: the bundled pack carries it, and a pack whose provenance is wrong fails to load, located."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pressor.engine.errors import RuleFileError
from pressor.engine.evaluation.evaluate import evaluate, release
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

SOURCE_SHA = "8011f740a5272ce9733bc804ccdbdde3d04d53fb153537f85da56329cc77e7b3"
#: Paragraphs per section of the source (blocks between blank lines; each bullet or numbered item counts as one).
PARAGRAPHS = {
    "How to Start a Norepinephrine Drip": 1,
    "Critical Pre-Administration Requirements": 2,
    "Line Placement and Administration Route": 2,
    "Preparation and Concentration": 2,
    "Initial Dosing": 3,
    "Target Blood Pressure and Titration": 3,
    "Monitoring Parameters": 7,
    "Escalation Strategy for Refractory Hypotension": 5,
    "Management of Extravasation": 1,
    "Critical Pitfalls to Avoid": 6,
    "Special Clinical Scenarios": 4,
}


# --- the bundled pack ---------------------------------------------------------

def test_every_rule_has_its_provenance(pack):
    assert pack.rules
    for rule in pack.rules:
        assert rule.author == "pressor clinical informatics team", rule.id
        assert rule.reviewers and all(r.endswith("(pending)") for r in rule.reviewers), rule.id
        assert rule.source_sha256 == pack.document["sha256"] == SOURCE_SHA, rule.id
        assert rule.status_history[-1].status == rule.status, rule.id
        assert all(h.comment for h in rule.status_history), rule.id
        dates = [h.date for h in rule.status_history]
        assert dates == sorted(dates), rule.id


def test_approved_rules_went_through_review_and_the_draft_says_why(pack):
    for rule in pack.rules:
        steps = [(h.date, h.status) for h in rule.status_history]
        if rule.status == "approved":
            # it starts as a draft, is approved once (through review, or directly for a safety fix, whose
            # comment says so), then gains one more approved entry per later version bump, which takes effect
            # with the pack that made it; dates never go back
            assert steps[0][1] == "draft", rule.id
            first = next(i for i, (_, status) in enumerate(steps) if status == "approved")
            assert all(status in ("draft", "in-review") for _, status in steps[1:first]), rule.id
            assert all(status == "approved" for _, status in steps[first:]), rule.id
            if "in-review" not in [status for _, status in steps[:first]]:
                assert "safety fix" in (rule.status_history[first].comment or ""), rule.id
            assert [d for d, _ in steps] == sorted(d for d, _ in steps), rule.id
            assert rule.effective == steps[-1][0]
    draft = pack.rule("titration.every-4h-0.5mg-h")
    assert draft.status == "draft"
    assert [h.status for h in draft.status_history] == ["draft", "draft"]
    assert "hepatorenal" in draft.status_history[0].comment


def test_source_paragraphs_exist_in_their_sections(pack):
    assert set(PARAGRAPHS) == set(pack.document["sections"])
    for rule in pack.rules:
        assert 1 <= rule.paragraph <= PARAGRAPHS[rule.section], rule.id


def test_manifest_hashes_every_file_and_the_pack(pack, now):
    manifest = pack.manifest()
    directory = Path(manifest["directory"])
    assert [f["name"] for f in manifest["files"]] == sorted(p.name for p in directory.glob("*.yaml"))
    for f in manifest["files"]:
        assert f["sha256"] == hashlib.sha256((directory / f["name"]).read_bytes()).hexdigest()
    joined = "".join(f"{f['name']}\0{f['sha256']}\n" for f in manifest["files"])
    assert manifest["sha256"] == hashlib.sha256(joined.encode()).hexdigest() == pack.sha256
    assert (manifest["name"], manifest["version"], manifest["rules"]) == (pack.name, pack.version, len(pack.rules))
    assert (manifest["author"], manifest["effective"]) == (pack.raw_pack["author"], pack.raw_pack["effective"])
    assert all(manifest["effective"] >= (r.effective or "") for r in pack.rules if r.status == "approved")
    result = evaluate(pack, {"patient": {"age_years": 60}, "vitals": {"sbp_mmhg": 65, "dbp_mmhg": 45}, "infusions": {"norepinephrine_mcg_kg_min": 0}}, now=now)
    assert result.pack["sha256"] == pack.sha256
    assert result.recommendations and all(r.rule_version == pack.rule(r.rule_id).version for r in result.recommendations)


# --- a pack with wrong provenance fails to load ---------------------------------

@pytest.fixture
def pack_copy(tmp_path):
    """A writable copy of the bundled pack; ``edit(file, old, new)`` changes one file's text."""
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))

    def edit(name: str, old: str, new: str) -> Path:
        path = target / name
        text = path.read_text()
        assert text.count(old) >= 1, old
        path.write_text(text.replace(old, new, 1))
        return path

    edit.dir = target
    # target.map-65, the rule these tests edit, as it was before its 2.0.0 bump (three history entries)
    edit("target.yaml", V2_ENTRY, "")
    edit("target.yaml", "    effective: 2026-11-30\n", "    effective: 2026-11-24\n")
    return edit


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def only_problem(directory: Path):
    with pytest.raises(RuleFileError) as info:
        load_pack(directory)
    assert len(info.value.problems) == 1, [str(p) for p in info.value.problems]
    return info.value.problems[0]


V2_ENTRY = ("      - {date: 2026-11-30, status: approved, by: pressor clinical informatics team, "
            "comment: \"2.0.0 (issue 8, item 1): adults only; children get target.pediatric-map\"}\n")
#: 3.0.0 returned every rule of the bundled pack to in-review (no clinical sign-off recorded).
REVIEW_ENTRY = ("      - {date: 2026-12-07, status: in-review, by: pressor clinical informatics team, comment: \"3.0.0 "
                "(protocol v3, item 6): returned to in-review: no clinical reviewer has recorded a decision; in force "
                "only under the pack's validation release\"}\n")
APPROVED_ENTRY = ("      - {date: 2026-11-24, status: approved, by: pressor clinical informatics team, "
                  "comment: \"approved for the bundled pack; sign-off by the listed clinical reviewers is pending\"}\n")


def test_last_status_history_entry_must_be_the_rules_status(pack_copy):
    path = pack_copy("target.yaml", REVIEW_ENTRY, "")
    problem = only_problem(pack_copy.dir)
    assert problem.file.endswith("target.yaml")
    assert problem.pointer == "/rules/0/status_history/2/status"
    assert problem.line == line_of(path, "approved for the bundled pack")
    assert problem.rule_id == "target.map-65"
    assert problem.message == "the last status_history entry is 'approved' but the rule's status is 'in-review'"
    assert "append an entry with status: in-review" in problem.suggestion


def test_source_sha256_must_match_the_source_document(pack_copy):
    path = pack_copy("target.yaml", f"paragraph: 1, sha256: {SOURCE_SHA}", f"paragraph: 1, sha256: {'ab' * 32}")
    problem = only_problem(pack_copy.dir)
    assert problem.pointer == "/rules/0/source/sha256"
    assert problem.line == line_of(path, "ababab")
    assert problem.message == ("source sha256 abababababab... is not the sha256 of the source document "
                               "in references.yaml (8011f740a527...)")
    assert "re-check it against the current source" in problem.suggestion
    assert str(problem).startswith(f"{problem.file}:{problem.line}:")


def test_a_rule_without_author_is_a_schema_error(pack_copy):
    path = pack_copy("target.yaml", "    author: pressor clinical informatics team\n", "")
    problem = only_problem(pack_copy.dir)
    assert problem.pointer == "/rules/0"
    assert problem.line == line_of(path, "- id: target.map-65")
    assert problem.message == "'author' is a required property"
    assert problem.suggestion == "add the missing key"


def test_a_source_without_sha256_is_a_schema_error(pack_copy):
    pack_copy("target.yaml", f", sha256: {SOURCE_SHA}", "")
    problem = only_problem(pack_copy.dir)
    assert problem.pointer == "/rules/0/source"
    assert problem.message == "'sha256' is a required property"


def test_status_history_dates_must_ascend(pack_copy):
    path = pack_copy("target.yaml", "- {date: 2026-11-22, status: in-review", "- {date: 2026-11-19, status: in-review")
    problem = only_problem(pack_copy.dir)
    assert problem.pointer == "/rules/0/status_history/1/date"
    assert problem.line == line_of(path, "2026-11-19")
    assert problem.message == "2026-11-19 is earlier than the entry before it (2026-11-20)"
    assert problem.suggestion == "list the status history oldest first"


def test_an_impossible_date_is_located_not_a_traceback(pack_copy):
    path = pack_copy("target.yaml", "    effective: 2026-11-24\n", "    effective: 2026-02-30\n")
    problem = only_problem(pack_copy.dir)
    assert problem.line == line_of(path, "2026-02-30")
    assert problem.message.startswith("'2026-02-30' is not a valid date")


def test_a_quoted_impossible_date_is_located(pack_copy):
    path = pack_copy("target.yaml", "- {date: 2026-11-22, status: in-review", "- {date: \"2026-11-31\", status: in-review")
    problem = only_problem(pack_copy.dir)
    assert problem.pointer == "/rules/0/status_history/1/date"
    assert problem.line == line_of(path, "2026-11-31")
    assert (problem.message, problem.suggestion) == ("'2026-11-31' is not a calendar date", "write YYYY-MM-DD")


def test_an_approved_version_cannot_take_effect_before_its_approval(pack_copy):
    pack_copy("target.yaml", REVIEW_ENTRY, "")
    pack_copy("target.yaml", "    status: in-review\n    title: Target MAP 65 mmHg\n", "    status: approved\n    title: Target MAP 65 mmHg\n")
    pack_copy("target.yaml", "    effective: 2026-11-24\n", "    effective: 2026-11-01\n")
    problem = only_problem(pack_copy.dir)
    assert problem.pointer == "/rules/0/effective"
    assert problem.message == "takes effect 2026-11-01, before it was approved (2026-11-24)"


def test_source_section_must_be_a_section_of_the_document(pack_copy):
    pack_copy("target.yaml", "source: {section: Target Blood Pressure and Titration, paragraph: 1",
              "source: {section: Target Blood Pressure and Titraton, paragraph: 1")
    problem = only_problem(pack_copy.dir)
    assert problem.pointer == "/rules/0/source/section"
    assert problem.suggestion == "did you mean 'Target Blood Pressure and Titration'?"


def test_a_corrected_history_loads(pack_copy):
    """The checks accept what they should: a rule moved back to in-review with a dated entry."""
    pack_copy("target.yaml", REVIEW_ENTRY, "      - {date: 2026-12-08, status: in-review, by: clinical pharmacist, comment: reopened}\n")
    copy = load_pack(pack_copy.dir)
    try:
        rule = copy.rule("target.map-65")
        assert rule.status == "in-review"
        assert rule.status_history[-1].to_dict() == {"date": "2026-12-08", "status": "in-review", "by": "clinical pharmacist", "comment": "reopened"}
    finally:
        release(copy)
