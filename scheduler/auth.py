"""Bearer-token checks for the REST API."""

from __future__ import annotations

import hmac


def bearer_token(header: str | None) -> str | None:
    """The token in an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def token_allowed(presented: str | None, tokens: frozenset[str]) -> bool:
    """Constant-time per token; every token is compared so timing does not reveal which matched."""
    if presented is None:
        return False
    given = presented.encode()
    ok = False
    for token in tokens:
        if hmac.compare_digest(given, token.encode()):
            ok = True
    return ok
