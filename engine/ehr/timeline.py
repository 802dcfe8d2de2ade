"""The record as a timeline, and the pack's temporal facts computed from it.

A :class:`Timeline` holds timestamped readings of state facts, infusion rate changes, doses,
fluid administrations and markers (shock recognised), each with where it came from. It is built
from a FHIR record (:mod:`pressor.engine.ehr.convert`) or from a timeline input document
(``schemas/timeline.schema.json``, :func:`from_document`). :func:`apply` computes the pack's
``temporal:`` facts from it; a value given directly in the input wins over the computed one,
and the provenance says which was used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from ..errors import InputError, Problem
from ..evaluation.load import Document
from ..evaluation.compiled import compiled_pack
from ..evaluation.validate import schema, schema_problems
from ..model import RulePack, TemporalFact

TIMELINE_SCHEMA = "timeline.schema.json"
STATE_SCHEMA = "patient-state.schema.json"
#: How far back an event may be (relative or absolute): a course of shock is days; further is a typing error.
MAX_LOOKBACK_DAYS = 3650
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*(min|m|h|d)$")
_UNIT_MINUTES = {"min": 1, "m": 1, "h": 60, "d": 1440}


@dataclass(frozen=True)
class Reading:
    """A fact observed at a time (``value`` None: the reading exists but is unusable, ``why``)."""

    fact: str
    at: datetime
    value: Any
    source: str
    why: str = ""


@dataclass(frozen=True)
class RateChange:
    """An infusion's rate from ``at`` on, in the rate fact's unit (0: stopped; None: running, rate unknown)."""

    drug: str
    at: datetime
    rate: float | None
    source: str


@dataclass(frozen=True)
class Dose:
    """A single dose (a bolus) of a drug."""

    drug: str
    at: datetime
    source: str


@dataclass(frozen=True)
class Fluid:
    """A fluid given: crystalloid, colloid or blood; ``volume_ml`` None when the record does not say."""

    kind: str
    at: datetime
    volume_ml: float | None
    source: str


@dataclass
class Timeline:
    """Everything timestamped in one patient's input."""

    readings: list[Reading] = field(default_factory=list)
    rates: list[RateChange] = field(default_factory=list)
    doses: list[Dose] = field(default_factory=list)
    fluids: list[Fluid] = field(default_factory=list)
    markers: dict[str, tuple[datetime, str]] = field(default_factory=dict)

    def series(self, fact: str, now: datetime, since: datetime | None = None) -> list[Reading]:
        """Usable readings of ``fact`` up to ``now`` (and from ``since``), oldest first."""
        return sorted((r for r in self.readings if r.fact == fact and r.value is not None and r.at <= now
                       and (since is None or r.at >= since)), key=lambda r: (r.at, r.source))


