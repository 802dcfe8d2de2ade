"""Scenario tests: patients and what the pack must do for them, with rule and condition coverage.

A scenario file (``schemas/scenario.schema.json``) lists patients; each names the
rules that must fire, must not fire and must be not evaluable, and doses to expect
within a tolerance. Every ``examples:`` entry of the rule files is a scenario too.

Coverage records, per rule, whether its condition was seen true, false and unknown,
and per condition leaf (rules and derived facts) the same, using the reference
semantics of :mod:`pressor.engine.evaluation.logic`. Outcomes that no patient state can produce
(found with :mod:`pressor.engine.authoring.solver`) are listed with the reason and left out of
the percentage.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import InputError, PatientStateError, Problem
from ..evaluation.evaluate import ACTIVE_WITH_DRAFTS, evaluate, flatten_state, superseded_notes
from ..evaluation.load import Document, load_document
from ..evaluation.logic import compare, derive, set_aside_doubtful_pressures, verdict
from ..model import Compare, Result, Rule, RulePack, leaves
from ..evaluation.validate import check_state, schema_problems

SCENARIO_SCHEMA = "scenario.schema.json"
#: Evaluation time when a scenario gives none: results never depend on the clock.
DEFAULT_NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
OUTCOMES = ("fired", "not_fired", "not_evaluable")
_EXPECTS = {"fires": "fired", "does_not_fire": "not_fired", "not_evaluable": "not_evaluable"}
_WORDS = {"fired": "fires", "not_fired": "does not fire", "not_evaluable": "is not evaluable"}


@dataclass(frozen=True)
class Scenario:
    """One patient and what must happen."""

    name: str
    state: Mapping[str, Any]
    expect: Mapping[str, str]  # rule id -> fired | not_fired | not_evaluable
    doses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    now: datetime = DEFAULT_NOW
    include_draft: bool = False
    file: str = ""
    line: int | None = None
    origin: str = "scenario"  # or "example"

    @property
    def label(self) -> str:
        """``file:line name``."""
        return f"{self.file}:{self.line} {self.name}" if self.line else f"{self.file} {self.name}"


@dataclass(frozen=True)
class Failure:
    """One expectation that did not hold."""

    rule_id: str
    check: str
    expected: Any
    got: Any
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"rule_id": self.rule_id, "check": self.check, "expected": self.expected, "got": self.got, "detail": self.detail}

    def describe(self) -> str:
        """One line: expected versus got."""
        text = f"{self.rule_id} {self.check}: expected {self.expected}, got {self.got}"
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass
class Outcome:
    """What one scenario produced."""

    scenario: Scenario
    failures: list[Failure]
    result: Result | None = None

    @property
    def ok(self) -> bool:
        """All expectations held."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        s = self.scenario
        return {"name": s.name, "file": s.file, "line": s.line, "origin": s.origin, "ok": self.ok,
                "failures": [f.to_dict() for f in self.failures]}


# --- loading ------------------------------------------------------------------

def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the ``*.yaml``/``*.yml``/``*.json`` files of directories named, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml", ".json") and q.is_file())
        else:
            out.append(p)
    return out


def load_scenarios(paths: Iterable[str | Path], pack: RulePack | None = None) -> list[Scenario]:
    """Read and check scenario files; every problem (schema, rule ids unknown to ``pack``) is raised together."""
    scenarios: list[Scenario] = []
    problems: list[Problem] = []
    known = {r.id for r in pack.rules} if pack is not None else None
    for path in scenario_files(paths):
        doc = load_document(path)
        found = schema_problems(doc, SCENARIO_SCHEMA)
        if found:
            problems += found
            continue
        for i, item in enumerate(doc.data["scenarios"]):
            if known is not None:
                problems += _unknown_ids(doc, i, item, known)
            scenarios.append(_scenario(doc, i, item))
    if problems:
        raise InputError(problems)
    return scenarios


def _unknown_ids(doc: Document, i: int, item: Mapping[str, Any], known: set[str]) -> list[Problem]:
    out = []
    named = [(f"{key}/{j}", rid) for key in _EXPECTS for j, rid in enumerate(item.get(key, ()))]
    named += [(f"doses/{rid}", rid) for rid in item.get("doses", {})]
    for pointer, rid in named:
        if rid not in known:
            close = difflib.get_close_matches(rid, sorted(known), n=1)
            out.append(Problem(f"no rule '{rid}' in the pack", suggestion=f"did you mean '{close[0]}'?" if close else None,
                               **doc.where(f"/scenarios/{i}/{pointer}")))
    return out


