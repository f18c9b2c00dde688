"""Token authentication: bearer tokens for the /v1 API, bearer or basic auth for /metrics.

Tokens are hashed before comparison so that `hmac.compare_digest` sees equal
lengths (it leaks length otherwise), and every configured token is compared on
every request, so the time taken does not depend on which token matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging

from modelmon.http import HttpError, Request

log = logging.getLogger(__name__)

DISABLED_MESSAGE = (
    "the /v1 API is disabled: no API tokens are configured "
    "(set server.api_tokens in the configuration or MODELMON_API_TOKENS)"
)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class _Tokens:
    """The configured tokens, compared in constant time against every one of them."""

    def __init__(self, tokens: list[str]) -> None:
        self._digests = [_digest(t.encode("utf-8")) for t in tokens if t]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, given: bytes) -> bool:
        digest = _digest(given)
        ok = False
        for expected in self._digests:
            ok |= hmac.compare_digest(digest, expected)
        return ok


def _credentials(req: Request) -> tuple[str, bytes]:
    """(lower-case scheme, credentials as bytes) of the Authorization header."""
    scheme, _, credentials = req.headers.get("authorization", "").strip().partition(" ")
    # WSGI hands header values over as Latin-1 text; this restores the bytes.
    return scheme.lower(), credentials.strip().encode("latin-1", "replace")


class TokenAuth:
    """Checks `Authorization: Bearer <token>` against the configured tokens.

    With no tokens configured every request is refused (403): an API that
    writes labels and shows model inputs must not be open by accident.
    """

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = _Tokens(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, req: Request) -> None:
        """Raise HttpError 401/403 unless the request carries a valid token."""
        if not self._tokens:
            raise HttpError(403, DISABLED_MESSAGE)
        scheme, credentials = _credentials(req)
        if scheme != "bearer" or not credentials:
            raise HttpError(401, "missing bearer token (Authorization: Bearer <token>)")
        if not self._tokens.match(credentials):
            raise HttpError(401, "invalid bearer token")


class ScrapeAuth:
    """Checks a scrape of /metrics: `Authorization: Bearer <token>`, or HTTP basic
    auth whose password is a token (any user name), the two ways Prometheus'
    scrape config can authenticate (`authorization`, `basic_auth`).

    With no tokens configured /metrics is open (`enabled` is False): it shows
    aggregates, and most deployments keep it on the Prometheus network.
    """

    CHALLENGES = (("WWW-Authenticate", 'Bearer realm="modelmon"'), ("WWW-Authenticate", 'Basic realm="modelmon"'))

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = _Tokens(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def allows(self, req: Request) -> bool:
        if not self._tokens:
            return True
        scheme, credentials = _credentials(req)
        if scheme == "bearer" and credentials:
            return self._tokens.match(credentials)
        if scheme == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            _user, sep, password = decoded.partition(b":")
            return bool(sep and password) and self._tokens.match(password)
        return False
