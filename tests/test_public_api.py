"""The public API (issue 23): ``from pressor import ...`` is all a caller needs; the rest may move."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pressor
from pressor import AuditLog, PressorError, Result, evaluate, from_bundle, load_bundle, load_document, load_pack

from .conftest import EXAMPLES

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)


def test_a_patient_state_is_evaluated_through_the_public_names():
    pack = load_pack()
    doc = load_document(EXAMPLES / "septic-shock-adult.yaml")
    result = evaluate(pack, doc.data, now=NOW, document=doc)
    assert isinstance(result, Result) and result.recommendations


def test_a_fhir_bundle_is_read_and_evaluated_and_the_result_recorded(tmp_path):
    pack = load_pack()
    bundle = load_bundle(EXAMPLES / "fhir" / "cardiogenic-on-norepinephrine.json")
    state = from_bundle(bundle.data, now=NOW, file=bundle.file, pack=pack).states()[0]
    result = evaluate(pack, state, now=NOW)
    with AuditLog.open(tmp_path / "audit.db") as log:
        record = log.append(pack, state, result, now=NOW, user="api-test", input_mode="full")
        assert log.head()[0] == record.seq == 1


def test_every_public_name_resolves_and_errors_share_one_base():
    for name in pressor.__all__:
        assert getattr(pressor, name) is not None, name
    assert all(issubclass(getattr(pressor, n), PressorError) for n in pressor.__all__ if n.endswith("Error") and n != "PressorError")
    assert pressor.__version__ == pressor.engine.__version__


def test_importing_pressor_loads_nothing_until_a_name_is_used():
    code = "import pressor, sys; print(sorted(m for m in sys.modules if m.startswith('pressor.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
