"""``pressor serve`` as a real subprocess on 127.0.0.1, called over HTTP with httpx."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from importlib import resources

from pressor.engine.evaluation.pack import load_pack
from pathlib import Path

import httpx
import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pressor.service.card_parts import RULE_SYSTEM
from pressor.service.cards import card_uuid
from pressor.engine.audit import AuditLog

FHIR = Path(__file__).resolve().parent.parent / "examples" / "fhir"
PRESSOR = str(Path(sys.executable).with_name("pressor"))
ISS = "https://ehr.test.invalid"
KID = "test-key-1"
PATIENT_VIEW = "pressor-patient-view"
ORDER_SELECT = "pressor-order-select"
EXAMPLES_NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)  # the examples are written as seen at this time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``pressor serve`` and what a test needs to call it."""

    def __init__(self, args: list[str], port: int, tmp: Path, audit_db: Path | str | None = None) -> None:
        self.port = port
        # the audit log the server falls back to when its config names none: never the user's
        self.audit_db = audit_db or tmp / "audit.db"
        self.base = f"http://127.0.0.1:{port}"
        self.stderr_path = tmp / f"serve-{port}.err"
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([PRESSOR, "serve", "--port", str(port), *args], stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                              "PRESSOR_AUDIT_DB": str(self.audit_db)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pressor serve exited: {self.stderr_path.read_text()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("pressor serve did not answer within 30 s")
        self.client = httpx.Client(base_url=self.base, timeout=10)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.stderr.close()


@pytest.fixture(scope="session")
def signing_key():
    """An ES384 key pair made for this run; the public half is configured as a trusted issuer."""
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory, signing_key):
    """The service as configured for one instance (a SQLite audit log, the replay cache in the process)
    and as behind a load balancer (audit log and token replay cache in one PostgreSQL database)."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    pem = public_pem(signing_key)
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_server").new_database()
        srv = configured_server(tmp, pem, audit_db=url, replay_cache=url, port=port)
    else:
        srv = configured_server(tmp, pem, audit_db=str(tmp / "log" / "audit.db"), port=port)
    yield srv
    srv.stop()


def public_pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


TRUSTED_LISTS = ["infusions.norepinephrine_mcg_kg_min", "infusions.vasopressin_units_min", "infusions.epinephrine_mcg_kg_min",
                 "infusions.dobutamine_mcg_kg_min", "infusions.dopamine_mcg_kg_min", "infusions.phenylephrine_mcg_kg_min",
                 "patient.chronic_hypertension"]


def site_mapping(tmp: Path) -> Path:
    """The bundled FHIR mapping as a site whose prefetched medication and condition lists are complete would set it."""
    from pressor.engine.ehr.fhir import load_mapping

    text = Path(load_mapping().file).read_text().replace("trusted_complete: []", f"trusted_complete: [{', '.join(TRUSTED_LISTS)}]")
    path = tmp / "site-mapping.yaml"
    path.write_text(text)
    return path


def configured_server(tmp: Path, pem: str, *, port: int | None = None, **config) -> Server:
    """A server trusting the test issuer (and ``issuers_extra``; a site mapping trusting its lists), with ``config`` added."""
    port = port or free_port()
    extra = config.pop("issuers_extra", [])
    config = {"base_url": f"http://127.0.0.1:{port}", "issuers": [{"iss": ISS, "keys": [{"kid": KID, "pem": pem}]}, *extra],
              "fhir_mapping": str(site_mapping(tmp)), **config}
    (tmp / f"serve-{port}.json").write_text(json.dumps(config))
    return Server(["--config", str(tmp / f"serve-{port}.json")], port, tmp,
                  audit_db=(config["audit_db"] if "://" in config["audit_db"] else Path(config["audit_db"]))
                  if "audit_db" in config else None)


@pytest.fixture(scope="module")
def insecure_server(tmp_path_factory):
    srv = Server(["--insecure-no-auth"], free_port(), tmp_path_factory.mktemp("insecure"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def card_schema():
    schema = json.loads(resources.files("pressor.schemas").joinpath("cds-hooks-card.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def token(key, audience: str, **override) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": audience, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())}
    claims.update({k: v for k, v in override.items() if not k.startswith("_")})
    return jwt.encode(claims, override.get("_key", key), algorithm=override.get("_alg", "ES384"),
                      headers={"kid": override.get("_kid", KID), "typ": "JWT"})


def auth(server, key, path: str, **override) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(key, server.base + path, **override)}"}


def shifted(data, delta: timedelta):
    """The example, its date-times moved by ``delta``: the server reads the wall clock, the examples are pinned."""
    if isinstance(data, dict):
        return {k: shifted(v, delta) for k, v in data.items()}
    if isinstance(data, list):
        return [shifted(v, delta) for v in data]
    if isinstance(data, str) and len(data) > 10 and data[10:11] == "T":
        moved = datetime.fromisoformat(data.replace("Z", "+00:00")) + delta
        return moved.isoformat().replace("+00:00", "Z")
    return data


def hook_request(name: str, hook: str = "patient-view", drop: tuple[str, ...] = ()) -> dict:
    """A CDS Hooks request whose prefetch is filled from an example bundle (draft orders go to context)."""
    example = json.loads((FHIR / f"{name}.json").read_text())
    res = [e["resource"] for e in shifted(example, datetime.now(timezone.utc) - EXAMPLES_NOW)["entry"]]

    def bundle(rs):
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in rs]} if rs else None

    patient = next(r for r in res if r["resourceType"] == "Patient")
    prefetch = {
        "patient": patient,
        "observations": bundle([r for r in res if r["resourceType"] == "Observation"]),
        "conditions": bundle([r for r in res if r["resourceType"] == "Condition"]),
        "medicationAdministrations": bundle([r for r in res if r["resourceType"] == "MedicationAdministration"]),
        "medicationRequests": bundle([r for r in res if r["resourceType"] == "MedicationRequest" and r["status"] != "draft"]),
        "procedures": bundle([r for r in res if r["resourceType"] == "Procedure"]),
    }
    context = {"patientId": patient["id"], "userId": "Practitioner/test"}
    drafts = [r for r in res if r["resourceType"] == "MedicationRequest" and r["status"] == "draft"]
    if hook == "order-select" and drafts:
        context["draftOrders"] = bundle(drafts)
        context["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": {k: v for k, v in prefetch.items() if k not in drop}}


def call(server, key, service: str, body, *, show_repeats: bool = True, **override) -> httpx.Response:
    """POST a hook call. ``show_repeats`` (the default in these tests, which call for the same patients again and
    again) sends the request extension that turns the repeat window off for this call."""
    path = f"/cds-services/{service}"
    if show_repeats and isinstance(body, dict):
        body = {**body, "extension": {**body.get("extension", {}), "pressor": {"show_repeats": True}}}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return server.client.post(path, content=content, headers={**auth(server, key, path, **override),
                                                               "Content-Type": "application/json"})


def cards_by_rule(response: httpx.Response) -> dict[str, dict]:
    return {c["source"]["topic"]["code"].split("|")[0]: c for c in response.json()["cards"] if firm(c)}


def plan_card(response: httpx.Response, decision: str) -> dict:
    """The card of one plan item (issue 18): its decision is in the card's pressor extension."""
    (card,) = [c for c in response.json()["cards"]
               if c.get("extension", {}).get("pressor", {}).get("plan_decision") == decision]
    return card


def assert_one_plan(response: httpx.Response) -> None:
    """The plan contract of the cards: one card per plan item, at most one question card, one MAP target."""
    cards = response.json()["cards"]
    decisions = [c["extension"]["pressor"]["plan_decision"] for c in cards
                 if "plan_decision" in c.get("extension", {}).get("pressor", {})]
    assert len(decisions) == len(set(decisions))
    assert sum(c["source"].get("topic", {}).get("system") == "urn:pressor:ask-next" for c in cards) <= 1
    targets = [c for c in cards if c["source"].get("topic", {}).get("code", "").startswith("target.map-")]
    assert len(targets) <= 1


def firm(card: dict) -> bool:
    """A card for a rule that fired (not conditional advice, not the questions card)."""
    return card["source"].get("topic", {}).get("system") == RULE_SYSTEM


# --- discovery and hooks --------------------------------------------------------------


def test_discovery_lists_both_services_with_prefetch(server, signing_key):
    r = server.client.get("/cds-services", headers=auth(server, signing_key, "/cds-services"))
    assert r.status_code == 200
    services = {s["id"]: s for s in r.json()["services"]}
    assert services[PATIENT_VIEW]["hook"] == "patient-view" and services[ORDER_SELECT]["hook"] == "order-select"
    prefetch = services[PATIENT_VIEW]["prefetch"]
    assert set(prefetch) == {"patient", "observations", "labs", "weight", "conditions", "medicationAdministrations",
                             "medicationRequests", "procedures"}
    # observations newest first and bounded (issue 22): weight and labs are searches of their own
    assert all("&_sort=-date&_count=" in prefetch[k] for k in ("observations", "labs", "weight"))
    assert "http://loinc.org|29463-7" in prefetch["weight"] and "29463-7" not in prefetch["observations"]
    assert "http://loinc.org|8478-0" in prefetch["observations"] and "{{context.patientId}}" in prefetch["patient"]


def test_patient_view_septic_adult(server, signing_key, card_schema):
    r = call(server, signing_key, PATIENT_VIEW, hook_request("septic-adult"))
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    cards = cards_by_rule(r)
    start = cards["norepinephrine.start-emergency"]
    assert start["indicator"] == "critical" and r.json()["cards"][0] is not None
    assert start["source"]["url"] == f"{server.base}/rules/norepinephrine.start-emergency"
    assert start["source"]["topic"]["code"] == f"norepinephrine.start-emergency|{load_pack().rule('norepinephrine.start-emergency').version}"
    dose = plan_card(r, "plan-norepinephrine")  # the start, with its dose, pump rate, bag, line and monitoring folded in
    assert dose == start
    order = dose["suggestions"][0]["actions"][0]["resource"]
    rate = order["dosageInstruction"][0]["doseAndRate"][0]["rateRange"]
    assert (rate["low"]["value"], rate["high"]["value"], rate["low"]["code"]) == (1.44, 3.6, "ug/min")  # 0.02-0.05 x 72 kg
    assert order["medicationCodeableConcept"]["coding"][0]["code"] == "7512"
    assert dose["suggestions"][0]["label"] == "Order norepinephrine 1.44-3.6 mcg/min (draft)"
    assert "72 kg" in dose["detail"] and "mL/h" in dose["detail"]
    assert "norepinephrine.dose-adult" not in cards  # a supporting item is no card of its own
    assert_one_plan(r)
    assert all(len(c["summary"]) < 140 for c in r.json()["cards"])
    notes = r.json()["extension"]["pressor"]["notes"]
    assert any("Observation/map-night" in n for n in notes)


@pytest.mark.parametrize("name", ["cardiogenic-on-norepinephrine", "pediatric", "pregnancy", "missing-weight",
                                  "lb-weight-mg-dl-lactate"])
def test_patient_view_every_example(server, signing_key, card_schema, name):
    r = call(server, signing_key, PATIENT_VIEW, hook_request(name))
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    assert r.json()["cards"], name


def test_missing_weight_gives_no_weight_based_order(server, signing_key):
    dose = plan_card(call(server, signing_key, PATIENT_VIEW, hook_request("missing-weight")), "plan-norepinephrine")
    assert "suggestions" not in dose and "patient.weight_kg" in dose["detail"]


def test_order_select_dopamine_first_line_is_banned(server, signing_key, card_schema):
    r = call(server, signing_key, ORDER_SELECT, hook_request("dopamine-first-line", "order-select"))
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    ban = cards_by_rule(r)["avoid.dopamine-first-line"]
    assert ban["indicator"] == "critical" and r.json()["cards"][0]["uuid"] == ban["uuid"]
    assert {o["code"] for o in ban["overrideReasons"]} >= {"clinical-judgement"}


def test_order_select_phenylephrine_first_line_is_banned(server, signing_key, card_schema):
    body = hook_request("dopamine-first-line", "order-select")
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft["medicationCodeableConcept"] = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "8163"}]}
    r = call(server, signing_key, ORDER_SELECT, body)
    card_schema.validate(r.json())
    ban = cards_by_rule(r)["avoid.phenylephrine-first-line"]
    assert ban["indicator"] == "warning" and "overrideReasons" in ban


