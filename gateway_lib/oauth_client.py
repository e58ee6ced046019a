"""The SDK's client auth (`mcp.client.auth`) set up for one server entry, inside its event loop.

The SDK does the protocol: discovery, registration (or CIMD), PKCE, state and iss checks,
RFC 8707 `resource`, token exchange, refresh, client credentials and private_key_jwt. This
module adds only what a gateway of many short sessions and several processes needs:

- `RecordStorage`, the SDK's TokenStorage on a TokenStore record; the record also keeps the
  discovered metadata and the absolute expiry, which `_initialize` hands back to a fresh
  provider, so a per-call session neither rediscovers nor misses that its token expired;
- one sign-in and one refresh at a time per record (the record's flock, across threads and
  processes): a flow that finds it needs either takes the lock, reads the record again,
  and uses what another holder stored meanwhile instead of doing it twice;
- the browser sign-in through oauth_signin (a one-shot callback listener, `webbrowser`);
- `authServerMetadataUrl` (discovery requests go there) and configured `scopes`.
"""

from __future__ import annotations

import logging
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncGenerator, Callable
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from mcp.shared.exceptions import MCPDeprecationWarning

from .errors import ServerUnavailable
from .model import CLIENT_CREDENTIALS, OAuthSettings, ServerSpec
from .oauth_signin import CALLBACK_PATH, LOOPBACK, CallbackListener, SignInFailed, open_browser, state_of
from .oauth_store import LOCK_POLL_S, TokenStore, key_of, uses_oauth

logger = logging.getLogger(__name__)

CLIENT_NAME = "agent-mcp-gateway"
SIGN_IN_TIMEOUT_S = 300.0  # the listener's own bound; a call's deadline is usually shorter
_DISCOVERY_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def _without_traceback(record: logging.LogRecord) -> bool:
    # The SDK logs "OAuth flow error" with the exception, whose text may quote a token
    # endpoint's answer; keep the line, drop the traceback.
    record.exc_info = None
    record.exc_text = None
    return True


logging.getLogger("mcp.client.auth").addFilter(_without_traceback)
logging.getLogger("mcp.client.auth.oauth2").addFilter(_without_traceback)


@dataclass
class SignInWatch:
    """What one session's provider tells its owner about a sign-in, for AUTH_REQUIRED."""

    url: str | None = None  # the authorization URL, once a browser sign-in has started
    waiting: bool = False  # waiting for the sign-in or refresh of another call


class OAuthSupport:
    """One per gateway process: the store, and the sign-ins in progress (for messages)."""

    def __init__(self, store: TokenStore, sign_in_timeout_s: float = SIGN_IN_TIMEOUT_S):
        self.store = store
        self.sign_in_timeout_s = sign_in_timeout_s
        self._pending: dict[str, str] = {}  # record key -> authorization URL being signed in

    def auth_for(self, spec: ServerSpec, watch: SignInWatch) -> httpx2.Auth | None:
        """A fresh SDK provider for one session of `spec`; None when OAuth does not apply."""
        if not uses_oauth(spec):
            return None
        binding = _Binding(self, spec, key_of(spec), watch)
        return binding.provider()

    def pending_url(self, spec: ServerSpec) -> str | None:
        return self._pending.get(key_of(spec))

    def status(self, spec: ServerSpec) -> dict[str, Any] | None:
        """Token presence and expiry of `spec` (never tokens); None when OAuth does not apply."""
        return self.store.summary(key_of(spec)) if uses_oauth(spec) else None


class RecordStorage:
    """The SDK's TokenStorage, on one TokenStore record. A configured client wins over a stored one."""

    def __init__(self, store: TokenStore, key: str, fixed_client: OAuthClientInformationFull | None = None):
        self._store = store
        self._key = key
        self._fixed_client = fixed_client

    def record(self) -> dict[str, Any]:
        return self._store.read(self._key)

    async def get_tokens(self) -> OAuthToken | None:
        tokens = self.record().get("tokens")
        return OAuthToken.model_validate(tokens) if tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        expires_at = time.time() + tokens.expires_in if tokens.expires_in is not None else None
        self._store.update(self._key, tokens=tokens.model_dump(mode="json", exclude_none=True),
                           expires_at=expires_at if expires_at is not None else None)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        if self._fixed_client is not None:
            return self._fixed_client
        client = self.record().get("client_info")
        return OAuthClientInformationFull.model_validate(client) if client else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        if self._fixed_client is None:
            self._store.update(self._key, client_info=client_info.model_dump(mode="json", exclude_none=True))

    def forget_tokens(self) -> None:
        self._store.update(self._key, tokens=None, expires_at=None)

    def remember_metadata(self, context: Any) -> None:
        metadata = {
            "protected_resource": _dump(context.protected_resource_metadata),
            "authorization_server": _dump(context.oauth_metadata),
            "auth_server_url": context.auth_server_url,
        }
        if self.record().get("metadata") != metadata:
            self._store.update(self._key, metadata=metadata)


