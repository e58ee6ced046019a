"""The mcp client SDK: transports, TLS, list/call helpers, failure kinds; the only importer of mcp, httpx2 and pydantic.

It also relays what a server does during a call to the gateway's client, through the
call's relay (`gateway_lib.relay.CallRelay`), which it reaches only through the methods
it is handed: `capabilities()`, `capability_key()`, `progress()`, `log()`, `ask()`,
`roots_outside_call()` and `link.meta` / `link.log_level` / `link.roots`:

    session callbacks   sampling, elicitation and roots callbacks exist only for the
                        capabilities the relay declares, so the downstream session
                        declares exactly those; each answer comes from the client, and a
                        refusal goes back to the server as the SDK would give it.
    routing             a kept-alive session serves several calls: server requests and
                        log messages go to the newest call in flight on it (a stdio server
                        does not say which call a request belongs to), progress goes by
                        the request's own token. A roots/list outside any call is answered
                        by the relay of the session's latest call (`roots_outside_call()`),
                        as long as every call on the session came from one client.
    input_required      a 2026-07-28 server's input requests are answered through the
                        same relay (`resolve_inputs`); sdk.send_call retries with them.
    era probe           server/discover first, falling back to initialize (the SDK's own
                        policy); the verdict is cached per server spec.

Everything imports the SDK inside itself: `import mcp` costs most of a second, and the
gateway must answer `initialize` before that (see `Downstream.preload`).
"""

from __future__ import annotations

import contextlib
import logging
import functools
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

from ..errors import DownstreamError, ServerUnavailable
from ..model import CLIENT_CREDENTIALS, HTTP, SSE, STDIO, ServerSpec
from . import loop
from .oauth import SessionAuth

log = logging.getLogger(__name__)

# What an SDK or transport failure was, in the gateway's words (see `classify`).
CLOSED = "closed"  # the connection closed (the server exited or hung up)
RPC_ERROR = "rpc-error"  # the server answered with a JSON-RPC error
HTTP_STATUS = "http-status"  # an HTTP endpoint answered with an error status
HTTP_FAILED = "http-failed"  # the HTTP connection itself failed
INVALID = "invalid"  # a message that does not match the protocol's models
OAUTH = "oauth"  # the OAuth flow failed (discovery, registration, sign-in, token request)


@dataclass(frozen=True)
class Failure:
    """One SDK or transport failure, classified; `detail` is the code's message or reason."""

    kind: str
    detail: str = ""
    code: int | None = None


_import_lock = threading.Lock()


def import_client() -> None:
    """Import the SDK client once, under a lock: two threads importing mcp's circular
    modules at the same time see half-initialized modules and fail with ImportError."""
    with _import_lock:
        import httpx2  # noqa: F401
        import mcp.client.session  # noqa: F401
        import mcp.client.sse  # noqa: F401
        import mcp.client.stdio  # noqa: F401
        import mcp.client.streamable_http  # noqa: F401


async def open_session(
    spec: ServerSpec,
    errlog: TextIO,
    stack: contextlib.AsyncExitStack,
    on_unreadable: Callable[[str], None],
    before_close: Callable[[], None],
    relay: Any = None,
    shared: bool = False,
    auth: SessionAuth | None = None,
) -> Any:
    """Enter the transport of `spec` and a ClientSession on it, on `stack` (not yet initialized).

    The session declares the client capabilities `relay` can relay and sends what the
    server asks of the client to the call in flight: `relay` itself, or (`shared`, a
    kept-alive session) whichever call is newest when the server asks.

    `before_close()` runs as the stack unwinds, just before the transport closes (so while
    a stdio server still runs, unless it died on its own), however the session ends.

    `on_unreadable(reason)` is called (in the loop) when the server sends an answer the
    SDK cannot parse (nested too deep, a lone surrogate): the SDK drops such a line, so
    the request it answered would otherwise wait until its deadline.

    `auth` (OAuth for an http/sse server) becomes the SDK's auth provider on the transport.
    """
    from mcp import ClientSession

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception) and (reason := _unreadable_answer(message)) is not None:
            on_unreadable(reason)

    router = RelayRouter() if shared else RelayRouter(relay)
    read, write = await _open_transport(spec, errlog, stack, auth)
    stack.callback(before_close)
    session = ClientSession(read, write, message_handler=on_message, **session_arguments(relay, router))
    session = await stack.enter_async_context(session)
    _routers[session] = router
    return session


