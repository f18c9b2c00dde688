"""Bearer-token authentication for the /v1 API.

Tokens are hashed before comparison so that `hmac.compare_digest` sees equal
lengths (it leaks length otherwise), and every configured token is compared on
every request, so the time taken does not depend on which token matched.
"""

from __future__ import annotations

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


class TokenAuth:
    """Checks `Authorization: Bearer <token>` against the configured tokens.

    With no tokens configured every request is refused (403): an API that
    writes labels and shows model inputs must not be open by accident.
    """

    def __init__(self, tokens: list[str]) -> None:
        self._digests = [_digest(t.encode("utf-8")) for t in tokens if t]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, req: Request) -> None:
        """Raise HttpError 401/403 unless the request carries a valid token."""
        if not self._digests:
            raise HttpError(403, DISABLED_MESSAGE)
        header = req.headers.get("authorization", "")
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise HttpError(401, "missing bearer token (Authorization: Bearer <token>)")
        # WSGI hands header values over as Latin-1 text; this restores the bytes.
        given = _digest(credentials.strip().encode("latin-1", "replace"))
        ok = False
        for expected in self._digests:
            ok |= hmac.compare_digest(given, expected)
        if not ok:
            raise HttpError(401, "invalid bearer token")
