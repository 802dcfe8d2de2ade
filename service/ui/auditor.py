"""The auditor's routes: the audit log, one record, export, verify and replay."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from pressor.engine.audit.records import PATIENT_KEY_ENV, patient_forms
from pressor.engine.errors import AuditError

from .context import UiContext, stored_key


from .pages import (PREFIX, AUDIT_PAGE, render, utc, signed_in, posted)

router = APIRouter()


# -- auditor -----------------------------------------------------------------
def open_log(ctx: UiContext) -> Any:
    from pressor.engine.audit import AuditLog

    return AuditLog.open(ctx.audit_path, create=False)

@router.get(f"{PREFIX}/audit")
async def audit(request: Request, since: str = "", until: str = "", user: str = "", rule: str = "",
                version: str = "", patient: str = "") -> HTMLResponse:
    ctx, _ = signed_in(request)
    query = {"since": since, "until": until, "user": user, "rule": rule, "version": version, "patient": patient}
    try:
        start, end = utc(since), utc(until)
    except ValueError:
        return render(request, "audit.html", 400, records=[], query=query, total=0,
                       problem="times must look like 2026-11-30T14:05")

    def select() -> tuple[list[Any], int]:
        filters = {"since": start, "until": end, "rule": rule.strip() or None, "user": user or None,
                   "version": version.strip() or None, "patient": patient_forms(patient.strip() or None,
                                                                      os.environ.get(PATIENT_KEY_ENV, "").encode() or None)}
        with open_log(ctx) as log:  # the filters, the newest page and the count all run in the database
            return list(log.records(**filters, newest_first=True, limit=AUDIT_PAGE)), log.count_records(**filters)

    try:
        records, total = await run_in_threadpool(select)
        problem = None
    except AuditError as exc:
        records, total, problem = [], 0, str(exc)
    return render(request, "audit.html", records=records, total=total, query=query, problem=problem,
                   page=AUDIT_PAGE)

@router.get(f"{PREFIX}/audit/export")
async def audit_export(request: Request, kind: str = "records", format: str = "jsonl") -> Response:
    ctx, _ = signed_in(request)
    if kind not in ("records", "feedback") or format not in ("jsonl", "csv", "fhir-auditevent") or (
            format == "fhir-auditevent" and kind != "records"):
        return render(request, "message.html", 400, title="Export", message="kind is records|feedback, format jsonl|csv (or fhir-auditevent for records)")

    def export() -> Any:
        # In memory up to 8 MB, then on disk: a large log is not held in memory whole.
        out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+", encoding="utf-8", newline="")
        try:
            with open_log(ctx) as log:
                log.export(format, out, kind=kind)
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out

    def chunks(out: Any) -> Iterator[str]:
        with out:
            while block := out.read(64 * 1024):
                yield block

    try:
        spooled = await run_in_threadpool(export)
    except AuditError as exc:
        return render(request, "message.html", 404, title="Export", message=str(exc))
    media = "text/csv" if format == "csv" else "application/fhir+ndjson" if format == "fhir-auditevent" else "application/x-ndjson"
    suffix = "auditevent.ndjson" if format == "fhir-auditevent" else format
    return StreamingResponse(chunks(spooled), media_type=f"{media}; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="pressor-audit-{kind}.{suffix}"'})

@router.get(f"{PREFIX}/audit/{{record_id}}")
async def audit_record(request: Request, record_id: str) -> HTMLResponse:
    from pressor.service.cards import card_uuid

    ctx, _ = signed_in(request)

    def load() -> dict[str, Any]:
        with open_log(ctx) as log:
            rec = log.record(record_id)
            previous, following = log.neighbours(rec.seq)
            cards = []
            if rec.hook_instance:
                for fired in rec.fired():
                    rule, _, version = fired.partition("@")
                    uid = card_uuid(rec.hook_instance, rule, version, rec.pack_sha256)
                    cards.append({"rule": fired, "uuid": uid, "feedback": [f.to_dict() for f in log.feedback(card=uid)]})
            return {"rec": rec, "previous": previous, "following": following, "cards": cards,
                    "database_id": log.database_id}

    try:
        data = await run_in_threadpool(load)
    except AuditError as exc:
        return render(request, "message.html", 404, title="Audit record", message=str(exc))
    rec = data["rec"]
    result = rec.result
    profile = rec.profile
    # compared with the pack it was evaluated with: its stored pack under the site profile it names
    compare = stored_key(rec.pack_sha256, profile)
    serving = stored_key(ctx.pack.sha256, ctx.pack.profile.to_dict() if ctx.pack.profile else None)
    return render(request, "audit_record.html", **data, result=result, input=rec.input, profile=profile,
                   compare=None if compare == serving else compare)

@router.post(f"{PREFIX}/audit/verify")
async def audit_verify(request: Request) -> HTMLResponse:
    ctx, _, _ = await posted(request)

    def verify() -> Any:
        with open_log(ctx) as log:
            return log.verify()

    try:
        verification, problem = await run_in_threadpool(verify), None
    except AuditError as exc:
        verification, problem = None, str(exc)
    return render(request, "verify.html", verification=verification, problem=problem)

@router.post(f"{PREFIX}/audit/{{record_id}}/replay")
async def audit_replay(request: Request, record_id: str) -> HTMLResponse:
    ctx, _, _ = await posted(request)

    def replay() -> Any:
        with open_log(ctx) as log:
            return log.replay(record_id)

    try:
        outcome, problem = await run_in_threadpool(replay), None
    except AuditError as exc:
        outcome, problem = None, str(exc)
    return render(request, "replay.html", replay=outcome, problem=problem)
