"""Command line: builds the gateway from flags and environment, and runs it.

The only module that reads the environment. Commands:
    serve (default)  the MCP server, on stdio (or HTTP with --transport http)
    check            validate both config files as the running gateway would
    demo             start the gateway and drive one real client session against it
    token AGENT      print a new bearer token for AGENT, and the hash to put in the rules
    pins             show, diff and approve pinned tool definitions (pins_command.py)
    explain          what an agent may use and which rule decides it (explain.py)
    init             move a Claude Code / Claude Desktop config behind the gateway (init_config.py)
    login, logout    sign in to an OAuth-protected server ahead of time, or forget its tokens
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence, TextIO

from . import __version__
from .requirements import missing_message, missing_modules

logger = logging.getLogger("gateway_lib")

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_CONFIG = REPO_ROOT / "config"
# Shutdown: calls in flight get the grace to finish, then the endpoint's cancel wait; what
# follows (watcher, downstream sessions, audit) shares the rest of the bound.
SHUTDOWN_GRACE_S = 3.0
SHUTDOWN_BOUND_S = 5.0
EXIT_CONFIG = 1
EXIT_USAGE = 2  # argparse's code for a bad flag; a bad setting is the same mistake
# What each command imports (checked with find_spec before anything is imported).
NEEDED = {"serve": ("mcp", "watchdog", "jsonschema"), "check": ("jsonschema",), "demo": ("mcp", "watchdog", "jsonschema"),
          "pins": ("mcp", "jsonschema"), "explain": ("mcp", "jsonschema"), "init": ("jsonschema",)}


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mcp-config", metavar="PATH", help="the .mcp.json of downstream servers (env GATEWAY_MCP_CONFIG)")
    parser.add_argument("--rules", metavar="PATH", help="the .mcp-gateway-rules.json (env GATEWAY_RULES)")
    parser.add_argument("--pins", metavar="PATH", help="the .mcp-gateway-pins.json (env GATEWAY_PINS)")
    parser.add_argument("--version", action="version", version=f"agent-mcp-gateway {__version__}")


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway.py",
        description="MCP gateway on stdio. Other commands: 'gateway.py check', 'demo', 'pins', 'explain', 'init', 'login SERVER', 'logout SERVER'.",
        allow_abbrev=False,  # '--tool' must not silently mean '--tool-cache-ttl'
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
    parser.add_argument("--init-strategy", metavar="eager|lazy|off",
                        help="warm spare sessions of per-call servers (env GATEWAY_INIT_STRATEGY, default eager)")
    return parser


def _check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py check", description="Validate both config files and list every problem.",
                                     allow_abbrev=False)
    _common_options(parser)
    parser.add_argument("--agent", metavar="NAME", help="also check this pinned agent id against the rules (env GATEWAY_AGENT)")
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py demo", description="Start the gateway and show one client session against it.",
                                     allow_abbrev=False)
    _common_options(parser)
    return parser


def _pins_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py pins", description="Show, diff or approve pinned tool definitions: "
                                     "'pins', 'pins diff [SERVER]', 'pins approve SERVER [TOOL ...]'.",
                                     allow_abbrev=False)
    _common_options(parser)
    parser.add_argument("words", nargs="*", metavar="diff|approve ...")
    return parser


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py explain", description="Say, from the config files, what an agent "
                                     "may use and the rule that decides each server and tool.", allow_abbrev=False)
    _common_options(parser)
    parser.add_argument("--agent", metavar="NAME", help="the agent_id a call would pass (omit: the fallback chain)")
    parser.add_argument("--server", metavar="NAME", help="only this server; lists its tools once")
    parser.add_argument("--tool", metavar="NAME", help="decide this tool (on --server, or on every server)")
    parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    return parser


def _init_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py init", description="Move a client's MCP config behind the gateway.",
                                     allow_abbrev=False)
    parser.add_argument("--from", dest="source", metavar="PATH", default=".mcp.json",
                        help="the client config to move (default: .mcp.json in the current folder)")
    parser.add_argument("--write", action="store_true", help="rewrite it to list only the gateway, after a backup")
    parser.add_argument("--force", action="store_true", help="replace servers.mcp.json and the rules file if they exist")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         out: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    from .oauth_cli import COMMANDS as OAUTH_COMMANDS

    if argv and argv[0] in OAUTH_COMMANDS:  # login, logout: oauth_cli.py
        from . import oauth_cli

        return oauth_cli.main(argv.pop(0), argv, environ, out, _common_options, _config_paths, _configure_logging)
    command = argv.pop(0) if argv and argv[0] in ("serve", "check", "demo", "pins", "explain", "init", "token") else "serve"
    if command == "token":
        return run_token(_token_parser().parse_args(argv), out)
    signals = None
    if command == "serve":
        from .lifecycle import Signals

        signals = Signals().install()  # first of all: an early SIGHUP or SIGQUIT must not end the process
    parser = {"serve": _serve_parser, "check": _check_parser, "demo": _demo_parser, "pins": _pins_parser,
              "explain": _explain_parser, "init": _init_parser}[command]()
    options = parser.parse_args(argv)  # --help and --version answer even without the dependencies
    missing = missing_modules(NEEDED[command])
    if missing:
        sys.stderr.write(missing_message(missing) + "\n")
        return EXIT_CONFIG
    if command == "check":
        return run_check(options, environ, out)
    if command == "pins":
        return run_pins(options, environ, out)
    if command == "explain":
        return run_explain(options, environ, out)
    if command == "init":
        return run_init(options, environ, out)
    if command == "demo":
        return run_demo(options, environ, out)
    return run_serve(options, environ, signals)


def _config_paths(options: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Path, Path]:
    from .config import find_config_paths

    found_mcp, found_rules = find_config_paths(environ, Path.cwd(), Path.home(), BUNDLED_CONFIG)
    mcp_path = Path(options.mcp_config) if options.mcp_config else found_mcp
    rules_path = Path(options.rules) if options.rules else found_rules
    # Absolute but not resolved: the watcher must see a symlinked config retargeted.
    return Path(os.path.abspath(mcp_path)), Path(os.path.abspath(rules_path))


def _pins_path(options: argparse.Namespace, environ: Mapping[str, str], rules_path: Path) -> Path:
    from .locate import USER_CONFIG_DIR
    from .pins import PINS_ENV, find_pins_path

    return find_pins_path(options.pins or environ.get(PINS_ENV), rules_path, BUNDLED_CONFIG, Path.home() / USER_CONFIG_DIR)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Below WARNING, only the gateway's own records reach stderr.

    Libraries log what the gateway promises to keep secret: httpx2 logs every request's
    full URL at INFO (with a '?key=${VAR}' value), and the SDK logs messages (with
    argument values) at DEBUG.
    """
    return record.levelno >= logging.WARNING or record.name.split(".")[0] == "gateway_lib"


