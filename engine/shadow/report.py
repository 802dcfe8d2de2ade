"""The shadow report: one self-contained HTML page (inline CSS and SVG, no script, nothing fetched).

Rendering only: every figure comes from the summary and tables built by :mod:`.tables`.
"""
from __future__ import annotations

import csv as _csv
import html
import io
from datetime import datetime
from typing import AbstractSet, Any

#: Stays drawn as timelines (those with a vasoactive infusion first, then those in the case lists).
MAX_PLOTS = 24
DRUG_COLOURS = {"norepinephrine": "#c0392b", "vasopressin": "#8e44ad", "epinephrine": "#d35400",
                "phenylephrine": "#16a085", "dopamine": "#2c3e50", "dobutamine": "#7f8c8d"}
SEVERITY_COLOURS = {"critical": "#c0392b", "warning": "#e67e22", "info": "#2980b9"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}main{padding:8px 28px 40px;max-width:1280px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:16px 0;padding:12px 18px}
h2{font-size:17px;margin:6px 0 10px}h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}th,td{padding:3px 8px;border-bottom:1px solid #eceff2;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.tiles{display:flex;flex-wrap:wrap;gap:10px}.tile{background:#f0f4f9;border-radius:6px;padding:8px 14px;min-width:130px}
.tile b{display:block;font-size:20px}.tile span{font-size:12px;color:#55606b}
.caveat{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:6px 0}
.case{border-top:1px solid #eceff2;padding:6px 0}.case small{color:#55606b}
.sev-critical{color:#c0392b;font-weight:600}.sev-warning{color:#b9650f}.sev-info{color:#2471a3}
svg text{font:10px system-ui,sans-serif;fill:#55606b}details summary{cursor:pointer;font-weight:600}
"""


def _e(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:.4g}"
    return html.escape(str(value), quote=True)


def _table(header: list[str], rows: list[list[Any]], numeric: AbstractSet[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='n'>{_e(v)}</td>" if i in numeric else f"<td>{_e(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def timeline_svg(course: dict[str, Any], rules: dict[str, Any], width: int = 1100) -> str:
    """MAP, every vasoactive dose and what pressor advised, on one time axis."""
    rows = course["rows"]
    if not rows:
        return ""
    t0 = _t(rows[0]["t"])
    span = max((_t(rows[-1]["t"]) - t0).total_seconds() / 3600, 1)
    left, right, top, plot_h = 46, 16, 10, 120
    dose_top = top + plot_h + 14
    dose_h = 70
    advice_top = dose_top + dose_h + 14
    drugs = sorted({d for row in rows for d in row.get("rates", {})})
    height = advice_top + 14 * 3 + 24
    w = width - left - right

    def x(t: datetime) -> float:
        return left + w * min(max((t - t0).total_seconds() / 3600 / span, 0), 1)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img'>"]
    parts.append(f"<rect x='{left}' y='{top}' width='{w}' height='{plot_h}' fill='#fbfcfd' stroke='#dde1e6'/>")
    lo, hi = 30, 130

    def y_map(v: float) -> float:
        return top + plot_h * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))

    for ref in (65, 85):
        parts.append(f"<line x1='{left}' x2='{left + w}' y1='{y_map(ref):.1f}' y2='{y_map(ref):.1f}' stroke='#bbb' stroke-dasharray='3 3'/>"
                     f"<text x='4' y='{y_map(ref) + 3:.1f}'>{ref}</text>")
    points = [(x(_t(r["t"])), y_map(r["map"])) for r in rows if r.get("map") is not None]
    if points:
        parts.append("<polyline fill='none' stroke='#1f3a5f' stroke-width='1.5' points='"
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in points) + "'/>")
    parts.append(f"<text x='4' y='{top + 10}'>MAP</text>")
    parts.append(f"<rect x='{left}' y='{dose_top}' width='{w}' height='{dose_h}' fill='#fbfcfd' stroke='#dde1e6'/>"
                 f"<text x='4' y='{dose_top + 10}'>doses</text>")
    care = [c for c in course.get("care", []) if c[2] is not None]
    for i, drug in enumerate(drugs or []):
        steps = [(c[1], c[2]) for c in care if c[0] == drug]
        peak = max([v for _, v in steps] + [1e-9])
        colour = DRUG_COLOURS.get(drug, "#333")
        path, last_y = [], dose_top + dose_h
        for at, rate in steps:
            px = x(_t(at))
            py = dose_top + dose_h * (1 - rate / peak * 0.92)
            path += [f"{px:.1f},{last_y:.1f}", f"{px:.1f},{py:.1f}"]
            last_y = py
        path.append(f"{left + w:.1f},{last_y:.1f}")
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.4' points='{' '.join(path)}'/>")
        parts.append(f"<text x='{left + 6 + 150 * i}' y='{dose_top + dose_h + 11}' style='fill:{colour}'>{_e(drug)} "
                     f"(max {peak:.3g})</text>")
    lanes = ["critical", "warning", "info"]
    step = w / max(len(rows), 1)
    for lane, severity in enumerate(lanes):
        y = advice_top + 14 * lane
        parts.append(f"<text x='4' y='{y + 9}'>{severity}</text>")
        for r in rows:
            shown = set(r.get("advised", ()))
            ids = [f[0] for f in r.get("firm", ()) if f[1] == severity and f[0] in shown]
            if ids:
                parts.append(f"<rect x='{x(_t(r['t'])) - step:.1f}' y='{y}' width='{max(step, 1.5):.1f}' height='10' "
                             f"fill='{SEVERITY_COLOURS[severity]}'><title>{_e(r['t'])}: {_e(', '.join(ids))}</title></rect>")
    for h in range(0, int(span) + 1, max(int(span // 10) or 1, 1)):
        px = left + w * h / span
        parts.append(f"<text x='{px:.1f}' y='{height - 6}'>{h} h</text>")
    parts.append("</svg>")
    return "".join(parts)


def render(summary: dict[str, Any], tables: dict[str, str], extra: dict[str, Any], courses: list[dict[str, Any]],
           pack: Any, *, source: str, compare: dict[str, Any] | None = None) -> str:
    """The whole report page."""
    rules = {r.id: r for r in pack.rules}
    n = summary["patient_hours"]
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>pressor shadow report</title>"
           f"<style>{CSS}</style></head><body>"]
    out.append(f"<header><h1>Shadow run: what pressor would have said, hour by hour</h1>"
               f"<p>{_e(source)} · pack {_e(pack.name)} {_e(pack.version)} · {summary['stays']} stays · "
               f"{n:,} patient-hours</p></header><main>")
    tiles = [("patient-hours", f"{n:,}"), ("refused", summary["refused"]), ("values dropped", summary["values_dropped"]),
             ("cards per call p50 / p90", f"{summary['cards_per_call']['p50']:g} / {summary['cards_per_call']['p90']:g}"),
             (f"with {summary['cards_per_call_with_suppression']['suppress_hours']} h repeat suppression",
              f"{summary['cards_per_call_with_suppression']['p50']:g} / {summary['cards_per_call_with_suppression']['p90']:g}"),
             ("contradictions", summary["contradictions"])]
    out.append("<section><h2>Overview</h2><div class='tiles'>" + "".join(
        f"<div class='tile'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for k, v in tiles) + "</div>"
        "<p>A state the schema refuses is not lost: the offending value is dropped with a note and the rest evaluated "
        "(see data quality). Cards are what the default view shows: with a plan, one per decision answered (firm, or "
        "\"unless …\" when an unknown could change it, or undecided), one per ban and one questions card; without one, one "
        "per firm item, one per \"If …\" item shown and one questions card. Repeat suppression hides a card already shown "
        "for the stay within the suppression window. Firing rates count every rule that fired, shown or not.</p></section>")
    rule_rows = list(_csv.reader(io.StringIO(tables["rules.csv"])))[1:]
    rule_rows.sort(key=lambda r: (-int(r[3]), -int(r[5]), r[0]))
    out.append("<section><h2>Per rule: how often it fires</h2><p>Hours (and % of patient-hours) in which the rule is firm, "
               "an \"If …\" item, or shown as a card; stays with a firm hour; firm hours per patient-day across the stays "
               "where it is firm at least once (median, p90).</p>" + _table(
                   ["rule", "severity", "title", "firm h", "If h", "card h", "firm %", "If %", "card %", "stays", "per day p50",
                    "per day p90"], rule_rows, numeric=set(range(3, 12))) + "</section>")
    kinds = list(_csv.reader(io.StringIO(tables["cards_by_kind.csv"])))[1:]
    out.append("<section><h2>Cards per call and per hour, by kind</h2>" + _table(
        ["kind", "cards", "per hour", "with suppression", "per hour with suppression"], kinds, numeric={1, 2, 3, 4}) + "</section>")
    qs = list(_csv.reader(io.StringIO(tables["questions.csv"])))[1:]
    out.append("<section><h2>Questions asked, and the cost of not knowing</h2><p>For each missing fact: the hours the engine "
               "asked it, the hours the default view shows the question, the \"If …\" items its answer would have decided "
               "(summed over hours), and the hours in which it decided critical advice.</p>" + _table(
                   ["fact", "hours asked", "% of hours", "hours shown", "items decided", "hours deciding critical"],
                   qs, numeric={1, 2, 3, 4, 5}) + "</section>")
    dq = extra["dq_kinds"]
    out.append("<section><h2>Data quality</h2><p>Values dropped before evaluation (outside limits, unconvertible units, "
               f"refused by the schema): {summary['values_dropped']} dropped from states, {summary['data_quality_notes']} notes "
               "in all (tables/data_quality.csv lists each with its stay and time).</p>"
               + _table(["first word of the note", "count"], [list(d) for d in dq], numeric={1}) + "</section>")
    cons = extra["consistency"]
    out.append("<section><h2>Internal consistency</h2>"
               f"<p>{len(cons)} patient-hours with two answers that contradict each other (two MAP targets, volume first beside a "
               "vasopressor start or increase, titrate up beside wean).</p>"
               + _table(["stay", "time", "finding"], cons[:30]) + "</section>")
    conc = summary["concordance"]
    out.append("<section><h2>Concordance with what the team did</h2><div class='caveat'>Not a gold standard. The team may "
               "have had reasons the record does not show, and a matching change may have had another cause. Read "
               "discordance as a question for clinical review, not as an error of either side.</div>" + _table(
                   ["item", "advised hours", "team acted within window", "%", "median min to action", "team actions",
                    "of which advised", "%", "window h"],
                   [[c["label"], c["advised_hours"], c["acted_within_window"], c["acted_within_window_pct"],
                     c["median_minutes_to_action"], c["team_actions"], c["team_actions_advised"],
                     c["team_actions_advised_pct"], c["within_hours"]] for c in conc.values()],
                   numeric=set(range(1, 9))) + "</section>")
    if compare:
        out.append(f"<section><h2>Two packs: {_e(compare['base'])} vs {_e(compare['other'])}</h2>"
                   f"<p>Of {compare['patient_hours']:,} patient-hours, {compare['changed_hours']:,} change in any way "
                   f"({compare['changed_pct']}%), {compare['changed_hours_firm']:,} in their firm items "
                   f"({compare['changed_firm_pct']}%) and {compare['changed_hours_cards']:,} in the cards shown "
                   f"({compare['changed_cards_pct']}%).</p>" + _table(
                       ["what", "rule or item", "change", "hours", "examples (stay@time)"],
                       [[c["what"], c["id"], c["change"], c["hours"], " ".join(c["examples"])] for c in compare["changes"][:40]],
                       numeric={3}) + "</section>")
    out.append("<section><h2>Cases for clinical review</h2><p>Each case: the hour, what pressor advised (firm), the MAP "
               "and running infusions, and the next 6 h of care from the record.</p>")
    for key, title in (("most_severe", "Most severe firings"), ("most_discordant", "Most discordant firings"),
                       ("random_sample", "Random sample")):
        out.append(f"<details open><summary>{title} ({len(extra['cases'][key])})</summary>")
        for case in extra["cases"][key]:
            firm = ", ".join(f"<span class='sev-{_e(rules[r].severity if r in rules else 'info')}'>{_e(r)}</span>"
                             for r in case["firm"]) or "nothing firm"
            rates = ", ".join(f"{d} {v:.3g}" for d, v in case["rates"].items()) or "no vasoactive running"
            out.append(f"<div class='case'><b>stay {_e(case['stay'])}, hour {case['hour']}</b> <small>{_e(case['t'])} · "
                       f"{_e(case['why'])}</small><br>MAP {_e(case['map'])} · {_e(rates)}<br>advised: {firm}"
                       f"<br><small>asked: {_e(', '.join(case['questions']) or '-')}</small>"
                       f"<br><small>next 6 h: {_e('; '.join(case['next_6h']))}</small></div>")
        out.append("</details>")
    out.append("</section>")
    chosen = [c for c in courses if any(r.get("rates") for r in c["rows"])]
    case_stays = {case["stay"] for lst in extra["cases"].values() for case in lst}
    chosen += [c for c in courses if c["id"] in case_stays and c not in chosen]
    out.append(f"<section><h2>Per-stay timelines</h2><p>MAP (dashed: 65 and 85 mmHg), each vasoactive infusion (scaled to "
               f"its own maximum, in the pack's units) and pressor's firm advice by severity, one column per evaluation. "
               f"{min(len(chosen), MAX_PLOTS)} of {len(courses)} stays: those with a vasoactive infusion, then those in the "
               f"case lists.</p>")
    for c in chosen[:MAX_PLOTS]:
        out.append(f"<h3>stay {_e(c['id'])} ({len(c['rows'])} h)</h3>" + timeline_svg(c, rules))
    out.append("</section></main></body></html>")
    return "".join(out)
