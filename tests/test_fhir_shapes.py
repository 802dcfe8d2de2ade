"""Issue 11 item 5: FHIR type confusion. Every resource read is shape-checked (schemas/fhir-read.schema.json);
a bad one leaves its facts unknown with a note naming it and its JSON pointer — never a CLI traceback,
never a 500 from the service (run in-process here)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
FHIR = ROOT / "examples" / "fhir"
NOW = "2026-11-24T12:00:00Z"
# starlette's notice that its test client will move off httpx: not about pressor
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def example(name: str) -> dict:
    return json.loads((FHIR / f"{name}.json").read_text())


def by_id(b: dict, rid: str) -> tuple[int, dict]:
    return next((i, e["resource"]) for i, e in enumerate(b["entry"]) if e["resource"].get("id") == rid)


def set_path(obj: dict, path: list, value) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


# (example, resource id, path inside the resource, bad value, JSON pointer the note names, a fact left unknown)
CASES = [
    ("septic-adult", "w1", ["code", "coding"], 5, "/code/coding", "patient.weight_kg"),
    ("septic-adult", "w1", ["code", "coding", 0, "code"], ["29463-7"], "/code/coding/0/code", "patient.weight_kg"),
    ("septic-adult", "bp-now", ["component"], 7, "/component", None),
    ("septic-adult", "map-now", ["status"], ["final"], "/status", None),
    ("septic-adult", "w1", ["valueQuantity", "code"], ["kg"], "/valueQuantity/code", "patient.weight_kg"),
    ("septic-adult", "sep-adult", ["gender"], ["male"], "/gender", "patient.age_years"),
    ("cardiogenic-on-norepinephrine", "ne", ["effectivePeriod"], "2026-11-24", "/effectivePeriod", "infusions.norepinephrine_mcg_kg_min"),
    ("cardiogenic-on-norepinephrine", "ne", ["medicationReference"], "Medication/x", "/medicationReference",
     "infusions.norepinephrine_mcg_kg_min"),
    ("cardiogenic-on-norepinephrine", "ne", ["contained"], 5, "/contained", "infusions.norepinephrine_mcg_kg_min"),
    ("dopamine-first-line", "dopamine-order", ["dosageInstruction"], {"text": "x"}, "/dosageInstruction", None),
    ("dopamine-first-line", "dopamine-order", ["dosageInstruction"], ["abc"], "/dosageInstruction/0", None),
    ("dopamine-first-line", "dopamine-order", ["reasonCode"], 5, "/reasonCode", None),
]


def broken(name: str, rid: str, path: list, value) -> tuple[dict, str]:
    b = copy.deepcopy(example(name))
    i, res = by_id(b, rid)
    set_path(res, path, value)
    return b, f"/entry/{i}/resource"


@pytest.mark.parametrize("name,rid,path,value,pointer,fact", CASES)
def test_the_cli_notes_a_bad_resource_and_leaves_its_facts_unknown(tmp_path, name, rid, path, value, pointer, fact):
    b, where = broken(name, rid, path, value)
    file = tmp_path / "b.json"
    file.write_text(json.dumps(b))
    out = CliRunner().invoke(cli, ["recommend", "--fhir", str(file), "--json", "--no-audit", "--now", NOW])
    assert out.exit_code == 0, out.stderr
    assert "Traceback" not in out.stderr
    data = json.loads(out.stdout)
    notes = data["fhir"]["notes"]
    assert any(f"/{rid}" in n and where + pointer in n for n in notes), notes
    if fact is not None:
        assert data["result"]["facts"][fact]["from"] == "unknown"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from starlette.testclient import TestClient

    from pressor.service.app import Settings, create_app

    tmp = tmp_path_factory.mktemp("svc")
    config = tmp / "serve.json"
    config.write_text(json.dumps({"audit_db": str(tmp / "audit.db")}))
    with TestClient(create_app(Settings(config_path=str(config), insecure=True))) as c:
        yield c


def hook_body(b: dict, hook: str) -> dict:
    res = [e["resource"] for e in b["entry"]]
    pat = next(r for r in res if r["resourceType"] == "Patient")

    def of(*types, draft=False):
        rs = [r for r in res if r["resourceType"] in types and (r.get("status") == "draft") == draft]
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in rs]}

    context = {"patientId": pat["id"] if isinstance(pat.get("id"), str) else "x", "userId": "Practitioner/t"}
    if hook == "order-select":
        context["draftOrders"] = of("MedicationRequest", draft=True)
        context["selections"] = [f"MedicationRequest/{e['resource']['id']}" for e in context["draftOrders"]["entry"]]
    return {"hook": hook, "hookInstance": "00000000-0000-4000-8000-000000000000", "context": context,
            "prefetch": {"patient": pat, "observations": of("Observation"), "conditions": of("Condition"),
                         "medicationAdministrations": of("MedicationAdministration"),
                         "medicationRequests": of("MedicationRequest"), "procedures": of("Procedure")}}


@pytest.mark.parametrize("name,rid,path,value,pointer,fact", CASES)
def test_the_service_answers_200_with_a_note_never_500(client, name, rid, path, value, pointer, fact):
    b, _ = broken(name, rid, path, value)
    hook = "order-select" if name == "dopamine-first-line" else "patient-view"
    service = "pressor-order-select" if hook == "order-select" else "pressor-patient-view"
    r = client.post(f"/cds-services/{service}", json=hook_body(b, hook))
    assert r.status_code == 200, r.text
    notes = r.json()["extension"]["pressor"]["notes"]
    assert any(f"/{rid}" in n and pointer in n for n in notes), notes


def another_patients_weight(b: dict) -> dict:
    b = copy.deepcopy(b)
    _, w = by_id(b, "w1")
    w["subject"] = {"reference": "Patient/someone-else"}
    return b


def test_the_cli_refuses_another_patients_resource_naming_it(tmp_path):
    file = tmp_path / "b.json"
    file.write_text(json.dumps(another_patients_weight(example("septic-adult"))))
    out = CliRunner().invoke(cli, ["recommend", "--fhir", str(file), "--no-audit", "--now", NOW])
    assert out.exit_code == 1 and "Observation/w1 is about Patient/someone-else" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_service_refuses_another_patients_resource_with_400(client):
    r = client.post("/cds-services/pressor-patient-view", json=hook_body(another_patients_weight(example("septic-adult")), "patient-view"))
    assert r.status_code == 400 and r.json()["error"] == "fhir_error"
    assert "Observation/w1 is about Patient/someone-else" in r.json()["problems"][0]["message"]
