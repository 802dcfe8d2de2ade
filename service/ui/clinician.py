"""The clinician's routes: the form and its live advice, a pasted document (state or FHIR Bundle), explanations."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from pressor.engine.errors import AuditError, PressorError

from .auth import Session
from .context import UiContext


from .pages import (PREFIX, render, utc, signed_in, posted, clinician_page, advise)

router = APIRouter()


@router.get(f"{PREFIX}/")
async def clinician(request: Request, example: str | None = None, witness: int | None = None,
                    record: str | None = None, rule_example: str | None = None) -> HTMLResponse:
    ctx, session = signed_in(request)
    state: Any = None
    notice = None
    if example:
        found = ctx.example(example)
        if found is None:
            return clinician_page(request, ctx, notice=f"no example named '{example}'", status=404)
        if found.kind == "fhir":
            return await run_in_threadpool(fhir_page, request, ctx, session, found.text, f"example {found.name}")
        if found.kind == "timeline":
            return await run_in_threadpool(state_page, request, ctx, session, found.text, f"example {found.name}")
        from pressor.engine.evaluation.load import parse

        state = parse(found.text, file=f"examples/{found.name}.yaml").data
        notice = f"Example: {found.name}. {found.description}"
    elif witness is not None:
        report = await run_in_threadpool(ctx.lint)
        with_witness = [f for f in report.findings if f.witness is not None]
        if not 0 <= witness < len(with_witness):
            return clinician_page(request, ctx, notice=f"no lint witness #{witness}", status=404)
        finding = with_witness[witness]
        state = finding.witness
        notice = f"Lint witness for {finding.code} ({', '.join(finding.rules)}): {finding.message}"
    elif rule_example:
        rule_id, _, index = rule_example.rpartition(":")
        try:
            item = ctx.pack.rule(rule_id).raw.get("examples", [])[int(index)]
        except (KeyError, ValueError, IndexError):
            return clinician_page(request, ctx, notice=f"no rule example '{rule_example}'", status=404)
        state = item.get("state")
        notice = f"Example of rule {rule_id}: {item.get('name', '')} (expects it {str(item.get('expect', '')).replace('_', ' ')})"
    elif record:
        from pressor.engine.audit import AuditLog

        try:
            with AuditLog.open(ctx.audit_path, create=False) as log:
                rec = log.record(record)
        except AuditError as exc:
            return clinician_page(request, ctx, notice=str(exc), status=404)
        if rec.input is None:
            return clinician_page(request, ctx, notice=f"record #{rec.seq} kept only the SHA-256 of its input", status=404)
        state = rec.input
        notice = f"Input of audit record #{rec.seq} ({rec.id[:8]}), recorded {rec.recorded_at[:19]}Z for {rec.user}"
    advice = await run_in_threadpool(advise, ctx, session, state, record=False) if isinstance(state, dict) else None
    return clinician_page(request, ctx, state=state, advice=advice, notice=notice)

@router.post(f"{PREFIX}/advice")
async def advice(request: Request) -> HTMLResponse:
    ctx, session, pairs = await posted(request)
    state, errors = ctx.form.parse(pairs)
    record = any(k == "record" and v == "1" for k, v in pairs)
    result = await run_in_threadpool(advise, ctx, session, state, record=record, form_errors=errors)
    if request.headers.get("hx-request") == "true":
        return render(request, "advice.html", advice=result)
    return clinician_page(request, ctx, state=state, form_errors=errors, advice=result)

def fhir_page(request: Request, ctx: UiContext, session: Session, text: str, label: str, *,
              record: bool = False) -> HTMLResponse:
    from pressor.engine.ehr.fhir import from_bundle
    from pressor.engine.evaluation.load import parse

    mapping = ctx.fhir_mapping()
    try:
        # as `pressor recommend --fhir` reads a file: the FHIR size limit, temporal facts from the pack
        bundle = parse(text, file=label, fmt="json", max_bytes=mapping.max_bundle_bytes, what="FHIR bundle",
                       positions=False).data
        conversion = from_bundle(bundle, now=ctx.clock(), file=label, mapping=mapping, pack=ctx.pack)
        states = conversion.states()
    except PressorError as exc:
        result: dict[str, Any] = {"state": None, "problems": list(exc.problems), "error_kind": exc.kind, "form_errors": {}}
        return clinician_page(request, ctx, document=text, document_kind="fhir", advice=result, status=400)
    if len(states) > 1:
        return clinician_page(request, ctx, document=text, document_kind="fhir", status=400,
                              notice=f"the bundle holds {len(states)} draft orders; keep one draft MedicationRequest")
    state = states[0]
    result = advise(ctx, session, state, record=record)
    result["fhir"] = {"notes": conversion.notes, "missing": conversion.missing}
    return clinician_page(request, ctx, state=state, advice=result, document=text, document_kind="fhir",
                          notice=f"FHIR bundle ({label}) converted to the facts below; edit them to see the advice change.")

def state_page(request: Request, ctx: UiContext, session: Session, text: str, label: str, *,
               record: bool = False) -> HTMLResponse:
    """A patient state (YAML or JSON), or a timeline input (top-level ``timeline:``) where the
    engine reads them."""
    from pressor.engine.evaluation.load import parse

    try:
        doc = parse(text, file=label)
    except PressorError as exc:
        result: dict[str, Any] = {"state": None, "problems": list(exc.problems), "error_kind": exc.kind, "form_errors": {}}
        return clinician_page(request, ctx, document=text, advice=result, status=400)
    if not isinstance(doc.data, dict):
        return clinician_page(request, ctx, document=text, status=400, notice="a patient state is a mapping of sections")
    notes = None
    state = doc.data
    if "timeline" in state:
        from pressor.engine.ehr.fhir import from_timeline

        try:
            conversion = from_timeline(doc, now=ctx.clock(), pack=ctx.pack)
        except PressorError as exc:
            result = {"state": None, "problems": list(exc.problems), "error_kind": exc.kind, "form_errors": {}}
            return clinician_page(request, ctx, document=text, advice=result, status=400)
        state, notes = conversion.state, {"notes": conversion.notes, "missing": getattr(conversion, "missing", [])}
    result = advise(ctx, session, state, record=record)
    if notes is not None:
        result["fhir"] = notes
    return clinician_page(request, ctx, state=state, advice=result, document=text,
                          notice=f"{label}: read into the form below; edit the facts to see the advice change.")

@router.post(f"{PREFIX}/document")
async def document(request: Request) -> HTMLResponse:
    """A pasted (or file-read) FHIR R4 bundle, patient state (YAML/JSON) or timeline input."""
    ctx, session, pairs = await posted(request)
    form = dict(pairs)
    text, kind = form.get("document", ""), form.get("kind", "state")
    record = form.get("record") == "1"
    page = fhir_page if kind == "fhir" else state_page
    label = "pasted bundle" if kind == "fhir" else "pasted input"
    return await run_in_threadpool(page, request, ctx, session, text, label, record=record)

@router.post(f"{PREFIX}/explain")
async def explain_rule(request: Request) -> HTMLResponse:
    from pressor.engine.evaluation.explain import explain

    ctx, session, pairs = await posted(request)
    form = dict(pairs)
    state, errors = ctx.form.parse(pairs)
    rule_id = form.get("rule", "")
    try:
        now = utc(form.get("evaluated_at")) or ctx.clock()
    except ValueError:
        now = ctx.clock()
    if errors:
        explanation, problem = None, "fix the highlighted fields first"
    else:
        try:
            explanation = await run_in_threadpool(explain, ctx.pack, state, now=now, include_draft=ctx.include_draft,
                                                  rule_id=rule_id)
            problem = None
        except PressorError as exc:
            explanation, problem = None, str(exc)
    if request.headers.get("hx-request") == "true":
        return render(request, "explanation.html", explanation=explanation, problem=problem, rule_id=rule_id)
    result = await run_in_threadpool(advise, ctx, session, state, record=False, form_errors=errors)
    return clinician_page(request, ctx, state=state, form_errors=errors, advice=result,
                          explanation={"rule_id": rule_id, "value": explanation, "problem": problem})