def _unreadable_answer(exc: Exception) -> str | None:
    """Why a line the SDK could not parse was an answer to a request; None for other garbage.

    Banners and log lines on stdout are skipped, as the SDK skips them; a line shaped like a
    JSON-RPC response (an object with an id and a result or an error) answered something.
    """
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or not exc.errors():
        return None
    first = exc.errors(include_url=False)[0]
    line = first.get("input")
    if not isinstance(line, str) or not line.lstrip().startswith("{") or '"id"' not in line:
        return None
    if '"result"' not in line and '"error"' not in line:
        return None
    return str(first.get("msg") or "it is not valid JSON")


async def _headers(spec: ServerSpec) -> dict[str, str]:
    """`headers`, with what the entry's headersHelper prints merged over them."""
    if not spec.headers_helper:
        return dict(spec.headers)
    from mcp.client.stdio import get_default_environment

    from ..headers_helper import run_headers_helper

    env = {**get_default_environment(), **spec.env}
    helped = await loop.in_thread(lambda: run_headers_helper(spec.name, spec.headers_helper, env, spec.cwd))
    overridden = {name.lower() for name in helped}  # header names are case-insensitive
    return {**{k: v for k, v in spec.headers.items() if k.lower() not in overridden}, **helped}


async def _open_transport(
    spec: ServerSpec, errlog: TextIO, stack: contextlib.AsyncExitStack, auth: SessionAuth | None = None
) -> Any:
    """Enter the transport of `spec` on `stack`; returns its (read, write) streams."""
    if spec.transport == STDIO:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # The SDK gives the child only its minimal environment plus spec.env.
        # A line that is not UTF-8 decodes to U+FFFD and is skipped as any non-JSON line is;
        # "strict" would end the SDK's reader and leave the call waiting for its deadline.
        params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env), cwd=spec.cwd,
                                       encoding_error_handler="replace")
        return await stack.enter_async_context(stdio_client(params, errlog=errlog))
    if spec.transport == HTTP:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # No client-side timeouts: the caller's deadline bounds the whole call.
        client = httpx2.AsyncClient(headers=await _headers(spec), timeout=None, verify=tls_context(),
                                    auth=_oauth_provider(auth),
                                    event_hooks={"response": [auth.observe]} if auth is not None else None)
        client = await stack.enter_async_context(client)
        return await stack.enter_async_context(streamable_http_client(spec.url, http_client=client))
    if spec.transport == SSE:
        from mcp.client.sse import sse_client

        session = sse_client(spec.url, headers=await _headers(spec), httpx_client_factory=_sse_http_client,
                             auth=_oauth_provider(auth))
        return await stack.enter_async_context(session)
    raise ServerUnavailable(f"Server {spec.name!r} has an unknown transport {spec.transport!r}")


@functools.cache
def tls_context() -> Any:
    """One TLS context for every HTTP session, built as httpx2 builds its default one.

    Building it loads the CA store, about 18 ms on these machines: a client made per call
    would pay that on every call, more than half of a whole local HTTP call.
    """
    import httpx2

    return httpx2.create_ssl_context()


def _sse_http_client(headers: dict | None = None, timeout: Any = None, auth: Any = None) -> Any:
    """The SDK's SSE client factory, with the shared TLS context."""
    import httpx2

    return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=tls_context())


# --- relaying a call to the gateway's client ----------------------------------------------

