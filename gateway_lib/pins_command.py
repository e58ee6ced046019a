"""`gateway.py pins`: show the pin file, diff it against what the servers list now, approve changes.

    pins                         every server and its pinned tools (reads no server)
    pins diff [SERVER]           list the server(s) once and show what differs; exit 1 when
                                 something does, 0 when nothing does, 2 on trouble (like diff)
    pins approve SERVER [TOOL…]  pin the current definitions (all of SERVER's tools, or those named)
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, TextIO

from . import pins
from .cli_common import load_or_say
from .errors import GatewayError
from .model import ServerSpec, ServersConfig

DEFAULT_LIST_TIMEOUT_S = 60.0
TROUBLE = 2


def list_server(spec: ServerSpec, token_store: Any = None) -> list[dict]:
    """The server's tools, listed once through a short-lived downstream session.

    With `token_store`, a server that needs OAuth gets the tokens `gateway.py login` stored,
    as a serving gateway's sessions do (a browser opens only if they are gone for good)."""
    from .downstream import Downstream

    downstream = Downstream(errlog=sys.stderr, token_store=token_store)
    try:
        timeout_s = (spec.timeout_ms or DEFAULT_LIST_TIMEOUT_S * 1000) / 1000
        return downstream.list_tools(spec, timeout_s, threading.Event())
    finally:
        downstream.shutdown(3.0)


ListTools = Callable[[ServerSpec], list[dict]]


def run(words: list[str], servers: ServersConfig, pins_path: str, out: TextIO,
        list_tools: ListTools = list_server) -> int:
    pinset = load_or_say(lambda: pins.load_pins(pins_path), out)
    if pinset is None:
        return TROUBLE
    action, rest = (words[0], words[1:]) if words else ("show", [])
    if action == "show" and not rest:
        return show(pinset, servers, out)
    if action == "diff" and len(rest) <= 1:
        return diff(pinset, servers, rest[0] if rest else None, out, list_tools)
    if action == "approve" and rest:
        return approve(pinset, servers, rest[0], rest[1:], out, list_tools)
    out.write("usage: gateway.py pins | pins diff [SERVER] | pins approve SERVER [TOOL ...]\n")
    return TROUBLE


def show(pinset: pins.PinSet, servers: ServersConfig, out: TextIO) -> int:
    out.write(f"Pins in {pinset.path}\n")
    for name in sorted(set(servers.servers) | set(pinset.servers)):
        pinned = pinset.servers.get(name)
        where = "" if name in servers.servers else " (not in .mcp.json)"
        if pinned is None:
            out.write(f"{name}: not pinned yet (its tools are pinned on first use)\n")
            continue
        out.write(f"{name}{where}: {len(pinned)} tool(s) pinned\n")
        for tool, pin in sorted(pinned.items()):
            out.write(f"  {tool}  sha256:{pin.sha256[:12]}  pinned {pin.pinned_at}\n")
    return 0


def _listed(servers: ServersConfig, name: str, out: TextIO, list_tools: ListTools) -> list[dict] | None:
    spec = servers.servers.get(name)
    if spec is None:
        out.write(f"error: server {name!r} is not defined in {servers.path}\n")
        return None
    try:
        return list_tools(spec)
    except GatewayError as exc:
        out.write(f"error: cannot list server {name!r}: {exc.message}\n")
        return None


def diff(pinset: pins.PinSet, servers: ServersConfig, only: str | None, out: TextIO,
         list_tools: ListTools) -> int:
    names = [only] if only else sorted(servers.servers)
    differing, trouble = [], False
    for name in names:
        tools = _listed(servers, name, out, list_tools)
        if tools is None:
            trouble = True
            continue
        changes = pins.compare(pinset, name, tools)
        if changes is None:
            out.write(f"{name}: not pinned yet ({len(tools)} tool(s); pinned on first use or by 'pins approve')\n")
            differing.append(name)
            continue
        gone = pins.removed(pinset, name, tools)
        if changes or gone:
            differing.append(name)
        by_name = {tool["name"]: tool for tool in tools}
        for change in changes:
            out.write(f"{name}/{change.tool}: {change.summary()}\n")
            for line in pins.diff_lines(name, pinset.servers[name].get(change.tool), by_name[change.tool]):
                out.write(f"    {line}\n")
        for tool in gone:
            out.write(f"{name}/{tool}: no longer listed (approving the server drops its pin)\n")
    if trouble:
        return TROUBLE
    if differing:
        out.write(f"{len(differing)} server(s) differ from their pins: {', '.join(differing)}\n")
        return 1
    out.write("Every listed tool matches its pin.\n")
    return 0


def approve(pinset: pins.PinSet, servers: ServersConfig, name: str, tool_names: list[str], out: TextIO,
            list_tools: ListTools) -> int:
    tools = _listed(servers, name, out, list_tools)
    if tools is None:
        return TROUBLE
    listed = {tool["name"] for tool in tools}
    unknown = [tool for tool in tool_names if tool not in listed]
    if unknown:
        out.write(f"error: server {name!r} lists no tool {', '.join(map(repr, unknown))}; nothing was approved\n")
        return TROUBLE
    wanted = set(tool_names) if tool_names else None
    pins.write_pins(pinset.with_tools(name, tools, wanted))
    approved = sorted(wanted if wanted is not None else listed)
    out.write(f"Approved {len(approved)} tool(s) of {name}: {', '.join(approved)}\nWrote {pinset.path}\n")
    return 0
