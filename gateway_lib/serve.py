"""`gateway.py serve`: builds the gateway's parts from the settings and runs them, on stdio or HTTP, until shutdown."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Mapping, NoReturn

from . import __version__
from .cli_common import EXIT_CONFIG, EXIT_USAGE, config_paths, configure_logging, pins_path

logger = logging.getLogger("gateway_lib")

# Shutdown: calls in flight get the grace to finish, then the endpoint's cancel wait; what
# follows (watcher, downstream sessions, audit) shares the rest of the bound.
SHUTDOWN_GRACE_S = 3.0
SHUTDOWN_BOUND_S = 5.0


def run_serve(options: argparse.Namespace, environ: Mapping[str, str], signals) -> int:
    from .audit import AuditLog, default_audit_path
    from .budget import DEFAULT_MAX_RESULT_TOKENS
    from .catalog import DEFAULT_TTL_S, ToolCatalog
    from .config import load_rules, load_servers
    from .store import ConfigStore, build_snapshot
    from .downstream import Downstream
    from .downstream.spares import DEFAULT_IDLE_S, EAGER, STRATEGIES, SpareSettings
    from .errors import ConfigError
    from .framing import (DEFAULT_MAX_LINE_BYTES, MessageReader, MessageWriter, claim_stdin, claim_stdout,
                          peer_hung_up)
    from .lifecycle import ThreadDeaths, leave
    from .methods import McpProtocol
    from .metrics import Metrics
    from .pins import PinnedLists, PinStore
    from .relay import DEFAULT_MAX_TIMEOUT_MS
    from .reload import DEFAULT_DEBOUNCE_S, Reloader, startup_warnings
    from .rpc import Endpoint
    from .settings import Defaults, SettingsError, identity_warnings, read_serve_settings
    from .slots import ServerSlots
    from .tools import DEFAULT_TIMEOUT_MS, GatewayTools, ToolSettings

    defaults = Defaults(audit_log=default_audit_path(environ), max_line_bytes=DEFAULT_MAX_LINE_BYTES,
                        timeout_ms=DEFAULT_TIMEOUT_MS, tool_cache_ttl_s=DEFAULT_TTL_S,
                        reload_debounce_ms=round(DEFAULT_DEBOUNCE_S * 1000),
                        max_result_tokens=DEFAULT_MAX_RESULT_TOKENS,
                        init_strategy=EAGER, init_strategies=STRATEGIES, spare_idle_s=DEFAULT_IDLE_S,
                        max_timeout_ms=DEFAULT_MAX_TIMEOUT_MS)
    try:
        serve = read_serve_settings(options, environ, defaults)
        http = _http_settings(options, environ, serve)
    except SettingsError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"gateway: {problem}\n")
        sys.stderr.write("gateway: not starting: fix the setting(s) above\n")
        return EXIT_USAGE
    configure_logging(serve.log_level)
    deaths = ThreadDeaths().install()
    mcp_path, rules_path = config_paths(options, environ)
    try:
        snapshot = build_snapshot(load_servers(str(mcp_path), environ), load_rules(str(rules_path)))
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("%s", problem)
        logger.error("Not starting: fix the config (run 'gateway.py check' to see every problem)")
        return EXIT_CONFIG
    logger.info("Loaded %d server(s) from %s and %d agent(s) from %s",
                len(snapshot.servers.servers), mcp_path, len(snapshot.rules.agents), rules_path)
    for warning in startup_warnings(snapshot) + identity_warnings(serve.pinned_agent, serve.default_agent,
                                                                   snapshot.rules.agents):
        logger.warning("%s", warning)

    settings = ToolSettings(
        debug=serve.debug,
        default_agent=serve.default_agent,
        pinned_agent=serve.pinned_agent,
        default_timeout_ms=serve.timeout_ms,
        max_result_bytes=serve.max_line_bytes,  # one limit on a message, in and out
        max_timeout_ms=serve.max_timeout_ms,
        max_result_tokens=serve.max_result_tokens,
    )
    audit = AuditLog(serve.audit_log)
    store = ConfigStore(snapshot)
    try:
        pin_store = PinStore(pins_path(options, environ, rules_path), audit)
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("%s", problem)
        logger.error("Not starting: fix the pin file (run 'gateway.py check' to see every problem)")
        return EXIT_CONFIG
    from . import oauth_cli

    oauth_tokens = oauth_cli.token_store(environ)
    downstream = Downstream(errlog=sys.stderr, spares=SpareSettings(serve.init_strategy, serve.spare_idle_s),
                            token_store=oauth_tokens)
    catalog = ToolCatalog(downstream.list_tools, ttl_s=serve.tool_cache_ttl_s)
    # A spare lists a server's tools into the cache as it starts (pinned then, on first use).
    downstream.use_tool_lists(PinnedLists(catalog, pin_store, lambda: store.current().rules.on_tool_change))
    reloader = Reloader(store, mcp_path, rules_path, environ, audit)
    reloader.add_servers_listener(catalog.forget_missing)
    reloader.add_servers_listener(downstream.retire)  # closes kept-alive sessions of changed servers
    background = _AfterHandshake(downstream, reloader, delay_s=serve.reload_debounce_ms / 1000,
                                 warm=lambda: downstream.warm(store.current().servers.servers))
    metrics = Metrics()
    tools = GatewayTools(store, downstream, catalog, ServerSlots(), audit, metrics, settings,
                         status_extra=lambda: {"reload_status": reloader.status(),
                                               "background_threads": {"watcher": background.watcher_state(),
                                                                      "stopped": deaths.status()},
                                               "oauth": oauth_cli.status(store.current().servers, oauth_tokens)},
                         pin_store=pin_store)
    if http is not None:
        return _serve_http(http, signals, store=store, tools=tools, metrics=metrics, reloader=reloader,
                           downstream=downstream, background=background, audit=audit)

    stop = signals.stop
    wire, stdin = claim_stdout(), claim_stdin()
    # Past its backlog the writer makes writers wait, but not once stdin has hung up (the
    # reader must go on to its EOF) or the gateway is stopping.
    writer = MessageWriter(wire, may_exceed=lambda: stop.is_set() or peer_hung_up(stdin))
    protocol = McpProtocol(tools, on_initialized=background.start)
    endpoint = Endpoint(
        protocol.methods(), protocol.notifications(), writer.write,
        max_workers=serve.max_workers,
        cancel_notification="notifications/cancelled",
        batches_allowed=protocol.batches_allowed,
    )
    protocol.use_peer(endpoint.peer)  # changed roots of the client are refetched through it
    reader = MessageReader(stdin, serve.max_line_bytes)

    def read_until_eof() -> None:
        try:
            reader.listen(endpoint.consume)
        except Exception:
            logger.exception("The reader stopped on an unexpected error")
        finally:
            stop.set()

    # The handler only notes the request; the watcher's thread does the reloading.
    signals.on_reload(background.request_reload)
    threading.Thread(target=read_until_eof, name="gateway-reader", daemon=True).start()
    logger.info("Gateway %s serving on stdio%s", __version__, " (debug)" if settings.debug else "")
    signals.wait_for_stop()
    endpoint.refuse_new_requests()  # before the log line, which tests take as the moment of shutdown
    logger.info("Shutting down")
    deadline = time.monotonic() + SHUTDOWN_BOUND_S
    background.stop()
    endpoint.shutdown(SHUTDOWN_GRACE_S)
    background.join(_left(deadline))
    downstream.shutdown(_left(deadline))
    audit.close()
    delivered = writer.close(_left(deadline))  # a client that stopped reading gets what fits in the bound
    leave(0, endpoint.wait_workers_idle, [] if delivered else ["the writer delivering answers"],
          unfinished=_unfinished(downstream))


def _unfinished(downstream) -> list[str]:
    # A gateway stopped before its first call need not finish importing the SDK.
    return ["the SDK's background import"] if downstream.preloading else []


def _left(deadline: float, floor_s: float = 0.5) -> float:
    """Seconds until `deadline`, but at least `floor_s`: every stage gets a chance to clean up."""
    return max(deadline - time.monotonic(), floor_s)


# --- HTTP mode (http_main.py): its modules are imported only here, so stdio starts as fast as before


def _http_settings(options: argparse.Namespace, environ: Mapping[str, str], serve):
    """HTTP mode's settings, or None in stdio mode; SettingsError for a bad one."""
    from .settings import SettingsError

    transport = options.transport or environ.get("GATEWAY_TRANSPORT") or "stdio"
    if transport.strip().lower() == "stdio":
        return None
    if transport.strip().lower() != "http":
        raise SettingsError([f"GATEWAY_TRANSPORT {transport!r} is not valid: use stdio or http"])
    from .http_main import read_http_settings

    return read_http_settings(options, environ, max_body_bytes=serve.max_line_bytes, max_workers=serve.max_workers)


