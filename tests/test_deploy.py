"""Shipping (issue 12 item 7) and layout (item 8), checked without Docker or network: the Dockerfile is
multi-stage, runs as a non-root user and checks its health; the compose file runs two instances with
PostgreSQL behind a proxy that balances over both; the example configuration is valid; shell
completion works as docs/deploy.md says; the service is its own package and `serve` a thin wrapper."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pressor.service.config import load_config

ROOT = Path(__file__).resolve().parent.parent
PRESSOR = str(Path(sys.executable).with_name("pressor"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)
            if not m.group(0).lstrip().startswith("#")]


def test_dockerfile_is_multi_stage_non_root_with_a_health_check():
    steps = instructions(ROOT / "Dockerfile")
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    final = steps[stages[-1]:]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage runs as a non-root user"
    assert any(op == "HEALTHCHECK" and "/healthz" in arg for op, arg in final)
    assert not any(op == "RUN" and ("gcc" in arg or "build-essential" in arg) for op, arg in final), "no compiler at run time"
    assert any(op == "COPY" and "--from=build" in arg for op, arg in final)
    entry = next(arg for op, arg in final if op == "ENTRYPOINT")
    assert '"serve"' in entry and '"0.0.0.0"' in entry
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)


def test_every_path_the_dockerfile_copies_exists():
    for op, arg in instructions(ROOT / "Dockerfile"):
        if op == "COPY" and not arg.startswith("--from"):
            for src in arg.split()[:-1]:
                assert (ROOT / src).exists(), src


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_two_instances_sharing_postgresql_behind_a_proxy(compose):
    services = compose["services"]
    instances = [name for name, s in services.items()
                 if (s.get("build") or str(s.get("image", "")).startswith("pressor")) and "entrypoint" not in s]
    assert len(instances) == 2
    assert any(str(s.get("image", "")).startswith("postgres") for s in services.values())
    proxy = services["proxy"]
    assert "443:443" in proxy["ports"]
    for name in instances:
        s = services[name]
        assert "ports" not in s, "instances are reached through the proxy only"
        assert s["depends_on"]["pressor-migrate"]["condition"] == "service_completed_successfully"
        assert services["pressor-migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        mounted = [v.split(":")[0] for v in s["volumes"]]
        config = load_config(str(ROOT / mounted[0].lstrip("./")))  # valid against the schema
        assert config.audit_db.startswith("postgresql://") and "@" in config.audit_db
        assert ":" not in config.audit_db.split("//")[1].split("@")[0], "no password in the configuration"
        assert config.base_url.startswith("https://")
    nginx = (ROOT / "docs" / "deploy" / "nginx.conf").read_text()
    for name in instances:
        assert f"server {name}:8080" in nginx
    assert "ssl_certificate" in nginx and "proxy_pass http://pressor" in nginx


def test_the_example_configuration_trusts_issuers_by_jwks(compose):
    config = load_config(str(ROOT / "docs" / "deploy" / "serve.yaml"))
    assert all(i.jwks_url or i.jku for i in config.issuers.values())
    assert config.cors_origins and config.fhir_fetch.servers


def test_shell_completion_as_documented():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert "_PRESSOR_COMPLETE=bash_source pressor" in doc
    out = subprocess.run([PRESSOR], env={**os.environ, "_PRESSOR_COMPLETE": "bash_source"}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "complete " in out.stdout and "_pressor_completion" in out.stdout
    words = subprocess.run([PRESSOR], env={**os.environ, "_PRESSOR_COMPLETE": "bash_complete", "COMP_WORDS": "pressor se",
                                           "COMP_CWORD": "1"}, capture_output=True, text=True, timeout=60)
    assert "serve" in words.stdout


def test_the_service_is_its_own_package_and_serve_a_thin_wrapper():
    import pressor.service.app as app

    assert Path(app.__file__).parent.name == "service"
    serve = (ROOT / "cli" / "serve.py").read_text()
    assert len(serve.splitlines()) < 120 and "FastAPI" not in serve and "jwt" not in serve


def test_serve_json_summary_names_what_was_configured(tmp_path):
    import json

    config = tmp_path / "serve.yaml"
    config.write_text("issuers: [{iss: https://ehr.invalid, jwks_url: https://ehr.invalid/jwks.json}]\n"
                      "cors_origins: [https://sandbox.cds-hooks.org]\n"
                      f"audit_db: {tmp_path / 'audit.db'}\n")
    proc = subprocess.Popen([PRESSOR, "serve", "--json", "--port", "0", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("}"):
                break
        summary = json.loads("".join(lines))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert summary["issuers"] == ["https://ehr.invalid"] and summary["cors_origins"] == ["https://sandbox.cds-hooks.org"]
    assert summary["fhir_fetch"] is True and summary["log"] == "stderr"


def test_relative_paths_in_the_configuration_are_beside_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "serve.yaml").write_text(
        "audit_db: audit/pressor.db\nreplay_cache: tokens.db\nprofile: profiles/icu.yaml\n"
        "fhir_mapping: mapping.json\nlog_file: logs/requests.log\n")
    monkeypatch.chdir(tmp_path)  # started from elsewhere: the paths still name files beside the configuration
    config = load_config(str(site / "serve.yaml"))
    assert (config.audit_db, config.replay_cache, config.profile, config.fhir_mapping, config.log_file) == (
        str(site / "audit" / "pressor.db"), str(site / "tokens.db"), str(site / "profiles" / "icu.yaml"),
        str(site / "mapping.json"), str(site / "logs" / "requests.log"))
    (site / "urls.yaml").write_text("audit_db: postgresql://pressor@db/pressor\nlog_file: /var/log/pressor.log\n")
    config = load_config(str(site / "urls.yaml"))
    assert (config.audit_db, config.log_file) == ("postgresql://pressor@db/pressor", "/var/log/pressor.log")
