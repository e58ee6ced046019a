"""MCP Streamable HTTP: the gateway's second transport, beside framing, on http.server threads.

Over 400 lines for one job: the handler's methods are the steps of one HTTP exchange; its
checks, sessions and probes already live in http_security.py, http_sessions.py and probes.py.

Turns HTTP requests into the same JSON-RPC messages for the same rpc.Endpoint and
methods.McpProtocol (one pair per HTTP session, all sharing one worker pool and the one
GatewayTools), so a tool call behaves the same over stdio and HTTP. Owns only what is HTTP:
sessions, Host/Origin/CORS, bearer tokens, status codes, /health /ready /metrics.

    POST /mcp     one JSON-RPC message; a request's answer comes back on the same POST
                  (application/json); a notification or response gets 202
    GET /mcp      405: the gateway sends nothing to a client unasked
    DELETE /mcp   ends the session
    OPTIONS       CORS preflight, for allowed origins only
"""

from __future__ import annotations

import json
import logging
import queue
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from .errors import INVALID_REQUEST, ParseError
from .framing import Unreadable, decode_line, encode
from .http_security import BEARER_CHALLENGE, OriginPolicy, TokenIndex, bearer_token, metrics_token_ok
from .http_sessions import HttpSession, SessionStore, SessionStoreFull
from .methods import SUPPORTED_VERSIONS, McpProtocol
from .prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from .rpc import Endpoint

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"

# JSON-RPC codes of the errors the transport itself answers (the SDKs use the same two).
REFUSED = -32000  # 401, 403, 405, 503: the request is not accepted here
SESSION_NOT_FOUND = -32001  # 404: unknown, expired or ended session; re-initialize

MAX_CONNECTIONS = 512  # beyond this, new connections are closed at once: threads are bounded
IDLE_CONNECTION_TIMEOUT_S = 30.0  # a kept-alive connection silent this long is closed
DISCONNECT_POLL_S = 0.25  # how often a waiting POST checks whether its client went away
REQUEST_QUEUE_SIZE = 256  # listen backlog: a hundred clients connecting at once all get in


