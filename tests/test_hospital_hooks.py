"""Issue 22: bans that work with the default configuration, and ``order-sign`` beside ``order-select``.

The server here runs the bundled FHIR mapping as shipped (no list trusted as complete), as a
hospital would start it before editing anything.
"""
from __future__ import annotations

import pytest

from pressor.engine.ehr.fhir import load_mapping

from .test_cds_service import ORDER_SELECT, call, cards_by_rule, configured_server, free_port, hook_request, public_pem, \
    card_schema, signing_key, token  # noqa: F401

ORDER_SIGN = "pressor-order-sign"


@pytest.fixture(scope="module")
def default_server(tmp_path_factory, signing_key):
    tmp = tmp_path_factory.mktemp("default")
    srv = configured_server(tmp, public_pem(signing_key), audit_db=str(tmp / "audit.db"),
                            fhir_mapping=str(load_mapping().file))
    yield srv
    srv.stop()


def ban_of(response, rule="avoid.dopamine-first-line"):
    assert response.status_code == 200, response.text
    return cards_by_rule(response).get(rule)


def test_a_dopamine_draft_in_septic_shock_is_banned_with_the_default_configuration(default_server, signing_key, card_schema):
    body = hook_request("dopamine-first-line", "order-select")
    r = call(default_server, signing_key, ORDER_SELECT, body)
    card_schema.validate(r.json())
    ban = ban_of(r)
    assert ban is not None and ban["indicator"] == "critical"
    assert ban["summary"].startswith("Unless norepinephrine (or another vasopressor) is already running: Do not use dopamine")
    kinds = [[a["type"] for a in s["actions"]] for s in ban["suggestions"]]
    # chronic hypertension and the fluids given are unknown here, so the engine gives no norepinephrine dose
    # yet: the card offers to remove the order, and replacing it once a dose is known (below).
    assert kinds == [["delete"]] and ban["suggestions"][0]["isRecommended"]
    topics = [c["source"].get("topic", {}).get("code", "") for c in r.json()["cards"]]
    assert sum(t.startswith("avoid.dopamine-first-line|") for t in topics) == 1, "no second, conditional card"

    # With a systolic BP of 65 mmHg the engine doses norepinephrine now: the card also offers the swap.
    bp = next(x["resource"] for x in body["prefetch"]["observations"]["entry"] if x["resource"]["id"] == "bp")
    bp["component"][0]["valueQuantity"]["value"] = 65
    bp["component"][1]["valueQuantity"]["value"] = 40
    mean = next(x["resource"] for x in body["prefetch"]["observations"]["entry"] if x["resource"]["id"] == "map")
    mean["valueQuantity"]["value"] = 48
    body["hookInstance"] = body["hookInstance"][:-4] + "beef"
    r = call(default_server, signing_key, ORDER_SELECT, body)
    card_schema.validate(r.json())
    ban = ban_of(r)
    kinds = [[a["type"] for a in s["actions"]] for s in ban["suggestions"]]
    assert ["delete"] in kinds and ["delete", "create"] in kinds, "delete, and replace with norepinephrine"
    replace = next(s for s in ban["suggestions"] if len(s["actions"]) == 2)
    created = replace["actions"][1]["resource"]
    assert created["medicationCodeableConcept"]["text"] == "norepinephrine" and replace["isRecommended"]
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert replace["actions"][0]["resourceId"] == f"MedicationRequest/{draft['id']}"


def test_with_medications_missing_too_the_ban_says_unless(default_server, signing_key):
    body = hook_request("dopamine-first-line", "order-select", drop=("medicationAdministrations", "medicationRequests"))
    ban = ban_of(call(default_server, signing_key, ORDER_SELECT, body))
    assert ban is not None and "Unless norepinephrine" in ban["summary"] and ban["suggestions"]


