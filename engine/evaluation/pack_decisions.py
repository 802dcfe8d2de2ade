"""What a pack declares about its rules together: decisions, bans, question relevance, waivers and what an
absent fact means, read from its rule files."""
from __future__ import annotations

from .compile import ConditionCompiler, problems_from
from ..errors import Problem, close_matches
from ..model import AbsentMeans, Ban, Decision, QuestionRelevance, Waiver
from .pack_sections import PackSections


class DecisionSections(PackSections):
    """Reads the pack's ``decisions:``, ``bans:``, ``question_relevance:``, ``waivers:`` and ``absent_means:`` sections."""

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