def _serve_http(http, signals, *, downstream, background, audit, **parts) -> NoReturn:
    from .http_main import serve_http

    code = serve_http(http, signals, downstream=downstream, background=background, grace_s=SHUTDOWN_GRACE_S, **parts)
    deadline = time.monotonic() + SHUTDOWN_BOUND_S - SHUTDOWN_GRACE_S
    background.stop()
    background.join(_left(deadline))
    downstream.shutdown(_left(deadline))
    audit.close()
    from .lifecycle import leave

    leave(code, lambda _timeout: True, unfinished=_unfinished(downstream))


class _AfterHandshake:
    """What must not delay the `initialize` answer: the SDK import, the file watcher, spares.

    They load heavy modules (mcp ~0.9 s, watchdog ~0.07 s) or start processes, so they start
    once the client has its answer, on `notifications/initialized`, each on its own thread.
    """

    def __init__(self, downstream, reloader, delay_s: float, warm=lambda: None):
        self._downstream = downstream
        self._reloader = reloader
        self._delay_s = delay_s
        self._warm = warm  # the eager start of spare sessions and tool lists
        self._lock = threading.Lock()
        self._started = self._stopped = False
        self._watcher = None
        self._failure: str | None = None

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._downstream.preload()
        self._warm()
        threading.Thread(target=self._start_watcher, name="gateway-start-watcher", daemon=True).start()

    def _start_watcher(self) -> None:
        try:
            from .watcher import ConfigWatcher

            watcher = ConfigWatcher(self._reloader, delay_s=self._delay_s)
            with self._lock:
                if not self._stopped:
                    watcher.start()
                    self._watcher = watcher
        except Exception as exc:  # the thread's only job: say why, once, and leave SIGHUP working
            from .lifecycle import describe

            self._failure = describe(exc)
            logger.error("Hot reload is off: the config watcher could not start (%s); SIGHUP still reloads",
                         self._failure)

    def watcher_state(self) -> str:
        """For status: 'not started', 'running', 'stopped', or why it failed."""
        with self._lock:
            watcher, stopped = self._watcher, self._stopped
        if self._failure is not None:
            return f"failed: {self._failure}"
        if watcher is None:
            return "stopped" if stopped else "not started"
        if watcher.is_alive():
            return "running"
        return "stopped" if stopped else "failed: its thread stopped"

    def request_reload(self) -> None:
        """Reload both files soon; only hands the work to a thread, so safe in a signal handler."""
        watcher = self._watcher
        if watcher is not None:
            watcher.request_reload()
        else:  # before the handshake there is no watcher thread yet
            threading.Thread(target=self._reloader.reload_all, name="gateway-reload", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            watcher = self._watcher
        if watcher is not None:
            watcher.stop()

    def join(self, timeout: float) -> None:
        if self._watcher is not None:
            self._watcher.join(timeout)
