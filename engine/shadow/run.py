"""Evaluating courses: one patient state per evaluation time, through ``evaluate()``, partitioned by patient.

:func:`evaluate_courses` is pure and runs anywhere (this process, a worker process, a Dask worker): it
loads the pack once per process and returns, per course, its rows (one per evaluation time, in time
order) and its care (what the team did: rate changes, for concordance, case lists and plots). The
executors (:func:`run_local`, :func:`run_dask`) only move partitions; the rows come back in course
order whichever runs them, so the tables built from them are byte-identical.

A state the schema refuses is a data-quality finding, never a lost hour: the offending value is dropped
with a note and the rest evaluated (at most :data:`MAX_DROPS` values per state).
"""
from __future__ import annotations

import copy

import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..errors import PatientStateError
from .adapter import read_call
from .course import Course, CourseIndex, state_at

#: Values dropped from one state before it is given up as refused.
MAX_DROPS = 6
#: A MAP outside its pair is the pair's artefact more often than the MAP's: the pair goes, the MAP stays.
_DROP_INSTEAD = {"vitals.map_mmhg": ("vitals.sbp_mmhg", "vitals.dbp_mmhg")}


class Settings(NamedTuple):
    """What every worker needs to evaluate: the pack (directory, profile) and nothing else."""

    rules_dir: str | None
    profile: str | None


_PACKS: dict[Settings, tuple[Any, dict[str, str], dict[str, str]]] = {}


def _pack(settings: Settings) -> tuple[Any, dict[str, str], dict[str, str]]:
    """The pack (loaded once per process), and the timeline's drug <-> rate fact tables."""
    if settings not in _PACKS:
        from ..ehr.mapping import load_mapping
        from ..evaluation.pack import load_pack

        pack = load_pack(settings.rules_dir, profile=settings.profile)
        mapping = load_mapping()
        rate_fact = {m.drug: m.rate_fact for m in mapping.medications if m.rate_fact}
        _PACKS[settings] = (pack, rate_fact, {f: d for d, f in rate_fact.items()})
    return _PACKS[settings]


