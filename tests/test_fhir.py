"""FHIR R4 -> patient state (engine/ehr/fhir.py) and ``pressor recommend --fhir``."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pressor.cli.main import cli
from pressor.engine.errors import InputError
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.ehr.fhir import from_bundle, from_hook_request, load_mapping

FHIR = Path(__file__).resolve().parent.parent / "examples" / "fhir"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def bundle(name: str) -> dict:
    return json.loads((FHIR / f"{name}.json").read_text())


def resource(b: dict, rid: str) -> dict:
    return next(e["resource"] for e in b["entry"] if e["resource"].get("id") == rid)


def observation(rid: str, code: str, when: str, value: float, unit: str) -> dict:
    return {"resourceType": "Observation", "id": rid, "status": "final", "effectiveDateTime": when,
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "system": UCUM, "code": unit}}


def add(b: dict, *resources: dict) -> dict:
    """The bundle with resources added, each about the bundle's patient unless it names a subject."""
    b = copy.deepcopy(b)
    pid = next(e["resource"]["id"] for e in b["entry"] if e["resource"]["resourceType"] == "Patient")
    for r in resources:
        if r["resourceType"] != "Patient" and "subject" not in r:
            r = {**r, "subject": {"reference": f"Patient/{pid}"}}
        b["entry"].append({"resource": r})
    return b


# --- conversions ------------------------------------------------------------------


def test_pounds_become_kilograms_and_the_conversion_is_noted(now):
    conv = from_bundle(bundle("lb-weight-mg-dl-lactate"), now=now)
    assert conv.state["patient"]["weight_kg"] == pytest.approx(154 * 0.45359237, abs=1e-6)
    assert any("154 [lb_av]" in n and "patient.weight_kg" in n for n in conv.notes)


def test_lactate_in_mg_per_dl_becomes_mmol_per_l(now):
    conv = from_bundle(bundle("lb-weight-mg-dl-lactate"), now=now)
    assert conv.state["perfusion"]["lactate_mmol_l"] == pytest.approx(36 / 9.008, abs=1e-6)


def test_conversion_factors_agree_with_pint():
    import pint

    ureg = pint.UnitRegistry()
    mapping = load_mapping()
    factors = {r.quantity: r.factors for r in mapping.quantities} | {m.quantity: m.factors for m in mapping.medications if m.quantity}
    checks = [("kg", "[lb_av]", "lb", "kg"), ("kg", "g", "g", "kg"),
              ("mcg_kg_min", "mg/kg/min", "mg/kg/min", "ug/kg/min"), ("mcg_kg_min", "ug/kg/h", "ug/kg/h", "ug/kg/min"),
              ("mcg_kg_min", "mg/kg/h", "mg/kg/h", "ug/kg/min"), ("mcg_kg_min", "ng/kg/min", "ng/kg/min", "ug/kg/min"),
              ("units_min", "U/h", "1/h", "1/min")]
    for quantity, code, pint_from, pint_to in checks:
        assert factors[quantity][code] == pytest.approx(ureg.Quantity(1, pint_from).to(pint_to).magnitude, rel=1e-9), code
    lactate = ureg.Quantity(1, "mg/dL") / ureg.Quantity(90.08, "g/mol")
    assert factors["lactate_mmol_l"]["mg/dL"] == pytest.approx(lactate.to("mmol/L").magnitude, rel=1e-9)


def test_blood_pressure_panel_components_are_read(now):
    conv = from_bundle(bundle("septic-adult"), now=now)
    assert conv.state["vitals"]["sbp_mmhg"] == 68 and conv.state["vitals"]["dbp_mmhg"] == 40
    assert "Observation/bp-now at /entry/3/resource/component/0" in conv.sources["vitals.sbp_mmhg"]


def test_latest_observation_wins(now):
    b = bundle("septic-adult")
    conv = from_bundle(b, now=now)
    assert conv.state["vitals"]["map_mmhg"] == 50  # 11:50 beats 03:00 (and the 10:00 panel loses to 11:50)
    later = add(b, observation("map-later", "8478-0", "2026-11-24T11:59:00Z", 55, "mm[Hg]"))
    assert from_bundle(later, now=now).state["vitals"]["map_mmhg"] == 55


def test_observations_outside_the_window_are_ignored_and_said_so(now):
    conv = from_bundle(bundle("septic-adult"), now=now)
    assert any("Observation/map-night" in n and "older than 6 h" in n for n in conv.notes)
    conv = from_bundle(bundle("missing-weight"), now=now)
    assert "weight_kg" not in conv.state["patient"]
    assert any("Observation/w-old" in n and "patient.weight_kg left unknown" in n for n in conv.notes)