MAX_INPUT_ROUNDS = 10  # as the SDK's own driver: a server asking forever cannot hang a call
_LEGACY = "legacy"


class RelayRouter:
    """The relays of the calls in flight on one session; touched only in its loop thread."""

    def __init__(self, relay: Any = None):
        self._relays: list[Any] = [relay] if relay is not None else []
        self._latest: Any = None  # the relay of the latest call, while all calls came from one client
        self.clients = 0  # how many client connections (of distinct roots) have made calls here, up to 2

    @contextlib.contextmanager
    def serving(self, relay: Any) -> Iterator[None]:
        if relay is None:
            yield
            return
        self._note_client(relay)
        self._relays.append(relay)
        try:
            yield
        finally:
            self._relays.remove(relay)

    def current(self) -> Any:
        return self._relays[-1] if self._relays else None

    def outside_calls(self) -> Any:
        """Who answers the server outside any call: the latest call's relay, if only one client used the session."""
        return self._latest if self.clients == 1 else None

    def _note_client(self, relay: Any) -> None:
        if self.clients > 1:
            return
        if self._latest is not None and self._latest.link.roots is not relay.link.roots:
            self.clients, self._latest = 2, None  # whose roots to give would be a guess: none are given
            return
        self.clients, self._latest = 1, relay


_routers: "weakref.WeakKeyDictionary[Any, RelayRouter]" = weakref.WeakKeyDictionary()


def router_of(session: Any) -> RelayRouter:
    """The router of a session opened by `open_session` (an empty one for any other session)."""
    return _routers.setdefault(session, RelayRouter())


def session_arguments(relay: Any, router: RelayRouter) -> dict[str, Any]:
    """ClientSession keyword arguments for a session declaring `relay`'s capabilities,
    whose callbacks go through `router`."""
    import mcp_types
    from pydantic import ValidationError

    capabilities = relay.capabilities() if relay is not None else {}
    kwargs: dict[str, Any] = {"logging_callback": lambda params: _log(router, params)}
    if relay is not None and relay.link.log_level is not None:
        kwargs["log_level"] = relay.link.log_level  # 2026-07-28 servers log only to requests that opt in
    if "sampling" in capabilities:
        kwargs["sampling_callback"] = lambda context, params: _ask(router, "sampling/createMessage", params, _sampling_result)
        with contextlib.suppress(ValidationError):  # an odd sub-capability: declare plain sampling
            kwargs["sampling_capabilities"] = mcp_types.SamplingCapability.model_validate(capabilities["sampling"])
    if "elicitation" in capabilities:
        kwargs["elicitation_callback"] = lambda context, params: _ask(router, "elicitation/create", params, _elicit_result)
    if "roots" in capabilities:
        kwargs["list_roots_callback"] = lambda context: _ask(router, "roots/list", None, _roots_result)
    return kwargs


async def _log(router: RelayRouter, params: Any) -> None:
    relay = router.current()
    if relay is not None:
        relay.log(params.level, params.data, params.logger)


async def _ask(router: RelayRouter, method: str, params: Any, parse: Any) -> Any:
    """Relay one server request to the client; the client's answer, or the error for the server."""
    import mcp_types
    from pydantic import ValidationError

    from ..relay import RelayRefused

    relay = router.current()
    if relay is None:
        return await _outside_calls(router, method, parse)
    wire = params.model_dump(by_alias=True, exclude_none=True, mode="json") if params is not None else None
    try:
        answer = await loop.in_thread(relay.ask, method, wire)
    except RelayRefused as exc:
        return mcp_types.ErrorData(code=exc.code, message=exc.message, data=exc.data)
    try:
        return parse(answer)
    except ValidationError:
        return mcp_types.ErrorData(code=mcp_types.INTERNAL_ERROR, message=f"The client's answer to {method} is malformed")