def _nest(facts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in facts.items():
        section, _, name = path.partition(".")
        if name:
            out.setdefault(section, {})[name] = value
        else:
            out[section] = value
    return out


def checked_state(facts: dict[str, Any]) -> tuple[dict[str, Any], list[str], bool]:
    """(a state the schema accepts, the values dropped to get it, whether it was refused even so)."""
    from ..evaluation.validate import check_state

    dropped: list[str] = []
    for _ in range(MAX_DROPS + 1):
        state = _nest(facts)
        try:
            check_state(state)
            return state, dropped, False
        except PatientStateError as exc:
            problem = exc.problems[0]
            path = problem.fact_path or (problem.pointer or "").strip("/").replace("/", ".")
            instead = _DROP_INSTEAD.get(path) if "between" in problem.message else None
            targets = [t for t in (instead or (path,)) if t in facts]
            if not targets:
                return state, dropped, True
            for t in targets:
                dropped.append(f"{t} {facts.pop(t)!r} dropped: {problem.message}")
    return _nest(facts), dropped, True


def evaluate_course(course: Course, settings: Settings) -> dict[str, Any]:
    """Every evaluation time of one course: its rows and its care."""
    from ..evaluation.evaluate import evaluate
    from ..evaluation.logic import SET_ASIDE
    pack, rate_fact, drug_of_rate = _pack(settings)
    index = CourseIndex(course)
    rows = []
    previous: datetime | None = None
    seen_notes: set[str] = set()
    care_timeline = course.timeline
    for k, t in enumerate(course.times, 1):
        row: dict[str, Any] = {"k": k, "t": t.isoformat().replace("+00:00", "Z")}
        if "bundle" in course.meta or "documents" in course.meta:
            state, dropped, refused, notes, timeline = _converted(course, k - 1, t, pack)
            care_timeline = timeline or care_timeline
            row["dq"] = [n for n in notes if n not in seen_notes]
            seen_notes.update(notes)
        else:
            facts, _prov = state_at(index, pack, t, drug_of_rate, rate_fact)
            state, dropped, refused = checked_state(facts)
            row["dq"] = index.notes_between(previous or datetime.min.replace(tzinfo=t.tzinfo), t)
        previous = t
        vitals = state.get("vitals", {})
        infusions = state.get("infusions", {})
        row["map"] = vitals.get("map_mmhg")
        row["rates"] = {d: infusions[f.split(".", 1)[1]] for d, f in sorted(rate_fact.items())
                        if infusions.get(f.split(".", 1)[1])}
        row["dropped"] = dropped
        if refused:
            row["refused"] = True
            rows.append(row)
            continue
        result = evaluate(pack, state, now=t)
        # a reading the pack set aside (an arterial-line artefact) is a data-quality finding of the hour
        row["dq"] = list(row["dq"]) + [w[len(SET_ASIDE):] for w in result.warnings if w.startswith(SET_ASIDE)]
        row.update(read_call(result.to_dict()))  # the JSON form, as dicts (cheaper than writing and parsing it)
        row["missing"] = sorted({f for n in result.not_evaluable for f in n.missing})
        rows.append(row)
    start = course.times[0] - timedelta(hours=24) if course.times else None
    care = [[c.drug, c.at.isoformat().replace("+00:00", "Z"), c.rate] for c in sorted(care_timeline.rates, key=lambda c: (c.at, c.drug))
            if start is not None and c.at >= start and c.rate is not None]
    meta = {k: v for k, v in course.meta.items() if k not in ("bundle", "documents")}
    return {"id": course.id, "meta": meta, "rows": rows, "care": care}


def _converted(course: Course, i: int, t: datetime, pack: Any) -> tuple[dict[str, Any], list[str], bool, list[str], Any]:
    """(state, values dropped, refused, notes, timeline) of a FHIR bundle or a timeline line at ``t``.

    The FHIR reading leaves a refused value unknown with a note itself; a timeline line whose event the
    schema refuses is evaluated without that event.
    """
    from ..errors import InputError
    from ..ehr.fhir import from_bundle, from_timeline
    from ..evaluation.load import Document

    try:
        if "bundle" in course.meta:
            conversion = from_bundle(course.meta["bundle"], now=t, pack=pack, file=f"patient {course.id}")
            dropped = [n for n in conversion.notes if "is refused" in n]
            return conversion.state, dropped, False, list(conversion.notes), conversion.timeline
        line = course.meta["documents"][i]
        data = {"timeline": copy.deepcopy(line["timeline"])}  # each evaluation may drop values: its own copy
        dropped = []
        for _ in range(MAX_DROPS + 1):
            try:
                conversion = from_timeline(Document(data, line["source"]), now=t, pack=pack)
                return conversion.state, dropped, False, list(conversion.notes), conversion.timeline
            except InputError as exc:
                events = data["timeline"].get("events", [])
                bad = sorted({int(ptr.split("/")[3]) for p in exc.problems for ptr in [p.pointer or ""]
                              if ptr.startswith("/timeline/events/") and len(ptr.split("/")) > 3}, reverse=True)
                if not bad:
                    return {}, dropped + [str(p.message) for p in exc.problems], True, [], None
                for j in bad:
                    problem = next(p for p in exc.problems if (p.pointer or "").startswith(f"/timeline/events/{j}"))
                    dropped.append(f"event {j} {events[j]!r} dropped: {problem.message}")
                    del events[j]
        return {}, dropped, True, [], None
    except InputError as exc:  # a record the FHIR reading cannot use at all at this time
        return {}, [str(p.message) for p in exc.problems], True, [], None


def evaluate_courses(courses: list[Course], settings: Settings) -> list[dict[str, Any]]:
    """:func:`evaluate_course` for each course of a partition, in order."""
    return [evaluate_course(c, settings) for c in courses]


def partitions(courses: list[Course], size: int) -> list[list[Course]]:
    """Courses in consecutive partitions of about ``size`` evaluation times (a course is never split)."""
    out: list[list[Course]] = [[]]
    weight = 0
    for c in courses:
        if out[-1] and weight + len(c.times) > size:
            out.append([])
            weight = 0
        out[-1].append(c)
        weight += len(c.times)
    return [p for p in out if p]


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or when forced)."""

    def __init__(self, total: int, label: str, enabled: bool | None = None) -> None:
        self.total, self.done, self.label = total, 0, label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            rate = self.done / max(time.monotonic() - self.start, 1e-6)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done:,}/{self.total:,} "
                             f"patient-hours ({rate:,.0f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_local(courses: list[Course], settings: Settings, *, jobs: int = 0, progress: Progress | None = None,
              size: int = 400) -> list[dict[str, Any]]:
    """Every course evaluated by ``jobs`` processes (0: one per CPU); outputs in course order."""
    jobs = jobs or _cpus()
    parts = partitions(courses, size)
    out: list[dict[str, Any]] = []
    if jobs <= 1 or len(parts) <= 1:
        for part in parts:
            done = evaluate_courses(part, settings)
            out.extend(done)
            if progress:
                progress.advance(sum(len(c["rows"]) for c in done))
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for done in pool.map(evaluate_courses, parts, [settings] * len(parts)):
            out.extend(done)
            if progress:
                progress.advance(sum(len(c["rows"]) for c in done))
    return out


def run_dask(courses: list[Course], settings: Settings, *, address: str, progress: Progress | None = None,
             size: int = 400) -> list[dict[str, Any]]:
    """The same on a Dask ``distributed`` cluster (``address``, or ``local``: a LocalCluster on this machine)."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # the optional extra
        from ..errors import InputError

        raise InputError.single("--dask needs the distributed package", suggestion="pip install 'pressor[shadow]'") from exc
    parts = partitions(courses, size)
    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=_cpus(), threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        address = cluster.scheduler_address
    try:
        with Client(address) as client:
            futures = client.map(evaluate_courses, parts, settings=settings, pure=False)
            position = {f.key: i for i, f in enumerate(futures)}
            results: list[list[dict[str, Any]] | None] = [None] * len(parts)
            for future in as_completed(futures):
                done = future.result()
                results[position[future.key]] = done
                if progress:
                    progress.advance(sum(len(c["rows"]) for c in done))
    finally:
        if cluster is not None:
            cluster.close()
    return [c for part in results for c in (part or [])]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(courses: list[Course], settings: Settings, *, dask: str | None = None, jobs: int = 0,
        progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run on Dask when ``dask`` names a scheduler (or ``local``), else on processes."""
    if dask:
        return run_dask(courses, settings, address=dask, progress=progress)
    return run_local(courses, settings, jobs=jobs, progress=progress)
