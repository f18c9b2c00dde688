"""Feature drift and data-quality maths: one feature's values in the reference against a window's.

Values arrive as JSON values (numbers, strings, booleans, lists/objects; None = missing)
and become pandas Series the way `pd.DataFrame({name: values})` would build them, so that
evidently sees exactly what it would see on a DataFrame of the same rows:

* **JSON type** of a feature: the most common type of the reference's non-missing values
  (`number`, `string`, `bool`, `object` for lists and objects; ties in that order). A value
  of another type (a string in a numeric feature) is *not* coerced: it is left out of the
  drift test and counted by the data-quality family as a type change. Lists and objects
  are compared as their canonical JSON text.
* **Kind** (numerical or categorical) as evidently's data definition infers it for a
  column without a column mapping (`evidently.legacy.utils.data_preprocessing.
  _get_column_type`): an integer column with at most 5 distinct values is categorical, any
  other integer or float column numerical, booleans and text categorical. It is decided on
  the reference column (on the current one for a feature without reference). evidently
  looks at the current column's dtype first; the two differ only for an integer reference
  column against a current one that pandas made float (a missing value): keeping the
  reference's kind keeps a feature's series from flipping between windows.
* **Drift test**: evidently's own default choice (`get_stattest` with no stattest given)
  and its own test function, with its default threshold. evidently chooses by the
  reference's size (non-missing values) and the distinct values of both sides together:
  reference <= 1000 values: numerical K-S (p-value, drift if <= 0.05), categorical
  chi-square, or Z for two values (p-value, drift if < 0.05); reference > 1000 values:
  numerical normed Wasserstein (distance, drift if >= 0.1), categorical Jensen-Shannon
  (distance, drift if >= 0.1); a numerical feature with at most 5 distinct values gets the
  categorical tests. Missing values and infinities are dropped first, as evidently does.
  evidently is imported only when a test runs (the feature worker process).
* **Gating**: below `minimum` current values in the test the feature is not tested
  (status insufficient_data, no value); a feature without reference values is not compared.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelmon.monitors.base import Status


class _OnFirstUse:
    """A module imported when first used: the service installs without pandas (the
    `[evidently]` extra), and every module must still import there."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    import pandas as pd
else:
    pd = _OnFirstUse("pandas")

Kind = Literal["numerical", "categorical"]
JsonType = Literal["number", "string", "bool", "object"]
JSON_TYPES: tuple[JsonType, ...] = ("number", "string", "bool", "object")
FEW_UNIQUE_AS_CATEGORICAL = 5  # evidently's NUMBER_UNIQUE_AS_CATEGORICAL


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def json_type(value: Any) -> JsonType | None:
    """The JSON type of a value (None when missing); numpy scalars count as their JSON kind."""
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def dominant_type(values: Sequence[Any]) -> JsonType | None:
    """The most common JSON type of the non-missing values (ties in JSON_TYPES order)."""
    counts = Counter(t for t in map(json_type, values) if t is not None)
    if not counts:
        return None
    return max(JSON_TYPES, key=lambda t: (counts[t], -JSON_TYPES.index(t)))


def _as_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Column:
    """One side of a feature: its counts and the values a drift test takes."""

    rows: int  # values in the column, missing included
    missing: int  # None / NaN
    other_type: int  # non-missing values of another JSON type than `type`
    type: JsonType | None  # the JSON type the column was read as
    series: pd.Series  # the `type` values, missing dropped, as a DataFrame column holds them

    @property
    def present(self) -> int:
        return self.rows - self.missing


_NONE = type(None)
_PLAIN: dict[JsonType, set[type]] = {  # Python types of a column with one JSON type only
    "number": {int, float, _NONE}, "string": {str, _NONE}, "bool": {bool, _NONE},
}


def _plain(values: Sequence[Any], as_type: JsonType | None) -> Column | None:
    """The common case fast (vectorised): every value of one plain JSON type, or missing."""
    types = set(map(type, values))
    kind = next((k for k, allowed in _PLAIN.items() if types <= allowed and types - {_NONE}), None)
    if kind is None or (as_type is not None and as_type != kind):
        return None
    if kind == "number":
        if types == {int}:
            series = pd.Series(values, dtype="int64") if values else pd.Series([], dtype="int64")
        else:
            series = pd.Series(values, dtype="float64")
    else:
        series = pd.Series(values, dtype=object)
    present = series.dropna()
    if kind == "bool":
        present = present.astype(bool)
    return Column(len(values), len(values) - len(present), 0, kind, present.reset_index(drop=True))


