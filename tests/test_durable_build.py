"""durable-rules' C engine as pressor builds it (setup.py, third_party/durable-rules): on every Python.

The engine's behaviour is checked by tests/test_engine.py (random rules and facts against the
plain-Python reference) on whatever interpreter runs the suite; .ci/run runs it on 3.11 and 3.13.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.machinery
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pressor.engine.evaluation import _durable

VENDORED = Path(__file__).resolve().parent.parent / "third_party" / "durable-rules"
#: Each patched file and the patches applied to it, in order (third_party/durable-rules/patches/).
PATCHES = {
    "src/rulespy/rules.c": [VENDORED / "patches" / "0001-rules.c-PyObject_CallObject-for-Python-3.13.patch"],
    "src/rules/events.c": [VENDORED / "patches" / "0002-events.c-MAX_STACK_SIZE-1024.patch",
                           VENDORED / "patches" / "0003-events.c-regex-operand-in-scope.patch"],
}


def test_the_adapter_loads_the_engine_built_with_pressor_for_this_python():
    engine = _durable._dre
    assert engine.__name__ == "pressor.engine.evaluation.durable_rules_engine"
    path = Path(engine.__file__)
    assert path.parent == Path(_durable.__file__).parent
    assert any(path.name.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES), path.name
    matcher = _durable.Matcher({"low": _durable.leaf("map", "<", 65), "high": _durable.leaf("map", ">=", 65)})
    try:
        assert matcher.match({"map": 60}) == {"low"}
        assert matcher.match({"map": 70.5}) == {"high"}
    finally:
        matcher.close()


def test_pressor_needs_no_durable_rules_distribution():
    """The engine comes with pressor: nothing asks pip for durable-rules' sdist (which fails on 3.13)."""
    requires = importlib.metadata.requires("pressor") or []
    assert not [r for r in requires if r.lower().replace("_", "-").startswith("durable-rules")]


def test_the_engine_licence_travels_with_the_package():
    files = importlib.metadata.files("pressor") or []
    licences = [f for f in files if f.name == "LICENSE" and "durable-rules" in str(f)]
    assert licences, "durable-rules' MIT licence is missing from pressor's distribution"
    assert "Copyright (c) 2013 Jesus Ruiz" in licences[0].read_text()


def test_python_callbacks_get_their_results_back_whole():
    """The patched calls (PyObject_CallObject). Unpatched, on 3.13, the import failed; with the symbol
    supplied from elsewhere, gcc 12 had compiled each call as returning int, and this callback's result
    came back truncated (a segfault). pressor never sets these callbacks; this checks the patch itself.
    In a child process, so that a crash fails this test rather than the run."""
    script = textwrap.dedent("""
        from pressor.engine.evaluation._durable import _dre
        handle = _dre.create_ruleset("callbacks", '{"r":{"all":[{"m":{"$and":[{"_ps":1},{"$gt":{"x":1}}]}}]}}')
        seen = []
        def stored(*args):
            seen.append(args)
            return 0  # RULES_OK, read back from the returned object
        _dre.set_store_message_callback(handle, stored)
        code, _ = _dre.assert_fact(handle, '{"sid":"s","id":"f","_ps":1,"x":5}')
        assert seen and seen[0][:3] == ("callbacks", "s", "f"), seen
        assert code == 0, code
        print("callback ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.startswith("callback ok")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unpatched(text: str, patch: str, name: str) -> str:
    """``text`` with ``patch`` (unified diff, one file, whole lines) undone: each hunk's added lines
    put back to its removed ones, checked against the context."""
    lines = text.splitlines(keepends=True)
    hunks, hunk = [], None
    for line in patch.splitlines(keepends=True)[patch.splitlines().index(f"+++ b/{name}") + 1:]:
        if line.startswith("@@"):
            hunk = {"at": int(line.split("+")[1].split(",")[0]) - 1, "new": [], "old": []}
            hunks.append(hunk)
        elif hunk is not None and line[:1] in (" ", "+", "-"):
            if line[0] in " +":
                hunk["new"].append(line[1:])
            if line[0] in " -":
                hunk["old"].append(line[1:])
    for hunk in reversed(hunks):
        at, new = hunk["at"], hunk["new"]
        assert lines[at:at + len(new)] == new, f"the shipped {name} does not match its patch at line {at + 1}"
        lines[at:at + len(new)] = hunk["old"]
    return "".join(lines)


@pytest.mark.skipif(not VENDORED.is_dir(), reason="needs the source tree (third_party/)")
def test_the_vendored_sources_are_upstream_plus_the_recorded_patches():
    """Every file is durable-rules 2.0.28's (UPSTREAM.sha256, from its sdist), each patched file once its patches are undone."""
    expected = dict(reversed(line.split()) for line in (VENDORED / "UPSTREAM.sha256").read_text().splitlines())
    shipped = sorted(str(p.relative_to(VENDORED)) for p in (VENDORED / "src").rglob("*") if p.is_file())
    assert shipped == sorted(name for name in expected if name.startswith("src/"))
    assert sorted(p.name for p in (VENDORED / "patches").iterdir()) == sorted(p.name for ps in PATCHES.values() for p in ps)
    for name, digest in expected.items():
        data = (VENDORED / name).read_bytes()
        for patch in reversed(PATCHES.get(name, [])):  # the last applied is undone first
            data = _unpatched(data.decode(), patch.read_text(), name).encode()
        assert _sha256(data) == digest, f"{name} differs from durable-rules 2.0.28's"
    assert "PyEval_CallObject" not in (VENDORED / "src/rulespy/rules.c").read_text()
    events = (VENDORED / "src/rules/events.c").read_text()
    assert "#define MAX_STACK_SIZE 1024\n" in events and "                    char newString[" not in events
