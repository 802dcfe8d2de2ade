"""Keys (issue 12 item 2) and token hardening (issue 11 item 7): JWKS by URL per issuer, the jku header
only from the issuer's allowlist, rotation with a rate-limited refetch, typ; a request signed the CDS
Hooks sandbox's way (ES384, typ JWT, kid, jku to its published JWKS) with a key made here and served
locally; and every token problem, however odd, is a 401 and never a 500."""
from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.service_support import Ehr, forged, public_jwk
from tests import test_cds_service
from tests.test_cds_service import (ORDER_SELECT, PATIENT_VIEW, cards_by_rule, configured_server, hook_request,
                                    public_pem)

card_schema = test_cds_service.card_schema  # the shared fixture
signing_key = test_cds_service.signing_key  # the shared fixture

SANDBOX_ISS = "https://sandbox.cds-hooks.org"  # the sandbox's iss (src/retrieve-data-helpers/jwt-generator.js)
ROTATING_ISS = "https://ehr.rotating.invalid"
MIXED_ISS = "https://ehr.mixed.invalid"
FHIR_TOKEN = "sandbox-fhir-token"


@pytest.fixture(scope="module")
def ehr():
    e = Ehr("--token", FHIR_TOKEN)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def keys():
    return {"sandbox": ec.generate_private_key(ec.SECP384R1()), "old": ec.generate_private_key(ec.SECP384R1()),
            "new": ec.generate_private_key(ec.SECP384R1()), "p384": ec.generate_private_key(ec.SECP384R1()),
            "p256": ec.generate_private_key(ec.SECP256R1()), "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, signing_key, ehr, keys):
    sandbox_jwks = ehr.publish("sandbox", {"keys": [public_jwk(keys["sandbox"], "44823f3d-sandbox", "ES384")]})
    rotating = ehr.publish("rotating", {"keys": [public_jwk(keys["old"], "old", "ES384")]})
    mixed = [{"kid": "ec384", "pem": public_pem(keys["p384"])}, {"kid": "ec256", "pem": public_pem(keys["p256"])},
             {"kid": "rsa", "pem": public_pem(keys["rsa"])}]
    srv = configured_server(
        tmp_path_factory.mktemp("keys"), public_pem(signing_key),
        algorithms=["ES384", "RS384", "ES256", "RS256", "PS384", "ES512"], jwks={"min_refetch_s": 0},
        issuers_extra=[{"iss": SANDBOX_ISS, "jku": [sandbox_jwks]}, {"iss": ROTATING_ISS, "jwks_url": rotating},
                       {"iss": MIXED_ISS, "keys": mixed}])
    srv.sandbox_jwks = sandbox_jwks
    yield srv
    srv.stop()


def sign(key, server, path: str, *, iss: str, kid: str, alg: str = "ES384", headers: dict | None = None, **claims) -> str:
    now = int(time.time())
    payload = {"iss": iss, "aud": server.base + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"typ": "JWT", "kid": kid, **(headers or {})})


def post(server, token: str, service: str, body) -> object:
    return server.client.post(f"/cds-services/{service}", json=body, headers={"Authorization": f"Bearer {token}"})


def sandbox_token(server, keys, path: str) -> str:
    """Signed as the sandbox signs: ES384, typ JWT, kid and jku in the header; iss, aud, exp = iat + 300, iat, jti."""
    return sign(keys["sandbox"], server, path, iss=SANDBOX_ISS, kid="44823f3d-sandbox",
                headers={"jku": server.sandbox_jwks})


# --- the CDS Hooks sandbox ------------------------------------------------------------------------


