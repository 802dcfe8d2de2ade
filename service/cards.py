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

import hashlib
import json
from typing import Any, Iterable, Sequence

from pressor.engine.audit.card_ids import CARD_NAMESPACE, card_uuid, stable_uuid  # noqa: F401 (re-exported)
from pressor.engine.ehr.fhir import Conversion
from pressor.engine.model import SEVERITY_ORDER, Result
from pressor.engine.evaluation.units import parse_unit

from pressor.engine.report import because_text, decides_text, dose_lines, ordered_evidence, quantity, shown_if_groups

RULE_SYSTEM = "urn:pressor:rule"
#: Topic system of the one card of a patient outside this protocol (a scope rule fired).
OUTSIDE_SYSTEM = "urn:pressor:outside-protocol"
#: Topic systems of the cards for missing facts: advice on a condition, and the questions to ask.
CONDITIONAL_SYSTEM = "urn:pressor:rule-conditional"
QUESTION_SYSTEM = "urn:pressor:ask-next"
OVERRIDE_SYSTEM = "urn:pressor:override-reason"
OVERRIDE_REASONS = (
    ("clinical-judgement", "Clinical judgement: the benefit outweighs the risk for this patient"),
    ("data-incorrect", "The patient data behind this card is wrong or out of date"),
    ("already-addressed", "Already addressed"),
)
_UCUM_AMOUNT = {"mcg": "ug", "mg": "mg", "g": "g", "units": "[USP'U]", "mL": "mL", "L": "L"}
_UCUM_TIME = {"min": "min", "h": "h", "day": "d"}
SUMMARY_MAX = 139  # CDS Hooks: "<140-character summary"
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



def dict_of(result: Any) -> dict[str, Any]:
    """``result.to_dict()``, made once per result and kept with it: the cards and the audit record of a call share
    one serialisation (nothing here changes the dictionary)."""
    found = result.__dict__.get("_as_dict")
    if found is None:
        found = result.to_dict()
        object.__setattr__(result, "_as_dict", found)
    return found

def _short(text: str, limit: int = SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


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


def _ucum(unit_text: str) -> str | None:
    """``mcg/min`` -> ``ug/min``; None if the unit is not amount/time."""
    unit = parse_unit(unit_text)
    if unit.per_time is None or unit.per_kg:
        return None
    return f"{_UCUM_AMOUNT[unit.amount]}/{_UCUM_TIME[unit.per_time]}"


def _q(value: float, unit_text: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit_text, "system": "http://unitsofmeasure.org", "code": code}


def medication_request(rec: dict[str, Any], patient_id: str, drug_coding: dict[str, str] | None) -> dict[str, Any] | None:
    """The MedicationRequest a dosed recommendation proposes, at the rate computed for this patient; None if none can be."""
    dose = rec.get("dose")
    if not dose or rec["kind"] not in ("do", "consider") or dose.get("missing") or dose.get("step"):
        return None  # a titration step changes the running rate: it is not a rate to order
    authored = parse_unit(dose["range"]["unit"])
    if authored.per_time is None:
        return None
    q = dose["for_weight"]["range"] if authored.per_kg else dose["range"]
    code = _ucum(q["unit"])
    if code is None:
        return None
    rate: dict[str, Any]
    if "low" in q:
        rate = {"rateRange": {"low": _q(q["low"], q["unit"], code), "high": _q(q["high"], q["unit"], code)}}
    else:
        rate = {"rateQuantity": _q(q["value"], q["unit"], code)}
    text = f"{dose['drug']} {quantity(dose['range'])}"
    if authored.per_kg:
        text += f" = {quantity(q)} for {dose['for_weight']['weight_kg']:g} kg"
    pumps = [f"{r.get('low_ml_h', r.get('ml_h'))}" + (f"-{r['high_ml_h']}" if "high_ml_h" in r else "")
             + (f" mL/h at {r['concentration_mcg_ml']:g} mcg/mL" if "concentration_mcg_ml" in r
                else f" mL/h at {r['concentration_units_ml']:g} units/mL") + f" ({r['preparation']})"
             for r in dose.get("pump_rates", [])]
    if pumps:
        text += "; pump " + "; or ".join(pumps)
    concept: dict[str, Any] = {"text": dose["drug"]}
    if drug_coding:
        concept["coding"] = [drug_coding]
    instruction: dict[str, Any] = {"text": text + ". Titrate to the target; see the card.", "doseAndRate": [{
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/dose-rate-type", "code": "calculated",
                             "display": "Calculated"}]},
        **rate,
    }]}
    if dose.get("route"):
        instruction["route"] = {"text": dose["route"]}
    return {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": concept,
        "dosageInstruction": [instruction],
        "note": [{"text": f"Proposed by pressor rule {rec['rule_id']} v{rec['rule_version']}."}],
    }


