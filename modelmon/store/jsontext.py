"""The JSON text of stored JSON columns, made by msgspec in C, byte for byte the json module's.

SQLite keeps a JSON column as the text it was given, so the text must not change
with the encoder that writes it: it is what the json module writes with compact
separators and non-ASCII kept (`json.dumps(v, separators=(",", ":"),
ensure_ascii=False)`). msgspec writes the same text about ten times faster for
JSON's own types (dict with str keys, list, str, int, float, bool, None), except
for some floats: Python's repr writes |x| < 1e-4 and |x| >= 1e16 in exponent form
(`1e-07`, `1e+16`), msgspec writes small ones in plain form (`0.00009`) and its
exponents shorter (`1e16`), and NaN and infinities (`NaN` there, `null` here).
`encode` takes msgspec's text for values of JSON's own types whose text shows none
of those marks, or whose floats are all written alike; anything else goes through
the json module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain
from typing import Any

import msgspec

_MSGSPEC = msgspec.json.Encoder()
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})
_NO_FLOAT = frozenset({str, int, bool, type(None)})
_DICT = frozenset({dict})
# In msgspec's text, a float written otherwise than by the json module shows as an
# exponent (1e-7, 1e16), a NaN or infinity (null) or a plain form below 1e-4 (0.00009).
# Strings can match too: their values are then checked (`_floats_alike`).
_DIGITS = bytes.maketrans(b"123456789", b"000000000")  # exponents all read 0e after it


def _marks(text: bytes) -> list[int]:
    """Where `text` (msgspec's) shows such a mark, in order (bytes.find: C, no regex)."""
    found = []
    for needle, haystack in ((b"0e", text.translate(_DIGITS)), (b"null", text), (b"0.0000", text)):
        at = haystack.find(needle)
        while at != -1:
            found.append(at)
            at = haystack.find(needle, at + 1)
    return sorted(found)


def _native(value: Any) -> bool:
    """JSON's own types all the way down, str keys (the types both encoders write alike,
    floats aside); flat dicts, the usual case, without a Python-level loop."""
    kind = type(value)
    if kind is dict:
        if _SCALARS.issuperset(map(type, value.values())):
            return _STR.issuperset(map(type, value))
        return _STR.issuperset(map(type, value)) and all(_native(v) for v in value.values())
    if kind is list:
        return all(_native(v) for v in value)
    return kind in _SCALARS


def _floats_alike(value: Any) -> bool:
    """Every float in `value` (of JSON's own types) is written alike by both encoders:
    finite, and in plain form in Python's repr (0, or 1e-4 <= |x| < 1e16)."""
    kind = type(value)
    if kind is float:
        return value == 0.0 or 1e-4 <= abs(value) < 1e16
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return True
    if _NO_FLOAT.issuperset(map(type, value)):
        return True
    return all(_floats_alike(v) for v in value)


def encode(value: Any) -> str:
    """`value` as the json module's compact, non-ASCII-keeping JSON text."""
    if _native(value):
        try:
            text = _MSGSPEC.encode(value)
        except ValueError:  # a lone surrogate: the json module's text (or its error) is the rule
            return _JSON.encode(value)
        if not _marks(text) or _floats_alike(value):
            return text.decode()
    return _JSON.encode(value)


def encode_column(values: Sequence[Any]) -> list[str | None]:
    """`encode` of every value (None stays None, SQL NULL), in bulk.

    The usual column (dicts of str keys and scalar values: scores, slices) is
    checked, encoded and decoded with C-level map and join, one pass each.
    """
    present = [v for v in values if v is not None] if None in values else list(values)
    if not (
        _DICT.issuperset(map(type, present))
        and _STR.issuperset(map(type, chain.from_iterable(present)))
        and _SCALARS.issuperset(map(type, chain.from_iterable(map(dict.values, present))))
    ):
        texts = list(map(encode, present))
    else:
        blob = b"\n".join(map(_MSGSPEC.encode, present))  # msgspec escapes every newline
        texts = blob.decode().split("\n") if present else []
        at, seen, checked = 0, 0, -1
        for mark in _marks(blob):  # in order: count the newlines between marks, once
            at += blob.count(b"\n", seen, mark)
            seen = mark
            if at != checked and not _floats_alike(present[at]):
                texts[at] = _JSON.encode(present[at])  # a marked value: the json module's text
            checked = at
    if len(texts) == len(values):
        return texts  # type: ignore[return-value]
    it = iter(texts)
    return [None if v is None else next(it) for v in values]