def test_missing_prefetch_answers_what_it_can_and_names_what_is_missing(server, signing_key, card_schema):
    body = hook_request("dopamine-first-line", "order-select",
                        drop=("conditions", "medicationAdministrations", "medicationRequests"))
    r = call(server, signing_key, ORDER_SELECT, body)
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    info = [c for c in r.json()["cards"] if "topic" not in c["source"]]
    assert len(info) == 1 and info[0]["indicator"] == "info"
    assert "conditions" in info[0]["summary"] and "medicationAdministrations" in info[0]["summary"]
    line = next(x for x in info[0]["detail"].splitlines() if x.startswith("- avoid.dopamine-first-line: missing"))
    assert "order.purpose" in line and "infusions.norepinephrine_mcg_kg_min" in line
    ban = cards_by_rule(r)["avoid.dopamine-first-line"]  # shown, qualified: not silent (issue 22)
    assert ban["summary"].startswith("Unless norepinephrine") and ban["suggestions"]
    assert "norepinephrine.start-emergency" not in cards_by_rule(r)  # on_norepinephrine is unknown without medications


def test_prefetch_null_means_nothing_found(server, signing_key):
    body = hook_request("septic-adult")
    assert body["prefetch"]["medicationAdministrations"] is None  # the example has none running
    r = call(server, signing_key, PATIENT_VIEW, body)
    assert "norepinephrine.start-emergency" in cards_by_rule(r)
    assert all("topic" in c["source"] for c in r.json()["cards"])  # nothing missing: no info card


