"""SMART App Launch of the web app (issue 22, item 5), against the small EHR of the tests acting as the
SMART authorization server and FHIR server (tests/ehr_server.py ``--smart-patient``): EHR launch with
``iss`` and ``launch``, PKCE S256, the patient's record read with the access token into the clinician
view; standalone launch; an ``iss`` not configured is refused; a callback is spent once; the EHR may
embed the app (CSP frame-ancestors) only when configured."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.service_support import Ehr
from tests.test_cds_service import Server, free_port, public_pem, signing_key  # noqa: F401

TOKEN = "smart-access-token"
EHR_ORIGIN = "https://ehr.hospital.example"


@pytest.fixture(scope="module")
def ehr():
    e = Ehr("--token", TOKEN, "--smart-patient", "sep-adult")
    yield e
    e.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory, signing_key, ehr):
    tmp = tmp_path_factory.mktemp("smart")
    port = free_port()
    config = {"base_url": f"http://127.0.0.1:{port}",
              "issuers": [{"iss": "https://ehr.test.invalid", "keys": [{"kid": "k", "pem": public_pem(signing_key)}]}],
              "audit_db": str(tmp / "audit.db"), "fhir_fetch": {"servers": [ehr.fhir]},
              "ui": {"oidc": {"issuer": "http://127.0.0.1:9", "client_id": "unused", "client_secret_env": "HOME"},
                     "smart": {"client_id": "pressor-smart", "issuers": [ehr.fhir], "standalone_iss": ehr.fhir},
                     "frame_ancestors": [EHR_ORIGIN]}}
    (tmp / "serve.json").write_text(json.dumps(config))
    srv = Server(["--config", str(tmp / "serve.json"), "--ui"], port, tmp)
    yield srv
    srv.stop()


def _launch(app, ehr, query: str) -> httpx.Response:
    """The browser's part: the launch URL, the authorization server's redirect, the callback (cookies kept)."""
    with httpx.Client(base_url=app.base, follow_redirects=False, timeout=20) as browser:
        first = browser.get(f"/ui/launch{query}")
        assert first.status_code == 303, first.text
        authorize = first.headers["location"]
        assert authorize.startswith(ehr.base + "/auth/authorize?")
        back = httpx.get(authorize, follow_redirects=False, timeout=20)
        assert back.status_code == 302, back.text
        callback = back.headers["location"]
        assert callback.startswith(app.base + "/ui/launch/callback?")
        answer = browser.get(callback)
        answer.replayed = browser.get(callback)  # type: ignore[attr-defined]
        return answer


def test_an_ehr_launch_opens_the_clinician_view_for_the_patient_in_context(app, ehr):
    ehr.reset()
    page = _launch(app, ehr, f"?iss={ehr.fhir}&launch=launch-123")
    assert page.status_code == 200, page.text
    assert "Opened from the EHR for Patient/sep-adult" in page.text
    assert "critical" in page.text.lower() and "pressor_ui=" in page.headers.get("set-cookie", "")
    asked = [s for s in httpx.get(ehr.base + "/_smart").json() if s["path"] == "/auth/authorize"][-1]["query"]
    assert asked["launch"] == "launch-123" and asked["aud"] == ehr.fhir and asked["code_challenge_method"] == "S256"
    assert asked["redirect_uri"] == app.base + "/ui/launch/callback" and "patient/*.read" in asked["scope"]
    token_call = [s for s in httpx.get(ehr.base + "/_smart").json() if s["path"] == "/auth/token"][-1]["form"]
    assert token_call["code_verifier"] and token_call["client_id"] == "pressor-smart"  # a public client: PKCE
    fetched = ehr.requests("/fhir/")
    assert fetched and {r["authorization"] for r in fetched} == {f"Bearer {TOKEN}"}
    assert any(r["path"] == "/fhir/Patient/sep-adult" for r in fetched)
    assert page.replayed.status_code == 401  # spent with the launch (its cookie gone, the state marked used)


def test_a_standalone_launch_asks_for_a_patient(app, ehr):
    page = _launch(app, ehr, "")
    assert page.status_code == 200, page.text
    asked = [s for s in httpx.get(ehr.base + "/_smart").json() if s["path"] == "/auth/authorize"][-1]["query"]
    assert "launch/patient" in asked["scope"].split() and "launch" not in asked


def test_an_unknown_iss_is_refused_and_the_ehr_may_embed_the_app(app):
    r = app.client.get("/ui/launch", params={"iss": "https://evil.example/fhir", "launch": "x"})
    assert r.status_code == 400 and "is not an EHR this pressor is launched from" in r.text
    csp = r.headers["content-security-policy"]
    assert f"frame-ancestors {EHR_ORIGIN}" in csp and "x-frame-options" not in r.headers
    forged = app.client.get("/ui/launch/callback", params={"code": "c", "state": "forged"})
    assert forged.status_code == 401
