"""The pack cache: a hit skips the files' validation; anything edited, untrusted or corrupt is a miss."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pressor.engine.evaluation import pack as pack_module
from pressor.engine.evaluation import pack_cache
from pressor.engine.evaluation.evaluate import evaluate, release
from pressor.engine.evaluation.load import load_document
from pressor.engine.evaluation.pack import default_rules_dir, load_pack

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv(pack_cache.ENV, str(where))
    return where


@pytest.fixture
def rules(tmp_path) -> Path:
    return Path(shutil.copytree(default_rules_dir(), tmp_path / "rules"))


def _no_build(monkeypatch):
    def refuse(self):
        raise AssertionError("the pack was built from its files, not taken from the cache")

    monkeypatch.setattr(pack_module._Builder, "build", refuse)


def test_second_load_comes_from_the_cache_and_evaluates_identically(cache, rules, monkeypatch):
    fresh = load_pack(rules)
    assert len(list(cache.glob("*.pack"))) == 1
    _no_build(monkeypatch)
    cached = load_pack(rules)
    assert cached is not fresh and cached == fresh and cached.warnings == fresh.warnings
    for example in sorted(EXAMPLES.glob("*.yaml")):
        state = load_document(example).data
        assert evaluate(cached, state, now=NOW).to_dict() == evaluate(fresh, state, now=NOW).to_dict(), example
    release(fresh)
    release(cached)


def test_a_cache_hit_starts_from_the_prepared_engine_rulesets_and_residual_probes(cache, rules, monkeypatch):
    """What loading prepared (the engine's ruleset JSON, the residual probes) comes back with the pack, equal to a
    fresh build, so that a start does not shard, hash-check and serialise the rules or walk the derived facts again."""
    from pressor.engine.evaluation import _durable, residual

    fresh = load_pack(rules)
    built = (fresh.cache.rulesets, fresh.cache.residual_probes)
    assert None not in built
    monkeypatch.setattr(_durable, "rulesets", lambda conditions: pytest.fail("rulesets rebuilt on a cache hit"))
    monkeypatch.setattr(residual.ResidualContext, "_probes", lambda self, pack: pytest.fail("probes rebuilt on a cache hit"))
    cached = load_pack(rules)
    assert (cached.cache.rulesets, cached.cache.residual_probes) == built
    state = load_document(EXAMPLES / "septic-shock-adult.yaml").data
    assert evaluate(cached, state, now=NOW).to_dict() == evaluate(fresh, state, now=NOW).to_dict()
    release(fresh)
    release(cached)


def test_an_edited_rule_file_is_never_served_from_the_cache(cache, rules):
    load_pack(rules)
    target = next(p for p in sorted(rules.glob("*.yaml")) if "title:" in p.read_text() and "rules:" in p.read_text())
    text = target.read_text()
    first_title = text.split("title: ", 2)[2].split("\n", 1)[0] if text.count("title: ") > 1 else None
    assert first_title
    target.write_text(text.replace(f"title: {first_title}", "title: Edited since the cache was written", 1))
    assert any(r.title == "Edited since the cache was written" for r in load_pack(rules).rules)
    assert len(list(cache.glob("*.pack"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "group-writable", "not-a-pack"])
def test_a_damaged_or_untrusted_entry_is_a_miss(cache, rules, monkeypatch, damage):
    import pickle

    original = load_pack(rules)
    entry = next(cache.glob("*.pack"))
    blob = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(blob[:-100])
    elif damage == "flip":
        entry.write_bytes(blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:])
    elif damage == "group-writable":
        entry.chmod(0o664)
    else:  # a well-formed entry (right header) whose payload is not a pack
        payload = pickle.dumps({"not": "a pack"})
        entry.write_bytes(pack_cache._header(entry.name, payload) + payload)
    assert pack_cache.get(entry.name[: -len(".pack")]) is None
    reloaded = load_pack(rules)  # built from the files, and the entry rewritten
    assert reloaded == original
    assert pack_cache.get(entry.name[: -len(".pack")]) == original


def test_the_cache_can_be_turned_off(tmp_path, rules, monkeypatch):
    monkeypatch.setenv(pack_cache.ENV, "off")
    assert pack_cache.cache_dir() is None
    load_pack(rules)
    assert not any(tmp_path.rglob("*.pack"))


def test_an_unwritable_cache_only_costs_speed(tmp_path, rules, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(pack_cache.ENV, str(blocker / "cache"))
    assert load_pack(rules).rules


def test_the_validator_code_is_cached_and_equivalent(cache):
    from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

    first = pack_cache.state_validator(schema(STATE_SCHEMA))
    assert len(list(cache.glob("*.validator"))) == 1
    second = pack_cache.state_validator(schema(STATE_SCHEMA))  # from the marshalled code
    state = load_document(EXAMPLES / "septic-shock-adult.yaml").data
    assert first(state) == second(state)
    for bad in ({"vitals": {"map_mmhg": "low"}}, {"nonsense": 1}):
        with pytest.raises(Exception) as one:
            first(bad)
        with pytest.raises(Exception) as two:
            second(bad)
        assert str(one.value) == str(two.value)


def test_a_cache_hit_imports_no_jsonschema_pint_sqlite_or_metadata(cache):
    code = ("import sys; from pressor.engine.evaluation.pack import load_pack; load_pack(); "
            "print(sorted(m for m in ('jsonschema', 'pint', 'sqlite3', 'importlib.metadata') if m in sys.modules))")
    env = {**os.environ, pack_cache.ENV: str(cache)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)  # fills the cache
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_recommend_imports_only_what_it_uses(cache):
    """`pressor recommend --no-audit` on a cache hit: no jsonschema, pint, SQLite, metadata scan, lint or service."""
    example = str(EXAMPLES / "septic-shock-adult.yaml")
    code = ("import sys; from pressor.cli.main import cli; "
            f"cli(['recommend', {example!r}, '--json', '--no-audit'], standalone_mode=False); "
            "heavy = ('jsonschema', 'pint', 'sqlite3', 'importlib.metadata', 'pressor.engine.authoring.lint', "
            "'pressor.service.app', 'fastapi', 'multiprocessing', 'difflib', 'importlib.resources', 'zipfile'); "
            "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    env = {**os.environ, pack_cache.ENV: str(cache)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)  # fills the cache
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    assert out.stderr.strip().splitlines()[-1] == "[]"


def test_recommend_on_a_json_state_imports_no_yaml(cache, tmp_path):
    """PyYAML is imported only for a YAML document: a JSON patient state never pays for it."""
    state = tmp_path / "state.json"
    state.write_text(json.dumps(load_document(EXAMPLES / "septic-shock-adult.yaml").data))
    code = ("import sys; from pressor.cli.main import cli; "
            f"cli(['recommend', {str(state)!r}, '--json', '--no-audit'], standalone_mode=False); "
            "print('yaml' in sys.modules, file=sys.stderr)")
    env = {**os.environ, pack_cache.ENV: str(cache)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)  # fills the cache
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    assert out.stderr.strip().splitlines()[-1] == "False"


def test_old_entries_are_pruned(cache, monkeypatch):
    monkeypatch.setattr(pack_cache, "KEEP", 3)
    for i in range(5):
        pack_cache._write(f"{i:064x}.pack", b"payload")
        os.utime(cache / f"{i:064x}.pack", (1000 + i, 1000 + i))
    assert {p.name for p in cache.iterdir()} == {f"{i:064x}.pack" for i in (2, 3, 4)}


def test_compiled_condition_code_is_cached_by_its_source(cache):
    source = "def answer(f):\n    return f.get('x', 0) < 3\n"
    first = pack_cache.compiled_code(source, "<test>")
    assert len(list(cache.glob("*.codes"))) == 1
    second = pack_cache.compiled_code(source, "<test>")
    assert second == first  # the same code object, read back from its marshalled form
    pack_cache.compiled_code(source + "\n", "<test>")
    assert len(list(cache.glob("*.codes"))) == 2  # another source, another entry


def test_a_code_entry_that_holds_no_code_is_a_miss(cache):
    """An entry under a code key whose payload is intact but is not code objects (another version of pressor
    wrote something else there) is compiled again, never handed to exec."""
    import marshal

    source = "def answer(f):\n    return 1\n"
    pack_cache.compiled_code(source, "<test>")
    (entry,) = cache.glob("*.codes")
    pack_cache._write(entry.name, marshal.dumps((1, 2)))
    code = pack_cache.compiled_code(source, "<test>")
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the test's own source
    assert namespace["answer"](None) == 1


def test_a_site_profile_is_part_of_the_key_and_never_served_stale(cache, rules, tmp_path):
    profile = sorted((EXAMPLES / "profiles").glob("*.yaml"))[0]
    mine = tmp_path / "site.yaml"
    mine.write_text(profile.read_text())
    plain, profiled = load_pack(rules), load_pack(rules, profile=mine)
    assert plain.profile is None and profiled.profile is not None
    assert len(list(cache.glob("*.pack"))) == 2
    assert load_pack(rules, profile=mine) == profiled  # from the cache
    mine.write_text(profile.read_text() + "\n# edited\n")
    load_pack(rules, profile=mine)
    assert len(list(cache.glob("*.pack"))) == 3  # an edited profile is another key
