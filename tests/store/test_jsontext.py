"""`jsontext.encode` writes the json module's text, byte for byte, or fails as it fails.

SQLite stores JSON columns as text, so the fast encoder must not change a byte of
what the json module (compact separators, non-ASCII kept) wrote before. The json
module is the independent reference: hypothesis generates JSON-like values with
awkward floats (exponent form, subnormals, NaN, infinities, -0.0), awkward strings
(control characters, quotes, U+2028, astral characters) and non-JSON Python
values, and every text is compared with `json.dumps`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelmon.store import jsontext


def reference(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e-4, 9.999999e-5, -0.00001, 1e-7, 1e16, 9999999999999998.0, 5e-324, 0.123456, 1.0]
)
scalars = st.none() | st.booleans() | st.integers() | floats | st.text()
keys = st.text() | st.sampled_from(["e", "null", "1e-7", "yes", "nan"])
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)


@given(values)
@settings(max_examples=1000, deadline=None)
def test_same_text_as_the_json_module(value: Any) -> None:
    assert jsontext.encode(value) == reference(value)


@given(st.dictionaries(keys, floats, min_size=1, max_size=6))
@settings(max_examples=800, deadline=None)
def test_scores_like_dicts(value: dict[str, float]) -> None:
    assert jsontext.encode(value) == reference(value)


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value", [
    {"k": (1, 2.5e-9)},  # tuples: a list in both
    {2: "int key", 2.5e-7: "float key", True: "bool key", None: "none key"},
    {"n": Colour.RED},
    {"big": 10**30, "neg": -(2**70)},
    {"s": "\x00\x1f\x7f\"\\/\t\n\u2028\u2029é😀"},
    {"\ud800": "a lone surrogate"},  # written as it is (the driver refuses it later)
])
def test_non_plain_values_as_the_json_module(value: Any) -> None:
    assert jsontext.encode(value) == reference(value)


@pytest.mark.parametrize("value", [
    {"t": dt.datetime(2026, 1, 1)}, {"u": uuid.uuid4()}, {"d": decimal.Decimal("1.5")},
    {"b": b"bytes"}, {"s": {1, 2}},
])
def test_refused_where_the_json_module_refuses(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as want:
        reference(value)
    with pytest.raises(type(want.value)):
        jsontext.encode(value)


@given(st.lists(st.none() | st.dictionaries(keys, scalars, max_size=5) | values, max_size=30))
@settings(max_examples=500, deadline=None)
def test_a_column_encodes_as_its_values_do(column: list[Any]) -> None:
    assert jsontext.encode_column(column) == [None if v is None else reference(v) for v in column]


def test_a_column_of_flat_dicts_with_a_marked_value() -> None:
    """One exponent-form float among plain ones: the whole column is still the json module's."""
    column = [{"a": 0.25, "b": 0.75}, None, {"a": 1e-7, "b": 0.9999999}, {"region": "e1e5", "n": None}]
    assert jsontext.encode_column(column) == [None if v is None else reference(v) for v in column]
