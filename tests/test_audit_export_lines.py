"""The clear-text export writes each JSON line as bytes (orjson) to a UTF-8 stream: the same bytes as the text path."""
from __future__ import annotations

import io

import pytest

from pressor.engine.audit.export import _line, _utf8_buffer
from pressor.engine.audit.records import canonical_json

AWKWARD = ["", "plain", 'quote " and \\ backslash', "\x00\x01\x1f\x7f\b\f\n\r\t", "µ ≥ \u2028 \u2029 é", "\U0001f600 non-BMP",
           '{"a":[1,2.5,"x\\"y"]}']


@pytest.mark.parametrize("text", AWKWARD)
def test_a_line_is_the_canonical_json_of_the_row(text):
    row = {"z_text": text, "a_seq": 7, "m_flag": True, "n_none": None, "big": 2**60, "exact": 2**53, "f": 36.0,
           "nested": {"b": [1, 1e-7], "a": "x"}}
    assert _line(row, "strict") == (canonical_json(row) + "\n").encode("utf-8")


def test_a_lone_surrogate_is_written_as_the_text_stream_would():
    row = {"user": "a\udcff"}
    assert _line(row, "surrogateescape") == (canonical_json(row) + "\n").encode("utf-8", "surrogateescape")


def test_only_a_utf8_stream_is_written_as_bytes():
    assert _utf8_buffer(io.StringIO()) is None
    assert _utf8_buffer(io.TextIOWrapper(io.BytesIO(), encoding="latin-1")) is None
    text = io.TextIOWrapper(io.BytesIO(), encoding="UTF8")
    text.write("before ")
    found = _utf8_buffer(text)
    assert found is not None and found[1] == "strict"
    found[0].write(b"after")
    text.flush()
    assert text.buffer.getvalue() == b"before after"
