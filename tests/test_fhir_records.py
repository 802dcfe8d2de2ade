"""Issue 9: real patient records — open world, terminology, one patient, conflicts and gaps, temporal facts,
the remaining mappings, size, and examples that work on any date. Records are generated here
(tests/fhir_records.py: Synthea-shaped, years of history) or built from HL7-example-shaped resources."""
from __future__ import annotations

import copy
import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pressor.cli.main import cli
from pressor.engine.ehr.fhir import FhirError, from_bundle, from_hook_request, load_mapping
from pressor.engine.ehr.reading import read_bundle
from pressor.engine.errors import InputError, RuleFileError
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.pack import load_pack

from .fhir_records import LOINC, RXNORM, SNOMED, concept, iso, quantity, synthea_like

ROOT = Path(__file__).resolve().parent.parent
PID = "p1"
SUBJECT = {"reference": f"Patient/{PID}"}


def patient(**extra) -> dict:
    return {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1960-01-01", **extra}


def obs(rid: str, code: str, when, value=None, unit="mm[Hg]", **extra) -> dict:
    r = {"resourceType": "Observation", "id": rid, "status": "final", "code": concept(LOINC, code, code),
         "subject": SUBJECT, "effectiveDateTime": iso(when), **extra}
    if value is not None:
        r["valueQuantity"] = quantity(value, unit)
    return r


def condition(rid: str, code: str, display: str = "", verification: str = "confirmed", onset=None) -> dict:
    r = {"resourceType": "Condition", "id": rid, "subject": SUBJECT, "code": concept(SNOMED, code, display or code),
         "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "active"),
         "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification, verification)}
    if onset is not None:
        r["onsetDateTime"] = iso(onset)
    return r


def infusion(rid: str, system: str, code: str, start, rate=None, unit="ug/kg/min", status="in-progress", end=None, **extra) -> dict:
    r = {"resourceType": "MedicationAdministration", "id": rid, "status": status, "subject": SUBJECT,
         "medicationCodeableConcept": concept(system, code, code), "effectivePeriod": {"start": iso(start)}, **extra}
    if end is not None:
        r["effectivePeriod"]["end"] = iso(end)
    if rate is not None:
        r["dosage"] = {"rateQuantity": quantity(rate, unit)}
    return r


def bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def trusting(tmp_path: Path, *facts: str, extra: str = ""):
    text = Path(load_mapping().file).read_text().replace("trusted_complete: []", f"trusted_complete: [{', '.join(facts)}]")
    if extra:
        text = text.replace("local_codes: {}", extra)
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return load_mapping(path)


@pytest.fixture(scope="module")
def record(now):
    return synthea_like(now=now, years=6)


# --- 1. open world -----------------------------------------------------------------------------


def test_a_descendant_of_hypertensive_disorder_gives_chronic_hypertension_and_the_70_target(pack, now):
    conv = from_bundle(bundle(patient(), condition("htn", "59621000", "Essential hypertension")), now=now, pack=pack)
    assert conv.state["patient"]["chronic_hypertension"] is True
    result = evaluate(pack, {**conv.state, "shock": {"type": "septic"}}, now=now)
    assert result.derived["derived.map_target_mmhg"] == 70


def test_no_hypertension_condition_is_unknown_not_false_unless_the_list_is_trusted(now, tmp_path):
    conv = from_bundle(bundle(patient()), now=now)
    assert "chronic_hypertension" not in conv.state.get("patient", {})
    assert conv.facts["patient.chronic_hypertension"]["from"] == "unknown"
    assert "absence is unknown" in conv.facts["patient.chronic_hypertension"]["why"]
    trusted = from_bundle(bundle(patient()), now=now, mapping=trusting(tmp_path, "patient.chronic_hypertension"))
    assert trusted.state["patient"]["chronic_hypertension"] is False


def test_a_refuted_condition_is_a_negative_finding(now):
    conv = from_bundle(bundle(patient(), condition("htn", "38341003", verification="refuted")), now=now)
    assert conv.state["patient"]["chronic_hypertension"] is False


def test_an_infusion_pressor_cannot_identify_makes_every_rate_it_could_be_unknown(now, tmp_path):
    local = infusion("ne-local", "urn:oid:1.2.3.4.5", "NE-4MG-250", now - timedelta(hours=1), 0.1)
    stopped_epi = infusion("epi", RXNORM, "3992", now - timedelta(hours=3), 0.05, status="completed", end=now - timedelta(hours=2))
    conv = from_bundle(bundle(patient(), local, stopped_epi), now=now,
                       mapping=trusting(tmp_path, "infusions.norepinephrine_mcg_kg_min", "infusions.dopamine_mcg_kg_min"))
    assert "infusions" not in conv.state or "norepinephrine_mcg_kg_min" not in conv.state["infusions"]
    assert "MedicationAdministration/ne-local" in conv.facts["infusions.norepinephrine_mcg_kg_min"]["why"]
    assert "MedicationAdministration/ne-local" in conv.facts["infusions.dopamine_mcg_kg_min"]["why"]
    assert "vasopressin_units_min" not in conv.state.get("infusions", {})  # ug/kg/min cannot be vasopressin's rate: not blamed
    assert any("ne-local" in n and "cannot identify" in n for n in conv.notes)


def test_a_site_adds_a_local_code_in_the_mapping_without_code_changes(now, tmp_path):
    extra = ('local_codes:\n  norepinephrine:\n    - {system: "urn:oid:1.2.3.4.5", code: NE-4MG-250, '
             'display: "Noradrenaline 4 mg in 250 mL", source: "site pharmacy formulary"}')
    mapping = trusting(tmp_path, extra=extra)
    local = infusion("ne-local", "urn:oid:1.2.3.4.5", "NE-4MG-250", now - timedelta(hours=1), 0.1)
    conv = from_bundle(bundle(patient(), local), now=now, mapping=mapping)
    assert conv.state["infusions"]["norepinephrine_mcg_kg_min"] == 0.1


def test_epinephrine_as_an_rxnorm_clinical_drug_is_recognised(now):
    conv = from_bundle(bundle(patient(), infusion("epi", RXNORM, "1660014", now - timedelta(minutes=30), 0.05)), now=now)
    assert conv.state["infusions"]["epinephrine_mcg_kg_min"] == 0.05
    assert any("1660014" in n and "not confirmed" in n for n in conv.notes)


def test_an_explicitly_stopped_infusion_is_zero(now):
    ne = infusion("ne", RXNORM, "7512", now - timedelta(hours=3), 0.1, status="stopped", end=now - timedelta(hours=1))
    conv = from_bundle(bundle(patient(), ne), now=now)
    assert conv.state["infusions"]["norepinephrine_mcg_kg_min"] == 0
    assert "MedicationAdministration/ne" in conv.facts["infusions.norepinephrine_mcg_kg_min"]["sources"][0]


def hook(prefetch: dict) -> dict:
    return {"hook": "patient-view", "hookInstance": "i", "context": {"patientId": PID}, "prefetch": prefetch}


def test_an_operation_outcome_in_a_prefetch_is_not_an_empty_list(now, tmp_path):
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    mapping = trusting(tmp_path, "patient.chronic_hypertension", "infusions.norepinephrine_mcg_kg_min")
    conv = from_hook_request(hook({"patient": patient(), "conditions": outcome, "medicationAdministrations": outcome,
                                   "medicationRequests": None, "observations": None, "procedures": None}),
                             now=now, mapping=mapping)
    assert "conditions" in conv.missing and "medicationAdministrations" in conv.missing
    assert "chronic_hypertension" not in conv.state["patient"] and "infusions" not in conv.state
    assert any("OperationOutcome" in n for n in conv.notes)


def test_a_paginated_prefetch_is_incomplete(now, tmp_path):
    page = {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": "https://ehr/next"}], "entry": []}
    mapping = trusting(tmp_path, "patient.chronic_hypertension")
    conv = from_hook_request(hook({"patient": patient(), "conditions": page}), now=now, mapping=mapping)
    assert "chronic_hypertension" not in conv.state["patient"] and "conditions" in conv.missing
    assert any("'next' link" in n for n in conv.notes)


# --- 2. terminology ----------------------------------------------------------------------------


@pytest.mark.parametrize("code,fact,value", [
    ("78975002", "patient.chronic_hypertension", True),  # Malignant essential hypertension (VSAC expansion)
    ("12983003", "shock.type", "septic"),  # Failed attempted abortion with septic shock
    ("31005002", "shock.type", "hepatorenal"),  # Hepatorenal syndrome due to a procedure
    ("39579001", "shock.type", "anaphylactic"),
    ("89138009", "shock.type", "cardiogenic"),
    ("111930002", "shock.type", "hypovolemic"),
    ("77386006", "patient.pregnant", True),
    ("991000124109", "findings.myocardial_dysfunction", True),  # Severe left ventricular systolic dysfunction
])
def test_conditions_match_a_code_or_its_listed_descendants(now, code, fact, value):
    conv = from_bundle(bundle(patient(), condition("c", code)), now=now)
    section, key = fact.split(".")
    assert conv.state[section][key] == value


def test_the_value_sets_cover_what_the_issue_names_and_record_their_sources():
    doc = json.loads((ROOT / "rules" / "fhir" / "valuesets.json").read_text())
    assert doc["version"] and doc["vsac_source"]["commit"]
    names = set(doc["valuesets"])
    assert {"septic_shock", "cardiogenic_shock", "hypovolemic_shock", "anaphylaxis", "hepatorenal_syndrome", "hypertension",
            "pregnancy", "norepinephrine", "vasopressin", "epinephrine", "dobutamine", "dopamine", "phenylephrine",
            "crystalloid", "albumin", "blood_products", "hydrocortisone"} <= names
    for vs in doc["valuesets"].values():
        assert vs["codes"] and all(c["source"] and isinstance(c["confirmed"], bool) for c in vs["codes"])
    mapping = load_mapping()
    used = {c.valueset for c in mapping.conditions} | {m.valueset for m in mapping.medications} | set(mapping.fluids)
    assert used <= names


def test_the_value_set_script_regenerates_from_a_vsac_directory(tmp_path):
    from pressor.engine.ehr.valueset_build import build

    vsac = {"2.16.840.1.113883.3.464.1003.104.12.1011": {"resourceType": "ValueSet", "id": "x", "title": "Essential Hypertension",
            "version": "1", "expansion": {"identifier": "e", "contains": [
                {"system": SNOMED, "code": "59621000", "display": "Essential hypertension (disorder)"},
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10", "display": "Essential hypertension"}]}}}
    sources = {"version": "t", "vsac_source": {"repository": "r", "commit": "c", "path": "p"}, "systems": {"snomed": SNOMED},
               "valuesets": {"hypertension": {"title": "t", "vsac": [{"oid": "2.16.840.1.113883.3.464.1003.104.12.1011",
                                                                      "systems": ["snomed"]}],
                                              "vsac_display": [{"pattern": "^essential", "systems": ["snomed"]}]}}}
    (tmp_path / "drugs").mkdir()
    (tmp_path / "drugs" / "p.csv").write_text("id,code,name,set\n1,2103185,vasopressin (USP) 20 UNT/ML Injection,p\n"
                                              "2,OMOP1,vasopressin Box of 5,p\n3,9,50 ML Lidocaine / Vasopressin,p\n")
    sources["csv_source"] = {"repository": "q", "commit": "d"}
    sources["systems"]["rxnorm"] = RXNORM
    sources["valuesets"]["vasopressin"] = {"title": "v", "csv": [{"file": "drugs/p.csv", "code": 1, "name": 2, "system": "rxnorm",
                                                                  "match": "vasopressin", "exclude": "lidocaine"}]}
    out = build(sources, vsac, tmp_path)
    assert [c["code"] for c in out["valuesets"]["hypertension"]["codes"]] == ["59621000"]
    assert "Essential Hypertension" in out["valuesets"]["hypertension"]["codes"][0]["source"]
    assert [c["code"] for c in out["valuesets"]["vasopressin"]["codes"]] == ["2103185"]  # RxNorm only, exclusions applied
    assert build(sources, vsac, tmp_path) == out  # deterministic


# --- 3. one patient ----------------------------------------------------------------------------


def test_another_patients_observation_is_refused_naming_it(now):
    other = obs("w-other", "29463-7", now - timedelta(hours=1), 7, "kg", subject={"reference": "Patient/someone-else"})
    with pytest.raises(FhirError) as err:
        from_bundle(bundle(patient(), other), now=now)
    assert "Observation/w-other" in str(err.value) and "Patient/someone-else" in str(err.value)


def test_two_patients_in_one_bundle_is_an_error(now):
    with pytest.raises(FhirError, match="2 Patient resources"):
        from_bundle(bundle(patient(), {**patient(), "id": "p2"}), now=now)


def test_the_service_refuses_a_resource_about_another_patient_than_the_context(now):
    body = hook({"patient": patient(), "observations": bundle(
        obs("w", "29463-7", now, 70, "kg", subject={"reference": "Patient/intruder"}))})
    with pytest.raises(FhirError, match="Observation/w is about Patient/intruder"):
        from_hook_request(body, now=now)


def test_synthea_urn_uuid_references_name_the_patient(record, now):
    conv = from_bundle(record, now=now)
    assert conv.state["patient"]["weight_kg"] == 72


# --- 4. conflicts and gaps are said --------------------------------------------------------------


def test_two_maps_at_the_same_instant_leave_it_unknown_naming_both(now):
    t = now - timedelta(minutes=5)
    conv = from_bundle(bundle(patient(), obs("m1", "8478-0", t, 50), obs("m2", "8478-0", t, 95)), now=now)
    assert "vitals" not in conv.state
    why = conv.facts["vitals.map_mmhg"]["why"]
    assert "Observation/m1" in why and "Observation/m2" in why


def test_a_component_with_data_absent_reason_is_unknown_with_a_note(now):
    panel = obs("bp", "85354-9", now - timedelta(minutes=5), component=[
        {"code": concept(LOINC, "8480-6", "SBP"), "valueQuantity": quantity(90, "mm[Hg]")},
        {"code": concept(LOINC, "8462-4", "DBP"), "dataAbsentReason": concept(
            "http://terminology.hl7.org/CodeSystem/data-absent-reason", "not-performed", "Not Performed")}])
    conv = from_bundle(bundle(patient(), panel), now=now)
    assert conv.state["vitals"]["sbp_mmhg"] == 90 and "dbp_mmhg" not in conv.state["vitals"]
    assert any("dataAbsentReason 'not-performed'" in n and "/component/1" in n for n in conv.notes)


def test_cancelled_and_entered_in_error_are_not_used_and_said(now):
    conv = from_bundle(bundle(patient(), obs("m1", "8478-0", now, 50, status="entered-in-error"),
                              obs("m2", "8478-0", now, 52, status="cancelled")), now=now)
    assert "vitals" not in conv.state
    assert any("m1" in n and "entered-in-error" in n for n in conv.notes) and any("m2" in n and "cancelled" in n for n in conv.notes)


def test_a_unitless_value_leaves_its_fact_unknown_and_the_patient_is_still_read(now):
    weight = obs("w", "29463-7", now - timedelta(hours=1), None)
    weight["valueQuantity"] = {"value": 72}
    conv = from_bundle(bundle(patient(), weight, obs("m", "8478-0", now, 60)), now=now)
    assert "weight_kg" not in conv.state["patient"] and conv.state["vitals"]["map_mmhg"] == 60
    assert any("Observation/w" in n and "no unit" in n for n in conv.notes)


# --- 5. temporal facts ---------------------------------------------------------------------------


def test_temporal_facts_are_computed_from_a_years_long_record(record, pack, now):
    conv = from_bundle(record, now=now, pack=pack)
    s = conv.state
    assert s["findings"]["hypotension_persists"] is True  # MAP 61, 60, 59 < 70 (hypertensive) over 60 min on 0.12
    assert s["perfusion"]["lactate_rising"] is True  # 3.1 then 4.2
    assert s["infusions"]["vasopressor_hours"] == 1.5
    assert s["fluids"]["crystalloid_ml_kg"] == pytest.approx(2200 / 72, abs=0.1)
    assert s["fluids"]["hours_since_recognition"] == 4.0
    assert conv.facts["findings.hypotension_persists"]["from"] == "computed"


def test_hypotension_on_a_changed_dose_does_not_persist(pack, now):
    rows = [patient(), condition("s", "76571007", onset=now - timedelta(hours=2)), condition("h", "38341003", verification="refuted"),
            infusion("ne1", RXNORM, "7512", now - timedelta(hours=2), 0.05, status="completed", end=now - timedelta(minutes=10)),
            infusion("ne2", RXNORM, "7512", now - timedelta(minutes=10), 0.1)]
    rows += [obs(f"m{i}", "8478-0", now - timedelta(minutes=m), 58) for i, m in enumerate((40, 20, 2))]
    conv = from_bundle(bundle(*rows), now=now, pack=pack)
    assert "hypotension_persists" not in conv.state.get("findings", {})
    assert "rate changed" in conv.facts["findings.hypotension_persists"]["why"]


def test_minutes_since_the_last_epinephrine_bolus(pack, now):
    bolus = {"resourceType": "MedicationAdministration", "id": "epi-im", "status": "completed", "subject": SUBJECT,
             "medicationCodeableConcept": concept(RXNORM, "3992", "epinephrine"), "effectiveDateTime": iso(now - timedelta(minutes=12)),
             "dosage": {"dose": quantity(0.5, "mg")}}
    conv = from_bundle(bundle(patient(), bolus), now=now, pack=pack)
    assert conv.state["anaphylaxis"] == {"minutes_since_epinephrine": 12.0, "epinephrine_boluses_given": True}


def test_a_value_given_directly_wins_and_the_result_says_which(tmp_path, now):
    doc = tmp_path / "t.yaml"
    doc.write_text("timeline:\n  state:\n    fluids: {crystalloid_ml_kg: 10}\n    patient: {weight_kg: 50}\n  events:\n"
                   "    - {at: -2h, marker: shock_recognised}\n    - {at: -1h, fluid: crystalloid, volume_ml: 2000}\n")
    out = CliRunner().invoke(cli, ["recommend", str(doc), "--json", "--no-audit", "--now", iso(now)])
    assert out.exit_code == 0, out.stderr
    fact = json.loads(out.stdout)["result"]["facts"]["fluids.crystalloid_ml_kg"]
    assert fact["from"] == "given" and fact["value"] == 10 and fact["computed"]["value"] == 40.0


def test_a_timeline_input_is_validated_by_its_schema(tmp_path):
    doc = tmp_path / "t.yaml"
    doc.write_text("timeline:\n  events:\n    - {at: -1h, infusion: norepinephrine}\n")
    out = CliRunner().invoke(cli, ["recommend", str(doc), "--no-audit"])
    assert out.exit_code == 1 and "/timeline/events/0" in out.stderr and "Traceback" not in out.stderr


def test_explain_accepts_a_timeline_and_a_fhir_bundle(tmp_path, record, now):
    out = CliRunner().invoke(cli, ["explain", str(ROOT / "examples" / "timeline" / "septic-persisting.yaml"),
                                   "--rule", "escalation.add-vasopressin", "--json"])
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["rules"][0]["outcome"] == "fired" and data["facts"]["findings.hypotension_persists"]["from"] == "computed"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))
    out = CliRunner().invoke(cli, ["explain", "--fhir", str(path), "--now", iso(now), "--rule", "escalation.add-vasopressin"])
    assert out.exit_code == 0, out.stderr


def pack_with(tmp_path: Path, text: str) -> Path:
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("fhir", "__pycache__", "*.py"))
    (rules / "temporal.yaml").write_text(text)
    return rules


def test_a_temporal_fact_with_the_wrong_unit_or_fact_is_refused_at_load(tmp_path):
    rules = pack_with(tmp_path, "temporal:\n  - {fact: fluids.crystalloid_ml_kg, kind: hours_since, marker: shock_recognised,"
                                " unit: h, description: d}\n  - {fact: vitals.map, kind: minutes_since_last_dose, drug: epinephrine,"
                                " unit: h, description: d}\n")
    with pytest.raises(RuleFileError) as err:
        load_pack(rules)
    text = " | ".join(p.message for p in err.value.problems)
    assert "vitals.map" in text and "not a patient-state fact" in text and "unit of a minutes_since_last_dose fact is min" in text


def test_lint_reads_a_pack_with_temporal_facts():
    out = CliRunner().invoke(cli, ["lint", "--json"])
    assert out.exit_code == 0, out.stdout  # no error finding on the bundled pack, temporal facts included


# --- 6. the remaining mappings ------------------------------------------------------------------


def test_access_findings_bag_and_coinfusions(now):
    line = {"resourceType": "Procedure", "id": "cvc", "status": "completed", "subject": SUBJECT,
            "code": concept(SNOMED, "233527006", "Central venous cannula insertion"), "performedDateTime": iso(now - timedelta(hours=1))}
    art = {"resourceType": "Device", "id": "art", "status": "active", "patient": SUBJECT,
           "type": concept(SNOMED, "392247006", "Insertion of catheter into artery")}
    ext = condition("ext", "213290003", "Extravasation of infusion")
    bag = {"resourceType": "Medication", "id": "ne-bag", "code": concept(RXNORM, "7512", "norepinephrine"),
           "ingredient": [{"itemCodeableConcept": concept(RXNORM, "7512", "norepinephrine"),
                           "strength": {"numerator": quantity(4, "mg"), "denominator": quantity(250, "mL")}}]}
    ne = infusion("ne", RXNORM, "7512", now - timedelta(hours=1), 0.1)
    del ne["medicationCodeableConcept"]
    ne["medicationReference"] = {"reference": "Medication/ne-bag"}
    bicarb = infusion("bic", RXNORM, "36676", now - timedelta(hours=1), 50, unit="mL/h")
    conv = from_bundle(bundle(patient(), line, art, ext, bag, ne, bicarb), now=now)
    s = conv.state
    assert s["access"] == {"central_venous": True, "arterial_line": True}
    assert s["findings"]["extravasation"] is True
    assert s["infusions"]["norepinephrine_concentration_mcg_ml"] == 16
    assert s["line_coinfusions"] == ["sodium_bicarbonate"]


def test_from_a_record_with_fluids_access_and_map_the_start_and_dose_rules_are_decided(pack, now, tmp_path):
    record = synthea_like(now=now, years=2, shock=False)
    onset = now - timedelta(hours=2)
    record["entry"] += [{"resource": r} for r in (
        {**condition("ss", "76571007", onset=onset), "subject": None},
        *[{**infusion(f"ns{i}", RXNORM, "313002", onset + timedelta(minutes=20 * i), status="completed",
                      end=onset + timedelta(minutes=20 * i + 15)), "subject": None, "dosage": {"dose": quantity(1100, "mL")}}
          for i in range(2)],
        {"resourceType": "Procedure", "id": "cvc", "status": "completed", "code": concept(SNOMED, "233527006", "CVC"),
         "performedDateTime": iso(onset)},
        {**obs("w", "29463-7", onset, 72, "kg"), "subject": None},
        {**obs("preg", "82810-3", onset), "subject": None, "valueCodeableConcept": concept(SNOMED, "60001007", "Not pregnant")},
        {**obs("m", "8478-0", now - timedelta(minutes=5), 60), "subject": None},
        {**obs("s", "8480-6", now - timedelta(minutes=5), 88), "subject": None},
        {**obs("d", "8462-4", now - timedelta(minutes=5), 48), "subject": None})]
    pid = next(e["fullUrl"] for e in record["entry"] if e["resource"]["resourceType"] == "Patient")
    for e in record["entry"]:
        if e["resource"].get("subject", 0) is None:
            e["resource"]["subject"] = {"reference": pid}
    mapping = trusting(tmp_path, "infusions.norepinephrine_mcg_kg_min")
    conv = from_bundle(record, now=now, pack=pack, mapping=mapping)
    assert conv.state["fluids"]["crystalloid_ml_kg"] == pytest.approx(2200 / 72, abs=0.1)
    result = evaluate(pack, conv.state, now=now)
    fired = result.fired_ids()
    assert "norepinephrine.start" in fired and "norepinephrine.dose-adult" in fired, (fired, result.not_evaluable)


# --- 7. size -------------------------------------------------------------------------------------


def test_a_4_mb_record_is_read_by_the_cli(tmp_path, now):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(synthea_like(now=now, target_bytes=4_000_000)))
    assert path.stat().st_size > 4_000_000
    out = CliRunner().invoke(cli, ["recommend", "--fhir", str(path), "--now", iso(now), "--no-audit", "--json"])
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["fhir"]["state"]["findings"]["hypotension_persists"] is True


def test_over_the_fhir_limit_the_message_names_it(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle(patient())) + " " * 2000)
    with pytest.raises(InputError, match="FHIR bundle is larger than the FHIR bundle limit of 1024 bytes"):
        read_bundle(path, max_bytes=1024)


# --- 8. examples that work on any date ------------------------------------------------------------


def test_the_timeline_example_gives_the_same_answer_on_any_date():
    answers = []
    for when in ("2026-01-01T08:00:00Z", "2031-07-15T23:30:00Z"):
        out = CliRunner().invoke(cli, ["recommend", str(ROOT / "examples" / "timeline" / "septic-persisting.yaml"),
                                       "--json", "--no-audit", "--now", when])
        assert out.exit_code == 0, out.stderr
        answers.append(sorted(r["rule_id"] for r in json.loads(out.stdout)["result"]["recommendations"]))
    assert answers[0] == answers[1] and "escalation.add-vasopressin" in answers[0]


def test_the_documented_fhir_commands_carry_their_evaluation_time():
    readme = (ROOT / "docs" / "ehr.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("pressor recommend --fhir")]
    assert commands and all("--now " in line for line in commands)


# --- shuffling a bundle never changes the result -----------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_shuffling_a_bundles_entries_never_changes_the_result(seed, record, pack, now):
    shuffled = copy.deepcopy(record)
    random.Random(seed).shuffle(shuffled["entry"])
    a, b = from_bundle(record, now=now, pack=pack), from_bundle(shuffled, now=now, pack=pack)
    assert a.state == b.state
    assert evaluate(pack, a.state, now=now).to_dict()["recommendations"] == evaluate(pack, b.state, now=now).to_dict()["recommendations"]


def test_lint_checks_temporal_units_and_ranges(tmp_path):
    from pressor.engine.authoring.lint import lint_pack

    rules = pack_with(tmp_path, "temporal:\n  - {fact: anaphylaxis.minutes_since_epinephrine, kind: hours_since, marker: shock_recognised,"
                                " unit: h, description: d}\n  - {fact: findings.hypotension_persists, kind: sustained_below,"
                                " series: vitals.map_mmhg, threshold: 400, minutes: 15, description: d}\n")
    codes = {(f.code, f.severity) for f in lint_pack(rules).findings}
    assert ("temporal-unit", "error") in codes and ("temporal-range", "warning") in codes


def test_a_timeline_applies_the_look_back_windows_and_says_same_time_conflicts(tmp_path, now):
    doc = tmp_path / "t.yaml"
    doc.write_text("timeline:\n  events:\n    - {at: -8h, observe: vitals.heart_rate_bpm, value: 90}\n"
                   "    - {at: -5min, observe: vitals.map_mmhg, value: 50}\n    - {at: -5min, observe: vitals.map_mmhg, value: 95}\n")
    out = CliRunner().invoke(cli, ["recommend", str(doc), "--json", "--no-audit", "--now", iso(now)])
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    facts = data["result"]["facts"]
    assert facts["vitals.map_mmhg"]["from"] == "unknown" and "conflicting" in facts["vitals.map_mmhg"]["why"]
    assert facts["vitals.heart_rate_bpm"]["from"] == "unknown"
    assert any("older than 6 h" in n for n in data["timeline"]["notes"])


def test_a_branded_vasopressin_product_is_recognised(now):
    vaso = infusion("vaso", RXNORM, "2399915", now - timedelta(minutes=30), 0.03, unit="U/min")  # 100 ML ... [Vasostrict]
    conv = from_bundle(bundle(patient(), vaso), now=now)
    assert conv.state["infusions"]["vasopressin_units_min"] == 0.03


def test_vasopressor_hours_count_the_current_episode_only(pack, now):
    old = infusion("ne-2019", RXNORM, "7512", now - timedelta(days=900), 0.1, status="completed", end=now - timedelta(days=898))
    ne = infusion("ne1", RXNORM, "7512", now - timedelta(hours=5), 0.05, status="completed", end=now - timedelta(hours=2))
    vaso = infusion("v", RXNORM, "11149", now - timedelta(hours=3), 0.03, unit="U/min")
    conv = from_bundle(bundle(patient(), old, ne, vaso), now=now, pack=pack)
    assert conv.state["infusions"]["vasopressor_hours"] == 5.0  # 5 h ago, unbroken (vasopressin overlapped the stop)
