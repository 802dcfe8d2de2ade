"""Shadow mode: what pressor would have said, hour by hour, on a hospital's past records.

Reading (:mod:`.mimic`, :mod:`.sources`) -> courses (:mod:`.course`) -> evaluation per patient-hour through
``evaluate()`` on processes or Dask (:mod:`.run`) -> what a clinician would see (:mod:`.adapter`, the one
place that reads results) -> figures (:mod:`.tables`, :mod:`.concordance`, :mod:`.compare`) -> the report
(:mod:`.report`). :func:`shadow` does it all and writes the output directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .run import Progress, Settings, run

__all__ = ["read_courses", "shadow", "Settings"]


def read_courses(*, mimic_iv: str | None = None, fhir_ndjson: str | None = None, timeline: str | None = None,
                 mapping: str | None = None, diagnoses: bool = False, stays: int | None = None,
                 at: str = "hourly") -> tuple[list, str]:
    """The courses of one input (exactly one of the three), and words naming it. ``at``: ``hourly`` or
    ``vitals`` (each new vital sign; timeline lines always keep their own times)."""
    if mimic_iv:
        from .mimic import read_cohort

        return (read_cohort(mimic_iv, mapping_path=mapping, diagnoses=diagnoses, stays=stays, at=at),
                f"MIMIC-IV {Path(mimic_iv).name}")
    if fhir_ndjson:
        from .sources import read_fhir_ndjson

        return read_fhir_ndjson(fhir_ndjson, at=at)[:stays], f"FHIR Bulk NDJSON {Path(fhir_ndjson).name}"
    from .sources import read_timeline_lines

    if timeline is None:
        raise ValueError("read_courses needs one of mimic_iv, fhir_ndjson and timeline")
    return read_timeline_lines(timeline)[:stays], f"timeline {Path(timeline).name}"


def shadow(courses: list, out: str | Path, *, source: str, rules_dir: str | None = None, profile: str | None = None,
           compare_rules: str | None = None, compare_profile: str | None = None, dask: str | None = None,
           jobs: int = 0, progress: bool | None = None) -> dict[str, Any]:
    """Evaluate ``courses``, write ``out`` (report.html, summary.json, tables/) and return the summary."""
    from ..evaluation.pack import load_pack
    from .concordance import load_detectors
    from .report import render
    from .tables import build

    pack = load_pack(rules_dir, profile=profile)  # a bad pack fails here, before any patient is read
    detectors = load_detectors()
    total = sum(len(c.times) for c in courses)
    bar = Progress(total, "shadow", progress)
    outputs = run(courses, Settings(rules_dir, profile), dask=dask, jobs=jobs, progress=bar)
    bar.close()
    summary, tables, extra = build(outputs, pack, detectors=detectors)
    summary = {"source": source, "pack": {"name": pack.name, "version": pack.version, "sha256": pack.sha256},
               **({"profile": str(profile)} if profile else {}), **summary}
    comparison = None
    if compare_rules or compare_profile:
        from .compare import compare

        other_pack = load_pack(compare_rules or rules_dir, profile=compare_profile if compare_profile else
                               (profile if not compare_rules else None))
        bar = Progress(total, "compare", progress)
        other = run(courses, Settings(compare_rules or rules_dir, compare_profile if compare_profile else
                                      (profile if not compare_rules else None)), dask=dask, jobs=jobs, progress=bar)
        bar.close()
        base_label = f"{pack.version}" + (f" ({Path(profile).name})" if profile else "")
        other_label = f"{other_pack.version}" + (f" ({Path(compare_profile).name})" if compare_profile else "")
        if base_label == other_label:
            base_label, other_label = "base", "other"
        comparison, more = compare(other, outputs, base_label=other_label, other_label=base_label)
        tables.update(more)
        summary["compare"] = {k: v for k, v in comparison.items() if k != "changes"} | {"changes": comparison["changes"][:50]}
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, text in sorted(tables.items()):
        (out / "tables" / name).write_text(text, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render(summary, tables, extra, outputs, pack, source=source, compare=comparison),
                                     encoding="utf-8")
    return summary
