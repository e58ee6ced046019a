"""The SDK's OAuth client providers on the gateway's token store (the SDK side of `oauth.py`).

Part of the SDK boundary with `sdk.py` (mcp, httpx2 and pydantic are imported here too).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..errors import ServerUnavailable
from ..model import CLIENT_CREDENTIALS
from .oauth import SessionAuth

# The SDK does the protocol. The gateway adds, by subclassing (`_SharedFlow` mixed in before
# each SDK provider): a TokenStorage on a TokenStore record, which also keeps the discovered
# metadata and the absolute expiry, handed back to every fresh provider (`_initialize`), so a
# per-call session neither rediscovers nor misses an expiry; the record's lock around a refresh
# and around the handling of a 401, re-reading the record once it holds it, so a sign-in or
# refresh another call or gateway finished meanwhile is used instead of repeated; configured
# `scopes`; and `authServerMetadataUrl`, where the SDK's metadata discovery requests go.

_DISCOVERY_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
CLIENT_NAME = "agent-mcp-gateway"


def oauth_provider(auth: SessionAuth | None) -> Any:
    """A fresh SDK auth provider for one session; None without OAuth."""
    if auth is None or not auth.enabled:
        return None
    import warnings

    from mcp.client.auth.extensions.client_credentials import SignedJWTParameters
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata
    from mcp.shared.exceptions import MCPDeprecationWarning

    classes = _provider_classes()
    settings, url = auth.settings, auth.spec.url or ""
    storage = classes.storage(auth)
    record = storage.record()
    if settings.grant == CLIENT_CREDENTIALS:
        # No issuer is configured on a first run; after it, the one stored is pinned.
        pinned = ((record.get("metadata") or {}).get("authorization_server") or {}).get("issuer")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            if settings.private_key_file:
                signer = SignedJWTParameters(issuer=settings.client_id, subject=settings.client_id,
                                             signing_key=_private_key(auth),
                                             signing_algorithm=settings.signing_algorithm or "RS256")
                provider = classes.private_key(url, storage, settings.client_id, signer.create_assertion_provider(),
                                               scope=settings.scopes, issuer=pinned)
            else:
                provider = classes.client_secret(url, storage, settings.client_id, settings.client_secret,
                                                 scope=settings.scopes, issuer=pinned)
    else:
        redirect_uri = auth.redirect_uri((record.get("client_info") or {}).get("redirect_uris"))
        cimd = settings.client_id if (settings.client_id or "").startswith("https://") else None
        if settings.client_id and not cimd:
            storage.fixed_client = OAuthClientInformationFull(
                client_id=settings.client_id, client_secret=settings.client_secret, redirect_uris=[redirect_uri],
                grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                token_endpoint_auth_method="client_secret_basic" if settings.client_secret else "none",
            )
        metadata = OAuthClientMetadata(
            client_name=CLIENT_NAME, redirect_uris=[redirect_uri], grant_types=["authorization_code", "refresh_token"],
            response_types=["code"], token_endpoint_auth_method="none", scope=settings.scopes,
        )

        async def callback() -> Any:
            from mcp.shared.auth import AuthorizationCodeResult

            result = await auth.wait_for_callback()
            return AuthorizationCodeResult(code=result.code or "", state=result.state, iss=result.iss)

        provider = classes.authorization_code(url, metadata, storage, auth.open_sign_in, callback,
                                              client_metadata_url=cimd)
    provider.gateway_auth = auth
    provider.gateway_storage = storage
    return provider


def _private_key(auth: SessionAuth) -> str:
    from pathlib import Path

    path = auth.settings.private_key_file or ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ServerUnavailable(f"Server {auth.spec.name!r}: cannot read its privateKeyFile {path!r} ({reason})") from None


@dataclass(frozen=True)
class _ProviderClasses:
    storage: type
    authorization_code: type
    client_secret: type
    private_key: type


@functools.cache
def _provider_classes() -> _ProviderClasses:
    """The SDK provider classes with the gateway's additions; built once, on first use."""
    import logging
    import time

    import httpx2
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider, PrivateKeyJWTOAuthProvider
    from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata

    def without_traceback(record: logging.LogRecord) -> bool:
        # The SDK logs "OAuth flow error" with the exception, whose text may quote a token
        # endpoint's answer: keep the line, drop the traceback.
        record.exc_info = record.exc_text = None
        return True

    logging.getLogger("mcp.client.auth.oauth2").addFilter(without_traceback)

    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", exclude_none=True) if model is not None else None

    class RecordStorage:
        """The SDK's TokenStorage on one TokenStore record; a configured client wins over a stored one."""

        def __init__(self, auth: SessionAuth):
            self._store, self._key = auth.store, auth.key
            self.fixed_client: Any = None

        def record(self) -> dict:
            return self._store.read(self._key)

        async def get_tokens(self) -> Any:
            tokens = self.record().get("tokens")
            return OAuthToken.model_validate(tokens) if tokens else None

        async def set_tokens(self, tokens: Any) -> None:
            expires_at = time.time() + int(tokens.expires_in) if tokens.expires_in is not None else None
            self._store.update(self._key, tokens=dump(tokens), expires_at=expires_at)

        async def get_client_info(self) -> Any:
            if self.fixed_client is not None:
                return self.fixed_client
            client = self.record().get("client_info")
            return OAuthClientInformationFull.model_validate(client) if client else None

        async def set_client_info(self, client_info: Any) -> None:
            if self.fixed_client is None:
                self._store.update(self._key, client_info=dump(client_info))

        def forget_tokens(self) -> None:
            self._store.update(self._key, tokens=None, expires_at=None)

        def remember_metadata(self, context: Any) -> None:
            metadata = {"protected_resource": dump(context.protected_resource_metadata),
                        "authorization_server": dump(context.oauth_metadata),
                        "auth_server_url": context.auth_server_url}
            if self.record().get("metadata") != metadata:
                self._store.update(self._key, metadata=metadata)

    class SharedFlow:
        gateway_auth: SessionAuth
        gateway_storage: RecordStorage

        async def _initialize(self) -> None:
            await super()._initialize()
            record = self.gateway_storage.record()
            context = self.context
            context.token_expiry_time = record.get("expires_at") if context.current_tokens else None
            metadata = record.get("metadata") or {}
            if metadata.get("authorization_server"):
                context.oauth_metadata = OAuthMetadata.model_validate(metadata["authorization_server"])
            if metadata.get("protected_resource"):
                context.protected_resource_metadata = ProtectedResourceMetadata.model_validate(
                    metadata["protected_resource"])
            context.auth_server_url = metadata.get("auth_server_url") or context.auth_server_url

        async def _perform_authorization(self) -> Any:
            if self.gateway_auth.settings.scopes:  # configured scopes win over advertised ones
                self.context.client_metadata.scope = self.gateway_auth.settings.scopes
            return await super()._perform_authorization()

        async def _auth_flow(self, request: Any) -> Any:
            auth, storage, context = self.gateway_auth, self.gateway_storage, self.context
            if not self._initialized:
                await self._initialize()
            lock = inner = None
            try:
                if not context.is_token_valid() and context.can_refresh_token():
                    lock = await auth.acquire()
                    await self._initialize()  # another holder may have refreshed meanwhile
                inner = super()._auth_flow(request)
                outgoing = await inner.__anext__()
                while True:
                    if outgoing is request and lock is not None:
                        # Refreshed or signed in (or refused): let the others go on. Never hold
                        # the lock across the request itself, which may be a long stream.
                        if context.current_tokens is None:
                            storage.forget_tokens()  # a refused refresh token is of no more use
                        else:
                            storage.remember_metadata(context)
                        lock.release()
                        lock = None
                    response = yield _redirected(outgoing, auth.settings.auth_server_metadata_url)
                    if outgoing is request and _needs_authorization(response) and lock is None:
                        lock = await auth.acquire()
                        if await self._stored_meanwhile(request):
                            await inner.aclose()
                            lock.release()
                            lock = None
                            self._add_auth_header(request)
                            yield request
                            return
                    outgoing = await inner.asend(response)
            except StopAsyncIteration:
                pass
            finally:
                if inner is not None:
                    await inner.aclose()
                auth.close()
                if lock is not None:
                    lock.release()

        async def _stored_meanwhile(self, request: Any) -> bool:
            """Holding the lock: did another holder store tokens this request has not tried?"""
            sent = request.headers.get("Authorization")
            await self._initialize()
            tokens = self.context.current_tokens
            return bool(self.context.is_token_valid() and tokens and f"Bearer {tokens.access_token}" != sent)

    def _needs_authorization(response: Any) -> bool:
        if response.status_code == 401:
            return True
        return response.status_code == 403 and "insufficient_scope" in response.headers.get("WWW-Authenticate", "")

    def _redirected(request: Any, metadata_url: str | None) -> Any:
        if metadata_url and request.method == "GET" and request.url.path.startswith(_DISCOVERY_PATHS):
            return httpx2.Request("GET", metadata_url, headers=request.headers)
        return request

    class AuthorizationCode(SharedFlow, OAuthClientProvider):
        pass

    class ClientSecret(SharedFlow, ClientCredentialsOAuthProvider):
        pass

    class PrivateKey(SharedFlow, PrivateKeyJWTOAuthProvider):
        pass

    return _ProviderClasses(RecordStorage, AuthorizationCode, ClientSecret, PrivateKey)
