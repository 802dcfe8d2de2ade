"""The web app without a browser (Starlette's test client): the form built from the schema, sign-in
(one-time link, OpenID Connect in served mode), CSRF, the security headers, no data without a session,
FHIR paste, and the conditional advice rendered when the result carries it."""
from __future__ import annotations

import json
import re
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
with warnings.catch_warnings():  # Starlette's note that it prefers httpx2 (httpx is what the project uses)
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from pressor.cli.main import cli
from pressor.engine.evaluation.validate import STATE_SCHEMA, schema
from pressor.service.ui.app import CSP, create_ui_app, templates
from pressor.service.ui.auth import COOKIE, Auth
from pressor.service.ui.context import UiContext
from pressor.service.ui.forms import NONE_OF_THESE, FormSpec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ISS = "https://idp.test.invalid"
KID = "idp-key-1"
CLIENT_ID = "pressor-ui"


# --- the form -------------------------------------------------------------------------------

def _leaves(spec, prefix=""):
    for name, child in spec.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        if child.get("type") == "object" and "properties" in child:
            yield from _leaves(child, path)
        else:
            yield path, child


def test_every_fact_of_the_schema_has_a_field_with_its_unit_and_range():
    form = FormSpec()
    leaves = dict(_leaves(schema(STATE_SCHEMA)))
    assert set(form.fields) == set(leaves)
    weight = form.fields["patient.weight_kg"]
    assert (weight.label, weight.unit, weight.range_text) == ("Weight", "kg", "plausible 0.3–350 kg")
    assert form.fields["vitals.map_mmhg"].label == "MAP" and form.fields["vitals.map_mmhg"].unit == "mmHg"
    assert form.fields["infusions.norepinephrine_mcg_kg_min"].unit == "mcg/kg/min"
    assert form.fields["fluids.hours_since_recognition"].unit == "h"
    assert form.fields["perfusion.lactate_rising"].kind == "boolean"
    assert form.fields["shock.type"].options == tuple(leaves["shock.type"]["enum"])
    assert form.fields["line_coinfusions"].kind == "choices"


def test_empty_fields_are_unknown_never_zero_or_false():
    form = FormSpec()
    state, errors = form.parse([("patient.weight_kg", "72"), ("vitals.map_mmhg", ""), ("patient.pregnant", ""),
                                ("findings.extravasation", "false"), ("shock.type", "septic"), ("csrf_token", "x")])
    assert errors == {}
    assert state == {"patient": {"weight_kg": 72}, "findings": {"extravasation": False}, "shock": {"type": "septic"}}
    # a list: nothing ticked is unknown, "none of these" is the empty list
    assert "line_coinfusions" not in form.parse([])[0]
    assert form.parse([("line_coinfusions", NONE_OF_THESE)])[0] == {"line_coinfusions": []}
    assert form.parse([("line_coinfusions", "dextrose_5")])[0] == {"line_coinfusions": ["dextrose_5"]}
    # and back: absent facts have no value to show
    values = form.values(state)
    assert values["patient.weight_kg"] == 72 and "vitals.map_mmhg" not in values


def test_bad_field_values_are_reported_per_field():
    state, errors = FormSpec().parse([("patient.weight_kg", "72kg"), ("shock.type", "nonsense"), ("patient.pregnant", "maybe")])
    assert state == {}
    assert set(errors) == {"patient.weight_kg", "shock.type", "patient.pregnant"}
    assert "not a number" in errors["patient.weight_kg"]


def test_the_form_follows_a_schema_with_new_facts():
    """Facts added to the schema (a $ref, an integer, a list of objects) appear without code changes."""
    extended = json.loads(json.dumps(schema(STATE_SCHEMA)))
    extended["$defs"] = {"temp": {"type": "number", "minimum": 25, "maximum": 45, "x-unit": "°C",
                                  "description": "Core temperature."}}
    extended["properties"]["vitals"]["properties"]["temperature"] = {"$ref": "#/$defs/temp"}
    extended["properties"]["vitals"]["properties"]["spo2_percent"] = {"type": "integer", "minimum": 50, "maximum": 100}
    extended["properties"]["infusions"]["properties"]["vasopressor_hours"] = {"type": "number", "minimum": 0}
    extended["properties"]["timeline"] = {"type": "array", "items": {"type": "object"}, "description": "Earlier values."}
    form = FormSpec(extended)
    temp = form.fields["vitals.temperature"]
    assert (temp.kind, temp.unit, temp.range_text) == ("number", "°C", "plausible 25–45 °C")
    assert form.fields["vitals.spo2_percent"].unit == "%" and form.fields["vitals.spo2_percent"].label == "SpO2"
    assert form.fields["timeline"].kind == "json"
    hours = form.fields["infusions.vasopressor_hours"]
    assert (hours.label, hours.unit, hours.range_text) == ("Vasopressor hours", "h", "at least 0 h")
    state, errors = form.parse([("vitals.spo2_percent", "93"), ("json:timeline", '[{"at": "2026-01-01T00:00:00Z"}]')])
    assert errors == {} and state == {"vitals": {"spo2_percent": 93}, "timeline": [{"at": "2026-01-01T00:00:00Z"}]}
    assert form.parse([("vitals.spo2_percent", "93.5")])[1]  # an integer field refuses a fraction


