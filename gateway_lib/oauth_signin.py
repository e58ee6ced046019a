"""Signing in through a browser: open the authorization URL, and catch the redirect on 127.0.0.1.

`CallbackListener` is one-shot: it listens on 127.0.0.1 only (the given port, or an ephemeral
one), answers the browser on `/callback`, accepts exactly one request carrying the `state` of
its sign-in (any other state gets 400 and the listener keeps waiting), then closes; it also
closes at its time-out or on `close()`. It never logs a request: the query holds the code.

`open_browser` runs Python's `webbrowser` in a child with stdin on /dev/null and no terminal,
so `$BROWSER` decides which browser opens, and no browser can read the MCP stream on fd 0.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hmac
import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CALLBACK_PATH = "/callback"
_POLL_S = 0.1  # how often the listener's thread looks at its stop event
NO_BROWSER_EXIT = 3  # the helper's exit status when webbrowser found no browser

_OPEN_SCRIPT = (
    "import sys, webbrowser\n"
    f"sys.exit(0 if webbrowser.open(sys.argv[1]) else {NO_BROWSER_EXIT})\n"
)


@dataclass(frozen=True)
class Callback:
    """What the authorization server sent back through the browser."""

    code: str | None
    state: str
    iss: str | None = None
    error: str | None = None

    def __repr__(self) -> str:  # the code is a credential
        return f"Callback(state=..., error={self.error!r}, has_code={self.code is not None})"


def state_of(authorization_url: str) -> str | None:
    """The `state` parameter of an authorization URL."""
    values = parse_qs(urlsplit(authorization_url).query).get("state")
    return values[0] if values else None


class SignInFailed(Exception):
    """The sign-in cannot finish: no browser, a port in use, a time-out; the message says which."""


class CallbackListener:
    """A one-shot HTTP listener on 127.0.0.1 for one sign-in's redirect."""

    def __init__(self, port: int, state: str, timeout_s: float):
        self._state = state
        self._timeout_s = timeout_s
        self.result: concurrent.futures.Future[Callback] = concurrent.futures.Future()
        self._stop = threading.Event()
        # Imported here: http.server costs ~20 ms, and stdio start-up must not pay for it.
        from .oauth_callback_server import CallbackHandler, CallbackServer

        try:
            self._server = CallbackServer((LOOPBACK, port), CallbackHandler)
        except OSError as exc:
            raise SignInFailed(f"the callback port {port} on {LOOPBACK} is not free ({exc.strerror})") from None
        self._server.listener = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._serve, name="oauth-callback", daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{CALLBACK_PATH}"

    def start(self) -> CallbackListener:
        self._thread.start()
        return self

    def fail(self, reason: str) -> None:
        """End the wait with SignInFailed(reason), and close."""
        _settle(self.result, SignInFailed(reason))
        self._stop.set()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        else:
            self._server.server_close()
        _settle(self.result, SignInFailed("the sign-in was abandoned"))

    def _serve(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        try:
            while not self._stop.is_set() and not self.result.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    _settle(self.result, SignInFailed(f"no browser came back within {round(self._timeout_s)} s"))
                    break
                self._server.timeout = min(left, _POLL_S)
                self._server.handle_request()
        except Exception as exc:  # the waiter must hear of it; the thread must end
            logger.warning("The OAuth callback listener failed (%s)", type(exc).__name__)
            _settle(self.result, SignInFailed("the callback listener failed"))
        finally:
            self._server.server_close()

    def accept(self, query: dict[str, list[str]]) -> bool:
        """Whether this request is the one awaited; settles the result when it is."""
        state = (query.get("state") or [""])[0]
        if not state or not hmac.compare_digest(state.encode(), self._state.encode()):
            return False
        first = lambda name: (query.get(name) or [None])[0]  # noqa: E731
        _settle(self.result, Callback(code=first("code"), state=state, iss=first("iss"), error=first("error")))
        return True


def open_browser(url: str, on_no_browser: Callable[[], None] | None = None) -> None:
    """Open `url` with `webbrowser` in a child process; `on_no_browser` runs if none opened."""
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _OPEN_SCRIPT, url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        logger.warning("Could not start a browser (%s)", exc.strerror)
        if on_no_browser is not None:
            on_no_browser()
        return

    def reap() -> None:
        # A console browser may run as long as its user likes: wait without bound, on a
        # daemon thread; the gateway never waits for it.
        if child.wait() == NO_BROWSER_EXIT and on_no_browser is not None:
            on_no_browser()

    threading.Thread(target=reap, name="oauth-browser", daemon=True).start()


def _settle(future: concurrent.futures.Future, outcome: Callback | BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