# --- feedback ------------------------------------------------------------------------------


def audit_log(server):
    return AuditLog.open(server.audit_db, create=False)


def test_a_hook_call_is_recorded_in_the_audit_log(server, signing_key, result_validator):
    body = hook_request("septic-adult")
    r = call(server, signing_key, PATIENT_VIEW, body, sub="Practitioner/dr-lee")
    assert r.status_code == 200, r.text
    audited = r.json()["extension"]["pressor"]["audit"]
    assert audited["recorded"] is True and len(audited["records"]) >= 1
    with audit_log(server) as log:
        records = [log.record(i) for i in audited["records"]]
    # the clinician of the hook's context, via the client of the token (issue 22)
    assert {rec.user for rec in records} == {f"Practitioner/test via {ISS}|Practitioner/dr-lee"}
    assert {rec.patient for rec in records} == {f"Patient/{body['context']['patientId']}"}
    assert {rec.hook_instance for rec in records} == {body["hookInstance"]} and {rec.input_mode for rec in records} == {"full"}
    for rec in records:
        result_validator.validate(rec.result)
    fired = {f for rec in records for f in rec.fired()}
    shown = {c["source"]["topic"]["code"].replace("|", "@") for c in r.json()["cards"] if firm(c)}
    assert shown and shown <= fired  # the plan's answers and bans: supporting items are folded into their cards
    # an auditor recomputes every card's uuid from the record
    assert {card_uuid(records[0].hook_instance, *f.split("@"), records[0].pack_sha256) for f in shown} == {
        c["uuid"] for c in r.json()["cards"] if firm(c)}