def test_sandbox_patient_view_request_signed_the_sandbox_way(server, keys, ehr, card_schema):
    # the sandbox sends hookInstance, hook, fhirServer, context {patientId, userId} and fhirAuthorization,
    # and a prefetch only with the keys its own fetches found (here: none)
    body = {"hookInstance": str(uuid.uuid4()), "hook": "patient-view", "fhirServer": ehr.fhir,
            "context": {"patientId": "sep-adult", "userId": "Practitioner/COREPRACTITIONER1"},
            "fhirAuthorization": {"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 3600,
                                  "scope": "launch patient/*.read user/*.read openid profile", "subject": "48163c5e-88b5"}}
    path = f"/cds-services/{PATIENT_VIEW}"
    r = post(server, sandbox_token(server, keys, path), PATIENT_VIEW, body)
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    assert "target.map-65" in cards_by_rule(r)
    discovery = server.client.get("/cds-services", headers={
        "Authorization": f"Bearer {sandbox_token(server, keys, '/cds-services')}"})
    assert discovery.status_code == 200


def test_sandbox_order_select_request_with_its_draft_order(server, keys, ehr, card_schema):
    # the sandbox's Rx View: one draft MedicationRequest "request-123" in a Bundle without type, selected
    draft = {"resourceType": "MedicationRequest", "id": "request-123", "status": "draft",
             "subject": {"reference": "Patient/dopa"}, "authoredOn": "2026-11-24",
             "medicationCodeableConcept": {"text": "Dopamine", "coding": [
                 {"display": "Dopamine", "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3628"}]},
             "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                    "doseAndRate": [{"doseQuantity": {"value": 1, "system": "http://unitsofmeasure.org",
                                                                      "code": "{pill}"}}]}]}
    body = {"hookInstance": str(uuid.uuid4()), "hook": "order-select", "fhirServer": ehr.fhir,
            "context": {"patientId": "dopa", "userId": "Practitioner/COREPRACTITIONER1",
                        "selections": ["MedicationRequest/request-123"],
                        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]}},
            "fhirAuthorization": {"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 3600,
                                  "scope": "user/*.read", "subject": "sandbox"}}
    path = f"/cds-services/{ORDER_SELECT}"
    r = post(server, sandbox_token(server, keys, path), ORDER_SELECT, body)
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    ban = cards_by_rule(r)["avoid.dopamine-first-line"]
    delete = ban["suggestions"][0]["actions"][0]
    assert (delete["type"], delete["resourceId"]) == ("delete", "MedicationRequest/request-123")


# --- JWKS, jku, rotation, typ -------------------------------------------------------------------


def test_rotation_new_kid_is_fetched_and_the_retired_one_refused(server, keys, ehr):
    path = f"/cds-services/{PATIENT_VIEW}"
    body = hook_request("septic-adult")
    ok = post(server, sign(keys["old"], server, path, iss=ROTATING_ISS, kid="old"), PATIENT_VIEW, body)
    assert ok.status_code == 200, ok.text
    ehr.publish("rotating", {"keys": [public_jwk(keys["new"], "new", "ES384")]})  # the EHR rotates
    rotated = post(server, sign(keys["new"], server, path, iss=ROTATING_ISS, kid="new"), PATIENT_VIEW, body)
    assert rotated.status_code == 200, rotated.text
    retired = post(server, sign(keys["old"], server, path, iss=ROTATING_ISS, kid="old"), PATIENT_VIEW, body)
    assert retired.status_code == 401 and "unknown key id 'old'" in retired.json()["message"]


def test_unknown_kids_do_not_hammer_the_issuer(tmp_path, signing_key, keys, ehr):
    url = ehr.publish("limited", {"keys": [public_jwk(keys["old"], "old", "ES384")]})
    srv = configured_server(tmp_path, public_pem(signing_key), jwks={"min_refetch_s": 3600},
                            issuers_extra=[{"iss": ROTATING_ISS, "jwks_url": url}])
    try:
        path = f"/cds-services/{PATIENT_VIEW}"
        assert post(srv, sign(keys["old"], srv, path, iss=ROTATING_ISS, kid="old"), PATIENT_VIEW,
                    hook_request("septic-adult")).status_code == 200
        for i in range(5):
            r = post(srv, sign(keys["old"], srv, path, iss=ROTATING_ISS, kid=f"forged-{i}"), PATIENT_VIEW, {})
            assert r.status_code == 401 and "unknown key id" in r.json()["message"]
        assert len(ehr.requests("/jwks/limited.json")) == 1
    finally:
        srv.stop()


