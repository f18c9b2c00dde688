"""`modelmon baseline set --features FILE | --from-window`, and the feature part of `baseline show`.

The feature reference is what the `feature_drift` and `data_quality` families
compare each window's sample with (modelmon.store.features). It comes from a
table of validation rows (CSV or Parquet, read with pandas: imported only
here, the service install may not have it) or from a production window frozen
as it is. Either way it is bounded: more than `features.reference_rows` rows
are sampled down (a seeded choice, so setting the same file twice stores the
same rows), and a table with more feature columns than
`features.max_per_model` is refused rather than silently cut.

Values keep their types: pandas reads with nullable dtypes, so an integer
column with gaps stays integers (not floats), and a missing cell is None.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelmon.config import Config, parse_duration

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from modelmon.store.features import FeatureReference

SAMPLE_SEED = 0
PREDICTION_COLUMN = "prediction"
LABEL_COLUMN = "label"
PARQUET_MAGIC = b"PAR1"


class FeatureInputError(ValueError):
    """The features file cannot be used as a reference (one line, for the user)."""


@dataclass(frozen=True)
class FeatureTable:
    """A features file, read and bounded: what `set_reference` stores."""

    columns: dict[str, list[Any]]
    predictions: list[str | None] | None
    labels: list[str | None] | None
    source_rows: int  # rows in the file
    prediction_column: str | None
    label_column: str | None

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def sampled(self) -> bool:
        return self.rows < self.source_rows


# -- reading a table -------------------------------------------------------------------


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise FeatureInputError(
            "reading a features file needs pandas (pip install 'modelmon[evidently]', or pandas "
            "and pyarrow)"
        ) from None
    return pandas


def read_frame(path: Path) -> pd.DataFrame:
    """The file as a DataFrame with nullable dtypes: Parquet (by its magic bytes) or CSV."""
    pd = _pandas()
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise FeatureInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise FeatureInputError(f"cannot read {path}: it is a directory")
    try:
        if head == PARQUET_MAGIC:
            return pd.read_parquet(path, dtype_backend="numpy_nullable")
        return pd.read_csv(path, dtype_backend="numpy_nullable", encoding="utf-8")
    except ImportError as exc:
        raise FeatureInputError(f"cannot read {path} as Parquet: {exc}".splitlines()[0]) from None
    except pd.errors.EmptyDataError:
        raise FeatureInputError(f"{path}: no columns (the file is empty)") from None
    except UnicodeDecodeError:
        raise FeatureInputError(f"{path} is neither Parquet nor UTF-8 CSV text") from None
    except (ValueError, OSError) as exc:  # pandas' ParserError and pyarrow's ArrowInvalid are ValueErrors
        kind = "Parquet" if head == PARQUET_MAGIC else "CSV"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FeatureInputError(f"cannot read {path} as {kind}: {reason}") from None


def _plain(value: Any) -> Any:
    """A JSON-typed value for one cell: numpy scalars unwrapped, times as ISO text,
    NaN as missing, anything else exotic as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return _plain(value.item())
    if hasattr(value, "isoformat"):  # dates and times (NaT is not equal to itself)
        return None if value != value else value.isoformat()
    if hasattr(value, "tolist"):  # an array cell (Parquet lists)
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def python_values(series: pd.Series) -> list[Any]:
    """The column as Python values of JSON types (None = missing)."""
    values = series.to_numpy(dtype=object, na_value=None).tolist()
    if all(v is None or type(v) in (bool, int, str) for v in values):
        return values
    return [_plain(v) for v in values]


def sample_positions(n: int, limit: int, seed: int = SAMPLE_SEED) -> list[int] | None:
    """`limit` of `n` row positions, in file order, drawn without replacement by a
    seeded generator (the same every time); None when all rows fit."""
    if n <= limit:
        return None
    import numpy as np

    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def _class(value: Any, where: str) -> str | None:
    from modelmon.contract import ContractError, normalize_label

    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        text = normalize_label(value)
    except ContractError as exc:
        raise FeatureInputError(f"{where}: {exc.detail}") from None
    return text or None


def _classes(values: list[Any], rows: list[int], path: Path, column: str) -> list[str | None]:
    return [_class(v, f"{path}: row {r + 1}, column {column!r}") for v, r in zip(values, rows, strict=True)]


def _pick(columns: list[str], given: str | None, default: str, what: str, path: Path) -> str | None:
    if given is None:
        return default if default in columns else None
    if given not in columns:
        shown = ", ".join(columns[:10]) + (", ..." if len(columns) > 10 else "")
        raise FeatureInputError(f"{path}: no {what} column {given!r} (columns: {shown})")
    return given