def _links(rec: dict[str, Any], base_url: str, ui_base_url: str | None) -> list[dict[str, Any]]:
    links = [{"label": _short(f"Rule {rec['rule_id']} v{rec['rule_version']}: text, citations, history", 120),
              "url": f"{base_url}/rules/{rec['rule_id']}", "type": "absolute"}]
    if ui_base_url:
        links.append({"label": "Open this rule in the pressor web app", "url": f"{ui_base_url}/rules/{rec['rule_id']}",
                      "type": "absolute"})
    return links


def _order_evidence(rec: dict[str, Any]) -> dict[str, Any]:
    """The ``order.*`` facts a recommendation's firing rested on (empty if it is not about the draft order)."""
    return {e["fact"]: e["value"] for e in rec.get("evidence", []) if str(e.get("fact", "")).startswith("order.")}


def _reference(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) and rid else None


def ban_suggestions(card_id: str, rec: dict[str, Any], drafts: list[dict[str, Any]],
                    replacement: dict[str, Any] | None) -> list[dict[str, Any]]:
    """For a ban on draft orders: delete them; and, given ``replacement``, delete them and create it instead."""
    refs = [r for r in (_reference(d) for d in drafts) if r]
    if not refs:
        return []
    drug = rec.get("drug") or "this"
    deletes = [{"type": "delete", "description": f"Delete the draft order {ref}", "resourceId": ref} for ref in refs]
    out = [{"label": _short(f"Remove the draft {drug} order", 120), "uuid": stable_uuid(card_id, "delete", *refs),
            "isRecommended": replacement is None, "actions": deletes}]
    if replacement is not None:
        text = replacement["dosageInstruction"][0]["text"]
        out.append({"label": _short(f"Replace with {_order_label(replacement)}", 120),
                    "uuid": stable_uuid(card_id, "replace", *refs), "isRecommended": True,
                    "actions": deletes + [{"type": "create", "description": f"Create a draft order: {text}",
                                           "resource": replacement}]})
    return out


def _order_label(order: dict[str, Any]) -> str:
    rate = order["dosageInstruction"][0]["doseAndRate"][0]
    q = rate.get("rateQuantity") or rate["rateRange"]
    at = f"{q['value']:g}" if "value" in q else f"{q['low']['value']:g}-{q['high']['value']:g}"
    return f"{order['medicationCodeableConcept']['text']} {at} {q.get('unit') or q['low']['unit']} (draft)"


def why_lines(evidence: list[dict[str, Any]], decided: dict[str, Any] | None = None) -> list[str]:
    """The "Why this card" list: the deciding comparison first, negations as "not ...", what the state lacks
    as "not recorded", a fact decided for every value of its missing inputs as such."""
    return [f"- {because_text(e, decided)}" for e in ordered_evidence(evidence)]


def _detail(rec: dict[str, Any], pack: dict[str, Any], decided: dict[str, Any] | None = None,
            citations: list[dict[str, Any]] | None = None) -> str:
    lines = [f"**{rec['title']}**", "", rec["detail"]]
    if rec.get("dose"):
        lines += ["", "**Dose**", ""] + [f"- {line.strip()}" for line in dose_lines(rec["dose"])]
    if rec["evidence"]:
        lines += ["", "**Why this card**", ""] + why_lines(rec["evidence"], decided)
    lines += ["", "**Sources**", ""]
    for c in citations if citations is not None else rec["citations"]:
        extra = ", ".join(str(x) for x in (c.get("publisher"), c.get("year")) if x)
        flag = "" if c["resolved"] else " (cited by the source but not in its reference list: unverified)"
        lines.append(f"- [{c['number']}] {c['title']}" + (f", {extra}" if extra else "") + flag)
    status = "" if rec["status"] == "approved" else f", status **{rec['status'].upper()}**"
    lines += ["", f"_Rule {rec['rule_id']} v{rec['rule_version']}{status}; pack {pack['name']} {pack['version']} "
                  f"(sha256 {pack['sha256'][:12]})._"]
    if pack.get("profile"):
        from pressor.engine.report import profile_lines

        lines += [f"_{line}_" for line in profile_lines(pack["profile"])]
    return "\n".join(lines)


