"""The informaticist's routes: the rules, one rule, lint, coverage and the pack diff."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from pressor.engine.errors import PressorError
from pressor.engine.report import rule_detail

from .words import Wording


from .pages import (PREFIX, render, signed_in)

router = APIRouter()


# -- informaticist ----------------------------------------------------------
@router.get(f"{PREFIX}/rules")
async def rules(request: Request, q: str = "", drug: str = "", section: str = "", status: str = "") -> HTMLResponse:
    ctx, _ = signed_in(request)
    pack = ctx.pack
    needle = q.strip().lower()

    def drug_of(rule: Any) -> str:
        return rule.drug or (rule.dose.drug if rule.dose else "") or ""

    found = [r for r in pack.rules
             if (not needle or needle in r.id.lower() or needle in r.title.lower() or needle in r.summary.lower())
             and (not drug or drug_of(r) == drug) and (not section or r.section == section)
             and (not status or r.status == status)]
    facets = {"drugs": sorted({drug_of(r) for r in pack.rules} - {""}),
              "sections": sorted({r.section for r in pack.rules}),
              "statuses": sorted({r.status for r in pack.rules})}
    return render(request, "rules.html", rules=found, facets=facets,
                   query={"q": q, "drug": drug, "section": section, "status": status})

@router.get(f"{PREFIX}/rules/{{rule_id}}")
async def rule_page(request: Request, rule_id: str) -> HTMLResponse:
    from pressor.engine.model import render_condition

    ctx, _ = signed_in(request)
    try:
        rule = ctx.pack.rule(rule_id)
    except KeyError:
        return render(request, "message.html", 404, title="No such rule", message=f"no rule '{rule_id}' in this pack")
    detail = rule_detail(ctx.pack, rule)
    dose = None
    if rule.dose is not None:
        d = rule.dose
        dose = {"drug": d.drug, "range": d.range.to_dict(), "route": d.route, "frequency": d.frequency, "within": d.within,
                **{k: getattr(d, k).to_dict() for k in ("typical", "maximum", "alternative", "cap") if getattr(d, k)},
                "pump_rate": d.pump_rate, "remaining_after": d.remaining_after}
    examples = rule.raw.get("examples", [])
    wording = Wording(ctx.pack, ctx.form)
    return render(request, "rule.html", rule=rule, detail=detail, condition=render_condition(rule.when), dose=dose,
                   provenance=rule.provenance(), examples=examples, words=wording.phrases(rule.when),
                   derived=wording.derived_used(rule.when))

@router.get(f"{PREFIX}/lint")
async def lint(request: Request) -> HTMLResponse:
    ctx, _ = signed_in(request)
    report = await run_in_threadpool(ctx.lint)
    findings, n = [], 0
    for finding in report.findings:  # witnesses are numbered in report order, as ?witness= reads them
        findings.append((finding, n if finding.witness is not None else None))
        n += finding.witness is not None
    return render(request, "lint.html", report=report, findings=findings)

@router.get(f"{PREFIX}/coverage")
async def coverage(request: Request) -> HTMLResponse:
    ctx, _ = signed_in(request)
    try:
        test_run = await run_in_threadpool(ctx.test_run)
    except PressorError as exc:
        return render(request, "message.html", 400, title="Scenarios do not load", message=str(exc))
    cov = test_run.coverage
    return render(request, "coverage.html", run=test_run, cov=cov, cov_data=cov.to_dict(),
                   outcomes=("fired", "not_fired", "not_evaluable"))

@router.get(f"{PREFIX}/diff")
async def diff(request: Request, old: str = "", new: str = "current") -> HTMLResponse:
    from pressor.engine.authoring.pack_diff import diff_packs

    ctx, _ = signed_in(request)
    choices = await run_in_threadpool(ctx.comparable_packs)
    result, problem = None, None
    if old:
        try:
            old_pack = await run_in_threadpool(ctx.pack_by_key, old)
            new_pack = await run_in_threadpool(ctx.pack_by_key, new)
            paths = [p for p in ctx.scenario_paths if Path(p).exists()]
            result = (await run_in_threadpool(diff_packs, old_pack, new_pack, paths)).to_dict()
        except KeyError:
            problem = "choose two packs from the lists"
        except PressorError as exc:
            problem = str(exc)
    return render(request, "diff.html", choices=choices, old=old, new=new, diff=result, problem=problem)
