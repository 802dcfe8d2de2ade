"""Fuzzing what comes from outside (issue 11, "Done when"): patient states as YAML and JSON text,
FHIR bundles and CDS Hooks requests, of random types and structures, mutated and garbled.

The CLI must exit 0 or 1 with one message per line on stderr, never a traceback; the service
must never answer 500. The CLI runs in-process (click's CliRunner) with the bundled pack loaded
once, so each example costs an evaluation, not a pack load; a few run through the installed
``pressor`` as a real process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pressor.cli.main import cli

from .strategies import STATE_SCHEMA, patient_states

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parent.parent
FHIR = ROOT / "examples" / "fhir"
PRESSOR = str(Path(sys.executable).with_name("pressor"))
NOW = ["--now", "2026-11-24T12:00:00Z", "--no-audit"]
#: Examples per test. The suite runs a fixed, modest set (derandomized: the same examples every run);
#: PRESSOR_FUZZ_EXAMPLES=5000 runs a longer, random campaign.
CAMPAIGN = int(os.environ.get("PRESSOR_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=CAMPAIGN or 40, deadline=None, derandomize=not CAMPAIGN, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def pack_loaded_once(pack):
    """``recommend`` gets the session's pack instead of loading and compiling it per example."""
    with pytest.MonkeyPatch.context() as mp:
        for command in ("recommend", "explain"):
            mp.setattr(f"pressor.cli.{command}.load_pack", lambda *args, **kwargs: pack)
        yield


def check_cli(result) -> None:
    """Exit 0 or 1; on 1 every stderr line is one located problem; never a traceback."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr)
    if result.exit_code == 1:
        lines = result.stderr.splitlines()
        assert lines and lines[0].startswith("error: "), result.stderr
        assert all(l.startswith(("error: ", "... and ")) for l in lines), result.stderr


# --- strategies ------------------------------------------------------------------------------

SECTIONS = sorted(STATE_SCHEMA["properties"])
FACTS = sorted({k for s in STATE_SCHEMA["properties"].values() for k in s.get("properties", {})})
ODD_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
KEYS = st.one_of(st.sampled_from(SECTIONS + FACTS), ODD_TEXT)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), ODD_TEXT,
    st.sampled_from(["septic", "none", "norepinephrine", "first_line", "sodium_bicarbonate", "2026-11-24"]),
)
ANY_JSON = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS, kids, max_size=4), max_leaves=20)
#: Raw YAML scalars that YAML 1.1 and 1.2 read differently, tags, anchors, special values.
YAML_TOKENS = st.sampled_from([
    "yes", "no", "on", "off", "Y", "n", "0x48", "0o110", "060", "7_2", "1:30", ".nan", "-.inf", "~", "null",
    "1e400", "1" * 120, "!foo 1", "!!timestamp x", "!!python/object:os.system 1", "&a 1", "*a", "'yes'",
    "2026-02-30", "2026-11-24 12:00:00", "[", "{", "|\n  x", "? a", "- 1", "@", "`", "%TAG", "---", "...",
])


def mutated_states() -> st.SearchStrategy[dict]:
    """A valid state with one section or fact replaced by anything."""

    @st.composite
    def build(draw):
        state = dict(draw(patient_states()))
        section = draw(st.sampled_from(SECTIONS))
        if draw(st.booleans()) or not isinstance(state.get(section), dict):
            state[section] = draw(ANY_JSON)
        else:
            state[section] = {**state[section], draw(KEYS): draw(ANY_JSON)}
        return state

    return build()


def render(data, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=1)  # NaN and Infinity written as such: must be refused
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def garbled(draw, text: str) -> str:
    """``text`` cut, with characters that matter to YAML or JSON inserted, or a line doubled."""
    alphabet = st.sampled_from(list('{}[]:,&*!|>\'"#-?%@`\n \t\\') + ["\u0000", "\u2028", "\ufeff", "\x85"])
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "cut", "double"]))
        if op == "insert":
            text = text[:at] + draw(st.text(alphabet=alphabet, min_size=1, max_size=3)) + text[at:]
        elif op == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
                text = "".join(lines)
    return text


@st.composite
def state_texts(draw) -> tuple[str, str]:
    """``(file name, text)`` of a patient state: random, mutated, garbled, or with YAML 1.1 tokens."""
    kind = draw(st.sampled_from(["any", "mutated", "garbled", "yaml-token", "text"]))
    fmt = draw(st.sampled_from(["json", "yaml"]))
    if kind == "text":
        return f"s.{fmt}", draw(st.text(max_size=200))
    if kind == "yaml-token":
        section, fact = draw(st.sampled_from(SECTIONS)), draw(st.sampled_from(FACTS))
        return "s.yaml", f"{section}:\n  {fact}: {draw(YAML_TOKENS)}\n  other: {draw(YAML_TOKENS)}\n"
    data = draw(ANY_JSON if kind == "any" else mutated_states())
    text = render(data, fmt)
    if kind == "garbled":
        text = draw(garbled(text))
    return f"s.{fmt}", text


# --- patient states, in-process ------------------------------------------------------------------

@FUZZ
@given(case=state_texts(), as_json=st.booleans())
def test_recommend_on_any_state_text_exits_0_or_1_with_a_message(tmp_path, case, as_json):
    name, text = case
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = CliRunner().invoke(cli, ["recommend", str(path), *NOW, *(["--json"] if as_json else [])])
    check_cli(result)


@FUZZ
@given(case=state_texts())
def test_recommend_on_stdin_and_explain_exit_0_or_1_with_a_message(case):
    _, text = case
    check_cli(CliRunner().invoke(cli, ["recommend", "-", *NOW], input=text))
    check_cli(CliRunner().invoke(cli, ["explain", "-", "--now", "2026-11-24T12:00:00Z"], input=text))


# --- FHIR bundles ----------------------------------------------------------------------------------

BUNDLES = {p.name: json.loads(p.read_text()) for p in sorted(FHIR.glob("*.json"))}


def paths_of(data, prefix=()):
    """Every path into a JSON value (keys and indices)."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths_of(v, prefix + (i,))


