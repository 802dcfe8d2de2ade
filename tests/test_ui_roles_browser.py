"""Roles in the web app, in a real browser (issue 22, item 4): ``pressor serve --ui`` signing in through an
OpenID Connect provider that the tests run; the roles come from the ID token's ``roles`` claim through
``ui.roles.map``. A clinician sees no audit view and cannot export; an auditor lists what was shown to one
clinician about one patient and exports the log."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.oidc_provider import FakeOidcProvider
from tests.test_cds_service import hook_request
from tests.test_ui_browser import PRESSOR, navigate  # the browser: tests/conftest.py's browser_context

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ISS = "https://ehr.test.invalid"


@pytest.fixture
def served(tmp_path):
    idp = FakeOidcProvider("pressor-browser", "browser-secret", host_name="localhost").start()
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({
        "issuers": [{"iss": ISS, "keys": [{"kid": "ehr", "pem": pem}]}],
        "ui": {"oidc": {"issuer": idp.issuer, "client_id": "pressor-browser", "client_secret_env": "PRESSOR_TEST_SECRET"},
               "roles": {"claim": "roles", "map": {"ICU-Auditors": "auditor"}}}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    err = open(tmp_path / "serve.err", "w")
    proc = subprocess.Popen([PRESSOR, "serve", "--ui", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=err,
                            env={**os.environ, "PRESSOR_AUDIT_DB": str(tmp_path / "audit.db"), "PRESSOR_TEST_SECRET": "browser-secret"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.err").read_text()
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield base, idp, key
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        err.close()
        idp.stop()


def _hook(base: str, key, user: str, example: str) -> dict:
    body = hook_request(example)
    body["context"]["userId"] = user
    path = "/cds-services/pressor-patient-view"
    now = int(time.time())
    token = jwt.encode({"iss": ISS, "aud": base + path, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}, key,
                       algorithm="ES384", headers={"kid": "ehr", "typ": "JWT"})
    r = httpx.post(base + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return body


def _sign_in(page, base: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/ui/rules")
    page.get_by_role("link", name="Sign in with your organisation's account").click()
    page.wait_for_url(lambda url: url.startswith(base + "/ui/") and "/login" not in url)  # past the moving-on page
    page.locator("header form.who").wait_for()


def test_a_clinician_cannot_export_and_an_auditor_lists_one_clinician_and_one_patient(browser_context, served):  # noqa: F811
    base, idp, key = served
    ito_a = _hook(base, key, "Practitioner/dr-ito", "septic-adult")
    _hook(base, key, "Practitioner/dr-lee", "septic-adult")
    _hook(base, key, "Practitioner/dr-ito", "cardiogenic-on-norepinephrine")
    patient = ito_a["context"]["patientId"]
    saved = browser_context.cookies()
    page = browser_context.new_page()
    try:
        # a clinician (no roles claim: the default role)
        idp.subject = "dr.ito"
        _sign_in(page, base)
        page.goto(f"{base}/ui/")
        page.get_by_role("heading", name="Patient", exact=True).wait_for()
        header = page.locator("header").inner_text()
        assert "(clinician)" in header and "Audit" not in page.get_by_role("navigation", name="Views").inner_text()
        for path in ("/ui/audit", "/ui/audit/export?kind=records&format=jsonl", "/ui/lint"):
            response = page.goto(base + path)
            assert response.status == 403 and "Not allowed" in page.content(), path
            assert "Practitioner/dr-ito" not in page.content()

        # an auditor (a group the site maps to the role)
        page.goto(f"{base}/ui/rules")
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Sign in to pressor").wait_for()
        idp.subject, idp.claims = "audit.kim", {"roles": ["ICU-Auditors"]}
        _sign_in(page, base)
        assert page.url.startswith(f"{base}/ui/audit"), page.url  # the first view the role opens
        assert "(auditor)" in page.locator("header").inner_text()
        assert page.goto(f"{base}/ui/").status == 403  # no clinician view for an auditor
        page.goto(f"{base}/ui/audit")
        page.get_by_label("User").fill("Practitioner/dr-ito")
        page.get_by_label("Patient").fill(patient)
        navigate(page, page.get_by_role("button", name="Filter"))
        page.get_by_role("status").filter(has_text="record(s)").wait_for()
        assert page.get_by_role("status").filter(has_text="record(s)").inner_text().startswith("1 record(s)")
        rows = page.locator("table.audit tbody tr")
        assert rows.count() == 1 and f"Patient/{patient}" in rows.first.inner_text()
        with page.expect_download() as download:
            page.get_by_role("link", name="records (JSON lines)").click()
        lines = open(download.value.path()).read().splitlines()
        assert len(lines) == 3 and all(json.loads(x)["patient"].startswith("Patient/") for x in lines)
    finally:
        page.close()
        browser_context.clear_cookies()
        if saved:
            browser_context.add_cookies(saved)
