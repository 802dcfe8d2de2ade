"""Lint checks on the numeric thresholds of a pack: near-duplicates (typos), ``<`` here and ``<=`` there,
and a value that ``<`` and ``>`` both leave out."""
from __future__ import annotations

from ..model import Rule
from .findings import Finding, rule_ids

#: Relative difference below which two thresholds on one fact look like a typo of each other.
NEAR_THRESHOLD = 0.001
#: One numeric comparison with a constant: (fact, op, value, owner, file, line).
Comparison = tuple[str, str, float, str, str, int | None]


def threshold_findings(comparisons: list[Comparison], by_id: dict[str, Rule]) -> list[Finding]:
    """Thresholds on one fact that look like typos of each other, or leave the threshold itself undecided."""
    by_fact: dict[str, list[Comparison]] = {}
    for item in comparisons:
        by_fact.setdefault(item[0], []).append(item)
    out = []
    for fact, items in sorted(by_fact.items()):
        values = sorted({v for _, _, v, *_ in items})
        for lo, hi in zip(values, values[1:]):
            scale = max(abs(lo), abs(hi))
            if scale and (hi - lo) / scale < NEAR_THRESHOLD:
                a = next(i for i in items if i[2] == lo)
                b = next(i for i in items if i[2] == hi)
                out.append(Finding(
                    "threshold-near-duplicate", "warning",
                    f"{fact}: {a[3]} uses {lo:g} and {b[3]} uses {hi:g}; a difference this small is usually a typo",
                    b[4], b[5], rule_ids([a[3], b[3]], by_id), suggestion="use one threshold in both places",
                    details={"fact": fact, "values": [lo, hi]}))
        for value in values:
            at = [i for i in items if i[2] == value]
            ops = {i[1] for i in at}
            owners = sorted({i[3] for i in at})
            where = at[0]
            for strict, loose in (("<", "<="), (">", ">=")):
                if strict in ops and loose in ops:
                    s = next(i for i in at if i[1] == strict)
                    lo_ = next(i for i in at if i[1] == loose)
                    out.append(Finding(
                        "threshold-strictness-mismatch", "info",
                        f"{fact} {strict} {value:g} in {s[3]} but {fact} {loose} {value:g} in {lo_[3]}: "
                        f"at exactly {value:g} one holds and the other does not",
                        lo_[4], lo_[5], rule_ids(owners, by_id), details={"fact": fact, "value": value},
                        suggestion="make sure the value itself belongs where the source puts it"))
            covering = ops & {"<=", ">=", "==", "!="}
            if "<" in ops and ">" in ops and not covering:
                out.append(Finding(
                    "threshold-boundary-hole", "warning",
                    f"{fact} < {value:g} and {fact} > {value:g} are both tested ({', '.join(owners)}) but nothing "
                    f"decides {fact} == {value:g}",
                    where[4], where[5], rule_ids(owners, by_id), details={"fact": fact, "value": value},
                    suggestion="make one of the two comparisons include the threshold"))
    return out