def _scenario(doc: Document, i: int, item: Mapping[str, Any]) -> Scenario:
    expect: dict[str, str] = {}
    for key, outcome in _EXPECTS.items():
        for rid in item.get(key, ()):
            expect[rid] = outcome
    now = DEFAULT_NOW
    if "now" in item:
        now = datetime.fromisoformat(item["now"].replace("Z", "+00:00"))
        now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    return Scenario(item["name"], item["state"], expect, item.get("doses", {}), now, item.get("include_draft", False),
                    doc.file, doc.where(f"/scenarios/{i}").get("line"))


def example_scenarios(pack: RulePack) -> list[Scenario]:
    """Every ``examples:`` entry of the pack's rules, as a scenario about its own rule."""
    out = []
    for rule in pack.rules:
        for ex in rule.raw.get("examples", ()):
            out.append(Scenario(f"{rule.id}::{ex['name']}", ex["state"], {rule.id: _EXPECTS[ex["expect"]]},
                                include_draft=ex.get("include_draft", False), file=rule.file, line=rule.line, origin="example"))
    return out


# --- running --------------------------------------------------------------------

def run_scenario(pack: RulePack, scenario: Scenario) -> Outcome:
    """Evaluate one scenario and compare with what it expects."""
    try:
        result = evaluate(pack, scenario.state, now=scenario.now, include_draft=scenario.include_draft)
    except PatientStateError as exc:
        return Outcome(scenario, [Failure("-", "state", "a valid patient state", "invalid", str(exc))])
    facts = flatten_state(scenario.state)
    set_aside_doubtful_pressures(pack.derived, facts)  # as evaluate() does
    derivation = derive(pack.derived, facts)
    fired = set(result.fired_ids())
    not_evaluable = {n.rule_id: n for n in result.not_evaluable}
    failures: list[Failure] = []
    for rid, want in scenario.expect.items():
        got = "fired" if rid in fired else "not_evaluable" if rid in not_evaluable else "not_fired"
        if got == want:
            continue
        rule = pack.rule(rid)
        failures.append(Failure(rid, "outcome", _WORDS[want], _WORDS[got], _why(pack, rule, scenario, facts, derivation, result)))
    for rid, checks in scenario.doses.items():
        failures += _dose_failures(rid, checks, result)
    return Outcome(scenario, failures, result)


def _why(pack: RulePack, rule: Rule, scenario: Scenario, facts: Mapping[str, Any], derivation: Any, result: Result) -> str:
    """Why a rule came out as it did: the deciding facts, the missing ones, or its status."""
    active = ACTIVE_WITH_DRAFTS if scenario.include_draft else pack.in_force
    if rule.status not in active:
        return f"the rule is {rule.status}" + ("" if scenario.include_draft else "; set include_draft: true to evaluate it")
    hidden = superseded_notes(result.warnings).get(rule.id)
    if hidden:
        return hidden
    v = verdict(rule.when, facts, derivation.missing_of)
    if v.truth is None:
        return "missing " + ", ".join(sorted(v.missing))
    # The rule's own tests first, then the input facts under any derived fact they used.
    derived = {d.name for d in pack.derived}
    chosen = list(v.evidence) + [e for e in derivation.expand(v.evidence) if e.fact not in derived]
    shown = list(dict.fromkeys(f"{e.test} [{e.fact} = {_value(e.value)}]" for e in chosen))
    more = f"; +{len(shown) - 6} more" if len(shown) > 6 else ""
    return ("because " if v.truth else "false because ") + "; ".join(shown[:6]) + more


