"""`modelmon baseline set|show`: the research baseline of class shares.

`set` takes either class shares (JSON {class: share} or CSV class,share),
class counts (JSON {class: count} or CSV class,count; normalised), or raw
validation predictions (CSV with a `prediction` column, optionally `label`;
JSON list of objects with `prediction`/`label`, or a list of plain values),
whose class shares become the predictions baseline (and the labels baseline
from the `label` column). `--features FILE` / `--from-window` set the feature
reference instead (modelmon.monitors.feature_baseline).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelmon.config import MODEL_NAME_RE, Config

SHARE_TOLERANCE = 1e-6


class BaselineInputError(ValueError):
    """The input file cannot be read as shares, counts or raw predictions."""


@dataclass(frozen=True)
class ParsedBaseline:
    kind: str  # predictions | labels
    shares: dict[str, float]
    sample_count: int | None
    form: str  # shares | counts | raw


def _label(value: Any, where: str) -> str:
    from modelmon.contract import ContractError, normalize_label

    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        text = normalize_label(value)
    except ContractError as exc:
        raise BaselineInputError(f"{where}: {exc.detail}") from None
    if not text:
        raise BaselineInputError(f"{where}: empty class label")
    return text


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise BaselineInputError(f"{where}: expected a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BaselineInputError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise BaselineInputError(f"{where}: expected a finite number >= 0, got {value!r}")
    return x


def _from_mapping(pairs: list[tuple[Any, Any]], kind: str, form: str | None, source: str) -> ParsedBaseline:
    values: dict[str, float] = {}
    for i, (k, v) in enumerate(pairs, 1):
        cls = _label(k, f"{source}: entry {i}")
        if cls in values:
            raise BaselineInputError(f"{source}: class {cls!r} appears twice")
        values[cls] = _number(v, f"{source}: class {cls!r}")
    total = sum(values.values())
    if not values or total <= 0:
        raise BaselineInputError(f"{source}: no class has a positive share")
    if form is None:  # JSON object: shares if they sum to 1, counts if whole numbers
        if abs(total - 1.0) <= SHARE_TOLERANCE:
            form = "shares"
        elif all(v.is_integer() for v in values.values()):
            form = "counts"
        else:
            raise BaselineInputError(
                f"{source}: shares must sum to 1 (they sum to {total:.6g}); "
                "give whole-number counts to have them normalised"
            )
    if form == "shares" and abs(total - 1.0) > SHARE_TOLERANCE:
        raise BaselineInputError(f"{source}: shares must sum to 1 (they sum to {total:.6g})")
    if form == "counts" and not all(v.is_integer() for v in values.values()):
        raise BaselineInputError(f"{source}: counts must be whole numbers")
    shares = {k: v / total for k, v in sorted(values.items())}
    return ParsedBaseline(kind, shares, int(total) if form == "counts" else None, form)


def _from_raw(preds: list[Any], labels: list[Any], kind: str | None, source: str) -> list[ParsedBaseline]:
    out = []
    for k, values in (("predictions", preds), ("labels", labels)):
        if kind is not None and k != kind:
            continue
        cleaned = [_label(v, f"{source}: row {i} ({k})") for i, v in enumerate(values, 1) if v not in (None, "")]
        if not cleaned:
            if kind == k:
                column = "prediction" if k == "predictions" else "label"
                raise BaselineInputError(f"{source}: no values in column {column!r}")
            continue
        counts = Counter(cleaned)
        n = len(cleaned)
        out.append(ParsedBaseline(k, {c: counts[c] / n for c in sorted(counts)}, n, "raw"))
    return out


def parse_baseline(text: str, source: str, kind: str | None = None) -> list[ParsedBaseline]:
    """Parse a baseline file's text; `kind` None = predictions for shares/counts."""
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        raise BaselineInputError(f"{source}: the file is empty")
    if stripped[0] in "{[":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise BaselineInputError(f"{source}: not valid JSON: {exc}") from None
        if isinstance(data, dict):
            return [_from_mapping(list(data.items()), kind or "predictions", None, source)]
        if all(isinstance(x, dict) for x in data):
            if not all("prediction" in x or "label" in x for x in data):
                raise BaselineInputError(f"{source}: every object needs a 'prediction' (or 'label') key")
            return _from_raw([x.get("prediction") for x in data], [x.get("label") for x in data], kind, source)
        if kind == "labels":
            return _from_raw([], data, "labels", source)
        return _from_raw(data, [], "predictions", source)
    reader = csv.DictReader(io.StringIO(stripped))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    reader.fieldnames = cols
    rows = list(reader)
    if "class" in cols and ("share" in cols or "count" in cols):
        col = "share" if "share" in cols else "count"
        pairs = [(r["class"], r[col]) for r in rows]
        return [_from_mapping(pairs, kind or "predictions", "shares" if col == "share" else "counts", source)]
    if "prediction" in cols or "label" in cols:
        preds = [r.get("prediction") for r in rows] if "prediction" in cols else []
        labels = [r.get("label") for r in rows] if "label" in cols else []
        return _from_raw(preds, labels, kind, source)
    raise BaselineInputError(
        f"{source}: CSV needs columns class,share or class,count (class shares) "
        f"or prediction[,label] (raw validation predictions); found {', '.join(cols) or 'none'}"
    )


