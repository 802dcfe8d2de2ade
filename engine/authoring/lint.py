"""``pressor lint``: static analysis of a rule pack, beyond what loading it checks.

Every finding has a stable code (see :data:`CODES`), a severity, a location, the
rules involved and, where a patient state can show the problem, a *witness*: a
schema-valid state found by :mod:`pressor.engine.authoring.solver` and confirmed by running it
through :func:`~pressor.engine.evaluation.evaluate.evaluate`.

Severity policy: a problem among approved or in-review rules is an error; the same problem
when a draft rule is involved is a warning (drafts are not shown by default); a problem the pack has reviewed and accepted (a ``waivers:`` entry, or for
stated equivalents a rule note containing "CONTRADICTION") is a warning that says so.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import InputError, PatientStateError, Problem, RuleFileError
from ..evaluation.evaluate import evaluate, flatten_state
from ..evaluation.load import Document, load_document
from ..evaluation.logic import derive, set_aside_doubtful_pressures, truth
from ..model import All, Compare, Condition, Decision, DoseSpec, Rule, RulePack, Waiver, leaves
from ..evaluation.pack import default_rules_dir, load_pack, rule_files
from .findings import CODES, SEVERITIES, Finding, LintReport, drug_of, rule_ids, severity_for  # noqa: F401 (re-exported)
from .lint_thresholds import threshold_findings
from .lint_signoff import check_signoff
from .lint_units import check_dose_units
from .solver import Atom, SolverLimit, Space, conj
from ..evaluation.validate import STATE_SCHEMA, schema

#: Fixed evaluation time for witnesses: the lint's output never depends on the clock.
WITNESS_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
#: Facts the patient-state checks relate to each other (varied first when building a witness).
COUPLED_FACTS = ("vitals.sbp_mmhg", "vitals.dbp_mmhg", "vitals.map_mmhg")


def lint_pack(directory: str | Path | None = None, *, budget: int = 200_000, profile: str | Path | None = None) -> LintReport:
    """Lint the pack in ``directory`` (default: the bundled pack), with a site ``profile`` applied if given.

    ``budget`` bounds the search steps of each question put to the solver; a question
    that needs more is reported as ``solver-incomplete`` rather than answered. A profile's
    values are checked against the parameters' ranges, then every check runs with them.
    """
    directory = Path(directory) if directory is not None else default_rules_dir()
    docs = _documents(directory)
    findings = list(_missing_citations(docs.values()))
    try:
        pack = load_pack(directory, profile=profile)
    except RuleFileError as exc:
        findings += _load_findings(exc.problems, findings)
        return LintReport(str(directory), _ordered(findings))
    except InputError as exc:  # the profile
        findings += [Finding("profile-out-of-range", "error", p.message, p.file, p.line, suggestion=p.suggestion)
                     for p in exc.problems]
        return LintReport(str(directory), _ordered(findings))
    linter = _Linter(pack, docs, budget)
    findings += linter.run()
    return LintReport(str(directory), _ordered(findings),
                      {"name": pack.name, "version": pack.version, "sha256": pack.sha256})


def _ordered(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.code, f.file or "", f.line or 0, f.rules))


def _documents(directory: Path) -> dict[str, Document]:
    """The pack's files parsed with positions, keyed by the label the loader gives them."""
    if not directory.is_dir():
        raise InputError.single("rule directory not found", file=str(directory), suggestion="pass a pack directory")
    out: dict[str, Document] = {}
    for path in rule_files(directory):
        try:
            label = str(path.relative_to(Path.cwd()))
        except ValueError:
            label = str(path)
        try:
            out[label] = load_document(path, label=label)
        except InputError:
            continue  # the loader reports it, with its position
    return out


