"""OAuth for downstream sessions: what the gateway adds around the SDK's client auth.

The SDK (`mcp.client.auth`, set up in sdk_oauth.py) does the protocol. Here, free of the SDK:

- `OAuthGate`, one per Downstream: the token store, and the sign-ins in progress;
- `SessionAuth`, one per session: its record's lock (one sign-in and one refresh at a time,
  across threads and gateway processes), the browser sign-in through a one-shot callback
  listener, the redirect URI, and what AUTH_REQUIRED says when the deadline comes first.
"""

from __future__ import annotations

import logging
import socket
import threading
from urllib.parse import parse_qs, urlsplit

from ..errors import AuthRequired, GatewayError
from ..model import HTTP, SSE, OAuthSettings, ServerSpec
from ..oauth_signin import CALLBACK_PATH, LOOPBACK, Callback, CallbackListener, SignInFailed, open_browser, state_of
from ..oauth_store import LOCK_POLL_S, RecordLock, TokenStore, key_of, uses_oauth
from . import loop

logger = logging.getLogger(__name__)

SIGN_IN_TIMEOUT_S = 300.0  # the listener's own bound; a call's deadline is usually shorter


class OAuthGate:
    """The token store and the sign-ins in progress, shared by every session of a Downstream."""

    def __init__(self, store: TokenStore, sign_in_timeout_s: float = SIGN_IN_TIMEOUT_S):
        self.store = store
        self.sign_in_timeout_s = sign_in_timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # record key -> authorization URL of a sign-in in progress

    def session(self, spec: ServerSpec) -> SessionAuth | None:
        """What one session of an http/sse `spec` needs for OAuth; None for stdio."""
        return SessionAuth(self, spec) if spec.transport in (HTTP, SSE) else None

    def pending_url(self, key: str) -> str | None:
        with self._lock:
            return self._pending.get(key)

    def _begin(self, key: str, url: str) -> None:
        with self._lock:
            self._pending[key] = url

    def _end(self, key: str, url: str | None) -> None:
        with self._lock:
            if url is not None and self._pending.get(key) == url:
                del self._pending[key]


class SessionAuth:
    """One session's side of OAuth: its lock, its browser sign-in, and its AUTH_REQUIRED."""

    def __init__(self, gate: OAuthGate, spec: ServerSpec):
        self.gate = gate
        self.spec = spec
        self.settings = spec.oauth or OAuthSettings()
        self.key = key_of(spec)
        self.store = gate.store
        self.enabled = uses_oauth(spec)  # False: `"oauth": false`, only the 401 is noted
        self.refused_status: int | None = None  # 401/403 when the last answer was one
        self.url: str | None = None  # the authorization URL, once this session's sign-in started
        self.waiting = False  # waiting for another holder's sign-in or refresh
        self._listener: CallbackListener | None = None

    # --- AUTH_REQUIRED --------------------------------------------------------------------

    def required_error(self, reason: str | None = None) -> GatewayError | None:
        """AUTH_REQUIRED for a session that was signing in (or waiting for one); else None."""
        url = self.url or self.gate.pending_url(self.key)
        if reason is None and url is None and not self.waiting:
            return None
        name = self.spec.name
        message = f"Server {name!r} needs a sign-in" + (f" ({reason})" if reason else "")
        if url:
            message += f": open {url} in a browser and call again, or run 'gateway.py login {name}' in a terminal"
        else:
            message += f": run 'gateway.py login {name}' in a terminal, then call again"
        return AuthRequired(message, server=name)

    async def observe(self, response: object) -> None:
        """An httpx response hook: the SDK turns an HTTP error into a bare JSON-RPC error."""
        status = getattr(response, "status_code", None)
        self.refused_status = status if status in (401, 403) else None

    # --- the record's lock ------------------------------------------------------------------

    async def acquire(self) -> RecordLock:
        """The record's lock, waited for in the loop (so the call's deadline can end the wait)."""
        lock = self.store.lock(self.key)
        if not lock.try_acquire():
            self.waiting = True
            try:
                while not lock.try_acquire():
                    await loop.sleep(LOCK_POLL_S)
            finally:
                self.waiting = False
        return lock

    # --- the redirect URI -------------------------------------------------------------------

    def redirect_uri(self, registered_uris: list[str] | None) -> str:
        """callbackPort; else the port the stored registration was made with; else a free one."""
        port = self.settings.callback_port
        if port is None:
            for uri in registered_uris or ():
                parts = urlsplit(uri)
                if parts.hostname == LOOPBACK and parts.port:
                    port = parts.port
                    break
        if port is None:
            with socket.socket() as probe:
                probe.bind((LOOPBACK, 0))
                port = probe.getsockname()[1]
        return f"http://{LOOPBACK}:{port}{CALLBACK_PATH}"

    # --- the browser sign-in: the SDK's redirect and callback handlers -------------------------

    async def open_sign_in(self, authorization_url: str) -> None:
        state = state_of(authorization_url)
        if not state:
            raise SignInFailed("the authorization URL carries no state")
        redirect_uri = (parse_qs(urlsplit(authorization_url).query).get("redirect_uri") or [""])[0]
        listener = CallbackListener(urlsplit(redirect_uri).port or 0, state, self.gate.sign_in_timeout_s).start()
        self._listener = listener
        self.url = authorization_url
        self.gate._begin(self.key, authorization_url)
        logger.warning("Server %r needs a sign-in: opening a browser at %s (or run 'gateway.py login %s')",
                       self.spec.name, authorization_url, self.spec.name)
        open_browser(authorization_url, on_no_browser=lambda: listener.fail("no browser could be opened"))

    async def wait_for_callback(self) -> Callback:
        listener = self._listener
        if listener is None:
            raise SignInFailed("the sign-in did not start")
        try:
            result = await loop.wait_future(listener.result)
        finally:
            self.close()
        if result.error:
            raise SignInFailed(f"the authorization server refused the sign-in ({result.error})")
        return result

    def close(self) -> None:
        """Close the callback listener, if one is open; safe to call again."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            self.gate._end(self.key, self.url)