async def _outside_calls(router: RelayRouter, method: str, parse: Any) -> Any:
    """A server request with no call in flight: only roots/list is answered, from the client's last roots."""
    import mcp_types
    from pydantic import ValidationError

    from ..relay import RelayRefused

    standing = router.outside_calls() if method == "roots/list" else None
    if standing is None:
        why = "more than one client uses this session" if router.clients > 1 and method == "roots/list" else \
            "no call is in progress"
        return mcp_types.ErrorData(code=mcp_types.INVALID_REQUEST, message=f"Cannot answer {method}: {why}")
    try:
        return parse(await loop.in_thread(standing.roots_outside_call))
    except RelayRefused as exc:
        return mcp_types.ErrorData(code=exc.code, message=exc.message, data=exc.data)
    except ValidationError:
        return mcp_types.ErrorData(code=mcp_types.INTERNAL_ERROR, message="The client's last roots are malformed")


def _sampling_result(answer: Any) -> Any:
    import mcp_types
    from pydantic import ValidationError

    try:
        return mcp_types.CreateMessageResult.model_validate(answer)
    except ValidationError:
        return mcp_types.CreateMessageResultWithTools.model_validate(answer)


def _elicit_result(answer: Any) -> Any:
    import mcp_types

    return mcp_types.ElicitResult.model_validate(answer)


def _roots_result(answer: Any) -> Any:
    import mcp_types

    return mcp_types.ListRootsResult.model_validate(answer)


# --- the protocol era of a server ---------------------------------------------------------

_eras: dict[str, tuple[ServerSpec, Any]] = {}  # server name -> (spec, DiscoverResult or _LEGACY)
_eras_lock = threading.Lock()


async def handshake(session: Any, spec: ServerSpec) -> None:
    """Open the session in the server's era: probed once per spec, then remembered."""
    from mcp.client._probe import negotiate_auto

    with _eras_lock:
        known = _eras.get(spec.name)
    verdict = known[1] if known is not None and known[0] == spec else None
    if verdict is _LEGACY:
        await session.initialize()
        return
    if verdict is not None:
        session.adopt(verdict)
        return
    await negotiate_auto(session)  # server/discover, falling back to initialize
    with _eras_lock:
        _eras[spec.name] = (spec, session.discover_result or _LEGACY)


def is_modern(session: Any) -> bool:
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    return session.protocol_version in MODERN_PROTOCOL_VERSIONS


async def resolve_inputs(session: Any, relay: Any, answer: dict) -> dict:
    """The client's answers to a 2026 server's input requests, keyed as the server keyed them."""
    import mcp_types
    from pydantic import TypeAdapter, ValidationError

    router = router_of(session)
    responses: dict[str, Any] = {}
    requests = answer.get("inputRequests") or {}
    for key, request in requests.items():
        method = request.get("method") if isinstance(request, dict) else None
        parse = {"sampling/createMessage": _sampling_result, "elicitation/create": _elicit_result,
                 "roots/list": _roots_result}.get(method)
        if parse is None:
            raise DownstreamError(f"The server asked for input with an unknown method {method!r}")
        try:
            typed = TypeAdapter(mcp_types.InputRequest).validate_python(request)
        except ValidationError:
            raise DownstreamError(f"The server's {method} input request is malformed") from None
        outcome = await _ask(router, method, typed.params, parse)
        if isinstance(outcome, mcp_types.ErrorData):
            raise DownstreamError(f"The server's {method} input request was not answered: {outcome.message}",
                                  client_code=outcome.code)
        responses[key] = outcome
    return responses


# --- requests ------------------------------------------------------------------------------


class ListedTools(list):
    """A server's tools; `ttl_ms` is the server's own cache hint (2026-07-28), else None."""

    ttl_ms: int | None = None