def _dump(model: Any) -> dict | None:
    return model.model_dump(mode="json", exclude_none=True) if model is not None else None


class _SharedFlow:
    """Mixed in before an SDK provider class: the gateway's additions to its `_auth_flow`."""

    _binding: _Binding
    context: Any
    _initialized: bool

    async def _initialize(self) -> None:
        await super()._initialize()  # type: ignore[misc]
        record = self._binding.storage.record()
        self.context.token_expiry_time = record.get("expires_at") if self.context.current_tokens else None
        metadata = record.get("metadata") or {}
        if metadata.get("authorization_server"):
            self.context.oauth_metadata = OAuthMetadata.model_validate(metadata["authorization_server"])
        if metadata.get("protected_resource"):
            self.context.protected_resource_metadata = ProtectedResourceMetadata.model_validate(
                metadata["protected_resource"])
        self.context.auth_server_url = metadata.get("auth_server_url") or self.context.auth_server_url

    async def _perform_authorization(self) -> httpx2.Request:
        if self._binding.settings.scopes:  # configured scopes win over the advertised ones
            self.context.client_metadata.scope = self._binding.settings.scopes
        return await super()._perform_authorization()  # type: ignore[misc]

    def _refresh_due(self) -> bool:
        return not self.context.is_token_valid() and self.context.can_refresh_token()

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        binding = self._binding
        if not self._initialized:
            await self._initialize()
        lock = None
        inner = None
        try:
            if self._refresh_due():
                lock = await binding.acquire()
                await self._initialize()  # another holder may have refreshed meanwhile
            inner = super()._auth_flow(request)  # type: ignore[misc]
            outgoing = await inner.__anext__()
            while True:
                if outgoing is request and lock is not None:
                    if self.context.is_token_valid():
                        binding.storage.remember_metadata(self.context)
                        lock.release()
                        lock = None
                    elif self.context.current_tokens is None:
                        binding.storage.forget_tokens()  # a refused refresh token is of no more use
                response = yield binding.redirected(outgoing)
                if outgoing is request and _needs_authorization(response) and lock is None:
                    lock = await binding.acquire()
                    if await self._stored_elsewhere(request):
                        await inner.aclose()
                        lock.release()
                        lock = None
                        self._add_auth_header(request)  # type: ignore[attr-defined]
                        yield request
                        return
                outgoing = await inner.asend(response)
        except StopAsyncIteration:
            pass
        finally:
            if inner is not None:
                await inner.aclose()
            binding.close_listener()
            if lock is not None:
                if self.context.is_token_valid():
                    binding.storage.remember_metadata(self.context)
                lock.release()

    async def _stored_elsewhere(self, request: httpx2.Request) -> bool:
        """After waiting for the lock: did another holder store tokens we have not tried?"""
        sent = request.headers.get("Authorization")
        await self._initialize()
        tokens = self.context.current_tokens
        return bool(self.context.is_token_valid() and tokens and f"Bearer {tokens.access_token}" != sent)


def _needs_authorization(response: httpx2.Response) -> bool:
    if response.status_code == 401:
        return True
    return response.status_code == 403 and "insufficient_scope" in response.headers.get("WWW-Authenticate", "")


class _AuthorizationCodeProvider(_SharedFlow, OAuthClientProvider):
    pass


class _ClientSecretProvider(_SharedFlow, ClientCredentialsOAuthProvider):
    pass


class _PrivateKeyProvider(_SharedFlow, PrivateKeyJWTOAuthProvider):
    pass