def _missing_citations(docs: Iterable[Document]) -> Iterator[Finding]:
    """Rules with no citation (the schema refuses them, so this reads the raw files)."""
    for doc in docs:
        items = doc.data.get("rules") if isinstance(doc.data, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if isinstance(item, dict) and not item.get("citations"):
                where = doc.where(f"/rules/{i}")
                rid = item.get("id") if isinstance(item.get("id"), str) else None
                yield Finding("citation-missing", "error", f"rule '{rid}' cites nothing", where["file"], where.get("line"),
                              (rid,) if rid else (), suggestion="add citations: [{ref: N}] naming the reference it rests on",
                              details={"pointer": f"/rules/{i}"})


def _load_findings(problems: list[Problem], already: list[Finding]) -> list[Finding]:
    reported = {(f.file, f.details["pointer"] + tail) for f in already if f.code == "citation-missing" for tail in ("", "/citations")}
    out = []
    for p in problems:
        if (p.file, p.pointer) in reported:
            continue  # the schema's side of a rule already reported as citation-missing
        code = p.code if p.code in CODES else "load-error"
        out.append(Finding(code, p.severity if p.severity in SEVERITIES else "error", p.message, p.file, p.line,
                           (p.rule_id,) if p.rule_id else (), suggestion=p.suggestion))
    return out


class _Linter:
    """All checks that need the loaded pack."""

    def __init__(self, pack: RulePack, docs: dict[str, Document], budget: int) -> None:
        self.pack = pack
        self.docs = docs
        self.space = Space(pack, schema(STATE_SCHEMA), budget=budget)
        self.live = [r for r in pack.rules if r.status != "retired"]
        self.by_id = {r.id: r for r in pack.rules}
        self.superseded_by = pack.superseded_by()
        self.typical = _typical_values(pack)
        self.findings: list[Finding] = []
        self.used_waivers: set[int] = set()

    def run(self) -> list[Finding]:
        from .lint_arithmetic import check_arithmetic

        self.findings += self._loader_warnings()
        self.findings += self._unreachable()
        self.findings += self._contradictions()
        self.findings += self._gaps()
        self.findings += threshold_findings(self._comparisons(), self.by_id)
        self.findings += check_arithmetic(self.pack, self.locate)
        self.findings += check_dose_units(self.pack, self.docs, self.locate)
        self.findings += self._status()
        self.findings += check_signoff(self.pack)
        self.findings += self._absent_means()
        self.findings += self._temporal()
        self.findings += self._unread_facts()
        return self._apply_waivers(self.findings)

    # -- where things are -------------------------------------------------------
    def locate(self, section: str, key: str, pointer: str = "") -> tuple[str | None, int | None]:
        """``(file, line)`` of the item of ``section`` whose id (or name) is ``key``, plus ``pointer`` inside it."""
        name = "name" if section == "derived" else "id"
        for label, doc in self.docs.items():
            items = doc.data.get(section) if isinstance(doc.data, dict) else None
            for i, item in enumerate(items if isinstance(items, list) else ()):
                if isinstance(item, dict) and item.get(name) == key:
                    return label, doc.where(f"/{section}/{i}{pointer}").get("line")
        return None, None

    def _leaf_line(self, file: str, pointer: str) -> int | None:
        doc = self.docs.get(file)
        return doc.where(pointer).get("line") if doc else None

    # -- facts nothing reads -----------------------------------------------------
    def _unread_facts(self) -> list[Finding]:
        """Every input fact of the patient state is read by a rule, a derived fact, a temporal fact, the plan's
        populations, bans and question declarations, or is declared informational in pack.yaml with a reason."""
        from ..evaluation.compile import state_vocabulary
        from ..evaluation.dosing_weight import facts_read

        if "informational" not in self.pack.raw_pack:  # a pack that declares none opts out (a small test pack)
            return []
        vocab = state_vocabulary(schema(STATE_SCHEMA))
        read = {f for r in self.pack.rules for leaf in leaves(r.when) for f in leaf.facts()}
        read |= {f for d in self.pack.derived for f in d.reads()}
        read |= {p for d in self.pack.derived for p in (d.product or d.mean_pressure or ())}
        read |= {t.fact for t in self.pack.temporal}
        read |= {f for d in self.pack.decisions for leaf in leaves(d.population) for f in leaf.facts()}
        read |= {f for b in self.pack.bans if b.relevant_when is not None for leaf in leaves(b.relevant_when) for f in leaf.facts()}
        read |= {r.remaining_after for r in (x.dose for x in self.pack.rules if x.dose) if r.remaining_after}
        if self.pack.dosing is not None:
            read |= facts_read(self.pack.dosing)
        declared = {item["fact"]: item for item in self.pack.raw_pack.get("informational", [])}
        out = []
        for fact in sorted(declared):
            if fact not in vocab:
                out.append(Finding("fact-unread", "error", f"informational fact '{fact}' is not a fact of the patient state",
                                   "pack.yaml", None, suggestion="name a fact of schemas/patient-state.schema.json"))
        for fact, ft in sorted(vocab.items()):
            if ft.derived or fact in read or fact in declared:
                continue
            out.append(Finding("fact-unread", "warning", f"fact '{fact}' of the patient state is read by no rule or derived fact",
                               "pack.yaml", None, suggestion="write the rule that needs it, or mark it informational in "
                                                              "pack.yaml (informational: [{fact, reason}])"))
        return out

    # -- temporal facts ---------------------------------------------------------
    def _temporal(self) -> list[Finding]:
        """Temporal facts: the unit the fact's name states, thresholds inside the series' range, and whether anything reads them."""
        from ..evaluation.compile import state_vocabulary

        vocab = state_vocabulary(schema(STATE_SCHEMA))
        suffix_units = (("_minutes", "min"), ("minutes_", "min"), ("_hours", "h"), ("hours_", "h"), ("_ml_kg", "mL/kg"))
        read = {f for r in self.live for leaf in leaves(r.when) for f in leaf.facts()}
        read |= {f for d in self.pack.derived for f in d.reads()}
        out = []
        for tf in self.pack.temporal:
            where = (tf.file, tf.line)
            named = next((u for part, u in suffix_units if part in tf.fact.split(".", 1)[1]), None)
            if tf.unit is not None and named is not None and named != tf.unit:
                out.append(Finding("temporal-unit", "error", f"temporal fact '{tf.fact}' is computed in {tf.unit} but its name "
                                   f"says {named}", *where, suggestion="use the kind whose unit the fact is in"))
            series = vocab.get(tf.params.get("series", ""))
            if series is not None:
                lo, hi = series.minimum, series.maximum
                bounds = [tf.params["threshold"]] if "threshold" in tf.params else []
                derived = next((d for d in self.pack.derived if d.name == tf.params.get("threshold_fact")), None)
                if derived is not None:
                    bounds += [v for _, v in derived.cases] + ([derived.default] if derived.default is not None else [])
                for b in bounds:
                    if isinstance(b, (int, float)) and ((lo is not None and b <= lo) or (hi is not None and b > hi)):
                        out.append(Finding("temporal-range", "warning", f"temporal fact '{tf.fact}': threshold {b:g} is outside "
                                           f"the range of {series.path} ({lo:g}-{hi:g}); it can never be met", *where))
            if tf.fact not in read:
                out.append(Finding("temporal-unread", "info", f"temporal fact '{tf.fact}' is read by no rule or derived fact",
                                   *where, suggestion="remove it, or write the rule that needs it"))
        return out

    # -- loader warnings --------------------------------------------------------
    def _loader_warnings(self) -> list[Finding]:
        """The loader's citation warnings; resting only on unresolved references is an error for an approved rule."""
        out = []
        for w in self.pack.warnings:
            code = w.code if w.code in CODES else "load-error"
            out.append(Finding(code, "error" if code == "citation-only-unresolved" else w.severity, w.message, w.file,
                               w.line, (w.rule_id,) if w.rule_id else (),
                               suggestion="cite a listed reference as well, or record the claim as unverified in the notes"))
        return out

    # -- unreachable ------------------------------------------------------------
    def _unreachable(self) -> list[Finding]:
        out = []
        for rule in self.live:
            try:
                if self.space.satisfiable(self.space.formula(rule.when, "T")):
                    continue
                core = self._core(rule.when)
            except SolverLimit as exc:
                out.append(self._incomplete(f"reachability of {rule.id}", exc, (rule,)))
                continue
            shown = "; ".join(leaf.describe() for c in core for leaf in leaves(c))
            only = leaves(core[0]) if len(core) == 1 else []
            var = self.space.variables.get(only[0].fact) if len(only) == 1 else None
            if var is not None and var.kind == "number":
                shown += f" (the schema allows {only[0].fact} in {var.span[0].describe()})"
            out.append(Finding(
                "unreachable-rule", severity_for([rule]),
                f"'{rule.id}' can never fire: no patient state satisfies {shown}", rule.file, rule.line, (rule.id,),
                suggestion="check the thresholds and the schema's range of each fact", details={"conflict": shown},
            ))
        return out

    def _core(self, cond: Condition) -> list[Condition]:
        """A smallest-found set of top-level conjuncts that cannot hold together (deletion-based)."""
        parts: list[Condition] = list(cond.children) if isinstance(cond, All) else [cond]
        i = 0
        while i < len(parts) and len(parts) > 1:
            trial = parts[:i] + parts[i + 1:]
            if not self.space.satisfiable(conj(*(self.space.formula(c, "T") for c in trial))):
                parts = trial
            else:
                i += 1
        return parts

    # -- contradictions ---------------------------------------------------------
    def _supersede_pair(self, a: Rule, b: Rule) -> bool:
        return a.id in self.superseded_by.get(b.id, ()) or b.id in self.superseded_by.get(a.id, ())

    def _contradictions(self) -> list[Finding]:
        out = []
        decided: set[frozenset[str]] = set()
        for i, a in enumerate(self.live):
            for b in self.live[i + 1:]:
                if self._supersede_pair(a, b) or drug_of(a) is None or drug_of(a) != drug_of(b):
                    continue
                if {a.kind, b.kind} == {"do", "avoid"}:
                    do, avoid = (a, b) if a.kind == "do" else (b, a)
                    out += self._overlap("contradiction-do-avoid", [do, avoid],
                                         f"'{do.id}' says do and '{avoid.id}' says avoid for {drug_of(a)}, for the same patient")
                if a.dose is not None and b.dose is not None and _comparable_doses(a.dose, b.dose):
                    decided.add(frozenset((a.id, b.id)))
                    if _dose_key(a.dose) != _dose_key(b.dose):
                        out += self._overlap(
                            "contradiction-dose", [a, b],
                            f"'{a.id}' gives {_quantity(a.dose.range)} and '{b.id}' gives {_quantity(b.dose.range)} "
                            f"of {a.dose.drug} for the same patient")
        for d in self.pack.decisions:
            if d.hit_policy == "priority":  # overlaps are resolved by the order of its rules: the first wins
                continue
            members = [self.by_id[r] for r in d.rules if self.by_id[r].status != "retired"]
            for i, a in enumerate(members):
                for b in members[i + 1:]:
                    if self._supersede_pair(a, b) or frozenset((a.id, b.id)) in decided:
                        continue
                    if a.dose is not None and b.dose is not None and _dose_key(a.dose) == _dose_key(b.dose):
                        continue  # the same answer twice is not a contradiction
                    out += self._overlap("contradiction-decision", [a, b],
                                         f"'{a.id}' and '{b.id}' both answer '{d.id}' ({d.description}) for the same patient",
                                         decision=d)
        return out

    def _overlap(self, code: str, rules: list[Rule], message: str, decision: Decision | None = None) -> list[Finding]:
        """A finding if every rule in ``rules`` can fire (and be shown) for one patient."""
        parts = [self.space.formula(r.when, "T") for r in rules]
        ids = {r.id for r in rules}
        for r in rules:  # a rule hidden by a superseding rule that fires is not shown: stay outside those
            for winner in self.superseded_by.get(r.id, ()):
                if self.by_id[winner].status != "retired":
                    parts.append(self.space.formula(self.by_id[winner].when, "NT"))
        include_draft = any(r.status not in self.pack.in_force for r in rules)

        def confirm(state: dict[str, Any]) -> bool:
            return ids <= set(self._evaluate(state, include_draft).fired_ids())

        first = rules[0]
        regions = [(w, w.when) for w in self._waivers_for(code, ids) if w.when is not None]
        base = {"decision": decision.id} if decision else {}
        return [Finding(code, "warning" if extra or witness is None else severity_for(rules), message + note, first.file,
                        first.line, tuple(r.id for r in rules), witness, suggestion=None if extra else _CONTRADICTION_FIX,
                        details={**base, **extra})
                for witness, note, extra in self._search(parts, confirm, regions, message, rules)]

    def _search(self, parts: list[Any], confirm: Any, regions: list[tuple[Waiver, Condition]], what: str,
                rules: Iterable[Rule]) -> Iterator[tuple[dict[str, Any] | None, str, dict[str, Any]]]:
        """(witness, message suffix, details) for the problem outside waived regions (each a waiver and where it
        holds), then inside each of them."""
        goals: list[tuple[Any, Waiver | None]] = [(conj(*parts, *(self.space.formula(when, "NT") for _, when in regions)), None)]
        goals += [(conj(*parts, self.space.formula(when, "T")), w) for w, when in regions]
        for goal, waiver in goals:
            try:
                found = self._witness(goal, confirm)
            except SolverLimit as exc:
                self.findings.append(self._incomplete(what, exc, rules))
                continue
            if found is None:
                continue
            witness, confirmed = found
            note = "" if confirmed else " (possible by search, but no plausible example was confirmed)"
            extra: dict[str, Any] = {}
            if waiver is not None:
                self.used_waivers.add(id(waiver))
                note += f" [waived at {waiver.file}:{waiver.line}]"
                extra = {"waived": {"file": waiver.file, "line": waiver.line, "reason": waiver.reason}}
            yield (witness if confirmed else None), note, extra

    # -- gaps -------------------------------------------------------------------
    def _gaps(self) -> list[Finding]:
        out = []
        for d in self.pack.decisions:
            if not d.complete:  # "nothing to do" is one of its answers
                continue
            shown = [self.by_id[r] for r in d.rules if self.by_id[r].status in self.pack.in_force]
            waivers = [(w, w.when) for w in self.pack.waivers if w.code == "gap-decision" and w.decision == d.id and w.when is not None]
            needed = self.space.inputs(d.population)
            for cond in [r.when for r in shown] + [when for _, when in waivers]:
                needed |= self.space.inputs(cond)
            parts = [self.space.formula(d.population, "T")]
            pop = d.population
            # A population "derived.X == v" holds throughout the question: the rules' tests of X need no search.
            within = (self.space.assuming(pop.fact, pop.value)
                      if isinstance(pop, Compare) and pop.op == "==" and pop.fact in self.space.derived else self.space)
            parts += [within.formula(r.when, "F") for r in shown]
            parts += [Atom(p, "known") for p in sorted(needed)]
            ids = {r.id for r in shown}

            def confirm(state: dict[str, Any], d: Decision = d, ids: set[str] = ids) -> bool:
                result = self._evaluate(state, False)
                facts = flatten_state(state)
                set_aside_doubtful_pressures(self.pack.derived, facts)
                derive(self.pack.derived, facts)
                quiet = ids.isdisjoint(result.fired_ids()) and ids.isdisjoint(n.rule_id for n in result.not_evaluable)
                return truth(d.population, facts) is True and quiet

            for witness, note, extra in self._search(parts, confirm, waivers, f"gaps in decision '{d.id}'", shown):
                out.append(Finding(
                    "gap-decision", "warning" if extra or witness is None else "error",
                    f"decision '{d.id}' ({d.description}): none of {', '.join(sorted(ids))} applies to this patient" + note,
                    d.file, d.line, tuple(sorted(ids)), witness,
                    suggestion=None if extra else "add or widen a rule for this region, narrow the population, or record a waiver with a 'when'",
                    details={"decision": d.id, **extra},
                ))
        return out

    # -- witnesses --------------------------------------------------------------
    def _witness(self, goal: Any, confirm: Any, tries: int = 40, regions: int = 200
                 ) -> tuple[dict[str, Any] | None, bool] | None:
        """``(state, True)`` for the first state in ``goal`` that ``confirm`` accepts; ``(None, False)`` if the
        search finds regions but no plausible, confirmed state in them; ``None`` if ``goal`` is impossible."""
        possible = False
        seen = 0
        for n, store in enumerate(self.space.solutions(goal)):
            possible = True
            if n >= regions or seen >= tries:
                break
            for state in self.space.witnesses(store, typical=self.typical, valid=_valid_state, coupled=COUPLED_FACTS):
                seen += 1
                if confirm(state):
                    return state, True
                break  # one state per region: the next region is more likely to differ usefully
        return (None, False) if possible else None

    def _evaluate(self, state: dict[str, Any], include_draft: bool) -> Any:
        return evaluate(self.pack, state, now=WITNESS_TIME, include_draft=include_draft)

    def _incomplete(self, what: str, exc: Exception, rules: Iterable[Rule]) -> Finding:
        rules = list(rules)
        first = rules[0] if rules else None
        return Finding("solver-incomplete", "warning", f"undecided: {what} ({exc})", first.file if first else None,
                       first.line if first else None, tuple(r.id for r in rules))

    # -- thresholds -------------------------------------------------------------
    def _comparisons(self) -> list[tuple[str, str, float, str, str, int | None]]:
        """Every numeric comparison with a constant: (fact, op, value, owner, file, line)."""
        owners: list[tuple[str, str, Condition]] = [(r.id, r.file, r.when) for r in self.live]
        for d in self.pack.derived:
            for cond in ([d.when] if d.when is not None else []) + [c for c, _ in d.cases]:
                owners.append((d.name, d.file, cond))
        owners += [(d.id, d.file, d.population) for d in self.pack.decisions]
        out = []
        for owner, file, cond in owners:
            for leaf in leaves(cond):
                var = self.space.variables.get(leaf.fact)
                if leaf.op in ("known", "unknown", "includes"):
                    continue
                line = self._leaf_line(file, leaf.pointer)
                if leaf.value_fact is not None:
                    cases = self.space.derived.get(leaf.value_fact)
                    if cases is not None and cases.product is None and cases.when is None and cases.mean_pressure is None:
                        for value in [v for _, v in cases.cases] + [cases.default]:
                            out.append((leaf.fact, leaf.op, float(value), owner, file, line))
                    continue
                if var is None or var.kind != "number":
                    continue
                values = leaf.value if leaf.op == "in" else (leaf.value,)
                op = "==" if leaf.op == "in" else leaf.op
                out += [(leaf.fact, op, float(v), owner, file, line) for v in values]
        return out

    # -- status -----------------------------------------------------------------
    def _status(self) -> list[Finding]:
        out = []
        derived = {d.name: d for d in self.pack.derived}
        for rule in self.live:
            if rule.status != "approved":
                continue
            for name in sorted(self._derived_read(rule.when)):
                d = derived[name]
                if d.status != "approved":
                    out.append(Finding(
                        "status-draft-dependency", "error",
                        f"approved rule '{rule.id}' depends on derived fact '{name}', which is {d.status}",
                        rule.file, rule.line, (rule.id,), suggestion=f"approve '{name}' first, or set the rule back to draft"))
        for decision in self.pack.decisions:
            for rid in decision.rules:
                if self.by_id[rid].status == "retired":
                    out.append(Finding("status-retired-referenced", "error",
                                       f"decision '{decision.id}' counts on retired rule '{rid}', which never fires",
                                       decision.file, decision.line, (rid,), suggestion="list its replacement instead"))
        for rule in self.live:
            for old in rule.supersedes:
                if self.by_id[old].status == "retired":
                    file, line = self.locate("rules", rule.id, "/supersedes")
                    out.append(Finding("status-retired-referenced", "warning",
                                       f"'{rule.id}' supersedes retired rule '{old}', which never fires anyway",
                                       file, line, (rule.id, old), suggestion="drop it from supersedes"))
        return out

    # -- absent_means -----------------------------------------------------------
    def _absent_means(self) -> list[Finding]:
        """A declaration that an absent fact means "none" must not hide a rule that fires on "none".

        For a fact declared with ``none: V``: if some rule can fire with the fact recorded as V
        (where the declaration's ``when`` holds), the same patient with the fact left out would see
        that rule as not applicable: absence would not mean what the declaration says.
        """
        out = []
        for decl in self.pack.absent_means:
            if decl.fact is None:
                continue
            var = self.space.variables[decl.fact]
            if var.kind == "array":
                none = conj(Atom(decl.fact, "known"), *(Atom(decl.fact, "has", (m, False)) for m in var.values
                                                        if m not in (decl.none or ())),
                            *(Atom(decl.fact, "has", (m, True)) for m in (decl.none or ())))
            else:
                none = self.space.formula(Compare(decl.fact, "==", decl.none), "T")
            scope = self.space.formula(decl.when, "T") if decl.when is not None else None
            for rule in self.live:
                if decl.fact not in self.space.inputs(rule.when):
                    continue
                goal = conj(self.space.formula(rule.when, "T"), none, *([scope] if scope is not None else []))

                def confirm(state: dict[str, Any], rule: Rule = rule) -> bool:
                    return rule.id in self._evaluate(state, rule.status not in self.pack.in_force).fired_ids()

                try:
                    found = self._witness(goal, confirm)
                except SolverLimit as exc:
                    out.append(self._incomplete(f"absent_means {decl.name} against {rule.id}", exc, (rule,)))
                    continue
                if found is None:
                    continue
                witness, _ = found
                out.append(Finding(
                    "absent-means-hides-rule", "error",
                    f"absent_means declares that an absent '{decl.fact}' means {decl.none!r} ({decl.meaning}), but "
                    f"'{rule.id}' fires when it is recorded as {decl.none!r}: with the fact left out it would be "
                    "listed as not applicable instead of asked for", decl.file, decl.line, (rule.id,), witness=witness,
                    suggestion="narrow the declaration's 'when' so the rule is excluded, or remove the declaration",
                ))
        return out

    def _derived_read(self, cond: Condition) -> set[str]:
        out: set[str] = set()
        todo = [p for leaf in leaves(cond) for p in leaf.facts()]
        while todo:
            path = todo.pop()
            d = self.space.derived.get(path)
            if d is not None and path not in out:
                out.add(path)
                todo.extend(d.reads())
        return out

    # -- waivers ----------------------------------------------------------------
    def _waivers_for(self, code: str, rules: set[str]) -> list[Waiver]:
        return [w for w in self.pack.waivers if w.code == code and w.rules and set(w.rules) <= rules]

    def _apply_waivers(self, findings: list[Finding]) -> list[Finding]:
        """Findings a waiver without a region accepts become warnings; unused waivers are findings themselves."""
        out = []
        for f in findings:
            match = None if "waived" in f.details or f.severity == "info" else next(
                (w for w in self.pack.waivers if w.when is None and w.code == f.code and set(w.rules) <= set(f.rules)
                 and (w.decision is None or f.details.get("decision") == w.decision)), None)
            if match is None:
                out.append(f)
                continue
            self.used_waivers.add(id(match))
            out.append(replace(f, severity="warning", message=f"{f.message} [waived at {match.file}:{match.line}]", suggestion=None,
                               details={**f.details, "waived": {"file": match.file, "line": match.line, "reason": match.reason}}))
        for w in self.pack.waivers:
            if id(w) not in self.used_waivers:
                out.append(Finding("waiver-unused", "warning", f"waiver for {w.code} matches no finding", w.file, w.line,
                                   w.rules, suggestion="remove it; the problem it accepted is gone"))
        return out


_CONTRADICTION_FIX = ("make the conditions exclusive, or declare 'supersedes: [other id]' on the rule that refines "
                      "the other, or record a reviewed waiver")


def _comparable_doses(a: DoseSpec, b: DoseSpec) -> bool:
    """Both rates or both amounts: a one-off amount (a bag, a bolus) does not compete with an infusion rate."""
    from ..evaluation.units import parse_unit

    return (parse_unit(a.range.unit).per_time is None) == (parse_unit(b.range.unit).per_time is None)


def _dose_key(dose: DoseSpec) -> tuple[Any, ...]:
    """A dose range in base units (mcg, units or mL; per kg or not; per minute), for comparison."""
    from ..evaluation.units import parse_unit

    q = dose.range
    u = parse_unit(q.unit)
    factor = u.to_base * (u.per_minute_factor or 1.0)
    return (dose.drug, u.dimension, u.per_kg, u.per_time is None, round(q.low * factor, 9), round(q.high * factor, 9))


def _quantity(q: Any) -> str:
    return (f"{q.low:g}-{q.high:g}" if q.is_range else f"{q.low:g}") + f" {q.unit}"


def _valid_state(state: dict[str, Any]) -> bool:
    """Schema-valid, and plausible: DBP < MAP < SBP for whichever of the three are given."""
    from ..evaluation.validate import check_state

    try:
        check_state(state)
    except PatientStateError:
        return False
    vitals = state.get("vitals") or {}
    given = [vitals[k] for k in ("dbp_mmhg", "map_mmhg", "sbp_mmhg") if k in vitals]
    return all(a < b for a, b in zip(given, given[1:]))


def _typical_values(pack: RulePack) -> dict[str, list[Any]]:
    """Values the pack's own examples use for each fact, most used first: witnesses read like real patients."""
    counts: dict[str, dict[Any, int]] = {}
    for rule in pack.rules:
        for ex in rule.raw.get("examples", ()):
            for path, value in flatten_state(ex.get("state") or {}).items():
                if isinstance(value, list):
                    continue
                counts.setdefault(path, {})
                counts[path][value] = counts[path].get(value, 0) + 1
    return {p: sorted(c, key=lambda v: -c[v]) for p, c in counts.items()}
