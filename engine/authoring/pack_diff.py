"""``pressor diff``: what changed between two rule packs, rule by rule and in what patients are told.

The static part compares the packs' rules field by field (and their derived facts,
preparations, decisions and identity). A changed condition or output (``when``,
``recommend``, ``dose``, ``supersedes``) without a higher rule version is an error.

The behavioural part evaluates both packs on the same patient states: the scenario
corpus (or the rules' examples) and, for every numeric threshold in either pack,
each state that knows that fact moved to the threshold, just below it and just
above it. It reports which recommendations appear, disappear or change dose.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..errors import PatientStateError
from ..evaluation.evaluate import evaluate, flatten_state
from ..model import RulePack, leaves
from .scenarios import DEFAULT_NOW, Scenario, example_scenarios, load_scenarios
from ..evaluation.validate import check_state

#: Rule fields whose change alters what a patient is told: each needs a higher version.
BEHAVIOURAL_FIELDS = ("when", "recommend", "dose", "supersedes")
#: Finding codes of the diff, with their severity.
DIFF_CODES = {
    "diff-version-not-bumped": "error",
    "diff-version-decreased": "error",
    "diff-derived-changed": "warning",
    "diff-preparation-changed": "warning",
    "diff-pack-version-not-bumped": "warning",
}


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: its dotted path, the old and the new value (``None`` if absent)."""

    path: str
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class ItemChange:
    """A rule (or derived fact, preparation, decision) present in both packs with different content."""

    kind: str
    id: str
    changes: tuple[FieldChange, ...]
    old_version: str | None = None
    new_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"kind": self.kind, "id": self.id, "changes": [c.to_dict() for c in self.changes]}
        if self.old_version is not None:
            out.update(old_version=self.old_version, new_version=self.new_version)
        return out


@dataclass(frozen=True)
class DiffFinding:
    """A problem with the change itself (for example a condition changed without a version bump)."""

    code: str
    message: str
    id: str | None = None

    @property
    def severity(self) -> str:
        """From :data:`DIFF_CODES`."""
        return DIFF_CODES[self.code]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"code": self.code, "severity": self.severity, "message": self.message, "id": self.id}


@dataclass
class Behaviour:
    """One rule's recommendation appearing, disappearing or changing dose, over the states where it does."""

    rule_id: str
    change: str  # appears | disappears | dose
    states: int = 0
    example: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"rule_id": self.rule_id, "change": self.change, "states": self.states, "example": self.example}


@dataclass
class PackDiff:
    """Everything :func:`diff_packs` found."""

    old: dict[str, str]
    new: dict[str, str]
    added: list[str]
    removed: list[str]
    changed: list[ItemChange]
    findings: list[DiffFinding]
    behaviour: list[Behaviour]
    states_checked: int
    thresholds: int

    @property
    def ok(self) -> bool:
        """No error finding."""
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "old": self.old, "new": self.new, "ok": self.ok,
            "rules": {"added": self.added, "removed": self.removed},
            "changed": [c.to_dict() for c in self.changed],
            "findings": [f.to_dict() for f in self.findings],
            "behaviour": {"states_checked": self.states_checked, "thresholds": self.thresholds,
                          "changes": [b.to_dict() for b in self.behaviour]},
        }


# --- static ------------------------------------------------------------------

