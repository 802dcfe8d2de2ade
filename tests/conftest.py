"""Shared fixtures: the bundled pack (loaded once), a pinned clock, the result schema."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from pressor.engine.evaluation.pack import load_pack

# The pack cache of this run (and of the CLI processes it starts): never the user's cache directory.
os.environ["PRESSOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="pressor-test-cache-")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)

#: The default selection (pyproject's addopts) leaves these out; ``pytest --everything`` runs them too.
LONG_MARKERS = ("slow", "browser", "postgres", "fuzz")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--everything", action="store_true",
                     help="run every test, including those marked slow, browser, postgres and fuzz (CI does)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("everything"):
        config.option.markexpr = ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that runs against PostgreSQL (a ``postgresql`` parameter, or the server fixture) is marked
    ``postgres``: it starts a real server, which the fast loop does without."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgresql" in params.values() or "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(autouse=True)
def audit_db(tmp_path, monkeypatch) -> Path:
    """Every test records into its own audit database, never the user's data directory."""
    path = tmp_path / "audit" / "audit.db"
    monkeypatch.setenv("PRESSOR_AUDIT_DB", str(path))
    return path


@pytest.fixture(scope="session")
def pack():
    """The bundled rule pack, loaded and compiled once for the whole run."""
    return load_pack(check_examples=True)


@pytest.fixture(scope="session")
def now() -> datetime:
    """A fixed evaluation time: tests never read the wall clock."""
    return NOW


@pytest.fixture(scope="session")
def result_validator():
    """Validates any JSON result against schemas/result.schema.json."""
    schema = json.loads(resources.files("pressor.schemas").joinpath("result.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="session")
def explanation_validator():
    """Validates any JSON explanation against schemas/explanation.schema.json."""
    schema = json.loads(resources.files("pressor.schemas").joinpath("explanation.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


# --- PostgreSQL (audit log and replay cache backends) --------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole run (tests/pg.py); the tests that need it are
    skipped, with the reason, only when it cannot start."""
    from . import pg

    try:
        server = pg.start()
    except pg.Unavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty PostgreSQL database of its own."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_target(request, audit_db):
    """The audit log of one test, in each backend: a SQLite file, or a postgresql:// URL."""
    if request.param == "sqlite":
        return audit_db
    return request.getfixturevalue("pg_url")