def test_the_look_back_window_is_overridable(now):
    conv = from_bundle(bundle("missing-weight"), now=now, mapping=load_mapping(lookback_hours={"weight": 24 * 90}))
    assert conv.state["patient"]["weight_kg"] == 81
    with pytest.raises(InputError, match="unknown look-back window"):
        load_mapping(lookback_hours={"vital": 1})


def test_an_unknown_unit_leaves_the_fact_unknown_with_a_note_naming_the_resource(now):
    b = add(bundle("septic-adult"), observation("map-cm", "8478-0", "2026-11-24T11:55:00Z", 7, "cm[H2O]"))
    conv = from_bundle(b, now=now, file="b.json")
    assert "map_mmhg" not in conv.state["vitals"]  # the latest MAP is unusable: no older value stands in for it
    pointer = f"/entry/{len(b['entry']) - 1}/resource/valueQuantity"
    assert any("Observation/map-cm" in n and pointer in n and "cm[H2O]" in n and "mm[Hg]" in n for n in conv.notes)
    assert conv.facts["vitals.map_mmhg"]["from"] == "unknown" and "map-cm" in conv.facts["vitals.map_mmhg"]["why"]
    assert conv.state["patient"]["weight_kg"] == 72  # the rest of the patient is read


def test_an_out_of_range_value_is_left_unknown_naming_its_resource(now):
    b = add(bundle("septic-adult"), observation("map-400", "8478-0", "2026-11-24T11:59:00Z", 400, "mm[Hg]"))
    conv = from_bundle(b, now=now)
    assert "map_mmhg" not in conv.state["vitals"]
    assert any("Observation/map-400" in n and "refused" in n for n in conv.notes)


def test_infusion_rates_in_every_accepted_form(now):
    b = bundle("cardiogenic-on-norepinephrine")
    ne = resource(b, "ne")
    ne["dosage"] = {"rateRatio": {"numerator": {"value": 7.2, "system": UCUM, "code": "ug/kg"},
                                  "denominator": {"value": 1, "system": UCUM, "code": "h"}}}
    vaso = copy.deepcopy(ne) | {"id": "vaso", "medicationCodeableConcept": {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "11149"}]},
        "dosage": {"rateQuantity": {"value": 0.03, "system": UCUM, "code": "[iU]/min"}}}
    conv = from_bundle(add(b, vaso), now=now)
    assert conv.state["infusions"]["norepinephrine_mcg_kg_min"] == pytest.approx(0.12)
    assert conv.state["infusions"]["vasopressin_units_min"] == pytest.approx(0.03)
    assert "dopamine_mcg_kg_min" not in conv.state["infusions"]  # open world: not in the record is unknown, not 0


def test_a_fact_from_an_unverified_code_says_so(now):
    b = add(bundle("septic-adult"), observation("uo", "9188-4", "2026-11-24T11:00:00Z", 0.3, "mL/kg/h"))
    conv = from_bundle(b, now=now)
    assert conv.state["perfusion"]["urine_output_ml_kg_h"] == 0.3
    assert any("9188-4" in n and "not verified" in n for n in conv.notes)


def test_a_running_infusion_without_a_rate_is_unknown_not_zero(now):
    b = bundle("cardiogenic-on-norepinephrine")
    del resource(b, "ne")["dosage"]["rateQuantity"]
    conv = from_bundle(b, now=now)
    assert "norepinephrine_mcg_kg_min" not in conv.state.get("infusions", {})
    assert any("no rate is given" in n for n in conv.notes)


def test_conflicting_shock_types_stay_unknown(now):
    cs = copy.deepcopy(resource(bundle("cardiogenic-on-norepinephrine"), "cs"))
    del cs["subject"]
    b = add(bundle("septic-adult"), cs)
    conv = from_bundle(b, now=now)
    assert "shock" not in conv.state
    assert any("conflicting Conditions" in n for n in conv.notes)


def test_age_of_an_infant_is_a_fraction_of_a_year(now):
    b = bundle("pediatric")
    resource(b, "child")["birthDate"] = "2026-02-10"
    assert from_bundle(b, now=now).state["patient"]["age_years"] == pytest.approx(9 / 12, abs=0.01)


def trusting(tmp_path, *facts: str):
    """The bundled mapping with ``trusted_complete`` set to ``facts`` (a site that trusts its lists)."""
    text = Path(load_mapping().file).read_text().replace("trusted_complete: []", f"trusted_complete: [{', '.join(facts)}]")
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return load_mapping(path)


VASOPRESSOR_RATES = ["infusions.norepinephrine_mcg_kg_min", "infusions.vasopressin_units_min", "infusions.epinephrine_mcg_kg_min",
                     "infusions.dopamine_mcg_kg_min", "infusions.phenylephrine_mcg_kg_min"]


