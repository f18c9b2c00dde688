"""Research baselines: class shares from validation data, stored in `baselines`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from modelmon.store.tables import baselines

Kind = Literal["predictions", "labels"]


@dataclass(frozen=True, slots=True)
class Baseline:
    model: str
    kind: str
    shares: dict[str, float]
    sample_count: int | None
    source: str
    created_at: float


def latest_baseline(conn: sa.Connection, model: str, kind: Kind) -> Baseline | None:
    """The most recently set baseline of this kind; earlier ones stay as history."""
    b = baselines
    row = conn.execute(
        sa.select(b)
        .where(b.c.model == model, b.c.kind == kind)
        .order_by(b.c.created_at.desc(), b.c.id.desc())
        .limit(1)
    ).mappings().first()
    if row is None:
        return None
    return Baseline(
        model=row["model"],
        kind=row["kind"],
        shares={str(k): float(v) for k, v in dict(row["shares"]).items()},
        sample_count=row["sample_count"],
        source=row["source"],
        created_at=float(row["created_at"]),
    )


def store_baseline(
    conn: sa.Connection,
    model: str,
    kind: Kind,
    shares: dict[str, float],
    sample_count: int | None,
    source: str,
    created_at: float | None = None,
) -> None:
    conn.execute(
        baselines.insert().values(
            model=model,
            kind=kind,
            shares=shares,
            sample_count=sample_count,
            source=source,
            created_at=time.time() if created_at is None else created_at,
        )
    )
