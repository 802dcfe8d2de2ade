"""The parts CDS Hooks cards are made of: topic systems, summaries, links, draft MedicationRequests, ban
suggestions, the repeat-window mark, and the card of one recommendation (:mod:`.cards` and :mod:`.plan_cards`
put them together)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Sequence

from pressor.engine.audit.card_ids import card_uuid, stable_uuid
from pressor.engine.evaluation.units import parse_unit
from pressor.engine.report import because_text, dose_lines, ordered_evidence, quantity, weight_phrase

#: Topic system of the cards of rules that fired.
RULE_SYSTEM = "urn:pressor:rule"
#: Topic system of the one card of a patient outside this protocol (a scope rule fired).
OUTSIDE_SYSTEM = "urn:pressor:outside-protocol"
#: Topic systems of the cards for missing facts: advice on a condition, and the questions to ask.
CONDITIONAL_SYSTEM = "urn:pressor:rule-conditional"
QUESTION_SYSTEM = "urn:pressor:ask-next"
#: Topic system of the card for a reading the pack set aside as an artefact (a MAP outside DBP-SBP).
SET_ASIDE_SYSTEM = "urn:pressor:measurement-set-aside"
OVERRIDE_SYSTEM = "urn:pressor:override-reason"
OVERRIDE_REASONS = (
    ("clinical-judgement", "Clinical judgement: the benefit outweighs the risk for this patient"),
    ("data-incorrect", "The patient data behind this card is wrong or out of date"),
    ("already-addressed", "Already addressed"),
)
_UCUM_AMOUNT = {"mcg": "ug", "mg": "mg", "g": "g", "units": "[USP'U]", "mL": "mL", "L": "L"}
_UCUM_TIME = {"min": "min", "h": "h", "day": "d"}
SUMMARY_MAX = 139  # CDS Hooks: "<140-character summary"



def dict_of(result: Any) -> dict[str, Any]:
    """``result.to_dict()``, made once per result and kept with it: the cards and the audit record of a call share
    one serialisation (nothing here changes the dictionary)."""
    found = result.__dict__.get("_as_dict")
    if found is None:
        found = result.to_dict()
        object.__setattr__(result, "_as_dict", found)
    return found

def short(text: str, limit: int = SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def ucum(unit_text: str) -> str | None:
    """``mcg/min`` -> ``ug/min``; None if the unit is not amount/time."""
    unit = parse_unit(unit_text)
    if unit.per_time is None or unit.per_kg:
        return None
    return f"{_UCUM_AMOUNT[unit.amount]}/{_UCUM_TIME[unit.per_time]}"


def ucum_quantity(value: float, unit_text: str, code: str) -> dict[str, Any]:
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
    code = ucum(q["unit"])
    if code is None:
        return None
    rate: dict[str, Any]
    if "low" in q:
        rate = {"rateRange": {"low": ucum_quantity(q["low"], q["unit"], code), "high": ucum_quantity(q["high"], q["unit"], code)}}
    else:
        rate = {"rateQuantity": ucum_quantity(q["value"], q["unit"], code)}
    text = f"{dose['drug']} {quantity(dose['range'])}"
    if authored.per_kg:
        text += f" = {quantity(q)} for {weight_phrase(dose['for_weight'])}"
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


def links(rec: dict[str, Any], base_url: str, ui_base_url: str | None) -> list[dict[str, Any]]:
    links = [{"label": short(f"Rule {rec['rule_id']} v{rec['rule_version']}: text, citations, history", 120),
              "url": f"{base_url}/rules/{rec['rule_id']}", "type": "absolute"}]
    if ui_base_url:
        links.append({"label": "Open this rule in the pressor web app", "url": f"{ui_base_url}/rules/{rec['rule_id']}",
                      "type": "absolute"})
    return links


def order_evidence(rec: dict[str, Any]) -> dict[str, Any]:
    """The ``order.*`` facts a recommendation's firing rested on (empty if it is not about the draft order)."""
    return {e["fact"]: e["value"] for e in rec.get("evidence", []) if str(e.get("fact", "")).startswith("order.")}


def reference(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) and rid else None


def ban_suggestions(card_id: str, rec: dict[str, Any], drafts: list[dict[str, Any]],
                    replacement: dict[str, Any] | None) -> list[dict[str, Any]]:
    """For a ban on draft orders: delete them; and, given ``replacement``, delete them and create it instead."""
    refs = [r for r in (reference(d) for d in drafts) if r]
    if not refs:
        return []
    drug = rec.get("drug") or "this"
    deletes = [{"type": "delete", "description": f"Delete the draft order {ref}", "resourceId": ref} for ref in refs]
    out = [{"label": short(f"Remove the draft {drug} order", 120), "uuid": stable_uuid(card_id, "delete", *refs),
            "isRecommended": replacement is None, "actions": deletes}]
    if replacement is not None:
        text = replacement["dosageInstruction"][0]["text"]
        out.append({"label": short(f"Replace with {order_label(replacement)}", 120),
                    "uuid": stable_uuid(card_id, "replace", *refs), "isRecommended": True,
                    "actions": deletes + [{"type": "create", "description": f"Create a draft order: {text}",
                                           "resource": replacement}]})
    return out


def order_label(order: dict[str, Any]) -> str:
    rate = order["dosageInstruction"][0]["doseAndRate"][0]
    q = rate.get("rateQuantity") or rate["rateRange"]
    at = f"{q['value']:g}" if "value" in q else f"{q['low']['value']:g}-{q['high']['value']:g}"
    return f"{order['medicationCodeableConcept']['text']} {at} {q.get('unit') or q['low']['unit']} (draft)"


def why_lines(evidence: list[dict[str, Any]], decided: dict[str, Any] | None = None) -> list[str]:
    """The "Why this card" list: the deciding comparison first, negations as "not ...", what the state lacks
    as "not recorded", a fact decided for every value of its missing inputs as such."""
    return [f"- {because_text(e, decided)}" for e in ordered_evidence(evidence)]


def card_detail(rec: dict[str, Any], pack: dict[str, Any], decided: dict[str, Any] | None = None,
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
        "summary": short(rec["summary"]),
        "indicator": rec["severity"],
        "detail": card_detail(rec, pack),
        "source": {
            "label": f"pressor: {pack['name']} {pack['version']}",
            "url": f"{base_url}/rules/{rec['rule_id']}",
            "topic": {"system": RULE_SYSTEM, "code": f"{rec['rule_id']}|{rec['rule_version']}", "display": rec["title"]},
        },
        "links": links(rec, base_url, ui_base_url),
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
            "label": short(f"Order {order_label(order)}", 120),
            "uuid": stable_uuid(card_id, "order"),
            "isRecommended": True,
            "actions": [{"type": "create", "description": f"Create a draft order: {order['dosageInstruction'][0]['text']}",
                         "resource": order}],
        }]
        card["selectionBehavior"] = "at-most-one"
    return card


def signature(*parts: Any) -> str:
    """What makes a card "the same" as one shown before: its action and dose, not the values that fired it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def repeat(card: dict[str, Any], key: str, *parts: Any) -> dict[str, Any]:
    """Mark a card for the repeat window (service/repeats.py): ``key`` names the plan item, ban or question."""
    card["extension"] = {"pressor": {"repeat_key": key, "signature": signature(*parts)}}
    if key.startswith("plan:"):
        card["extension"]["pressor"]["plan_decision"] = key.removeprefix("plan:")
    return card


def ordered_union(lists: Iterable[Iterable[str]]) -> list[str]:
    out: list[str] = []
    for items in lists:
        out.extend(i for i in items if i not in out)
    return out
