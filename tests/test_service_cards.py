"""Cards (issue 12 item 4): selections honoured; a ban on a draft order offers to delete it and, for a
first-line vasopressor other than norepinephrine, to replace it with norepinephrine at the rate
computed for this patient; every card links to its rule's page (and to the web app when configured)."""
from __future__ import annotations

import copy

import pytest

from tests import test_cds_service
from tests.test_cds_service import ORDER_SELECT, call, cards_by_rule, configured_server, hook_request, public_pem

card_schema = test_cds_service.card_schema  # the shared fixture
signing_key = test_cds_service.signing_key  # the shared fixture

UI = "https://pressor.hospital.invalid/ui"
PHENYLEPHRINE = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "8163", "display": "phenylephrine"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, signing_key):
    srv = configured_server(tmp_path_factory.mktemp("cards"), public_pem(signing_key), ui_base_url=UI)
    yield srv
    srv.stop()


def two_drafts(map_mmhg: float | None = None) -> dict:
    """The dopamine example with a second draft order (phenylephrine); optionally its MAP changed."""
    body = hook_request("dopamine-first-line", "order-select")
    dopamine = body["context"]["draftOrders"]["entry"][0]["resource"]
    phenyl = copy.deepcopy(dopamine)
    phenyl["id"] = "phenylephrine-order"
    phenyl["medicationCodeableConcept"] = {"coding": [PHENYLEPHRINE]}
    body["context"]["draftOrders"]["entry"].append({"resource": phenyl})
    body["context"]["selections"] = ["MedicationRequest/dopamine-order", "MedicationRequest/phenylephrine-order"]
    if map_mmhg is not None:  # and the blood-pressure panel to match (MAP ~ (SBP + 2 DBP) / 3)
        for e in body["prefetch"]["observations"]["entry"]:
            res = e["resource"]
            if res["code"]["coding"][0]["code"] == "8478-0":
                res["valueQuantity"]["value"] = map_mmhg
            for comp in res.get("component", []):
                code = comp["code"]["coding"][0]["code"]
                comp["valueQuantity"]["value"] = {"8480-6": map_mmhg + 22, "8462-4": map_mmhg - 11}.get(code, comp["valueQuantity"]["value"])
    return body


def test_only_selected_draft_orders_are_checked(server, signing_key, card_schema):
    body = two_drafts()
    body["context"]["selections"] = ["MedicationRequest/phenylephrine-order"]
    r = call(server, signing_key, ORDER_SELECT, body)
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    assert "avoid.phenylephrine-first-line" in cards_by_rule(r) and "avoid.dopamine-first-line" not in cards_by_rule(r)
    body["context"]["selections"] = []
    bans = {k for k in cards_by_rule(call(server, signing_key, ORDER_SELECT, body)) if k.endswith("-first-line")}
    assert bans == set()
    del body["context"]["selections"]  # absent: every draft order
    bans = {k for k in cards_by_rule(call(server, signing_key, ORDER_SELECT, body)) if k.endswith("-first-line")}
    assert bans == {"avoid.dopamine-first-line", "avoid.phenylephrine-first-line"}


def test_a_problem_in_the_draft_orders_points_at_it_in_the_request(server, signing_key):
    body = two_drafts()
    body["context"]["draftOrders"]["entry"].insert(1, {"fullUrl": "urn:uuid:no-resource"})
    body["context"]["selections"] = ["MedicationRequest/phenylephrine-order"]  # the dopamine order is dropped
    r = call(server, signing_key, ORDER_SELECT, body)
    assert r.status_code == 400 and r.json()["problems"][0]["pointer"] == "/context/draftOrders/entry/1"


