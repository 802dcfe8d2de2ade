"""Concordance with what the team did: per plan item, an action detector (``rules/shadow/actions.yaml``).

Both ways: of the hours pressor advised an item, in how many did the team act within the window (and
how soon); of the team's actions, how many came when pressor advised the item (at the last evaluation
at or before the action). Not a gold standard: a disagreement may be pressor's error or the team's
reason that the record does not show.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..evaluation.load import load_document


def default_actions_path() -> Path:
    from pressor import rules

    return Path(rules.__file__).parent / "shadow" / "actions.yaml"


_CHANGES = {"start", "increase", "decrease", "stop"}


@lru_cache(maxsize=4)
def load_detectors(path: str | None = None) -> tuple[dict[str, Any], ...]:
    """The detectors, checked (unknown change kinds and missing keys are errors at load time)."""
    doc = load_document(str(path or default_actions_path()))
    problems = []
    for i, d in enumerate(doc.data.get("detectors", [])):
        for key in ("id", "label", "rules", "drug", "change", "within_hours"):
            if key not in d:
                problems.append(Problem(f"detector {i} has no {key}", file=doc.file, pointer=f"/detectors/{i}"))
        bad = set(d.get("change", [])) - _CHANGES
        if bad:
            problems.append(Problem(f"unknown change {sorted(bad)} (one of {sorted(_CHANGES)})", file=doc.file,
                                    pointer=f"/detectors/{i}/change"))
    if problems:
        raise InputError(problems)
    return tuple(doc.data.get("detectors", []))


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def team_actions(care: list[list[Any]]) -> list[tuple[str, datetime, str, float, float]]:
    """(drug, time, change, rate before, rate after) of every rate change in the care list."""
    out = []
    current: dict[str, float] = {}
    for drug, at, rate in sorted(care, key=lambda c: (c[1], c[0])):
        before = current.get(drug, 0.0)
        if rate == before:
            continue
        change = "start" if before == 0 else "stop" if rate == 0 else "increase" if rate > before else "decrease"
        out.append((drug, _t(at), change, before, rate))
        current[drug] = rate
    return out


def advised(row: dict[str, Any]) -> list[str]:
    """The rule ids one evaluation advised firmly, as the default view shows them (see adapter.read_call)."""
    return row.get("advised", [f[0] for f in row.get("firm", ())])


def course_concordance(course: dict[str, Any], detectors: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Per detector and course: advised hours matched or not (minutes to action) and team actions advised or not."""
    actions = team_actions(course["care"])
    rows = course["rows"]
    times = [_t(r["t"]) for r in rows]
    out = []
    for d in detectors:
        rules = set(d["rules"])
        window = timedelta(hours=d["within_hours"])
        matching = [a for a in actions if a[0] == d["drug"] and a[2] in d["change"]]
        for row, t in zip(rows, times):
            if rules & set(advised(row)):
                first = next((a for a in matching if t < a[1] <= t + window), None)
                out.append({"detector": d["id"], "way": "advised", "stay": course["id"], "t": row["t"],
                            "matched": first is not None,
                            "minutes": round((first[1] - t).total_seconds() / 60, 1) if first else None})
        for a in matching:
            i = next((j for j in range(len(times) - 1, -1, -1) if times[j] <= a[1]), None)
            was_advised = i is not None and a[1] - times[i] <= timedelta(hours=1) and bool(rules & set(advised(rows[i])))
            out.append({"detector": d["id"], "way": "acted", "stay": course["id"], "t": a[1].isoformat().replace("+00:00", "Z"),
                        "matched": was_advised, "minutes": None})
    return out