def _configure_logging(level_name: str) -> None:
    level = getattr(logging, level_name)  # a name settings.py has checked
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_quiet_libraries)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# --- serve ------------------------------------------------------------------------------


def run_serve(options: argparse.Namespace, environ: Mapping[str, str], signals) -> int:
    from .audit import AuditLog, default_audit_path
    from .budget import DEFAULT_MAX_RESULT_TOKENS
    from .catalog import DEFAULT_TTL_S, ToolCatalog
    from .config import ConfigStore, build_snapshot, load_rules, load_servers
    from .downstream import Downstream
    from .downstream.spares import DEFAULT_IDLE_S, EAGER, STRATEGIES, SpareSettings
    from .errors import ConfigError
    from .framing import DEFAULT_MAX_LINE_BYTES, MessageReader, MessageWriter, claim_stdin, claim_stdout
    from .lifecycle import ThreadDeaths, exit_now_if_stuck
    from .methods import McpProtocol
    from .metrics import Metrics
    from .pins import PinStore
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
    _configure_logging(serve.log_level)
    deaths = ThreadDeaths().install()
    mcp_path, rules_path = _config_paths(options, environ)
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
        pin_store = PinStore(_pins_path(options, environ, rules_path), audit)
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
    downstream.use_tool_lists(catalog)  # a spare lists a server's tools into the cache as it starts
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

    wire = claim_stdout()
    protocol = McpProtocol(tools, on_initialized=background.start)
    endpoint = Endpoint(
        protocol.methods(), protocol.notifications(), MessageWriter(wire).write,
        max_workers=serve.max_workers,
        cancel_notification="notifications/cancelled",
        batches_allowed=protocol.batches_allowed,
    )
    protocol.use_peer(endpoint.peer)  # changed roots of the client are refetched through it
    reader = MessageReader(claim_stdin(), serve.max_line_bytes)
    stop = signals.stop

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
    while not stop.wait(1.0):
        pass
    endpoint.refuse_new_requests()  # before the log line, which tests take as the moment of shutdown
    logger.info("Shutting down")
    deadline = time.monotonic() + SHUTDOWN_BOUND_S
    background.stop()
    endpoint.shutdown(SHUTDOWN_GRACE_S)
    background.join(_left(deadline))
    downstream.shutdown(_left(deadline))
    audit.close()
    exit_now_if_stuck(0, endpoint.wait_workers_idle)  # a worker blocked on a client that stopped reading
    return 0


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


