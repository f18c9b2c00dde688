"""A batch's rows as columns, built by C-level map and zip instead of Python code per event.

A batch write touches every event a few times: its key, its row, its rollup
counts, its audit position. Done with a Python function per event, that is
where an ingest batch's time goes (more than the database's); `attrgetter`,
`zip` and `chain` do the same work in C. Columns are tuples or lists of equal
length, in batch order.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

#: The first item of each (event, position) pair.
first_items = itemgetter(0)
#: An event's natural key (predictions and feedback alike).
key_of = attrgetter("model", "request_id")
_POSITION = attrgetter("topic", "partition", "offset", "source")


def keys(events: Sequence[Any]) -> list[tuple[str, str]]:
    """(model, request_id) of each event."""
    return list(map(key_of, events))


def fields(events: Sequence[Any], names: Sequence[str]) -> list[tuple[Any, ...]]:
    """One column per attribute name, over the events."""
    if not events:
        return [() for _ in names]
    return list(zip(*map(attrgetter(*names), events), strict=True)) if len(names) > 1 else [
        tuple(map(attrgetter(names[0]), events))
    ]


def positions(items: Sequence[Any]) -> tuple[Sequence[Any], ...]:
    """topic, partition, offset and source columns of Positions (None: all four None)."""
    if not items:
        return (), (), (), ()
    if None in items:
        return tuple(
            [None if p is None else getattr(p, name) for p in items]
            for name in ("topic", "partition", "offset", "source")
        )
    return tuple(zip(*map(_POSITION, items), strict=True))


def rows(columns: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The rows of these columns."""
    return list(zip(*columns, strict=True))


def flat(columns: Sequence[Sequence[Any]], start: int, stop: int) -> list[Any]:
    """Rows start..stop of these columns, one value after another (multi-row VALUES)."""
    return list(chain.from_iterable(zip(*(c[start:stop] for c in columns), strict=True)))
