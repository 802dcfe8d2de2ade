"""The web app without a browser (Starlette's test client): the form built from the schema, sign-in
(one-time link; OpenID Connect in served mode, against a provider the tests run on 127.0.0.1), CSRF, the security headers, no data without a session,
FHIR paste, and the conditional advice rendered when the result carries it."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import yaml
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    # a second record: each record's page links to its neighbours in the chain
    second = post(client, "/ui/advice", [*SEPTIC, ("record", "1"), ("csrf_token", csrf)])
    second_id = re.search(r"/ui/audit/([0-9a-f-]{36})", second.text).group(1)
    assert f'/ui/audit/{second_id}">record #2' in client.get(f"/ui/audit/{record_id}").text
    second_page = client.get(f"/ui/audit/{second_id}").text
    assert f'/ui/audit/{record_id}">record #1' in second_page and "the head of the chain" in second_page


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


@pytest.mark.slow
def test_a_record_made_under_a_site_profile_is_compared_and_replayed_with_that_profile(pack, audit_db, now, tmp_path):
    """The profile raises the vasopressin threshold and the standard bag (dose parameters). A record made under it
    is compared with its stored pack *under that profile*: against the next pack under the same profile there is
    no difference (the pack without the profile would differ in every changed parameter and in behaviour)."""
    import shutil

    from pressor.engine.audit import AuditLog
    from pressor.engine.evaluation.evaluate import evaluate
    from pressor.engine.evaluation.pack import default_rules_dir, load_pack, rule_files

    profile_file = EXAMPLES / "profiles" / "teaching-hospital-icu.yaml"
    profiled = load_pack(profile=profile_file)
    assert profiled.sha256 == pack.sha256 and profiled.profile is not None
    state = {"patient": {"weight_kg": 72, "age_years": 68, "pregnant": False}, "shock": {"type": "septic"},
             "vitals": {"map_mmhg": 50, "sbp_mmhg": 68, "dbp_mmhg": 40}, "infusions": {"norepinephrine_mcg_kg_min": 0}}
    with AuditLog.open(audit_db) as log:
        record = log.append(profiled, state, evaluate(profiled, state, now=now), now=now, user="local:tester")
    profile_sha = profiled.profile.sha256
    changed = {p.name for p in profiled.profile.changed}
    assert "vasopressin_start_norepinephrine_mcg_kg_min" in changed and "norepinephrine_standard_bag_mg" in changed

    # the next pack (same rules, one file touched: another SHA-256), served under the same site profile
    next_dir = tmp_path / "next-pack"
    next_dir.mkdir()
    for path in rule_files(default_rules_dir()):
        shutil.copy(path, next_dir / path.name)
    with open(next_dir / "references.yaml", "a", encoding="utf-8") as fh:
        fh.write("# touched: a new pack SHA-256, the same content\n")
    serving = load_pack(next_dir, profile=profile_file)
    assert serving.sha256 != pack.sha256
    ctx = UiContext(pack=serving, auth=Auth.local("local:tester"), audit_path=audit_db,
                    scenario_paths=(str(ROOT / "tests" / "scenarios"),))
    with TestClient(create_ui_app(ctx), base_url="http://127.0.0.1") as client:
        csrf = signed_in(ctx, client)
        page = client.get(f"/ui/audit/{record.id}").text
        key = f"stored:{pack.sha256}:{profile_sha}"
        assert "site profile <strong>example-teaching-hospital-icu</strong>" in page
        assert f'href="/ui/diff?old={key.replace(":", "%3A")}&amp;new=current"' in page
        assert f'<option value="{key}"' in client.get("/ui/diff").text  # listed with its profile among the choices

        same = client.get(f"/ui/diff?old={key}&new=current").text
        assert "0 added, 0 removed, 0 changed;\n  0 behaviour changes" in same, same
        # what comparing the stored pack without its profile shows: the profile's parameters, as if they had changed
        bare = client.get(f"/ui/diff?old=stored:{pack.sha256}&new=current").text
        counts = re.search(r"0 added, 0 removed, (\d+) changed;\s+(\d+) behaviour changes", bare)
        assert counts and int(counts.group(1)) >= len(changed) and int(counts.group(2)) > 0, bare
        assert "vasopressin_start_norepinephrine_mcg_kg_min" in bare and "diff-version-not-bumped" in bare

        assert "the result is identical" in post(client, f"/ui/audit/{record.id}/replay", {"csrf_token": csrf}).text
        missing = client.get(f"/ui/diff?old=stored:{pack.sha256}:{'0' * 64}&new=current").text
        assert "is not stored in the audit log" in missing and "Traceback" not in missing

    # served without the profile, the record's own pack is not "the pack being served": its parameters differ
    plain = UiContext(pack=pack, auth=Auth.local("local:tester"), audit_path=audit_db)
    with TestClient(create_ui_app(plain), base_url="http://127.0.0.1") as client:
        signed_in(plain, client)
        page = client.get(f"/ui/audit/{record.id}").text
        assert "being served)" not in page and "compare with the pack being served" in page
    same_ctx = UiContext(pack=profiled, auth=Auth.local("local:tester"), audit_path=audit_db)
    with TestClient(create_ui_app(same_ctx), base_url="http://127.0.0.1") as client:
        signed_in(same_ctx, client)
        page = client.get(f"/ui/audit/{record.id}").text
        assert "(the pack and site profile being served)" in page and "compare with the pack being served" not in page


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


# --- served mode: OpenID Connect (authorization code flow with PKCE, against a provider on 127.0.0.1) ---

CLIENT_SECRET = "s3cret: with spaces & symbols"
SECRET_VAR = "PRESSOR_TEST_UI_CLIENT_SECRET"


@pytest.fixture(scope="module")
def idp_key():
    """The key of a CDS Hooks issuer (the served app keeps its CDS Hooks service)."""
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def provider():
    from tests.oidc_provider import FakeOidcProvider

    idp = FakeOidcProvider(CLIENT_ID, CLIENT_SECRET).start()
    yield idp
    idp.stop()


def _config(tmp_path, idp_key, **extra) -> Path:
    pem = idp_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    config = {"issuers": [{"iss": ISS, "keys": [{"kid": KID, "pem": pem}]}], "audit_db": str(tmp_path / "audit.db"), **extra}
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(config))
    return path


def _oidc(provider, **extra) -> dict:
    return {"oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret_env": SECRET_VAR, "timeout_s": 1,
                     **extra}}


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, idp_key, provider):
    from pressor.service.app import SETTINGS_ENV, Settings
    from pressor.service.ui.served import SECRET_ENV, create_served_app

    tmp = tmp_path_factory.mktemp("served")
    config = _config(tmp, idp_key, ui=_oidc(provider), jwks={"min_refetch_s": 0}, log_file=str(tmp / "requests.jsonl"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SETTINGS_ENV, Settings(config_path=str(config)).to_env())
        mp.setenv(SECRET_ENV, "00" * 32)
        mp.setenv(SECRET_VAR, CLIENT_SECRET)
        with TestClient(create_served_app(), base_url="http://127.0.0.1") as client:
            client.log_file = tmp / "requests.jsonl"
            yield client


@pytest.fixture()
def served(served_app, provider):
    """The served app (one per module), signed out, its provider back to normal."""
    served_app.cookies.clear()
    provider.reset()
    return served_app


def start_sign_in(client) -> tuple[str, dict]:
    """``/ui/login``: the provider's URL (checked to be a code request with PKCE) and its query."""
    response = client.get("/ui/login", follow_redirects=False)
    assert response.status_code == 303, response.text
    assert "pressor_ui_signin" in response.headers["set-cookie"] and "SameSite=lax" in response.headers["set-cookie"]
    location = response.headers["location"]
    query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["client_id"] == CLIENT_ID and query["redirect_uri"] == "http://127.0.0.1/ui/login/callback"
    assert query["state"] and query["nonce"] and len(query["code_challenge"]) == 43
    assert "code_verifier" not in location and CLIENT_SECRET not in location
    return location, query