async def list_all(session: Any) -> ListedTools:
    """Every tool of the session's server, following cursors; a 2026 server's as it sent them.

    One tool the SDK's models refuse (an inputSchema whose type is not "object", say) does
    not cost the server its other tools: that page is read again as plain JSON, and each
    tool is kept as the SDK parses it, or as sent when it is refused (with a warning).
    """
    from mcp_types import ListToolsRequest, PaginatedRequestParams
    from pydantic import ValidationError

    modern = is_modern(session)
    tools = ListedTools()
    cursor = None
    while True:
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        if modern:
            # Raw: 2026 tool definitions (any JSON Schema, new fields) pass through unchanged.
            page = await session.send_request(ListToolsRequest(params=params), _raw())
            tools += [tool for tool in page.get("tools", []) if isinstance(tool, dict)]
            if tools.ttl_ms is None and isinstance(page.get("ttlMs"), int):
                tools.ttl_ms = page["ttlMs"]
            cursor = page.get("nextCursor")
        else:
            try:
                result = await session.list_tools(params=params)
                tools += [_wire(tool) for tool in result.tools]
                cursor = result.next_cursor
            except ValidationError:
                page_tools, cursor = await _list_page_leniently(session, params)
                tools += page_tools
        if not cursor:
            return tools


# Kept of a tool the SDK refuses: what an agent needs to call it.
_PLAIN_TOOL_KEYS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


async def _list_page_leniently(session: Any, params: Any) -> tuple[list[dict], str | None]:
    from mcp_types import ListToolsRequest, Tool
    from pydantic import ValidationError

    # No public call of the SDK returns a result it has not validated as a whole, so this
    # takes the two steps send_request takes before validating: stamp, then send.
    request = ListToolsRequest(params=params).model_dump(by_alias=True, mode="json", exclude_none=True)
    options: dict[str, Any] = {}
    session._stamp(request, options)
    page = await session._dispatcher.send_raw_request(request["method"], request.get("params"), options)
    tools = []
    for listed in page.get("tools") if isinstance(page.get("tools"), list) else []:
        if not isinstance(listed, dict) or not isinstance(listed.get("name"), str):
            log.warning("A server listed a tool without a name; it is left out")
            continue
        try:
            tools.append(_wire(Tool.model_validate(listed)))
        except ValidationError as exc:
            log.warning("Tool %r does not match the MCP schema (%d problem(s)); it is listed as sent",
                        listed["name"], exc.error_count())
            tools.append({key: listed[key] for key in _PLAIN_TOOL_KEYS if key in listed})
    cursor = page.get("nextCursor")
    return tools, cursor if isinstance(cursor, str) and cursor else None


async def send_call(session: Any, tool: str, arguments: dict, relay: Any = None) -> dict:
    """One tools/call request (plus a 2026 server's input_required rounds); the result as the server gave it.

    Not `ClientSession.call_tool`: on a session that has not listed tools it first sends
    its own tools/list to check structuredContent against the tool's outputSchema. That is
    a second round trip on every short-lived session, and a check the gateway's client
    makes itself if it wants to. `send_request` still checks the result's shape.
    The client's `_meta` (but its progress token) goes along; progress comes back to the relay.
    """
    from mcp_types import CallToolRequest, CallToolRequestParams, CallToolResult

    meta = dict(relay.link.meta) if relay is not None and relay.link.meta else None
    progress = _progress_callback(relay)
    responses = state = None
    with router_of(session).serving(relay):
        for _ in range(MAX_INPUT_ROUNDS + 1):
            params = CallToolRequestParams(name=tool, arguments=arguments, _meta=meta,
                                           input_responses=responses, request_state=state)
            answer = await session.send_request(CallToolRequest(params=params), _raw(), progress_callback=progress)
            if answer.get("resultType") != "input_required":
                result = _wire(CallToolResult.model_validate(answer, by_name=False))
                result.pop("resultType", None)  # the gateway's protocol layer adds it for 2026 clients only
                return result
            # The retry carries the client's answers and the server's requestState unchanged.
            responses, state = await resolve_inputs(session, relay, answer), answer.get("requestState")
    raise DownstreamError(f"Tool {tool!r} asked for input more than {MAX_INPUT_ROUNDS} times")


