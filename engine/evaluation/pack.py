"""Load a rule pack directory once: parse, validate, check, and build the model.

Every problem in every file is collected (best first per file) and raised together
as one :class:`~pressor.engine.errors.RuleFileError`, before any patient is seen.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from ._durable import ENGINE_MAX_FACTS, MAX_FACTS
from .compile import ConditionCompiler, FactType, engine_limit, problems_from, state_vocabulary
from ..errors import InputError, Problem, RuleFileError, close_matches
from .load import Document, load_document
from ..model import (
    TEMPORAL_KINDS,
    AbsentMeans,
    Ban,
    QuestionRelevance,
    TemporalFact,
    Citation,
    Decision,
    Derived,
    DoseSpec,
    Preparation,
    Quantity,
    Reference,
    Rule,
    RulePack,
    StatusChange,
    Waiver,
)
from . import parameters
from .units import UnitError, parse_unit
from .validate import STATE_SCHEMA, schema, schema_problems

RULE_SCHEMA = "rule-file.schema.json"


def default_rules_dir() -> Path:
    """The bundled pack (``pressor.rules``)."""
    from ... import rules

    return Path(rules.DIR)


def rule_files(directory: Path) -> list[Path]:
    """The pack's YAML files, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


#: Longest chain of derived facts reading derived facts (checked at load): far beyond what a protocol needs
#: (the bundled pack's longest is a few), and keeps ordering and explaining them far from Python's recursion limit.
MAX_DERIVED_DEPTH = 64


def load_pack(directory: str | Path | None = None, *, check_examples: bool = False,
              profile: str | Path | None = None, cache: bool = True) -> RulePack:
    """Load, validate and check the pack in ``directory`` (default: the bundled rules).

    ``profile`` is a site profile file overriding parameter values within their ranges
    (:mod:`.parameters`); parameters are resolved to constants before anything compiles.
    ``cache=False`` loads from the files without the pack cache: for a directory that is never loaded
    again (a stored pack written to a temporary directory), whose entry would only push useful ones out.
    Raises :class:`RuleFileError` listing every problem found (a bad profile: :class:`InputError`).
    Warnings (for example citations of references the source does not list) are kept on ``pack.warnings``.
    """
    directory = Path(directory) if directory is not None else default_rules_dir()
    if not directory.is_dir():
        raise InputError.single("rule directory not found", file=str(directory), suggestion="pass --rules DIR")
    files = rule_files(directory)
    if not files:
        raise RuleFileError.single("no .yaml rule files in the directory", file=str(directory))
    if check_examples or not cache:
        return _Builder(directory, files, check_examples, profile).build()
    return _load_cached(directory, files, profile)


def _load_cached(directory: Path, files: list[Path], profile: str | Path | None) -> RulePack:
    """The pack from the pack cache (keyed by the SHA-256 of its files and of the site profile, see
    :mod:`.pack_cache`), else built and stored."""
    from . import pack_cache

    try:
        inputs = [(_label(p), p.read_bytes()) for p in files]
        if profile is not None:
            inputs.append((f"site profile {profile}", Path(profile).read_bytes()))
        key = pack_cache.pack_key(str(directory), inputs)
    except OSError:  # an unreadable file: the builder reports it with its location
        return _Builder(directory, files, False, profile).build()
    pack = pack_cache.in_memory(key)
    if pack is not None:
        return pack
    pack = pack_cache.get(key)
    if pack is None:
        pack = _Builder(directory, files, False, profile).build()
        pack_cache.put(key, pack)
    else:
        from .evaluate import prepare

        prepare(pack)
    pack_cache.remember(key, pack)
    return pack


