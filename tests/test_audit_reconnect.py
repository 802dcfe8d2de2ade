"""Issue 24 item 2: a PostgreSQL restart is survived. The audit log's and the replay cache's connections
are opened again, with back-off, once the database is back; while it is down the documented behaviour
holds (advice marked not recorded; require_audit: 503; a token that cannot be checked for replay is
refused); no outage outlives the database's by more than the back-off, and nothing acknowledged is lost.
A real server of the test's own (tests/pg.py) is stopped and started under a bounded load."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pressor.engine.audit import AuditLog
from pressor.engine.audit.replay_cache import open_replay_cache
from pressor.engine.audit.store_postgres import RECONNECT_MAX_S
from pressor.engine.errors import AuditError
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document

from .test_cds_service import PATIENT_VIEW, configured_server, hook_request, public_pem, signing_key, token  # noqa: F401

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DOWN_S = 3.0


@pytest.fixture(scope="module")
def own_pg():
    """A server of this module's own: the shared one is not restarted under other tests."""
    from . import pg

    try:
        server = pg.start()
    except pg.Unavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


def restart_later(server, after_s: float, down: list[float]) -> threading.Thread:
    """Stop the server after ``after_s``, keep it down DOWN_S, start it; ``down`` gets (stopped, started)."""
    def run() -> None:
        time.sleep(after_s)
        server.pause()
        down.append(time.monotonic())
        time.sleep(DOWN_S)
        server.resume()
        down.append(time.monotonic())
    t = threading.Thread(target=run)
    t.start()
    return t


def test_the_log_and_the_replay_cache_reconnect_and_lose_nothing_acknowledged(own_pg, pack, now):
    url = own_pg.new_database()
    state = load_document(EXAMPLES / "septic-shock-adult.yaml").data
    result = evaluate(pack, state, now=now)
    log = AuditLog.open(url)
    cache = open_replay_cache(url)
    acknowledged, failed_at, ok_at, seen_ok = [], [], [], []
    down: list[float] = []
    t = restart_later(own_pg, 1.5, down)
    deadline = time.monotonic() + 1.5 + DOWN_S + RECONNECT_MAX_S + 8
    i = 0
    while time.monotonic() < deadline and i < 2000:  # bounded in count and time
        i += 1
        try:
            acknowledged.append(log.append(pack, state, result, now=now + timedelta(seconds=i), user="u").id)
            ok_at.append(time.monotonic())
        except AuditError as exc:
            assert "Traceback" not in str(exc)
            failed_at.append(time.monotonic())
        try:
            assert cache.seen(f"jti-{i}", time.time() + 60) is False
            seen_ok.append(time.monotonic())
        except Exception:  # noqa: BLE001 - unavailable while the database is down
            pass
        time.sleep(0.02)
    t.join()
    assert len(down) == 2 and failed_at, "the outage was not seen"
    # every failure falls within the outage plus the longest back-off, and both work again after it
    assert max(failed_at) <= down[1] + RECONNECT_MAX_S + 2, (max(failed_at) - down[1])
    assert [x for x in ok_at if x > down[1]] and [x for x in seen_ok if x > down[1]]
    log.close()
    cache.close()
    fresh = AuditLog.open(url, create=False)
    try:
        held = {r.id for r in fresh.records()}
        assert set(acknowledged) <= held, "an acknowledged record is missing"
        assert fresh.verify().ok
    finally:
        fresh.close()


def test_a_service_instance_survives_a_restart(own_pg, signing_key, tmp_path):
    url = own_pg.new_database()
    base = "https://cds.hospital.test"
    srv = configured_server(tmp_path, public_pem(signing_key), base_url=base, audit_db=url, replay_cache=url)
    path = f"/cds-services/{PATIENT_VIEW}"
    statuses: list[tuple[float, int, bool | None]] = []
    down: list[float] = []
    try:
        assert srv.client.post(path, json=hook_request("septic-adult"), headers={
            "Authorization": f"Bearer {token(signing_key, base + path)}"}).status_code == 200
        t = restart_later(own_pg, 1.0, down)
        deadline = time.monotonic() + 1.0 + DOWN_S + RECONNECT_MAX_S + 8
        for _ in range(200):  # bounded
            if time.monotonic() > deadline:
                break
            r = srv.client.post(path, json=hook_request("septic-adult"), headers={
                "Authorization": f"Bearer {token(signing_key, base + path)}"})
            assert r.status_code in (200, 401, 503), r.text  # never a 500
            recorded = r.json()["extension"]["pressor"]["audit"]["recorded"] if r.status_code == 200 else None
            statuses.append((time.monotonic(), r.status_code, recorded))
            time.sleep(0.1)
        t.join()
    finally:
        srv.stop()
    bad = [at for at, code, recorded in statuses if code != 200 or recorded is False]
    assert bad, "the outage was not seen"
    assert max(bad) <= down[1] + RECONNECT_MAX_S + 2
    after = [(code, recorded) for at, code, recorded in statuses if at > down[1] + RECONNECT_MAX_S + 2]
    assert after and all(code == 200 and recorded for code, recorded in after)


def test_a_log_only_instance_marks_advice_not_recorded_while_down(own_pg, signing_key, tmp_path):
    url = own_pg.new_database()
    srv = configured_server(tmp_path, public_pem(signing_key), audit_db=url)
    try:
        own_pg.pause()
        try:
            r = _call(srv, signing_key)
            assert r.status_code == 200 and r.json()["extension"]["pressor"]["audit"]["recorded"] is False
            assert any("not recorded" in (c.get("summary", "") + c.get("detail", "")).lower() for c in r.json()["cards"])
        finally:
            own_pg.resume()
        time.sleep(RECONNECT_MAX_S + 0.5)
        r = _call(srv, signing_key)
        assert r.status_code == 200 and r.json()["extension"]["pressor"]["audit"]["recorded"] is True
    finally:
        srv.stop()


def test_require_audit_answers_503_while_down_and_200_after(own_pg, signing_key, tmp_path):
    url = own_pg.new_database()
    srv = configured_server(tmp_path, public_pem(signing_key), audit_db=url, require_audit=True)
    try:
        own_pg.pause()
        try:
            assert _call(srv, signing_key).status_code == 503
        finally:
            own_pg.resume()
        time.sleep(RECONNECT_MAX_S + 0.5)
        assert _call(srv, signing_key).status_code == 200
    finally:
        srv.stop()


def _call(srv, key):
    from .test_cds_service import call

    return call(srv, key, PATIENT_VIEW, hook_request("septic-adult"))
