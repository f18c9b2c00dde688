"""Configuration: validation messages name the key path and what was expected; env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmon.config import (
    ENV_OVERRIDES,
    ConfigError,
    format_duration,
    load_config,
    parse_duration,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "modelmon.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), environ=environ or {})
    return str(exc.value)


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg.database.url == "sqlite:///modelmon.db"
    assert cfg.kafka.predictions_topic == "modelmon.predictions"
    assert cfg.kafka.feedback_topic == "modelmon.feedback"
    assert cfg.ingest.batch_max_events >= 1 and cfg.ingest.batch_max_age > 0


def test_reads_modelmon_yaml_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "kafka: {group_id: from-file}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).kafka.group_id == "from-file"


def test_modelmon_config_variable_names_the_file(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("kafka: {group_id: g2}\n")
    assert load_config(environ={"MODELMON_CONFIG": str(other)}).kafka.group_id == "g2"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("database: {url: 5}\n", "database.url: Input should be a valid string (got 5)"),
        ("kafka: {bootstrap_server: x}\n", "kafka.bootstrap_server: unknown key"),
        ("ingest: {batch_max_events: 0}\n",
         "ingest.batch_max_events: Input should be greater than or equal to 1 (got 0)"),
        ("ingest: {batch_max_age: soon}\n",
         "ingest.batch_max_age: expected a duration like '30s', '5m', '1h', '28d', got 'soon'"),
        ("ingest: {status_interval: -5}\n", "ingest.status_interval: expected a positive duration"),
        ("ingest: {max_message_bytes: 10}\n", "ingest.max_message_bytes: Input should be greater than or equal to 256"),
        ("server: {port: 70000}\n", "server.port: Input should be less than or equal to 65535 (got 70000)"),
        ("models: {fraud: {slos: [{name: x, kind: latency, objective: 1.5, threshold: 1s}]}}\n",
         "models.fraud.slos.0.objective: Input should be less than 1 (got 1.5)"),
        ("models: {fraud: {slos: [{name: x, kind: latency, objective: 0.99}]}}\n",
         "models.fraud.slos.0: a latency SLO needs 'threshold'"),
        ("models: {fraud: {task: binary}}\n", "models.fraud: task 'binary' needs 'positive_class'"),
        ("models: {'bad name': {}}\n", "models: model name 'bad name' must match"),
        ("models: {fraud: {task: regression}}\n", "models.fraud.task: Input should be 'binary' or 'multiclass'"),
    ],
)
def test_errors_name_the_key_path_and_the_expectation(tmp_path: Path, yaml_text: str, expected: str) -> None:
    message = error_of(tmp_path, yaml_text)
    assert expected in message, message
    assert str(tmp_path / "modelmon.yaml") in message


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    message = error_of(tmp_path, "database: {url: 5}\ningest: {batch_max_events: 0}\n")
    assert "database.url" in message and "ingest.batch_max_events" in message


def test_the_rejected_value_is_shown_once(tmp_path: Path) -> None:
    assert error_of(tmp_path, "ingest: {batch_max_age: soon}\n").count("'soon'") == 1


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "missing.yaml", environ={})
    assert "is not valid YAML" in error_of(tmp_path, "kafka: [unclosed\n")
    assert "expected a mapping at the top level" in error_of(tmp_path, "- a\n- b\n")


def test_environment_overrides_urls_and_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "database: {url: 'sqlite:///file.db'}\nkafka: {security: {ssl_certfile: c.pem}}\n")
    cfg = load_config(path, environ={
        "MODELMON_DATABASE_URL": "postgresql://u:p@db/modelmon",
        "MODELMON_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
        "MODELMON_KAFKA_GROUP_ID": "g",
        "MODELMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MODELMON_KAFKA_SASL_MECHANISM": "PLAIN",
        "MODELMON_KAFKA_SASL_USERNAME": "svc",
        "MODELMON_KAFKA_SASL_PASSWORD": "s3cret",
        "MODELMON_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        "MODELMON_HTTP_PORT": "9999",
        "MODELMON_API_TOKENS": " a, b ,,c ",
    })
    assert cfg.database.url == "postgresql://u:p@db/modelmon"
    assert cfg.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert cfg.kafka.group_id == "g"
    assert cfg.kafka.security == {
        "ssl_certfile": "c.pem",  # file values kept beside the overridden ones
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.pem",
    }
    assert cfg.server.port == 9999
    assert cfg.server.api_tokens == ["a", "b", "c"]


def test_every_documented_override_reaches_its_key(tmp_path: Path) -> None:
    for var, (section, key) in ENV_OVERRIDES.items():
        value = "1234" if key == "port" else "x"
        cfg = load_config(write(tmp_path, ""), environ={var: value})
        node: object = cfg
        for part in section.split("."):
            node = getattr(node, part)
        got = node[key] if isinstance(node, dict) else getattr(node, key)
        expected = {"port": 1234, "api_tokens": ["x"], "metrics_tokens": ["x"]}.get(key, "x")
        assert got == expected, var


def test_a_bad_override_is_reported_with_its_key_path(tmp_path: Path) -> None:
    message = error_of(tmp_path, "", environ={"MODELMON_HTTP_PORT": "http"})
    assert "server.port" in message


def test_kafka_security_and_consumer_settings_pass_through(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, (
        "kafka:\n  security: {security_protocol: SSL, ssl_check_hostname: false}\n"
        "  consumer: {session_timeout_ms: 6000, fetch_max_wait_ms: 100}\n"
    )), environ={})
    assert cfg.kafka.security == {"security_protocol": "SSL", "ssl_check_hostname": False}
    assert cfg.kafka.consumer == {"session_timeout_ms": 6000, "fetch_max_wait_ms": 100}


def test_positive_class_and_classes_are_normalised_labels(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, (
        "models:\n  fraud: {positive_class: true, classes: [0, 1]}\n  churn: {positive_class: 1}\n"
    )), environ={})
    fraud = cfg.model("fraud")
    assert fraud.positive_class == "1" and fraud.classes == ["0", "1"]
    assert fraud.task == "binary"  # implied by positive_class
    assert cfg.model("churn").positive_class == "1"


def test_model_settings_fall_back_to_defaults_then_built_ins(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, (
        "defaults: {windows: [5m, 1h], min_samples: 50}\nmodels: {fraud: {min_samples: 10}}\n"
    )), environ={})
    fraud, other = cfg.model("fraud"), cfg.model("other")
    assert (fraud.min_samples, other.min_samples) == (10, 50)
    assert fraud.windows == [300.0, 3600.0] and fraud.window_names == ["5m", "1h"]
    assert other.slice_top_k == 20  # built-in


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300ms", 0.3), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("2w", 1209600), (45, 45)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5 minutes", "-1s", 0, True, None, "1y"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("seconds", [0.3, 1, 30, 300, 3600, 86400, 604800, 90])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
