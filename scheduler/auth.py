"""Bearer tokens of the REST API: who presents a token (its name) and what it may do (its role).

The API tokens file has one token per line, either `NAME ROLE TOKEN` or a bare `TOKEN` (the
format before roles; such a token is an admin, named by a fingerprint of it). Roles, each
allowing what the one before it does:
  viewer    reads only
  operator  also runs, pauses, resumes and cancels
  admin     everything (also any call the API names as admin-only)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scheduler.config import ConfigError, check_token_length, token_file_lines

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # in the order of what they allow
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Principal:
    """Who presented a token: its name (never the token itself) and its role."""

    name: str
    role: str

    def may(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def fingerprint(token: str) -> str:
    """The name of a token that has none (a line of the old format): a short hash of it, the
    same at every start, from which the token cannot be recovered."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


class Tokens:
    """The API's tokens with who each one is."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._entries = [(token.encode(), who) for token, who in entries]

    @classmethod
    def of(cls, tokens: Tokens | Iterable[str]) -> Tokens:
        """Tokens as they are, or bare tokens (all admins, as before roles)."""
        if isinstance(tokens, Tokens):
            return tokens
        return cls((t, Principal(fingerprint(t), ADMIN)) for t in sorted(tokens))

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, presented: str | None) -> Principal | None:
        """Constant-time per token; every token is compared so that the time taken does not
        reveal which one matched."""
        if presented is None:
            return None
        given = presented.encode()
        found = None
        for token, who in self._entries:
            if hmac.compare_digest(given, token):
                found = who
        return found


def parse_token_line(path: str | Path, number: int, line: str) -> tuple[str, Principal]:
    """One line of an API tokens file: `NAME ROLE TOKEN`, or a bare `TOKEN` (an admin)."""
    fields = line.split()
    if len(fields) == 1:
        token = check_token_length(path, number, fields[0])
        return token, Principal(fingerprint(token), ADMIN)
    if len(fields) != 3:
        raise ConfigError(path, number, "token", f"expected NAME ROLE TOKEN or a bare TOKEN, "
                          f"got {len(fields)} fields")
    name, role, token = fields
    if not _NAME.fullmatch(name):
        raise ConfigError(path, number, "name", f"{name[:64]!r}: letters, digits and . _ @ - "
                          "only, at most 64, starting with a letter or digit")
    if role not in ROLES:
        raise ConfigError(path, number, "role", f"{role[:20]!r}: must be one of "
                          f"{', '.join(ROLES)}")
    return check_token_length(path, number, token), Principal(name, role)


def read_api_tokens(path: str | Path) -> Tokens:
    """The API tokens file, every line checked; a name or a token given twice is refused."""
    entries: list[tuple[str, Principal]] = []
    names: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for number, line in token_file_lines(path):
        token, who = parse_token_line(path, number, line)
        if token in tokens:
            raise ConfigError(path, number, "token", f"the same token as on line {tokens[token]}")
        if who.name in names:
            raise ConfigError(path, number, "name", f"{who.name!r} is already the name of "
                              f"the token on line {names[who.name]}")
        tokens[token], names[who.name] = number, number
        entries.append((token, who))
    return Tokens(entries)


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
    """Whether a token is one of `tokens` (constant-time per token, see Tokens.find)."""
    return Tokens.of(tokens).find(presented) is not None