# --- the local app ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reports() -> dict:
    """Lint and scenario reports depend on the pack only: computed once for the module's apps."""
    return {}


@pytest.fixture()
def local(pack, audit_db, reports):
    ctx = UiContext(pack=pack, auth=Auth.local("local:tester"), audit_path=audit_db,
                    scenario_paths=(str(ROOT / "tests" / "scenarios"),), _cache=reports)
    with TestClient(create_ui_app(ctx), base_url="http://127.0.0.1") as client:
        yield ctx, client


def signed_in(ctx, client) -> str:
    """Sign in with the one-time link; the page's CSRF token."""
    response = client.get(f"/ui/login?token={ctx.auth.start_token}", follow_redirects=False)
    assert response.status_code == 303 and COOKIE in client.cookies  # kept by the client, as a browser would
    page = client.get("/ui/")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def post(client, path: str, pairs, **headers):
    """A urlencoded form POST (repeated keys allowed)."""
    pairs = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    return client.post(path, content=urlencode(pairs),
                       headers={"content-type": "application/x-www-form-urlencoded", **headers})


SEPTIC = [("patient.weight_kg", "72"), ("patient.age_years", "68"), ("patient.pregnant", "false"), ("shock.type", "septic"), ("vitals.map_mmhg", "50"),
          ("vitals.sbp_mmhg", "68"), ("vitals.dbp_mmhg", "40"), ("infusions.norepinephrine_mcg_kg_min", "0")]