def test_a_known_add_on_is_not_banned(default_server, signing_key):
    body = hook_request("dopamine-first-line", "order-select")
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft["reasonCode"] = [{"coding": [{"system": load_mapping().purpose_system, "code": "add-on"}]}]
    assert ban_of(call(default_server, signing_key, ORDER_SELECT, body)) is None


def test_order_sign_checks_every_draft_order(default_server, signing_key, card_schema):
    discovery = default_server.client.get("/cds-services", headers={
        "Authorization": "Bearer " + token(signing_key, default_server.base + "/cds-services")}).json()
    sign = next(s for s in discovery["services"] if s["id"] == ORDER_SIGN)
    assert sign["hook"] == "order-sign" and sign["prefetch"]
    body = hook_request("dopamine-first-line", "order-select")
    body["hook"] = "order-sign"
    del body["context"]["selections"]  # order-sign has no selections: every draft is about to be signed
    r = call(default_server, signing_key, ORDER_SIGN, body)
    card_schema.validate(r.json())
    ban = ban_of(r)
    assert ban is not None and ban["suggestions"]
    wrong = call(default_server, signing_key, ORDER_SIGN, {**body, "hook": "order-select"})
    assert wrong.status_code == 400


# --- who and whom (issue 22, item 4) ------------------------------------------------------------


def _listed(audit_db, *args, env=None):
    import json
    import os

    from click.testing import CliRunner

    from pressor.cli.main import cli

    out = CliRunner().invoke(cli, ["audit", "list", "--audit-db", str(audit_db), "--json", *args],
                             env={**os.environ, **(env or {})})
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def test_an_auditor_lists_what_one_clinician_was_shown_about_one_patient(default_server, signing_key):
    calls = [("Practitioner/dr-ito", "dopamine-first-line"), ("Practitioner/dr-lee", "dopamine-first-line"),
             ("Practitioner/dr-ito", "septic-adult")]
    hooks = []
    for user, example in calls:
        body = hook_request(example, "order-select" if example == "dopamine-first-line" else "patient-view")
        body["context"]["userId"] = user
        service = ORDER_SELECT if example == "dopamine-first-line" else "pressor-patient-view"
        assert call(default_server, signing_key, service, body).status_code == 200
        hooks.append((user, body["context"]["patientId"], body["hookInstance"]))
    patient = hooks[0][1]
    shown = _listed(default_server.audit_db, "--user", "Practitioner/dr-ito", "--patient", patient)
    assert shown and {r["hook_instance"] for r in shown} == {hooks[0][2]}, [(r["user"], r.get("patient")) for r in shown]
    assert all(r["patient"] == f"Patient/{patient}" and r["user"].startswith("Practitioner/dr-ito via ") for r in shown)
    about = {r["hook_instance"] for r in _listed(default_server.audit_db, "--patient", patient)}
    assert {hooks[0][2], hooks[1][2]} <= about and hooks[2][2] not in about  # both clinicians; not the other patient


@pytest.mark.slow
def test_a_site_that_keeps_no_identifiers_stores_a_keyed_hash(tmp_path, signing_key):
    key = tmp_path / "patient.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    srv = configured_server(tmp_path, public_pem(signing_key), audit_db=str(tmp_path / "audit.db"),
                            audit_patient="keyed-hash", audit_patient_key_file=str(key))
    try:
        body = hook_request("septic-adult")
        assert call(srv, signing_key, "pressor-patient-view", body).status_code == 200
    finally:
        srv.stop()
    pid = body["context"]["patientId"]
    stored = _listed(tmp_path / "audit.db")
    assert stored and stored[0]["patient"].startswith("hmac-sha256:") and pid not in stored[0]["patient"]
    assert _listed(tmp_path / "audit.db", "--patient", pid) == []  # without the key nobody can find them
    found = _listed(tmp_path / "audit.db", "--patient", pid, env={"PRESSOR_AUDIT_PATIENT_KEY": "0123456789abcdef0123456789abcdef"})
    assert [r["id"] for r in found] == [r["id"] for r in stored]