def _serve_http(http, signals, *, downstream, background, audit, **parts) -> int:
    from .http_main import serve_http

    code = serve_http(http, signals, downstream=downstream, background=background, grace_s=SHUTDOWN_GRACE_S, **parts)
    deadline = time.monotonic() + SHUTDOWN_BOUND_S - SHUTDOWN_GRACE_S
    background.stop()
    background.join(_left(deadline))
    downstream.shutdown(_left(deadline))
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
        return EXIT_USAGE
    out.write(text)
    return 0


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


# --- check ------------------------------------------------------------------------------


def run_check(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .config import check_files
    from .pins import pin_problems

    mcp_path, rules_path = _config_paths(options, environ)
    problems, warnings = check_files(str(mcp_path), str(rules_path), environ)
    pins_path = _pins_path(options, environ, rules_path)
    problems += pin_problems(pins_path)
    setting_problems, identity = _check_identity(options.agent, environ, rules_path)
    problems = [*problems, *setting_problems]
    warnings = [*warnings, *identity]
    out.write(f"Checked {mcp_path}\n    and {rules_path}\n")
    if pins_path.exists():
        out.write(f"    and {pins_path}\n")
    for problem in problems:
        out.write(f"error: {problem}\n")
    for warning in warnings:
        out.write(f"warning: {warning}\n")
    from .oauth_cli import check_lines

    for line in check_lines(mcp_path, environ):
        out.write(f"{line}\n")
    for path, flag, variable in ((mcp_path, "--mcp-config", "GATEWAY_MCP_CONFIG"), (rules_path, "--rules", "GATEWAY_RULES")):
        if not path.exists():
            out.write(f"hint: to check another file, give its path with {flag} PATH or {variable}\n")
    out.write(f"{len(problems)} error(s), {len(warnings)} warning(s)\n")
    return 1 if problems else 0


def _check_identity(agent_flag: str | None, environ: Mapping[str, str], rules_path: Path) -> tuple[list[str], list[str]]:
    """The pinned and default agent as a gateway started here would take them: problems
    (an invalid id, which stops `serve`) and warnings (an id the rules lack)."""
    from .config import load_rules
    from .errors import ConfigError
    from .settings import SettingsError, identity_warnings, read_identity

    try:
        pinned, default = read_identity(agent_flag, environ)
    except SettingsError as exc:
        return exc.problems, []
    try:
        agents = load_rules(str(rules_path)).agents
    except ConfigError:
        return [], []  # the rules' own problems are listed already
    return [], identity_warnings(pinned, default, agents)


# --- demo -------------------------------------------------------------------------------


def run_demo(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .demo import run

    mcp_path, rules_path = _config_paths(options, environ)
    return run(REPO_ROOT / "gateway.py", mcp_path, rules_path, out)


# --- pins -------------------------------------------------------------------------------


def run_pins(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .config import load_servers
    from .errors import ConfigError
    from .pins_command import TROUBLE, run

    _configure_logging("WARNING")
    mcp_path, rules_path = _config_paths(options, environ)
    try:
        servers = load_servers(str(mcp_path), environ)
    except ConfigError as exc:
        for problem in exc.problems:
            out.write(f"error: {problem}\n")
        return TROUBLE
    return run(options.words, servers, str(_pins_path(options, environ, rules_path)), out)


# --- explain ----------------------------------------------------------------------------


def run_explain(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .config import load_rules, load_servers
    from .errors import ConfigError
    from .explain import run
    from .pins import load_pins
    from .pins_command import list_server
    from .settings import SettingsError, read_identity

    _configure_logging("WARNING")
    try:
        pinned, default_agent = read_identity(None, environ)  # what a gateway started here would pin
    except SettingsError as exc:
        for problem in exc.problems:
            out.write(f"error: {problem}\n")
        return EXIT_USAGE
    mcp_path, rules_path = _config_paths(options, environ)
    try:
        servers, rules = load_servers(str(mcp_path), environ), load_rules(str(rules_path))
        pinset = load_pins(_pins_path(options, environ, rules_path))
    except ConfigError as exc:
        for problem in exc.problems:
            out.write(f"error: {problem}\n")
        return EXIT_CONFIG
    return run(rules, servers, agent=options.agent, server=options.server, tool=options.tool,
               default_agent=default_agent, pinned=pinned,
               list_tools=list_server, pinset=pinset, as_json=options.json, out=out)


# --- init -------------------------------------------------------------------------------


def run_init(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .init_config import run

    return run(Path(options.source), write=options.write, force=options.force, python=sys.executable,
               gateway=REPO_ROOT / "gateway.py", environ=environ, out=out)