def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or ({prefix: {}} if prefix else {})
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """Leaf-level differences between two documents (dotted paths, list positions as numbers)."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    return [FieldChange(p, a.get(p), b.get(p)) for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _static(old: RulePack, new: RulePack) -> tuple[list[str], list[str], list[ItemChange], list[DiffFinding]]:
    old_rules, new_rules = {r.id: r for r in old.rules}, {r.id: r for r in new.rules}
    added = sorted(set(new_rules) - set(old_rules))
    removed = sorted(set(old_rules) - set(new_rules))
    changed: list[ItemChange] = []
    findings: list[DiffFinding] = []
    for rid in sorted(set(old_rules) & set(new_rules)):
        a, b = old_rules[rid], new_rules[rid]
        changes = field_changes(a.raw, b.raw)
        if not changes:
            continue
        changed.append(ItemChange("rule", rid, tuple(changes), a.version, b.version))
        behavioural = sorted({c.path.split(".")[0] for c in changes} & set(BEHAVIOURAL_FIELDS))
        if _version(b.version) < _version(a.version):
            findings.append(DiffFinding("diff-version-decreased", f"{rid}: version went from {a.version} down to {b.version}", rid))
        elif behavioural and _version(b.version) == _version(a.version):
            findings.append(DiffFinding(
                "diff-version-not-bumped",
                f"{rid}: {', '.join(behavioural)} changed but the version is still {a.version} (bump it: "
                f"the audit trail tells results apart by rule version)", rid))
    findings += _sections(old, new, changed)
    if old.sha256 != new.sha256 and old.version == new.version:
        findings.append(DiffFinding("diff-pack-version-not-bumped",
                                    f"the pack's files changed but its version is still {old.version}", None))
    return added, removed, changed, findings


def _sections(old: RulePack, new: RulePack, changed: list[ItemChange]) -> list[DiffFinding]:
    findings: list[DiffFinding] = []
    pairs = (
        ("derived", {d.name: d.raw for d in old.derived}, {d.name: d.raw for d in new.derived}),
        ("preparation", {p.id: p.raw for p in old.preparations}, {p.id: p.raw for p in new.preparations}),
        ("decision", _decisions(old), _decisions(new)),
        ("pack", {"pack": old.raw_pack}, {"pack": new.raw_pack}),
        ("reference", {str(n): r.to_dict() for n, r in old.references.items()}, {str(n): r.to_dict() for n, r in new.references.items()}),
        ("parameter", {p.name: p.to_dict() for p in old.parameters}, {p.name: p.to_dict() for p in new.parameters}),
        ("waiver", {f"{w.code}@{w.decision or ','.join(w.rules)}": {"reason": w.reason} for w in old.waivers},
         {f"{w.code}@{w.decision or ','.join(w.rules)}": {"reason": w.reason} for w in new.waivers}),
    )
    for kind, a, b in pairs:
        for key in sorted(set(a) | set(b)):
            if a.get(key) == b.get(key):
                continue
            changes = field_changes(a.get(key) or {}, b.get(key) or {})
            changed.append(ItemChange(kind, key, tuple(changes)))
            if kind == "derived":
                users = sorted(_users(new, key))
                findings.append(DiffFinding("diff-derived-changed",
                                            f"derived fact {key} changed: it decides {', '.join(users) or 'no rule'}; "
                                            f"their versions should say so", key))
            elif kind == "preparation":
                findings.append(DiffFinding("diff-preparation-changed",
                                            f"preparation {key} changed: computed pump rates change with it", key))
    return findings


def _decisions(pack: RulePack) -> dict[str, Any]:
    return {d.id: {"description": d.description, "rules": list(d.rules)} for d in pack.decisions}


def _users(pack: RulePack, name: str) -> set[str]:
    """Rules that read a derived fact, directly or through other derived facts."""
    derived = {d.name: d for d in pack.derived}
    depends: dict[str, set[str]] = {}
    for d in pack.derived:
        depends[d.name] = {p for p in d.reads() if p in derived}

    def reaches(path: str, seen: set[str]) -> bool:
        if path == name:
            return True
        if path in seen or path not in depends:
            return False
        seen.add(path)
        return any(reaches(p, seen) for p in depends[path])

    return {r.id for r in pack.rules if any(reaches(p, set()) for leaf in leaves(r.when) for p in leaf.facts())}


# --- behaviour ----------------------------------------------------------------

def thresholds(pack: RulePack) -> set[tuple[str, float]]:
    """Every (fact, number) a condition of the pack compares with, including the MAP target's cases."""
    derived = {d.name: d for d in pack.derived}
    conds = [r.when for r in pack.rules]
    conds += [c for d in pack.derived for c in ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]]
    conds += [d.population for d in pack.decisions]
    out: set[tuple[str, float]] = set()
    for cond in conds:
        for leaf in leaves(cond):
            if leaf.value_fact is not None:
                d = derived.get(leaf.value_fact)
                if d is not None and d.cases:
                    out |= {(leaf.fact, float(v)) for v in [v for _, v in d.cases] + [d.default] if _is_number(v)}
                continue
            values = leaf.value if leaf.op == "in" else (leaf.value,)
            out |= {(leaf.fact, float(v)) for v in values if _is_number(v)}
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _step(k: float) -> float:
    """"Just below/above": one unit of the threshold's second significant digit (65 -> 1, 0.1 -> 0.01)."""
    return 10.0 ** (math.floor(math.log10(abs(k))) - 1) if k else 0.01


