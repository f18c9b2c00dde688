"""/metrics behind `server.metrics_tokens`: bearer or basic auth; the probes stay open."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelmon.config import Config
from modelmon.runtime import Runtime

TOKEN = "scrape-s3cr3t"


def _get(url: str, authorization: str | None = None) -> tuple[int, bytes, list[str]]:
    req = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), []
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get_all("WWW-Authenticate") or []


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _runtime(tmp_path: Path, tokens: list[str]) -> Runtime:
    cfg = Config.model_validate({
        "database": {"url": f"sqlite:///{tmp_path}/modelmon.db"},
        "server": {"host": "127.0.0.1", "port": 0, "metrics_tokens": tokens},
        "monitors": {"enabled": False},
        "models": {"fraud": {"task": "binary", "positive_class": 1}},
    })
    return Runtime(cfg, with_ingest=False)


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _runtime(tmp_path_factory.mktemp("auth"), ["old-token", TOKEN]) as rt:
        yield rt.url


def test_a_scrape_without_credentials_is_refused(protected: str) -> None:
    status, body, challenges = _get(protected + "/metrics")
    assert status == 401
    assert b"modelmon_" not in body
    assert 'Bearer realm="modelmon"' in challenges and 'Basic realm="modelmon"' in challenges


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", _basic("prometheus", TOKEN), _basic("", TOKEN)])
def test_a_bearer_token_or_basic_auth_password_is_accepted(protected: str, authorization: str) -> None:
    status, body, _ = _get(protected + "/metrics", authorization)
    assert status == 200
    assert b"modelmon_store_up 1.0" in body


@pytest.mark.parametrize("authorization", [
    "Bearer wrong", f"Bearer {TOKEN}x", _basic(TOKEN, "wrong"), _basic("prometheus", ""),
    "Basic !!notbase64", f"Token {TOKEN}", "Bearer ",
])
def test_wrong_credentials_are_refused(protected: str, authorization: str) -> None:
    assert _get(protected + "/metrics", authorization)[0] == 401


def test_the_probes_stay_open(protected: str) -> None:
    assert _get(protected + "/healthz")[0] == 200
    assert _get(protected + "/readyz")[0] == 200


def test_without_tokens_metrics_is_open(tmp_path: Path) -> None:
    with _runtime(tmp_path, []) as rt:
        status, body, _ = _get(rt.url + "/metrics")
    assert status == 200 and b"modelmon_store_up 1.0" in body


@pytest.mark.integration
@pytest.mark.parametrize("scrape_auth", [
    {"authorization": {"credentials": TOKEN}},
    {"basic_auth": {"username": "prometheus", "password": TOKEN}},
], ids=["bearer", "basic"])
def test_prometheus_scrapes_with_its_scrape_config_credentials(
    protected: str, tmp_path: Path, scrape_auth: dict
) -> None:
    import servers
    from promstack import Prometheus

    target = protected.removeprefix("http://")
    prom = Prometheus(tmp_path / "prometheus", [target], [], scrape_auth=scrape_auth)
    try:
        assert servers.wait_until(prom.targets_up, 30), prom.query("up")
        assert [r["value"] for r in prom.query('up{job="modelmon"}')] == [1.0]
        assert servers.wait_until(lambda: bool(prom.query("modelmon_store_up == 1")), 30)
    finally:
        prom.stop()