def _label(path: Path) -> str:
    """How a rule file is named in messages: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _Builder:
    """One pass over a pack directory; accumulates problems instead of stopping at the first."""

    def __init__(self, directory: Path, files: list[Path], check_examples: bool, profile: str | Path | None = None) -> None:
        self.directory = directory
        self.profile_path = profile
        self.files = files
        self.check_examples = check_examples
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.docs: list[Document] = []
        self.located: dict[str, tuple[Any, str]] = {}  # rule id -> (its document's where(), its pointer)
        self.vocab: dict[str, FactType] = dict(state_vocabulary(schema(STATE_SCHEMA)))

    # -- entry ----------------------------------------------------------------
    def build(self) -> RulePack:
        manifest: dict[str, str] = {}
        loaded: list[Document] = []
        for path in self.files:
            label = _label(path)
            try:
                doc = load_document(path, label=label)
            except InputError as exc:
                self.problems.extend(exc.problems)
                continue
            manifest[path.name] = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
            if not isinstance(doc.data, dict):
                self.problems.append(Problem("a rule file must be a mapping", **doc.where("")))
                continue
            loaded.append(doc)
        params = parameters.declared(loaded, self.problems)
        profile = None
        if self.profile_path is not None:
            params, profile = parameters.load_profile(self.profile_path, params)
        for doc in loaded:
            parameters.resolve(doc, params, self.problems)
            found = schema_problems(doc, RULE_SCHEMA)
            self.problems.extend(found)
            if not found:
                self.docs.append(doc)
        if self.problems:
            raise RuleFileError(self.problems)

        pack_doc, pack_meta = self._single("pack")
        refs_doc, refs_meta = self._single("references")
        self._raise_if_problems()
        references = self._references(refs_doc, refs_meta)
        for doc, items in self._sections("parameters"):
            for i, item in enumerate(items):
                self._citations(doc, f"/parameters/{i}/citations", item["citations"], references, item["name"], False)
        derived = self._derived(references)
        preparations = self._preparations(references)
        rules = _expand_scope_rules(self._rules(references, {p.drug for p in preparations}, refs_meta["document"]))
        self._supersedes(rules)
        decisions = self._decisions({r.id for r in rules})
        bans = self._bans({r.id for r in rules})
        question_relevance = self._question_relevance()
        waivers = self._waivers({r.id for r in rules}, {d.id for d in decisions})
        absent_means = self._absent_means()
        temporal = self._temporal(references)
        self._raise_if_problems()
        if self.check_examples:
            self._examples()
            self._raise_if_problems()
        pack_sha = pack_sha256(manifest)
        pack = RulePack(
            name=pack_meta["name"], version=pack_meta["version"], title=pack_meta["title"],
            sha256=pack_sha, directory=str(self.directory), rules=tuple(rules), derived=tuple(derived),
            preparations=tuple(preparations), references=references, document=dict(refs_meta["document"]),
            files=manifest, warnings=tuple(self.warnings), raw_pack=dict(pack_meta),
            array_members={p: ft.values for p, ft in self.vocab.items() if ft.kind == "array"},
            decisions=tuple(decisions), bans=tuple(bans), question_relevance=tuple(question_relevance),
            waivers=tuple(waivers), absent_means=tuple(absent_means),
            temporal=tuple(temporal), parameters=tuple(params.values()), profile=profile,
        )
        self._engine_check(pack)
        return pack

    def _raise_if_problems(self) -> None:
        if self.problems:
            raise RuleFileError(self.problems)

    def _sections(self, key: str) -> list[tuple[Document, Any]]:
        return [(d, d.data[key]) for d in self.docs if key in d.data]

    def _single(self, key: str) -> tuple[Document | None, dict[str, Any]]:
        found = self._sections(key)
        if len(found) != 1:
            where = found[1][0].where(f"/{key}") if len(found) > 1 else {"file": str(self.directory)}
            self.problems.append(Problem(f"the pack needs exactly one '{key}' section, found {len(found)}", **where))
            return None, {}
        return found[0]

    # -- references -----------------------------------------------------------
    def _references(self, doc: Document | None, meta: dict[str, Any]) -> dict[int, Reference]:
        refs: dict[int, Reference] = {}
        if doc is None:  # no references section: reported by _single
            return refs
        for i, item in enumerate(meta.get("items", [])):
            if item["number"] in refs:
                self.problems.append(Problem(f"reference {item['number']} is listed twice", **doc.where(f"/references/items/{i}/number")))
            refs[item["number"]] = Reference(item["number"], item["title"], True, item.get("kind"), item.get("publisher"), item.get("year"),
                                             added_by=item.get("added_by"))
        for i, item in enumerate(meta.get("unresolved", [])):
            if item["number"] in refs:
                self.problems.append(Problem(f"reference {item['number']} is both listed and unresolved", **doc.where(f"/references/unresolved/{i}/number")))
                continue
            refs[item["number"]] = Reference(item["number"], "unresolved: cited by the source but not in its reference list", False, note=item["note"])
        return refs

    def _citations(self, doc: Document, pointer: str, data: list[dict[str, Any]], refs: dict[int, Reference], owner: str, approved: bool) -> tuple[Citation, ...]:
        out = []
        for i, c in enumerate(data):
            ref = refs.get(c["ref"])
            where = doc.where(f"{pointer}/{i}/ref")
            if ref is None:
                self.problems.append(Problem(f"citation [{c['ref']}] has no entry in references.yaml", rule_id=owner,
                                             suggestion=f"cite one of {sorted(refs)} or add the reference",
                                             code="citation-unknown-reference", **where))
                continue
            if not ref.resolved:
                self.warnings.append(Problem(f"cites [{c['ref']}], which the source cites but does not list", rule_id=owner,
                                             severity="warning", code="citation-unresolved", **where))
            out.append(Citation(c["ref"], c.get("evidence")))
        if approved and out and all(not refs[c.ref].resolved for c in out):
            self.warnings.append(Problem("approved, but every citation is unresolved", rule_id=owner, severity="warning",
                                         code="citation-only-unresolved", **doc.where(pointer)))
        return tuple(out)

    # -- derived facts --------------------------------------------------------
    def _derived(self, refs: dict[int, Reference]) -> list[Derived]:
        entries = []
        for doc, items in self._sections("derived"):
            for i, item in enumerate(items):
                ptr = f"/derived/{i}"
                if item["name"] in self.vocab:
                    self.problems.append(Problem(f"derived fact '{item['name']}' is declared twice", **doc.where(f"{ptr}/name")))
                    continue
                kind = item["type"]
                self.vocab[item["name"]] = FactType(item["name"], kind, description=item["description"], derived=True)
                entries.append((doc, ptr, item))
        width = sum(len(ft.values) if ft.kind == "array" else 1 for ft in self.vocab.values())
        if width > MAX_FACTS and entries:
            doc, ptr, _ = entries[0]
            n = len(entries)
            self.problems.append(Problem(
                f"the pack's {n} derived facts and the state's {width - n} facts (an array counts each member) make "
                f"{width} facts for the engine to match; pressor takes at most {MAX_FACTS} (durable-rules fails every "
                f"complete patient past {ENGINE_MAX_FACTS}, error 302)", **doc.where(ptr),
                suggestion=f"merge derived facts, or test conditions in the rules directly: at most {MAX_FACTS - width + n} "
                "derived facts with this state schema"))
            return []
        out: list[Derived] = []
        for doc, ptr, item in entries:
            report = problems_from(self.problems, doc.where, item["name"])
            cc = ConditionCompiler(self.vocab, report)
            when = cc.parse(item["when"], f"{ptr}/when", allow_fact_refs=True) if "when" in item else None
            cases = tuple(
                (cc.parse(c["when"], f"{ptr}/cases/{j}/when", allow_fact_refs=True), c["value"])
                for j, c in enumerate(item.get("cases", []))
            )
            if "cases" in item and "default" not in item:
                report(ptr, "a derived fact with cases needs a default (its value when no case holds)", "add 'default:'")
            if item["type"] == "boolean" and "product" in item:
                report(f"{ptr}/product", "a product is a number", "set type: number")
            if item["type"] == "number" and "when" in item:
                report(f"{ptr}/when", "'when' yields true/false", "set type: boolean or use cases")
            mp = item.get("mean_pressure")
            if mp is not None:
                if item["type"] != "number":
                    report(f"{ptr}/mean_pressure", "a mean pressure is a number", "set type: number")
                for key in ("map", "sbp", "dbp"):
                    ft = self.vocab.get(mp[key])
                    if ft is None or ft.kind != "number":
                        report(f"{ptr}/mean_pressure/{key}", f"'{mp[key]}' is not a numeric fact", None)
            for j, path in enumerate(item.get("product", [])):
                ft = self.vocab.get(path)
                if ft is None or ft.kind != "number":
                    report(f"{ptr}/product/{j}", f"'{path}' is not a numeric fact", None)
            for j, (_, value) in enumerate(cases):
                if isinstance(value, bool) != (item["type"] == "boolean"):
                    report(f"{ptr}/cases/{j}/value", f"value {value!r} does not match type {item['type']}", None)
            if "citations" in item:
                self._citations(doc, f"{ptr}/citations", item["citations"], refs, item["name"], False)
            line = doc.where(ptr).get("line")
            out.append(Derived(
                name=item["name"], type=item["type"], description=item["description"], when=when,
                cases=tuple((c, v) for c, v in cases if c is not None), default=item.get("default"),
                product=tuple(item["product"]) if "product" in item else None,
                mean_pressure=(mp["map"], mp["sbp"], mp["dbp"]) if mp is not None else None,
                status=item.get("status", "approved"), file=doc.file, line=line, raw=item,
            ))
        return self._order_derived(out)

    def _order_derived(self, items: list[Derived]) -> list[Derived]:
        """Dependency order; a cycle is an error naming its members."""
        by_name = {d.name: d for d in items}
        ordered: list[Derived] = []
        state: dict[str, int] = {}

        def visit(d: Derived, chain: list[str]) -> None:
            if state.get(d.name) == 2:
                return
            if state.get(d.name) == 1:
                cycle = " -> ".join(chain[chain.index(d.name):] + [d.name])
                self.problems.append(Problem(f"derived facts depend on each other in a cycle: {cycle}", file=d.file, line=d.line))
                return
            state[d.name] = 1
            for dep in sorted(d.reads()):
                if dep in by_name:
                    visit(by_name[dep], chain + [d.name])
            state[d.name] = 2
            ordered.append(d)

        for d in items:
            visit(d, [])
        depth: dict[str, int] = {}
        for d in ordered:  # dependencies first
            depth[d.name] = 1 + max((depth.get(dep, 0) for dep in d.reads() if dep in by_name), default=0)
            if depth[d.name] == MAX_DERIVED_DEPTH + 1:
                self.problems.append(Problem(
                    f"derived fact '{d.name}' ends a chain of {depth[d.name]} derived facts each reading the one before; "
                    f"at most {MAX_DERIVED_DEPTH}", file=d.file, line=d.line,
                    suggestion="let a derived fact read the state facts its chain starts from"))
        return ordered

    # -- temporal facts -------------------------------------------------------
    def _temporal(self, refs: dict[int, Reference]) -> list[TemporalFact]:
        """``temporal:`` facts computed from a timeline: kind, parameters and unit checked against the vocabulary."""
        out: list[TemporalFact] = []
        seen: set[str] = set()
        drugs = self.vocab["order.drug"].values if "order.drug" in self.vocab else ()
        for doc, items in self._sections("temporal"):
            for i, item in enumerate(items):
                ptr = f"/temporal/{i}"

                def report(sub: str, message: str, suggestion: str | None = None) -> None:
                    self.problems.append(Problem(f"temporal fact '{item['fact']}': {message}", suggestion=suggestion,  # noqa: B023
                                                 **doc.where(ptr + sub)))  # noqa: B023 (called within this iteration)

                fact, kind = item["fact"], item["kind"]
                required, optional, unit = TEMPORAL_KINDS[kind]
                params = {k: v for k, v in item.items() if k not in ("fact", "kind", "description", "unit", "citations", "notes")}
                ft = self.vocab.get(fact)
                if ft is None or ft.derived:
                    report("/fact", "not a patient-state fact", "a temporal fact computes a fact of schemas/patient-state.schema.json")
                elif ft.kind != ("boolean" if unit is None else "number"):
                    report("/fact", f"a {kind} fact is a {'boolean' if unit is None else 'number'}, '{fact}' is a {ft.kind}")
                if fact in seen:
                    report("/fact", "declared twice")
                seen.add(fact)
                for key in sorted(required - params.keys()):
                    report("", f"{kind} needs '{key}'")
                for key in sorted(params.keys() - required - optional):
                    report(f"/{key}", f"{kind} takes no '{key}'", f"it takes {', '.join(sorted(required | optional))}")
                if item.get("unit") != unit:
                    report("/unit", f"the unit of a {kind} fact is {unit or 'none (a boolean)'}, not {item.get('unit')!r}")
                for key in ("series", "unchanged_rate", "threshold_fact"):
                    if key in params:
                        target = self.vocab.get(params[key])
                        if target is None or target.kind != "number":
                            report(f"/{key}", f"'{params[key]}' is not a number fact")
                        elif key != "threshold_fact" and target.derived:
                            report(f"/{key}", f"'{params[key]}' is derived; a timeline records patient facts")
                for key in ("drug",):
                    if key in params and params[key] not in drugs:
                        report(f"/{key}", f"'{params[key]}' is not a drug of order.drug", f"one of {', '.join(drugs)}")
                for j, d in enumerate(params.get("drugs", ())):
                    if d not in drugs:
                        report(f"/drugs/{j}", f"'{d}' is not a drug of order.drug")
                if "threshold" in params and "threshold_fact" in params:
                    report("/threshold", "give threshold or threshold_fact, not both")
                if kind == "sustained_below" and "threshold" not in params and "threshold_fact" not in params:
                    report("", "sustained_below needs threshold or threshold_fact")
                self._citations(doc, f"{ptr}/citations", item.get("citations", []), refs, fact, False)
                out.append(TemporalFact(fact, kind, item["description"], params, unit, doc.file, doc.where(ptr).get("line")))
        return out

    # -- preparations ---------------------------------------------------------
    def _preparations(self, refs: dict[int, Reference]) -> list[Preparation]:
        out = []
        seen: set[str] = set()
        for doc, items in self._sections("preparations"):
            for i, item in enumerate(items):
                ptr = f"/preparations/{i}"
                if item["id"] in seen:
                    self.problems.append(Problem(f"preparation '{item['id']}' is declared twice", **doc.where(f"{ptr}/id")))
                seen.add(item["id"])
                cites = self._citations(doc, f"{ptr}/citations", item["citations"], refs, item["id"], False)
                out.append(Preparation(
                    id=item["id"], drug=item["drug"], population=item["population"], volume_ml=item["volume_ml"],
                    diluent=item["diluent"], amount_mg=item.get("amount_mg"), amount_mg_per_kg=item.get("amount_mg_per_kg"),
                    stated_concentration_mcg_ml=item.get("stated_concentration_mcg_ml"), citations=cites, raw=item,
                    amount_units=item.get("amount_units"), standard=bool(item.get("standard")),
                    max_weight_kg=item.get("max_weight_kg"),
                ))
        return out

    # -- rules ----------------------------------------------------------------
    def _rules(self, refs: dict[int, Reference], prepared_drugs: set[str], source_doc: dict[str, Any]) -> list[Rule]:
        rules: list[Rule] = []
        first_seen: dict[str, str] = {}
        for doc, items in self._sections("rules"):
            for i, item in enumerate(items):
                ptr = f"/rules/{i}"
                where = doc.where(ptr)
                rid = item["id"]
                if rid in first_seen:
                    self.problems.append(Problem(f"duplicate rule id '{rid}' (first defined at {first_seen[rid]})", rule_id=rid,
                                                 suggestion="rule ids must be unique across the pack", **doc.where(f"{ptr}/id")))
                    continue
                first_seen[rid] = f"{where['file']}:{where.get('line')}"
                report = problems_from(self.problems, doc.where, rid)
                when = ConditionCompiler(self.vocab, report).parse(item["when"], f"{ptr}/when")
                cites = self._citations(doc, f"{ptr}/citations", item["citations"], refs, rid, item["status"] == "approved")
                dose = self._dose(doc, f"{ptr}/dose", item.get("dose"), report, prepared_drugs) if "dose" in item else None
                history = self._provenance(item, ptr, report, source_doc)
                if when is None:
                    continue
                too_complex = engine_limit(rid, when)
                if too_complex:  # the rule is kept, so that nothing naming it reports it missing
                    report(f"{ptr}/when", *too_complex)
                rec = item["recommend"]
                rules.append(Rule(
                    id=rid, version=item["version"], status=item["status"], title=item["title"], when=when,
                    kind=rec["kind"], severity=rec["severity"], summary=rec["summary"], detail=rec["detail"].strip(),
                    drug=rec.get("drug"), citations=cites, section=item["source"]["section"],
                    paragraph=item["source"].get("paragraph"), dose=dose, notes=tuple(item.get("notes", ())),
                    author=item["author"], reviewers=tuple(item.get("reviewers", ())), effective=item["effective"],
                    status_history=history, source_sha256=item["source"]["sha256"],
                    file=doc.file, line=where.get("line"), raw=item, supersedes=tuple(item.get("supersedes", ())),
                ))
                self.located[rid] = (doc.where, ptr)
        return rules

    def _provenance(self, item: dict[str, Any], ptr: str, report: Any, source_doc: dict[str, Any]) -> tuple[StatusChange, ...]:
        """Check a rule's provenance against itself and the source document; the status history as model objects."""
        source = item["source"]
        sha = source["sha256"]
        if sha != source_doc["sha256"]:
            report(f"{ptr}/source/sha256", f"source sha256 {sha[:12]}... is not the sha256 of the source document in "
                   f"references.yaml ({source_doc['sha256'][:12]}...)",
                   "the rule was checked against another version of the source: re-check it against the current "
                   "source, then copy references.yaml's document sha256")
        sections = source_doc.get("sections")
        if sections and source["section"] not in sections:
            close = close_matches(source["section"], sections, n=1)
            report(f"{ptr}/source/section", f"'{source['section']}' is not a section of the source document",
                   f"did you mean '{close[0]}'?" if close else "use a section listed in references.yaml")
        history = item["status_history"]
        dates: list[date | None] = []
        for j, entry in enumerate(history):
            try:
                dates.append(date.fromisoformat(entry["date"]))
            except ValueError:
                dates.append(None)
                report(f"{ptr}/status_history/{j}/date", f"'{entry['date']}' is not a calendar date", "write YYYY-MM-DD")
        for j, (before, this) in enumerate(zip(dates, dates[1:]), start=1):
            if this is not None and before is not None and this < before:
                report(f"{ptr}/status_history/{j}/date", f"{this} is earlier than the entry before it ({before})",
                       "list the status history oldest first")
        if history and history[-1]["status"] != item["status"]:
            report(f"{ptr}/status_history/{len(history) - 1}/status",
                   f"the last status_history entry is '{history[-1]['status']}' but the rule's status is '{item['status']}'",
                   f"append an entry with status: {item['status']} (date, by, comment), or correct the rule's status")
        try:
            effective = date.fromisoformat(item["effective"])
        except ValueError:
            report(f"{ptr}/effective", f"'{item['effective']}' is not a calendar date", "write YYYY-MM-DD")
        else:
            approved = [d for e, d in zip(history, dates) if e["status"] == "approved" and d is not None]
            if item["status"] == "approved" and approved and effective < approved[-1]:
                report(f"{ptr}/effective", f"takes effect {effective}, before it was approved ({approved[-1]})",
                       "an approved version cannot take effect before its approval")
        return tuple(StatusChange(e["date"], e["status"], e["by"], e.get("comment")) for e in history)
    def _unknown_rule(self, rule_id: str, known: set[str], where: dict[str, Any], owner: str | None) -> None:
        close = close_matches(rule_id, sorted(known), n=1)
        self.problems.append(Problem(f"no rule '{rule_id}' in the pack", rule_id=owner,
                                     suggestion=f"did you mean '{close[0]}'?" if close else "check the rule id", **where))

    def _supersedes(self, rules: list[Rule]) -> None:
        """Superseded ids must exist, differ from the rule's own, and not loop back to it."""
        known = {r.id for r in rules}
        for rule in rules:
            where, base = self.located[rule.id]
            for i, old in enumerate(rule.supersedes):
                loc = where(f"{base}/supersedes/{i}")
                if old == rule.id:
                    self.problems.append(Problem("a rule cannot supersede itself", rule_id=rule.id, **loc))
                elif old not in known:
                    self._unknown_rule(old, known, loc, rule.id)
        graph = {r.id: [o for o in r.supersedes if o in known and o != r.id] for r in rules}
        for rule in rules:
            todo, seen = list(graph[rule.id]), set()
            while todo:
                nxt = todo.pop()
                if nxt == rule.id:
                    where, base = self.located[rule.id]
                    self.problems.append(Problem("rules supersede each other in a cycle", rule_id=rule.id,
                                                 suggestion="only the refining rule lists the rule it refines",
                                                 **where(f"{base}/supersedes")))
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    todo.extend(graph[nxt])

    def _decisions(self, rule_ids: set[str]) -> list[Decision]:
        out: list[Decision] = []
        seen: set[str] = set()
        for doc, items in self._sections("decisions"):
            for i, item in enumerate(items):
                ptr = f"/decisions/{i}"
                if item["id"] in seen:
                    self.problems.append(Problem(f"decision '{item['id']}' is declared twice", **doc.where(f"{ptr}/id")))
                seen.add(item["id"])
                report = problems_from(self.problems, doc.where, None)
                population = ConditionCompiler(self.vocab, report).parse(item["population"], f"{ptr}/population")
                for key in ("rules", "supporting"):
                    for j, rid in enumerate(item.get(key, ())):
                        if rid not in rule_ids:
                            self._unknown_rule(rid, rule_ids, doc.where(f"{ptr}/{key}/{j}"), None)
                if population is not None:
                    out.append(Decision(item["id"], item["description"], population, tuple(item["rules"]),
                                        file=doc.file, line=doc.where(ptr).get("line"), title=item.get("title", item["id"]),
                                        hit_policy=item.get("hit_policy", "unique"),
                                        supporting=tuple(item.get("supporting", ())), in_plan=bool(item.get("plan", False)),
                                        complete=bool(item.get("complete", True))))
        placed: dict[str, str] = {}  # a rule answers or supports at most one plan decision
        for d in out:
            if not d.in_plan:
                continue
            for rid in d.rules + d.supporting:
                if rid in placed and placed[rid] != d.id:
                    self.problems.append(Problem(f"rule '{rid}' is in two plan decisions ('{placed[rid]}' and '{d.id}')",
                                                 suggestion="a rule answers or supports one plan decision", file=d.file,
                                                 line=d.line))
                placed[rid] = d.id
        return out

    def _bans(self, rule_ids: set[str]) -> list[Ban]:
        """``bans:``: rules that forbid something, each shown only where it is relevant."""
        out: list[Ban] = []
        for doc, items in self._sections("bans"):
            for i, item in enumerate(items):
                ptr = f"/bans/{i}"
                if item["rule"] not in rule_ids:
                    self._unknown_rule(item["rule"], rule_ids, doc.where(f"{ptr}/rule"), None)
                report = problems_from(self.problems, doc.where, None)
                when = (ConditionCompiler(self.vocab, report).parse(item["relevant_when"], f"{ptr}/relevant_when")
                        if "relevant_when" in item else None)
                out.append(Ban(item["rule"], when, item.get("because", "")))
        return out

    def _question_relevance(self) -> list[QuestionRelevance]:
        """``questions:``: when a missing fact is worth asking about (see plan.py)."""
        out: list[QuestionRelevance] = []
        for doc, items in self._sections("questions"):
            for i, item in enumerate(items):
                ptr = f"/questions/{i}"
                for j, fact in enumerate((item["fact"], *item.get("covered_by", ()))):
                    if fact not in self.vocab or self.vocab[fact].derived:
                        where = f"{ptr}/fact" if j == 0 else f"{ptr}/covered_by/{j - 1}"
                        self.problems.append(Problem(f"'{fact}' is not a fact of the patient state",
                                                     suggestion="name a fact of schemas/patient-state.schema.json",
                                                     **doc.where(where)))
                report = problems_from(self.problems, doc.where, None)
                when = (ConditionCompiler(self.vocab, report).parse(item["relevant_when"], f"{ptr}/relevant_when")
                        if "relevant_when" in item else None)
                out.append(QuestionRelevance(item["fact"], when, tuple(item.get("covered_by", ())), item.get("because", "")))
        return out

    def _waivers(self, rule_ids: set[str], decision_ids: set[str]) -> list[Waiver]:
        out: list[Waiver] = []
        for doc, items in self._sections("waivers"):
            for i, item in enumerate(items):
                ptr = f"/waivers/{i}"
                for j, rid in enumerate(item.get("rules", ())):
                    if rid not in rule_ids:
                        self._unknown_rule(rid, rule_ids, doc.where(f"{ptr}/rules/{j}"), None)
                if "decision" in item and item["decision"] not in decision_ids:
                    self.problems.append(Problem(f"no decision '{item['decision']}' in the pack",
                                                 suggestion=f"declared: {', '.join(sorted(decision_ids)) or 'none'}",
                                                 **doc.where(f"{ptr}/decision")))
                report = problems_from(self.problems, doc.where, None)
                when = ConditionCompiler(self.vocab, report).parse(item["when"], f"{ptr}/when") if "when" in item else None
                out.append(Waiver(item["code"], item["reason"].strip(), tuple(item.get("rules", ())), item.get("decision"),
                                  when, file=doc.file, line=doc.where(ptr).get("line")))
        return out

    def _absent_means(self) -> list[AbsentMeans]:
        """``absent_means:`` declarations; a section or fact the patient-state schema does not have stops the load."""
        out: list[AbsentMeans] = []
        sections = sorted({p.split(".", 1)[0] for p in self.vocab if not self.vocab[p].derived})
        for doc, items in self._sections("absent_means"):
            for i, item in enumerate(items):
                ptr = f"/absent_means/{i}"
                report = problems_from(self.problems, doc.where, None)
                if "section" in item:
                    name = item["section"]
                    facts = tuple(p for p in self.vocab if p.split(".", 1)[0] == name and not self.vocab[p].derived)
                    if not facts:
                        close = close_matches(name, sections, n=1)
                        self.problems.append(Problem(f"unknown section '{name}'", suggestion=(
                            f"did you mean '{close[0]}'?" if close else f"sections: {', '.join(sections)}"), **doc.where(f"{ptr}/section")))
                        continue
                else:
                    ft = self.vocab.get(item["fact"])
                    if ft is None or ft.derived:
                        close = close_matches(item["fact"], [p for p in self.vocab if not self.vocab[p].derived], n=1)
                        self.problems.append(Problem(f"unknown fact '{item['fact']}' (only patient-state facts can be absent)",
                                                     suggestion=f"did you mean '{close[0]}'?" if close else "see the patient-state schema",
                                                     **doc.where(f"{ptr}/fact")))
                        continue
                    if ft.kind in ("number", "boolean", "enum") and not ConditionCompiler(self.vocab, report)._value_ok(
                            ft, item["none"], f"{ptr}/none"):
                        continue
                    facts = (ft.path,)
                when = ConditionCompiler(self.vocab, report).parse(item["when"], f"{ptr}/when") if "when" in item else None
                out.append(AbsentMeans(facts, item["meaning"].strip(), item.get("section"), item.get("fact"),
                                       tuple(item["none"]) if isinstance(item.get("none"), list) else item.get("none"),
                                       when, file=doc.file, line=doc.where(ptr).get("line"), pointer=ptr))
        return out

    def _quantity(self, data: dict[str, Any] | None, pointer: str, report: Any) -> Quantity | None:
        if data is None:
            return None
        return self._required_quantity(data, pointer, report)

    def _required_quantity(self, data: dict[str, Any], pointer: str, report: Any) -> Quantity:
        try:
            parse_unit(data["unit"])
        except UnitError as exc:
            report(f"{pointer}/unit", str(exc), None)
        low, high = (data["value"], data["value"]) if "value" in data else (data["low"], data["high"])
        if low > high:
            report(pointer, f"low ({low}) is above high ({high})", "swap them")
        return Quantity(data["unit"], float(low), float(high), data.get("label"))

    def _dose(self, doc: Document, ptr: str, data: dict[str, Any], report: Any, prepared_drugs: set[str]) -> DoseSpec:
        rng = self._required_quantity(data["range"], f"{ptr}/range", report)  # the rule-file schema requires it
        q = {k: self._quantity(data.get(k), f"{ptr}/{k}", report) for k in ("typical", "maximum", "cap", "alternative")}
        unit = parse_unit(rng.unit)
        if data.get("remaining_after"):
            ft = self.vocab.get(data["remaining_after"])
            if ft is None or ft.kind != "number":
                report(f"{ptr}/remaining_after", f"'{data['remaining_after']}' is not a numeric fact", None)
        if data.get("pump_rate"):
            if unit is None or unit.dimension not in ("mass", "units") or unit.per_time is None:
                report(f"{ptr}/pump_rate", f"a pump rate needs a mass- or units-per-time dose, not {rng.unit}", None)
            if data["drug"] not in prepared_drugs:
                report(f"{ptr}/pump_rate", f"no preparation of '{data['drug']}' is declared", "add one under preparations:")
        if q["cap"] is not None and (unit is None or not unit.per_kg):
            report(f"{ptr}/cap", "a cap bounds a weight-based dose; this dose is not per kg", None)
        return DoseSpec(
            drug=data["drug"], range=rng, typical=q["typical"], maximum=q["maximum"], cap=q["cap"],
            alternative=q["alternative"], remaining_after=data.get("remaining_after"), route=data.get("route"),
            frequency=data.get("frequency"), within=data.get("within"), pump_rate=bool(data.get("pump_rate")),
            step=bool(data.get("step")),
            stated_equivalents=tuple(data.get("stated_equivalents", ())),
        )

    # -- examples and engine --------------------------------------------------
    def _examples(self) -> None:
        from .validate import _semantic_problems

        for doc, items in self._sections("rules"):
            for i, item in enumerate(items):
                for j, ex in enumerate(item.get("examples", [])):
                    base = ("rules", i, "examples", j, "state")
                    found = schema_problems(doc, STATE_SCHEMA, base=base, data=ex["state"])
                    if not found:
                        found = [Problem(p.message, suggestion=p.suggestion, **doc.where("/" + "/".join(map(str, base)) + (p.pointer or "")))
                                 for p in _semantic_problems(ex["state"], None)]
                    self.problems.extend(replace(p, rule_id=item["id"]) for p in found)

    def _engine_check(self, pack: RulePack) -> None:
        """Build the engine now, so that anything it refuses fails at load time."""
        from .evaluate import prepare

        try:
            prepare(pack)
        except RuleFileError as exc:  # a refusal not predicted in _rules: locate it at its rule
            located = []
            for p in exc.problems:
                if p.rule_id in self.located and p.file is None:
                    where, base = self.located[p.rule_id]
                    p = replace(p, **where(f"{base}/when"))
                located.append(p)
            raise RuleFileError(located) from exc