def load_features(
    path: Path,
    reference_rows: int,
    max_features: int,
    prediction_column: str | None = None,
    label_column: str | None = None,
) -> FeatureTable:
    """Read a features file as a reference: every column a feature except the prediction
    and label columns (by default those named `prediction` and `label`)."""
    frame = read_frame(path)
    frame.columns = [str(c) for c in frame.columns]
    names = list(frame.columns)
    pred = _pick(names, prediction_column, PREDICTION_COLUMN, "prediction", path)
    label = _pick(names, label_column, LABEL_COLUMN, "label", path)
    if pred is not None and pred == label:
        raise FeatureInputError(f"{path}: the prediction and label columns are both {pred!r}")
    features = [c for c in names if c not in (pred, label)]
    if not features:
        raise FeatureInputError(f"{path}: no feature columns (columns: {', '.join(names) or 'none'})")
    if len(features) > max_features:
        raise FeatureInputError(
            f"{path}: {len(features)} feature columns, more than features.max_per_model "
            f"({max_features}); drop columns or raise the limit"
        )
    n = len(frame)
    if n == 0:
        raise FeatureInputError(f"{path}: no rows")
    positions = sample_positions(n, reference_rows)
    if positions is not None:
        frame = frame.iloc[positions]
    rows = positions if positions is not None else list(range(n))
    return FeatureTable(
        columns={c: python_values(frame[c]) for c in features},
        predictions=None if pred is None else _classes(python_values(frame[pred]), rows, path, pred),
        labels=None if label is None else _classes(python_values(frame[label]), rows, path, label),
        source_rows=n,
        prediction_column=pred,
        label_column=label,
    )


# -- a production window ---------------------------------------------------------------


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_source(model: str, start: float, end: float, version: str | None) -> str:
    text = f"window:{model} {_utc(start)}..{_utc(end)}"
    return text if version is None else f"{text} version {version}"


def reference_from_window(
    conn: sa.Connection, model: str, start: float, end: float, rows: int,
    version: str | None = None, max_features: int | None = None,
) -> FeatureReference | None:
    """The window's deterministic sample (modelmon.store.features.sample_window) as a
    reference, or None when no prediction in it carries features."""
    from modelmon.store.features import FeatureReference, sample_window

    sample = sample_window(conn, model, start, end, rows, version, max_columns=max_features)
    if not sample.rows:
        return None
    return FeatureReference(
        model=model,
        columns=sample.columns,
        predictions=list(sample.predictions),
        labels=sample.labels,
        source=window_source(model, start, end, version),
        source_rows=sample.with_features,
        created_at=time.time(),
    )


# -- describing a reference ------------------------------------------------------------


def feature_kind(values: list[Any]) -> str:
    """numeric if every present value is an int or float (not bool), else categorical."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values if v is not None)
    return "numeric" if numeric else "categorical"


def describe(ref: FeatureReference) -> list[dict[str, Any]]:
    """Per feature: name, inferred kind and missing share."""
    n = ref.rows
    return [
        {"name": name, "kind": feature_kind(values),
         "missing_share": (sum(v is None for v in values) / n) if n else 0.0}
        for name, values in ref.columns.items()
    ]


def summary(ref: FeatureReference) -> dict[str, Any]:
    """`baseline show --json`'s entry for the feature reference."""
    return {
        "model": ref.model, "kind": "features", "source": ref.source, "rows": ref.rows,
        "source_rows": ref.source_rows, "created_at": ref.created_at,
        "prediction_column": ref.predictions is not None, "label_column": ref.labels is not None,
        "features": describe(ref),
    }


def show_lines(ref: FeatureReference) -> list[str]:
    when = datetime.fromtimestamp(ref.created_at, UTC).isoformat(timespec="seconds")
    extra = [w for w, v in (("predictions", ref.predictions), ("labels", ref.labels)) if v is not None]
    with_ = f", with {' and '.join(extra)}" if extra else ""
    lines = [f"{ref.model} feature reference (set {when} from {ref.source}, {ref.rows} rows"
             f" of {ref.source_rows}{with_})",
             f"  {'feature':<30} {'kind':<12} missing"]
    for d in describe(ref):
        lines.append(f"  {d['name']:<30} {d['kind']:<12} {d['missing_share']:.4f}")
    return lines


# -- the command -----------------------------------------------------------------------


def _fail(message: str, code: int = 2) -> int:
    print(f"modelmon: {message}", file=sys.stderr)
    return code


def _store(cfg: Config, model: str, ref: FeatureReference) -> int | None:
    import sqlalchemy as sa

    from modelmon.store.engine import make_engine
    from modelmon.store.features import set_reference

    engine = make_engine(cfg.database.url)
    try:
        with engine.begin() as conn:
            set_reference(conn, model, ref)
    except sa.exc.SQLAlchemyError as exc:
        return _fail(f"cannot store the feature reference ({type(exc).__name__}); "
                     "has the database been migrated with `modelmon db upgrade`?", 1)
    finally:
        engine.dispose()
    return None


