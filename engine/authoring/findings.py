"""What ``pressor lint`` reports: the finding codes, one finding, the report, and the severity policy
(shared by the lint and its arithmetic checks, :mod:`.lint_arithmetic`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..model import Rule

SEVERITIES = ("error", "warning", "info")

#: Every finding code: default severity and what it means. ``docs/authoring.md`` explains each.
CODES: dict[str, tuple[str, str]] = {
    "contradiction-do-avoid": ("error", "a rule says do and another says avoid for the same drug, for one patient"),
    "contradiction-dose": ("error", "two rules give different doses of the same drug for one patient"),
    "contradiction-decision": ("error", "two answers of one decision (e.g. two MAP targets) apply to one patient"),
    "gap-decision": ("error", "patients in a decision's population for whom none of its rules applies"),
    "unreachable-rule": ("error", "a rule whose condition can never hold"),
    "threshold-near-duplicate": ("warning", "thresholds on one fact that differ by a hair (typo?)"),
    "threshold-strictness-mismatch": ("info", "< in one place and <= in another at the same threshold on one fact"),
    "threshold-boundary-hole": ("warning", "< and > at the same threshold with nothing covering the value itself"),
    "arithmetic-preparation-mismatch": ("error", "a preparation's stated concentration or rate does not follow from its amounts"),
    "arithmetic-stated-equivalent-mismatch": ("error", "a dose's stated equivalent is not what the dose works out to"),
    "arithmetic-dimension": ("error", "quantities that cannot be converted into each other (units or a missing weight)"),
    "arithmetic-dose-order": ("error", "a dose's maximum is below its own range"),
    "dose-unit-implausible": ("error", "a dose in a unit the pack does not declare plausible for the drug (dose_units), unless its rule says why"),
    "dose-out-of-band": ("error", "a dose outside the plausible band the pack declares for its drug and unit (dose_units), unless its rule says why"),
    "dose-unit-undeclared": ("warning", "a drug the pack doses without declaring its plausible units (dose_units)"),
    "preparation-concentration": ("error", "a bag made up more than 4 times stronger than the pack's standard concentration for the drug"),
    "profile-out-of-range": ("error", "a site profile sets a parameter outside the range the pack allows (or one the pack lacks)"),
    "citation-missing": ("error", "a rule without a citation"),
    "citation-unknown-reference": ("error", "a citation number with no entry in references.yaml"),
    "citation-unresolved": ("warning", "a citation of a reference the source cites but does not list"),
    "citation-only-unresolved": ("error", "an approved rule whose every citation is unresolved"),
    "signoff-missing": ("error", "an approved rule with no clinical reviewer's signature recorded"),
    "signoff-changes-requested": ("error", "an approved rule a clinical reviewer asked to change"),
    "signoff-unreadable": ("error", "a reviewer entry that records no decision (pending, signed or changes requested)"),
    "release-validation": ("warning", "the pack is released for validation: its in-review rules are in force, unsigned"),
    "status-draft-dependency": ("error", "an approved rule that depends on a derived fact that is not approved"),
    "status-retired-referenced": ("error", "a retired rule still named by a decision (error) or by supersedes (warning)"),
    "waiver-unused": ("warning", "a waiver that matches no finding (remove it)"),
    "solver-incomplete": ("warning", "the search gave up on a question; the check it belongs to is incomplete"),
    "absent-means-hides-rule": ("error", "an absent_means declaration would list as not applicable a rule that fires when the fact is recorded as 'none'"),
    "load-error": ("error", "the pack does not load; nothing else was checked"),
    "fact-unread": ("warning", "a patient-state fact that no rule, derived fact or plan reads, and that the pack does not mark "
                               "informational (with a reason)"),
}


@dataclass(frozen=True)
class Finding:
    """One lint finding."""

    code: str
    severity: str
    message: str
    file: str | None = None
    line: int | None = None
    rules: tuple[str, ...] = ()
    witness: dict[str, Any] | None = None
    suggestion: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def location(self) -> str:
        """``file:line``."""
        return f"{self.file or '<pack>'}" + (f":{self.line}" if self.line is not None else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"code": self.code, "severity": self.severity, "message": self.message,
                               "file": self.file, "line": self.line, "rules": list(self.rules)}
        if self.witness is not None:
            out["witness"] = self.witness
        if self.suggestion:
            out["suggestion"] = self.suggestion
        if self.details:
            out["details"] = self.details
        return out


@dataclass
class LintReport:
    """Every finding for one pack, most severe first."""

    directory: str
    findings: list[Finding]
    pack: dict[str, str] | None = None

    def count(self, severity: str) -> int:
        """How many findings have this severity."""
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def ok(self) -> bool:
        """No error finding."""
        return self.count("error") == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"directory": self.directory, "pack": self.pack, "ok": self.ok,
                "counts": {s: self.count(s) for s in SEVERITIES},
                "findings": [f.to_dict() for f in self.findings]}


def severity_for(rules: Iterable[Rule], default: str = "error") -> str:
    """``default`` for approved and in-review rules (in review: proposed for sign-off, so held to the same bar); one
    step milder when a draft rule is involved."""
    if default == "error" and any(r.status == "draft" for r in rules):
        return "warning"
    return default


def drug_of(rule: Rule) -> str | None:
    """The drug a rule is about: ``recommend.drug``, else ``dose.drug``."""
    return rule.drug or (rule.dose.drug if rule.dose else None)


def rule_ids(owners: Iterable[str], rules: dict[str, Rule]) -> tuple[str, ...]:
    """The owners that are rules (not derived facts or decisions), sorted, once each."""
    return tuple(sorted(o for o in set(owners) if o in rules))
