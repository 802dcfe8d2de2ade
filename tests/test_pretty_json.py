"""The CLI's JSON is written by orjson where it can (issue 21): its text, or its error, must be exactly
``json.dumps(value, indent=2, ensure_ascii=False)``'s, for any value."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pressor.cli.common import pretty_json

from .test_canonical_json import Colour, Level, outcome
from .test_canonical_json import values as canonical_values


def same(value) -> None:
    assert outcome(pretty_json, value) == outcome(lambda v: json.dumps(v, indent=2, ensure_ascii=False), value)


#: canonical JSON's generated values, and floats about the edges of the range orjson writes here (1e-4, 1e16)
values = canonical_values | st.lists(
    st.floats(1e-6, 1e-3) | st.floats(1e14, 1e18) | st.integers(-2**63, 2**64)
    | st.sampled_from([1e-4, 9.999999999999999e-5, 1e16, 9999999999999998.0]), max_size=4)


@settings(max_examples=1500, deadline=None)
@given(values)
def test_the_same_text_or_error_as_json(value):
    same(value)


@pytest.mark.parametrize("value", [
    {"b": 36.0, "a": [1e-7, 1e21, 1e16, 0.000001, -0.0, 4.2, 1.5e300, 1e-4]}, {}, [], {"a": {}, "b": [[]]},
    {1: "non-str key"}, {Colour.RED: 1}, {"k": Colour.RED}, {"k": Level.HIGH}, [True, False, None],
    OrderedDict([("b", 1), ("a", 2.0)]), {"x": OrderedDict([("b", 1), ("a", 2)])}, (1, 2.5, (3.0,)),
    [float("nan")], {"x": float("inf")}, {"x": 2**64}, {"x": -(2**63) - 1}, {"x": 2**63}, "\ud800", {"\ud800": 1},
    {"s": "\x00\x1f\x7f\u2028\U0001f600 \\ \""}, {"set": {1, 2}}, b"bytes",
])
def test_edge_cases(value):
    same(value)


def test_depth_beyond_orjson():
    deep: list = [2.5]
    for _ in range(300):
        deep = [deep]
    same(deep)


def test_a_recommendation_is_the_same_text(monkeypatch):
    from datetime import datetime, timezone

    from pressor import evaluate, load_document, load_pack

    from .conftest import EXAMPLES

    doc = load_document(str(EXAMPLES / "septic-shock-adult.yaml"))
    data = evaluate(load_pack(), doc.data, now=datetime(2026, 1, 1, tzinfo=timezone.utc), document=doc).to_dict()
    same(data)
    # and it took the fast path: json is not called
    monkeypatch.setattr("pressor.cli.common.json.dumps", None)
    assert pretty_json(data).startswith("{\n  ")