# --- audit export as FHIR AuditEvent (issue 22, item 5) ------------------------------------------


def test_audit_export_as_fhir_auditevent(default_server, signing_key, tmp_path):
    import json
    import os

    from click.testing import CliRunner
    from fhir.resources.R4B.auditevent import AuditEvent  # an independent R4 model (pydantic)

    from pressor.cli.main import cli

    body = hook_request("septic-adult")
    body["context"]["userId"] = "Practitioner/dr-ito"
    assert call(default_server, signing_key, "pressor-patient-view", body).status_code == 200
    out = tmp_path / "events.ndjson"
    done = CliRunner().invoke(cli, ["audit", "export", "--format", "fhir-auditevent", "--output", str(out),
                                    "--audit-db", str(default_server.audit_db)], env=dict(os.environ))
    assert done.exit_code == 0, done.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    listed = _listed(default_server.audit_db)
    assert len(events) == len(listed) > 0
    for event in events:
        AuditEvent.model_validate(event)
    last = next(e for e in events if e["id"] == listed[-1]["id"])
    assert last["agent"][0]["who"] == {"reference": "Practitioner/dr-ito"} and last["agent"][0]["requestor"] is True
    assert last["entity"][0]["what"] == {"reference": f"Patient/{body['context']['patientId']}"}
    details = {d["type"]: d["valueString"] for d in last["entity"][1]["detail"]}
    assert details["record_hash"] == listed[-1]["record_hash"] and details["hookInstance"] == body["hookInstance"]
    refused = CliRunner().invoke(cli, ["audit", "export", "--format", "fhir-auditevent", "--kind", "feedback",
                                       "--audit-db", str(default_server.audit_db)])
    assert refused.exit_code == 2


# --- metrics (issue 22, item 5) -----------------------------------------------------------------


@pytest.mark.slow
def test_prometheus_metrics_are_off_by_default_and_count_calls_cards_and_errors(default_server, signing_key, tmp_path,
                                                                             monkeypatch):
    assert default_server.client.get("/metrics").status_code == 404  # off by default
    monkeypatch.setenv("PRESSOR_TEST_METRICS_TOKEN", "scrape-me")
    srv = configured_server(tmp_path, public_pem(signing_key), audit_db=str(tmp_path / "audit.db"),
                            metrics={"enabled": True, "bearer_token_env": "PRESSOR_TEST_METRICS_TOKEN"})
    try:
        r = call(srv, signing_key, "pressor-patient-view", hook_request("septic-adult"))
        assert r.status_code == 200
        cards = r.json()["cards"]
        assert call(srv, signing_key, "pressor-patient-view", b"{not json").status_code == 400
        assert srv.client.get("/metrics").status_code == 401
        text = srv.client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).text
    finally:
        srv.stop()
    assert 'pressor_hook_calls_total{service="pressor-patient-view",status="200"} 1.0' in text
    assert 'pressor_hook_calls_total{service="pressor-patient-view",status="400"} 1.0' in text
    assert 'pressor_errors_total{kind="http_4xx",service="pressor-patient-view"} 1.0' in text
    assert 'pressor_hook_latency_seconds_count{service="pressor-patient-view"} 2.0' in text
    critical = sum(1 for c in cards if c["indicator"] == "critical" and c["source"].get("topic", {}).get("system") == "urn:pressor:rule")
    assert f'pressor_cards_total{{indicator="critical",kind="rule",service="pressor-patient-view"}} {float(critical)}' in text
    assert "Patient" not in text and "sep-adult" not in text  # no patient data


def test_a_cards_link_opens_a_page_for_a_browser_and_json_for_a_program(default_server):
    page = default_server.client.get("/rules/avoid.dopamine-first-line", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h1>Do not use dopamine first-line</h1>" in page.text and "<script" not in page.text
    data = default_server.client.get("/rules/avoid.dopamine-first-line", headers={"Accept": "application/json"})
    assert data.json()["id"] == "avoid.dopamine-first-line"