def test_a_draft_vasopressor_order_with_nothing_running_is_first_line_when_the_list_is_trusted(now, tmp_path):
    b = bundle("dopamine-first-line")
    resource(b, "dopamine-order").pop("reasonCode", None)
    conv = from_bundle(b, now=now, mapping=trusting(tmp_path, *VASOPRESSOR_RATES))
    assert conv.orders[0]["drug"] == "dopamine" and conv.orders[0]["purpose"] == "first_line"
    assert conv.states()[0]["order"] == {"drug": "dopamine", "purpose": "first_line"}
    default = from_bundle(b, now=now)  # default: absence is unknown, so is the purpose
    assert "purpose" not in default.orders[0]


def test_an_order_purpose_from_reason_code_wins(now):
    b = bundle("dopamine-first-line")
    resource(b, "dopamine-order")["reasonCode"] = [{"coding": [
        {"system": "https://pressor.invalid/fhir/CodeSystem/order-purpose", "code": "renal-protection"}]}]
    assert from_bundle(b, now=now).orders[0]["purpose"] == "renal_protection"


def test_order_purpose_is_unknown_when_a_vasopressor_already_runs(now):
    b = bundle("dopamine-first-line")
    resource(b, "dopamine-order").pop("reasonCode", None)
    ne = copy.deepcopy(resource(bundle("cardiogenic-on-norepinephrine"), "ne"))
    del ne["subject"]
    conv = from_bundle(add(b, ne), now=now)
    assert "purpose" not in conv.orders[0]
    assert any("purpose unknown" in n for n in conv.notes)


def test_without_medications_the_infusions_and_order_purpose_are_unknown(now):
    b = bundle("dopamine-first-line")
    res = [e["resource"] for e in b["entry"]]
    request = {"hook": "order-select", "hookInstance": "x", "context": {
        "patientId": "dopa", "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": res[-1]}]}},
        "prefetch": {"patient": res[0], "observations": {"resourceType": "Bundle", "entry": [
            {"resource": r} for r in res if r["resourceType"] == "Observation"]}}}
    conv = from_hook_request(request, now=now)
    assert "infusions" not in conv.state and "purpose" not in conv.orders[0]
    assert conv.missing == ["conditions", "medicationAdministrations", "medicationRequests", "procedures"]
    assert "chronic_hypertension" not in conv.state["patient"]


def test_a_bad_mapping_file_is_refused_with_its_location(tmp_path):
    text = (Path(load_mapping().file)).read_text().replace("fact: vitals.map_mmhg", "fact: vitals.map")
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_mapping(path)
    assert "unknown fact 'vitals.map'" in str(err.value) and err.value.problems[0].line is not None


def test_every_example_bundle_converts_and_evaluates(pack, now, result_validator):
    for path in sorted(FHIR.glob("*.json")):
        conv = from_bundle(json.loads(path.read_text()), now=now, file=path.name)
        for state in conv.states():
            result_validator.validate(evaluate(pack, state, now=now).to_dict())


# --- the CLI ------------------------------------------------------------------------


def test_recommend_fhir_json_wraps_the_result_and_the_conversion(result_validator):
    out = CliRunner().invoke(
        cli, ["recommend", "--fhir", str(FHIR / "dopamine-first-line.json"), "--json", "--now", "2026-11-24T12:00:00Z",
              "--trust-complete", "medications"])
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    result_validator.validate(data["result"])
    assert data["result"]["recommendations"][0]["rule_id"] == "avoid.dopamine-first-line"
    assert data["fhir"]["orders"][0] == {"drug": "dopamine", "purpose": "first_line",
                                         "source": data["fhir"]["orders"][0]["source"]}
    facts = data["result"]["facts"]
    assert facts["patient.weight_kg"]["from"] == "record" and "Observation/" in facts["patient.weight_kg"]["sources"][0]
    assert facts["access.central_venous"]["from"] == "unknown" and facts["access.central_venous"]["why"]


def test_recommend_fhir_text_shows_the_notes_on_stderr():
    out = CliRunner().invoke(
        cli, ["recommend", "--fhir", str(FHIR / "septic-adult.json"), "--now", "2026-11-24T12:00:00Z"])
    assert out.exit_code == 0 and out.stdout == ""
    assert "fhir: ignored 1 observation(s) for vitals.map_mmhg" in out.stderr
    assert "norepinephrine" in out.stderr


def test_recommend_fhir_refuses_a_file_that_is_not_a_bundle(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"resourceType": "Patient", "id": "p"}')
    out = CliRunner().invoke(cli, ["recommend", "--fhir", str(path)])
    assert out.exit_code == 1 and "expected a FHIR Bundle" in out.stderr
