"""The sections of a pack's rule files, the problems found in them, and the references the pack cites: what
every part of loading a pack (:mod:`.pack`) reads and reports through."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import Problem, RuleFileError, close_matches
from .compile import FactType, state_vocabulary
from .load import Document
from ..model import Citation, Reference
from .validate import STATE_SCHEMA, schema


class PackSections:
    """One pass over a pack directory's documents; accumulates problems instead of stopping at the first."""

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

    def _unknown_rule(self, rule_id: str, known: set[str], where: dict[str, Any], owner: str | None) -> None:
        close = close_matches(rule_id, sorted(known), n=1)
        self.problems.append(Problem(f"no rule '{rule_id}' in the pack", rule_id=owner,
                                     suggestion=f"did you mean '{close[0]}'?" if close else "check the rule id", **where))

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
