"""FHIR fetch (issue 12 item 1): what the prefetch lacks is fetched from the call's fhirServer, a real
FHIR server process (tests/ehr_server.py) over HTTP: bounded, paged, with the caller's token; 412
naming what is missing when required data cannot be had."""
from __future__ import annotations

import time
import uuid

import pytest

from pressor.engine.ehr.fhir import prefetch_templates
from tests.service_support import Ehr
from tests import test_cds_service
from tests.test_cds_service import PATIENT_VIEW, call, cards_by_rule, configured_server, hook_request, public_pem

card_schema = test_cds_service.card_schema  # the shared fixture
signing_key = test_cds_service.signing_key  # the shared fixture

TOKEN = "ehr-access-token-1"


@pytest.fixture(scope="module")
def ehr():
    e = Ehr("--token", TOKEN)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def fetching(tmp_path_factory, signing_key, ehr):
    srv = configured_server(tmp_path_factory.mktemp("fetch"), public_pem(signing_key),
                            fhir_fetch={"page_size": 2, "max_pages": 20, "timeout_s": 2})
    yield srv
    srv.stop()


def bare_request(patient: str = "sep-adult", *, server: str | None = None, token: str | None = TOKEN, prefetch=None) -> dict:
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": patient, "userId": "Practitioner/dr-lee"}}
    if server:
        body["fhirServer"] = server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "user/*.read", "subject": "pressor"}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


@pytest.fixture(autouse=True)
def clean(ehr):
    ehr.reset()


def searched(prefetch: dict, codes: str) -> dict:
    """The prefetch a FHIR server answers to the observation template: Observation.code among ``codes``."""
    wanted = set(codes.split(","))
    entries = [e for e in prefetch["observations"]["entry"]
               if any(f"{c['system']}|{c['code']}" in wanted for c in e["resource"]["code"]["coding"])]
    return {**prefetch, "observations": {**prefetch["observations"], "entry": entries}}


def test_no_prefetch_everything_fetched_with_the_callers_token(fetching, signing_key, ehr, card_schema):
    r = call(fetching, signing_key, PATIENT_VIEW, bare_request(server=ehr.fhir))
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    assert all("topic" in c["source"] for c in r.json()["cards"])  # nothing missing
    seen = ehr.requests("/fhir/")
    codes = ",".join({q["query"]["code"][0] for q in seen if q["path"] == "/fhir/Observation"})  # vitals, labs, weight
    # the same cards as when the same data is prefetched
    same = call(fetching, signing_key, PATIENT_VIEW, bare_request(prefetch=searched(hook_request("septic-adult")["prefetch"], codes)))
    assert same.status_code == 200
    assert sorted(cards_by_rule(r)) == sorted(cards_by_rule(same)) and "target.map-65" in cards_by_rule(r)
    assert {q["authorization"] for q in seen} == {f"Bearer {TOKEN}"}
    kinds = {q["path"].split("/")[2] for q in seen}
    assert kinds == {template.split("?")[0].split("/")[0] for template in prefetch_templates().values()}
    observations = [q for q in seen if q["path"] == "/fhir/Observation"]
    first = next(q for q in observations if "_offset" not in q["query"])
    assert first["query"]["_count"] == ["2"] and first["query"]["patient"] == ["sep-adult"]
    assert first["query"]["date"][0].startswith("ge")  # bounded by the longest look-back window
    assert len(observations) > 1 and any("_offset" in q["query"] for q in observations)  # next links followed
    notes = r.json()["extension"]["pressor"]["notes"]
    assert any(n.startswith("observations: fetched from fhirServer") for n in notes)


def test_partial_prefetch_fetches_only_what_is_lacking(fetching, signing_key, ehr):
    full = hook_request("septic-adult")["prefetch"]
    body = bare_request(server=ehr.fhir, prefetch={"patient": full["patient"], "observations": full["observations"]})
    r = call(fetching, signing_key, PATIENT_VIEW, body)
    assert r.status_code == 200, r.text
    assert "norepinephrine.start-emergency" in cards_by_rule(r)
    start = test_cds_service.plan_card(r, "plan-norepinephrine")  # the dose is folded into the plan's answer
    assert "72 kg" in start["detail"] and start["suggestions"]
    fetched = {q["path"].split("/")[2] for q in ehr.requests("/fhir/")}
    assert fetched and "Patient" not in fetched
    # labs and weight are their own templates (issue 22): lacking, they are fetched; the vital signs are not
    templates = prefetch_templates()
    searched_codes = {q["query"]["code"][0] for q in ehr.requests("/fhir/") if q["path"] == "/fhir/Observation"}
    assert searched_codes == {templates[k].split("code=")[1].split("&")[0] for k in ("labs", "weight")}


def test_412_names_what_is_missing_when_the_token_is_refused(fetching, signing_key, ehr):
    r = call(fetching, signing_key, PATIENT_VIEW, bare_request(server=ehr.fhir, token="wrong"))
    assert r.status_code == 412, r.text
    body = r.json()
    assert body["error"] == "precondition_failed"
    assert {m["prefetch"] for m in body["missing"]} == {"patient", "observations"}
    assert all("HTTP 401" in m["reason"] for m in body["missing"])
    assert "GET /fhir/Patient/{id} answered HTTP 401" in body["message"] and "sep-adult" not in r.text  # no identifier


def test_412_without_fhir_server_when_required_data_is_not_prefetched(fetching, signing_key):
    r = call(fetching, signing_key, PATIENT_VIEW, bare_request(server=None))
    assert r.status_code == 412
    assert "no fhirServer" in r.json()["message"]


@pytest.mark.parametrize("mode, reason", [(500, "HTTP 500"), ("slow", "timed out after 2 s"),
                                          ("not-json", "did not return JSON"), ("offsite-next", "another server")])
