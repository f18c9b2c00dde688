"""confluent-kafka settings: kafka-python's names mapped to ones librdkafka itself accepts."""

from __future__ import annotations

from pathlib import Path

import confluent_kafka
import pytest

from modelmon.config import Config, ConfigError, load_config
from modelmon.ingest.consumer_confluent import CONFLUENT_NAMES, confluent_settings

# A value librdkafka takes for each kafka-python name the mapping knows (file paths aside).
SAMPLES = {
    "group_instance_id": "ingest-0", "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 20000,
    "fetch_max_bytes": 1 << 24, "fetch_min_bytes": 1, "fetch_max_wait_ms": 100,
    "max_partition_fetch_bytes": 1 << 20, "receive_message_max_bytes": 1 << 26,
    "request_timeout_ms": 30000, "retry_backoff_ms": 100, "reconnect_backoff_ms": 50,
    "reconnect_backoff_max_ms": 1000, "connections_max_idle_ms": 540000,
    "metadata_max_age_ms": 300000, "isolation_level": "read_committed", "check_crcs": True,
    "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
    "sasl_plain_username": "u", "sasl_plain_password": "p",
    "sasl_kerberos_service_name": "kafka",
}
FILES = {"ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_crlfile"}


def test_every_mapped_setting_is_one_librdkafka_accepts() -> None:
    assert set(SAMPLES) | FILES | {"bootstrap_servers", "group_id", "client_id"} == set(
        CONFLUENT_NAMES), "a mapped name without a sample value"
    cfg = Config.model_validate({"kafka": {
        "client": "confluent", "bootstrap_servers": "127.0.0.1:1,127.0.0.1:2",
        "consumer": {**SAMPLES, "max_poll_records": 5, "enable_auto_commit": True,
                     "statistics.interval.ms": 0}}})
    settings = confluent_settings(cfg)
    for name, value in SAMPLES.items():
        assert settings[CONFLUENT_NAMES[name]] == value, name
    assert settings["enable.auto.commit"] is False  # whatever kafka.consumer says
    assert settings["bootstrap.servers"] == "127.0.0.1:1,127.0.0.1:2"
    assert settings["statistics.interval.ms"] == 0  # librdkafka's own names pass through
    # librdkafka validates every property name and value here (it connects later).
    confluent_kafka.Consumer(settings).close()


def test_ssl_file_settings_map_to_locations(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    cfg = Config.model_validate({"kafka": {"client": "confluent", "security": {
        "ssl_cafile": str(ca), "ssl_check_hostname": False}}})
    settings = confluent_settings(cfg)
    assert settings["ssl.ca.location"] == str(ca)
    assert settings["ssl.endpoint.identification.algorithm"] == "none"


def test_a_setting_without_an_equivalent_is_one_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "modelmon.yaml"
    path.write_text("kafka:\n  client: confluent\n  consumer:\n    api_version: [2, 8]\n"
                    "    session_timeout_ms: 6000\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    lines = [line for line in str(err.value).splitlines() if "api_version" in line]
    assert len(lines) == 1 and "no librdkafka equivalent for api_version" in lines[0]
    # The same settings are fine for kafka-python, which takes them as they are.
    path.write_text(path.read_text().replace("client: confluent", "client: kafka-python"))
    assert load_config(path, environ={}).kafka.consumer["api_version"] == [2, 8]


@pytest.mark.parametrize("batch_max_bytes", [1024, 16384, 32 << 20, 128 << 20])
def test_librdkafka_takes_the_bounds_derived_from_any_batch_size(batch_max_bytes: int) -> None:
    """fetch.max.bytes follows ingest.batch_max_bytes; librdkafka's own checks must pass."""
    cfg = Config.model_validate({"kafka": {"client": "confluent"}, "ingest": {
        "batch_max_bytes": batch_max_bytes, "max_message_bytes": min(batch_max_bytes, 8192)}})
    settings = confluent_settings(cfg)
    assert settings["fetch.max.bytes"] == batch_max_bytes
    confluent_kafka.Consumer(settings).close()


def test_no_broker_is_an_error_within_the_bootstrap_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """librdkafka connects lazily: without the metadata request at construction a consumer with
    no broker would look connected (/readyz 200) and wait in silence. The service retries
    this error with backoff, as kafka-python's; librdkafka's lines are summarised meanwhile."""
    import socket
    import time

    from kafka.errors import KafkaError

    from modelmon.ingest.consumer_confluent import ConfluentConsumer
    from modelmon.ingest.kafka_logs import summarised_broker_logs

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = f"127.0.0.1:{port}"
    cfg = Config.model_validate({"kafka": {"bootstrap_servers": servers, "client": "confluent",
                                           "consumer": {"bootstrap_timeout_ms": 1500}}})
    started = time.monotonic()
    with summarised_broker_logs(servers), caplog.at_level("INFO"), pytest.raises(KafkaError, match="no Kafka broker"):
        ConfluentConsumer(cfg)
    assert 1.4 <= time.monotonic() - started < 10
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1 and servers in unreachable[0].getMessage(), caplog.text
    assert not [r for r in caplog.records if "Connection refused" in r.getMessage() and r not in unreachable]
