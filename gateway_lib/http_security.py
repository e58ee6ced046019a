"""Who may talk to the HTTP gateway: Host and Origin checks, CORS headers, bearer tokens.

Pure decisions over request headers and the rules snapshot; no I/O. Tokens are known only
by their SHA-256 (`agents.<id>.token_sha256`), compared in constant time; neither a token
nor a hash is ever logged or put in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from .model import RulesConfig

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
CORS_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_ALLOWED_HEADERS = "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID"
CORS_EXPOSED_HEADERS = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"
CORS_MAX_AGE_S = 600
BEARER_CHALLENGE = 'Bearer realm="agent-mcp-gateway"'


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses; any other name is taken as public (fail closed)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name part of a Host header: 'example.com:8000' -> 'example.com', '[::1]:80' -> '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class OriginPolicy:
    """Which Host and Origin headers a request may carry (the spec's DNS-rebinding defence)."""

    bound_host: str
    cors_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def build(cls, bound_host: str, cors_origins: Iterable[str], allowed_hosts: Iterable[str]) -> "OriginPolicy":
        return cls(bound_host.strip("[]").lower(),
                   frozenset(o.strip().rstrip("/").lower() for o in cors_origins if o.strip()),
                   frozenset(h.strip().lower() for h in allowed_hosts if h.strip()))

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.bound_host)

    def host_allowed(self, host_header: str | None) -> bool:
        if not host_header:
            return False  # HTTP/1.1 requires Host; without it nothing can be checked
        name = _host_name(host_header)
        if name in self.allowed_hosts or name == self.bound_host or name == "localhost":
            return True
        # A loopback bind is reached by loopback names only, whatever they resolve to.
        return self.loopback and name in LOOPBACK_NAMES

    def origin_allowed(self, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser: nothing to rebind
        normal = origin.strip().rstrip("/").lower()
        if normal in self.cors_origins:
            return True
        if not self.loopback:
            return False
        parts = urlsplit(normal)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_NAMES

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """Headers that let a browser page at `origin` read the answer (only for allowed origins)."""
        if origin is None or not self.origin_allowed(origin):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS}

    def preflight_headers(self, origin: str) -> dict[str, str]:
        return {**self.cors_headers(origin),
                "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
                "Access-Control-Max-Age": str(CORS_MAX_AGE_S)}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer T` header; '' when the header is malformed."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


class TokenIndex:
    """sha256(token) -> agent, rebuilt when the rules snapshot changes (tokens hot-reload)."""

    def __init__(self) -> None:
        # (rules, owners) as one reference, so threads never pair one snapshot's rules
        # with another's hashes.
        self._built: tuple[RulesConfig | None, tuple[tuple[bytes, str], ...]] = (None, ())

    def _index(self, rules: RulesConfig) -> tuple[tuple[bytes, str], ...]:
        built_for, owners = self._built
        if rules is not built_for:  # snapshots are immutable: identity says "changed"
            owners = tuple((bytes.fromhex(digest), agent_id)
                           for agent_id, agent in rules.agents.items() for digest in agent.token_sha256)
            self._built = (rules, owners)
        return owners

    def any_tokens(self, rules: RulesConfig) -> bool:
        return bool(self._index(rules))

    def agent_for(self, rules: RulesConfig, token: str) -> str | None:
        """The agent holding `token`, or None. Every hash is compared, each in constant time."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for known, agent_id in self._index(rules):
            if hmac.compare_digest(known, digest):
                found = agent_id
        return found


def metrics_token_ok(expected: str | None, headers: Mapping[str, str]) -> bool:
    """The probes' own token (GATEWAY_METRICS_TOKEN), when one is set."""
    if not expected:
        return True
    given = bearer_token(headers.get("Authorization")) or ""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def token_instructions(agent_id: str) -> str | None:
    """A new token for `agent_id` and the rules line that grants it; None for a bad agent id."""
    from .policy import is_valid_agent_id

    if not is_valid_agent_id(agent_id):
        return None
    token = new_token()
    return (
        f"Token for agent {agent_id!r} (shown once; the gateway keeps only its hash):\n\n    {token}\n\n"
        f"Add its hash to agents.{agent_id} in the rules file (the list may hold several):\n\n"
        f'    "token_sha256": ["{hash_token(token)}"]\n\n'
        f"Clients send it as the header:  Authorization: Bearer <token>\n"
    )