def test_412_when_a_required_search_fails(fetching, signing_key, ehr, mode, reason):
    ehr.control(Observation=mode)
    r = call(fetching, signing_key, PATIENT_VIEW, bare_request(server=ehr.fhir))
    assert r.status_code == 412, r.text
    (missing,) = r.json()["missing"]
    assert missing["prefetch"] == "observations" and reason in missing["reason"]
    assert "Observation?patient={{context.patientId}}" in missing["template"]


def test_an_optional_search_that_fails_leaves_its_facts_unknown_and_says_why(fetching, signing_key, ehr, card_schema):
    ehr.control(Condition=503)
    r = call(fetching, signing_key, PATIENT_VIEW, bare_request(server=ehr.fhir))
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    info = [c for c in r.json()["cards"] if "topic" not in c["source"]]
    assert len(info) == 1 and "conditions" in info[0]["summary"] and "HTTP 503" in info[0]["detail"]
    assert r.json()["extension"]["pressor"]["not_fetched"] == {"conditions": "GET /fhir/Condition answered HTTP 503"}


def test_page_limit_is_reported(tmp_path, signing_key, ehr):
    srv = configured_server(tmp_path, public_pem(signing_key), fhir_fetch={"page_size": 1, "max_pages": 2})
    try:
        r = call(srv, signing_key, PATIENT_VIEW, bare_request(server=ehr.fhir))
        assert r.status_code == 200, r.text
        assert any("more were not read" in n for n in r.json()["extension"]["pressor"]["notes"])
        vitals = prefetch_templates()["observations"].split("code=")[1].split("&")[0]
        assert len([q for q in ehr.requests("/fhir/Observation") if q["query"]["code"][0] == vitals]) == 2
        # and the cards say so in words (issue 22), not only the extension's notes
        info = [c for c in r.json()["cards"] if "topic" not in c["source"]]
        assert len(info) == 1 and "observations: only the newest 2 readings came" in info[0]["detail"]
    finally:
        srv.stop()


def test_fhir_server_outside_the_allowlist_is_not_fetched(tmp_path, signing_key, ehr):
    srv = configured_server(tmp_path, public_pem(signing_key), fhir_fetch={"servers": ["https://fhir.hospital.invalid/"]})
    try:
        r = call(srv, signing_key, PATIENT_VIEW, bare_request(server=ehr.fhir))
        assert r.status_code == 412 and "not among the servers" in r.json()["message"]
        assert ehr.requests("/fhir/") == []
    finally:
        srv.stop()


def test_templates_are_filled_from_the_context_or_not_at_all():
    from pressor.service.fhir_fetch import fill_template

    context = {"patientId": "p1", "userId": "Practitioner/dr-1", "encounterId": "e9", "selections": ["x"]}
    assert fill_template("Observation?patient={{context.patientId}}&encounter={{ context.encounterId }}", context) == (
        "Observation?patient=p1&encounter=e9")
    assert fill_template("PractitionerRole?practitioner={{userPractitionerId}}", context) == "PractitionerRole?practitioner=dr-1"
    assert fill_template("Patient/{{context.patientId}}/x/{{context.selections}}", context) is None  # not a primitive
    assert fill_template("Observation?patient={{context.nope}}", context) is None


def test_the_specifications_example_request_shape(fetching, signing_key, ehr, card_schema):
    # CDS Hooks 2.0's patient-view example (hookInstance, fhirServer, fhirAuthorization with scope and
    # subject, context with userId/patientId/encounterId, a prefetch key this service never asked for),
    # pointed at the local FHIR server and one of its patients
    body = {"hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "fhirServer": ehr.fhir, "hook": "patient-view",
            "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "user/Patient.read user/Observation.read", "subject": "cds-service4"},
            "context": {"userId": "Practitioner/example", "patientId": "cardio", "encounterId": "89284"},
            "prefetch": {"patientToGreet": {"resourceType": "Patient", "gender": "male", "birthDate": "1925-12-23",
                                            "id": "1288992", "active": True}}}
    r = call(fetching, signing_key, PATIENT_VIEW, body)
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    assert r.json()["cards"] and ehr.requests("/fhir/Patient/cardio")


def test_all_searches_are_bounded_by_one_deadline(tmp_path, signing_key, ehr):
    srv = configured_server(tmp_path, public_pem(signing_key), fhir_fetch={"timeout_s": 30, "deadline_s": 1,
                                                                           "required": ["patient"]})
    try:
        ehr.control(Condition="slow")  # 5 s, under the 30 s time-out but over the 1 s deadline
        started = time.monotonic()
        r = call(srv, signing_key, PATIENT_VIEW, bare_request(server=ehr.fhir))
        assert r.status_code == 200 and time.monotonic() - started < 4.5
        late = r.json()["extension"]["pressor"]["not_fetched"]
        # the slow search, and on a loaded machine perhaps another of the eight, for the same reason
        assert "conditions" in late and set(late.values()) == {"not fetched within fhir_fetch.deadline_s (1 s)"}
    finally:
        srv.stop()


def test_an_open_fhir_server_is_fetched_without_a_token(fetching, signing_key):
    open_ehr = Ehr()  # no token required, as the sandbox's open FHIR servers
    try:
        r = call(fetching, signing_key, PATIENT_VIEW, bare_request(server=open_ehr.fhir, token=None))
        assert r.status_code == 200, r.text
        seen = open_ehr.requests("/fhir/")
        assert len({q["path"] for q in seen}) == len({t.split("?")[0].split("/")[0] for t in prefetch_templates().values()}) and {q["authorization"] for q in seen} == {None}
    finally:
        open_ehr.stop()
