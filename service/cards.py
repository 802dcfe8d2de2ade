"""CDS Hooks cards from evaluation results: rendering only (the engine decided what applies).

One card per recommendation (de-duplicated by rule id across the states of one call),
critical first, each linking to its rule's page (and to the web app, when one is configured).
Bans (kind ``avoid``) carry override reasons; a ban on a draft order also offers to delete it
and, when the order is a first-line vasopressor other than norepinephrine and the engine gave
norepinephrine's dose for this patient, to replace it with norepinephrine at that rate. A dose
that is a rate and could be computed for this patient becomes a suggestion that creates the
MedicationRequest.
"""
from __future__ import annotations

from typing import Any, Iterable

from pressor.engine.audit.card_ids import CARD_NAMESPACE, card_uuid, stable_uuid  # noqa: F401 (re-exported)
from pressor.engine.ehr.fhir import Conversion
from pressor.engine.model import SEVERITY_ORDER, Result
from pressor.engine.report import decides_text, shown_if_groups

from .card_parts import (CONDITIONAL_SYSTEM, OUTSIDE_SYSTEM, QUESTION_SYSTEM, card_detail, dict_of, medication_request,
                         order_evidence, recommendation_card, short)
from .plan_cards import plan_cards

#: What each prefetch key holds, in words (the missing-data card).
_MISSING_WHAT = {
    "patient": "the Patient (age, sex)",
    "observations": "vital signs",
    "labs": "lactate",
    "weight": "weight",
    "conditions": "the problem list (shock type, hypertension, pregnancy)",
    "medicationAdministrations": "running infusions",
    "medicationRequests": "active medication orders",
    "procedures": "procedures (vascular access, fluid resuscitation)",
}


def not_recorded_card(hook_instance: str, pack: dict[str, Any], base_url: str, why: str) -> dict[str, Any]:
    """A warning card: the advice above was given but is NOT in the audit log."""
    return {
        "uuid": stable_uuid(hook_instance, "not-recorded", pack["sha256"]),
        "summary": "This advice was NOT recorded in the audit log",
        "indicator": "warning",
        "detail": f"The cards of this call could not be written to the audit log, so there is no record of them: {why}. "
                  "Tell the team that runs the CDS service.",
        "source": {"label": f"pressor: {pack['name']} {pack['version']}", "url": f"{base_url}/rules"},
    }


def deceased_card(hook_instance: str, pack: dict[str, Any], base_url: str, why: str) -> dict[str, Any]:
    """The one card for a patient the record says has died: no advice (issue 22)."""
    return {
        "uuid": stable_uuid(hook_instance, "deceased", pack["sha256"]),
        "summary": "The record says this patient is deceased: no vasopressor advice",
        "indicator": "warning",
        "detail": f"{why}. If this is the wrong patient or the record is wrong, correct the record.",
        "source": {"label": f"pressor: {pack['name']} {pack['version']}", "url": f"{base_url}/rules"},
    }


def missing_card(conversion: Conversion, results: Iterable[Result], *, pack: dict[str, Any], hook_instance: str,
                 base_url: str, why_missing: dict[str, str] | None = None) -> dict[str, Any] | None:
    """An info card naming the data that was neither supplied nor fetched (and why), and what could
    not be decided for want of it."""
    gaps = gap_lines(conversion)
    if not conversion.missing and not gaps:
        return None
    why_missing = why_missing or {}
    what = [f"`{k}` ({_MISSING_WHAT.get(k, k)})" + (f": {why_missing[k]}" if k in why_missing else "")
            for k in conversion.missing]
    undecided: dict[str, list[str]] = {}
    for result in results:
        for ne in result.not_evaluable:
            undecided.setdefault(ne.rule_id, list(ne.missing))
    lines = (["These were neither supplied with the call nor fetched from the EHR, so what depends on them is unknown.",
              "", "**Not supplied**", ""] + [f"- {w}" for w in what]) if what else []
    if gaps:
        lines += ([""] if lines else []) + gaps
    if undecided:
        lines += ["", f"**Could not decide ({len(undecided)} rules)**", ""]
        lines += [f"- {rid}: missing {', '.join(miss)}" for rid, miss in sorted(undecided.items())]
    if conversion.notes:
        lines += ["", "**How the record was read**", ""] + [f"- {n}" for n in conversion.notes]
    return {
        "uuid": stable_uuid(hook_instance, "missing-data", pack["sha256"]),
        "summary": short(f"Data not supplied: {', '.join(conversion.missing)}; some recommendations could not be decided"
                          if conversion.missing else "Part of the record was cut or could not be resolved; some facts are unknown"),
        "indicator": "info",
        "detail": "\n".join(lines),
        "source": {"label": f"pressor: {pack['name']} {pack['version']}", "url": f"{base_url}/rules"},
    }


