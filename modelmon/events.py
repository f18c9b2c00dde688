"""The event contract, defined once: msgspec Structs with `Meta` constraints.

`PredictionEvent` and `FeedbackEvent` are the shape of a message as sent. msgspec
compiles them into the decoders of modelmon/contract.py, and
modelmon/schemagen.py generates the JSON Schema files and the OpenAPI
components from them. Optional fields default to `UNSET`, so an absent field
is told from a `null` one (both mean "the default", but the digest of the
event as sent differs). The field order is the order refusals are reported in.
Rules a type cannot state live in modelmon/contract.py (post-decode checks).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

SCHEMA_VERSIONS = (1,)
MODEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_MODEL = 64
MAX_REQUEST_ID = 256
MAX_LABEL = 256
MAX_VERSION = 128
MAX_SLICE_KEYS = 32
MAX_SLICE_NAME = 64
MAX_SLICE_VALUE = 128
# Epoch values above this are almost certainly milliseconds (year 5138).
MAX_EPOCH_SECONDS = 1e11
# latency_ms must be below this (exclusive): sums of many latencies stay finite.
MAX_LATENCY_MS = 1e300

RequestId = Annotated[str, Meta(min_length=1, max_length=MAX_REQUEST_ID)]
ModelName = Annotated[str, Meta(min_length=1, max_length=MAX_MODEL, pattern=MODEL_RE.pattern)]
# "Not blank" is stated for the schema but checked after label normalisation
# (contract.label_of, contract.scores_of): a regex per label would cost more than the rest.
LabelText = Annotated[str, Meta(min_length=1, max_length=MAX_LABEL, extra_json_schema={"pattern": r"\S"})]
Label = Annotated[
    LabelText | int | bool,
    Meta(description=(
        "A class label. Compared as text after normalisation: true/false (any case) -> \"1\"/\"0\", "
        "integers -> decimal text, strings trimmed."
    )),
]
Timestamp = Annotated[
    Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
    | Annotated[int, Meta(ge=0, le=int(MAX_EPOCH_SECONDS))]
    | Annotated[float, Meta(ge=0, le=MAX_EPOCH_SECONDS)],
    Meta(description="RFC 3339 date-time with a time zone, or epoch seconds (not milliseconds)."),
]
Probability = Annotated[int, Meta(ge=0, le=1)] | Annotated[float, Meta(ge=0, le=1)]
Scores = Annotated[
    Annotated[dict[LabelText, Probability], Meta(min_length=1)] | None,
    Meta(description=(
        "Class -> probability. A single entry is read as the probability of that class in a binary model."
    )),
]
# An int latency above 2**63 cannot carry a msgspec bound: contract.latency_of checks it.
Latency = Annotated[
    Annotated[int, Meta(ge=0, extra_json_schema={"exclusiveMaximum": MAX_LATENCY_MS})]
    | Annotated[float, Meta(ge=0, lt=MAX_LATENCY_MS)] | None,
    Meta(description="Milliseconds; stored as latency_seconds."),
]
Slices = Annotated[
    Annotated[dict[Annotated[str, Meta(min_length=1, max_length=MAX_SLICE_NAME)],
                   Annotated[str, Meta(max_length=MAX_SLICE_VALUE)]], Meta(max_length=MAX_SLICE_KEYS)] | None,
    Meta(description=(
        "Attribute -> value, e.g. {\"sex\": \"F\", \"region\": \"eu\"}; used by slice and fairness monitors."
    )),
]
SchemaVersion = Annotated[Literal[SCHEMA_VERSIONS] | None, Meta(description="Defaults to 1.")]  # type: ignore[valid-type]


class PredictionEvent(Struct, kw_only=True, forbid_unknown_fields=True):
    """One JSON object per prediction, on the predictions topic (default modelmon.predictions). Optional fields may be absent or null. Rules JSON Schema cannot state are checked by ingest too: scores sum to at most 1, class names stay distinct after label normalisation, labels are not blank, strings hold no NUL or lone surrogate, numbers fit a double."""  # noqa: E501

    schema_version: SchemaVersion | UnsetType = UNSET
    request_id: Annotated[RequestId, Meta(description="Unique per model; joins the prediction with its feedback.")]
    model: ModelName
    model_version: Annotated[
        Annotated[str, Meta(min_length=1, max_length=MAX_VERSION)] | None, Meta(description="Defaults to \"unknown\".")
    ] | UnsetType = UNSET
    timestamp: Timestamp
    prediction: Label
    scores: Scores | UnsetType = UNSET
    latency_ms: Latency | UnsetType = UNSET
    status: Annotated[Literal["ok", "error"] | None, Meta(description="Defaults to \"ok\".")] | UnsetType = UNSET
    features: Annotated[dict[Any, Any] | None, Meta(description="Stored as sent.")] | UnsetType = UNSET
    slices: Slices | UnsetType = UNSET


class FeedbackEvent(Struct, kw_only=True, forbid_unknown_fields=True):
    """The true label of one prediction, on the feedback topic (default modelmon.feedback) or POSTed over HTTP. It may arrive before the prediction log. Labels are normalised as in the prediction schema."""  # noqa: E501

    schema_version: SchemaVersion | UnsetType = UNSET
    request_id: Annotated[RequestId, Meta(description="The request id of the prediction this label belongs to.")]
    model: ModelName
    label: Annotated[Label, Meta(description="The true class.")]
    timestamp: Annotated[Timestamp, Meta(description=(
        "When the label became known: RFC 3339 with a time zone, or epoch seconds (not milliseconds)."
    ))]


PREDICTION_FIELDS = frozenset(PredictionEvent.__struct_fields__)
FEEDBACK_FIELDS = frozenset(FeedbackEvent.__struct_fields__)
