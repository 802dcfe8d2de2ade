"""``pressor rules show|history|manifest``: provenance on the command line, human (stderr) and JSON (stdout)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.evaluation.pack import load_pack

SOURCE_SHA = "8011f740a5272ce9733bc804ccdbdde3d04d53fb153537f85da56329cc77e7b3"
TEAM = "pressor clinical informatics team"


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_rules_show_prints_the_provenance():
    res = run("rules", "show", "target.map-65")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines[0] == "target.map-65 v2.0.0 [in-review]: Target MAP 65 mmHg"
    assert lines[1].endswith("target.yaml:3; source section: Target Blood Pressure and Titration, paragraph 1")
    assert lines[2:9] == [
        f"  source document sha256: {SOURCE_SHA}",
        f"  author: {TEAM}; reviewers: clinical pharmacist (pending), critical care physician (pending), "
        "paediatric intensivist (pending)",
        "  effective: 2026-11-30",
        "  status history:",
        f"    2026-11-20  draft      by {TEAM}: encoded from the source section and paragraph named under source",
        f"    2026-11-22  in-review  by {TEAM}: condition, thresholds and citations checked against the source text",
        f"    2026-11-24  approved   by {TEAM}: approved for the bundled pack; sign-off by the listed clinical "
        "reviewers is pending",
    ]
    assert lines[9] == f"    2026-11-30  approved   by {TEAM}: 2.0.0 (issue 8, item 1): adults only; children get target.pediatric-map"
    assert lines[10].startswith(f"    2026-12-07  in-review  by {TEAM}: 3.0.0 (protocol v3, item 6): returned to in-review")
    assert ("    [3] Vasopressor Management in Septic Shock, 2026; cited for the 65 mmHg goal, and alone for calling "
            "it the floor for organ perfusion") in lines
    assert any(line.startswith("  note: 2.0.0 (item 1): the source sets no paediatric target") for line in lines)


def test_rules_show_json_carries_every_provenance_field():
    res = run("rules", "show", "access.peripheral-until-central", "--json")
    assert res.exit_code == 0
    assert res.stderr == ""
    data = json.loads(res.stdout)
    assert data["author"] == TEAM
    assert data["effective"] == "2026-11-30"
    assert [h["status"] for h in data["status_history"]] == ["draft", "in-review", "approved", "approved", "in-review"]
    assert data["source"] == {"section": "Line Placement and Administration Route", "paragraph": 1, "sha256": SOURCE_SHA}
    unresolved = next(c for c in data["citations"] if c["number"] == 6)
    assert unresolved["resolved"] is False
    assert unresolved["evidence"].startswith("cited for lack of central access being the main barrier")
    assert all(c["evidence"] for c in data["citations"])
    assert data["notes"] and len(data["pack"]["sha256"]) == 64


def test_rules_history_human_is_exact():
    res = run("rules", "history", "titration.every-4h-0.5mg-h")
    assert res.exit_code == 0
    assert res.stdout == ""
    assert res.stderr == (
        "titration.every-4h-0.5mg-h v1.1.0 [draft], effective 2026-11-20: Titrate by 0.5 mg/h every 4 hours (draft, disputed)\n"
        f"  2026-11-20  draft      by {TEAM}: kept as a draft on purpose: the source gives this 4-hourly schedule for "
        "titration in general, but it is the hepatorenal regimen and contradicts minute-to-minute titration in shock; "
        "not for use until a reviewer settles the contradiction\n"
        f"  2026-11-30  draft      by {TEAM}: 1.1.0 (issue 8): same condition, but the derived facts it reads changed in "
        "pack 2.0.0 (age-based hypotension, adult dosing from 50 kg, starts in children, anaphylaxis and hypovolaemia)\n"
    )


def test_rules_history_json():
    res = run("rules", "history", "special.hepatorenal", "--json")
    assert res.exit_code == 0
    assert res.stderr == ""
    data = json.loads(res.stdout)
    assert data["rule_id"] == "special.hepatorenal"
    assert (data["version"], data["status"], data["effective"]) == ("2.0.0", "in-review", "2026-11-30")
    assert data["status_history"][-4] == {
        "date": "2026-11-24", "status": "approved", "by": TEAM,
        "comment": "approved for the bundled pack; sign-off by the listed clinical reviewers is pending",
    }
    assert data["status_history"][-3]["comment"].startswith("1.1.0: adults only")
    assert data["status_history"][-2]["comment"].startswith("2.0.0 (issue 8, item 9)")
    assert data["status_history"][-1]["status"] == "in-review"
    assert data["status_history"][-1]["comment"].startswith("3.0.0 (protocol v3, item 6)")
    assert "hepatologist (pending)" in data["reviewers"]
    assert data["source"]["sha256"] == SOURCE_SHA


def test_rules_history_unknown_rule_suggests_the_closest():
    res = run("rules", "history", "special.hepatorenl")
    assert res.exit_code == 1
    assert "no rule 'special.hepatorenl'" in res.stderr and "(did you mean 'special.hepatorenal'?)" in res.stderr


def test_rules_manifest_json_hashes_every_file():
    res = run("rules", "manifest", "--json")
    assert res.exit_code == 0
    assert res.stderr == ""
    data = json.loads(res.stdout)
    directory = Path(data["directory"])
    pack = load_pack()
    assert (data["name"], data["rules"]) == (pack.name, len(pack.rules))
    assert [f["name"] for f in data["files"]] == sorted(p.name for p in directory.glob("*.yaml"))
    for f in data["files"]:
        assert f["sha256"] == hashlib.sha256((directory / f["name"]).read_bytes()).hexdigest()
    joined = "".join(f"{f['name']}\0{f['sha256']}\n" for f in data["files"])
    assert data["sha256"] == hashlib.sha256(joined.encode()).hexdigest()


def test_rules_manifest_human_lists_each_file_and_the_pack():
    data = json.loads(run("rules", "manifest", "--json").stdout)
    res = run("rules", "manifest")
    assert res.exit_code == 0
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines[0] == f"{data['name']} {data['version']}: {data['title']}"
    assert lines[1:3] == [f"  author: {data['author']}", f"  effective: {data['effective']}"]
    assert f"  {data['rules']} rules in {len(data['files'])} files" in lines
    for f in data["files"]:
        assert f"  {f['sha256']}  {f['name']}" in lines
    assert lines[-1] == f"  {data['sha256']}  (pack)"


def test_new_commands_have_help_with_an_example():
    for args in (("rules", "history", "-h"), ("rules", "manifest", "-h"), ("rules", "-h")):
        res = run(*args)
        assert res.exit_code == 0
        assert "Example:" in res.stdout
