"""FHIR R4 records for the tests and bench/fhir.py, generated here (no real patient data).

:func:`synthea_like` builds a Bundle shaped like a Synthea patient bundle (``transaction``
type, ``urn:uuid`` fullUrls and references, Encounters, Claims and ExplanationOfBenefits that
pressor does not read, years of vitals and labs, chronic conditions and medications) with an
ICU stay in septic shock at its end. Codes are those Synthea's modules use (sepsis module:
septic shock 76571007, norepinephrine 4 ML 1 MG/ML 242969, fluid resuscitation 430701006,
lactate 32693-4; essential hypertension 59621000).
"""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def synthea_like(*, now: datetime, years: int = 8, seed: int = 7, target_bytes: int | None = None,
                 shock: bool = True) -> dict[str, Any]:
    """A Synthea-shaped bundle: ``years`` of history, then (``shock``) an ICU stay in septic shock ending at ``now``.

    With ``target_bytes``, outpatient history is added until the JSON is about that size.
    """
    rng = random.Random(seed)
    pid = _uuid(rng)
    patient_url = f"urn:uuid:{pid}"
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> str:
        rid = resource.setdefault("id", _uuid(rng))
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
        return f"urn:uuid:{rid}"

    add({"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1961-05-14",
         "name": [{"use": "official", "family": "Example", "given": ["Synthetic"]}],
         "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                        "extension": [{"url": "text", "valueString": "not recorded"}]}]})

    def encounter(start: datetime, hours: float, cls: str) -> str:
        return add({"resourceType": "Encounter", "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
                    "type": [concept(SNOMED, "185349003", "Encounter for check up (procedure)")],
                    "subject": {"reference": patient_url},
                    "period": {"start": iso(start), "end": iso(start + timedelta(hours=hours))}})

    def obs(enc: str, when: datetime, code: str, display: str, value: float, unit: str, category: str = "vital-signs") -> None:
        add({"resourceType": "Observation", "status": "final",
             "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
             "code": concept(LOINC, code, display), "subject": {"reference": patient_url}, "encounter": {"reference": enc},
             "effectiveDateTime": iso(when), "issued": iso(when), "valueQuantity": quantity(value, unit)})

    def bp(enc: str, when: datetime, sbp: float, dbp: float) -> None:
        add({"resourceType": "Observation", "status": "final",
             "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
             "code": concept(LOINC, "85354-9", "Blood pressure panel with all children optional"),
             "subject": {"reference": patient_url}, "encounter": {"reference": enc}, "effectiveDateTime": iso(when),
             "component": [{"code": concept(LOINC, "8480-6", "Systolic Blood Pressure"), "valueQuantity": quantity(sbp, "mm[Hg]")},
                           {"code": concept(LOINC, "8462-4", "Diastolic Blood Pressure"), "valueQuantity": quantity(dbp, "mm[Hg]")}]})

    def claim(enc: str, when: datetime) -> None:
        add({"resourceType": "Claim", "status": "active", "use": "claim", "patient": {"reference": patient_url},
             "billablePeriod": {"start": iso(when), "end": iso(when + timedelta(minutes=30))},
             "item": [{"sequence": i + 1, "productOrService": concept(SNOMED, "185349003", "Encounter for check up"),
                       "encounter": [{"reference": enc}]} for i in range(3)],
             "total": {"value": 704.2, "currency": "USD"}})
        add({"resourceType": "ExplanationOfBenefit", "status": "active", "use": "claim", "patient": {"reference": patient_url},
             "billablePeriod": {"start": iso(when), "end": iso(when + timedelta(minutes=30))},
             "item": [{"sequence": i + 1, "adjudication": [{"category": concept("http://terminology.hl7.org/CodeSystem/adjudication",
                                                                               "submitted", "Submitted Amount"),
                                                           "amount": {"value": 129.16, "currency": "USD"}}]} for i in range(4)],
             "payment": {"amount": {"value": 563.36, "currency": "USD"}}})

    start = now - timedelta(days=365 * years)
    htn_onset = start + timedelta(days=200)
    add({"resourceType": "Condition",
         "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "active"),
         "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "confirmed"),
         "category": [concept("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", "Encounter Diagnosis")],
         "code": concept(SNOMED, "59621000", "Essential hypertension (disorder)"), "subject": {"reference": patient_url},
         "onsetDateTime": iso(htn_onset), "recordedDate": iso(htn_onset)})
    add({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
         "medicationCodeableConcept": concept(RXNORM, "314076", "lisinopril 10 MG Oral Tablet"),
         "subject": {"reference": patient_url}, "authoredOn": iso(htn_onset),
         "dosageInstruction": [{"sequence": 1, "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                "asNeededBoolean": False}]})

    def visit(when: datetime) -> None:
        enc = encounter(when, 0.5, "AMB")
        obs(enc, when, "29463-7", "Body Weight", round(rng.uniform(70, 76), 1), "kg")
        obs(enc, when, "8867-4", "Heart rate", rng.randint(60, 90), "/min")
        bp(enc, when, rng.randint(128, 150), rng.randint(78, 95))
        obs(enc, when, "2339-0", "Glucose [Mass/volume] in Blood", rng.randint(80, 120), "mg/dL", "laboratory")
        obs(enc, when, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", round(rng.uniform(0.7, 1.2), 2), "mg/dL", "laboratory")
        claim(enc, when)

    t = start
    while t < now - timedelta(days=3):
        visit(t)
        t += timedelta(days=rng.randint(60, 120))
    if target_bytes is not None:
        import json

        t = start + timedelta(days=17)
        size = len(json.dumps(entries))
        while size < target_bytes:
            first = len(entries)
            visit(t)
            size += sum(len(json.dumps(e)) + 2 for e in entries[first:])
            t += timedelta(days=11)
            if t > now - timedelta(days=3):
                t = start + timedelta(days=rng.randint(1, 300))
    if shock:
        onset = now - timedelta(hours=4)
        icu = encounter(onset, 4, "IMP")
        add({"resourceType": "Condition",
             "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "active"),
             "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "confirmed"),
             "code": concept(SNOMED, "76571007", "Septic shock (disorder)"), "subject": {"reference": patient_url},
             "onsetDateTime": iso(onset), "recordedDate": iso(onset)})
        obs(icu, onset + timedelta(minutes=10), "32693-4", "Lactate [Moles/volume] in Blood", 3.1, "mmol/L", "laboratory")
        obs(icu, now - timedelta(minutes=40), "32693-4", "Lactate [Moles/volume] in Blood", 4.2, "mmol/L", "laboratory")
        obs(icu, now - timedelta(hours=3), "29463-7", "Body Weight", 72, "kg")
        for i, volume in enumerate((1000, 1000, 200)):
            add({"resourceType": "MedicationAdministration", "status": "completed",
                 "medicationCodeableConcept": concept(RXNORM, "1807639", "1000 ML sodium chloride 9 MG/ML Injection"),
                 "subject": {"reference": patient_url}, "context": {"reference": icu},
                 "effectivePeriod": {"start": iso(onset + timedelta(minutes=15 + 45 * i)),
                                     "end": iso(onset + timedelta(minutes=45 + 45 * i))},
                 "dosage": {"route": concept(SNOMED, "47625008", "Intravenous route"), "dose": quantity(volume, "mL")}})
        add({"resourceType": "Procedure", "status": "completed",
             "code": concept(SNOMED, "233527006", "Central venous cannula insertion"),
             "subject": {"reference": patient_url}, "performedDateTime": iso(onset + timedelta(minutes=50))})
        add({"resourceType": "MedicationAdministration", "status": "in-progress",
             "medicationCodeableConcept": concept(RXNORM, "242969", "4 ML norepinephrine 1 MG/ML Injection"),
             "subject": {"reference": patient_url}, "context": {"reference": icu},
             "effectivePeriod": {"start": iso(now - timedelta(minutes=90))},
             "dosage": {"rateQuantity": quantity(0.12, "ug/kg/min")}})
        for minutes, (sbp, dbp, mean) in ((60, (88, 48, 61)), (35, (86, 47, 60)), (10, (84, 46, 59))):
            when = now - timedelta(minutes=minutes)
            bp(icu, when, sbp, dbp)
            obs(icu, when, "8478-0", "Mean blood pressure", mean, "mm[Hg]")
            obs(icu, when, "8867-4", "Heart rate", 112, "/min")
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
