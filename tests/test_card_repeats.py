"""Cards that do not repeat (issue 18, item 5): an unchanged plan card is not shown again to the same patient
within the site's window; a changed dose or action is new; the request extension or the config turns it off;
the store is bounded and lives beside the token replay cache (SQLite and PostgreSQL through ``server``)."""
from __future__ import annotations

import copy
import json
import time
import uuid

import pytest

from pressor.service.repeats import MemoryShownStore, RepeatSettings, RepeatWindow, SqliteShownStore, patient_hash
from tests import test_cds_service
from tests.test_cds_service import PATIENT_VIEW, call, configured_server, hook_request, public_pem

server = test_cds_service.server  # the shared fixture: SQLite, and PostgreSQL for the audit log and the caches
signing_key = test_cds_service.signing_key
card_schema = test_cds_service.card_schema


def _for_new_patient(body: dict) -> dict:
    """The same record under a patient id no other test uses (the window is per patient)."""
    old, pid = body["context"]["patientId"], f"repeat-{uuid.uuid4().hex[:12]}"
    return json.loads(json.dumps(body).replace(f'"Patient/{old}"', f'"Patient/{pid}"').replace(f'"{old}"', f'"{pid}"'))


def _plan_keys(response) -> list[str]:
    return [c["extension"]["pressor"]["repeat_key"] for c in response.json()["cards"] if "extension" in c]


def test_an_unchanged_plan_is_not_shown_again_and_says_why(server, signing_key, card_schema):
    body = _for_new_patient(hook_request("septic-adult"))
    first = call(server, signing_key, PATIENT_VIEW, body, show_repeats=False)
    assert first.status_code == 200, first.text
    shown = _plan_keys(first)
    assert "plan:plan-norepinephrine" in shown and "suppressed" not in first.json()["extension"]["pressor"]
    again_id = str(uuid.uuid4())
    again = call(server, signing_key, PATIENT_VIEW, {**body, "hookInstance": again_id}, show_repeats=False)
    card_schema.validate(again.json())
    assert _plan_keys(again) == []  # every plan card was shown a moment ago, unchanged
    suppressed = again.json()["extension"]["pressor"]["suppressed"]
    assert sorted(s["repeat_key"] for s in suppressed) == sorted(shown)
    start = next(s for s in suppressed if s["repeat_key"] == "plan:plan-norepinephrine")
    assert start["indicator"] == "critical" and start["window_s"] == 3600 and "within the 1 h window" in start["reason"]
    assert all(s["window_s"] == 14400 for s in suppressed if s["indicator"] != "critical")
    # the hash-chained audit record of the call keeps them too (record format 6: suppressed_json, hashed)
    from pressor.engine.audit import AuditLog

    with AuditLog.open(server.audit_db, create=False) as log:
        recorded = [r for r in log.records(hooked=True) if r.hook_instance == again_id]
        assert recorded and json.loads(recorded[0].suppressed_json) == suppressed and log.verify().ok
    time.sleep(0.3)  # the request's log line says what was not shown again, and why (no patient data)
    lines = [json.loads(x) for x in server.stderr_path.read_text().splitlines() if x.startswith("{")]
    line = next(x for x in lines if x.get("hookInstance") == again_id)
    assert sorted(x["repeat_key"] for x in line["suppressed"]) == sorted(shown) and all(x["reason"] for x in line["suppressed"])
    # the request flag shows everything again
    flagged = call(server, signing_key, PATIENT_VIEW, {**body, "hookInstance": str(uuid.uuid4())})
    assert _plan_keys(flagged) == shown
    # another patient is not affected
    other = call(server, signing_key, PATIENT_VIEW, _for_new_patient(body), show_repeats=False)
    assert _plan_keys(other) == shown


def test_a_changed_dose_is_a_new_card(server, signing_key):
    body = _for_new_patient(hook_request("septic-adult"))
    first = call(server, signing_key, PATIENT_VIEW, body, show_repeats=False)
    assert "plan:plan-norepinephrine" in _plan_keys(first)
    heavier = copy.deepcopy(body)
    heavier["hookInstance"] = str(uuid.uuid4())
    weights = [e["resource"] for e in heavier["prefetch"]["observations"]["entry"]
               if "weight" in str(e["resource"].get("code", "")).lower()]
    assert weights, "the example records a weight"
    for w in weights:
        w["valueQuantity"]["value"] = w["valueQuantity"]["value"] + 20
    again = call(server, signing_key, PATIENT_VIEW, heavier, show_repeats=False)
    assert "plan:plan-norepinephrine" in _plan_keys(again)  # a new dose for a new weight: shown


def test_the_window_is_a_site_setting_and_can_be_off(tmp_path, signing_key):
    srv = configured_server(tmp_path, public_pem(signing_key), audit_db=str(tmp_path / "audit.db"),
                            repeat_window={"enabled": False})
    try:
        body = _for_new_patient(hook_request("septic-adult"))
        first = call(srv, signing_key, PATIENT_VIEW, body, show_repeats=False)
        again = call(srv, signing_key, PATIENT_VIEW, {**body, "hookInstance": str(uuid.uuid4())}, show_repeats=False)
        assert _plan_keys(again) == _plan_keys(first) != []
    finally:
        srv.stop()


def _card(key: str, signature: str, indicator: str = "info") -> dict:
    return {"summary": key, "indicator": indicator, "extension": {"pressor": {"repeat_key": key, "signature": signature}}}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_windows_by_indicator_and_a_bounded_store(tmp_path, kind):
    settings = RepeatSettings(critical_s=3600, others_s=14400, max_entries=3)
    store = MemoryShownStore(3, 14400) if kind == "memory" else SqliteShownStore(tmp_path / "shown.db", 3, 14400)
    window = RepeatWindow(settings, store)
    cards = [_card("plan:a", "1", "critical"), _card("plan:b", "1"), {"summary": "missing data", "indicator": "info"}]
    window.remember("p1", cards, 1000.0)
    shown, suppressed = window.split("p1", cards, 1000.0 + 1800)
    assert [c["summary"] for c in shown] == ["missing data"] and len(suppressed) == 2
    shown, _ = window.split("p1", cards, 1000.0 + 3600 + 1)  # the critical card's hour is over, not the others' 4 h
    assert [c["summary"] for c in shown] == ["plan:a", "missing data"]
    shown, _ = window.split("p1", [_card("plan:b", "2")], 1000.0 + 60)  # changed: new
    assert len(shown) == 1
    for i in range(5):  # bounded: the oldest entries go
        window.remember(f"p{i + 2}", [_card("plan:a", "1")], 2000.0 + 100 * i)
    if kind == "sqlite":
        rows = store._conn.execute("SELECT COUNT(*) FROM shown_cards").fetchone()[0]
        assert rows <= 3 + 1  # swept at most once a minute: within one sweep of the bound
        assert store._conn.execute("SELECT COUNT(*) FROM shown_cards WHERE patient = ?", (patient_hash("p1"),)).fetchone()[0] == 0
    else:
        assert len(store._rows) <= 3
    window.close()
