"""loads_json reads with orjson first (issue 21, item 3): what it returns, and what it refuses, must be
exactly what the strict json reading gives (duplicate keys, NaN, huge numbers, depth, surrogates)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pressor.engine.errors import InputError
from pressor.engine.evaluation.load import _json_strict, _orjson_fast, loads_json  # noqa: F401


def both(text: str):
    """(fast outcome, strict outcome): the value with its types, or the error's message and location."""
    def outcome(fn):
        try:
            value = fn(text)
            return ("ok", json.dumps(value, sort_keys=True), _types(value))
        except InputError as exc:
            return ("error", str(exc), [p.to_dict() for p in exc.problems])
    strict = outcome(lambda t: _strict_then_checks(t))
    return outcome(lambda t: loads_json(t, file="x.json")), strict


def _strict_then_checks(text: str):
    import pressor.engine.evaluation.load as load

    real = load._orjson_fast
    load._orjson_fast = lambda t: None
    try:
        return loads_json(text, file="x.json")
    finally:
        load._orjson_fast = real


def _types(value):
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("text", [
    '{"vitals": {"map_mmhg": 60, "sbp_mmhg": 90.5}, "at": "2026-01-01T00:00:00Z"}',
    '{"a": 1, "a": 2}',
    '{"a": {"b": 1, "b": 1}}',
    '{"a:b": 1, "a": "x:y:z"}',
    '{"a\\u003a": 1}',  # an escaped colon: json reads it
    '{"a": 1e999}', '{"a": NaN}', '{"a": Infinity}', '[-0, -0.0, 1E2, 1.5e-320]',
    '123456789012345678901234567890', '18446744073709551616', '-9223372036854775809', '1' * 101,
    '"\\ud800"', '{"a": "\\udc00"}', '[1, 2', '', '  {"a": [true, false, null]}  ',
    "[" * 70 + "]" * 70, "[" * 2000 + "]" * 2000, '{"é": "ü", "k": "\\n"}',
])
def test_the_fast_reading_agrees_with_the_strict_one(text):
    fast, strict = both(text)
    assert fast == strict


def test_duplicates_are_never_taken_from_orjson():
    assert _orjson_fast('{"a": 1, "a": 2}') is None
    assert _orjson_fast('{"a": 1, "b": {"c": "d:e"}}') == {"a": 1, "b": {"c": "d:e"}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, indent=st.sampled_from([None, 1]))
def test_random_documents_read_the_same(value, indent):
    fast, strict = both(json.dumps(value, indent=indent, ensure_ascii=False))
    assert fast == strict
