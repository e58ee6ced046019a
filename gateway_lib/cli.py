"""Command line: parses each command's flags and runs the command (`serve` is in serve.py).

The only module that reads the environment. Commands:
    serve (default)  the MCP server, on stdio (or HTTP with --transport http; serve.py)
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
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence, TextIO

from .cli_common import (EXIT_CONFIG, EXIT_USAGE, REPO_ROOT, common_options, config_paths, configure_logging,
                         load_or_say, pins_path)
from .requirements import missing_message, missing_modules

# What each command imports (checked with find_spec before anything is imported).
NEEDED = {"serve": ("mcp", "watchdog", "jsonschema"), "check": ("jsonschema",), "demo": ("mcp", "watchdog", "jsonschema"),
          "pins": ("mcp", "jsonschema"), "explain": ("mcp", "jsonschema"), "init": ("jsonschema",)}


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway.py",
        description="MCP gateway on stdio. Other commands: 'gateway.py check', 'demo', 'pins', 'explain', 'init', 'login SERVER', 'logout SERVER'.",
        allow_abbrev=False,  # '--tool' must not silently mean '--tool-cache-ttl'
    )
    common_options(parser)
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
    common_options(parser)
    parser.add_argument("--agent", metavar="NAME", help="also check this pinned agent id against the rules (env GATEWAY_AGENT)")
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py demo", description="Start the gateway and show one client session against it.",
                                     allow_abbrev=False)
    common_options(parser)
    return parser


def _pins_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py pins", description="Show, diff or approve pinned tool definitions: "
                                     "'pins', 'pins diff [SERVER]', 'pins approve SERVER [TOOL ...]'.",
                                     allow_abbrev=False)
    common_options(parser)
    parser.add_argument("words", nargs="*", metavar="diff|approve ...")
    return parser


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway.py explain", description="Say, from the config files, what an agent "
                                     "may use and the rule that decides each server and tool.", allow_abbrev=False)
    common_options(parser)
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

        return oauth_cli.main(argv.pop(0), argv, environ, out)
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
    from .serve import run_serve

    return run_serve(options, environ, signals)


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


# --- check ------------------------------------------------------------------------------


def run_check(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .config import check_files
    from .pins import pin_problems

    mcp_path, rules_path = config_paths(options, environ)
    problems, warnings = check_files(str(mcp_path), str(rules_path), environ)
    pins_file = pins_path(options, environ, rules_path)
    problems += pin_problems(pins_file)
    setting_problems, identity = _check_identity(options.agent, environ, rules_path)
    problems = [*problems, *setting_problems]
    warnings = [*warnings, *identity]
    out.write(f"Checked {mcp_path}\n    and {rules_path}\n")
    if pins_file.exists():
        out.write(f"    and {pins_file}\n")
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

    mcp_path, rules_path = config_paths(options, environ)
    return run(REPO_ROOT / "gateway.py", mcp_path, rules_path, out)


# --- pins -------------------------------------------------------------------------------


def run_pins(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .config import load_servers
    from .pins_command import TROUBLE, run

    configure_logging("WARNING")
    mcp_path, rules_path = config_paths(options, environ)
    servers = load_or_say(lambda: load_servers(str(mcp_path), environ), out)
    if servers is None:
        return TROUBLE
    return run(options.words, servers, str(pins_path(options, environ, rules_path)), out, _signed_in_lister(environ))


def _signed_in_lister(environ: Mapping[str, str]):
    """list_server with the user's OAuth tokens, as a gateway started here would use them."""
    import functools

    from .oauth_cli import token_store
    from .pins_command import list_server

    return functools.partial(list_server, token_store=token_store(environ))


# --- explain ----------------------------------------------------------------------------


def run_explain(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .config import load_rules, load_servers
    from .explain import run
    from .pins import load_pins
    from .settings import SettingsError, read_identity

    configure_logging("WARNING")
    try:
        pinned, default_agent = read_identity(None, environ)  # what a gateway started here would pin
    except SettingsError as exc:
        for problem in exc.problems:
            out.write(f"error: {problem}\n")
        return EXIT_USAGE
    mcp_path, rules_path = config_paths(options, environ)
    loaded = load_or_say(lambda: (load_servers(str(mcp_path), environ), load_rules(str(rules_path)),
                                  load_pins(pins_path(options, environ, rules_path))), out)
    if loaded is None:
        return EXIT_CONFIG
    servers, rules, pinset = loaded
    return run(rules, servers, agent=options.agent, server=options.server, tool=options.tool,
               default_agent=default_agent, pinned=pinned,
               list_tools=_signed_in_lister(environ), pinset=pinset, as_json=options.json, out=out)


# --- init -------------------------------------------------------------------------------


def run_init(options: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    from .init_config import run

    return run(Path(options.source), write=options.write, force=options.force, python=sys.executable,
               gateway=REPO_ROOT / "gateway.py", environ=environ, out=out)