@dataclass
class Provenance:
    """Where each fact's value came from: given directly, read from the record, computed, or why it is unknown."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def given(self, fact: str, value: Any, source: str) -> None:
        self.entries[fact] = {"value": value, "from": "given", "sources": [source]}

    def record(self, fact: str, value: Any, sources: list[str]) -> None:
        self.entries[fact] = {"value": value, "from": "record", "sources": sources}

    def unknown(self, fact: str, why: str) -> None:
        self.entries[fact] = {"value": None, "from": "unknown", "why": why}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dict(sorted(self.entries.items()))


def _hours(a: datetime, b: datetime) -> float:
    return round((b - a).total_seconds() / 3600.0, 2)


def _rate_at(tl: Timeline, drug: str, t: datetime) -> tuple[bool, float | None]:
    """(known, rate) of ``drug`` at ``t`` from its rate changes (unknown before the first one)."""
    changes = [c for c in tl.rates if c.drug == drug and c.at <= t]
    if not changes:
        return False, None
    last = max(changes, key=lambda c: c.at)
    return last.rate is not None, last.rate


def compute(tf: TemporalFact, tl: Timeline, facts: Mapping[str, Any], now: datetime, drug_of_rate: Mapping[str, str]) -> tuple[Any, str]:
    """(value or None, how it was computed or why it is unknown) for one temporal fact."""
    p = tf.params
    if tf.kind == "sustained_below":
        span = timedelta(minutes=p["minutes"])
        threshold = p.get("threshold", facts.get(p.get("threshold_fact", "")))
        if threshold is None:
            return None, f"{p.get('threshold_fact')} is unknown"
        readings = tl.series(p["series"], now)
        if not readings:
            return None, f"no reading of {p['series']}"
        latest = readings[-1]
        if latest.value >= threshold:
            return False, f"latest {p['series']} {latest.value:g} ({latest.source}) is not below {threshold:g}"
        start = now - span
        before = [r for r in readings if r.at <= start]
        if not before:
            return None, f"no reading of {p['series']} at least {p['minutes']:g} min old"
        window = [before[-1]] + [r for r in readings if r.at > start]
        if any(r.value >= threshold for r in window):
            return False, f"{p['series']} reached {threshold:g} within the last {p['minutes']:g} min"
        rate_fact = p.get("unchanged_rate")
        if rate_fact:
            drug = drug_of_rate.get(rate_fact, rate_fact)
            changes = [c for c in tl.rates if c.drug == drug and window[0].at < c.at <= now]
            known, _ = _rate_at(tl, drug, window[0].at)
            if changes:
                return None, f"the {drug} rate changed within the span ({changes[-1].source})"
            if not known and rate_fact not in facts:
                return None, f"the {drug} rate over the span is unknown"
        return True, (f"{p['series']} below {threshold:g} at {len(window)} reading(s) since "
                      f"{window[0].at.isoformat()} ({', '.join(r.source for r in window)})")
    if tf.kind == "rising":
        since = now - timedelta(hours=p["within_hours"]) if "within_hours" in p else None
        readings = tl.series(p["series"], now, since)
        if not readings:
            return None, f"no reading of {p['series']}"
        latest = readings[-1]
        gap = timedelta(minutes=p["min_gap_minutes"])
        earlier = [r for r in readings if r.at <= latest.at - gap]
        if not earlier:
            return None, f"no earlier {p['series']} at least {p['min_gap_minutes']:g} min before {latest.source}"
        prev = earlier[-1]
        return latest.value > prev.value, f"{prev.value:g} ({prev.source}) then {latest.value:g} ({latest.source})"
    if tf.kind == "minutes_since_last_dose":
        doses = [d for d in tl.doses if d.drug == p["drug"] and d.at <= now]
        if not doses:
            return None, f"no {p['drug']} dose recorded"
        last = max(doses, key=lambda d: d.at)
        return round((now - last.at).total_seconds() / 60.0, 1), f"last {p['drug']} dose {last.source}"
    if tf.kind == "dose_given":
        doses = [d for d in tl.doses if d.drug == p["drug"] and d.at <= now]
        if not doses:
            return None, f"no {p['drug']} dose recorded (absence is not a 'no')"
        return True, f"{len(doses)} {p['drug']} dose(s): {', '.join(d.source for d in doses)}"
    if tf.kind == "hours_since_first_rate":
        # The current episode: since the last moment none of the drugs was running.
        changes = sorted((c for c in tl.rates if c.drug in p["drugs"] and c.at <= now), key=lambda c: (c.at, c.rate == 0))
        if not changes:
            return None, "no vasopressor infusion recorded"
        running: set[str] = set()
        first: RateChange | None = None
        for c in changes:
            if c.rate == 0:
                running.discard(c.drug)
                if not running:
                    first = None
            else:
                if not running:
                    first = c
                running.add(c.drug)
        if first is None:
            return None, "no vasopressor is running now (the last one was stopped)"
        return _hours(first.at, now), f"running without a break since {first.source}"
    if tf.kind == "volume_per_kg_since":
        marker = tl.markers.get(p["since"])
        if marker is None:
            return None, f"when {p['since'].replace('_', ' ')} is not recorded"
        weight = facts.get("patient.weight_kg")
        if weight is None:
            return None, "patient.weight_kg is unknown"
        given = [f for f in tl.fluids if f.kind == p["fluid"] and marker[0] <= f.at <= now]
        if not given:
            return None, f"no {p['fluid']} recorded since {marker[1]} (absence is not 0 mL)"
        unsized = [f for f in given if f.volume_ml is None]
        if unsized:
            return None, f"the volume of {unsized[0].source} is not recorded"
        total = sum(f.volume_ml for f in given if f.volume_ml is not None)
        return round(total / weight, 1), f"{total:g} mL from {len(given)} administration(s) / {weight:g} kg"
    if tf.kind == "hours_since":
        marker = tl.markers.get(p["marker"])
        if marker is None:
            return None, f"when {p['marker'].replace('_', ' ')} is not recorded"
        return _hours(marker[0], now), f"since {marker[1]}"
    raise ValueError(f"unknown temporal kind {tf.kind}")  # the pack schema refuses it first


def apply(pack: RulePack, tl: Timeline, facts: dict[str, Any], given: set[str], prov: Provenance, now: datetime,
          drug_of_rate: Mapping[str, str]) -> list[str]:
    """Compute the pack's temporal facts into ``facts`` (flat paths); a fact in ``given`` keeps its value. Returns notes."""
    notes = []
    derive = compiled_pack(pack).derive  # as logic.derive computes them (tests/test_compiled.py compares)
    probe: dict[str, Any] | None = None  # the facts with the derived ones, derived again once a fact is added
    for tf in pack.temporal:
        if probe is None:
            probe = dict(facts)
            derive(probe)
        value, how = compute(tf, tl, probe, now, drug_of_rate)
        if tf.fact in given:
            entry = prov.entries.get(tf.fact, {})
            entry["computed"] = {"value": value, "how": how}
            if value is not None and value != facts[tf.fact]:
                notes.append(f"{tf.fact}: the given value {facts[tf.fact]!r} is used; the record gives {value!r} ({how})")
            continue
        if value is None:
            prov.unknown(tf.fact, how)
            continue
        facts[tf.fact] = value
        probe = None
        prov.entries[tf.fact] = {"value": value, "from": "computed", "how": how, "kind": tf.kind}
    return notes


