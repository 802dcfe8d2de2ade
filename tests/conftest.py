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


# --- the browser tests' one Chromium (tests/test_ui_browser.py, tests/test_ui_roles_browser.py) -------------
# Defined here, once: two session fixtures would start two Playwright drivers in one worker, and the second
# refuses to start inside the first one's event loop.

@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    """One Chromium (fresh profile) for the test session; skips, saying why, if it cannot start."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # the test extra is not installed
        pytest.skip(f"playwright is not installed: {exc}")
    if not Path(_browser().CHROMIUM).exists():
        pytest.skip(f"Chromium cannot start: {_browser().CHROMIUM} is absent (apt-get install chromium; .ci/run does)")
    manager = sync_playwright().start()
    try:
        context = manager.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=_browser().CHROMIUM, headless=True,
            args=_browser().CHROMIUM_ARGS, viewport={"width": 1280, "height": 800})
    except Exception as exc:  # noqa: BLE001 - any launch failure means: no browser here
        manager.stop()
        pytest.skip(f"Chromium cannot start: {exc}")
    context.set_default_timeout(15_000)
    yield context
    context.close()
    manager.stop()


def _browser():
    """tests/test_ui_browser.py, where the Chromium path and flags are defined."""
    from . import test_ui_browser

    return test_ui_browser