def _value(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _dose_failures(rid: str, checks: Mapping[str, Any], result: Result) -> list[Failure]:
    rec = next((r for r in result.recommendations if r.rule_id == rid), None)
    if rec is None or rec.dose is None:
        return [Failure(rid, "dose", "a dose", "no dose (the rule did not fire)" if rec is None else "no dose")]
    tol = float(checks.get("tolerance", 0.0))
    out = []
    for path, want in checks.items():
        if path == "tolerance":
            continue
        got = _dig(rec.dose, path)
        if isinstance(want, bool) or not isinstance(want, (int, float)):
            ok = got == want
            expected: Any = want
        else:
            ok = isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - want) <= tol + 1e-12
            expected = f"{want:g} ± {tol:g}" if tol else want
        if not ok:
            out.append(Failure(rid, f"dose {path}", expected, "absent" if got is _ABSENT else got))
    return out


_ABSENT = object()


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return _ABSENT
    return data


# --- coverage -----------------------------------------------------------------

@dataclass
class Coverage:
    """Outcomes seen, per rule and per condition leaf, and those no state can produce."""

    rules: dict[str, set[str]]
    leaves: dict[tuple[str, str], set[str]]
    leaf_text: dict[tuple[str, str], str]
    impossible_rules: dict[str, dict[str, str]]
    impossible_leaves: dict[tuple[str, str], dict[str, str]]

    def _percent(self, seen: dict[Any, set[str]], impossible: dict[Any, dict[str, str]], outcomes: tuple[str, ...]) -> tuple[int, int]:
        reachable = sum(len(outcomes) - len(impossible.get(k, {})) for k in seen)
        got = sum(len(v - set(impossible.get(k, {}))) for k, v in seen.items())
        return got, reachable

    def rule_percent(self) -> float:
        """Rule outcomes seen, as a percentage of the reachable ones."""
        got, reachable = self._percent(self.rules, self.impossible_rules, OUTCOMES)
        return 100.0 * got / reachable if reachable else 100.0

    def leaf_percent(self) -> float:
        """Leaf outcomes (true, false, unknown) seen, as a percentage of the reachable ones."""
        got, reachable = self._percent(self.leaves, self.impossible_leaves, ("true", "false", "unknown"))
        return 100.0 * got / reachable if reachable else 100.0

    def missing_rules(self) -> dict[str, list[str]]:
        """Rule -> reachable outcomes never seen."""
        out = {}
        for rid, seen in self.rules.items():
            gone = [o for o in OUTCOMES if o not in seen and o not in self.impossible_rules.get(rid, {})]
            if gone:
                out[rid] = gone
        return out

    def missing_leaves(self) -> dict[tuple[str, str], list[str]]:
        """Leaf -> reachable outcomes never seen."""
        out = {}
        for key, seen in self.leaves.items():
            gone = [o for o in ("true", "false", "unknown") if o not in seen and o not in self.impossible_leaves.get(key, {})]
            if gone:
                out[key] = gone
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        got, reachable = self._percent(self.rules, self.impossible_rules, OUTCOMES)
        lgot, lreach = self._percent(self.leaves, self.impossible_leaves, ("true", "false", "unknown"))
        return {
            "rules": {"percent": round(self.rule_percent(), 1), "seen": got, "reachable": reachable,
                      "per_rule": {rid: {"seen": sorted(seen), "impossible": self.impossible_rules.get(rid, {})}
                                   for rid, seen in sorted(self.rules.items())},
                      "missing": self.missing_rules()},
            "leaves": {"percent": round(self.leaf_percent(), 1), "seen": lgot, "reachable": lreach,
                       "missing": [{"owner": o, "pointer": p, "test": self.leaf_text[(o, p)], "outcomes": gone}
                                   for (o, p), gone in sorted(self.missing_leaves().items())],
                       "impossible": [{"owner": o, "pointer": p, "test": self.leaf_text[(o, p)], "outcomes": why}
                                      for (o, p), why in sorted(self.impossible_leaves.items())]},
        }