def test_jku_off_the_allowlist_is_refused(server, keys):
    path = f"/cds-services/{PATIENT_VIEW}"
    token = sign(keys["sandbox"], server, path, iss=SANDBOX_ISS, kid="44823f3d-sandbox",
                 headers={"jku": "https://attacker.invalid/jwks.json"})
    r = post(server, token, PATIENT_VIEW, hook_request("septic-adult"))
    assert r.status_code == 401 and "not on the allowlist" in r.json()["message"]


def test_jku_of_an_issuer_with_configured_keys_is_ignored(server, keys):
    path = f"/cds-services/{PATIENT_VIEW}"
    token = sign(keys["p384"], server, path, iss=MIXED_ISS, kid="ec384", headers={"jku": "https://attacker.invalid/j"})
    assert post(server, token, PATIENT_VIEW, hook_request("septic-adult")).status_code == 200


def test_typ_other_than_jwt_is_refused(server, keys):
    path = f"/cds-services/{PATIENT_VIEW}"
    token = sign(keys["p384"], server, path, iss=MIXED_ISS, kid="ec384", headers={"typ": "at+jwt"})
    r = post(server, token, PATIENT_VIEW, hook_request("septic-adult"))
    assert r.status_code == 401 and "not JWT" in r.json()["message"]


# --- any token problem is a 401 (issue 11 item 7) ------------------------------------------------


def _claims(server, path: str, iss: str = MIXED_ISS, **extra) -> dict:
    now = int(time.time())
    return {"iss": iss, "aud": server.base + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **extra}


HOSTILE = [
    ("RS384 naming the EC key, garbage signature", {"alg": "RS384", "kid": "ec384"}, {}),
    ("ES384 naming the RSA key, garbage signature", {"alg": "ES384", "kid": "rsa"}, {}),
    ("PS384 naming the EC key", {"alg": "PS384", "kid": "ec384"}, {}),
    ("RS256 naming the P-256 key", {"alg": "RS256", "kid": "ec256"}, {}),
    ("ES256 naming the P-384 key", {"alg": "ES256", "kid": "ec384"}, {}),
    ("ES384 naming the P-256 key", {"alg": "ES384", "kid": "ec256"}, {}),
    ("ES512 naming the P-384 key", {"alg": "ES512", "kid": "ec384"}, {}),
    ("HS384 naming the RSA key (key confusion)", {"alg": "HS384", "kid": "rsa"}, {}),
    ("alg none", {"alg": "none", "kid": "ec384"}, {}),
    ("no alg", {"kid": "ec384"}, {}),
    ("alg a list", {"alg": ["ES384"], "kid": "ec384"}, {}),
    ("kid a number", {"alg": "ES384", "kid": 5}, {}),
    ("kid a list", {"alg": "ES384", "kid": ["ec384"]}, {}),
    ("kid an object", {"alg": "ES384", "kid": {"k": 1}}, {}),
    ("no kid", {"alg": "ES384"}, {}),
    ("jku a number", {"alg": "ES384", "kid": "ec384", "jku": 5}, {}),
    ("jku a list", {"alg": "ES384", "kid": "nope", "jku": ["x"]}, {}),
    ("typ a number", {"alg": "ES384", "kid": "ec384", "typ": 7}, {}),
    ("iss a list", {"alg": "ES384", "kid": "ec384"}, {"iss": [MIXED_ISS]}),
    ("iat a string", {"alg": "ES384", "kid": "ec384"}, {"iat": "yesterday"}),
    ("exp a string", {"alg": "ES384", "kid": "ec384"}, {"exp": "soon"}),
    ("aud a number", {"alg": "ES384", "kid": "ec384"}, {"aud": 5}),
    ("jti an object", {"alg": "ES384", "kid": "ec384"}, {"jti": {"a": 1}}),
]


