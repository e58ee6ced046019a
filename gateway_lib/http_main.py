"""Runs the gateway in HTTP mode: checks it may bind, serves, and shuts down in order.

serve.py builds the shared parts (store, tools, reloader, downstream) and the settings, then
hands them here; stdin is not read at all in this mode.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import __version__
from .framing import claim_stdout
from .http_security import OriginPolicy, TokenIndex, is_loopback_host
from .http_sessions import DEFAULT_TTL_S, SessionStore
from .http_transport import HttpGateway
from .probes import Probes
from .settings import SettingsError

logger = logging.getLogger(__name__)

EXIT_CANNOT_SERVE = 2
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MIN_SESSION_TTL_S = 1.0
MAX_SESSION_TTL_S = 30 * 24 * 3600.0


@dataclass(frozen=True)
class HttpSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    session_ttl_s: float = DEFAULT_TTL_S
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    metrics_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 4 * 1024 * 1024
    max_workers: int = 16


def read_http_settings(options: Any, environ: Mapping[str, str], *, max_body_bytes: int,
                       max_workers: int) -> HttpSettings:
    """--host/--port and the GATEWAY_HTTP_* variables (cli hands them in), or SettingsError
    listing every bad one."""
    problems: list[str] = []

    def pick(flag: str | None, flag_value: Any, variable: str) -> tuple[str, Any] | None:
        if flag_value is not None:
            return flag, flag_value
        if environ.get(variable):
            return variable, environ[variable]
        return None

    host = DEFAULT_HOST
    given = pick("--host", options.host, "GATEWAY_HTTP_HOST")
    if given is not None:
        host = str(given[1]).strip()
        if not host:
            problems.append(f"{given[0]} is empty: give an address to bind, such as 127.0.0.1")
    port = DEFAULT_PORT
    given = pick("--port", options.port, "GATEWAY_HTTP_PORT")
    if given is not None:
        try:
            port = int(given[1])
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            problems.append(f"{given[0]} {given[1]!r} is not valid: give a whole number from 0 to 65535")
    ttl_s = DEFAULT_TTL_S
    given = pick(None, None, "GATEWAY_HTTP_SESSION_TTL_S")
    if given is not None:
        try:
            ttl_s = float(given[1])
        except ValueError:
            ttl_s = float("nan")
        if not MIN_SESSION_TTL_S <= ttl_s <= MAX_SESSION_TTL_S:  # NaN fails every comparison
            problems.append(f"GATEWAY_HTTP_SESSION_TTL_S {given[1]!r} is not valid: give a number of seconds "
                            f"from {MIN_SESSION_TTL_S:g} to {MAX_SESSION_TTL_S:g}")
    if problems:
        raise SettingsError(problems)
    return HttpSettings(
        host=host, port=port, session_ttl_s=ttl_s,
        cors_origins=tuple(environ.get("GATEWAY_CORS_ORIGINS", "").split(",")),
        allowed_hosts=tuple(environ.get("GATEWAY_HTTP_ALLOWED_HOSTS", "").split(",")),
        metrics_token=environ.get("GATEWAY_METRICS_TOKEN") or None,
        max_body_bytes=max_body_bytes, max_workers=max_workers,
    )


def serve_http(settings: HttpSettings, signals: Any, *, store: Any, tools: Any, metrics: Any, reloader: Any,
               downstream: Any, background: Any, grace_s: float) -> int:
    """Serve until a stop signal; the caller then ends downstream sessions and the audit."""
    if not is_loopback_host(settings.host) and not TokenIndex().any_tokens(store.current().rules):
        logger.error("Refusing to serve on non-loopback host %r without tokens: add agents.<id>.token_sha256 "
                     "to the rules ('gateway.py token AGENT' makes one), or bind to 127.0.0.1", settings.host)
        return EXIT_CANNOT_SERVE
    sessions = SessionStore(ttl_s=settings.session_ttl_s)
    probes = Probes(store, reloader, metrics, downstream, sessions.count)
    try:
        gateway = HttpGateway(
            host=settings.host, port=settings.port, tools=tools, store=store, probes=probes, sessions=sessions,
            origins=OriginPolicy.build(settings.host, settings.cors_origins, settings.allowed_hosts),
            max_body_bytes=settings.max_body_bytes, max_workers=settings.max_workers,
            metrics_token=settings.metrics_token,
        )
    except OSError as exc:  # port in use, an address not ours, a host name that does not resolve
        logger.error("Cannot listen on %s port %s: %s", settings.host, settings.port, exc.strerror or exc)
        return EXIT_CANNOT_SERVE
    claim_stdout().close()  # nothing is written to stdout in this mode; a stray print goes to stderr
    signals.on_reload(background.request_reload)  # only hands the work to a thread
    background.start()  # no handshake to wait for: the SDK and the watcher load now
    threading.Thread(target=_load_sdk, args=(probes,), name="gateway-http-ready", daemon=True).start()
    gateway.start()
    logger.info("Gateway %s serving MCP over HTTP on %s", __version__, gateway.url)
    signals.wait_for_stop()
    logger.info("Shutting down: no new connections; answering what is in flight")
    gateway.shutdown(grace_s)
    return 0


def _load_sdk(probes: Probes) -> None:
    # The same locked import downstream.preload() runs; whichever thread comes first does it.
    from .downstream.sdk import import_client

    try:
        import_client()
    except Exception:
        logger.exception("The MCP client SDK failed to import; /ready stays not ready")
        return
    probes.sdk_loaded.set()
