"""The web app without a browser (Starlette's test client): the form built from the schema, sign-in
(one-time link; OpenID Connect in served mode is tests/test_ui_oidc.py), CSRF, the security headers, no data without a session,
FHIR paste, and the conditional advice rendered when the result carries it."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from urllib.parse import urlencode

import pytest
with warnings.catch_warnings():  # Starlette's note that it prefers httpx2 (httpx is what the project uses)
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

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
    target = ctx.pack.rule("target.map-65")
    page = client.get(f"/ui/rules?status={target.status}&section=" + target.section).text
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


def test_the_advice_opens_with_the_plan_then_bans_then_questions_then_everything(pack, now):
    """Issue 18: the plan in the CLI's order and content (one answer per decision, with its dose and what goes with
    it), then the bans, then the questions, then a "show everything" toggle; 'because' says not / not recorded."""
    import yaml

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