@pytest.mark.parametrize("what, header, override", HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("endpoint", ["/cds-services", f"/cds-services/{PATIENT_VIEW}",
                                      f"/cds-services/{PATIENT_VIEW}/feedback", "/openapi.json"])
def test_any_token_problem_is_a_401(server, what, header, override, endpoint):
    token = forged(header, {**_claims(server, endpoint), **override})
    headers = {"Authorization": f"Bearer {token}"}
    r = (server.client.get(endpoint, headers=headers) if endpoint in ("/cds-services", "/openapi.json")
         else server.client.post(endpoint, json=hook_request("septic-adult"), headers=headers))
    assert r.status_code == 401, (what, r.status_code, r.text)
    assert r.json()["error"] == "unauthorized" and r.json()["message"]


@pytest.mark.parametrize("token", ["a", "a.b", "a.b.c", "....", "e30.e30.", "e30.W10.e30", "eyJhbGciOiJFUzM4NCJ9.bm90IGpzb24.x",
                                   forged({"alg": "ES384", "kid": "ec384"}, b"[1, 2]"), forged([1], {"iss": MIXED_ISS}),
                                   "Bearer x", "\u00e9t\u00e9.x.y"])
def test_malformed_tokens_are_a_401(server, token):
    r = server.client.get("/cds-services", headers={"Authorization": f"Bearer {token}".encode("utf-8")})
    assert r.status_code == 401, r.text


def test_a_real_signature_by_the_wrong_key_type_is_a_401(server, keys):
    # correctly signed with RS384 by an RSA key, but the header names the EC key
    path = "/cds-services"
    token = jwt.encode(_claims(server, path), keys["rsa"], algorithm="RS384", headers={"kid": "ec384"})
    r = server.client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "does not fit key 'ec384'" in r.json()["message"]


def test_the_hostile_tokens_left_no_traceback_and_each_failure_a_reasoned_log_line(server):
    log = server.stderr_path.read_text()
    assert "Traceback" not in log and "Expecting a PEM-formatted key" not in log
    assert '"event":"auth_failed"' in log and "does not fit key" in log


def test_the_in_process_replay_cache_forgets_expired_tokens():
    from pressor.engine.audit.replay_cache import MemoryReplayCache

    cache = MemoryReplayCache()
    now = time.time()
    assert not cache.seen("iss|a", now + 60) and cache.seen("iss|a", now + 60)
    assert not cache.seen("iss|old", now - 1)
    assert not cache.seen("iss|b", now + 60)  # this call forgets iss|old, which has expired
    assert not cache.seen("iss|old", now + 60)


def test_an_unreachable_key_set_is_a_401_and_a_broken_one_keeps_the_keys_held(server, keys, ehr, tmp_path, signing_key):
    missing = f"{ehr.base}/jwks/never-published.json"
    url = ehr.publish("flaky", {"keys": [public_jwk(keys["old"], "old", "ES384")]})
    srv = configured_server(tmp_path, public_pem(signing_key), jwks={"min_refetch_s": 0, "cache_s": 0},
                            issuers_extra=[{"iss": "https://ehr.gone.invalid", "jwks_url": missing},
                                           {"iss": ROTATING_ISS, "jwks_url": url}])
    try:
        path = f"/cds-services/{PATIENT_VIEW}"
        r = post(srv, sign(keys["old"], srv, path, iss="https://ehr.gone.invalid", kid="old"), PATIENT_VIEW, {})
        assert r.status_code == 401 and "could not be fetched" in r.json()["message"]
        assert post(srv, sign(keys["old"], srv, path, iss=ROTATING_ISS, kid="old"), PATIENT_VIEW,
                    hook_request("septic-adult")).status_code == 200
        ehr.publish("flaky", {"keys": []})  # the issuer publishes nothing usable: the keys held stay in use
        again = post(srv, sign(keys["old"], srv, path, iss=ROTATING_ISS, kid="old"), PATIENT_VIEW, hook_request("septic-adult"))
        assert again.status_code == 200, again.text
        assert len(ehr.requests("/jwks/flaky.json")) == 2  # cache_s 0: it was asked again
    finally:
        srv.stop()


# --- how key sets are fetched: no redirects, a size limit, https ----------------------------------


def test_a_key_set_that_redirects_is_refused_and_a_direct_one_works(ehr, keys, tmp_path, signing_key):
    # the redirect points at a valid key set holding the very key that signs: following it would accept the token
    target = ehr.publish("redirect-target", {"keys": [public_jwk(keys["old"], "old", "ES384")]})
    redirecting = ehr.publish("redirecting", {"redirect": target})
    oversize = ehr.publish("oversize", {"keys": [public_jwk(keys["old"], "old", "ES384")], "padding": "x" * 1_100_000})
    srv = configured_server(tmp_path, public_pem(signing_key),
                            issuers_extra=[{"iss": "https://ehr.redirecting.invalid", "jwks_url": redirecting},
                                           {"iss": "https://ehr.direct.invalid", "jwks_url": target},
                                           {"iss": "https://ehr.oversize.invalid", "jwks_url": oversize}])
    try:
        path = f"/cds-services/{PATIENT_VIEW}"
        r = post(srv, sign(keys["old"], srv, path, iss="https://ehr.redirecting.invalid", kid="old"), PATIENT_VIEW,
                 hook_request("septic-adult"))
        assert r.status_code == 401, r.text
        message = r.json()["message"]
        assert f"the key set {redirecting} could not be fetched" in message
        assert "HTTP 302, a redirect to " + target in message and "redirects are not followed" in message
        assert ehr.requests("/jwks/redirect-target.json") == []  # the redirect was not followed

        direct = post(srv, sign(keys["old"], srv, path, iss="https://ehr.direct.invalid", kid="old"), PATIENT_VIEW,
                      hook_request("septic-adult"))
        assert direct.status_code == 200, direct.text
        assert len(ehr.requests("/jwks/redirect-target.json")) == 1

        big = post(srv, sign(keys["old"], srv, path, iss="https://ehr.oversize.invalid", kid="old"), PATIENT_VIEW,
                   hook_request("septic-adult"))
        assert big.status_code == 401 and "answered more than 1000000 bytes" in big.json()["message"], big.text
        log = srv.stderr_path.read_text()
        assert "Traceback" not in log and "redirects are not followed" in log
    finally:
        srv.stop()


@pytest.mark.parametrize("where, issuer", [
    ("jwks_url", {"iss": "https://ehr.example.org", "jwks_url": "http://ehr.example.org/jwks.json"}),
    ("jku/1", {"iss": "https://ehr.example.org", "jku": ["https://ehr.example.org/a.json", "http://ehr.example.org/b.json"]}),
])
def test_a_key_set_url_over_plain_http_is_refused_at_load(tmp_path, where, issuer):
    from pressor.engine.errors import InputError
    from pressor.service.config import load_config

    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"issuers": [issuer]}))
    with pytest.raises(InputError) as caught:
        load_config(str(path))
    problem = caught.value.problems[0]
    assert problem.pointer == f"/issuers/0/{where}" and "must use https" in problem.message and problem.suggestion
    loopback = {**issuer, **({"jwks_url": "http://127.0.0.1:8080/jwks.json"} if "jwks_url" in issuer
                             else {"jku": ["http://localhost:8080/a.json"]})}
    path.write_text(json.dumps({"issuers": [loopback]}))
    assert load_config(str(path)).issuers["https://ehr.example.org"]
