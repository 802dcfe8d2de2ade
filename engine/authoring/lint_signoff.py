"""Clinical sign-off (protocol v3, item 6): each rule's reviewers with their recorded decisions.

A reviewer is written ``ROLE (pending)``, ``ROLE (signed YYYY-MM-DD by NAME)`` or
``ROLE (changes requested YYYY-MM-DD by NAME)``. An approved rule needs at least one reviewer
who signed and none who asked for changes: the informatics team's approval of the encoding is
not a clinical sign-off, and the lint cannot be satisfied by status alone. A pack whose rules
are in review may be released for validation (``pack.release.stage: validation``): its in-review
rules are then in force, each marked as in review wherever it is shown, and the lint says so.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from ..model import Rule, RulePack
from .findings import Finding

_REVIEWER = re.compile(
    r"^(?P<role>[^()]+?) \((?:(?P<pending>pending)"
    r"|signed (?P<signed>\d{4}-\d{2}-\d{2}) by (?P<signed_by>[^()]+)"
    r"|changes requested (?P<changes>\d{4}-\d{2}-\d{2}) by (?P<changes_by>[^()]+))\)$")


class Review(NamedTuple):
    """One reviewer's recorded decision: ``pending``, ``signed`` or ``changes-requested``."""

    role: str
    decision: str
    date: str | None = None
    by: str | None = None


def parse_reviewer(text: str) -> Review | None:
    """The decision recorded in ``text`` (None if it does not follow the grammar above)."""
    m = _REVIEWER.match(text.strip())
    if m is None:
        return None
    if m["pending"]:
        return Review(m["role"], "pending")
    if m["signed"]:
        return Review(m["role"], "signed", m["signed"], m["signed_by"].strip())
    return Review(m["role"], "changes-requested", m["changes"], m["changes_by"].strip())


def check_signoff(pack: RulePack) -> list[Finding]:
    """Unreadable reviewer entries; approved rules without a signature or with changes requested; a validation release."""
    out: list[Finding] = []
    for rule in pack.rules:
        if rule.status == "retired":
            continue
        reviews = []
        for text in rule.reviewers:
            review = parse_reviewer(text)
            if review is None:
                out.append(Finding("signoff-unreadable", "error", f"'{rule.id}': reviewer '{text}' records no decision",
                                   rule.file, rule.line, (rule.id,),
                                   suggestion="write ROLE (pending), ROLE (signed YYYY-MM-DD by NAME) or "
                                              "ROLE (changes requested YYYY-MM-DD by NAME)"))
            else:
                reviews.append(review)
        if rule.status == "approved":
            out += _approved(rule, reviews)
    in_review = [r.id for r in pack.rules if r.status == "in-review"]
    if pack.release == "validation" and in_review:
        out.append(Finding(
            "release-validation", "warning",
            f"the pack is released for validation: {len(in_review)} rules in force are in review, without a recorded "
            "clinical sign-off; every result marks them so. Use it in shadow mode or under clinical oversight",
            "pack.yaml", None, tuple(in_review[:5]),
            suggestion="record each reviewer's decision (signed YYYY-MM-DD by NAME), approve the rules, and remove "
                       "pack.release"))
    return out


def _approved(rule: Rule, reviews: list[Review]) -> list[Finding]:
    changes = [r for r in reviews if r.decision == "changes-requested"]
    if changes:
        who = ", ".join(f"{r.role} ({r.by}, {r.date})" for r in changes)
        return [Finding("signoff-changes-requested", "error", f"approved rule '{rule.id}': changes were requested by {who}",
                        rule.file, rule.line, (rule.id,), suggestion="make the changes and record a new signature, "
                                                                     "or set the rule back to in-review")]
    if not any(r.decision == "signed" for r in reviews):
        return [Finding("signoff-missing", "error",
                        f"approved rule '{rule.id}' has no clinical sign-off recorded (reviewers: "
                        f"{', '.join(rule.reviewers) or 'none'})", rule.file, rule.line, (rule.id,),
                        suggestion="record a reviewer's decision as ROLE (signed YYYY-MM-DD by NAME), "
                                   "or set the rule to in-review")]
    return []
