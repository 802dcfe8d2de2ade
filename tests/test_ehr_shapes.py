"""EHR data as EHRs send it (issue 22, item 2).

The 76-year-old in septic shock: norepinephrine 0.3 mcg/kg/min recorded as a MedicationAdministration
whose drug is a reference to a Medication resource, blood pressure charted every minute for a day,
a weight from two days ago and a lactate. Her EHR (tests/ehr_server.py) answers a search with at
most 1,000 matches, as EHRs do. The service, called with no prefetch, must fetch the Medication, a
bounded search per look-back window and the weight on its own, and give the same cards as when her
whole record arrives in one bundle. Also: a bundle without a Patient, and a deceased patient.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pressor.engine.ehr.fhir import FhirError, PatientDeceased, from_bundle, from_hook_request, load_mapping
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.pack import load_pack
from pressor.service.cards import cards_for

from .test_cds_service import PATIENT_VIEW, call, card_schema, configured_server, public_pem, signing_key  # noqa: F401

HERE = Path(__file__).resolve().parent
LOINC, UCUM, SCT = "http://loinc.org", "http://unitsofmeasure.org", "http://snomed.info/sct"
PID = "old-76"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _obs(oid: str, code: str, when: datetime, value: float | None = None, unit: str = "", components=None) -> dict:
    r = {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [{"system": LOINC, "code": code}]},
         "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": _iso(when)}
    if value is not None:
        r["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if components:
        r["component"] = [{"code": {"coding": [{"system": LOINC, "code": c}]},
                           "valueQuantity": {"value": v, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}} for c, v in components]
    return r


def record(now: datetime) -> list[dict]:
    """Her record, as of ``now``."""
    out = [
        {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": f"{now.year - 76}-01-15"},
        {"resourceType": "Condition", "id": "sepsis", "subject": {"reference": f"Patient/{PID}"},
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
         "code": {"coding": [{"system": SCT, "code": "76571007", "display": "Septic shock"}]}, "onsetDateTime": _iso(now - timedelta(hours=12))},
        {"resourceType": "Medication", "id": "ne-bag",
         "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7512", "display": "norepinephrine"}]}},
        {"resourceType": "MedicationAdministration", "id": "ne-running", "status": "in-progress",
         "medicationReference": {"reference": "Medication/ne-bag"}, "subject": {"reference": f"Patient/{PID}"},
         "effectivePeriod": {"start": _iso(now - timedelta(hours=10))},
         "dosage": {"rateQuantity": {"value": 0.3, "unit": "mcg/kg/min", "system": UCUM, "code": "ug/kg/min"}}},
        _obs("weight", "29463-7", now - timedelta(days=2), 61, "kg"),
        _obs("lactate", "2524-7", now - timedelta(hours=3), 3.4, "mmol/L"),
    ]
    for minute in range(24 * 60):  # blood pressure every minute for a day: the newest 1,000 are the last 17 h
        at = now - timedelta(minutes=minute + 1)
        out.append(_obs(f"bp-{minute}", "85354-9", at, components=[("8480-6", 86), ("8462-4", 50)]))
        if minute % 15 == 0:
            out.append(_obs(f"hr-{minute}", "8867-4", at, 112, "/min"))
    return out


@pytest.fixture(scope="module")
def her_ehr(tmp_path_factory):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    resources = record(now)
    path = tmp_path_factory.mktemp("her") / "record.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}))
    proc = subprocess.Popen([sys.executable, str(HERE / "ehr_server.py"), str(path), "--cap", "1000"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("port "), line
    yield f"http://127.0.0.1:{int(line.split()[1])}/fhir", resources
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory, signing_key):
    tmp = tmp_path_factory.mktemp("shapes")
    srv = configured_server(tmp, public_pem(signing_key), audit_db=str(tmp / "audit.db"), fhir_mapping=str(load_mapping().file))
    yield srv
    srv.stop()


def _shown(cards: list[dict]) -> set[tuple[str, str, str]]:
    return {(c["source"].get("topic", {}).get("code", ""), c["indicator"], c["summary"]) for c in cards}


@pytest.mark.slow
def test_the_76_year_old_gets_the_same_cards_as_from_her_whole_record(her_ehr, default_server, signing_key, card_schema):
    fhir, resources = her_ehr
    hook = str(uuid.uuid4())
    body = {"hook": "patient-view", "hookInstance": hook, "fhirServer": fhir,
            "context": {"patientId": PID, "userId": "Practitioner/dr-ito"}}
    r = call(default_server, signing_key, PATIENT_VIEW, body)
    assert r.status_code == 200, r.text
    card_schema.validate(r.json())
    served = r.json()["cards"]
    notes = r.json()["extension"]["pressor"]["notes"]
    assert any("fetched 1 Medication" in n for n in notes), notes

    pack = load_pack()
    mapping = load_mapping()
    now = datetime.fromisoformat(r.json()["extension"]["pressor"]["evaluated_at"].replace("Z", "+00:00"))
    whole = from_bundle({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": x} for x in resources]},
                        now=now, mapping=mapping, pack=pack)
    assert whole.state["infusions"]["norepinephrine_mcg_kg_min"] == 0.3 and whole.state["patient"]["weight_kg"] == 61
    results = [evaluate(pack, s, now=now) for s in whole.states()]
    codings = {m.drug: {"system": mapping.drug_codes(m.drug)[0].system, "code": mapping.drug_codes(m.drug)[0].code,
                        "display": mapping.drug_codes(m.drug)[0].display} for m in mapping.medications}
    expected = cards_for(results, whole, hook_instance=hook, base_url=default_server.base, patient_id=PID,
                         drug_codings=codings)
    firm = [c for c in served if c["indicator"] != "info"]
    assert firm, "real advice, not only information cards"
    assert _shown(served) == _shown(expected)
    assert not any("Data not supplied" in c["summary"] for c in served)


def test_an_unresolvable_medication_reference_is_said_in_words(default_server, signing_key, her_ehr):
    _, resources = her_ehr
    now = datetime.now(timezone.utc)
    bundle = lambda kind: {"resourceType": "Bundle", "type": "searchset",  # noqa: E731
                           "entry": [{"resource": x} for x in resources if x["resourceType"] == kind][:300]}
    prefetch = {"patient": resources[0], "observations": bundle("Observation"), "conditions": bundle("Condition"),
                "medicationAdministrations": bundle("MedicationAdministration"), "medicationRequests": None, "procedures": None}
    conversion = from_hook_request({"hook": "patient-view", "hookInstance": "x", "context": {"patientId": PID},
                                    "prefetch": prefetch}, now=now, mapping=load_mapping())
    assert "infusions.norepinephrine_mcg_kg_min" not in conversion.state.get("infusions", {})
    assert any("Medication/ne-bag" in g and "neither in the record nor could be fetched" in g for g in conversion.gaps)
    r = call(default_server, signing_key, PATIENT_VIEW, {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                                                         "context": {"patientId": PID}, "prefetch": prefetch})
    assert r.status_code == 200, r.text
    info = next(c for c in r.json()["cards"] if c["indicator"] == "info" and "topic" not in c["source"])
    assert "Medication/ne-bag" in info["detail"] and "could not be resolved" in info["detail"]
    # 300 readings, the template's _count is 200: the card says the record was cut
    assert "observations: only the newest 300 readings came" in info["detail"]


def test_a_bundle_without_a_patient_is_refused_clearly():
    with pytest.raises(FhirError) as caught:
        from_bundle({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": _obs("w", "29463-7", datetime.now(timezone.utc), 70, "kg")}]}, now=datetime.now(timezone.utc))
    assert "no Patient resource" in str(caught.value)


@pytest.mark.parametrize("deceased", [{"deceasedBoolean": True}, {"deceasedDateTime": "2026-01-02T03:04:05Z"}])
def test_a_deceased_patient_gets_no_advice(deceased, default_server, signing_key):
    patient = {"resourceType": "Patient", "id": "gone", "birthDate": "1950-01-01", **deceased}
    with pytest.raises(PatientDeceased) as caught:
        from_bundle({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}]},
                    now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert "recorded as deceased" in str(caught.value)
    r = call(default_server, signing_key, PATIENT_VIEW, {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                                                         "context": {"patientId": "gone"},
                                                         "prefetch": {"patient": patient, "observations": None}})
    assert r.status_code == 200, r.text
    cards = r.json()["cards"]
    assert len(cards) == 1 and cards[0]["indicator"] == "warning" and "deceased" in cards[0]["summary"]