def in_resource(data, path) -> bool:
    """Whether ``path`` leads to a field of a FHIR resource other than a Bundle (item 5's ground)."""
    for step in path[:-1]:
        data = data[step]
        if isinstance(data, dict) and data.get("resourceType") not in (None, "Bundle"):
            return True
    return False


def replaced(data, path, value):
    if not path:
        return value
    copy = list(data) if isinstance(data, list) else dict(data)
    copy[path[0]] = replaced(data[path[0]], path[1:], value)
    return copy


@st.composite
def structural_bundles(draw):
    """An example bundle with its structure broken (not the resources' fields: see below)."""
    bundle = BUNDLES[draw(st.sampled_from(sorted(BUNDLES)))]
    where = draw(st.sampled_from([(), ("entry",), ("entry", 0), ("entry", 0, "resource"), ("type",), ("resourceType",)]))
    return replaced(bundle, where, draw(ANY_JSON))


@st.composite
def resource_bundles(draw):
    """An example bundle with one field anywhere inside one resource replaced by anything."""
    bundle = BUNDLES[draw(st.sampled_from(sorted(BUNDLES)))]
    paths = [p for p in paths_of(bundle) if in_resource(bundle, p)]
    return replaced(bundle, draw(st.sampled_from(paths)), draw(ANY_JSON))


@FUZZ
@given(bundle=structural_bundles(), garble=st.booleans(), data=st.data())
def test_recommend_fhir_on_a_broken_bundle_exits_0_or_1_with_a_message(tmp_path, bundle, garble, data):
    text = json.dumps(bundle, indent=1)
    if garble:
        text = data.draw(garbled(text))
    path = tmp_path / "b.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_cli(CliRunner().invoke(cli, ["recommend", "--fhir", str(path), *NOW]))


@FUZZ
@given(bundle=resource_bundles())
def test_recommend_fhir_on_a_resource_of_the_wrong_shape_exits_0_or_1(tmp_path, bundle):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    check_cli(CliRunner().invoke(cli, ["recommend", "--fhir", str(path), *NOW]))