def _variants(state: Mapping[str, Any], fact: str, k: float, products: Mapping[str, tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """The state with ``fact`` at ``k``, just below and just above (only if the state knows the fact)."""
    flat = flatten_state(state)
    target, scale = fact, 1.0
    if fact in products:  # a product: move its first factor, holding the second
        a, b = products[fact]
        if a not in flat or b not in flat or not flat[b]:
            return []
        target, scale = a, (1.0 if a == b else 1.0 / flat[b])
    elif fact not in flat:
        return []
    out = []
    for value in (k - _step(k), k, k + _step(k)):
        v = round(value * scale, 10)
        v = int(v) if v == int(v) else v
        section, _, key = target.partition(".")
        new = {s: (dict(vals) if isinstance(vals, dict) else vals) for s, vals in state.items()}
        if key:
            new[section][key] = v
        else:
            new[section] = v
        out.append((f"{target} = {v:g}", new))
    return out


def _shown(pack: RulePack, state: Mapping[str, Any], include_draft: bool) -> dict[str, Any] | None:
    try:  # only the fired rules and their doses are compared: the advice about unknowns is not asked
        result = evaluate(pack, state, now=DEFAULT_NOW, include_draft=include_draft, advice=False)
    except PatientStateError:
        return None
    return {r.rule_id: r.dose for r in result.recommendations}


def _behaviour(old: RulePack, new: RulePack, scenarios: list[Scenario]) -> tuple[list[Behaviour], int, int]:
    limits = thresholds(old) | thresholds(new)
    products = {d.name: d.product for d in new.derived if d.product is not None}
    products.update({d.name: d.product for d in old.derived if d.product is not None})
    # a mean pressure moves with its measured MAP (the scale factor 1 holds it to itself)
    products.update({d.name: (d.mean_pressure[0], d.mean_pressure[0]) for d in (*old.derived, *new.derived) if d.mean_pressure is not None})
    found: dict[tuple[str, str], Behaviour] = {}
    checked = 0
    for label, state, drafts in _states(scenarios, sorted(limits), products):
        before, after = _shown(old, state, drafts), _shown(new, state, drafts)
        if before is None or after is None:
            continue
        checked += 1
        for rid in sorted(set(before) | set(after)):
            detail: dict[str, Any]
            if rid not in before:
                change, detail = "appears", {}
            elif rid not in after:
                change, detail = "disappears", {}
            elif before[rid] != after[rid]:
                change, detail = "dose", {"old_dose": before[rid], "new_dose": after[rid]}
            else:
                continue
            b = found.setdefault((rid, change), Behaviour(rid, change))
            b.states += 1
            if not b.example:
                flat = flatten_state(state)
                shown = {p: flat[p] for p in sorted(_inputs(new, rid) | _inputs(old, rid)) if p in flat}
                b.example = {"state": label, "facts": shown, "patient": state, **detail}
    return sorted(found.values(), key=lambda b: (b.rule_id, b.change)), checked, len(limits)


def _states(scenarios: list[Scenario], limits: list[tuple[str, float]], products: Mapping[str, tuple[str, str]]
            ) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Each scenario's state as written and moved to every threshold, the first of each distinct state once,
    generated one at a time: only a digest of each state seen is kept (a pack of thousands of rules has
    thousands of thresholds, and holding every variant with its JSON took gigabytes)."""
    seen: set[bytes] = set()
    for s in scenarios:
        try:
            check_state(s.state)
        except PatientStateError:
            continue
        variants = (v for fact, k in limits for v in _variants(s.state, fact, k, products))
        for label, state in itertools.chain([("as written", dict(s.state))], variants):
            key = hashlib.sha256(json.dumps([state, s.include_draft], sort_keys=True).encode()).digest()
            if key not in seen:
                seen.add(key)
                yield f"{s.name} ({label})", state, s.include_draft


def _inputs(pack: RulePack, rule_id: str) -> set[str]:
    """Input facts a rule reads, through derived facts (empty if the pack has no such rule)."""
    derived = {d.name: d for d in pack.derived}
    try:
        todo = [p for leaf in leaves(pack.rule(rule_id).when) for p in leaf.facts()]
    except KeyError:
        return set()
    out: set[str] = set()
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path in derived:
            todo.extend(derived[path].reads())
        else:
            out.add(path)
    return out


# --- entry ----------------------------------------------------------------------

def diff_packs(old: RulePack, new: RulePack, scenario_paths: Iterable[str | Path] = ()) -> PackDiff:
    """Compare two loaded packs over the scenarios in ``scenario_paths`` (default: both packs' examples)."""
    added, removed, changed, findings = _static(old, new)
    paths = list(scenario_paths)
    scenarios = load_scenarios(paths) if paths else example_scenarios(old) + example_scenarios(new)
    behaviour, checked, limits = _behaviour(old, new, scenarios)
    ident = lambda p: {"name": p.name, "version": p.version, "sha256": p.sha256, "directory": p.directory}  # noqa: E731
    return PackDiff(ident(old), ident(new), added, removed, changed, findings, behaviour, checked, limits)