def coverage(pack: RulePack, scenarios: Iterable[Scenario]) -> Coverage:
    """What the scenarios exercised, with the outcomes no patient state can produce set aside."""
    counted = [r for r in pack.rules if r.status != "retired"]
    rules: dict[str, set[str]] = {r.id: set() for r in counted}
    owners: list[tuple[str, Any, str | None]] = [(r.id, r.when, r.status) for r in counted]
    for d in pack.derived:
        for cond in ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]:
            owners.append((d.name, cond, None))
    leaf_list: list[tuple[tuple[str, str], Compare, str | None]] = []
    for owner, cond, status in owners:
        for leaf in leaves(cond):
            leaf_list.append(((owner, leaf.pointer), leaf, status))
    seen_leaves: dict[tuple[str, str], set[str]] = {key: set() for key, _, _ in leaf_list}
    for s in scenarios:
        try:
            check_state(s.state)
        except PatientStateError:
            continue  # reported as a failure by run_scenario
        facts = flatten_state(s.state)
        set_aside_doubtful_pressures(pack.derived, facts)
        derivation = derive(pack.derived, facts)
        active = ACTIVE_WITH_DRAFTS if s.include_draft else pack.in_force
        for rule in counted:
            if rule.status in active:
                t = verdict(rule.when, facts, derivation.missing_of).truth
                rules[rule.id].add("fired" if t else "not_evaluable" if t is None else "not_fired")
        for key, leaf, status in leaf_list:
            if status is None or status in active:
                t = compare(leaf, facts)
                seen_leaves[key].add("true" if t else "unknown" if t is None else "false")
    impossible_rules, impossible_leaves = _impossible(pack, counted, leaf_list)
    return Coverage(rules, seen_leaves, {k: leaf.describe() for k, leaf, _ in leaf_list}, impossible_rules, impossible_leaves)


def _impossible(pack: RulePack, rules: list[Rule], leaf_list: list[tuple[tuple[str, str], Compare, str | None]]
                ) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], dict[str, str]]]:
    """Outcomes that no patient state gives (decided by search over the fact space), with the reason."""
    from .solver import SolverLimit, Space
    from ..evaluation.validate import STATE_SCHEMA, schema

    space = Space(pack, schema(STATE_SCHEMA))
    reasons = {"T": "can never hold", "F": "can never be false",
               "U": "is always decided (it only asks whether facts are known, or the facts it reads are always present)"}
    goals = {"T": lambda c: space.formula(c, "T"), "F": lambda c: space.formula(c, "F"), "U": space.unknown}

    def check(cond: Any, names: tuple[str, str, str], subject: str) -> dict[str, str]:
        out = {}
        for name, pol in zip(names, ("T", "F", "U")):
            try:
                if not space.satisfiable(goals[pol](cond)):
                    out[name] = f"{subject} {reasons[pol]}"
            except SolverLimit:
                continue  # undecided: counted as reachable
        return out

    impossible_rules = {r.id: found for r in rules if (found := check(r.when, OUTCOMES, "its condition"))}
    impossible_leaves = {key: found for key, leaf, _ in leaf_list if (found := check(leaf, ("true", "false", "unknown"), "this test"))}
    return impossible_rules, impossible_leaves


# --- the whole run ------------------------------------------------------------

@dataclass
class TestRun:
    """Every scenario's outcome, and coverage if asked for."""

    outcomes: list[Outcome]
    coverage: Coverage | None = None
    min_coverage: float | None = None

    @property
    def failed(self) -> list[Outcome]:
        """Scenarios whose expectations did not hold."""
        return [o for o in self.outcomes if not o.ok]

    @property
    def coverage_ok(self) -> bool:
        """Rule coverage meets ``min_coverage`` (or none was asked for)."""
        return self.min_coverage is None or (self.coverage is not None and self.coverage.rule_percent() >= self.min_coverage)

    @property
    def ok(self) -> bool:
        """Every scenario passed and coverage is sufficient."""
        return not self.failed and self.coverage_ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "ok": self.ok,
            "counts": {"scenarios": len(self.outcomes), "passed": len(self.outcomes) - len(self.failed), "failed": len(self.failed),
                       "from_examples": sum(1 for o in self.outcomes if o.scenario.origin == "example")},
            "results": [o.to_dict() for o in self.outcomes],
        }
        if self.coverage is not None:
            out["coverage"] = self.coverage.to_dict()
            out["coverage"]["min_rule_percent"] = self.min_coverage
        return out


def run(pack: RulePack, scenarios: list[Scenario], *, with_coverage: bool = False, min_coverage: float | None = None) -> TestRun:
    """Run scenarios (and measure coverage if asked, or if a minimum is set)."""
    outcomes = [run_scenario(pack, s) for s in scenarios]
    cov = coverage(pack, scenarios) if with_coverage or min_coverage is not None else None
    return TestRun(outcomes, cov, min_coverage)