def test_a_ban_offers_to_delete_the_draft_order(server, signing_key, card_schema):
    r = call(server, signing_key, ORDER_SELECT, two_drafts())
    card_schema.validate(r.json())
    ban = cards_by_rule(r)["avoid.dopamine-first-line"]
    (delete,) = ban["suggestions"]  # no norepinephrine dose was computed (fluids unknown): nothing to replace with
    assert delete["label"] == "Remove the draft dopamine order" and delete["isRecommended"] is True
    assert delete["actions"] == [{"type": "delete", "description": "Delete the draft order MedicationRequest/dopamine-order",
                                  "resourceId": "MedicationRequest/dopamine-order"}]
    assert ban["selectionBehavior"] == "at-most-one" and "overrideReasons" in ban
    phenyl = cards_by_rule(r)["avoid.phenylephrine-first-line"]
    assert phenyl["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/phenylephrine-order"
    others = [c for rid, c in cards_by_rule(r).items() if rid not in ("avoid.dopamine-first-line", "avoid.phenylephrine-first-line")]
    assert not any(a["type"] == "delete" for c in others for s in c.get("suggestions", []) for a in s["actions"])


def test_a_first_line_ban_offers_norepinephrine_at_the_computed_rate(server, signing_key, card_schema):
    r = call(server, signing_key, ORDER_SELECT, two_drafts(map_mmhg=45))  # profound hypotension: start norepinephrine
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    cards = cards_by_rule(r)
    for rule, draft in (("avoid.dopamine-first-line", "dopamine-order"), ("avoid.phenylephrine-first-line", "phenylephrine-order")):
        delete, replace = cards[rule]["suggestions"]
        assert replace["isRecommended"] is True and delete["isRecommended"] is False
        assert replace["label"] == "Replace with norepinephrine 1.8-4.5 mcg/min (draft)"  # 0.02-0.05 mcg/kg/min x 90 kg
        removing, creating = replace["actions"]
        assert removing == {"type": "delete", "description": f"Delete the draft order MedicationRequest/{draft}",
                            "resourceId": f"MedicationRequest/{draft}"}
        order = creating["resource"]
        assert creating["type"] == "create" and order["medicationCodeableConcept"]["coding"][0]["code"] == "7512"
        rate = order["dosageInstruction"][0]["doseAndRate"][0]["rateRange"]
        assert (rate["low"]["value"], rate["high"]["value"], rate["low"]["code"]) == (1.8, 4.5, "ug/min")
        assert order["subject"] == {"reference": "Patient/dopa"}
    dose = test_cds_service.plan_card(r, "plan-norepinephrine")["suggestions"][0]["actions"][0]["resource"]
    assert dose["dosageInstruction"] == order["dosageInstruction"]  # the very order the plan's card proposes


def test_every_recommendation_card_links_to_its_rule_and_the_web_app(server, signing_key):
    r = call(server, signing_key, ORDER_SELECT, two_drafts())
    for rule, card in cards_by_rule(r).items():
        urls = [link["url"] for link in card["links"]]
        assert urls == [f"{server.base}/rules/{rule}", f"{UI}/rules/{rule}"]
        assert {link["type"] for link in card["links"]} == {"absolute"}
    assert server.client.get(card["links"][0]["url"]).status_code == 200


def test_why_this_card_says_not_and_not_recorded():
    """Issue 18, item 6: the cards said "because age < 18: 68" and "active bleeding = no" when nothing was recorded."""
    from datetime import datetime, timezone
    from pathlib import Path

    import yaml

    from pressor.engine.evaluation.evaluate import evaluate
    from pressor.engine.evaluation.pack import load_pack
    from pressor.service.plan_cards import plan_cards

    state = yaml.safe_load((Path(__file__).resolve().parent.parent / "examples" / "septic-shock-adult.yaml").read_text())
    result = evaluate(load_pack(), state, now=datetime(2026, 11, 24, 12, tzinfo=timezone.utc))
    cards = plan_cards([result], pack=result.pack, hook_instance="h", base_url="http://x", patient_id="p", drug_codings={})
    why = [line for c in cards for line in c.get("detail", "").split("**Why this card**")[1:][0:1]
           for line in line.split("**")[0].splitlines() if line.startswith("- ")]
    assert why
    assert "- not patient.age_years < 18 (value 68)" in why and "- patient.age_years < 18 (value: 68)" not in why
    assert all(" is unknown" not in line and "(value: false)" not in line for line in why)
    assert any(line.endswith("findings.active_bleeding not recorded") for line in why)
    # the deciding comparison first: the norepinephrine card opens with the blood pressure that decided it
    start = next(c for c in cards if c["extension"]["pressor"].get("plan_decision") == "plan-norepinephrine")
    first = start["detail"].split("**Why this card**\n\n")[1].splitlines()[0]
    assert first.startswith("- vitals.sbp_mmhg < 70"), first


def test_cards_follow_the_plan_one_per_item_and_one_question_card():
    from datetime import datetime, timezone

    from pressor.engine.evaluation.evaluate import evaluate
    from pressor.engine.evaluation.pack import load_pack
    from pressor.service.card_parts import QUESTION_SYSTEM
    from pressor.service.plan_cards import plan_cards

    state = {"patient": {"age_years": 60, "weight_kg": 70}, "vitals": {"map_mmhg": 55, "sbp_mmhg": 80, "dbp_mmhg": 42},
             "shock": {"type": "septic"}, "fluids": {"crystalloid_ml_kg": 10}}
    result = evaluate(load_pack(), state, now=datetime(2026, 11, 24, 12, tzinfo=timezone.utc))
    cards = plan_cards([result], pack=result.pack, hook_instance="h", base_url="http://x", patient_id="p", drug_codings={})
    plan = result.plan.to_dict()
    decisions = [c["extension"]["pressor"].get("plan_decision") for c in cards]
    assert [d for d in decisions if d] == [i["decision"] for i in plan["items"]]  # one card per plan item, in order
    assert sum(c["source"].get("topic", {}).get("system") == QUESTION_SYSTEM for c in cards) == (1 if plan["questions"] else 0)
    assert len(cards) == len(plan["items"]) + len(plan["bans"]) + (1 if plan["questions"] else 0)
    targets = [c for c in cards if c["source"].get("topic", {}).get("code", "").startswith("target.map-")]
    assert len(targets) <= 1
