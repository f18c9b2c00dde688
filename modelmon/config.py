"""modelmon configuration: one YAML file, validated at start-up.

Every stage reads its settings from here so that a typo fails fast with the key
path and what was expected, instead of surfacing hours later as a silent default.
Secrets and URLs can be overridden from the environment (see ENV_OVERRIDES).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_FILE = "modelmon.yaml"
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigError(ValueError):
    """A configuration problem, worded for the person who wrote the YAML."""


def parse_duration(value: Any) -> float:
    """'5m' -> 300.0; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '5m', '1h', '28d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like '30s', '5m', '1h', '28d', got {value!r}")
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """300.0 -> '5m': the inverse of parse_duration, used for window labels.

    Never weeks: periods are written in days (`28d`, `7d`), and a label the
    user did not write (`4w`) would not match their dashboards or queries.
    """
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(round(seconds * 1000))}ms"


Duration = Annotated[float, BeforeValidator(parse_duration)]
Probability = Annotated[float, Field(gt=0, lt=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    url: str = "sqlite:///modelmon.db"
    pool_size: int = Field(5, ge=1)
    echo: bool = False


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    predictions_topic: str = "modelmon.predictions"
    feedback_topic: str = "modelmon.feedback"
    group_id: str = "modelmon-ingest"
    client_id: str = "modelmon"
    # Passed to kafka-python as is: security_protocol, sasl_mechanism,
    # sasl_plain_username, sasl_plain_password, ssl_cafile, ssl_certfile, ...
    security: dict[str, Any] = Field(default_factory=dict)
    # Extra KafkaConsumer settings (session_timeout_ms, fetch_max_bytes, ...).
    consumer: dict[str, Any] = Field(default_factory=dict)
    # Consumer library: kafka-python (pure Python, the default) or confluent-kafka
    # (librdkafka; `pip install 'modelmon[confluent]'`). Same guarantees either way.
    client: Literal["kafka-python", "confluent"] = "kafka-python"

    @model_validator(mode="after")
    def _client_takes_the_settings(self) -> KafkaConfig:
        # confluent maps kafka-python's names to librdkafka's: one that has no
        # equivalent is refused here, at start-up, rather than silently dropped.
        if self.client == "confluent":
            from modelmon.ingest.consumer_confluent import unmapped_message, unmapped_settings

            unknown = unmapped_settings({**self.security, **self.consumer})
            if unknown:
                raise ValueError(unmapped_message(unknown))
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)


class IngestConfig(_Section):
    batch_max_events: int = Field(2000, ge=1)
    batch_max_age: Duration = 1.0
    # A batch also closes at this many message bytes, so memory and the size of
    # one store round trip stay bounded whatever the size of the events.
    batch_max_bytes: int = Field(32 * 1_048_576, ge=1024)
    max_message_bytes: int = Field(1_048_576, ge=256)
    # Dead-lettered payloads are kept whole up to this size, so that
    # `modelmon deadletters replay` can feed them back after a fix.
    dead_letter_payload_bytes: int = Field(1_048_576, ge=0)
    status_interval: Duration = 10.0
    db_retry_initial: Duration = 0.5
    db_retry_max: Duration = 30.0
    # Events stamped further ahead of this process's clock are dead-lettered
    # (reason `timestamp_in_future`); nearer ones are stored, and freshness
    # numbers never read past now.
    max_future_skew: Duration = 3600.0
    # A batch that has waited this long without being committed (store down,
    # a batch it keeps refusing) marks the writer as stalled: /healthz 503.
    stall_after: Duration = 300.0
    # Dead-letter limit: when more than this share of a partition's last
    # `dead_letter_limit_messages` messages is bad (a broken producer deploy),
    # that partition is paused and an alert raised instead of dead-lettering on.
    dead_letter_limit_share: float = Field(0.5, gt=0, le=1)
    dead_letter_limit_messages: int = Field(1000, ge=10)
    # `modelmon ingest` serves /metrics, /healthz and /readyz here (0 = any free port).
    http_port: int = Field(9465, ge=0, le=65535)
    # Store transactions run in a child process of their own, so the consumer
    # (polling, decoding) and the store writes each have a core and a GIL;
    # false keeps them on a thread of the ingest process. An in-memory SQLite
    # store always stays in the process.
    write_process: bool = True

    @model_validator(mode="after")
    def _bytes_fit(self) -> IngestConfig:
        if self.batch_max_bytes < self.max_message_bytes:
            raise ValueError("ingest.batch_max_bytes must be at least ingest.max_message_bytes")
        return self


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    api_tokens: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_feedback_batch: int = Field(1000, ge=1)
    # /metrics: bearer tokens (or basic-auth passwords, any user name) it
    # requires; empty = open. Turn on when slice values can identify people.
    metrics_tokens: list[str] = Field(default_factory=list)
    # /metrics exposes the monitor results of at most this many models (the
    # configured ones first, then the most recently active) and at most this
    # many series; what is cut is logged and counted.
    metrics_max_models: int = Field(200, ge=1)
    metrics_max_series: int = Field(250_000, ge=1000)


class SLOConfig(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")]
    kind: Literal["latency", "error_rate"]
    objective: Probability  # e.g. 0.99 = 99% of requests are good
    threshold: Duration | None = None  # latency SLOs: a request is good under this
    period: Duration = 28 * 86400.0

    @model_validator(mode="after")
    def _threshold_for_latency(self) -> SLOConfig:
        if self.kind == "latency" and self.threshold is None:
            raise ValueError("a latency SLO needs 'threshold' (e.g. '300ms')")
        if self.kind == "error_rate" and self.threshold is not None:
            raise ValueError("an error_rate SLO takes no 'threshold'")
        return self


class Thresholds(_Section):
    """Alert thresholds; the monitors report values, the rules compare them."""

    psi: float = Field(0.2, gt=0)
    js_distance: float = Field(0.1, gt=0, le=1)
    chi2_pvalue: float = Field(0.001, gt=0, lt=1)
    class_ratio: float = Field(2.0, gt=1)
    accuracy_min: float | None = Field(None, gt=0, lt=1)
    accuracy_drop: float = Field(0.05, gt=0, lt=1)
    estimated_accuracy_drop: float = Field(0.05, gt=0, lt=1)
    disparate_impact_min: float = Field(0.8, gt=0, le=1)
    demographic_parity_max: float = Field(0.1, gt=0, le=1)
    equal_opportunity_max: float = Field(0.1, gt=0, le=1)
    freshness: Duration = 600.0
    dead_letter_rate: float = Field(0.01, gt=0, le=1)
    # Service-wide (read from `defaults.thresholds` only): messages behind, summed per topic.
    consumer_lag_messages: int = Field(10_000, ge=1)
    # Service-wide: how far behind its schedule a monitor family may fall.
    schedule_delay: Duration = 300.0
    # Version comparison (`compare`): how much accuracy a candidate may lose,
    # and how much error rate it may add, before its verdict is `worse`.
    version_accuracy_margin: float = Field(0.02, gt=0, lt=1)
    version_error_margin: float = Field(0.01, gt=0, lt=1)
    # Feature drift: share of a model's features whose drift test detects drift
    # (evidently's "dataset drift" share; 0.5 is evidently's default).
    feature_drift_share: float = Field(0.5, gt=0, le=1)
    # Data quality, per feature, compared with the reference.
    feature_missing_increase: float = Field(0.1, gt=0, le=1)
    feature_unseen_share: float = Field(0.05, gt=0, le=1)
    feature_out_of_range_share: float = Field(0.05, gt=0, le=1)
    feature_type_change_share: float = Field(0.01, gt=0, le=1)


class CompareConfig(_Section):
    """Which two versions of a model the `compare` family sets against each other.

    `auto` (both unset): the two versions with the most traffic in the window,
    the one first seen earlier being the baseline.
    """

    baseline: str | None = None
    candidate: str | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> CompareConfig:
        if (self.baseline is None) != (self.candidate is None):
            raise ValueError("compare needs both 'baseline' and 'candidate' (or 'auto')")
        if self.baseline is not None and self.baseline == self.candidate:
            raise ValueError("compare: baseline and candidate must differ")
        return self


def _compare(value: Any) -> Any:
    return {} if value == "auto" else value


class ModelSettings(_Section):
    """Per-model monitor settings; unset fields fall back to `defaults`."""

    task: Literal["binary", "multiclass"] | None = None
    positive_class: str | None = None
    classes: list[str] | None = None
    slices: list[str] | None = None
    slice_top_k: int | None = Field(None, ge=1, le=200)
    windows: list[Duration] | None = None
    interval: Duration | None = None
    min_samples: int | None = Field(None, ge=1)
    min_labels: int | None = Field(None, ge=1)
    min_slice_samples: int | None = Field(None, ge=1)
    mature_coverage: float | None = Field(None, gt=0, le=1)
    confidence_threshold: float | None = Field(None, gt=0, lt=1)
    calibration_bins: int | None = Field(None, ge=2, le=100)
    rolling_baseline: Literal["previous_window", "day_before"] | None = None
    version_top_k: int | None = Field(None, ge=0, le=50)
    compare: Annotated[CompareConfig | None, BeforeValidator(_compare)] = None
    baseline_accuracy: float | None = Field(None, gt=0, le=1)
    slos: list[SLOConfig] | None = None
    thresholds: Thresholds | None = None

    @field_validator("positive_class", mode="before")
    @classmethod
    def _label_as_text(cls, v: Any) -> Any:
        from modelmon.contract import normalize_label

        return None if v is None else normalize_label(v)

    @field_validator("classes", mode="before")
    @classmethod
    def _labels_as_text(cls, v: Any) -> Any:
        from modelmon.contract import normalize_label

        return v if not isinstance(v, list) else [normalize_label(x) for x in v]


DEFAULT_MODEL_SETTINGS = ModelSettings(
    task="multiclass",
    positive_class=None,
    classes=None,
    slices=[],
    slice_top_k=20,
    windows=[300.0, 3600.0, 86400.0],
    interval=60.0,
    min_samples=100,
    min_labels=100,
    min_slice_samples=100,
    mature_coverage=0.5,
    confidence_threshold=0.5,
    calibration_bins=10,
    rolling_baseline="previous_window",
    version_top_k=5,
    compare=CompareConfig(),
    baseline_accuracy=None,
    slos=[],
    thresholds=Thresholds(),
)


class ResolvedModel(BaseModel):
    """A model's settings with every default filled in."""

    model_config = ConfigDict(frozen=True)

    name: str
    task: Literal["binary", "multiclass"]
    positive_class: str | None
    classes: list[str] | None
    slices: list[str]
    slice_top_k: int
    windows: list[float]
    interval: float
    min_samples: int
    min_labels: int
    min_slice_samples: int
    mature_coverage: float
    confidence_threshold: float
    calibration_bins: int
    rolling_baseline: Literal["previous_window", "day_before"]
    version_top_k: int
    compare: CompareConfig
    baseline_accuracy: float | None
    slos: list[SLOConfig]
    thresholds: Thresholds
    # From `rollups`: windows end on a fine-bucket boundary.
    bucket_seconds: float = 60.0
    coarse_seconds: float = 3600.0
    sketch_relative_accuracy: float = 0.01

    @property
    def window_names(self) -> list[str]:
        return [format_duration(w) for w in self.windows]


class MonitorsConfig(_Section):
    enabled: bool = True
    # Models that appear in the store but not under `models` are monitored with
    # the defaults when this is true.
    discover_models: bool = True
    advisory_locks: bool = True
    # The latest results are replaced every tick; the history table gets one
    # pass per job at most this often.
    history_interval: Duration = 600.0
    # Threads running monitor jobs (one job per thread at a time).
    max_workers: int = Field(4, ge=1, le=64)


class FeaturesConfig(_Section):
    """Input-feature monitoring: drift against a reference and data quality.

    Both families read a deterministic, bounded sample of each window (the same
    window always gives the same rows) and run in their own worker process, so
    evidently's import and memory never touch ingest or the other families.
    """

    enabled: bool = True
    # Windows the feature families compute over, and how often they run.
    windows: list[Duration] = Field(default_factory=lambda: [3600.0, 86400.0])
    interval: Duration = 300.0
    # Rows per window sample, and the most rows a stored reference keeps.
    sample_rows: int = Field(20_000, ge=100)
    reference_rows: int = Field(50_000, ge=100)
    # Features watched per model (the rest are counted, not exported).
    max_per_model: int = Field(100, ge=1, le=1000)
    # The worker process is restarted after a job that leaves it above this RSS.
    worker_max_rss_bytes: int = Field(500 * 1_048_576, ge=64 * 1_048_576)


class RollupsConfig(_Section):
    """Pre-aggregated buckets the monitors read (see modelmon.store.rollups).

    Windows are cut at `fine` boundaries, so every window length must be a
    multiple of it; `coarse` buckets cover the whole coarse spans inside long
    windows (a 28-day SLO period is 672 hourly buckets plus a few minutes).
    """

    fine: Duration = 60.0
    coarse: Duration = 3600.0
    # Distinct values kept per (model, slice attribute); later ones pool as __other__.
    slice_values_max: int = Field(1000, ge=1, le=100_000)
    # Latency and label-delay quantiles: DDSketch relative accuracy.
    sketch_relative_accuracy: float = Field(0.01, gt=0, le=0.05)

    @model_validator(mode="after")
    def _aligned(self) -> RollupsConfig:
        if self.fine != int(self.fine):
            raise ValueError("rollups.fine must be a whole number of seconds")
        if self.coarse % self.fine:
            raise ValueError("rollups.coarse must be a multiple of rollups.fine")
        return self


class RetentionConfig(_Section):
    """How long each table keeps its rows; a scheduled job deletes in bounded steps."""

    enabled: bool = True
    interval: Duration = 600.0
    batch_rows: int = Field(50_000, ge=100)  # per table and run: bounded cost
    # PostgreSQL: the span of one partition of `predictions` (whole partitions
    # are dropped once all their rows are past `predictions`).
    partition: Duration = 7 * 86400.0
    predictions: Duration = 30 * 86400.0
    feedback: Duration = 30 * 86400.0
    dead_letters: Duration = 14 * 86400.0
    conflicts: Duration = 30 * 86400.0
    fine_buckets: Duration = 35 * 86400.0
    coarse_buckets: Duration = 400 * 86400.0
    results: Duration = 30 * 86400.0


class AlertsConfig(_Section):
    """Settings of the generated alert rules."""

    # Each alert's `runbook_url` annotation is this base + "#" + the alert's anchor;
    # point it at your copy of docs/alerts.md (wiki, internal docs site).
    runbook_base_url: str = "https://github.com/modelmon/modelmon/blob/main/docs/alerts.md"
    # Where people reach the modelmon API: the feature-drift alert and the model
    # dashboard link to its report endpoint (`/v1/report`) under this base.
    api_base_url: str = "http://127.0.0.1:9464"


class Config(_Section):
    database: DatabaseConfig = DatabaseConfig()
    kafka: KafkaConfig = KafkaConfig()
    ingest: IngestConfig = IngestConfig()
    server: ServerConfig = ServerConfig()
    monitors: MonitorsConfig = MonitorsConfig()
    rollups: RollupsConfig = RollupsConfig()
    retention: RetentionConfig = RetentionConfig()
    alerts: AlertsConfig = AlertsConfig()
    features: FeaturesConfig = FeaturesConfig()
    defaults: ModelSettings = ModelSettings()
    models: dict[str, ModelSettings] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        for name in v:
            if not MODEL_NAME_RE.match(name):
                raise ValueError(f"model name {name!r} must match [A-Za-z0-9_.-]{{1,64}}")
        return v

    @model_validator(mode="after")
    def _binary_needs_positive(self) -> Config:
        for name in [*self.models, "_defaults"]:
            m = self.model(name)
            if name in self.models and m.task == "binary" and m.positive_class is None:
                raise ValueError(f"models.{name}: task 'binary' needs 'positive_class'")
            where = f"models.{name}" if name in self.models else "defaults"
            fine = self.rollups.fine
            for w in m.windows:
                if w % fine:
                    raise ValueError(
                        f"{where}.windows: {format_duration(w)} is not a multiple of rollups.fine"
                        f" ({format_duration(fine)})"
                    )
            for slo in m.slos:
                if slo.period % fine:
                    raise ValueError(f"{where}.slos.{slo.name}: period is not a multiple of rollups.fine")
        return self

    def model(self, name: str) -> ResolvedModel:
        """Settings for one model: its own, then `defaults`, then built-ins."""
        own = self.models.get(name, ModelSettings())
        merged: dict[str, Any] = {"name": name}
        for field in ModelSettings.model_fields:
            for source in (own, self.defaults, DEFAULT_MODEL_SETTINGS):
                value = getattr(source, field)
                if value is not None:
                    merged[field] = value
                    break
            else:
                merged[field] = None
        if merged["positive_class"] is not None and own.task is None and self.defaults.task is None:
            merged["task"] = "binary"
        merged["bucket_seconds"] = self.rollups.fine
        merged["coarse_seconds"] = self.rollups.coarse
        merged["sketch_relative_accuracy"] = self.rollups.sketch_relative_accuracy
        return ResolvedModel(**merged)


# Environment variable -> (section, key). Lists are comma-separated.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "MODELMON_DATABASE_URL": ("database", "url"),
    "MODELMON_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers"),
    "MODELMON_KAFKA_GROUP_ID": ("kafka", "group_id"),
    "MODELMON_KAFKA_SECURITY_PROTOCOL": ("kafka.security", "security_protocol"),
    "MODELMON_KAFKA_SASL_MECHANISM": ("kafka.security", "sasl_mechanism"),
    "MODELMON_KAFKA_SASL_USERNAME": ("kafka.security", "sasl_plain_username"),
    "MODELMON_KAFKA_SASL_PASSWORD": ("kafka.security", "sasl_plain_password"),
    "MODELMON_KAFKA_SSL_CAFILE": ("kafka.security", "ssl_cafile"),
    "MODELMON_HTTP_HOST": ("server", "host"),
    "MODELMON_HTTP_PORT": ("server", "port"),
    "MODELMON_API_TOKENS": ("server", "api_tokens"),
    "MODELMON_METRICS_TOKENS": ("server", "metrics_tokens"),
    "MODELMON_RUNBOOK_BASE_URL": ("alerts", "runbook_base_url"),
    "MODELMON_API_BASE_URL": ("alerts", "api_base_url"),
}


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for var, (section, key) in ENV_OVERRIDES.items():
        if var not in environ:
            continue
        value: Any = environ[var]
        if key in ("api_tokens", "metrics_tokens"):
            value = [t.strip() for t in value.split(",") if t.strip()]
        node = raw
        for part in section.split("."):
            existing = node.get(part)
            node[part] = dict(existing) if isinstance(existing, dict) else {}
            node = node[part]
        node[key] = value
    return raw


def _describe(err: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against the configuration reference)"
    elif (
        "input" in err
        and err["type"] not in ("missing",)
        and not isinstance(err["input"], dict)
        and repr(err["input"]) not in msg
    ):
        msg = f"{msg} (got {err['input']!r})"
    return f"  {path}: {msg}"


def load_config(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Config:
    """Load and validate; with no path, `./modelmon.yaml` if present, else built-ins."""
    environ = dict(os.environ if environ is None else environ)
    source = "built-in defaults"
    raw: Any = {}
    if path is None and environ.get("MODELMON_CONFIG"):
        path = environ["MODELMON_CONFIG"]
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {source}: {exc.strerror}") from exc
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = _apply_env(raw, environ)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None
