"""The one place where SDK and transport failures become gateway errors."""

from __future__ import annotations

import logging
import os
import sysconfig
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from ..errors import AuthRequired, DownstreamError, GatewayError, RequestCancelled, ServerUnavailable
from ..model import STDIO, ServerSpec
from . import loop, sdk

log = logging.getLogger(__name__)

STARTING, READY = "starting", "ready"  # a session's phase: before and after `initialize` was answered


class Attempt(Protocol):
    """What translation needs to know about the call that failed."""

    @property
    def spec(self) -> ServerSpec: ...

    @property
    def method(self) -> str: ...

    @property
    def phase(self) -> str: ...

    def exit_status(self) -> str | None: ...


def translate(attempt: Attempt, exc: BaseException) -> BaseException:
    """The gateway error for `exc`, raised while `attempt` ran.

    Messages are one sentence naming the server, and never carry env values, header
    values or a URL's query string.
    """
    spec, method = attempt.spec, attempt.method
    name = f"Server {spec.name!r}"
    starting = attempt.phase == STARTING
    leaf = first_leaf(exc)
    if isinstance(leaf, (GatewayError, RequestCancelled)):
        return leaf
    if isinstance(leaf, ImportError):
        log.error("The mcp SDK cannot be imported: %s", leaf)
        return ServerUnavailable(f"{name} cannot be reached: the mcp SDK is not installed correctly")

    # Classified first: a failed sign-in (oauth_signin.SignInFailed) is raised in the
    # gateway's own code, yet is the server's or the user's doing, not a bug.
    failure = sdk.classify(leaf, spec.transport)
    kind = failure.kind if failure is not None else None
    if kind != sdk.OAUTH and raised_in_gateway(leaf):
        # A bug of ours, not the server's: it goes up as it is, so the endpoint logs it
        # with its traceback and answers -32603, instead of blaming the server.
        return leaf
    if kind == sdk.CLOSED:
        status = attempt.exit_status()
        when = "before answering initialize" if starting else f"during {method}"
        said = f": {failure.detail}" if failure.detail else ""
        return ServerUnavailable(f"{name} closed the connection {when}" + (f" ({status})" if status else "") + said)
    refused = getattr(getattr(attempt, "auth", None), "refused_status", None)
    if kind == sdk.RPC_ERROR and starting and refused == 401:  # the SDK's stand-in for an HTTP 401
        return _unauthorized(attempt, "HTTP 401")
    if kind == sdk.UNREADABLE:
        return unreadable(attempt, failure.detail)
    if kind == sdk.RPC_ERROR:
        if starting:
            return ServerUnavailable(f"{name} failed to initialize: {failure.detail}")
        return DownstreamError(f"{name} answered {method} with error {failure.code}: {failure.detail}", downstream_code=failure.code)
    if kind == sdk.OAUTH or (kind == sdk.HTTP_STATUS and failure.detail == "HTTP 401"):
        return _unauthorized(attempt, failure.detail)
    if kind in (sdk.HTTP_STATUS, sdk.HTTP_FAILED):
        return ServerUnavailable(f"{name} could not be reached at {safe_url(spec.shown_url)}: {failure.detail}")
    if isinstance(leaf, FileNotFoundError) and spec.transport == STDIO and starting:
        if spec.cwd and leaf.filename == spec.cwd:
            return ServerUnavailable(f"{name} could not be started: working directory {spec.cwd!r} not found")
        return ServerUnavailable(f"{name} could not be started: command {spec.shown_command!r} not found")
    if isinstance(leaf, OSError) and spec.transport == STDIO and starting:
        return ServerUnavailable(f"{name} could not be started: {leaf.strerror or type(leaf).__name__}")
    if kind == sdk.INVALID or isinstance(leaf, RuntimeError):
        # A malformed result, an unsupported protocol version, or structured content
        # that does not match the tool's output schema.
        if starting:
            return ServerUnavailable(f"{name} failed to initialize: {_first_line(leaf)}")
        return DownstreamError(f"{name} returned an invalid {method} result: {_first_line(leaf)}")
    log.warning("%s: unexpected %s during %s", name, type(leaf).__name__, method)
    log.debug("unexpected downstream failure", exc_info=exc)
    return ServerUnavailable(f"{name} failed unexpectedly ({type(leaf).__name__})")


def _unauthorized(attempt: Attempt, detail: str) -> GatewayError:
    """A 401 or a failed OAuth flow: AUTH_REQUIRED, unless OAuth is off for the server."""
    spec = attempt.spec
    auth = getattr(attempt, "auth", None)
    if spec.oauth is None:
        return ServerUnavailable(f"Server {spec.name!r} could not be reached at {safe_url(spec.shown_url)}: {detail}: "
                                 'it asks for authorization, and its entry turns OAuth off ("oauth": false)')
    reason = "it refused the tokens (HTTP 401)" if detail == "HTTP 401" else detail
    if auth is not None:
        return auth.required_error(reason)
    return AuthRequired(f"Server {spec.name!r} needs a sign-in ({reason})", server=spec.name)


def unreadable(attempt: Attempt, reason: str) -> GatewayError:
    """The error for an answer the SDK could not parse (see `sdk.open_session`), or for a
    call on a kept session broken by one (see `keep_alive`)."""
    name = f"Server {attempt.spec.name!r}"
    if attempt.phase == STARTING:
        return ServerUnavailable(f"{name} failed to initialize: its answer cannot be read ({reason})")
    return DownstreamError(f"{name} answered {attempt.method} with a message that cannot be read: {reason}")


_GATEWAY_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
_LIBRARY_DIRS = tuple(
    str(Path(sysconfig.get_path(name)).resolve()) + os.sep for name in ("stdlib", "platstdlib", "purelib", "platlib")
)


def raised_in_gateway(exc: BaseException) -> bool:
    """Whether `exc` is a bug of the gateway's, not a failure of the server or connection.

    What the SDK, its transports, asyncio or the standard library raise (the innermost
    frame lies in an installed library or the standard library) is the server's or the
    connection's doing and is translated; anything raised by the gateway's own code, or
    by a callable it was handed, is a bug.
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if filename.startswith("<"):  # frozen standard-library modules
        return False
    filename = str(Path(filename).resolve())
    return filename.startswith(_GATEWAY_DIR) or not filename.startswith(_LIBRARY_DIRS)


def first_leaf(exc: BaseException) -> BaseException:
    """The first real failure inside nested ExceptionGroups, skipping cancellations."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [first_leaf(inner) for inner in exc.exceptions]
    return next((leaf for leaf in leaves if not loop.is_cancellation(leaf)), leaves[0])


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def safe_url(url: str | None) -> str:
    """scheme://host:port/path: no credentials, no query string, no fragment."""
    parts = urlsplit(url or "")
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
