"""One patient's course for a shadow run: what the record holds over time, and when pressor is asked.

A :class:`Course` is what every input layout (MIMIC-IV tables, FHIR Bulk NDJSON, timeline lines) is
turned into before anything is evaluated: facts that hold for the whole stay, a
:class:`~pressor.engine.ehr.timeline.Timeline` of readings, rate changes, doses and fluids, spans
(a line in place from start to end), the evaluation times, and the data-quality notes made while
reading. :func:`state_at` builds the patient state at one time from it, only from what was known
by then; the pack's temporal facts are computed per evaluation time by the timeline module.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..ehr.timeline import Provenance, Timeline, compute
from ..evaluation.logic import derive

#: How far back the pack's temporal facts look (the longest span of rules/temporal.yaml is 24 h;
#: episodes of vasopressors are followed from their rate changes, which are kept whole).
TEMPORAL_LOOKBACK = timedelta(hours=26)


@dataclass
class Course:
    """One stay (or one patient) as the shadow run evaluates it."""

    id: str
    given: dict[str, Any]                     # flat fact paths that hold for the whole course
    timeline: Timeline
    times: list[datetime]                     # evaluation times, ascending
    windows: dict[str, float] = field(default_factory=dict)          # fact -> hours a reading stays current
    prefer: dict[str, list[str]] = field(default_factory=dict)       # fact -> reading sources, best first
    spans: list[tuple[str, datetime, datetime, Any]] = field(default_factory=list)  # (fact, start, end, value)
    notes: list[tuple[datetime, str]] = field(default_factory=list)  # data-quality notes found while reading
    implied: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # fact <- (series, source prefix, hours)
    meta: dict[str, Any] = field(default_factory=dict)
    # drug -> (minutes fact, last-rate fact, max minutes): a pause of the drug's infusion (see :func:`pause_at`)
    pauses: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    # (fact, drugs, max hours): hours since the first start of any of the drugs (see :func:`first_start_hours`)
    recognition: tuple[str, tuple[str, ...], float] | None = None


class CourseIndex:
    """A course's readings sorted per fact with their times, for look-ups by bisection."""

    def __init__(self, course: Course) -> None:
        self.course = course
        by_fact: dict[str, list] = {}
        for r in course.timeline.readings:
            by_fact.setdefault(r.fact, []).append(r)
        self.readings = {f: sorted(v, key=lambda r: (r.at, r.source)) for f, v in by_fact.items()}
        self.times = {f: [r.at for r in v] for f, v in self.readings.items()}
        self.rates = sorted(course.timeline.rates, key=lambda c: (c.at, c.drug))
        self.notes = sorted(course.notes, key=lambda n: n[0])
        self.note_times = [n[0] for n in self.notes]

    def window(self, fact: str, start: datetime, end: datetime) -> list:
        """Readings of ``fact`` with start <= at <= end."""
        times = self.times.get(fact)
        if not times:
            return []
        return self.readings[fact][bisect.bisect_left(times, start):bisect.bisect_right(times, end)]

    def notes_between(self, start: datetime, end: datetime) -> list[str]:
        """Data-quality notes made about readings in (start, end]."""
        return [text for _, text in self.notes[bisect.bisect_right(self.note_times, start):bisect.bisect_right(self.note_times, end)]]


def _latest(index: CourseIndex, fact: str, t: datetime, hours: float | None, sources: list[str] | None):
    """The latest usable reading of ``fact`` within its window (from the first source that has one)."""
    start = t - timedelta(hours=hours) if hours is not None else datetime.min.replace(tzinfo=t.tzinfo)
    recent = [r for r in index.window(fact, start, t) if r.value is not None]
    if not recent:
        return None
    preferred: list[str | None] = [*sources] if sources else [None]
    for source in preferred:
        pick = [r for r in recent if source is None or r.source.startswith(source)]
        if pick:
            return pick[-1]
    return None


def pause_at(changes: list, drug: str, t: datetime) -> tuple[float, float] | None:
    """(minutes since ``drug`` stopped, the rate that ran just before) when it had been running, was
    stopped and runs no more at ``t``; None while it runs, if it never ran, or if its rate is unknown.
    ``changes``: rate changes sorted by time."""
    rate: float | None = 0.0
    stopped: tuple[datetime, float] | None = None
    for c in changes:
        if c.at > t:
            break
        if c.drug != drug:
            continue
        if c.rate == 0 and rate:  # running (a known rate > 0), then stopped
            stopped = (c.at, rate)
        elif c.rate != 0:
            stopped = None
        rate = c.rate
    if rate != 0 or stopped is None:
        return None
    return round((t - stopped[0]).total_seconds() / 60.0, 1), stopped[1]