def column(values: Sequence[Any], as_type: JsonType | None = None) -> Column:
    """Read a feature's values as `as_type` (default: their dominant JSON type)."""
    try:
        fast = _plain(values, as_type)
    except OverflowError:  # an integer beyond int64/float64: the general path keeps it
        fast = None
    if fast is not None:
        return fast
    kind = dominant_type(values) if as_type is None else as_type
    types = [json_type(v) for v in values]
    missing = sum(t is None for t in types)
    kept = [v for v, t in zip(values, types, strict=True) if t is not None and t == kind]
    if kind == "object":
        kept = [_as_text(v) for v in kept]
    series = pd.Series(kept, dtype=object if not kept else None)
    if kind == "number" and len(series) and series.dtype == object:  # numpy scalars mixed in
        series = pd.to_numeric(series)
    return Column(len(values), missing, len(values) - missing - len(kept), kind, series)


def column_kind(col: Column) -> Kind:
    """evidently's kind of a DataFrame column holding these values (see the module docstring).

    The Series holds no missing values; in a DataFrame an integer column with a missing
    value is float, so the integer rule applies to columns without missing values only.
    """
    s = col.series
    if pd.api.types.is_bool_dtype(s) or col.type in ("string", "bool", "object"):
        return "categorical"
    if pd.api.types.is_integer_dtype(s) and col.missing == 0:
        return "categorical" if s.nunique() <= FEW_UNIQUE_AS_CATEGORICAL else "numerical"
    if pd.api.types.is_numeric_dtype(s):
        return "numerical"
    return "categorical"


def _finite(s: pd.Series) -> pd.Series:
    """What evidently tests: infinities are treated as missing and dropped."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.replace([-np.inf, np.inf], np.nan).dropna()
    return s


@dataclass(frozen=True)
class Drift:
    stattest: str  # evidently's registry name: ks, wasserstein, chisquare, z, jensenshannon
    score: float | None  # p-value or distance; None when not tested
    threshold: float
    detected: bool | None
    n: int  # current values in the test
    status: Status


def drift(reference: Column, current: Column, kind: Kind, minimum: int) -> Drift:
    """evidently's default drift test of the feature (imports evidently)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    ref, cur = _finite(reference.series), _finite(current.series)
    test = get_stattest(ref, cur, ctype, None)
    n = len(cur)
    status: Status = "no_data" if n == 0 else "insufficient_data" if n < minimum else "ok"
    if len(ref) == 0:
        status = "no_baseline"
    if status != "ok":
        return Drift(test.name, None, test.default_threshold, None, n, status)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = test(ref, cur, ctype, None)
    return Drift(test.name, float(result.drift_score), float(result.actual_threshold),
                 bool(result.drifted), n, "ok")


def drift_share(results: Sequence[Drift]) -> tuple[float | None, int, int]:
    """evidently's dataset drift: (share of tested features with drift, drifted, tested)."""
    tested = [r for r in results if r.status == "ok"]
    detected = sum(bool(r.detected) for r in tested)
    return (detected / len(tested) if tested else None), detected, len(tested)


@dataclass(frozen=True)
class Quality:
    """Data-quality counts of one feature in a window against its reference."""

    rows: int
    missing: int
    reference_rows: int
    reference_missing: int
    present: int  # non-missing current values
    type_changed: int  # of `present`: another JSON type than the reference's
    typed: int  # of `present`: the reference's JSON type
    unseen: int | None  # categorical: typed values the reference never had
    out_of_range: int | None  # numerical: typed values outside the reference's finite range

    @staticmethod
    def ratio(part: int | None, whole: int) -> float | None:
        return None if part is None or whole == 0 else part / whole


def quality(reference: Column, current: Column, kind: Kind) -> Quality:
    """Missing, type changes, unseen categories and out-of-range values of `current`."""
    unseen = out = None
    cur = current.series
    if kind == "categorical":
        unseen = int((~cur.isin(pd.unique(reference.series))).sum()) if len(cur) else 0
    else:
        ref = _finite(reference.series)
        if len(ref) == 0:
            out = None
        else:
            out = int(((cur < ref.min()) | (cur > ref.max())).sum()) if len(cur) else 0
    return Quality(current.rows, current.missing, reference.rows, reference.missing,
                   current.present, current.other_type, len(cur), unseen, out)