def test_feedback_is_validated_and_recorded_in_the_audit_chain(server, signing_key):
    r = call(server, signing_key, ORDER_SELECT, hook_request("dopamine-first-line", "order-select"))
    ban = cards_by_rule(r)["avoid.dopamine-first-line"]
    path = f"/cds-services/{ORDER_SELECT}/feedback"
    body = {"feedback": [
        {"card": ban["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-24T12:01:00Z",
         "overrideReason": {"reason": ban["overrideReasons"][0], "userComment": "on specialist advice"}}]}
    ok = server.client.post(path, json=body, headers=auth(server, signing_key, path))
    assert ok.status_code == 200 and ok.json()["received"] == 1 and len(ok.json()["recorded"]) == 1
    with audit_log(server) as log:
        (entry,) = log.feedback(card=ban["uuid"])
    assert (entry.outcome, entry.user, entry.service) == ("overridden", ISS, ORDER_SELECT)
    assert json.loads(entry.override_reason_json)["reason"] == ban["overrideReasons"][0]
    assert json.loads(entry.payload_json) == body["feedback"][0]
    bad = {"feedback": [{"card": ban["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-24T12:01:00Z"}]}
    r = server.client.post(path, json=bad, headers=auth(server, signing_key, path))
    assert r.status_code == 400 and "acceptedSuggestions" in r.json()["message"]
    # the CLI links the feedback to the record of the call that issued the card, and both chains verify
    listed = subprocess.run([PRESSOR, "audit", "feedback", "--card", ban["uuid"], "--json", "--audit-db", str(server.audit_db)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert [x["rule"] for x in row["records"]] == ["avoid.dopamine-first-line@1.1.0"]
    verified = subprocess.run([PRESSOR, "audit", "verify", "--json", "--audit-db", str(server.audit_db)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    outcome = json.loads(verified.stdout)
    assert outcome["ok"] and outcome["feedback"] >= 1 and outcome["records"] >= 1


@pytest.fixture(scope="module")
def unrecorded_servers(tmp_path_factory, signing_key):
    """Two servers whose audit log cannot be created (its directory would be under a file): lenient and strict."""
    tmp = tmp_path_factory.mktemp("unrecorded")
    (tmp / "a-file").write_text("not a directory")
    where = str(tmp / "a-file" / "audit.db")
    lenient = configured_server(tmp, public_pem(signing_key), audit_db=where)
    strict = configured_server(tmp, public_pem(signing_key), audit_db=where, require_audit=True)
    yield lenient, strict
    lenient.stop()
    strict.stop()


def test_unrecorded_advice_is_still_given_with_a_warning_card(unrecorded_servers, signing_key, card_schema):
    lenient, _ = unrecorded_servers
    r = call(lenient, signing_key, PATIENT_VIEW, hook_request("septic-adult"))
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    assert "norepinephrine.start-emergency" in cards_by_rule(r)
    warning = r.json()["cards"][-1]
    assert warning["indicator"] == "warning" and "NOT recorded" in warning["summary"]
    audited = r.json()["extension"]["pressor"]["audit"]
    assert audited["recorded"] is False and "audit log" in audited["reason"]
    assert "NOT recorded in the audit log" in lenient.stderr_path.read_text()
    path = f"/cds-services/{PATIENT_VIEW}/feedback"
    fb = {"feedback": [{"card": warning["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-24T12:01:00Z"}]}
    refused = lenient.client.post(path, json=fb, headers=auth(lenient, signing_key, path))
    assert refused.status_code == 503 and refused.json()["error"] == "audit_unavailable"


def test_require_audit_withholds_unrecorded_advice_with_503(unrecorded_servers, signing_key):
    _, strict = unrecorded_servers
    r = call(strict, signing_key, PATIENT_VIEW, hook_request("septic-adult"))
    assert r.status_code == 503 and r.json()["error"] == "audit_unavailable"
    assert "withheld" in r.json()["message"] and "cards" not in r.json()


# --- authentication ------------------------------------------------------------------------------


def test_401_without_a_token(server):
    r = server.client.post(f"/cds-services/{PATIENT_VIEW}", json=hook_request("septic-adult"))
    assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "bearer" in r.json()["message"]
    assert server.client.get("/cds-services").status_code == 401


@pytest.mark.parametrize("override, reason", [
    ({"_garbage": True}, "malformed token"),
    ({"aud": "https://elsewhere.invalid/cds-services/pressor-patient-view"}, "wrong audience"),
    ({"iss": "https://stranger.invalid"}, "not trusted"),
    ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 700}, "expired"),
    ({"_kid": "other-key"}, "unknown key id"),
    ({"_key": ec.generate_private_key(ec.SECP384R1())}, "invalid token"),
    ({"_alg": "HS384", "_key": "a-shared-secret-that-is-long-enough-for-hs384-keys-0123456789"}, "not accepted"),
    ({"exp": int(time.time()) + 7200}, "lifetime"),
])
def test_401_with_a_bad_token(server, signing_key, override, reason):
    path = f"/cds-services/{PATIENT_VIEW}"
    headers = ({"Authorization": "Bearer not.a.jwt"} if override.get("_garbage")
               else auth(server, signing_key, path, **override))
    r = server.client.post(path, json=hook_request("septic-adult"), headers=headers)
    assert r.status_code == 401, r.text
    assert reason in r.json()["message"]


def test_401_on_a_replayed_token(server, signing_key):
    path = f"/cds-services/{PATIENT_VIEW}"
    headers = auth(server, signing_key, path)
    assert server.client.post(path, json=hook_request("septic-adult"), headers=headers).status_code == 200
    again = server.client.post(path, json=hook_request("septic-adult"), headers=headers)
    assert again.status_code == 401 and "replayed" in again.json()["message"]


# --- bad requests ------------------------------------------------------------------------------


def test_400_on_malformed_json(server, signing_key):
    r = call(server, signing_key, PATIENT_VIEW, b'{"hook": "patient-view", ')
    assert r.status_code == 400 and r.json()["error"] == "malformed_json" and "line 1" in r.json()["message"]


def test_400_on_a_request_of_the_wrong_shape(server, signing_key):
    body = hook_request("septic-adult")
    del body["context"]["patientId"]
    r = call(server, signing_key, PATIENT_VIEW, body)
    assert r.status_code == 400 and "patientId" in r.json()["message"]
    r = call(server, signing_key, PATIENT_VIEW, hook_request("septic-adult", hook="order-select"))
    assert r.status_code == 400 and "answers 'patient-view'" in r.json()["message"]


def test_400_on_a_bad_bundle(server, signing_key):
    body = hook_request("septic-adult")
    body["prefetch"]["observations"]["entry"].append({"fullUrl": "urn:uuid:x"})
    r = call(server, signing_key, PATIENT_VIEW, body)
    assert r.status_code == 400 and r.json()["error"] == "fhir_error"
    assert r.json()["problems"][0]["pointer"].startswith("/prefetch/observations/entry/")


def test_a_unit_error_leaves_the_fact_unknown_with_a_note_naming_the_resource(server, signing_key):
    body = hook_request("septic-adult")
    for entry in body["prefetch"]["observations"]["entry"]:
        if entry["resource"]["id"] == "lac":
            entry["resource"]["valueQuantity"]["code"] = "mEq/L"
    r = call(server, signing_key, PATIENT_VIEW, body)
    assert r.status_code == 200, r.text
    notes = r.json()["extension"]["pressor"]["notes"]
    assert any("Observation/lac" in n and "mEq/L" in n and "/prefetch/observations/entry/" in n for n in notes), r.text


def test_413_on_an_oversized_body(server, signing_key):
    body = hook_request("septic-adult")
    body["extension"] = {"padding": "x" * (1_100_000)}
    r = call(server, signing_key, PATIENT_VIEW, body)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_404_on_an_unknown_service(server, signing_key):
    r = call(server, signing_key, "no-such-service", hook_request("septic-adult"))
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_rule_documentation_is_served(server):
    r = server.client.get("/rules/avoid.dopamine-first-line")
    assert r.status_code == 200 and r.json()["id"] == "avoid.dopamine-first-line"
    assert server.client.get("/rules/nope").status_code == 404


# --- insecure mode ------------------------------------------------------------------------------


def test_insecure_mode_is_announced_on_stderr_and_in_every_response(insecure_server, card_schema):
    assert "authentication disabled" in insecure_server.stderr_path.read_text()
    r = insecure_server.client.post(f"/cds-services/{PATIENT_VIEW}", json=hook_request("pediatric"))
    assert r.status_code == 200
    card_schema.validate(r.json())
    assert "authentication disabled" in r.headers["X-Pressor-Insecure"]
    assert "authentication disabled" in insecure_server.client.get("/healthz").headers["X-Pressor-Insecure"]
    with audit_log(insecure_server) as log:
        assert {rec.user for rec in log.records()} == {"Practitioner/test via insecure-no-auth"}


def test_serve_refuses_to_start_without_issuers(tmp_path):
    (tmp_path / "empty.yaml").write_text("base_url: http://127.0.0.1:1\n")
    out = subprocess.run([PRESSOR, "serve", "--config", str(tmp_path / "empty.yaml")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "no trusted issuers" in out.stderr


def test_serve_reports_a_bad_config_with_its_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("issuers:\n  - iss: x\n    keys: [{kid: k, pem: nope}]\n")
    out = subprocess.run([PRESSOR, "serve", "--config", str(tmp_path / "bad.yaml")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "bad.yaml:3" in out.stderr


def test_missing_facts_give_a_questions_card_and_if_cards_without_orders(server, signing_key, card_schema):
    body = hook_request("dopamine-first-line", "order-select",
                        drop=("conditions", "medicationAdministrations", "medicationRequests"))
    r = call(server, signing_key, ORDER_SELECT, body)
    card_schema.validate(r.json())
    cards = r.json()["cards"]
    asks = [c for c in cards if c["source"].get("topic", {}).get("system") == "urn:pressor:ask-next"]
    assert len(asks) <= 1 and all(a["summary"].startswith("Ask: ") and a["indicator"] == "info" for a in asks)
    ifs = [c for c in cards if c["source"].get("topic", {}).get("system") == "urn:pressor:rule-conditional"]
    assert all("suggestions" not in c for c in ifs)  # nothing is ordered on a condition nobody has checked
    conditional = [c for c in cards if "(unless " in c["summary"]]
    assert all("suggestions" not in c for c in conditional)
    assert_one_plan(r)
