"""A call's session callbacks: what a server does during a call, relayed to the gateway's client.

Part of the SDK boundary with `sdk.py` (mcp and pydantic are imported here too). A call's
relay (`gateway_lib.relay.CallRelay`) is reached only through the methods it is handed:
`capabilities()`, `capability_key()`, `progress()`, `log()`, `ask()`,
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
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator

from ..errors import DownstreamError
from . import loop

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


def attach(session: Any, router: RelayRouter) -> None:
    """Make `router` the one `router_of(session)` gives (`sdk.open_session` calls it)."""
    _routers[session] = router


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
