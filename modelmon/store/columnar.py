"""A compact, column-oriented byte payload for stored feature references.

A reference is up to `features.reference_rows` rows (50k by default) of up to
`features.max_per_model` features; stored as JSON rows that is tens of MB of
text and seconds of `json.loads`. Here every column is stored on its own:
a column whose present values are all floats (or all 64-bit ints) becomes a
little-endian float64 (int64) array plus the positions of its missing values,
decoded by numpy in milliseconds; any other column (strings, booleans, mixed
types, nested values) stays a JSON list, so values keep their JSON types
exactly. The whole payload is zlib-compressed (level 1: categorical text
shrinks severalfold, numbers barely, and decompression is fast either way).

Layout (before compression): MAGIC, a 4-byte little-endian header length, the
JSON header (per block: name, kind, byte length, missing count), then the
blocks in header order.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAGIC = b"MMCOL1\n"
_LEN = struct.Struct("<I")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class PayloadError(ValueError):
    """The bytes are not a payload this module wrote."""


def _kind(values: Sequence[Any]) -> str:
    """f8 if every present value is a float, i8 if every one is an int in int64, else json."""
    present = [v for v in values if v is not None]
    if not present:
        return "json"
    if all(type(v) is float for v in present):
        return "f8"
    if all(type(v) is int and _I64_MIN <= v <= _I64_MAX for v in present):
        return "i8"
    return "json"


def _encode_block(values: Sequence[Any]) -> tuple[str, int, bytes]:
    kind = _kind(values)
    if kind == "json":
        return kind, 0, json.dumps(list(values), separators=(",", ":"), allow_nan=True).encode()
    missing = [i for i, v in enumerate(values) if v is None]
    dtype = "<f8" if kind == "f8" else "<i8"
    filled = np.array([0 if v is None else v for v in values], dtype=dtype)
    return kind, len(missing), filled.tobytes() + np.array(missing, dtype="<i8").tobytes()


def _decode_block(kind: str, missing: int, rows: int, data: bytes) -> list[Any]:
    if kind == "json":
        out = json.loads(data)
        if not isinstance(out, list) or len(out) != rows:
            raise PayloadError("a JSON column has the wrong length")
        return out
    dtype = "<f8" if kind == "f8" else "<i8"
    if len(data) != 8 * (rows + missing):
        raise PayloadError("a numeric column has the wrong length")
    values = np.frombuffer(data, dtype=dtype, count=rows).tolist()
    for i in np.frombuffer(data, dtype="<i8", offset=8 * rows, count=missing).tolist():
        values[i] = None
    return values


def encode(blocks: Mapping[str, Sequence[Any] | None], rows: int, level: int = 1) -> bytes:
    """The payload of named columns of `rows` values each (None = the block is absent)."""
    header: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for name, values in blocks.items():
        if values is None:
            header.append({"name": name, "kind": "absent", "bytes": 0, "missing": 0})
            continue
        if len(values) != rows:
            raise ValueError(f"column {name!r} has {len(values)} values, expected {rows}")
        kind, missing, data = _encode_block(values)
        header.append({"name": name, "kind": kind, "bytes": len(data), "missing": missing})
        parts.append(data)
    head = json.dumps({"rows": rows, "blocks": header}, separators=(",", ":")).encode()
    return MAGIC + zlib.compress(_LEN.pack(len(head)) + head + b"".join(parts), level)


def decode(payload: bytes) -> tuple[int, dict[str, list[Any] | None]]:
    """(rows, name -> values or None) from `encode`'s bytes, in the order they were given."""
    if not payload.startswith(MAGIC):
        raise PayloadError("not a modelmon column payload")
    try:
        raw = zlib.decompress(memoryview(payload)[len(MAGIC):])
    except zlib.error as exc:
        raise PayloadError(f"corrupt column payload: {exc}") from None
    (n,) = _LEN.unpack_from(raw)
    head = json.loads(raw[_LEN.size:_LEN.size + n])
    rows = int(head["rows"])
    at = _LEN.size + n
    out: dict[str, list[Any] | None] = {}
    for block in head["blocks"]:
        if block["kind"] == "absent":
            out[block["name"]] = None
            continue
        data = raw[at:at + block["bytes"]]
        at += block["bytes"]
        out[block["name"]] = _decode_block(block["kind"], block["missing"], rows, data)
    return rows, out