class HttpGateway:
    """The HTTP server, its sessions and its shutdown."""

    def __init__(self, *, host: str, port: int, tools: Any, store: Any, probes: Any, sessions: SessionStore,
                 origins: OriginPolicy, max_body_bytes: int, max_workers: int,
                 metrics_token: str | None = None):
        self._tools = tools
        self._store = store
        self.probes = probes
        self.sessions = sessions
        self.origins = origins
        self.tokens = TokenIndex()
        self.max_body_bytes = max_body_bytes
        self.metrics_token = metrics_token
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gateway-worker")
        self._closing = threading.Event()
        self._active = 0
        self._active_changed = threading.Condition()
        self._server = _Server((host, port), _Handler, self)  # binds: OSError if it cannot
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{MCP_PATH}"

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="gateway-http", daemon=True)
        self._thread.start()

    # --- sessions -----------------------------------------------------------------------

    def new_session_parts(self) -> tuple[Endpoint, McpProtocol]:
        protocol = McpProtocol(self._tools)
        endpoint = Endpoint(protocol.methods(), protocol.notifications(), _nothing_outside_replies,
                            cancel_notification="notifications/cancelled",
                            batches_allowed=protocol.batches_allowed, pool=self._pool)
        return endpoint, protocol

    def current_rules(self) -> Any:
        return self._store.current().rules

    # --- request accounting and shutdown --------------------------------------------------

    def enter(self) -> None:
        with self._active_changed:
            self._active += 1

    def leave(self) -> None:
        with self._active_changed:
            self._active -= 1
            self._active_changed.notify_all()

    def shutdown(self, grace_s: float) -> None:
        """Stop accepting, answer what is in flight (within `grace_s`), end every session."""
        deadline = time.monotonic() + grace_s
        self._closing.set()
        self._server.shutdown()  # the accept loop ends; connections already open go on
        if self._thread is not None:
            self._thread.join(grace_s)
        sessions = self.sessions.close_all()
        for session in sessions:
            session.endpoint.refuse_new_requests()
        for session in sessions:  # the work of all sessions runs meanwhile, in the one pool
            session.endpoint.shutdown(max(0.05, deadline - time.monotonic()))
        with self._active_changed:  # let every answer reach its client
            self._active_changed.wait_for(lambda: self._active == 0, timeout=max(0.05, deadline - time.monotonic()))
        self._server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _nothing_outside_replies(message: Any) -> None:
    # Every HTTP message is consumed with a reply callback, so nothing is ever written here.
    logger.error("An HTTP session tried to write outside a reply; dropped")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(self, address: tuple[str, int], handler: type, gateway: HttpGateway):
        self.gateway = gateway
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            logger.warning("Refusing a connection: %d are open already", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("An HTTP connection failed")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agent-mcp-gateway"
    sys_version = ""
    timeout = IDLE_CONNECTION_TIMEOUT_S
    # Headers and body go out as two writes; with Nagle on, the body waits for the
    # client's delayed ACK of the headers (40 ms a request on Linux).
    disable_nagle_algorithm = True
    server: _Server

    # --- plumbing -------------------------------------------------------------------------

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # request lines are not logged: a client may put anything in a URL

    def log_message(self, format: str, *args: Any) -> None:
        # Only the kind of event: its arguments quote the client's request line and headers.
        logger.debug("HTTP server: %s", format.split("%", 1)[0].strip() or format)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (unknown method, bad request line, huge headers) in
        # JSON like every other answer, instead of its HTML page.
        self.close_connection = True
        text = message or self.responses.get(code, ("Error",))[0]
        body = json.dumps({"error": text}).encode("utf-8")
        self.send_response(code, text)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    @property
    def gateway(self) -> HttpGateway:
        return self.server.gateway

    def _send(self, status: int, body: bytes = b"", content_type: str | None = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**self.gateway.origins.cors_headers(self.headers.get("Origin")), **(headers or {})}.items():
            self.send_header(name, value)
        if body and content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value, ensure_ascii=False).encode("utf-8"), headers=headers)

    def _rpc_error(self, status: int, code: int, message: str, request_id: Any = None,
                   headers: dict[str, str] | None = None) -> None:
        error: dict[str, Any] = {"jsonrpc": "2.0", "error": {"code": code, "message": message}}
        if request_id is not None:
            error["id"] = request_id
        self._json(status, error, headers)

    def _dispatch(self, handle: Callable[[], None]) -> None:
        self.gateway.enter()
        try:
            if not self.gateway.origins.host_allowed(self.headers.get("Host")):
                self._rpc_error(403, REFUSED, "Host header not allowed")
            elif not self.gateway.origins.origin_allowed(self.headers.get("Origin")):
                self._rpc_error(403, REFUSED, "Origin not allowed")
            else:
                handle()
        except OSError as exc:  # the client went away or stalled mid-body: nobody to answer
            logger.debug("HTTP connection lost during %s: %s", self.command, type(exc).__name__)
            self.close_connection = True
        except Exception:  # the top of a request: answer it, keep the server serving
            logger.exception("HTTP request %s failed", self.command)
            self.close_connection = True
            try:
                self._rpc_error(500, -32603, "Internal error")
            except OSError:
                pass
        finally:
            self.gateway.leave()

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def do_DELETE(self) -> None:
        self._dispatch(self._delete)

    def do_OPTIONS(self) -> None:
        self._dispatch(self._options)

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    # --- routes ---------------------------------------------------------------------------

    def _get(self) -> None:
        path = self._path()
        if path == MCP_PATH:
            if self._caller_or_refuse() is not _REFUSED:
                self._rpc_error(405, REFUSED, "The gateway opens no server-to-client stream; POST requests",
                                headers={"Allow": "POST, DELETE, OPTIONS"})
            return
        probes = self.gateway.probes
        if path not in ("/health", "/ready", "/metrics"):
            self._json(404, {"error": f"No such path; the MCP endpoint is {MCP_PATH}"})
            return
        if not metrics_token_ok(self.gateway.metrics_token, self.headers):
            self._json(401, {"error": "A valid bearer token (GATEWAY_METRICS_TOKEN) is required"},
                       headers={"WWW-Authenticate": BEARER_CHALLENGE})
            return
        if path == "/health":
            self._json(*probes.health())
        elif path == "/ready":
            self._json(*probes.ready())
        elif "application/json" in (self.headers.get("Accept") or ""):
            self._json(200, probes.metrics_json())
        else:
            self._send(200, probes.metrics_text().encode("utf-8"), PROMETHEUS_CONTENT_TYPE)

    def _options(self) -> None:
        origin = self.headers.get("Origin")
        headers = {"Allow": "GET, POST, DELETE, OPTIONS"}
        if origin is not None:
            headers.update(self.gateway.origins.preflight_headers(origin))
        self._send(204, headers=headers)

    def _delete(self) -> None:
        if self._path() != MCP_PATH:
            self._json(404, {"error": f"No such path; the MCP endpoint is {MCP_PATH}"})
            return
        caller = self._caller_or_refuse()
        if caller is _REFUSED:
            return
        session_id = self.headers.get(SESSION_HEADER)
        if not session_id:
            self._rpc_error(400, INVALID_REQUEST, f"Missing {SESSION_HEADER} header")
            return
        session = self.gateway.sessions.acquire(session_id)
        if session is None or session.agent != caller:
            if session is not None:
                self.gateway.sessions.release(session)
            self._rpc_error(404, SESSION_NOT_FOUND, "Session not found")
            return
        self.gateway.sessions.release(session)
        self.gateway.sessions.remove(session_id)
        self._send(204)

    def _post(self) -> None:
        if self._path() != MCP_PATH:
            self._json(404, {"error": f"No such path; the MCP endpoint is {MCP_PATH}"})
            return
        if self.gateway.closing:
            self.close_connection = True
            self._rpc_error(503, REFUSED, "The gateway is shutting down")
            return
        caller = self._caller_or_refuse()
        if caller is _REFUSED:
            return
        version = self.headers.get(VERSION_HEADER)
        if version is not None and version not in SUPPORTED_VERSIONS:
            self._rpc_error(400, INVALID_REQUEST, f"Unsupported {VERSION_HEADER} {version!r}; supported: "
                            + ", ".join(SUPPORTED_VERSIONS))
            return
        body = self._read_body()
        if body is None:
            return
        message = decode_line(body) if body.strip() else Unreadable(_EMPTY_BODY)
        request_id = message.get("id") if isinstance(message, dict) else None
        if isinstance(message, dict) and message.get("method") == "initialize":
            self._initialize(message, caller)
            return
        session_id = self.headers.get(SESSION_HEADER)
        if not session_id:
            if isinstance(message, Unreadable):
                self._answer(None, message, caller)  # a parse error needs no session to be said
            else:
                self._rpc_error(400, INVALID_REQUEST, f"Missing {SESSION_HEADER} header: send 'initialize' first",
                                _echoable(request_id))
            return
        session = self.gateway.sessions.acquire(session_id)
        if session is None or session.agent != caller:
            if session is not None:  # another identity's session: as good as unknown to this one
                self.gateway.sessions.release(session)
            self._rpc_error(404, SESSION_NOT_FOUND, "Session not found: initialize a new one",
                            _echoable(request_id))
            return
        try:
            self._answer(session.endpoint, message, caller)
        finally:
            self.gateway.sessions.release(session)

    # --- steps ----------------------------------------------------------------------------

    def _caller_or_refuse(self) -> Any:
        """The agent the bearer token proves, None when identity is self-declared, or _REFUSED."""
        gateway = self.gateway
        rules = gateway.current_rules()
        token = bearer_token(self.headers.get("Authorization"))
        if token is not None:
            agent = gateway.tokens.agent_for(rules, token) if token else None
            if agent is not None:
                return agent
            # A token the gateway cannot resolve gets nothing, even where none is required.
            self._rpc_error(401, REFUSED, "The bearer token is not valid",
                            headers={"WWW-Authenticate": BEARER_CHALLENGE + ', error="invalid_token"'})
            return _REFUSED
        if gateway.tokens.any_tokens(rules) or not gateway.origins.loopback:
            # Off loopback, identity is never self-declared: with no tokens configured
            # (removed by a reload, say), nobody gets in.
            self._rpc_error(401, REFUSED, "A bearer token is required",
                            headers={"WWW-Authenticate": BEARER_CHALLENGE})
            return _REFUSED
        return None

    def _read_body(self) -> bytes | None:
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            self.close_connection = True  # the body is left unread
            self._rpc_error(415, INVALID_REQUEST, "Content-Type must be application/json")
            return None
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._rpc_error(411, INVALID_REQUEST, "Send the body with a Content-Length, not chunked")
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._rpc_error(411, INVALID_REQUEST, "A Content-Length header is required")
            return None
        if length < 0 or length > self.gateway.max_body_bytes:
            self.close_connection = True  # never read: the cap is on memory, not just on parsing
            self._rpc_error(413, INVALID_REQUEST,
                            f"Message exceeds the {self.gateway.max_body_bytes}-byte limit")
            return None
        return self.rfile.read(length)

    def _initialize(self, message: dict, caller: str | None) -> None:
        endpoint, protocol = self.gateway.new_session_parts()
        status, answer = self._exchange(endpoint, message, caller)
        if protocol.version is None:  # refused: no session comes of it
            endpoint.shutdown(0.0, 0.0)
            self._send_answer(status, answer)
            return
        try:
            session = self.gateway.sessions.add(endpoint, protocol, caller)
        except SessionStoreFull as exc:
            endpoint.shutdown(0.0, 0.0)
            self._rpc_error(503, REFUSED, str(exc), _echoable(message.get("id")))
            return
        self._send_answer(status, answer, {SESSION_HEADER: session.session_id})

    def _answer(self, endpoint: Endpoint | None, message: Any, caller: str | None) -> None:
        if endpoint is None:  # only a message that could not be read comes without a session
            endpoint, _ = self.gateway.new_session_parts()
        status, answer = self._exchange(endpoint, message, caller)
        self._send_answer(status, answer)

    def _send_answer(self, status: int, answer: bytes | None, headers: dict[str, str] | None = None) -> None:
        if status == 0:
            return  # the client went away; its request was cancelled
        if answer is None:
            self._send(202, headers=headers)
        else:
            self._send(status, answer, headers=headers)

    def _exchange(self, endpoint: Endpoint, message: Any, caller: str | None) -> tuple[int, bytes | None]:
        """Hand `message` to the endpoint and wait for its answer; (0, None) if the client left."""
        replies: queue.Queue[bytes | None] = queue.Queue(maxsize=1)

        def reply(answer: Any) -> None:
            # Encoded here, on the endpoint's side: one that cannot be encoded raises, and the
            # endpoint answers the id with an internal error instead.
            replies.put(None if answer is None else encode(answer))

        endpoint.consume(message, caller=caller, reply=reply)
        status = 400 if isinstance(message, Unreadable) else 200
        while True:
            try:
                return status, replies.get(timeout=DISCONNECT_POLL_S)
            except queue.Empty:
                if self._client_gone():
                    _cancel(endpoint, message)
                    self.close_connection = True
                    return 0, None

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True


_REFUSED = object()


_EMPTY_BODY = ParseError("Parse error: the body is empty")


def _echoable(request_id: Any) -> Any:
    return request_id if isinstance(request_id, (str, int)) and not isinstance(request_id, bool) else None


def _cancel(endpoint: Endpoint, message: Any) -> None:
    request_id = message.get("id") if isinstance(message, dict) else None
    if _echoable(request_id) is not None:
        logger.info("HTTP client disconnected; cancelling its request %r", request_id)
        endpoint.consume({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": request_id, "reason": "client disconnected"}},
                         reply=lambda _: None)