def test_the_start_up_link_works_once_and_sets_a_strict_http_only_cookie(local):
    ctx, client = local
    token = ctx.auth.start_token
    assert client.get("/ui/login?token=wrong", follow_redirects=False).status_code == 401
    response = client.get(f"/ui/login?token={token}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    again = client.get(f"/ui/login?token={token}", follow_redirects=False)
    assert again.status_code == 401 and "already used" in again.text
    # a forged or tampered cookie is no session
    client.cookies.set(COOKIE, response.cookies[COOKIE][:-2] + "xx")
    assert client.get("/ui/").status_code == 401


def test_without_a_session_no_patient_data_and_no_audit_record(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    recorded = post(client, "/ui/advice", [*SEPTIC, ("record", "1"), ("csrf_token", csrf)], **{"hx-request": "true"})
    record_id = re.search(r"/ui/audit/([0-9a-f-]{36})", recorded.text).group(1)
    assert client.get(f"/ui/audit/{record_id}").status_code == 200
    client.cookies.clear()
    for path in ("/ui/", "/ui/?example=septic-shock-adult", "/ui/?witness=0", f"/ui/?record={record_id}", "/ui/rules",
                 "/ui/rules/target.map-65", "/ui/lint", "/ui/coverage", "/ui/diff", "/ui/audit", f"/ui/audit/{record_id}",
                 "/ui/audit/export", "/ui/audit/export?format=csv"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert record_id not in response.text and "septic" not in response.text and "72" not in response.text, path
    for path in ("/ui/advice", "/ui/explain", "/ui/document", "/ui/audit/verify", f"/ui/audit/{record_id}/replay"):
        response = post(client, path, [*SEPTIC, ("csrf_token", csrf)])
        assert response.status_code == 401 and record_id not in response.text, path


def test_sign_out_ends_the_session_in_this_browser(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    response = post(client, "/ui/logout", {"csrf_token": csrf})
    assert response.history[0].status_code == 303 and "Sign in to pressor" in response.text
    assert 'pressor_ui=""' in response.history[0].headers["set-cookie"]
    assert client.get("/ui/").status_code == 401


def test_every_post_needs_the_session_csrf_token_and_our_origin(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    assert post(client, "/ui/advice", SEPTIC).status_code == 403
    assert post(client, "/ui/advice", [*SEPTIC, ("csrf_token", "forged")]).status_code == 403
    assert post(client, "/ui/advice", [*SEPTIC, ("csrf_token", csrf)], **{"origin": "https://evil.example"}).status_code == 403
    assert post(client, "/ui/audit/verify", {}).status_code == 403
    assert post(client, "/ui/logout", {}).status_code == 403
    assert post(client, "/ui/advice", SEPTIC, **{"x-csrf-token": csrf, "origin": "http://127.0.0.1"}).status_code == 200
    ok = post(client, "/ui/advice", [*SEPTIC, ("csrf_token", csrf)], **{"hx-request": "true"})
    assert ok.status_code == 200 and "For 72 kg: 1.44-3.6 mcg/min" in ok.text and "Preview" in ok.text


def test_pages_carry_a_strict_csp_and_no_inline_script_or_outside_asset(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    post(client, "/ui/advice", [*SEPTIC, ("record", "1"), ("csrf_token", csrf)])
    record_id = re.search(r'href="/ui/audit/([0-9a-f-]{36})"', client.get("/ui/audit").text).group(1)
    for path in ("/ui/", "/ui/?example=septic-shock-adult", "/ui/rules", "/ui/rules/norepinephrine.dose-adult", "/ui/lint",
                 "/ui/coverage", "/ui/diff?old=current&new=current", "/ui/audit", f"/ui/audit/{record_id}"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert response.headers["cache-control"] == "no-store" and response.headers["x-frame-options"] == "DENY"
        html = response.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"inline script in {path}"
        assert not re.search(r"\son[a-z]+=", html), f"inline event handler in {path}"
        assert not re.search(r'(?:src|href)="(?:https?:)?//', html), f"outside asset in {path}"
        assert "style=" not in html, f"inline style in {path}"
    assert client.get("/ui/static/htmx.min.js").status_code == 200


def test_advice_records_and_the_record_replays_and_verifies(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    page = post(client, "/ui/advice", [*SEPTIC, ("record", "1"), ("csrf_token", csrf)])
    assert "Recorded in the audit log as" in page.text
    record_id = re.search(r"/ui/audit/([0-9a-f-]{36})", page.text).group(1)
    record = client.get(f"/ui/audit/{record_id}").text
    assert "local:tester" in record and "For 72 kg: 1.44-3.6 mcg/min" in record and "the start of the chain" in record
    assert "Chain verified: 1 records" in post(client, "/ui/audit/verify", {"csrf_token": csrf}).text
    assert "the result is identical" in post(client, f"/ui/audit/{record_id}/replay", {"csrf_token": csrf}).text
    listing = client.get("/ui/audit?user=tester&rule=norepinephrine.start-emergency&version=" + ctx.pack.version).text
    assert record_id[:8] in listing
    assert record_id[:8] not in client.get("/ui/audit?user=someone-else").text
    export = client.get("/ui/audit/export?format=csv")
    assert export.status_code == 200 and record_id in export.text and "attachment" in export.headers["content-disposition"]
    # the record's input opens in the clinician view
    assert 'value="72"' in client.get(f"/ui/?record={record_id}").text
    # the pack stored with the record is rebuilt from the log and compared with the one being served
    diff = client.get(f"/ui/diff?old=stored:{ctx.pack.sha256}&new=current")
    assert diff.status_code == 200 and "0 added, 0 removed, 0 changed" in diff.text


def test_feedback_on_cards_appears_beside_the_record_that_issued_them(local, now):
    from pressor.engine.audit import AuditLog
    from pressor.engine.evaluation.evaluate import evaluate
    from pressor.service.cards import card_uuid

    ctx, client = local
    signed_in(ctx, client)
    state = {"patient": {"weight_kg": 72, "age_years": 68, "pregnant": False}, "shock": {"type": "septic"},
             "vitals": {"map_mmhg": 50, "sbp_mmhg": 68, "dbp_mmhg": 40}, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    result = evaluate(ctx.pack, state, now=now)
    fired = result.recommendations[0]
    with AuditLog.open(ctx.audit_path) as log:
        record = log.append(ctx.pack, state, result, now=now, user="https://ehr.test|app", hook_instance="hook-1")
        card = card_uuid("hook-1", fired.rule_id, fired.rule_version, ctx.pack.sha256)
        log.append_feedback([{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-24T12:05:00Z",
                              "overrideReason": {"reason": {"code": "refused", "display": "Patient refused"}}}],
                            service="pressor-patient-view", now=now, user="https://ehr.test|app")
    page = client.get(f"/ui/audit/{record.id}").text
    assert "Cards issued and their feedback" in page and "overridden (reason: Patient refused)" in page and card[:8] in page
    assert "hook-1" in page


def test_a_fhir_bundle_can_be_pasted(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    bundle = (EXAMPLES / "fhir" / "septic-adult.json").read_text()
    page = post(client, "/ui/document", {"kind": "fhir", "document": bundle, "csrf_token": csrf})
    assert page.status_code == 200 and "FHIR conversion" in page.text and 'class="rec sev-' in page.text
    assert post(client, "/ui/document", {"kind": "fhir", "document": "x" * 2_100_000, "csrf_token": csrf}).status_code == 413
    bad = post(client, "/ui/document", {"kind": "fhir", "document": "{not json", "csrf_token": csrf})
    assert bad.status_code == 400 and "Traceback" not in bad.text
    state = post(client, "/ui/document", {"kind": "state", "document": "patient: {weight_kg: 72}", "csrf_token": csrf})
    assert state.status_code == 200 and 'value="72"' in state.text


def test_a_timeline_input_is_read_by_the_engine(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    example = EXAMPLES / "timeline" / "septic-persisting.yaml"
    page = post(client, "/ui/document", {"kind": "state", "document": example.read_text(), "csrf_token": csrf})
    assert page.status_code == 200 and 'class="rec sev-' in page.text and "pasted input: read into the form" in page.text
    assert 'href="/ui/?example=timeline/septic-persisting"' in client.get("/ui/").text
    bad = post(client, "/ui/document", {"kind": "state", "document": "timeline: 3", "csrf_token": csrf})
    assert bad.status_code == 400 and "Traceback" not in bad.text


def test_refused_states_say_why_without_a_traceback(local):
    ctx, client = local
    csrf = signed_in(ctx, client)
    page = post(client, "/ui/advice", [("patient.weight_kg", "9999"), ("csrf_token", csrf)], **{"hx-request": "true"})
    assert page.status_code == 200 and "refused" in page.text and "/patient/weight_kg" in page.text
    page = post(client, "/ui/advice", [("patient.weight_kg", "heavy"), ("csrf_token", csrf)], **{"hx-request": "true"})
    assert "not a number" in page.text


def test_conditional_advice_and_questions_render_when_the_result_has_them(pack, now):
    """The conditional-advice work adds ``conditional``, ``ask_next`` and ``not_applicable`` to the
    Result; the panel shows them when present and works without them."""
    from pressor.engine.evaluation.evaluate import evaluate

    result = evaluate(pack, {"patient": {"weight_kg": 72}}, now=now).to_dict()
    for key in ("conditional", "ask_next", "not_applicable"):
        result.pop(key, None)
    template = templates.env.get_template("advice.html")
    plain = template.render(advice={"result": result, "form_errors": {}}, PREFIX="/ui")
    assert "conditional advice" not in plain and "Ask first" not in plain and "Not applicable" not in plain
    cite = {"number": 2, "title": "A reference", "resolved": True}
    result["conditional"] = [{"rule_id": "norepinephrine.start", "rule_version": "1.0.0", "status": "approved",
                              "kind": "do", "severity": "critical", "title": "Start", "summary": "start norepinephrine",
                              "detail": "", "citations": [cite], "source_section": "Initial Dosing",
                              "if": {"condition": {"fact": "vitals.map_mmhg", "op": "<", "value": 65},
                                     "text": "MAP < 65 mmHg", "facts": ["vitals.map_mmhg"]}}]
    result["ask_next"] = [{"fact": "vitals.map_mmhg", "question": "What is the MAP?",
                           "decides": [{"rule_id": "norepinephrine.start", "severity": "critical", "title": "Start"}]}]
    result["not_applicable"] = [{"rule_id": "special.anaphylaxis", "rule_version": "1.0.0", "title": "Anaphylaxis",
                                 "because": "not in anaphylactic shock"}]
    shown = template.render(advice={"result": result, "form_errors": {}}, PREFIX="/ui")
    assert "MAP &lt; 65 mmHg: start norepinephrine" in shown and 'href="#f-vitals-map_mmhg"' in shown
    assert "Ask first" in shown and "What is the MAP?" in shown
    assert "not in anaphylactic shock" in shown


def test_rule_browser_filters(local):
    ctx, client = local
    signed_in(ctx, client)
    page = client.get("/ui/rules?drug=vasopressin").text
    assert "escalation.add-vasopressin" in page and "target.map-65" not in page
    page = client.get("/ui/rules?status=approved&section=" + ctx.pack.rule("target.map-65").section).text
    assert "target.map-65" in page
    rule = client.get("/ui/rules/norepinephrine.dose-adult").text
    assert "0.02-0.05 mcg/kg/min" in rule and "Cited for:" in rule and "status_history" not in rule
    # the condition in words, with the derived facts it reads spelt out down to patient facts
    assert "Shock type is one of septic, cardiogenic" in rule and "Pregnant: no" in rule
    assert "SBP (mmHg) is below 70" in rule and "Age (years) is below 18" in rule
    assert client.get("/ui/rules/no.such-rule").status_code == 404
    # a rule's own examples open in the clinician view
    assert 'href="/ui/?rule_example=norepinephrine.dose-adult:0"' in rule
    example = client.get("/ui/?rule_example=norepinephrine.dose-adult:0")
    assert example.status_code == 200 and "Example of rule norepinephrine.dose-adult" in example.text
    assert client.get("/ui/?rule_example=norepinephrine.dose-adult:99").status_code == 404


# --- served mode: OpenID Connect ---------------------------------------------------------------

@pytest.fixture(scope="module")
def idp_key():
    return ec.generate_private_key(ec.SECP384R1())


def _config(tmp_path, idp_key, **extra) -> Path:
    pem = idp_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    config = {"issuers": [{"iss": ISS, "keys": [{"kid": KID, "pem": pem}]}], "audit_db": str(tmp_path / "audit.db"), **extra}
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, idp_key):
    from pressor.service.app import SETTINGS_ENV, Settings
    from pressor.service.ui.served import SECRET_ENV, create_served_app

    tmp = tmp_path_factory.mktemp("served")
    config = _config(tmp, idp_key, ui={"oidc": {"issuer": ISS, "client_id": CLIENT_ID,
                                                 "authorization_endpoint": "https://idp.test.invalid/authorize"}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SETTINGS_ENV, Settings(config_path=str(config)).to_env())
        mp.setenv(SECRET_ENV, "00" * 32)
        with TestClient(create_served_app(), base_url="http://127.0.0.1") as client:
            yield client


@pytest.fixture()
def served(served_app):
    """The served app (one per module), signed out."""
    served_app.cookies.clear()
    return served_app


def id_token(key, nonce: str, **override) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "sub": "dr.lee", "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": nonce,
              "jti": str(uuid.uuid4()), **override}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": KID})


def start_sign_in(client) -> tuple[str, str]:
    response = client.get("/ui/login", follow_redirects=False)
    assert response.status_code == 303
    target = urlparse(response.headers["location"])
    query = parse_qs(target.query)
    assert target.netloc == "idp.test.invalid" and query["response_type"] == ["id_token"]
    assert query["response_mode"] == ["form_post"] and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == ["http://127.0.0.1/ui/login/callback"]
    return query["state"][0], query["nonce"][0]


def test_served_app_signs_in_with_the_oidc_provider_and_keeps_the_cds_service(served, idp_key):
    client = served
    assert client.get("/healthz").status_code == 200
    assert client.get("/ui/").status_code == 401
    state, nonce = start_sign_in(client)
    response = post(client, "/ui/login/callback", {"id_token": id_token(idp_key, nonce), "state": state})
    assert response.status_code == 200 and 'http-equiv="refresh"' in response.text
    assert "SameSite=strict" in response.headers["set-cookie"] and "HttpOnly" in response.headers["set-cookie"]
    client.cookies.set(COOKIE, response.cookies[COOKIE])
    page = client.get("/ui/")
    assert page.status_code == 200 and f"{ISS}|dr.lee" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    recorded = post(client, "/ui/advice", [*SEPTIC, ("record", "1"), ("csrf_token", csrf)])
    assert "Recorded in the audit log" in recorded.text
    assert f"{ISS}|dr.lee" in client.get("/ui/audit").text


@pytest.mark.parametrize("case", ["wrong nonce", "wrong audience", "expired", "forged state", "unknown key", "other key"])
def test_served_app_refuses_bad_id_tokens(served, idp_key, case):
    client = served
    state, nonce = start_sign_in(client)
    token = {
        "wrong nonce": lambda: id_token(idp_key, "another"),
        "wrong audience": lambda: id_token(idp_key, nonce, aud="someone-else"),
        "expired": lambda: id_token(idp_key, nonce, iat=int(time.time()) - 3600, exp=int(time.time()) - 1800),
        "forged state": lambda: id_token(idp_key, nonce),
        "unknown key": lambda: jwt.encode({"iss": ISS, "sub": "x", "aud": CLIENT_ID, "iat": int(time.time()),
                                           "exp": int(time.time()) + 60, "nonce": nonce}, idp_key, algorithm="ES384",
                                          headers={"kid": "nope"}),
        "other key": lambda: id_token(ec.generate_private_key(ec.SECP384R1()), nonce),
    }[case]()
    if case == "forged state":
        state = state[:-3] + "abc"
    response = post(client, "/ui/login/callback", {"id_token": token, "state": state})
    assert response.status_code == 401 and COOKIE not in response.headers.get("set-cookie", "")
    assert client.get("/ui/").status_code == 401


def test_behind_a_proxy_the_base_url_is_the_origin_and_the_redirect_uri(tmp_path, idp_key, monkeypatch):
    """TLS ends at the balancer: the app sees http, the browser says https://cds.example.org."""
    from pressor.service.app import SETTINGS_ENV, Settings
    from pressor.service.ui.served import create_served_app

    config = _config(tmp_path, idp_key, base_url="https://cds.example.org",
                     ui={"oidc": {"issuer": ISS, "client_id": CLIENT_ID, "authorization_endpoint": "https://idp.test.invalid/a"}})
    monkeypatch.setenv(SETTINGS_ENV, Settings(config_path=str(config)).to_env())
    with TestClient(create_served_app(), base_url="http://10.0.0.5:8080") as client:
        location = client.get("/ui/login", follow_redirects=False).headers["location"]
        query = parse_qs(urlparse(location).query)
        assert query["redirect_uri"] == ["https://cds.example.org/ui/login/callback"]
        response = post(client, "/ui/login/callback", {"id_token": id_token(idp_key, query["nonce"][0]), "state": query["state"][0]})
        assert "Secure" in response.headers["set-cookie"]
        client.cookies.set(COOKIE, response.cookies[COOKIE])
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/").text).group(1)
        inside = post(client, "/ui/advice", [*SEPTIC, ("csrf_token", csrf)], origin="https://cds.example.org")
        assert inside.status_code == 200
        assert post(client, "/ui/advice", [*SEPTIC, ("csrf_token", csrf)], origin="http://10.0.0.5:8080").status_code == 403


def test_serve_ui_needs_an_oidc_provider_unless_insecure(tmp_path, idp_key):
    config = _config(tmp_path, idp_key)
    result = CliRunner().invoke(cli, ["serve", "--ui", "--config", str(config)])
    assert result.exit_code == 2 and "ui: {oidc" in result.output
    config = _config(tmp_path, idp_key, ui={"oidc": {"issuer": "https://other.invalid", "client_id": "x",
                                                      "authorization_endpoint": "https://other.invalid/a"}})
    result = CliRunner().invoke(cli, ["serve", "--ui", "--config", str(config)])
    assert result.exit_code == 2 and "not one of the configured 'issuers'" in result.output


def test_insecure_served_app_says_so_on_every_page(tmp_path, idp_key, monkeypatch):
    from pressor.service.app import SETTINGS_ENV, Settings
    from pressor.service.ui.served import create_served_app

    monkeypatch.setenv(SETTINGS_ENV, Settings(config_path=str(_config(tmp_path, idp_key)), insecure=True).to_env())
    with TestClient(create_served_app(), base_url="http://127.0.0.1") as client:
        page = client.get("/ui/rules")
        assert page.status_code == 200 and "Authentication is disabled" in page.text


def test_pressor_serve_ui_serves_the_app_beside_the_cds_hooks_service(tmp_path):
    """The real command: uvicorn loads the served factory; CDS Hooks and the web app answer on one port."""
    import os
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = open(tmp_path / "serve.err", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("pressor")), "serve", "--ui", "--insecure-no-auth",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=err,
                            env={**os.environ, "PRESSOR_AUDIT_DB": str(tmp_path / "audit.db")})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.err").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        page = httpx.get(f"http://127.0.0.1:{port}/ui/rules", timeout=10)
        assert page.status_code == 200 and "Authentication is disabled" in page.text
        assert page.headers["content-security-policy"] == CSP
        assert httpx.get(f"http://127.0.0.1:{port}/ui/static/pressor.css", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        err.close()
