"""``pressor shadow``: what pressor would have said, hour by hour, on past records (thin: the engine does it)."""
from __future__ import annotations

import time

import click

from . import exit_codes
from .common import emit_json, handles_errors, json_option, profile_option, rules_option, say


@click.command(epilog=exit_codes.help_text())
@click.option("--mimic-iv", "mimic_iv", type=click.Path(exists=True, file_okay=False, path_type=str),
              help="A MIMIC-IV directory (hosp/ and icu/, csv or csv.gz), read through rules/mimic/mapping.yaml.")
@click.option("--fhir-ndjson", "fhir_ndjson", type=click.Path(exists=True, file_okay=False, path_type=str),
              help="A FHIR Bulk Data export directory (*.ndjson), read through the FHIR mapping.")
@click.option("--timeline", "timeline", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Timeline lines: one JSON object per line, {id, at, timeline}, each evaluated at its own time.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output directory: report.html, summary.json and tables/.")
@click.option("--dask", "dask", default=None, metavar="ADDRESS|local",
              help="Run on a Dask distributed cluster (a scheduler address, or 'local' for a LocalCluster here).")
@click.option("--compare-rules", "compare_rules", type=click.Path(exists=True, file_okay=False, path_type=str),
              help="A second rule pack: which patient-hours change, per rule and plan item.")
@click.option("--compare-profile", "compare_profile", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="A second site profile, compared the same way.")
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes without --dask (0: one per CPU).")
@click.option("--mapping", "mapping", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="With --mimic-iv: another mapping file (default: rules/mimic/mapping.yaml).")
@click.option("--diagnoses", is_flag=True,
              help="With --mimic-iv: use discharge diagnoses marked lookahead in the mapping (septic shock).")
@click.option("--stays", type=click.IntRange(min=1), default=None, help="Only the first N stays (or patients).")
@click.option("--at", "at", type=click.Choice(["hourly", "vitals"]), default="hourly", show_default=True,
              help="When pressor is asked: the end of every hour of each stay, or at each new vital sign (MAP).")
@click.option("--progress/--no-progress", default=None, help="A progress bar on stderr (default: when it is a terminal).")
@rules_option
@profile_option
@json_option
@handles_errors
def shadow(mimic_iv: str | None, fhir_ndjson: str | None, timeline: str | None, out: str, dask: str | None,
           compare_rules: str | None, compare_profile: str | None, jobs: int, mapping: str | None, diagnoses: bool,
           stays: int | None, at: str, progress: bool | None, rules_dir: str | None, profile: str | None, as_json: bool) -> None:
    """Evaluate a cohort at every hour of each stay and write a report for a CDS committee.

    Firing rates per rule, cards per call (with and without repeat suppression), questions and the
    cost of not knowing, data quality, internal consistency, concordance with what the team did
    (not a gold standard), case lists for clinical review and per-stay timelines.

    \b
    Example:
      pressor shadow --mimic-iv mimic-iv-demo/ --out /tmp/shadow
      pressor shadow --fhir-ndjson export/ --out /tmp/shadow --dask local
      pressor shadow --mimic-iv mimic-iv-demo/ --out /tmp/diff --compare-rules old-pack/
    """
    if sum(x is not None for x in (mimic_iv, fhir_ndjson, timeline)) != 1:
        raise click.UsageError("give exactly one of --mimic-iv, --fhir-ndjson, --timeline")
    if compare_rules and compare_profile:
        raise click.UsageError("give --compare-rules or --compare-profile, not both")
    from pressor.engine.shadow import read_courses
    from pressor.engine.shadow import shadow as run_shadow

    started = time.monotonic()
    courses, source = read_courses(mimic_iv=mimic_iv, fhir_ndjson=fhir_ndjson, timeline=timeline, mapping=mapping,
                                   diagnoses=diagnoses, stays=stays, at=at)
    summary = run_shadow(courses, out, source=source, rules_dir=rules_dir, profile=profile, compare_rules=compare_rules,
                         compare_profile=compare_profile, dask=dask, jobs=jobs, progress=progress)
    if as_json:
        emit_json(summary)
    say(f"{summary['stays']} stays, {summary['patient_hours']:,} evaluations ({summary['refused']} refused, "
        f"{summary['values_dropped']} values dropped); cards per call p50 {summary['cards_per_call']['p50']:g}, "
        f"p90 {summary['cards_per_call']['p90']:g}; {time.monotonic() - started:.1f} s -> {out}/report.html")