def _engine(cfg: Config):  # type: ignore[no-untyped-def]
    from modelmon.store.engine import make_engine

    return make_engine(cfg.database.url)


def _set(args: argparse.Namespace, cfg: Config) -> int:
    import sqlalchemy as sa

    from modelmon.monitors import feature_baseline
    from modelmon.monitors.baselines import store_baseline

    if not MODEL_NAME_RE.match(args.model):
        print(f"modelmon: model name {args.model!r} must match [A-Za-z0-9_.-]{{1,64}}", file=sys.stderr)
        return 2
    misplaced = feature_baseline.misplaced_option(args)
    if misplaced:
        print(f"modelmon: {misplaced}", file=sys.stderr)
        return 2
    if args.features is not None:
        return feature_baseline.set_from_file(args, cfg)
    if args.from_window:
        return feature_baseline.set_from_window(args, cfg)
    path = Path(args.from_file)
    try:
        text = path.read_text(encoding="utf-8")
        parsed = parse_baseline(text, str(path), args.kind)
    except OSError as exc:
        print(f"modelmon: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"modelmon: {path} is not UTF-8 text", file=sys.stderr)
        return 2
    except BaselineInputError as exc:
        print(f"modelmon: {exc}", file=sys.stderr)
        return 2
    try:
        with _engine(cfg).begin() as conn:
            for b in parsed:
                store_baseline(conn, args.model, b.kind, b.shares, b.sample_count, f"{path.name} ({b.form})")  # type: ignore[arg-type]
    except sa.exc.SQLAlchemyError as exc:
        print(f"modelmon: cannot store the baseline ({type(exc).__name__}); "
              "has the database been created with `modelmon db upgrade`?", file=sys.stderr)
        return 1
    for b in parsed:
        n = "" if b.sample_count is None else f" from {b.sample_count} rows"
        print(f"{args.model}: {b.kind} baseline set{n} ({len(b.shares)} classes)")
        for cls, share in b.shares.items():
            print(f"  {cls:<30} {share:.6f}")
    return 0


def _show(args: argparse.Namespace, cfg: Config) -> int:
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from modelmon.monitors import feature_baseline
    from modelmon.monitors.baselines import latest_baseline
    from modelmon.store.features import load_reference

    try:
        with _engine(cfg).connect() as conn:
            found = [latest_baseline(conn, args.model, k) for k in ("predictions", "labels")]  # type: ignore[arg-type]
            features = load_reference(conn, args.model)
    except sa.exc.SQLAlchemyError as exc:
        print(f"modelmon: cannot read baselines ({type(exc).__name__}); "
              "has the database been created with `modelmon db upgrade`?", file=sys.stderr)
        return 1
    found = [b for b in found if b is not None]
    if args.json:
        print(json.dumps([{"model": b.model, "kind": b.kind, "shares": b.shares, "sample_count": b.sample_count,
                           "source": b.source, "created_at": b.created_at} for b in found]
                         + ([feature_baseline.summary(features)] if features else []), indent=2))
        return 0 if found or features else 1
    if not found and features is None:
        print(f"no baseline set for model {args.model!r} (use `modelmon baseline set`)", file=sys.stderr)
        return 1
    for b in found:
        when = datetime.fromtimestamp(b.created_at, UTC).isoformat(timespec="seconds")
        n = "" if b.sample_count is None else f", {b.sample_count} samples"
        print(f"{b.model} {b.kind} baseline (set {when} from {b.source}{n})")
        for cls, share in sorted(b.shares.items(), key=lambda kv: -kv[1]):
            print(f"  {cls:<30} {share:.6f}")
    if features is not None:
        print("\n".join(feature_baseline.show_lines(features)))
    return 0


def register(subparsers: Any) -> None:
    base = subparsers.add_parser(
        "baseline", help="research baselines: class shares (shift monitors), feature reference (feature families)")
    sub = base.add_subparsers(dest="baseline_command", required=True)
    s = sub.add_parser("set", help="set a model's baseline from validation data")
    s.add_argument("--model", required=True, help="the model whose baseline to set")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="from_file", metavar="FILE",
                        help="class shares: CSV (class,share | class,count | prediction[,label]) or "
                             "JSON ({class: share} | list of objects or values)")
    s.add_argument("--kind", choices=("predictions", "labels"), default=None,
                   help="which distribution shares/counts describe (default predictions); "
                        "with raw predictions, set only this one")
    from modelmon.monitors.feature_baseline import add_options

    add_options(s, source)
    s.set_defaults(handler=_set)
    sh = sub.add_parser("show", help="print a model's current baselines")
    sh.add_argument("--model", required=True, help="the model whose baselines to print")
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    sh.set_defaults(handler=_show)
