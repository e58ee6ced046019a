"""Command line: builds the gateway from flags and environment, and runs it.

The only module that reads the environment. Commands:
    serve (default)  the MCP server, on stdio (or HTTP with --transport http)
    check            validate both config files as the running gateway would
    demo             start the gateway and drive one real client session against it
    token AGENT      print a new bearer token for AGENT, and the hash to put in the rules
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Mapping, Sequence, TextIO

from . import __version__

logger = logging.getLogger("gateway_lib")

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_CONFIG = REPO_ROOT / "config"
TRUE_WORDS = {"1", "true", "yes", "on"}
SHUTDOWN_GRACE_S = 3.0


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mcp-config", metavar="PATH", help="the .mcp.json of downstream servers (env GATEWAY_MCP_CONFIG)")
    parser.add_argument("--rules", metavar="PATH", help="the .mcp-gateway-rules.json (env GATEWAY_RULES)")
    parser.add_argument("--version", action="version", version=f"agent-mcp-gateway {__version__}")


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway.py",
        description="MCP gateway on stdio. Other commands: 'gateway.py check', 'gateway.py demo'.",
    )
    _common_options(parser)
    parser.add_argument("--debug", action="store_true", default=None, help="expose get_gateway_status (env GATEWAY_DEBUG)")
    parser.add_argument("--agent", metavar="NAME", help="pin every call to this agent id (env GATEWAY_AGENT)")
    parser.add_argument("--audit-log", metavar="PATH", help="JSON Lines audit file (env GATEWAY_AUDIT_LOG)")
    parser.add_argument("--max-workers", type=int, metavar="N", help="worker threads (env GATEWAY_MAX_WORKERS, default 16)")
    parser.add_argument("--max-line-bytes", type=int, metavar="N", help="largest accepted message (env GATEWAY_MAX_LINE_BYTES, default 4 MiB)")
    parser.add_argument("--timeout-ms", type=int, metavar="MS", help="default downstream timeout (env GATEWAY_TIMEOUT_MS, default 60000)")
    parser.add_argument("--tool-cache-ttl", type=float, metavar="S", help="seconds a tool list stays cached (env GATEWAY_TOOL_CACHE_TTL, default 300)")
    parser.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR (env GATEWAY_LOG_LEVEL, default INFO)")
    parser.add_argument("--transport", choices=("stdio", "http"), help="stdio (default) or http (env GATEWAY_TRANSPORT)")
    parser.add_argument("--host", metavar="HOST", help="HTTP mode: address to bind (env GATEWAY_HTTP_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, metavar="N", help="HTTP mode: port, 0 for any free one (env GATEWAY_HTTP_PORT, default 8000)")
    return parser


def _check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py check", description="Validate both config files and list every problem.")
    _common_options(parser)
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py demo", description="Start the gateway and show one client session against it.")
    _common_options(parser)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         out: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    command = argv.pop(0) if argv and argv[0] in ("serve", "check", "demo", "token") else "serve"
    if command == "token":
        return run_token(_token_parser().parse_args(argv), out)
    if command == "check":
        return run_check(_check_parser().parse_args(argv), environ, out)
    if command == "demo":
        return run_demo(_demo_parser().parse_args(argv), environ, out)
    return run_serve(_serve_parser().parse_args(argv), environ)


def _setting(value, environ: Mapping[str, str], name: str, default, convert=str):
    if value is not None:
        return value
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except ValueError:
        raise SystemExit(f"gateway: environment variable {name} has an invalid value")


def _config_paths(options: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Path, Path]:
    from .config import find_config_paths

    found_mcp, found_rules = find_config_paths(environ, Path.cwd(), Path.home(), BUNDLED_CONFIG)
    mcp_path = Path(options.mcp_config) if options.mcp_config else found_mcp
    rules_path = Path(options.rules) if options.rules else found_rules
    # Absolute but not resolved: the watcher must see a symlinked config retargeted.
    return Path(os.path.abspath(mcp_path)), Path(os.path.abspath(rules_path))


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Below WARNING, only the gateway's own records reach stderr.

    Libraries log what the gateway promises to keep secret: httpx2 logs every request's
    full URL at INFO (with a '?key=${VAR}' value), and the SDK logs messages (with
    argument values) at DEBUG.
    """
    return record.levelno >= logging.WARNING or record.name.split(".")[0] == "gateway_lib"