def set_from_file(args: argparse.Namespace, cfg: Config) -> int:
    from modelmon.store.features import new_reference

    path = Path(args.features)
    try:
        table = load_features(path, cfg.features.reference_rows, cfg.features.max_per_model,
                              args.prediction_column, args.label_column)
    except FeatureInputError as exc:
        return _fail(str(exc))
    ref = new_reference(args.model, table.columns, path.name, table.source_rows,
                        table.predictions, table.labels)
    failed = _store(cfg, args.model, ref)
    if failed is not None:
        return failed
    rows = (f"{table.rows:,} rows, sampled down from {table.source_rows:,} "
            f"(features.reference_rows; seed {SAMPLE_SEED})" if table.sampled else f"{table.rows:,} rows")
    print(f"{args.model}: feature reference set from {path.name}: {rows}, {len(table.columns)} features")
    for what, col in (("prediction", table.prediction_column), ("label", table.label_column)):
        print(f"  {what} column: {col!r}" if col else f"  no {what} column")
    return 0


def window_bounds(args: argparse.Namespace, now: float) -> tuple[float, float]:
    """[start, end) from --window (ending at --end or now) or --start/--end."""
    if args.window is not None:
        if args.start is not None:
            raise FeatureInputError("give either --window or --start, not both")
        end = args.end if args.end is not None else now
        return end - args.window, end
    if args.start is None or args.end is None:
        raise FeatureInputError("--from-window needs --window LEN, or --start T and --end T")
    if args.start >= args.end:
        raise FeatureInputError(f"--start {_utc(args.start)} is not before --end {_utc(args.end)}")
    return args.start, args.end


def set_from_window(args: argparse.Namespace, cfg: Config) -> int:
    import sqlalchemy as sa

    from modelmon.store.engine import make_engine

    try:
        start, end = window_bounds(args, time.time())
    except FeatureInputError as exc:
        return _fail(str(exc))
    engine = make_engine(cfg.database.url)
    try:
        with engine.connect() as conn:
            ref = reference_from_window(conn, args.model, start, end, cfg.features.reference_rows,
                                        args.version, cfg.features.max_per_model)
    except sa.exc.SQLAlchemyError as exc:
        return _fail(f"cannot read the window ({type(exc).__name__}); "
                     "has the database been migrated with `modelmon db upgrade`?", 1)
    finally:
        engine.dispose()
    if ref is None:
        return _fail(f"no predictions with features for model {args.model!r} in "
                     f"{window_source(args.model, start, end, args.version)[len('window:'):]}", 1)
    failed = _store(cfg, args.model, ref)
    if failed is not None:
        return failed
    sampled = (f", sampled down from {ref.source_rows:,} (the smallest digests)"
               if ref.rows < ref.source_rows else "")
    print(f"{args.model}: feature reference set from {ref.source}: {ref.rows:,} rows{sampled}, "
          f"{len(ref.columns)} features")
    return 0


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_options(s: argparse.ArgumentParser, source: Any) -> None:
    """`baseline set`'s feature options; `source` is its group of mutually exclusive inputs."""
    from modelmon.cli import parse_time

    source.add_argument("--features", metavar="FILE",
                        help="set the model's feature reference from validation rows (CSV or "
                             "Parquet: one column per feature, optionally prediction and label)")
    source.add_argument("--from-window", "--features-from-window", dest="from_window",
                        action="store_true",
                        help="set the feature reference from a production window (with --window, "
                             "or --start and --end)")
    s.add_argument("--prediction-column", metavar="NAME", default=None,
                   help=f"with --features: the prediction column (default: {PREDICTION_COLUMN!r} if present)")
    s.add_argument("--label-column", metavar="NAME", default=None,
                   help=f"with --features: the label column (default: {LABEL_COLUMN!r} if present)")
    s.add_argument("--window", type=_duration, metavar="LEN", default=None,
                   help="with --from-window: the window's length, ending at --end or now (e.g. 1d)")
    s.add_argument("--start", type=parse_time, metavar="T", default=None,
                   help="with --from-window: window start (epoch seconds or RFC 3339)")
    s.add_argument("--end", type=parse_time, metavar="T", default=None,
                   help="with --from-window: window end, exclusive (epoch seconds or RFC 3339)")
    s.add_argument("--version", metavar="V", default=None,
                   help="with --from-window: only predictions of this model_version")


def misplaced_option(args: argparse.Namespace) -> str | None:
    """An option given with an input it does not apply to, or None."""
    per_input = {
        "features": ("prediction_column", "label_column"),
        "from_window": ("window", "start", "end", "version"),
        "from_file": ("kind",),
    }
    chosen = next(k for k in per_input if getattr(args, k))
    for other, options in per_input.items():
        for opt in options:
            if other != chosen and getattr(args, opt, None) is not None:
                flag = "--" + opt.replace("_", "-")
                wanted = {"features": "--features", "from_window": "--from-window", "from_file": "--from"}
                return f"{flag} goes with {wanted[other]}"
    return None