def at_provider(location: str) -> str:
    """The browser at the provider, which signs the user in at once: the callback path and query."""
    import httpx

    answer = httpx.get(location, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlparse(answer.headers["location"])
    assert f"{back.scheme}://{back.netloc}" == "http://127.0.0.1"
    return f"{back.path}?{back.query}"


def sign_in(client):
    """The whole sign-in; the callback's response."""
    location, _ = start_sign_in(client)
    return client.get(at_provider(location))


def log_lines(client) -> list[dict]:
    return [json.loads(line) for line in client.log_file.read_text().splitlines() if line.strip()]


def test_served_app_signs_in_with_the_code_flow_and_pkce_and_keeps_the_cds_service(served, provider):
    client = served
    assert client.get("/healthz").status_code == 200
    assert client.get("/ui/").status_code == 401
    location, query = start_sign_in(client)
    response = client.get(at_provider(location))
    assert response.status_code == 200 and 'http-equiv="refresh"' in response.text
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith(f"{COOKIE}="))
    assert "SameSite=strict" in session_cookie and "HttpOnly" in session_cookie and "Path=/ui" in session_cookie
    assert any(c.startswith('pressor_ui_signin=""') for c in cookies)  # the sign-in cookie is spent with it
    # the provider checked PKCE (it refuses a verifier that does not hash to the challenge) and the client secret
    exchange = provider.paths("/token")[-1]
    verifier = exchange["form"]["code_verifier"]
    assert base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode() == query["code_challenge"]
    assert exchange["headers"]["Authorization"].startswith("Basic ") and "client_secret" not in exchange["form"]
    page = client.get("/ui/")
    assert page.status_code == 200 and f"{provider.issuer}|dr.lee" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    recorded = post(client, "/ui/advice", [*SEPTIC, ("record", "1"), ("csrf_token", csrf)])
    assert "Recorded in the audit log" in recorded.text
    assert f"{provider.issuer}|dr.lee" in client.get("/ui/audit").text


