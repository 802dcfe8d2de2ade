"""``pressor new-rule``: a new draft rule with its provenance, examples and a scenario, from the pack's defaults.

The provenance an author used to copy by hand comes from the pack: the author from ``pack.yaml``, the
reviewers most rules name, the source document's SHA-256 from ``references.yaml``, and the source section,
paragraph and most-cited reference of the rules already in the family's file. The condition is a
placeholder that loads (one fact the family already reads, ``known``), with a firing and a non-firing
example and a scenario stub, so the pack stays valid while the author fills in every ``TODO``.

Text is appended to the files as YAML text (not re-dumped), so comments and layout stay as they were.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..model import Rule, RulePack, leaves

#: A rule id: a family and a name, lowercase words joined by hyphens (``escalation.add-vasopressin``).
RULE_ID = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*\.[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Scaffold:
    """What :func:`scaffold` wrote: the rule's file and first line, and the scenario file (if any)."""

    rule_id: str
    rule_file: Path
    line: int
    scenario_file: Path | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"rule": self.rule_id, "file": str(self.rule_file), "line": self.line,
                "scenario_file": str(self.scenario_file) if self.scenario_file else None}


def scaffold(pack: RulePack, rule_id: str, *, today: date, scenarios: Path | None = None,
             title: str | None = None) -> Scaffold:
    """Append a draft rule ``rule_id`` to its family's file in the pack's directory (creating the file for
    a new family), and a scenario that fires it to ``scenarios/<family>.yaml`` when ``scenarios`` is given.

    Raises :class:`InputError` for a malformed or existing id, or a file it cannot append to.
    """
    if not RULE_ID.match(rule_id):
        raise InputError.single(f"'{rule_id}' is not a rule id",
                                suggestion="write family.name in lowercase words joined by hyphens, e.g. escalation.add-angiotensin-ii")
    if any(r.id == rule_id for r in pack.rules):
        raise InputError.single(f"rule '{rule_id}' already exists", suggestion="choose another id, or edit the existing rule")
    family = rule_id.split(".", 1)[0]
    directory = Path(pack.directory)
    rule_file = directory / f"{family}.yaml"
    siblings = [r for r in pack.rules if Path(r.file).name == rule_file.name] or list(pack.rules)
    if not siblings:
        raise InputError.single("the pack has no rule to take defaults from", suggestion="write the first rule by hand")
    fact, value = _placeholder_fact(siblings)
    text = _rule_text(pack, rule_id, siblings, fact, value, today, title)
    line = _append(rule_file, "rules", text, header=f"# {family}: rules added with pressor new-rule.\n")
    scenario_file = None
    if scenarios is not None:
        scenario_file = scenarios / f"{family}.yaml"
        _append(scenario_file, "scenarios", _scenario_text(rule_id, fact, value),
                header=f"description: Scenarios of the {family} rules.\n")
    return Scaffold(rule_id, rule_file, line, scenario_file)


def pack_defaults(pack: RulePack) -> dict[str, Any]:
    """The provenance a new rule starts with: author, reviewers and the source document's SHA-256."""
    reviewers = Counter(tuple(r.reviewers) for r in pack.rules if r.reviewers).most_common(1)
    return {"author": pack.raw_pack.get("author") or "TODO: author",
            "reviewers": list(reviewers[0][0]) if reviewers else [],
            "sha256": pack.document["sha256"]}


def _placeholder_fact(siblings: list[Rule]) -> tuple[str, Any]:
    """A patient fact the family already reads, and a value of it from a firing example."""
    for rule in siblings:
        for leaf in leaves(rule.when):
            if leaf.fact.startswith("derived."):
                continue
            for example in rule.raw.get("examples", []):
                value = _lookup(example.get("state", {}), leaf.fact)
                if value is not None:
                    return leaf.fact, value
    raise InputError.single("no rule of this family has an example to take a placeholder fact from",
                            suggestion="add an example to one of its rules, or write the first rule by hand")


def _lookup(state: Any, fact: str) -> Any:
    for key in fact.split("."):
        if not isinstance(state, dict) or key not in state:
            return None
        state = state[key]
    return state


def _nested(fact: str, value: Any) -> str:
    """``{vitals: {map_mmhg: 60}}`` as YAML flow text."""
    text = _flow(value)
    for key in reversed(fact.split(".")):
        text = f"{{{key}: {text}}}"
    return text


def _flow(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _quoted(str(value))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rule_text(pack: RulePack, rule_id: str, siblings: list[Rule], fact: str, value: Any, today: date,
               title: str | None) -> str:
    d = pack_defaults(pack)
    section = Counter((r.section, r.paragraph) for r in siblings).most_common(1)[0][0]
    refs = Counter(c.get("ref") for r in siblings for c in r.raw.get("citations", []) if c.get("ref") is not None)
    ref = refs.most_common(1)[0][0] if refs else 1
    reviewers = ", ".join(_quoted(r) for r in d["reviewers"])
    return f"""  - id: {rule_id}
    version: 1.0.0
    status: draft
    title: {_quoted(title or "TODO: what the rule recommends, as a clinician would say it")}
    author: {_quoted(d["author"])}
    reviewers: [{reviewers}]
    effective: {today.isoformat()}
    status_history:
      - {{date: {today.isoformat()}, status: draft, by: {_quoted(d["author"])}, comment: "encoded with pressor new-rule; TODO: say what from"}}
    source: {{section: {_quoted(section[0])}, paragraph: {section[1] or 1}, sha256: {d["sha256"]}}}
    # TODO: the real condition (the placeholder below only keeps the pack loadable)
    when: {{fact: {fact}, op: known}}
    recommend:
      kind: do
      severity: info
      summary: "TODO: one line a clinician reads first"
      detail: >
        TODO: what to do, and what to watch for.
    citations:
      - {{ref: {ref}, evidence: "TODO: what reference {ref} says that supports this rule"}}
    examples:
      - name: TODO a state that fires the rule
        expect: fires
        include_draft: true  # a draft rule is evaluated only when asked; drop this once it is approved
        state: {_nested(fact, value)}
      - name: TODO a state at the boundary that does not fire it
        expect: does_not_fire
        include_draft: true
        state: {{}}
"""


def _scenario_text(rule_id: str, fact: str, value: Any) -> str:
    return f"""  - name: "TODO: a patient for {rule_id}"
    include_draft: true
    state: {_nested(fact, value)}
    fires: [{rule_id}]
"""


def _append(path: Path, key: str, text: str, *, header: str) -> int:
    """Append ``text`` (list items) under the file's last top-level key, which must be ``key``; the first line."""
    if not path.exists():
        path.write_text(f"{header}{key}:\n{text}", encoding="utf-8")
        return len(header.splitlines()) + 2
    old = path.read_text(encoding="utf-8")
    last = [m.group(1) for m in re.finditer(r"^([A-Za-z_][\w-]*):", old, re.M)]
    if not last or last[-1] != key:
        raise InputError([Problem(f"'{key}:' is not the last section of this file, so a new entry cannot be appended",
                                  file=str(path), suggestion=f"move '{key}:' to the end of the file, or add the entry by hand")])
    body = old if old.endswith("\n") else old + "\n"
    if not body.endswith("\n\n"):
        body += "\n"
    path.write_text(body + text, encoding="utf-8")
    return len(body.splitlines()) + 1
