"""The plan's CDS Hooks cards (issue 18): one card per plan item, one per shown ban, one question card."""
from __future__ import annotations

from typing import Any

from pressor.engine.audit.card_ids import card_uuid, stable_uuid
from pressor.engine.model import SEVERITY_ORDER, Result
from pressor.engine.evaluation.logic import SET_ASIDE
from pressor.engine.report import decides_text, dose_lines

from .card_parts import (CONDITIONAL_SYSTEM, OUTSIDE_SYSTEM, QUESTION_SYSTEM, RULE_SYSTEM, SET_ASIDE_SYSTEM, card_detail,
                         dict_of, links,
                         medication_request, order_label, ordered_union, recommendation_card, reference, repeat, short,
                         why_lines)


def plan_cards(results: list[Result], *, pack: dict[str, Any], hook_instance: str, base_url: str, patient_id: str,
               drug_codings: dict[str, dict[str, str]], ui_base_url: str | None = None,
               banned: dict[str, list[dict[str, Any]]] | None = None,
               replacement: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The plan of the call's results as cards, in the order one acts on it: one card per plan item (firm and
    conditional ones with the answer's dose and pump rate and its supporting items folded in; an undecided one
    as "If ..."), one per shown ban (with the draft-order suggestions), one question card (at most
    :data:`~pressor.engine.evaluation.plan.MAX_QUESTIONS` questions). A patient outside the protocol gets one card.

    The results are the states of one call (one per draft order): the first result's answer to a decision wins.
    """
    banned, replacement = banned or {}, replacement or {}
    datas = [dict_of(r) for r in results]
    recs: dict[str, dict[str, Any]] = {}
    for data in datas:
        for rec in data["recommendations"]:
            recs.setdefault(rec["rule_id"], rec)
    decided: dict[str, Any] = {}
    for data in datas:
        for name, inputs in (data.get("decided_for_any_value") or {}).items():
            decided.setdefault(name, inputs)
    for data in datas:
        outside = data["plan"]["outside_protocol"]
        if outside:
            rec = recs[outside]
            card = recommendation_card(rec, pack=pack, hook_instance=hook_instance, base_url=base_url,
                                       patient_id=patient_id, drug_coding=None, ui_base_url=ui_base_url)
            card["source"]["topic"] = {"system": OUTSIDE_SYSTEM, "code": f"{rec['rule_id']}|{rec['rule_version']}",
                                       "display": rec["title"]}
            card.pop("suggestions", None), card.pop("selectionBehavior", None)
            card["detail"] = ("**Outside this protocol**: nothing else in this pack applies to this patient.\n\n"
                              + card["detail"])
            return [repeat(card, f"outside:{rec['rule_id']}", rec["rule_id"], rec["rule_version"])]
    versions = {c["rule_id"]: c["rule_version"] for data in datas for c in data.get("conditional", [])}
    items: dict[str, dict[str, Any]] = {}
    for data in datas:
        for item in data["plan"]["items"]:
            items.setdefault(item["decision"], item)
    cards = [_plan_item_card(item, recs, pack=pack, hook_instance=hook_instance, base_url=base_url,
                             patient_id=patient_id, drug_codings=drug_codings, ui_base_url=ui_base_url, decided=decided,
                             versions=versions)
             for item in items.values()]
    bans = ordered_union(d["plan"]["bans"] for d in datas)
    # A ban on a draft order first: it is about what the clinician is doing now.
    bans.sort(key=lambda rid: (not banned.get(rid), SEVERITY_ORDER[recs[rid]["severity"]]))
    ban_cards = []
    for rid in bans:
        rec = recs[rid]
        card = recommendation_card(rec, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                                   drug_coding=drug_codings.get(rec.get("drug") or ""), ui_base_url=ui_base_url,
                                   drafts=banned.get(rid, []), replacement=replacement.get(rid))
        card["detail"] = card_detail(rec, pack, decided)
        ban_cards.append(repeat(card, f"ban:{rid}", rid, rec["rule_version"],
                                 sorted(map(str, map(reference, banned.get(rid, []))))))
    on_order = [c for c, rid in zip(ban_cards, bans) if banned.get(rid)]
    others = []  # fired rules outside every decision (an implausible dose, a perfusion flag): first, never hidden
    for rid in ordered_union(d["plan"].get("others", ()) for d in datas):
        rec = recs[rid]
        card = recommendation_card(rec, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                                   drug_coding=None, ui_base_url=ui_base_url)
        card.pop("suggestions", None), card.pop("selectionBehavior", None)
        card["detail"] = card_detail(rec, pack, decided)
        others.append(repeat(card, f"other:{rid}", rid, rec["rule_version"]))
    set_aside = [_set_aside_card(w, pack=pack, hook_instance=hook_instance, base_url=base_url)
                 for w in ordered_union([w for w in d["warnings"] if w.startswith(SET_ASIDE)] for d in datas)]
    cards = on_order + set_aside + others + cards + ban_cards[len(on_order):]
    asks = {a["fact"]: a for data in datas for a in data.get("ask_next", [])}
    questions = ordered_union(d["plan"]["questions"] for d in datas)[:PLAN_QUESTIONS]
    if questions:
        cards.append(_plan_questions_card([asks[f] for f in questions], pack=pack, hook_instance=hook_instance,
                                          base_url=base_url))
    return cards


#: At most this many questions on the one question card (the engine's plan asks at most as many per state).
PLAN_QUESTIONS = 3


def _plan_item_card(item: dict[str, Any], recs: dict[str, dict[str, Any]], *, pack: dict[str, Any], hook_instance: str,
                    base_url: str, patient_id: str, drug_codings: dict[str, dict[str, str]], ui_base_url: str | None,
                    decided: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    label = f"pressor: {pack['name']} {pack['version']}"
    if item["rule_id"] is None:  # undecided: what each candidate waits on, nothing to order
        lines = [f"**{item['title']}: depends on what is not yet known** (ask first)", ""]
        lines += [f"- If {u['if']}: {u['summary']}" for u in item["unless"]]
        first = item["unless"][0]
        card: dict[str, Any] = {"uuid": stable_uuid(hook_instance, "plan", item["decision"], pack["sha256"]),
                "summary": short(f"{item['title']}: if {first['if']}: {first['summary']}"),
                "indicator": "info", "detail": "\n".join(lines),
                "source": {"label": f"{label} (conditional)", "url": f"{base_url}/rules/{first['rule_id']}",
                           "topic": {"system": CONDITIONAL_SYSTEM, "code": f"{first['rule_id']}|{versions.get(first['rule_id'], '')}".rstrip("|"),
                                     "display": item["title"]}}}
        return repeat(card, f"plan:{item['decision']}", "undecided", [u["rule_id"] for u in item["unless"]])
    rec = recs[item["rule_id"]]
    supporting = [recs[rid] for rid in item["supporting"] if rid in recs]
    card_id = card_uuid(hook_instance, rec["rule_id"], rec["rule_version"], pack["sha256"])
    head = f"**{item['title']}: {rec['title']}**" + (" (unless below)" if item["status"] == "conditional" else "")
    lines = [head, "", rec["detail"]]
    dosed = [r for r in [rec, *supporting] if r.get("dose")]
    if dosed:
        lines += ["", "**Dose and pump rate**", ""]
        for r in dosed:
            lines += [f"- {line.strip()}" for line in dose_lines(r["dose"])]
    if item["unless"]:
        lines += ["", "**Unless** (not yet known; ask first)", ""]
        lines += [f"- if {u['if']}: {u['summary']}" for u in item["unless"]]
    others = [r for r in supporting if not r.get("dose")]
    if others:
        lines += ["", "**With it** (bag, line, monitoring)", ""] + [f"- {r['summary']}" for r in others]
    if rec["evidence"]:
        lines += ["", "**Why this card**", ""] + why_lines(rec["evidence"], decided)
    if item["set_aside"]:
        lines += ["", "**Set aside**", ""] + [f"- {s['rule_id']}: {s['because']}" for s in item["set_aside"]]
    cites: dict[Any, dict[str, Any]] = {}
    for r in [rec, *supporting]:
        for c in r["citations"]:
            cites.setdefault(c["number"], c)
    lines += ["", "**Sources**", ""]
    for c in sorted(cites.values(), key=lambda c: c["number"]):
        extra = ", ".join(str(x) for x in (c.get("publisher"), c.get("year")) if x)
        flag = "" if c["resolved"] else " (cited by the source but not in its reference list: unverified)"
        lines.append(f"- [{c['number']}] {c['title']}" + (f", {extra}" if extra else "") + flag)
    status = "" if rec["status"] == "approved" else f", status **{rec['status'].upper()}**"
    lines += ["", f"_Plan item {item['decision']}: rule {rec['rule_id']} v{rec['rule_version']}{status}; pack "
                  f"{pack['name']} {pack['version']} (sha256 {pack['sha256'][:12]})._"]
    if pack.get("profile"):
        from pressor.engine.report import profile_lines

        lines += [f"_{line}_" for line in profile_lines(pack["profile"])]
    summary = f"{item['title']}: {rec['summary']}"
    if item["status"] == "conditional":
        summary = f"{summary} (unless {item['unless'][0]['if']})"
    card = {
        "uuid": card_id, "summary": short(summary), "indicator": rec["severity"], "detail": "\n".join(lines),
        "source": {"label": label, "url": f"{base_url}/rules/{rec['rule_id']}",
                   "topic": {"system": RULE_SYSTEM, "code": f"{rec['rule_id']}|{rec['rule_version']}", "display": rec["title"]}},
        "links": links(rec, base_url, ui_base_url),
    }
    order = None
    if item["status"] == "firm":  # nothing is ordered on a condition nobody has checked
        for r in dosed:
            order = medication_request(r, patient_id, drug_codings.get(r["dose"].get("drug") or r.get("drug") or ""))
            if order is not None:
                break
    if order is not None:
        card["suggestions"] = [{
            "label": short(f"Order {order_label(order)}", 120), "uuid": stable_uuid(card_id, "order"), "isRecommended": True,
            "actions": [{"type": "create", "description": f"Create a draft order: {order['dosageInstruction'][0]['text']}",
                         "resource": order}]}]
        card["selectionBehavior"] = "at-most-one"
    doses = [dose_lines(r["dose"]) for r in dosed]
    return repeat(card, f"plan:{item['decision']}", rec["rule_id"], rec["rule_version"], item["status"], doses,
                   [u["rule_id"] for u in item["unless"]])


def _set_aside_card(warning: str, *, pack: dict[str, Any], hook_instance: str, base_url: str) -> dict[str, Any]:
    """A reading the pack set aside (an arterial-line artefact): shown before the plan, which does not use it."""
    text = warning[len(SET_ASIDE):]
    card = {
        "uuid": stable_uuid(hook_instance, "set-aside", text),
        "summary": short(f"Check the arterial line: {text}"),
        "indicator": "warning",
        "detail": f"**Reading set aside**: {text}.\n\nThe plan below does not use it; advice that needs it is conditional.",
        "source": {"label": f"pressor: {pack['name']} {pack['version']}", "url": f"{base_url}/rules",
                   "topic": {"system": SET_ASIDE_SYSTEM, "code": text.split(" ", 1)[0], "display": "Measurement set aside"}},
    }
    return repeat(card, f"set-aside:{text.split(' ', 1)[0]}", text)


def _plan_questions_card(asks: list[dict[str, Any]], *, pack: dict[str, Any], hook_instance: str,
                         base_url: str) -> dict[str, Any]:
    lines = ["Each answer changes the plan above (best first).", ""]
    lines += [f"{i}. **{a['question']}** Decides: {decides_text(a, limit=4)}" for i, a in enumerate(asks, 1)]
    card = {
        "uuid": stable_uuid(hook_instance, "ask-next", pack["sha256"]),
        "summary": short(f"Ask: {asks[0]['question']}" + (f" (+{len(asks) - 1} more)" if len(asks) > 1 else "")),
        "indicator": "info",
        "detail": "\n".join(lines),
        "source": {"label": f"pressor: {pack['name']} {pack['version']}", "url": f"{base_url}/rules",
                   "topic": {"system": QUESTION_SYSTEM, "code": asks[0]["fact"], "display": asks[0]["question"]}},
    }
    return repeat(card, "questions", [a["fact"] for a in asks])
