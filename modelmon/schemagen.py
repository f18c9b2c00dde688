"""The JSON Schema files and the OpenAPI event component, generated from modelmon/events.py.

The contract is defined once (the msgspec Structs); these documents are derived
from it with `msgspec.json.schema_components`, so they cannot drift from what
ingest accepts. `python scripts/contract_schemas.py` writes them,
`--check` (and tests/core/test_schemas.py) fails when a committed copy differs.

The OpenAPI document (3.0.3) takes the feedback event as a component, with the
differences of the HTTP endpoint: `timestamp` may be left out (the receipt time),
and patterns that keep schemathesis from generating events the contract refuses
after decoding (NUL characters, blank labels, times before 1970).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import yaml

from modelmon.events import FeedbackEvent, PredictionEvent

SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://github.com/modelmon/modelmon/schemas/"
TITLES = {
    "prediction": (PredictionEvent, "modelmon prediction log (schema_version 1)"),
    "feedback": (FeedbackEvent, "modelmon feedback event (schema_version 1)"),
}
PACKAGE = Path(__file__).resolve().parent
SCHEMA_DIR = PACKAGE / "schemas"
OPENAPI = PACKAGE.parent / "api" / "openapi.yaml"
COMPONENT = "FeedbackEvent"
# HTTP-only refinements of the feedback event (see the module docstring).
HTTP_EVENT = {
    "description": (
        "The feedback contract of the Kafka feedback topic, except that `timestamp` may be "
        "left out here (it defaults to the receipt time)."
    ),
    "optional": ("timestamp",),
    "properties": {
        "request_id": {"pattern": "^[^\\x00]+$"},
        "label": {"description": (
            "The true class; integers, booleans and \"true\"/\"false\" are normalised to text (1, 0)."
        )},
        "timestamp": {"description": (
            "When the label became known; RFC 3339 with a time zone, or epoch seconds. More than "
            "`ingest.max_future_skew` (default 1h) ahead of the server's clock is refused "
            "(reason `timestamp_in_future`). Absent: the time the server received the request."
        )},
        "schema_version": {"description": "null or absent means 1"},
    },
    "label_text": {"pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$"},
    "time_text": {"pattern": "^(197[1-9]|19[89][0-9]|[2-9][0-9]{3})-"},
}


def _component(kind: type[msgspec.Struct]) -> dict[str, Any]:
    (_,), components = msgspec.json.schema_components([kind], ref_template="#/$defs/{name}")
    schema = dict(components.pop(kind.__name__))
    schema.pop("title", None)
    if components:  # nested Structs, if the contract ever has them
        schema["$defs"] = components
    return schema


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one event kind ("prediction" or "feedback")."""
    kind, title = TITLES[name]
    body = _component(kind)
    return {"$schema": SCHEMA_URL, "$id": f"{ID_BASE}{name}.v1.schema.json", "title": title, **body}


def _openapi_30(schema: Any) -> Any:
    """JSON Schema 2020-12 -> the OpenAPI 3.0 dialect: `{"type": "null"}` arms become `nullable`."""
    if isinstance(schema, list):
        return [_openapi_30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _openapi_30(v) for k, v in schema.items()}
    arms = out.get("anyOf")
    if arms is not None and {"type": "null"} in arms:
        rest = [a for a in arms if a != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
        out["nullable"] = True
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
            out.setdefault("type", "integer" if all(type(v) is int for v in out["enum"][:-1]) else "string")
    return out


def openapi_component() -> dict[str, Any]:
    """The `FeedbackEvent` component of api/openapi.yaml."""
    schema = _openapi_30(_component(FeedbackEvent))
    schema.pop("description", None)
    schema = {"type": schema.pop("type"), "description": HTTP_EVENT["description"], **schema}
    schema["required"] = [r for r in schema["required"] if r not in HTTP_EVENT["optional"]]
    props = schema["properties"]
    for field, extra in HTTP_EVENT["properties"].items():
        props[field] = {**props[field], **extra}
    for arm in props["label"]["anyOf"]:
        if arm.get("type") == "string":
            arm.update(HTTP_EVENT["label_text"])
    for arm in props["timestamp"]["anyOf"]:
        if arm.get("type") == "string":
            arm.update(HTTP_EVENT["time_text"])
    return schema


def schema_text(name: str) -> str:
    return json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n"


def _component_span(text: str) -> tuple[int, int]:
    """Character span of the `    FeedbackEvent:` block in openapi.yaml (to the next sibling)."""
    head = f"\n    {COMPONENT}:\n"
    start = text.index(head) + 1
    end = start + len(head) - 1
    while True:
        nxt = text.index("\n", end) + 1
        line = text[nxt:text.index("\n", nxt)]
        if line.strip() and not line.startswith("      ") and not line.lstrip().startswith("#"):
            return start, nxt
        end = nxt


def openapi_text(current: str) -> str:
    """`current` (api/openapi.yaml) with the generated component in place of the old one."""
    start, end = _component_span(current)
    block = yaml.safe_dump({COMPONENT: copy.deepcopy(openapi_component())}, sort_keys=False,
                           width=100, allow_unicode=True, default_flow_style=False)
    first, *rest = block.splitlines()
    note = "# Generated from modelmon/events.py by scripts/contract_schemas.py: do not edit."
    indented = "".join(f"    {line}\n" for line in [first, f"  {note}", *rest])
    return current[:start] + indented + current[end:]


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    out = {SCHEMA_DIR / f"{name}.v1.schema.json": schema_text(name) for name in TITLES}
    out[OPENAPI] = openapi_text(OPENAPI.read_text(encoding="utf-8"))
    return out


def stale() -> list[Path]:
    """Generated files whose committed content differs."""
    return [p for p, text in outputs().items() if not p.exists() or p.read_text(encoding="utf-8") != text]