@dataclass
class _Binding:
    """One provider's link to the gateway: its record, its lock, its sign-in."""

    support: OAuthSupport
    spec: ServerSpec
    key: str
    watch: SignInWatch
    storage: RecordStorage = field(init=False)
    _listener: CallbackListener | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.settings = self.spec.oauth or OAuthSettings()

    # --- the provider ---------------------------------------------------------------------

    def provider(self) -> OAuthClientProvider:
        settings, url = self.settings, self.spec.url or ""
        record = self.support.store.read(self.key)
        pinned_issuer = ((record.get("metadata") or {}).get("authorization_server") or {}).get("issuer")
        if settings.grant == CLIENT_CREDENTIALS:
            self.storage = RecordStorage(self.support.store, self.key)
            with warnings.catch_warnings():
                # No issuer is configured on the first run; after it, the stored one is pinned.
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                if settings.private_key_file:
                    signer = SignedJWTParameters(
                        issuer=settings.client_id, subject=settings.client_id,
                        signing_key=self._private_key(), signing_algorithm=settings.signing_algorithm or "RS256",
                    )
                    provider: OAuthClientProvider = _PrivateKeyProvider(
                        url, self.storage, settings.client_id, signer.create_assertion_provider(),
                        scope=settings.scopes, issuer=pinned_issuer)
                else:
                    provider = _ClientSecretProvider(url, self.storage, settings.client_id, settings.client_secret,
                                                     scope=settings.scopes, issuer=pinned_issuer)
        else:
            redirect_uri = self._redirect_uri(record)
            cimd = settings.client_id if (settings.client_id or "").startswith("https://") else None
            fixed = None
            if settings.client_id and not cimd:
                fixed = OAuthClientInformationFull(
                    client_id=settings.client_id, client_secret=settings.client_secret,
                    redirect_uris=[redirect_uri], grant_types=["authorization_code", "refresh_token"],
                    response_types=["code"],
                    token_endpoint_auth_method="client_secret_basic" if settings.client_secret else "none",
                )
            self.storage = RecordStorage(self.support.store, self.key, fixed)
            metadata = OAuthClientMetadata(
                client_name=CLIENT_NAME, redirect_uris=[redirect_uri],
                grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                token_endpoint_auth_method="none", scope=settings.scopes,
            )
            provider = _AuthorizationCodeProvider(url, metadata, self.storage, self.redirect, self.callback,
                                                  client_metadata_url=cimd)
        provider._binding = self  # type: ignore[attr-defined]
        return provider

    def _private_key(self) -> str:
        path = self.settings.private_key_file or ""
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ServerUnavailable(f"Server {self.spec.name!r}: cannot read its privateKeyFile {path!r} ({reason})") from None

    def _redirect_uri(self, record: dict[str, Any]) -> str:
        """callbackPort; else the port the stored registration was made with; else a free one."""
        port = self.settings.callback_port
        if port is None:
            for uri in (record.get("client_info") or {}).get("redirect_uris") or ():
                parts = urlsplit(uri)
                if parts.hostname == LOOPBACK and parts.port:
                    port = parts.port
                    break
        if port is None:
            with socket.socket() as probe:
                probe.bind((LOOPBACK, 0))
                port = probe.getsockname()[1]
        return f"http://{LOOPBACK}:{port}{CALLBACK_PATH}"

    # --- the lock shared with other threads and processes ---------------------------------

    async def acquire(self) -> Any:
        lock = self.support.store.lock(self.key)
        if not lock.try_acquire():
            self.watch.waiting = True
            try:
                while not lock.try_acquire():
                    await anyio.sleep(LOCK_POLL_S)  # cancelled at the call's deadline
            finally:
                self.watch.waiting = False
        return lock

    # --- requests ---------------------------------------------------------------------------

    def redirected(self, request: httpx2.Request) -> httpx2.Request:
        """`authServerMetadataUrl`: the SDK's metadata discovery requests go there instead."""
        configured = self.settings.auth_server_metadata_url
        if configured and request.method == "GET" and request.url.path.startswith(_DISCOVERY_PATHS):
            return httpx2.Request("GET", configured, headers=request.headers)
        return request

    # --- the browser sign-in ----------------------------------------------------------------

    async def redirect(self, authorization_url: str) -> None:
        state = state_of(authorization_url)
        if not state:
            raise SignInFailed("the authorization URL carries no state")
        redirect_uri = (parse_qs(urlsplit(authorization_url).query).get("redirect_uri") or [""])[0]
        port = urlsplit(redirect_uri).port or 0
        self._listener = CallbackListener(port, state, self.support.sign_in_timeout_s).start()
        self.watch.url = authorization_url
        self.support._pending[self.key] = authorization_url
        logger.warning("Server %r needs a sign-in: opening a browser at %s (or run 'gateway.py login %s')",
                       self.spec.name, authorization_url, self.spec.name)
        listener = self._listener
        open_browser(authorization_url, on_no_browser=lambda: listener.fail("no browser could be opened"))

    async def callback(self) -> AuthorizationCodeResult:
        import asyncio

        listener = self._listener
        if listener is None:
            raise SignInFailed("the sign-in did not start")
        try:
            result = await asyncio.wrap_future(listener.result)
        finally:
            self.close_listener()
        if result.error:
            raise SignInFailed(f"the authorization server refused the sign-in ({result.error})")
        return AuthorizationCodeResult(code=result.code or "", state=result.state, iss=result.iss)

    def close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            if self.support._pending.get(self.key) == self.watch.url:
                self.support._pending.pop(self.key, None)
