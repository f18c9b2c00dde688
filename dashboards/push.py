"""Upload the dashboards to a running Grafana over its HTTP API (grafana-api).

The folder is found by uid, then by title, and created only when missing, so
pushing twice changes nothing but the dashboard versions; dashboards are
written with overwrite, keeping their stable uids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from grafana_api.grafana_api import GrafanaClientError, GrafanaException
from grafana_api.grafana_face import GrafanaFace


class PushError(RuntimeError):
    """A push that failed, worded for the person running the command."""


@dataclass(frozen=True)
class PushResult:
    uid: str
    title: str
    url: str
    version: int | None


def folder_uid(name: str) -> str:
    """A stable folder uid from its name ("ML Models" -> "ml-models")."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (slug or "modelmon")[:40]


def connect(grafana_url: str, token: str, timeout: float = 10.0) -> GrafanaFace:
    """A client for `grafana_url`; a token "user:password" means basic auth."""
    parts = urlsplit(grafana_url if "://" in grafana_url else f"http://{grafana_url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(f"invalid Grafana URL {grafana_url!r}: expected e.g. http://127.0.0.1:3000")
    prefix = parts.path.strip("/")
    auth: Any = tuple(token.split(":", 1)) if ":" in token else token
    return GrafanaFace(auth, host=parts.hostname, port=parts.port, protocol=parts.scheme,
                       url_path_prefix=f"{prefix}/" if prefix else "", timeout=timeout)


def _explain(exc: Exception, grafana_url: str, doing: str) -> PushError:
    if isinstance(exc, GrafanaException):
        status = exc.status_code
        if status == 401:
            return PushError(
                f"Grafana at {grafana_url} rejected the credentials (401 Unauthorized) while {doing}: "
                "check --token / MODELMON_GRAFANA_TOKEN (a service-account token, or user:password)")
        if status == 403:
            return PushError(
                f"Grafana at {grafana_url} refused {doing} (403 Forbidden): the token is valid but "
                "lacks permission; give its service account the Editor (or Admin) role")
        return PushError(f"Grafana at {grafana_url} failed while {doing}: {exc.message}")
    if isinstance(exc, requests.ConnectionError):
        return PushError(f"cannot connect to Grafana at {grafana_url} while {doing}: is it running and "
                         "is the URL right? ({})".format(exc.__class__.__name__))
    if isinstance(exc, requests.Timeout):
        return PushError(f"Grafana at {grafana_url} did not answer in time while {doing}")
    return PushError(f"unexpected answer from {grafana_url} while {doing} (is this a Grafana URL?): {exc}")


def _call(grafana_url: str, doing: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (GrafanaException, requests.RequestException, ValueError, TypeError, KeyError) as exc:
        raise _explain(exc, grafana_url, doing) from exc


def ensure_folder(api: GrafanaFace, grafana_url: str, title: str) -> dict[str, Any]:
    """The folder titled `title`: fetched by uid, else by title, else created."""
    uid = folder_uid(title)
    try:
        return api.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise _explain(exc, grafana_url, f"looking up folder {title!r}") from exc
    except (GrafanaException, requests.RequestException, ValueError, TypeError) as exc:
        raise _explain(exc, grafana_url, f"looking up folder {title!r}") from exc
    folders = _call(grafana_url, "listing folders", api.folder.get_all_folders)
    for folder in folders:
        if str(folder.get("title", "")).lower() == title.lower():
            return folder
    return _call(grafana_url, f"creating folder {title!r}", api.folder.create_folder, title, uid)


def push(grafana_url: str, token: str, dashboards: dict[str, dict[str, Any]],
         folder: str = "modelmon", timeout: float = 10.0) -> list[PushResult]:
    """Upload `dashboards` (name -> dashboard JSON) into `folder`, overwriting."""
    if not token:
        raise PushError("no Grafana token: pass --token or set MODELMON_GRAFANA_TOKEN")
    api = connect(grafana_url, token, timeout)
    target = ensure_folder(api, grafana_url, folder)
    results = []
    for _name, dash in sorted(dashboards.items()):
        body = {
            "dashboard": {**dash, "id": None},
            "folderUid": target.get("uid"),
            "folderId": target.get("id"),
            "overwrite": True,
            "message": "modelmon dashboards push",
        }
        reply = _call(grafana_url, f"uploading dashboard {dash.get('title')!r}",
                      api.dashboard.update_dashboard, body)
        results.append(PushResult(uid=str(reply.get("uid", dash.get("uid"))), title=str(dash.get("title")),
                                  url=str(reply.get("url", "")), version=reply.get("version")))
    return results