def _progress_callback(relay: Any) -> Any:
    if relay is None:
        return None

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        relay.progress(progress, total, message)

    return on_progress


@functools.cache
def _raw() -> Any:
    """A result type that keeps the server's JSON as it came (after the SDK's shape check)."""
    from pydantic import TypeAdapter

    return TypeAdapter(dict[str, Any])


def _wire(model: Any) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def classify(exc: BaseException, transport: str) -> Failure | None:
    """What kind of SDK or transport failure `exc` is; None if it is none of them."""
    import httpx2
    from mcp.shared.exceptions import MCPError
    from pydantic import ValidationError

    if isinstance(exc, MCPError) and _closed(exc, transport):
        detail = "" if exc.message == _SDK_CLOSED_MESSAGE else exc.message
        return Failure(CLOSED, detail)
    if isinstance(exc, MCPError):
        return Failure(RPC_ERROR, exc.message, exc.code)
    if isinstance(exc, httpx2.HTTPStatusError):
        return Failure(HTTP_STATUS, f"HTTP {exc.response.status_code}")
    if isinstance(exc, httpx2.HTTPError):
        return Failure(HTTP_FAILED, "connection failed" if isinstance(exc, httpx2.ConnectError) else type(exc).__name__)
    if isinstance(exc, ValidationError):
        return Failure(INVALID)
    from mcp.client.auth import OAuthFlowError, OAuthRegistrationError, OAuthTokenError

    from ..oauth_signin import SignInFailed

    if isinstance(exc, SignInFailed):
        return Failure(OAUTH, str(exc))  # our own sentences: no secret in them
    # The SDK's messages may quote a token endpoint's answer: name the step only.
    if isinstance(exc, OAuthRegistrationError):
        return Failure(OAUTH, "the client registration failed")
    if isinstance(exc, OAuthTokenError):
        return Failure(OAUTH, "the token request failed")
    if isinstance(exc, OAuthFlowError):
        return Failure(OAUTH, "the authorization flow failed")
    return None


_SDK_CLOSED_MESSAGE = "Connection closed"  # what the SDK's dispatcher says when the transport ended


def _closed(exc: Any, transport: str) -> bool:
    """Whether an MCPError says the connection closed, rather than relaying a server's error.

    The SDK reports a closed transport as code -32000 (CONNECTION_CLOSED), a code servers
    use for their own errors too. Over stdio the SDK never makes up an answer, so only its
    dispatcher's own "Connection closed" is a closed connection. Over HTTP its client
    answers a broken stream itself with -32000 and its own words, which cannot be told
    from a server's: every -32000 there counts as closed (the message is kept).
    """
    from mcp_types import CONNECTION_CLOSED

    if exc.code != CONNECTION_CLOSED:
        return False
    return transport != STDIO or exc.message == _SDK_CLOSED_MESSAGE


def is_connection_closed(exc: BaseException, transport: str) -> bool:
    from mcp.shared.exceptions import MCPError

    return isinstance(exc, MCPError) and _closed(exc, transport)


# --- OAuth: the SDK's client auth on the gateway's token store ------------------------------
#
# The SDK does the protocol. The gateway adds, by subclassing (`_SharedFlow` mixed in before
# each SDK provider): a TokenStorage on a TokenStore record, which also keeps the discovered
# metadata and the absolute expiry, handed back to every fresh provider (`_initialize`), so a
# per-call session neither rediscovers nor misses an expiry; the record's lock around a refresh
# and around the handling of a 401, re-reading the record once it holds it, so a sign-in or
# refresh another call or gateway finished meanwhile is used instead of repeated; configured
# `scopes`; and `authServerMetadataUrl`, where the SDK's metadata discovery requests go.

_DISCOVERY_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
CLIENT_NAME = "agent-mcp-gateway"


def _oauth_provider(auth: SessionAuth | None) -> Any:
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
