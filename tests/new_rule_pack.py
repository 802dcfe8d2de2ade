"""A copy of the bundled pack with one correct rule added as an informaticist would (issue 23): through
``pressor new-rule``, then by editing the scaffold: the angiotensin-II / methylene-blue rescue above
norepinephrine 0.5 mcg/kg/min, two new references, examples, scenarios, the pack's minor version bumped.

The pack-independent tests run against it as well as against the bundled pack (``tests/test_pack_properties.py``):
adding a correct rule must break none of them."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.evaluation.pack import default_rules_dir

ROOT = Path(__file__).resolve().parent.parent
RULE_ID = "escalation.angiotensin-ii-rescue"
DAY = "2026-12-07"

ADULT_BELOW_TARGET = "patient: {age_years: 60, weight_kg: 80, chronic_hypertension: false}, shock: {type: septic}, vitals: {map_mmhg: 58}"

RULE = f"""  - id: {RULE_ID}
    version: 1.0.0
    status: in-review
    title: Consider angiotensin II or methylene blue as rescue
    author: "pressor clinical informatics team"
    reviewers: ["clinical pharmacist (pending)", "critical care physician (pending)"]
    effective: {DAY}
    status_history:
      - {{date: {DAY}, status: draft, by: "pressor clinical informatics team", comment: "encoded with pressor new-rule from the rescue-therapy references"}}
      - {{date: {DAY}, status: in-review, by: "pressor clinical informatics team", comment: "threshold and citations checked against both references"}}
    source: {{section: "Escalation Strategy for Refractory Hypotension", paragraph: 2, sha256: {{sha}}}}
    when:
      all:
        - {{fact: infusions.norepinephrine_mcg_kg_min, op: ">", value: 0.5}}
        - {{fact: derived.below_map_target, op: "==", value: true}}
        - {{fact: derived.pediatric_dosing, op: "==", value: false}}
        - {{fact: shock.type, op: in, value: [septic]}}
    recommend:
      kind: consider
      severity: warning
      summary: "Norepinephrine above 0.5 mcg/kg/min and MAP still below target: consider angiotensin II or methylene blue"
      detail: >
        Refractory septic shock despite high-dose norepinephrine: consider angiotensin II, or methylene
        blue where angiotensin II is not available, as rescue, with senior review.
    citations:
      - {{ref: {{ref1}}, evidence: "angiotensin II raised MAP in vasodilatory shock on high-dose vasopressors (ATHOS-3)"}}
      - {{ref: {{ref2}}, evidence: "methylene blue as a rescue vasopressor-sparing agent in refractory septic shock"}}
    examples:
      - name: 0.6 mcg/kg/min and below target
        expect: fires
        state: {{{ADULT_BELOW_TARGET}, infusions: {{norepinephrine_mcg_kg_min: 0.6}}}}
      - name: boundary, exactly 0.5
        expect: does_not_fire
        state: {{{ADULT_BELOW_TARGET}, infusions: {{norepinephrine_mcg_kg_min: 0.5}}}}
"""

REFERENCES = """    - number: {ref1}
      kind: research
      added_by: pack
      title: "Angiotensin II for the treatment of vasodilatory shock (ATHOS-3)"
      publisher: New England Journal of Medicine
      year: 2017
    - number: {ref2}
      kind: research
      added_by: pack
      title: "Methylene blue in septic shock: a systematic review"
      publisher: Critical Care
      year: 2023
"""

SCENARIOS = f"""  - name: refractory septic shock above 0.5 mcg/kg/min is offered rescue
    state: {{{ADULT_BELOW_TARGET}, infusions: {{norepinephrine_mcg_kg_min: 0.7}}}}
    fires: [{RULE_ID}]

  - name: at 0.4 mcg/kg/min rescue waits
    state: {{{ADULT_BELOW_TARGET}, infusions: {{norepinephrine_mcg_kg_min: 0.4}}}}
    does_not_fire: [{RULE_ID}]

  - name: without the norepinephrine rate rescue cannot be decided
    state: {{{ADULT_BELOW_TARGET}}}
    not_evaluable: [{RULE_ID}]
"""


def build(tmp: Path) -> tuple[Path, Path]:
    """The pack and scenario directories with the rule added: ``(rules, scenarios)``."""
    rules, scenarios = tmp / "rules", tmp / "scenarios"
    shutil.copytree(default_rules_dir(), rules, ignore=shutil.ignore_patterns("__init__.py", "__pycache__", "fhir"))
    shutil.copytree(ROOT / "tests" / "scenarios", scenarios)
    out = CliRunner().invoke(cli, ["new-rule", RULE_ID, "--rules", str(rules), "--scenarios", str(scenarios), "--date", DAY])
    assert out.exit_code == 0, out.output
    # the informaticist's edits: the scaffold (everything from its id to the end of the file) becomes the rule
    refs_file = rules / "references.yaml"
    refs = refs_file.read_text(encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"^    - number: (\d+)$", refs, re.M)]
    ref1, ref2 = max(numbers) + 1, max(numbers) + 2
    refs_file.write_text(refs.replace("  unresolved:\n", REFERENCES.format(ref1=ref1, ref2=ref2) + "  unresolved:\n", 1), encoding="utf-8")
    sha = re.search(r"sha256: ([0-9a-f]{64})", (rules / "escalation.yaml").read_text(encoding="utf-8")).group(1)
    _replace_tail(rules / "escalation.yaml", f"  - id: {RULE_ID}\n",
                  RULE.replace("{sha}", sha).replace("{ref1}", str(ref1)).replace("{ref2}", str(ref2)))
    _replace_tail(scenarios / "escalation.yaml", f'  - name: "TODO: a patient for {RULE_ID}"\n', SCENARIOS)
    pack_file = rules / "pack.yaml"
    text = pack_file.read_text(encoding="utf-8")
    major, minor, _ = re.search(r"^  version: (\d+)\.(\d+)\.(\d+)$", text, re.M).groups()
    text = re.sub(r"^  version: .*$", f"  version: {major}.{int(minor) + 1}.0", text, count=1, flags=re.M)
    effective = re.search(r"^  effective: (\S+)$", text, re.M).group(1)
    pack_file.write_text(text.replace(f"  effective: {effective}\n", f"  effective: {max(effective, DAY)}\n", 1), encoding="utf-8")
    return rules, scenarios


def _replace_tail(path: Path, start: str, text: str) -> None:
    old = path.read_text(encoding="utf-8")
    assert start in old, f"{path} has no {start!r}: the scaffold changed"
    path.write_text(old[: old.index(start)] + text, encoding="utf-8")
