"""canonical_json writes with orjson where it can (issue 21): its text, or its error, must be exactly what the
json-written reference gives, for any value (floats of every form, huge integers, characters beyond the BMP in
keys and strings, tuples, subclasses, non-str keys, NaN, depth)."""
from __future__ import annotations

import enum
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pressor.engine.audit.records import _reference_json, canonical_json


def outcome(fn, value):
    try:
        return "ok", fn(value)
    except Exception as exc:  # the same error, of the same type, is part of the same behaviour
        return type(exc).__name__, str(exc)


def same(value) -> None:
    assert outcome(canonical_json, value) == outcome(_reference_json, value)


numbers = (st.integers() | st.integers(-2**53, 2**53) | st.floats() | st.floats(-1e6, 1e6)
           | st.sampled_from([0.0, -0.0, 36.0, 1e-7, 1e-5, 1e16, 1e21, 2.0**53, 2.0**53 + 2, 0.1 + 0.2, 5e-324]))
keys = st.text() | st.sampled_from(["a", "b", "\ue000", "\U0001f600", "\uffff", "é", "Z"])
scalars = st.none() | st.booleans() | numbers | st.text() | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x9f))
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(keys, inner, max_size=4), max_leaves=25)


@settings(max_examples=1500, deadline=None)
@given(values)
def test_the_same_text_or_error_as_the_reference(value):
    same(value)


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize("value", [
    {"b": 36.0, "a": [1e-7, 1e21, 1e16, 0.000001, -0.0, 4.2, 1.5e300]},
    {"\ue000": 1, "\U0001f600": 2, "x": {"\U0001f600": [1.5]}},
    {"s": "\U0001f600 only in a value"},
    {1: "non-str key"}, {Colour.RED: 1}, {"k": Colour.RED}, {"k": Level.HIGH}, [True, False, None],
    OrderedDict([("b", 1), ("a", 2.0)]), {"x": OrderedDict([("b", 1), ("a", 2)])}, (1, 2.5, (3.0,)),
    [float("nan")], {"x": float("inf")}, {"x": 2**64}, {"x": -(2**53) - 1}, {"x": 2**53}, [2.0**60],
    "\ud800", {"\ud800": 1}, [[[[[[[[[[[[[[[[[[[[1.5]]]]]]]]]]]]]]]]]]]], {"set": {1, 2}}, b"bytes",
])
def test_edge_cases(value):
    same(value)


def test_depth_beyond_orjson():
    deep: list = [2.5]
    for _ in range(300):
        deep = [deep]
    same(deep)
    assert canonical_json(deep) == "[" * 301 + "2.5" + "]" * 301


def test_inputs_are_never_changed():
    value = {"b": [36.0, {"c": 0.5}], "a": (1.0,)}
    canonical_json(value)
    assert value == {"b": [36.0, {"c": 0.5}], "a": (1.0,)} and type(value["b"][0]) is float
