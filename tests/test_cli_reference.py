"""docs/cli.md is the commands' own help, regenerated when a command changes (issue 23)."""
from __future__ import annotations

import os

from pressor.cli.reference import reference

from .conftest import EXAMPLES

DOC = EXAMPLES.parent / "docs" / "cli.md"


def test_the_cli_reference_is_current():
    text = reference()
    if os.environ.get("PRESSOR_UPDATE_GOLDEN") == "1":
        DOC.write_text(text, encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == text, \
        "docs/cli.md is out of date: run `python -m pressor.cli.reference > docs/cli.md` (or PRESSOR_UPDATE_GOLDEN=1 pytest)"


def test_every_command_is_in_the_reference():
    text = DOC.read_text(encoding="utf-8")
    for name in ("recommend", "validate", "lint", "test", "audit verify", "serve", "ui"):
        assert f"## `pressor {name}`" in text
