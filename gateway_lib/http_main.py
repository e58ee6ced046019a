"""Runs the gateway in HTTP mode: checks it may bind, serves, and shuts down in order.

cli.py builds the shared parts (store, tools, reloader, downstream) and the settings, then
hands them here; stdin is not read at all in this mode.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .framing import claim_stdout
from .http_security import OriginPolicy, TokenIndex, is_loopback_host
from .http_sessions import DEFAULT_TTL_S, SessionStore
from .http_transport import HttpGateway
from .probes import Probes

logger = logging.getLogger(__name__)

EXIT_CANNOT_SERVE = 2
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


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


def serve_http(settings: HttpSettings, *, store: Any, tools: Any, metrics: Any, reloader: Any,
               downstream: Any, background: Any, grace_s: float) -> int:
    """Serve until SIGTERM or SIGINT; the caller then ends downstream sessions and the audit."""
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
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: background.request_reload())
    background.start()  # no handshake to wait for: the SDK and the watcher load now
    threading.Thread(target=_load_sdk, args=(probes,), name="gateway-http-ready", daemon=True).start()
    gateway.start()
    logger.info("Gateway %s serving MCP over HTTP on %s", __version__, gateway.url)
    while not stop.wait(1.0):
        pass
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
