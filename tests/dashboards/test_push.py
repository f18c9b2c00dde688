"""`modelmon dashboards push` against a fake Grafana on 127.0.0.1 that records requests.

No Grafana can run here; the fake implements the few endpoints push uses with
Grafana's status codes and reply shapes, and keeps what it was sent.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelmon.cli import main
from modelmon.dashboards.generate import build_all
from modelmon.dashboards.push import PushError, folder_uid, push

TOKEN = "glsa_test_token"


class FakeGrafana:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.accept = {f"Bearer {TOKEN}", "Basic " + base64.b64encode(b"admin:secret").decode()}
        self.forbid_dashboards = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append({"method": self.command, "path": self.path, "body": body,
                                      "auth": self.headers.get("Authorization")})
                if self.headers.get("Authorization") not in fake.accept:
                    return self._reply(401, {"message": "invalid API key"})
                status, reply = fake.route(self.command, self.path, body)
                self._reply(status, reply)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            return (200, self.folders[uid]) if uid in self.folders else (404, {"message": "folder not found"})
        if method == "GET" and path == "/api/folders":
            return 200, list(self.folders.values())
        if method == "POST" and path == "/api/folders":
            if any(f["title"] == body["title"] for f in self.folders.values()):
                return 409, {"message": "a folder with that name already exists"}
            folder = {"id": len(self.folders) + 1, "uid": body.get("uid", "generated"), "title": body["title"]}
            self.folders[folder["uid"]] = folder
            return 200, folder
        if method == "POST" and path == "/api/dashboards/db":
            if self.forbid_dashboards:
                return 403, {"message": "Access denied"}
            dash = body["dashboard"]
            old = self.dashboards.get(dash["uid"])
            if old and not body.get("overwrite"):
                return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
            version = (old["version"] + 1) if old else 1
            self.dashboards[dash["uid"]] = {"version": version, "folderUid": body.get("folderUid"), "dashboard": dash}
            return 200, {"id": 1, "uid": dash["uid"], "url": f"/d/{dash['uid']}/x", "status": "success",
                         "version": version}
        return 404, {"message": "not found"}

    def __enter__(self) -> FakeGrafana:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana() as fake:
        yield fake


def test_push_creates_the_folder_once_and_overwrites_dashboards(grafana: FakeGrafana,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = ["dashboards", "push", "--grafana-url", grafana.url, "--token", TOKEN, "--folder", "ML Models"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert set(grafana.folders) == {"ml-models"} and grafana.folders["ml-models"]["title"] == "ML Models"
    expected = {d["uid"] for d in build_all().values()}
    assert set(grafana.dashboards) == expected
    for uid in expected:
        assert uid in out
    posts = [r for r in grafana.requests if r["path"] == "/api/dashboards/db"]
    assert len(posts) == 3
    for r in posts:
        assert r["auth"] == f"Bearer {TOKEN}"
        assert r["body"]["overwrite"] is True and r["body"]["folderUid"] == "ml-models"
        assert r["body"]["dashboard"]["id"] is None
    assert main(args) == 0  # again: the folder is reused, the dashboards get a new version
    assert sum(r["path"] == "/api/folders" and r["method"] == "POST" for r in grafana.requests) == 1
    assert all(d["version"] == 2 for d in grafana.dashboards.values())


def test_push_finds_an_existing_folder_by_title(grafana: FakeGrafana) -> None:
    grafana.folders["abc123"] = {"id": 7, "uid": "abc123", "title": "modelmon"}
    results = push(grafana.url, TOKEN, build_all(), folder="modelmon")
    assert len(results) == 3
    assert {d["folderUid"] for d in grafana.dashboards.values()} == {"abc123"}
    assert not any(r["method"] == "POST" and r["path"] == "/api/folders" for r in grafana.requests)


def test_env_vars_and_basic_auth(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELMON_GRAFANA_URL", grafana.url)
    monkeypatch.setenv("MODELMON_GRAFANA_TOKEN", "admin:secret")
    assert main(["dashboards", "push"]) == 0
    assert grafana.requests[0]["auth"].startswith("Basic ")
    assert len(grafana.dashboards) == 3


def test_bad_token_is_a_clear_401_message(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "push", "--grafana-url", grafana.url, "--token", "wrong"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "MODELMON_GRAFANA_TOKEN" in err
    assert grafana.dashboards == {}


def test_forbidden_is_a_clear_403_message(grafana: FakeGrafana) -> None:
    grafana.forbid_dashboards = True
    with pytest.raises(PushError, match=r"403 Forbidden.*Editor"):
        push(grafana.url, TOKEN, build_all())


def test_connection_refused_is_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["dashboards", "push", "--grafana-url", f"http://127.0.0.1:{port}", "--token", TOKEN,
                 "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect to Grafana" in err and str(port) in err


def test_missing_url_or_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MODELMON_GRAFANA_URL", raising=False)
    monkeypatch.delenv("MODELMON_GRAFANA_TOKEN", raising=False)
    assert main(["dashboards", "push", "--token", TOKEN]) == 2
    assert "MODELMON_GRAFANA_URL" in capsys.readouterr().err
    assert main(["dashboards", "push", "--grafana-url", "http://127.0.0.1:9"]) == 2
    assert "MODELMON_GRAFANA_TOKEN" in capsys.readouterr().err


def test_url_with_a_path_prefix(grafana: FakeGrafana) -> None:
    with pytest.raises(PushError, match="404"):
        push(grafana.url + "/grafana", TOKEN, build_all())  # the fake serves no /grafana prefix
    assert grafana.requests[0]["path"] == "/grafana/api/folders/modelmon"


def test_folder_uid() -> None:
    assert folder_uid("ML Models / prod") == "ml-models-prod"
    assert folder_uid("!!!") == "modelmon"