def _configure_logging(level_name: str) -> None:
    level = getattr(logging, level_name.upper(), None)
    if not isinstance(level, int):
        raise SystemExit(f"gateway: unknown log level {level_name!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_quiet_libraries)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# --- serve ------------------------------------------------------------------------------


def run_serve(options: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from .audit import AuditLog, default_audit_path
    from .catalog import DEFAULT_TTL_S, ToolCatalog
    from .config import ConfigStore, build_snapshot, load_rules, load_servers
    from .downstream import Downstream
    from .errors import ConfigError
    from .framing import DEFAULT_MAX_LINE_BYTES, MessageReader, MessageWriter, claim_stdin, claim_stdout
    from .methods import McpProtocol
    from .metrics import Metrics
    from .reload import DEFAULT_DEBOUNCE_S, Reloader
    from .rpc import Endpoint
    from .slots import ServerSlots
    from .tools import DEFAULT_TIMEOUT_MS, GatewayTools, ToolSettings

    _configure_logging(_setting(options.log_level, environ, "GATEWAY_LOG_LEVEL", "INFO"))
    mcp_path, rules_path = _config_paths(options, environ)
    try:
        snapshot = build_snapshot(load_servers(str(mcp_path), environ), load_rules(str(rules_path)))
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("%s", problem)
        logger.error("Not starting: fix the config (run 'gateway.py check' to see every problem)")
        return 1
    logger.info("Loaded %d server(s) from %s and %d agent(s) from %s",
                len(snapshot.servers.servers), mcp_path, len(snapshot.rules.agents), rules_path)
    for warning in snapshot.warnings:
        logger.warning("%s", warning)

    max_line_bytes = _setting(options.max_line_bytes, environ, "GATEWAY_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES, int)
    settings = ToolSettings(
        debug=_setting(options.debug, environ, "GATEWAY_DEBUG", False, lambda v: v.strip().lower() in TRUE_WORDS),
        default_agent=_setting(None, environ, "GATEWAY_DEFAULT_AGENT", None),
        pinned_agent=_setting(options.agent, environ, "GATEWAY_AGENT", None),
        default_timeout_ms=_setting(options.timeout_ms, environ, "GATEWAY_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, int),
        max_result_bytes=max_line_bytes,  # one limit on a message, in and out
    )
    if settings.pinned_agent and settings.pinned_agent not in snapshot.rules.agents:
        logger.warning("Pinned agent %r is not in the rules: every call will be refused until it is added",
                       settings.pinned_agent)
    audit = AuditLog(_setting(options.audit_log, environ, "GATEWAY_AUDIT_LOG", default_audit_path(environ)))
    store = ConfigStore(snapshot)
    downstream = Downstream(errlog=sys.stderr)
    ttl = _setting(options.tool_cache_ttl, environ, "GATEWAY_TOOL_CACHE_TTL", DEFAULT_TTL_S, float)
    catalog = ToolCatalog(downstream.list_tools, ttl_s=ttl)
    reloader = Reloader(store, mcp_path, rules_path, environ, audit)
    reloader.add_servers_listener(catalog.forget_missing)
    reloader.add_servers_listener(downstream.retire)  # closes kept-alive sessions of changed servers
    metrics = Metrics()
    tools = GatewayTools(store, downstream, catalog, ServerSlots(), audit, metrics, settings,
                         status_extra=lambda: {"reload_status": reloader.status()})
    delay_ms = _setting(None, environ, "GATEWAY_RELOAD_DEBOUNCE_MS", DEFAULT_DEBOUNCE_S * 1000, int)
    background = _AfterHandshake(downstream, reloader, delay_s=max(delay_ms, 0) / 1000)
    if _setting(options.transport, environ, "GATEWAY_TRANSPORT", "stdio").strip().lower() != "stdio":
        return _serve_http(options, environ, store=store, tools=tools, metrics=metrics, reloader=reloader,
                           downstream=downstream, background=background, audit=audit, max_line_bytes=max_line_bytes)

    wire = claim_stdout()
    protocol = McpProtocol(tools, on_initialized=background.start)
    endpoint = Endpoint(
        protocol.methods(), protocol.notifications(), MessageWriter(wire).write,
        max_workers=_setting(options.max_workers, environ, "GATEWAY_MAX_WORKERS", 16, int),
        cancel_notification="notifications/cancelled",
        batches_allowed=protocol.batches_allowed,
    )
    reader = MessageReader(claim_stdin(), max_line_bytes)
    stop = threading.Event()

    def read_until_eof() -> None:
        try:
            reader.listen(endpoint.consume)
        except Exception:
            logger.exception("The reader stopped on an unexpected error")
        finally:
            stop.set()

    # Handlers first: SIGHUP's default action would end the gateway once it is serving.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if hasattr(signal, "SIGHUP"):
        # The handler only notes the request; the watcher's thread does the reloading.
        signal.signal(signal.SIGHUP, lambda *_: background.request_reload())
    threading.Thread(target=read_until_eof, name="gateway-reader", daemon=True).start()
    logger.info("Gateway %s serving on stdio%s", __version__, " (debug)" if settings.debug else "")
    while not stop.wait(1.0):
        pass
    logger.info("Shutting down")
    background.stop()
    endpoint.shutdown(SHUTDOWN_GRACE_S)
    background.join(SHUTDOWN_GRACE_S)
    downstream.shutdown(SHUTDOWN_GRACE_S)
    audit.close()
    return 0


def _serve_http(options: argparse.Namespace, environ: Mapping[str, str], *, downstream, background, audit,
                max_line_bytes: int, **parts) -> int:
    """HTTP mode (http_main.py); its modules are imported only here, so stdio starts as fast as before."""
    from .http_main import DEFAULT_HOST, DEFAULT_PORT, EXIT_CANNOT_SERVE, HttpSettings, serve_http
    from .http_sessions import DEFAULT_TTL_S

    transport = _setting(options.transport, environ, "GATEWAY_TRANSPORT", "stdio").strip().lower()
    if transport != "http":
        logger.error("Unknown transport %r: use 'stdio' or 'http'", transport)
        return EXIT_CANNOT_SERVE
    ttl_s = _setting(None, environ, "GATEWAY_HTTP_SESSION_TTL_S", DEFAULT_TTL_S, float)
    if not ttl_s >= 1:
        logger.error("GATEWAY_HTTP_SESSION_TTL_S must be at least 1 (seconds)")
        return EXIT_CANNOT_SERVE
    settings = HttpSettings(
        host=_setting(options.host, environ, "GATEWAY_HTTP_HOST", DEFAULT_HOST),
        port=_setting(options.port, environ, "GATEWAY_HTTP_PORT", DEFAULT_PORT, int),
        session_ttl_s=ttl_s,
        cors_origins=tuple(_setting(None, environ, "GATEWAY_CORS_ORIGINS", "").split(",")),
        allowed_hosts=tuple(_setting(None, environ, "GATEWAY_HTTP_ALLOWED_HOSTS", "").split(",")),
        metrics_token=_setting(None, environ, "GATEWAY_METRICS_TOKEN", None),
        max_body_bytes=max_line_bytes,
        max_workers=_setting(options.max_workers, environ, "GATEWAY_MAX_WORKERS", 16, int),
    )
    code = serve_http(settings, downstream=downstream, background=background, grace_s=SHUTDOWN_GRACE_S, **parts)
    background.stop()
    background.join(SHUTDOWN_GRACE_S)
    downstream.shutdown(SHUTDOWN_GRACE_S)
    audit.close()
    return code


def _token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py token", description="Make a bearer token for one agent (HTTP mode).")
    parser.add_argument("agent", metavar="AGENT", help="the agent id the token will act as")
    return parser


def run_token(options: argparse.Namespace, out: TextIO) -> int:
    from .http_security import token_instructions

    text = token_instructions(options.agent)
    if text is None:
        sys.stderr.write(f"gateway: {options.agent!r} is not a valid agent id (letters, digits, '_', '.', '-')\n")
        return 2
    out.write(text)
    return 0


class _AfterHandshake:
    """What must not delay the `initialize` answer: the SDK import and the file watcher.

    Both load heavy modules (mcp ~0.9 s, watchdog ~0.07 s), so they start once the client
    has its answer, on `notifications/initialized`, each on its own thread.
    """

    def __init__(self, downstream, reloader, delay_s: float):
        self._downstream = downstream
        self._reloader = reloader
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self._started = self._stopped = False
        self._watcher = None

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._downstream.preload()
        threading.Thread(target=self._start_watcher, name="gateway-start-watcher", daemon=True).start()

    def _start_watcher(self) -> None:
        from .watcher import ConfigWatcher

        watcher = ConfigWatcher(self._reloader, delay_s=self._delay_s)
        with self._lock:
            if not self._stopped:
                watcher.start()
                self._watcher = watcher

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


# --- check ------------------------------------------------------------------------------


def run_check(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .config import check_files

    mcp_path, rules_path = _config_paths(options, environ)
    problems, warnings = check_files(str(mcp_path), str(rules_path), environ)
    out.write(f"Checked {mcp_path}\n    and {rules_path}\n")
    for problem in problems:
        out.write(f"error: {problem}\n")
    for warning in warnings:
        out.write(f"warning: {warning}\n")
    for path, flag, variable in ((mcp_path, "--mcp-config", "GATEWAY_MCP_CONFIG"), (rules_path, "--rules", "GATEWAY_RULES")):
        if not path.exists():
            out.write(f"hint: to check another file, give its path with {flag} PATH or {variable}\n")
    out.write(f"{len(problems)} error(s), {len(warnings)} warning(s)\n")
    return 1 if problems else 0


# --- demo -------------------------------------------------------------------------------


def run_demo(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .demo import run

    mcp_path, rules_path = _config_paths(options, environ)
    return run(REPO_ROOT / "gateway.py", mcp_path, rules_path, out)
