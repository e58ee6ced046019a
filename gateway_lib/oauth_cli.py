"""`gateway.py login SERVER` / `logout SERVER`, and the OAuth lines of `check` and of status.

login signs in ahead of time from a terminal (the browser opens; the URL is also printed), so
later calls need no browser; logout forgets the server's tokens and registration. check and
get_gateway_status show, per OAuth server, whether tokens are held and when they expire:
never a token.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

from .cli_common import common_options, config_paths, configure_logging, load_or_say
from .model import PER_CALL, ServersConfig, ServerSpec
from .oauth_store import TokenStore, default_oauth_dir, key_of, uses_oauth

logger = logging.getLogger(__name__)

COMMANDS = ("login", "logout")
LOGIN_TIMEOUT_S = 300.0  # time to finish signing in in the browser


def token_store(environ: Mapping[str, str]) -> TokenStore:
    return TokenStore(default_oauth_dir(environ, Path.home()))


def _parser(command: str) -> argparse.ArgumentParser:
    what = ("Sign in to an OAuth-protected server now, so calls need no browser." if command == "login"
            else "Forget the OAuth tokens held for a server.")
    parser = argparse.ArgumentParser(prog=f"gateway.py {command}", description=what)
    parser.add_argument("server", help="the server's name in .mcp.json")
    common_options(parser)
    return parser


def main(command: str, argv: list[str], environ: Mapping[str, str], out: TextIO) -> int:
    from .config import load_servers

    options = _parser(command).parse_args(argv)
    configure_logging(environ.get("GATEWAY_LOG_LEVEL") or "INFO")
    mcp_path, _ = config_paths(options, environ)
    servers = load_or_say(lambda: load_servers(str(mcp_path), environ), out)
    if servers is None:
        return 1
    spec = servers.servers.get(options.server)
    if spec is None:
        names = ", ".join(sorted(servers.servers)) or "none"
        out.write(f"error: no server {options.server!r} in {mcp_path} (servers: {names})\n")
        return 1
    if not uses_oauth(spec):
        out.write(f"error: server {spec.name!r} does not use OAuth (only http/sse servers without \"oauth\": false do)\n")
        return 1
    store = token_store(environ)
    if command == "logout":
        return _logout(spec, store, out)
    return _login(spec, store, out)


def _login(spec: ServerSpec, store: TokenStore, out: TextIO) -> int:
    from .downstream import Downstream
    from .errors import GatewayError

    out.write(f"Signing in to {spec.name!r} (if a sign-in is needed a browser opens; its address is logged too) ...\n")
    out.flush()
    downstream = Downstream(errlog=sys.stderr, token_store=store)
    try:
        downstream.list_tools(dataclasses.replace(spec, session=PER_CALL), LOGIN_TIMEOUT_S)
    except GatewayError as exc:
        out.write(f"error: {exc.message}\n")
        return 1
    finally:
        downstream.shutdown()
    out.write(f"Signed in to {spec.name!r}: {describe(status_of(spec, store))}; tokens are kept in {store.directory}\n")
    return 0


def _logout(spec: ServerSpec, store: TokenStore, out: TextIO) -> int:
    lock = store.lock(key_of(spec))
    with lock.holding(timeout_s=10.0):  # wait out a refresh in progress, then forget regardless
        forgot = store.forget(key_of(spec))
    out.write(f"Forgot the tokens of {spec.name!r}\n" if forgot else f"No tokens were held for {spec.name!r}\n")
    return 0


def status_of(spec: ServerSpec, store: TokenStore) -> dict[str, Any]:
    return store.summary(key_of(spec))


def status(servers: ServersConfig, store: TokenStore) -> dict[str, dict[str, Any]]:
    """For get_gateway_status: per OAuth server, whether tokens are held and their expiry."""
    return {name: status_of(spec, store) for name, spec in sorted(servers.servers.items()) if uses_oauth(spec)}


def describe(summary: Mapping[str, Any]) -> str:
    if not summary.get("signed_in"):
        return "not signed in"
    expiry = summary.get("expires_at")
    words = "signed in" + (f", the access token expires {expiry}" if expiry else ", no expiry given")
    if summary.get("expired"):
        words += " (expired" + (": it is refreshed on the next call)" if summary.get("refreshable") else ")")
    elif summary.get("refreshable"):
        words += " (refreshable)"
    return words


def check_lines(mcp_path: Path, environ: Mapping[str, str]) -> list[str]:
    """One `oauth:` line per OAuth server of a loadable .mcp.json."""
    from .config import load_servers
    from .errors import ConfigError

    try:
        servers = load_servers(str(mcp_path), environ)
    except (ConfigError, OSError):
        return []
    store = token_store(environ)
    lines = []
    for name, summary in status(servers, store).items():
        hint = "" if summary.get("signed_in") else f" (sign in with 'gateway.py login {name}', or on its first call)"
        lines.append(f"oauth: server {name!r}: {describe(summary)}{hint}")
    return lines