# --- CDS Hooks requests, in-process --------------------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The CDS Hooks app in-process, without authentication (bodies are what is fuzzed here)."""
    from fastapi.testclient import TestClient

    from pressor.service.app import Settings, create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRESSOR_AUDIT_DB", str(tmp_path_factory.mktemp("audit") / "audit.db"))
        with TestClient(create_app(Settings(insecure=True)), raise_server_exceptions=False) as client:
            yield client


def hook_request(bundle: dict, hook: str) -> dict:
    resources = [e["resource"] for e in bundle["entry"]]

    def of(kind, draft=None):
        found = [r for r in resources if r.get("resourceType") == kind and (draft is None or (r.get("status") == "draft") == draft)]
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]}

    patient = next(r for r in resources if r.get("resourceType") == "Patient")
    context = {"patientId": patient.get("id", "p"), "userId": "Practitioner/fuzz"}
    if hook == "order-select":
        context["draftOrders"] = of("MedicationRequest", True)
        context["selections"] = []
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": {"patient": patient, "observations": of("Observation"), "conditions": of("Condition"),
                         "medicationAdministrations": of("MedicationAdministration"),
                         "medicationRequests": of("MedicationRequest", False)}}


SERVICES = {"patient-view": "pressor-patient-view", "order-select": "pressor-order-select"}


@st.composite
def hook_bodies(draw, inside_resources: bool) -> tuple[str, bytes]:
    hook = draw(st.sampled_from(sorted(SERVICES)))
    body = hook_request(BUNDLES[draw(st.sampled_from(sorted(BUNDLES)))], hook)
    paths = [p for p in paths_of(body) if in_resource(body, p) == inside_resources]
    body = replaced(body, draw(st.sampled_from(paths)), draw(ANY_JSON))
    text = json.dumps(body)
    if not inside_resources and draw(st.booleans()):
        text = draw(garbled(text))
    return SERVICES[hook], text.encode("utf-8", errors="surrogatepass")


def check_response(response) -> None:
    assert response.status_code != 500, response.text
    assert response.status_code in (200, 400, 413), (response.status_code, response.text)
    body = response.json()  # always JSON
    if response.status_code == 400:
        assert body["error"] and body["message"] and "Traceback" not in body["message"]


@FUZZ
@given(case=hook_bodies(inside_resources=False))
def test_a_broken_hook_request_is_never_a_500(service, case):
    service_id, body = case
    check_response(service.post(f"/cds-services/{service_id}", content=body, headers={"Content-Type": "application/json"}))


@FUZZ
@given(case=hook_bodies(inside_resources=True))
def test_a_hook_request_with_a_resource_of_the_wrong_shape_is_never_a_500(service, case):
    service_id, body = case
    check_response(service.post(f"/cds-services/{service_id}", content=body, headers={"Content-Type": "application/json"}))


# --- a few through the installed command ------------------------------------------------------------

@settings(max_examples=3, deadline=None, derandomize=not CAMPAIGN, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=state_texts())
def test_the_installed_command_exits_0_or_1_with_a_message(tmp_path, case):
    name, text = case
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    proc = subprocess.run([PRESSOR, "recommend", str(path), *NOW], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)
    if proc.returncode == 1:
        assert proc.stderr.startswith("error: ") and all(l.startswith(("error: ", "... and ")) for l in proc.stderr.splitlines())


@pytest.mark.parametrize("name, text", [
    ("dup.json", '{"patient": {"weight_kg": 72, "weight_kg": 7}}'),
    ("yes.yaml", "patient: {pregnant: yes}\n"),
    ("tag.yaml", "patient: {age_years: !!python/object/apply:os.system [ls]}\n"),
    ("deep.json", '{"patient": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("control.yaml", "patient: {age_years: 6\x1b0}\n"),
])
def test_the_installed_command_refuses_hostile_documents_in_one_line(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    proc = subprocess.run([PRESSOR, "recommend", str(path), *NOW], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith(f"error: {path}:1:") and proc.stderr.count("\n") == 1, proc.stderr
