"""pressor: a rules-engine protocol interpreter for vasopressor therapy.

This module is the public API; everything else (``pressor.engine.*``, ``pressor.cli``,
``pressor.service``) is internal and may move between releases. ::

    from datetime import datetime, timezone
    from pressor import evaluate, load_document, load_pack

    pack = load_pack()                                   # the bundled rule pack (or a directory)
    doc = load_document("examples/septic-shock-adult.yaml")
    result = evaluate(pack, doc.data, now=datetime.now(timezone.utc), document=doc)
    for rec in result.recommendations:
        print(rec.rule_id, rec.title)

A FHIR R4 Bundle instead of a patient state::

    from pressor import from_bundle, load_bundle
    bundle = load_bundle("examples/fhir/cardiogenic-on-norepinephrine.json")
    conversion = from_bundle(bundle.data, now=now, file=bundle.file, pack=pack)
    result = evaluate(pack, conversion.states()[0], now=now)

The audit log (SQLite file or ``postgresql://`` URL)::

    from pressor import AuditLog
    with AuditLog.open("audit.db") as log:
        log.append(pack, state, result, now=now, user="me", input_mode="full")

Names are imported on first use, so ``import pressor`` stays cheap for the command line.
"""
from __future__ import annotations

from importlib import import_module

# Not typing.TYPE_CHECKING: importing typing costs a few ms of every command line start (type checkers
# read any constant of this name as true).
TYPE_CHECKING = False

#: Public name -> the internal module that defines it.
_WHERE = {
    # rule packs and evaluation
    "load_pack": "pressor.engine.evaluation.pack",
    "evaluate": "pressor.engine.evaluation.evaluate",
    "load_document": "pressor.engine.evaluation.load",
    "Document": "pressor.engine.evaluation.load",
    "Result": "pressor.engine.model",
    "RulePack": "pressor.engine.model",
    "Recommendation": "pressor.engine.model",
    # FHIR R4 records in
    "load_bundle": "pressor.engine.ehr.fhir",
    "load_mapping": "pressor.engine.ehr.fhir",
    "from_bundle": "pressor.engine.ehr.fhir",
    "from_hook_request": "pressor.engine.ehr.fhir",
    "from_timeline": "pressor.engine.ehr.fhir",
    "Conversion": "pressor.engine.ehr.fhir",
    # the audit log
    "AuditLog": "pressor.engine.audit",
    "AuditRecord": "pressor.engine.audit",
    # errors: one hierarchy, each carrying its problems (file, line, pointer, suggestion)
    "PressorError": "pressor.engine.errors",
    "InputError": "pressor.engine.errors",
    "RuleFileError": "pressor.engine.errors",
    "PatientStateError": "pressor.engine.errors",
    "EvaluationError": "pressor.engine.errors",
    "AuditError": "pressor.engine.errors",
    "Problem": "pressor.engine.errors",
}

__all__ = [
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "Conversion",
    "Document",
    "EvaluationError",
    "InputError",
    "PatientStateError",
    "PressorError",
    "Problem",
    "Recommendation",
    "Result",
    "RuleFileError",
    "RulePack",
    "__version__",
    "evaluate",
    "from_bundle",
    "from_hook_request",
    "from_timeline",
    "load_bundle",
    "load_document",
    "load_mapping",
    "load_pack",
]

if TYPE_CHECKING:
    from typing import Any

    from pressor.engine import __version__
    from pressor.engine.audit import AuditLog, AuditRecord
    from pressor.engine.ehr.fhir import Conversion, from_bundle, from_hook_request, from_timeline, load_bundle, load_mapping
    from pressor.engine.errors import (AuditError, EvaluationError, InputError, PatientStateError, PressorError, Problem,
                                       RuleFileError)
    from pressor.engine.evaluation.evaluate import evaluate
    from pressor.engine.evaluation.load import Document, load_document
    from pressor.engine.evaluation.pack import load_pack
    from pressor.engine.model import Recommendation, Result, RulePack


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return import_module("pressor.engine").__version__
    if name not in _WHERE:
        raise AttributeError(f"module 'pressor' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
