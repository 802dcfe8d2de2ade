"""The draft orders of a CDS Hooks request: those the clinician selected, and where a problem or an order found in
them was in the request."""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

_DRAFT_POINTER = re.compile(r"/context/draftOrders(?:/entry/(\d+))?(?=/|$)")


def selected_drafts(body: dict[str, Any]) -> tuple[dict[str, Any], list[int] | None]:
    """The request with only the draft orders named in ``context.selections`` (all of them when it is
    absent), and the original index of each kept entry (None when nothing was dropped)."""
    context = body["context"]
    drafts, selections = context.get("draftOrders"), context.get("selections")
    if selections is None or not isinstance(drafts, dict):
        return body, None
    chosen = set(selections)
    if drafts.get("resourceType") != "Bundle":
        keep = f"{drafts.get('resourceType')}/{drafts.get('id')}" in chosen
        return ({**body, "context": {**context, "draftOrders": drafts}} if keep else
                {**body, "context": {k: v for k, v in context.items() if k != "draftOrders"}}), None
    entries = entry if isinstance(entry := drafts.get("entry"), list) else []
    index = [i for i, e in enumerate(entries) if not isinstance(e, dict) or not isinstance(e.get("resource"), dict)
             or f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}" in chosen]
    if len(index) == len(entries):
        return body, None
    kept = {**drafts, "entry": [entries[i] for i in index]}
    return {**body, "context": {**context, "draftOrders": kept}}, index


def unselect_pointer(problem: Any, index: list[int] | None) -> Any:
    """A problem found in the selected draft orders, pointed back at the entry in the request."""
    if index is None or not problem.pointer:
        return problem
    m = _DRAFT_POINTER.match(problem.pointer)
    if not m or m.group(1) is None:
        return problem
    original = f"/context/draftOrders/entry/{index[int(m.group(1))]}"
    return replace(problem, pointer=original + problem.pointer[m.end():])


def draft_of(order: dict[str, Any], request: dict[str, Any]) -> dict[str, Any] | None:
    """The draft order resource (in ``request``) a converted order came from."""
    m = _DRAFT_POINTER.search(str(order.get("source", "")))
    drafts = request["context"].get("draftOrders")
    if not m or not isinstance(drafts, dict):
        return None
    if m.group(1) is None:
        return drafts
    entries = drafts.get("entry") or []
    i = int(m.group(1))
    return entries[i].get("resource") if i < len(entries) and isinstance(entries[i], dict) else None
