"""A pack's rules and the preparations their doses use, read from its rule files: conditions, doses,
provenance (status history) and supersession."""
from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from .compile import ConditionCompiler, engine_limit, problems_from
from ..errors import Problem, close_matches
from .load import Document
from ..model import DoseSpec, Preparation, Quantity, Reference, Rule, StatusChange
from .pack_sections import PackSections
from .units import UnitError, parse_unit


class RuleSections(PackSections):
    """Reads the pack's ``preparations:`` and ``rules:`` sections."""

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


def expand_scope_rules(rules: list[Rule]) -> list[Rule]:
    """``supersedes: ["*"]`` (a scope rule: the patient is outside the protocol) names every rule of the pack
    except the scope rules themselves, so that what supersession does everywhere (evaluation, residual advice,
    explain, lint) needs no special case."""
    scope = {r.id for r in rules if "*" in r.supersedes}
    if not scope:
        return rules
    others = tuple(r.id for r in rules if r.id not in scope)
    return [replace(r, supersedes=others) if r.id in scope else r for r in rules]