@pytest.mark.parametrize("case, claims, reason", [
    ("wrong nonce", {"nonce": "another"}, "nonce does not belong to this sign-in"),
    ("wrong audience", {"aud": "someone-else"}, "Audience doesn"),
    ("wrong issuer", {"iss": "http://127.0.0.1:1"}, "Invalid issuer"),
    ("expired", {"iat": int(time.time()) - 3600, "exp": int(time.time()) - 1800}, "Signature has expired"),
    ("issued in the future", {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, "not yet valid"),
    ("no nonce", {"nonce": None}, "nonce"),
    ("wrong at_hash", {"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "at_hash does not match"),
    ("several audiences, no azp", {"aud": [CLIENT_ID, "another-app"]}, "azp"),
])
def test_served_app_refuses_bad_id_tokens(served, provider, case, claims, reason):
    client = served
    provider.claims = claims
    response = sign_in(client)
    assert response.status_code == 401 and reason in response.text, response.text
    assert f"{COOKIE}=" not in response.headers.get("set-cookie", "").replace('pressor_ui_signin=', '')
    assert "Traceback" not in response.text and client.get("/ui/").status_code == 401
    assert any(line.get("event") == "auth_failed" and reason in line["reason"] for line in log_lines(client))


def test_an_unknown_key_is_refused_then_a_rotated_key_is_fetched(served, provider):
    client = served
    assert sign_in(client).status_code == 200  # the key set is held now
    fetched = len(provider.paths("/jwks"))
    kid = provider.rotate(publish=False)  # signs with a key its key set does not publish (yet)
    client.cookies.clear()
    refused = sign_in(client)
    assert refused.status_code == 401 and "unknown key id" in refused.text and kid in refused.text
    assert len(provider.paths("/jwks")) == fetched + 1  # an unknown kid: fetched again (min_refetch_s 0 here)
    provider.published.append(kid)  # the provider publishes its new key
    client.cookies.clear()
    assert sign_in(client).status_code == 200
    assert len(provider.paths("/jwks")) == fetched + 2
    assert client.get("/ui/").status_code == 200


def test_a_state_is_spent_once_and_a_code_once(served, provider):
    client = served
    location, _ = start_sign_in(client)
    browser_cookie = client.cookies.get("pressor_ui_signin")
    callback = at_provider(location)
    assert client.get(callback).status_code == 200
    # the same answer again, from the same browser (its sign-in cookie put back): the state is spent
    client.cookies.clear()
    client.cookies.set("pressor_ui_signin", browser_cookie, path="/ui/login")
    again = client.get(callback)
    assert again.status_code == 401 and "already used" in again.text
    # the same code with a fresh sign-in of this browser: the provider refuses it (used once, and PKCE differs)
    code = parse_qs(urlparse(callback).query)["code"][0]
    client.cookies.clear()
    _, query = start_sign_in(client)
    injected = client.get("/ui/login/callback?" + urlencode({"code": code, "state": query["state"]}))
    assert injected.status_code == 401 and "invalid_grant" in injected.text
    assert client.get("/ui/").status_code == 401


def test_a_sign_in_answer_is_refused_in_another_browser(served, served_app, provider):
    client = served
    location, _ = start_sign_in(client)
    callback = at_provider(location)
    stolen = client.cookies.get("pressor_ui_signin")
    client.cookies.clear()  # another browser: no sign-in cookie ...
    refused = client.get(callback)
    assert refused.status_code == 401 and "not started in this browser" in refused.text
    start_sign_in(client)  # ... or the cookie of a sign-in of its own
    refused = client.get(callback)
    assert refused.status_code == 401 and "not started in this browser" in refused.text
    client.cookies.clear()
    client.cookies.set("pressor_ui_signin", stolen, path="/ui/login")  # the right browser still can
    assert client.get(callback).status_code == 200
    forged = client.get("/ui/login/callback?" + urlencode({"code": "x", "state": "forged.state"}))
    assert forged.status_code == 401 and "missing, forged or expired" in forged.text


def test_the_provider_refusing_is_a_clear_sign_in_page(served, provider):
    provider.deny = "access_denied"
    response = sign_in(served)
    assert response.status_code == 401 and "access_denied" in response.text and "declined" in response.text
    assert 'href="/ui/login"' in response.text and served.get("/ui/").status_code == 401
    assert any(line.get("event") == "auth_failed" and "access_denied" in line["reason"] for line in log_lines(served))


@pytest.mark.parametrize("mode, reason", [
    ("slow", "did not answer within 1 s"),
    ("drop", "could not be reached"),
    ("garbage", "not a JSON token response"),
    ("500", "answered HTTP 500"),
])
def test_a_token_endpoint_down_slow_or_garbled_is_a_502_with_the_reason(served, provider, mode, reason):
    provider.token_mode = mode
    response = sign_in(served)
    assert response.status_code == 502 and reason in response.text and "Traceback" not in response.text
    assert served.get("/ui/").status_code == 401
    assert any(line.get("event") == "auth_failed" and reason in line["reason"] for line in log_lines(served))


def test_sign_out_ends_the_session_even_for_a_copy_of_its_cookie(served):
    client = served
    assert sign_in(client).status_code == 200
    copied = client.cookies.get(COOKIE)
    page = client.get("/ui/")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert post(client, "/ui/logout", {"csrf_token": csrf}).status_code == 401  # followed to the sign-in page
    client.cookies.set(COOKIE, copied, path="/ui")
    refused = client.get("/ui/audit")
    assert refused.status_code == 401 and "Sign in to pressor" in refused.text
    assert post(client, "/ui/audit/verify", {"csrf_token": csrf}).status_code == 401
    client.cookies.clear()
    assert sign_in(client).status_code == 200 and client.get("/ui/").status_code == 200  # a new session is a new id


def test_sign_out_at_a_provider_with_an_end_session_endpoint(served, provider, tmp_path, monkeypatch, idp_key):
    """RP-initiated logout: the local session ends as before, then the browser goes to the provider's
    end_session_endpoint with the ID token as id_token_hint and the app's configured URL to come back to."""
    import httpx

    def signed_out(client) -> str:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/").text).group(1)
        copied = client.cookies.get(COOKIE)
        response = post(client, "/ui/logout", {"csrf_token": csrf}, origin="http://127.0.0.1")
        assert response.status_code == 200 and any(c.startswith(f'{COOKIE}=""') for c in response.headers.get_list("set-cookie"))
        # the local session is over, for a copy of its cookie too
        client.cookies.set(COOKIE, copied, path="/ui")
        assert client.get("/ui/audit").status_code == 401
        client.cookies.clear()
        url = re.search(r'<meta http-equiv="refresh" content="0;url=([^"]+)">', response.text).group(1)
        return url.replace("&amp;", "&")

    # without an end_session_endpoint (the module's app): signing out stays local, back to /ui/
    assert sign_in(served).status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', served.get("/ui/").text).group(1)
    local = served.post("/ui/logout", content=urlencode({"csrf_token": csrf}), follow_redirects=False,
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert local.status_code == 303 and local.headers["location"] == "/ui/" and not provider.paths("/logout")

    provider.end_session = True
    provider.post_logout_redirect_uris.add("http://127.0.0.1/ui/")
    try:  # a new app: the module's app keeps the discovery document it read (an hour)
        with _served_client(tmp_path, monkeypatch, idp_key, _oidc(provider), base_url="http://127.0.0.1") as client:
            assert sign_in(client).status_code == 200
            url = signed_out(client)
            parts = urlparse(url)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{provider.issuer}/logout"
            assert query == {"id_token_hint": provider.issued[-1], "client_id": CLIENT_ID,
                             "post_logout_redirect_uri": "http://127.0.0.1/ui/"}
            # the provider accepts the hint and sends the browser back to the app's own sign-in page
            at_idp = httpx.get(url, follow_redirects=False, timeout=10)
            assert at_idp.status_code == 302 and at_idp.headers["location"] == "http://127.0.0.1/ui/", at_idp.text
            assert client.get("/ui/").status_code == 401

            # an ID token too big for the cookie is not kept: the provider is sent client_id alone
            provider.claims = {"groups": ["group-%04d" % i for i in range(400)]}
            assert sign_in(client).status_code == 200
            query = parse_qs(urlparse(signed_out(client)).query)
            assert "id_token_hint" not in query and query["client_id"] == [CLIENT_ID]
    finally:
        provider.reset()


def _served_client(tmp_path, monkeypatch, idp_key, ui: dict, **extra):
    from pressor.service.app import SETTINGS_ENV, Settings
    from pressor.service.ui.served import create_served_app

    config = _config(tmp_path, idp_key, ui=ui, **extra)
    monkeypatch.setenv(SETTINGS_ENV, Settings(config_path=str(config)).to_env())
    monkeypatch.setenv(SECRET_VAR, CLIENT_SECRET)
    return TestClient(create_served_app(), base_url=extra.get("base_url", "http://127.0.0.1"))


def test_client_secret_post_with_the_secret_in_a_file(tmp_path, monkeypatch, idp_key):
    from tests.oidc_provider import FakeOidcProvider

    idp = FakeOidcProvider(CLIENT_ID, CLIENT_SECRET, auth_method="client_secret_post").start()
    try:
        (tmp_path / "client-secret").write_text(CLIENT_SECRET + "\n")
        ui = {"oidc": {"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret_file": "client-secret",
                       "token_endpoint_auth_method": "client_secret_post"}}
        with _served_client(tmp_path, monkeypatch, idp_key, ui) as client:
            assert sign_in(client).status_code == 200 and client.get("/ui/").status_code == 200
        exchange = idp.paths("/token")[-1]
        assert exchange["form"]["client_secret"] == CLIENT_SECRET and "Authorization" not in exchange["headers"]
        assert CLIENT_SECRET not in (tmp_path / "serve.json").read_text()
    finally:
        idp.stop()


def test_discovery_must_name_the_configured_issuer_and_keep_to_its_host(tmp_path, monkeypatch, idp_key):
    from tests.oidc_provider import FakeOidcProvider

    idp = FakeOidcProvider(CLIENT_ID, CLIENT_SECRET).start()
    try:
        idp.discovery_issuer = idp.issuer + "/"
        with _served_client(tmp_path, monkeypatch, idp_key, _oidc(idp), jwks={"min_refetch_s": 0}) as client:
            response = client.get("/ui/login", follow_redirects=False)
            assert response.status_code == 502 and "must be equal" in response.text
            idp.discovery_issuer = None
            # an endpoint on a host the configuration does not name is never called
            original = idp.discovery
            idp.discovery = lambda: {**original(), "token_endpoint": "https://elsewhere.example/token"}
            response = client.get("/ui/login", follow_redirects=False)
            assert response.status_code == 502 and "not on the identity provider" in response.text
            idp.discovery = original
            assert sign_in(client).status_code == 200
    finally:
        idp.stop()
    with _served_client(tmp_path, monkeypatch, idp_key, _oidc(idp)) as client:  # the provider is gone
        response = client.get("/ui/login", follow_redirects=False)
        assert response.status_code == 502 and "could not be reached" in response.text


def test_outbound_urls_are_https_or_loopback_on_the_issuer_host():
    from pressor.service.ui.oidc import url_problem

    hosts = frozenset({"login.example.org"})
    assert url_problem("https://login.example.org/token", hosts) is None
    assert "https" in url_problem("http://login.example.org/token", hosts)
    assert "hosts" in url_problem("https://evil.example/token", hosts)
    assert url_problem("http://127.0.0.1:8080/x") is None and url_problem("http://localhost/x") is None
    assert url_problem("ftp://login.example.org/") is not None


def test_sign_in_marks_are_bounded_and_expire():
    from pressor.service.ui.auth import Marks

    marks = Marks(capacity=3)
    now = time.time()
    assert marks.mark("a", now + 60) and not marks.mark("a", now + 60)
    assert marks.mark("old", now - 1) and not marks.marked("old")
    for key in ("b", "c", "d"):
        marks.mark(key, now + 120)
    assert len(marks._until) <= 3 and marks.marked("d") and not marks.marked("a")  # "a" expired first: dropped


def test_behind_a_proxy_the_base_url_is_the_origin_and_the_redirect_uri(tmp_path, idp_key, provider, monkeypatch):
    """TLS ends at the balancer: the app sees http, the browser says https://cds.example.org."""
    provider.reset()
    with _served_client(tmp_path, monkeypatch, idp_key, _oidc(provider), base_url="https://cds.example.org") as client:
        client.base_url = "http://10.0.0.5:8080"
        response = client.get("/ui/login", follow_redirects=False)
        query = parse_qs(urlparse(response.headers["location"]).query)
        assert query["redirect_uri"] == ["https://cds.example.org/ui/login/callback"]
        assert "Secure" in response.headers["set-cookie"]
        client.cookies.set("pressor_ui_signin", response.cookies["pressor_ui_signin"], path="/ui/login")
        back = urlparse(at_provider_any(response.headers["location"]))
        assert back.netloc == "cds.example.org"
        response = client.get(f"{back.path}?{back.query}")
        assert response.status_code == 200, response.text
        assert "Secure" in response.headers["set-cookie"]
        client.cookies.set(COOKIE, response.cookies[COOKIE], path="/ui")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/").text).group(1)
        inside = post(client, "/ui/advice", [*SEPTIC, ("csrf_token", csrf)], origin="https://cds.example.org")
        assert inside.status_code == 200
        assert post(client, "/ui/advice", [*SEPTIC, ("csrf_token", csrf)], origin="http://10.0.0.5:8080").status_code == 403


def at_provider_any(location: str) -> str:
    import httpx

    answer = httpx.get(location, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def test_serve_ui_needs_a_usable_oidc_provider_unless_insecure(tmp_path, idp_key, provider, monkeypatch):
    config = _config(tmp_path, idp_key)
    result = CliRunner().invoke(cli, ["serve", "--ui", "--config", str(config)])
    assert result.exit_code == 2 and "ui: {oidc" in result.output
    monkeypatch.delenv(SECRET_VAR, raising=False)
    config = _config(tmp_path, idp_key, ui=_oidc(provider))
    result = CliRunner().invoke(cli, ["serve", "--ui", "--config", str(config)])
    assert result.exit_code == 2 and f"{SECRET_VAR} is not set" in result.output
    config = _config(tmp_path, idp_key, ui={"oidc": {"issuer": "http://login.example.org", "client_id": "x",
                                                      "client_secret_file": "missing"}})
    monkeypatch.setenv(SECRET_VAR, "x")
    result = CliRunner().invoke(cli, ["serve", "--ui", "--config", str(config)])
    assert result.exit_code == 2 and "missing cannot be read" in result.output
    (tmp_path / "missing").write_text("x")
    result = CliRunner().invoke(cli, ["serve", "--ui", "--config", str(config)])
    assert result.exit_code == 2 and "must use https" in result.output
    config = _config(tmp_path, idp_key, ui={"oidc": {"issuer": "https://login.example.org", "client_id": "x",
                                                      "client_secret": "in the file"}})
    result = CliRunner().invoke(cli, ["serve", "--ui", "--config", str(config)])
    assert result.exit_code == 1 and "client_secret" in result.output  # the schema refuses a secret in the file


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


def test_with_a_shared_replay_cache_every_worker_sees_spent_states_and_ended_sessions(tmp_path, idp_key, provider,
                                                                                       monkeypatch):
    """Two apps (as two workers, or two instances) sharing ``replay_cache`` and the session secret."""
    from pressor.service.ui.served import SECRET_ENV

    provider.reset()
    monkeypatch.setenv(SECRET_ENV, "11" * 32)
    extra = {"replay_cache": str(tmp_path / "replay.db")}
    with _served_client(tmp_path, monkeypatch, idp_key, _oidc(provider), **extra) as one, \
            _served_client(tmp_path, monkeypatch, idp_key, _oidc(provider), **extra) as two:
        location, _ = start_sign_in(one)
        browser_cookie = one.cookies.get("pressor_ui_signin")
        callback = at_provider(location)
        assert one.get(callback).status_code == 200
        two.cookies.set("pressor_ui_signin", browser_cookie, path="/ui/login")
        again = two.get(callback)
        assert again.status_code == 401 and "already used" in again.text
        session = one.cookies.get(COOKIE)
        two.cookies.set(COOKIE, session, path="/ui")
        assert two.get("/ui/").status_code == 200  # one session, valid in every worker
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', one.get("/ui/").text).group(1)
        post(one, "/ui/logout", {"csrf_token": csrf})
        assert two.get("/ui/").status_code == 401  # ended everywhere


def test_a_token_endpoint_that_is_down_is_a_502(tmp_path, monkeypatch, idp_key, provider):
    """Nothing listens where the (explicitly configured) token endpoint is: connection refused."""
    import socket

    provider.reset()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    ui = _oidc(provider, token_endpoint=f"http://127.0.0.1:{closed}/token")
    with _served_client(tmp_path, monkeypatch, idp_key, ui) as client:
        response = sign_in(client)
        assert response.status_code == 502 and "could not be reached" in response.text and f":{closed}/token" in response.text
        assert client.get("/ui/").status_code == 401


def test_the_advice_opens_with_the_plan_then_bans_then_questions_then_everything(pack, now):
    """Issue 18: the plan in the CLI's order and content (one answer per decision, with its dose and what goes with
    it), then the bans, then the questions, then a "show everything" toggle; 'because' says not / not recorded."""
    from pressor.engine.evaluation.evaluate import evaluate

    state = yaml.safe_load((EXAMPLES / "septic-shock-adult.yaml").read_text())
    result = evaluate(pack, state, now=now).to_dict()
    html = templates.env.get_template("advice.html").render(advice={"result": result, "form_errors": {}}, PREFIX="/ui")
    plan = result["plan"]
    at = [html.index(f'id="plan-{i["decision"]}"') for i in plan["items"]]
    assert at == sorted(at) and len(at) == len(plan["items"]) > 0
    everything = html.index('<details class="everything">')
    assert html.index(">Plan</h3>") < at[0] and at[-1] < everything
    if plan["questions"]:
        assert at[-1] < html.index(">Ask <") < everything
    assert "Show everything" in html
    norepinephrine = html[html.index('id="plan-plan-norepinephrine"'):]
    assert "5.4–13.5" in norepinephrine.split("</li>\n  \n")[0] or "5.4–13.5" in norepinephrine[:20000]
    assert "not patient.age_years &lt; 18 (value 68)" in html
    assert "(value: no)" not in html and "is unknown (value" not in html