def first_start_hours(changes: list, drugs: tuple[str, ...], t: datetime) -> tuple[float, Any] | None:
    """(hours since the first start of any of ``drugs`` at or before ``t``, that change); None if none started."""
    for c in changes:
        if c.at > t:
            return None
        if c.drug in drugs and c.rate != 0:
            return round((t - c.at).total_seconds() / 3600.0, 2), c
    return None


def state_at(index: CourseIndex, pack: Any, t: datetime, drug_of_rate: Mapping[str, str],
             rate_fact: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flat facts at ``t``, their provenance): only what was known at ``t``; temporal facts computed at ``t``."""
    course = index.course
    facts = dict(course.given)
    prov = Provenance()
    for fact, value in course.given.items():
        prov.given(fact, value, "record (whole stay)")
    for fact in index.readings:
        reading = _latest(index, fact, t, course.windows.get(fact), course.prefer.get(fact))
        if reading is not None:
            facts[fact] = reading.value
            prov.record(fact, reading.value, [f"{reading.source} at {reading.at.isoformat()}"])
    for fact, (series, prefix, hours) in course.implied.items():
        if fact not in facts and any(r.source.startswith(prefix) for r in index.window(series, t - timedelta(hours=hours), t)):
            facts[fact] = True
            prov.record(fact, True, [f"inferred from {series} ({prefix}) within {hours:g} h"])
    spanned: dict[str, list] = {}
    for fact, start, end, value in course.spans:
        if start <= t < end:
            spanned.setdefault(fact, []).append((value, start, end))
    for fact, held in spanned.items():
        if len({value for value, _, _ in held}) > 1:  # two bags of different strength at once: which is unknown
            continue
        value, start, end = held[-1]
        facts[fact] = value
        prov.record(fact, value, [f"in place {start.isoformat()} to {end.isoformat()}"])
    current: dict[str, Any] = {}
    for change in index.rates:
        if change.at > t:
            break
        current[change.drug] = change
    for drug, change in current.items():
        rate = rate_fact.get(drug)
        if rate and change.rate is not None:
            facts[rate] = change.rate
            prov.record(rate, change.rate, [change.source])
    own: set[str] = set()  # facts the course computes itself (the mapping's definitions), kept from the pack's
    for drug, (minutes_fact, rate_fact_, most) in course.pauses.items():
        pause = pause_at(index.rates, drug, t)
        if pause is not None and pause[0] <= most:
            facts[minutes_fact], facts[rate_fact_] = pause
            prov.record(minutes_fact, pause[0], [f"{drug} stopped {pause[0]:g} min before, none running since"])
            prov.record(rate_fact_, pause[1], [f"the {drug} rate before it stopped"])
            own.update((minutes_fact, rate_fact_))
    if course.recognition is not None:
        fact, drugs, most = course.recognition
        first = first_start_hours(index.rates, drugs, t)
        if first is not None and first[0] <= most:
            facts[fact] = first[0]
            prov.record(fact, first[0], [f"since the first vasopressor start of the stay ({first[1].source})"])
            own.add(fact)
    # The pack's temporal facts, from the part of the timeline they can look at.
    since = t - TEMPORAL_LOOKBACK
    tl = Timeline(
        readings=[r for f in index.readings for r in index.window(f, since, t)],
        rates=[c for c in index.rates if c.at <= t],
        doses=[d for d in course.timeline.doses if d.at <= t],
        fluids=[f for f in course.timeline.fluids if f.at <= t],
        markers={k: v for k, v in course.timeline.markers.items() if v[0] <= t},
    )
    # As timeline.apply, deriving once: no temporal fact of the pack feeds another's threshold.
    probe = dict(facts)
    derive(pack.derived, probe)
    for tf in pack.temporal:
        if tf.fact in course.given or tf.fact in own:
            continue
        value, how = compute(tf, tl, probe, t, drug_of_rate)
        if value is None:
            prov.unknown(tf.fact, how)
            continue
        facts[tf.fact] = value
        prov.entries[tf.fact] = {"value": value, "from": "computed", "how": how, "kind": tf.kind}
    return facts, prov.to_dict()