# --- the timeline input document ------------------------------------------------------------


def parse_time(text: Any, now: datetime) -> datetime | None:
    """An ISO 8601 date-time (UTC if no offset) or a time relative to now (``-90min``, ``-2h``, ``-1d``)."""
    if not isinstance(text, str):
        return None
    m = _RELATIVE.match(text.strip())
    if m:
        minutes = float(m.group(1)) * _UNIT_MINUTES[m.group(2)]
        if minutes > MAX_LOOKBACK_DAYS * 1440:  # further back than any course of shock (and than datetime reaches)
            return None
        return now - timedelta(minutes=minutes)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        if now - parsed > timedelta(days=MAX_LOOKBACK_DAYS):
            return None
    except (ValueError, OverflowError):  # not a date-time; or so far from now that the difference overflows
        return None
    return parsed


def _value_problem(doc: Document, ptr: str, fact: str, value: Any) -> Problem | None:
    """What is wrong with an observed value, checked as the patient state checks that fact (its type and range)
    before any arithmetic uses it; None when it is fine or the fact is not a state fact (reported elsewhere)."""
    group, _, name = fact.partition(".")
    props = schema(STATE_SCHEMA)["properties"].get(group, {}).get("properties", {})
    if name not in props:
        return None
    wanted = f"/{group}/{name}"
    for problem in schema_problems(doc, STATE_SCHEMA, data={group: {name: value}}):
        if problem.pointer == wanted:
            return Problem(f"{fact}: {problem.message}", suggestion=problem.suggestion, fact_path=fact,
                           **doc.where(ptr + "/value"))
    return None


def from_document(doc: Document, now: datetime) -> tuple[dict[str, Any], Timeline]:
    """A timeline input: (facts given directly, as flat paths; the timeline). Raises InputError listing every problem."""
    problems = schema_problems(doc, TIMELINE_SCHEMA)
    if problems:
        raise InputError(problems)
    body = doc.data["timeline"]
    given = _flatten(body.get("state", {}))
    tl = Timeline()
    bad: list[Problem] = []
    for i, ev in enumerate(body.get("events", [])):
        ptr = f"/timeline/events/{i}"
        at = parse_time(ev["at"], now)
        if at is None:
            bad.append(Problem(f"'{ev['at']}' is not a time within {MAX_LOOKBACK_DAYS:,} days before now",
                               suggestion="ISO 8601 (2026-01-31T14:05:00Z) or relative (-90min, -2h, -1d)",
                               **doc.where(ptr + "/at")))
            continue
        if "observe" in ev:
            problem = _value_problem(doc, ptr, ev["observe"], ev["value"])
            if problem is not None:
                bad.append(problem)
                continue
        if at > now + timedelta(minutes=5):
            bad.append(Problem(f"event at {ev['at']} is after the evaluation time", **doc.where(ptr + "/at")))
            continue
        src = f"event {i} ({ev['at']})"
        if "observe" in ev:
            tl.readings.append(Reading(ev["observe"], at, ev["value"], src))
        elif "infusion" in ev:
            tl.rates.append(RateChange(ev["infusion"], at, ev["rate"], src))
        elif "dose" in ev:
            tl.doses.append(Dose(ev["dose"], at, src))
        elif "fluid" in ev:
            tl.fluids.append(Fluid(ev["fluid"], at, ev.get("volume_ml"), src))
        elif "marker" in ev:
            held = tl.markers.get(ev["marker"])
            if held is None or at < held[0]:
                tl.markers[ev["marker"]] = (at, src)
    if bad:
        raise InputError(bad)
    return given, tl


def _flatten(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for section, body in state.items():
        if isinstance(body, dict):
            for key, value in body.items():
                out[f"{section}.{key}"] = value
        else:
            out[section] = body
    return out