def recommendation_card(rec: dict[str, Any], *, pack: dict[str, Any], hook_instance: str, base_url: str,
                        patient_id: str, drug_coding: dict[str, str] | None, ui_base_url: str | None = None,
                        drafts: Sequence[dict[str, Any]] = (), replacement: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card for one recommendation; ``drafts`` are the draft orders a ban is about, ``replacement``
    the norepinephrine order proposed instead of them."""
    card_id = card_uuid(hook_instance, rec["rule_id"], rec["rule_version"], pack["sha256"])
    card: dict[str, Any] = {
        "uuid": card_id,
        "summary": _short(rec["summary"]),
        "indicator": rec["severity"],
        "detail": _detail(rec, pack),
        "source": {
            "label": f"pressor: {pack['name']} {pack['version']}",
            "url": f"{base_url}/rules/{rec['rule_id']}",
            "topic": {"system": RULE_SYSTEM, "code": f"{rec['rule_id']}|{rec['rule_version']}", "display": rec["title"]},
        },
        "links": _links(rec, base_url, ui_base_url),
    }
    if rec["kind"] == "avoid":
        card["overrideReasons"] = [{"system": OVERRIDE_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS]
        suggestions = ban_suggestions(card_id, rec, list(drafts), replacement)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "at-most-one"
    order = medication_request(rec, patient_id, drug_coding)
    if order is not None:
        card["suggestions"] = [{
            "label": _short(f"Order {_order_label(order)}", 120),
            "uuid": stable_uuid(card_id, "order"),
            "isRecommended": True,
            "actions": [{"type": "create", "description": f"Create a draft order: {order['dosageInstruction'][0]['text']}",
                         "resource": order}],
        }]
        card["selectionBehavior"] = "at-most-one"
    return card


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
        "summary": _short(f"Data not supplied: {', '.join(conversion.missing)}; some recommendations could not be decided"
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
            on_order = _order_evidence(rec)
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
                detail = [f"**If {text}** (not yet known; ask first), then:", "", _detail({**c, "evidence": []}, pack)]
                cards.append({
                    "uuid": stable_uuid(hook_instance, "if", c["rule_id"], c["rule_version"], pack["sha256"]),
                    "summary": _short(f"If {condition[:1].lower() + condition[1:]}: {c['summary']}"),
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
        "summary": _short(f"Ask first: {ranked[0]['question']}"),
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
            if rec["kind"] != "avoid" or rec["rule_id"] in fired or not _order_evidence(rec) or draft is None:
                continue
            fired.add(rec["rule_id"])
            card = recommendation_card(rec, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                                       drug_coding=drug_codings.get(rec.get("drug") or ""), ui_base_url=ui_base_url,
                                       drafts=[draft], replacement=_norepinephrine_order(recs, patient_id, drug_codings))
            card["summary"] = _short(f"Unless {words}: {rec['summary']}")
            card["detail"] = (f"**Unless {words}.** The record does not say, and this order would then be first-line; "
                              "the ban below holds for it.\n\n" + card["detail"])
            cards.append(card)
    return cards


# --- the plan (issue 18): one card per plan item, one per shown ban, one question card ----------------------


def _signature(*parts: Any) -> str:
    """What makes a card "the same" as one shown before: its action and dose, not the values that fired it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _repeat(card: dict[str, Any], key: str, *parts: Any) -> dict[str, Any]:
    """Mark a card for the repeat window (service/repeats.py): ``key`` names the plan item, ban or question."""
    card["extension"] = {"pressor": {"repeat_key": key, "signature": _signature(*parts)}}
    if key.startswith("plan:"):
        card["extension"]["pressor"]["plan_decision"] = key.removeprefix("plan:")
    return card


def _ordered_union(lists: Iterable[Iterable[str]]) -> list[str]:
    out: list[str] = []
    for items in lists:
        out.extend(i for i in items if i not in out)
    return out


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
            return [_repeat(card, f"outside:{rec['rule_id']}", rec["rule_id"], rec["rule_version"])]
    versions = {c["rule_id"]: c["rule_version"] for data in datas for c in data.get("conditional", [])}
    items: dict[str, dict[str, Any]] = {}
    for data in datas:
        for item in data["plan"]["items"]:
            items.setdefault(item["decision"], item)
    cards = [_plan_item_card(item, recs, pack=pack, hook_instance=hook_instance, base_url=base_url,
                             patient_id=patient_id, drug_codings=drug_codings, ui_base_url=ui_base_url, decided=decided,
                             versions=versions)
             for item in items.values()]
    bans = _ordered_union(d["plan"]["bans"] for d in datas)
    # A ban on a draft order first: it is about what the clinician is doing now.
    bans.sort(key=lambda rid: (not banned.get(rid), SEVERITY_ORDER[recs[rid]["severity"]]))
    ban_cards = []
    for rid in bans:
        rec = recs[rid]
        card = recommendation_card(rec, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                                   drug_coding=drug_codings.get(rec.get("drug") or ""), ui_base_url=ui_base_url,
                                   drafts=banned.get(rid, []), replacement=replacement.get(rid))
        card["detail"] = _detail(rec, pack, decided)
        ban_cards.append(_repeat(card, f"ban:{rid}", rid, rec["rule_version"],
                                 sorted(map(str, map(_reference, banned.get(rid, []))))))
    on_order = [c for c, rid in zip(ban_cards, bans) if banned.get(rid)]
    others = []  # fired rules outside every decision (an implausible dose, a perfusion flag): first, never hidden
    for rid in _ordered_union(d["plan"].get("others", ()) for d in datas):
        rec = recs[rid]
        card = recommendation_card(rec, pack=pack, hook_instance=hook_instance, base_url=base_url, patient_id=patient_id,
                                   drug_coding=None, ui_base_url=ui_base_url)
        card.pop("suggestions", None), card.pop("selectionBehavior", None)
        card["detail"] = _detail(rec, pack, decided)
        others.append(_repeat(card, f"other:{rid}", rid, rec["rule_version"]))
    cards = on_order + others + cards + ban_cards[len(on_order):]
    asks = {a["fact"]: a for data in datas for a in data.get("ask_next", [])}
    questions = _ordered_union(d["plan"]["questions"] for d in datas)[:PLAN_QUESTIONS]
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
                "summary": _short(f"{item['title']}: if {first['if']}: {first['summary']}"),
                "indicator": "info", "detail": "\n".join(lines),
                "source": {"label": f"{label} (conditional)", "url": f"{base_url}/rules/{first['rule_id']}",
                           "topic": {"system": CONDITIONAL_SYSTEM, "code": f"{first['rule_id']}|{versions.get(first['rule_id'], '')}".rstrip("|"),
                                     "display": item["title"]}}}
        return _repeat(card, f"plan:{item['decision']}", "undecided", [u["rule_id"] for u in item["unless"]])
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
        "uuid": card_id, "summary": _short(summary), "indicator": rec["severity"], "detail": "\n".join(lines),
        "source": {"label": label, "url": f"{base_url}/rules/{rec['rule_id']}",
                   "topic": {"system": RULE_SYSTEM, "code": f"{rec['rule_id']}|{rec['rule_version']}", "display": rec["title"]}},
        "links": _links(rec, base_url, ui_base_url),
    }
    order = None
    if item["status"] == "firm":  # nothing is ordered on a condition nobody has checked
        for r in dosed:
            order = medication_request(r, patient_id, drug_codings.get(r["dose"].get("drug") or r.get("drug") or ""))
            if order is not None:
                break
    if order is not None:
        card["suggestions"] = [{
            "label": _short(f"Order {_order_label(order)}", 120), "uuid": stable_uuid(card_id, "order"), "isRecommended": True,
            "actions": [{"type": "create", "description": f"Create a draft order: {order['dosageInstruction'][0]['text']}",
                         "resource": order}]}]
        card["selectionBehavior"] = "at-most-one"
    doses = [dose_lines(r["dose"]) for r in dosed]
    return _repeat(card, f"plan:{item['decision']}", rec["rule_id"], rec["rule_version"], item["status"], doses,
                   [u["rule_id"] for u in item["unless"]])


def _plan_questions_card(asks: list[dict[str, Any]], *, pack: dict[str, Any], hook_instance: str,
                         base_url: str) -> dict[str, Any]:
    lines = ["Each answer changes the plan above (best first).", ""]
    lines += [f"{i}. **{a['question']}** Decides: {decides_text(a, limit=4)}" for i, a in enumerate(asks, 1)]
    card = {
        "uuid": stable_uuid(hook_instance, "ask-next", pack["sha256"]),
        "summary": _short(f"Ask: {asks[0]['question']}" + (f" (+{len(asks) - 1} more)" if len(asks) > 1 else "")),
        "indicator": "info",
        "detail": "\n".join(lines),
        "source": {"label": f"pressor: {pack['name']} {pack['version']}", "url": f"{base_url}/rules",
                   "topic": {"system": QUESTION_SYSTEM, "code": asks[0]["fact"], "display": asks[0]["question"]}},
    }
    return _repeat(card, "questions", [a["fact"] for a in asks])