def gap_lines(conversion: Conversion) -> list[str]:
    """Markdown lines naming what is unknown because the record was cut, truncated or a reference could not
    be resolved (``Conversion.gaps``), so that the card says so in words rather than only in notes."""
    if not conversion.gaps:
        return []
    return ["**Unknown because the record was cut or a reference could not be resolved**", ""] + \
        [f"- {g}" for g in conversion.gaps]


def cards_for(results: list[Result], conversion: Conversion, *, hook_instance: str, base_url: str, patient_id: str,
              drug_codings: dict[str, dict[str, str]], drafts: list[dict[str, Any] | None] | None = None,
              ui_base_url: str | None = None, why_missing: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every card for one call: recommendations (once per rule, critical first), then the missing-data card.

    ``drafts[i]`` is the draft order (a FHIR resource) evaluated in ``results[i]``, if any.
    """
    seen: dict[str, dict[str, Any]] = {}
    banned: dict[str, list[dict[str, Any]]] = {}
    replacement: dict[str, dict[str, Any]] = {}
    for i, result in enumerate(results):
        recs_i = dict_of(result)["recommendations"]
        draft = drafts[i] if drafts and i < len(drafts) else None
        for rec in recs_i:
            seen.setdefault(rec["rule_id"], rec)
            on_order = order_evidence(rec)
            if rec["kind"] != "avoid" or draft is None or not on_order:
                continue
            banned.setdefault(rec["rule_id"], []).append(draft)
            if on_order.get("order.purpose") == "first_line" and on_order.get("order.drug") != "norepinephrine":
                instead = _norepinephrine_order(recs_i, patient_id, drug_codings)
                if instead is not None:
                    replacement.setdefault(rec["rule_id"], instead)
    pack = results[0].pack
    if results[0].plan is not None:
        cards = plan_cards(results, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                           drug_codings=drug_codings, ui_base_url=ui_base_url, banned=banned, replacement=replacement)
        if cards and cards[0]["source"].get("topic", {}).get("system") == OUTSIDE_SYSTEM:
            return cards
        info = missing_card(conversion, results, pack=pack, hook_instance=hook_instance, base_url=base_url,
                            why_missing=why_missing)
        return cards + ([info] if info else [])
    recs = sorted(seen.values(), key=lambda r: (SEVERITY_ORDER[r["severity"]], r["rule_id"]))
    cards = [recommendation_card(r, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                                 drug_coding=drug_codings.get(r.get("drug") or ""), ui_base_url=ui_base_url,
                                 drafts=banned.get(r["rule_id"], []), replacement=replacement.get(r["rule_id"]))
             for r in recs]
    cards += conditional_cards(results, seen, pack=pack, hook_instance=hook_instance, base_url=base_url)
    ask = questions_card(results, pack=pack, hook_instance=hook_instance, base_url=base_url)
    info = missing_card(conversion, results, pack=pack, hook_instance=hook_instance, base_url=base_url,
                        why_missing=why_missing)
    return cards + ([ask] if ask else []) + ([info] if info else [])


def _norepinephrine_order(recs: list[dict[str, Any]], patient_id: str,
                          drug_codings: dict[str, dict[str, str]]) -> dict[str, Any] | None:
    """The norepinephrine order at the rate the engine computed for this patient (None if it gave none)."""
    for rec in recs:
        if (rec.get("dose") or {}).get("drug") == "norepinephrine":
            order = medication_request(rec, patient_id, drug_codings.get("norepinephrine"))
            if order is not None:
                return order
    return None


def conditional_cards(results: list[Result], fired: dict[str, Any], *, pack: dict[str, Any], hook_instance: str,
                      base_url: str) -> list[dict[str, Any]]:
    """Advice that the first questions' answers would make firm, as info cards whose summary starts "If ...".

    Never with a suggestion: nothing is ordered on a condition nobody has checked.
    """
    cards: list[dict[str, Any]] = []
    seen: set[str] = set(fired)
    for result in results:
        for text, members in shown_if_groups(dict_of(result)):
            for c in members:
                if c["rule_id"] in seen:
                    continue
                seen.add(c["rule_id"])
                condition = text[:1].upper() + text[1:]
                detail = [f"**If {text}** (not yet known; ask first), then:", "", card_detail({**c, "evidence": []}, pack)]
                cards.append({
                    "uuid": stable_uuid(hook_instance, "if", c["rule_id"], c["rule_version"], pack["sha256"]),
                    "summary": short(f"If {condition[:1].lower() + condition[1:]}: {c['summary']}"),
                    "indicator": "info",
                    "detail": "\n".join(detail),
                    "source": {
                        "label": f"pressor: {pack['name']} {pack['version']} (conditional)",
                        "url": f"{base_url}/rules/{c['rule_id']}",
                        "topic": {"system": CONDITIONAL_SYSTEM, "code": f"{c['rule_id']}|{c['rule_version']}",
                                  "display": c["title"]},
                    },
                })
    return cards


def questions_card(results: list[Result], *, pack: dict[str, Any], hook_instance: str, base_url: str) -> dict[str, Any] | None:
    """One info card listing the questions whose answers decide the most severe advice, best first."""
    asks: dict[str, dict[str, Any]] = {}
    for result in results:
        for ask in dict_of(result)["ask_next"]:
            asks.setdefault(ask["fact"], ask)
    if not asks:
        return None
    ranked = list(asks.values())
    lines = ["These facts are unknown; their answers decide the advice below (most severe first).", ""]
    lines += [f"{i}. **{a['question']}** Decides: {decides_text(a, limit=6)}" for i, a in enumerate(ranked, 1)]
    return {
        "uuid": stable_uuid(hook_instance, "ask-next", pack["sha256"]),
        "summary": short(f"Ask first: {ranked[0]['question']}"),
        "indicator": "info",
        "detail": "\n".join(lines),
        "source": {"label": f"pressor: {pack['name']} {pack['version']}", "url": f"{base_url}/rules",
                   "topic": {"system": QUESTION_SYSTEM, "code": ranked[0]["fact"], "display": ranked[0]["question"]}},
    }


def unless_ban_cards(unless: list[tuple[dict[str, Any] | None, str, Result]], fired: set[str], *, pack: dict[str, Any],
                     hook_instance: str, base_url: str, patient_id: str, drug_codings: dict[str, dict[str, str]],
                     ui_base_url: str | None = None) -> list[dict[str, Any]]:
    """Ban cards on draft orders whose purpose the record leaves unknown: each ``(draft, words, result)`` is the
    evaluation of the order as first-line (``words``: what would make it not so, e.g. "norepinephrine is already
    running"). A ban on the order in that result, not already among the ``fired`` rule ids, becomes its card with
    the delete and replace suggestions, qualified "Unless <words>" instead of going silent (issue 22, item 3)."""
    cards = []
    for draft, words, result in unless:
        recs = dict_of(result)["recommendations"]
        for rec in recs:
            if rec["kind"] != "avoid" or rec["rule_id"] in fired or not order_evidence(rec) or draft is None:
                continue
            fired.add(rec["rule_id"])
            card = recommendation_card(rec, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                                       drug_coding=drug_codings.get(rec.get("drug") or ""), ui_base_url=ui_base_url,
                                       drafts=[draft], replacement=_norepinephrine_order(recs, patient_id, drug_codings))
            card["summary"] = short(f"Unless {words}: {rec['summary']}")
            card["detail"] = (f"**Unless {words}.** The record does not say, and this order would then be first-line; "
                              "the ban below holds for it.\n\n" + card["detail"])
            cards.append(card)
    return cards
