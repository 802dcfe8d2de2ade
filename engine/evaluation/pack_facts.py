"""The facts a pack defines: derived facts (in dependency order) and temporal facts, read from its rule files."""
from __future__ import annotations

from ._durable import ENGINE_MAX_FACTS, MAX_FACTS
from .compile import ConditionCompiler, FactType, problems_from
from ..dosing_policy import DosingPolicy
from ..errors import Problem
from .dosing_weight import weight_facts
from ..model import TEMPORAL_KINDS, Derived, Reference, TemporalFact
from .pack_sections import PackSections

#: Longest chain of derived facts reading derived facts (checked at load): far beyond what a protocol needs
#: (the bundled pack's longest is a few), and keeps ordering and explaining them far from Python's recursion limit.
MAX_DERIVED_DEPTH = 64


class FactSections(PackSections):
    """Reads the pack's ``derived:`` and ``temporal:`` sections."""

    # -- derived facts --------------------------------------------------------
    def _derived(self, refs: dict[int, Reference], dosing: DosingPolicy) -> list[Derived]:
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
            pdk = item.get("per_dosing_kg")
            if pdk is not None:
                ft = self.vocab.get(pdk["fact"])
                if item["type"] != "number" or ft is None or ft.kind != "number" or ft.derived:
                    report(f"{ptr}/per_dosing_kg/fact", f"'{pdk['fact']}' is not a numeric fact of the state", "name a per-kg state fact")
                if not any(w.drug == pdk["drug"] for w in dosing.weights):
                    report(f"{ptr}/per_dosing_kg/drug", f"the pack declares no dosing weight for '{pdk['drug']}'",
                           "declare one under dosing: weights")
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
                pressure_envelope=(float(mp["envelope"]["low"]), float(mp["envelope"]["high"]))
                if mp is not None and "envelope" in mp else None,
                per_dosing_kg=(pdk["fact"], pdk["drug"], dosing) if pdk is not None else None,
                weight_reads=weight_facts(dosing, pdk["drug"]) if pdk is not None else frozenset(),
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
