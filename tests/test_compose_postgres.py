"""compose.yaml's services, run as the image would run them but without a container (issue 22, item 1).

A real PostgreSQL (tests/pg.py) stands in for the ``postgres`` service: docs/deploy/roles.sql makes
its roles (the same SQL docs/deploy.md shows), ``pressor-migrate``'s entrypoint creates the tables
as their owner and grants the service role, and the two instances start with the Dockerfile's
ENTRYPOINT and CMD and the configuration compose mounts, the compose host name and the listening
address moved to this machine's loopback. Both must answer ``/healthz``, share the log and the
replay cache, and their role must be unable to do more than read and append.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from pressor.engine.audit import AuditLog
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document
from pressor.engine.evaluation.pack import load_pack

from .test_deploy import instructions

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local(text: str, port: int) -> str:
    """A compose URL (host ``postgres``) pointed at the test server."""
    return text.replace("@postgres:5432/", f"@127.0.0.1:{port}/")


def test_the_documented_sql_is_the_file_compose_runs():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    sql = (ROOT / "docs" / "deploy" / "roles.sql").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", doc, re.S)
    assert sql in blocks, "docs/deploy.md shows docs/deploy/roles.sql as it is"


@pytest.fixture(scope="module")
def database(pg_server):
    import psycopg

    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "pressor"')
    with psycopg.connect(pg_server.url("pressor"), autocommit=True) as conn:
        conn.execute((ROOT / "docs" / "deploy" / "roles.sql").read_text())
    return pg_server


def test_compose_starts_two_instances_on_least_privilege_postgresql(database, tmp_path):
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    port = database.port
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{port}:pressor:pressor_owner:owner-secret\n127.0.0.1:{port}:pressor:pressor:service-secret\n")
    pgpass.chmod(0o600)
    env = {**os.environ, "PGPASSFILE": str(pgpass), "PYTHONUNBUFFERED": "1"}
    env.pop("PRESSOR_AUDIT_DB", None)

    migrate = services["pressor-migrate"]
    assert migrate["environment"]["PGPASSFILE"] == "/run/secrets/pgpass"
    command = [_local(a, port) for a in migrate["entrypoint"]]
    assert command[:3] == ["pressor", "audit", "init"]
    done = subprocess.run([str(BIN / "pressor"), *command[1:], "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any('"records"' in g for g in json.loads(done.stdout)["granted"])

    # The instances: the image's ENTRYPOINT + CMD, with compose's mounted configuration.
    runtime = [arg for op, arg in instructions(ROOT / "Dockerfile")][::-1]
    steps = instructions(ROOT / "Dockerfile")
    entry = json.loads(next(a for o, a in reversed(steps) if o == "ENTRYPOINT"))
    cmd = json.loads(next(a for o, a in reversed(steps) if o == "CMD"))
    assert runtime  # (the Dockerfile parsed)
    instances = [n for n, s in services.items() if s.get("image") == "pressor:latest" and "entrypoint" not in s]
    assert instances == ["pressor-1", "pressor-2"]
    config_mount = next(v for v in services["pressor-1"]["volumes"] if v.endswith("/etc/pressor/serve.yaml:ro"))
    config = (ROOT / config_mount.split(":")[0]).read_text()
    assert "audit_db: postgresql://pressor@postgres:5432/pressor" in config
    assert "replay_cache: postgresql://pressor@postgres:5432/pressor" in config
    (tmp_path / "serve.yaml").write_text(_local(config, port))
    procs, ports = [], []
    try:
        for _ in instances:
            p = _free_port()
            args = [a if a != "/etc/pressor/serve.yaml" else str(tmp_path / "serve.yaml") for a in entry[1:] + cmd]
            args[args.index("--host") + 1] = "127.0.0.1"  # loopback only here; 0.0.0.0 inside the container
            args[args.index("--port") + 1] = str(p)
            procs.append(subprocess.Popen([str(BIN / entry[0]), *args], env=env, stdout=subprocess.DEVNULL,
                                          stderr=open(tmp_path / f"serve-{p}.log", "w"), start_new_session=True))
            ports.append(p)
        deadline = time.monotonic() + 120
        healthy = set()
        while len(healthy) < len(ports) and time.monotonic() < deadline:
            for p, proc in zip(ports, procs):
                assert proc.poll() is None, (tmp_path / f"serve-{p}.log").read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=2) as r:
                        if r.status == 200 and json.load(r)["status"] == "ok":
                            healthy.add(p)
                except OSError:
                    pass
            time.sleep(0.5)
        assert healthy == set(ports), "both instances answer /healthz"
        for p in ports:
            log = (tmp_path / f"serve-{p}.log").read_text()
            assert "cannot be used" not in log and "WARNING" not in log, log
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    # The service's role reads and appends, shares the replay cache, and can do nothing else.
    service_url = f"postgresql://pressor@127.0.0.1:{port}/pressor"
    os.environ["PGPASSFILE"] = str(pgpass)
    pack = load_pack()
    state = load_document(ROOT / "examples" / "septic-shock-adult.yaml").data
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    with AuditLog.open(service_url) as log:
        log.append(pack, state, evaluate(pack, state, now=now), now=now, user="Practitioner/1")
        assert log.verify().ok
    from pressor.engine.audit.replay_cache import open_replay_cache

    cache = open_replay_cache(service_url)
    assert cache.seen("jti-1", time.time() + 60) is False and cache.seen("jti-1", time.time() + 60) is True
    cache.close()
    import psycopg

    with psycopg.connect(service_url, autocommit=True) as conn:
        for attack in ("DROP TRIGGER records_no_update ON records", "ALTER TABLE records DISABLE TRIGGER ALL",
                       "DELETE FROM records", "UPDATE records SET \"user\" = 'x'", "TRUNCATE records",
                       "CREATE TABLE records_copy (x int)", "DROP TABLE records"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attack)