def find_rule(pack: RulePack, rule_id: str) -> Rule:
    """The rule with this id, or an :class:`InputError` naming the closest id."""
    try:
        return pack.rule(rule_id)
    except KeyError:
        close = close_matches(rule_id, [r.id for r in pack.rules], n=1)
        raise InputError.single(f"no rule '{rule_id}' in {pack.name}", file=pack.directory,
                                suggestion=f"did you mean '{close[0]}'?" if close else "see 'pressor rules list'") from None


def pack_sha256(manifest: dict[str, str]) -> str:
    """The pack's identity: SHA-256 over ``name\\0sha256\\n`` of its files, sorted by name."""
    return hashlib.sha256("".join(f"{name}\0{digest}\n" for name, digest in sorted(manifest.items())).encode()).hexdigest()


def _expand_scope_rules(rules: list[Rule]) -> list[Rule]:
    """``supersedes: ["*"]`` (a scope rule: the patient is outside the protocol) names every rule of the pack
    except the scope rules themselves, so that what supersession does everywhere (evaluation, residual advice,
    explain, lint) needs no special case."""
    scope = {r.id for r in rules if "*" in r.supersedes}
    if not scope:
        return rules
    others = tuple(r.id for r in rules if r.id not in scope)
    return [replace(r, supersedes=others) if r.id in scope else r for r in rules]
