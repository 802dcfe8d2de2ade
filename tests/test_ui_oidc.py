"""The web app served with OpenID Connect sign-in (authorization code flow with PKCE, against a provider on
127.0.0.1): tokens, keys, states, sign-out, proxies and shared caches. tests/test_ui.py has the local app."""
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
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
with warnings.catch_warnings():  # Starlette's note that it prefers httpx2 (httpx is what the project uses)
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from pressor.cli.main import cli
from pressor.service.ui.app import CSP
from pressor.service.ui.auth import COOKIE

from .test_ui import SEPTIC, post

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ISS = "https://idp.test.invalid"
KID = "idp-key-1"
CLIENT_ID = "pressor-ui"



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
