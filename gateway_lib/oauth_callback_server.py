"""The HTTP server and handler behind `oauth_signin.CallbackListener` (the browser's redirect).

A module of its own so that only a sign-in imports `http.server`.
"""

from __future__ import annotations

import html
import http.server
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .oauth_signin import CALLBACK_PATH

if TYPE_CHECKING:
    from .oauth_signin import CallbackListener

logger = logging.getLogger(__name__)

_REQUEST_TIMEOUT_S = 5.0  # a browser connection that sends nothing is dropped after this


class CallbackServer(http.server.HTTPServer):
    listener: CallbackListener

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        logger.debug("A browser connection to the OAuth callback failed")


class CallbackHandler(http.server.BaseHTTPRequestHandler):
    timeout = _REQUEST_TIMEOUT_S
    server: CallbackServer

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self._answer(404, "Not found", "This address is only for signing in.")
            return
        query = parse_qs(parts.query)
        if not self.server.listener.accept(query):
            self._answer(400, "Wrong sign-in", "This sign-in link is not the one the gateway is waiting for.")
            return
        if (query.get("error") or [None])[0]:
            self._answer(200, "Sign-in refused", "The authorization server refused the sign-in. You can close this tab.")
        else:
            self._answer(200, "Signed in", "The gateway is signed in. You can close this tab.")

    def _answer(self, status: int, title: str, text: str) -> None:
        body = (f"<!doctype html><title>{html.escape(title)}</title>"
                f"<p>{html.escape(text)}</p>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the request line carries the authorization code
