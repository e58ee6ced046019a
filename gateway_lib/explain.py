"""`gateway.py explain`: who an agent acts as, and what it may use and why, answered from the config files.

The identity chain is the gateway's own (policy.resolve_agent), and every decision is
policy.decide_server / decide_tool, so the answer is what a call would get; a denial is
worded as the gateway words it. Tools come from listing the server once (--server), or
from the one tool asked about (--tool), which needs no listing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, TextIO

from . import pins, policy
from .errors import GatewayError
from .model import RulesConfig, ServersConfig


@dataclass(frozen=True)
class Verdict:
    server: str
    allowed: bool
    rule: str
    tool: str | None = None
    message: str | None = None  # the words of the denial a call would get
    pin: str | None = None  # what the pins make of a listed tool


def server_denial(agent: str, server: str) -> str:
    return f"Agent {agent!r} may not use server {server!r}"


def tool_denial(agent: str, server: str, tool: str) -> str:
    return f"Agent {agent!r} may not call tool {tool!r} on server {server!r}"


def identity(rules: RulesConfig, requested: str | None, default_agent: str | None,
             pinned: str | None) -> dict[str, Any]:
    """The steps of the identity chain, and the agent a call acts as (or the error it gets)."""
    chain = [
        f"pinned agent (--agent / GATEWAY_AGENT): {pinned!r}" if pinned else "pinned agent: none",
        f"agent_id given: {requested!r}" if requested is not None else "agent_id: omitted",
    ]
    if pinned is None and requested is None:
        chain += [
            f"defaults.deny_on_missing_agent: {str(rules.deny_on_missing_agent).lower()}",
            f"GATEWAY_DEFAULT_AGENT: {default_agent!r}" if default_agent else "GATEWAY_DEFAULT_AGENT: not set",
            "an agent named 'default': " + ("defined" if "default" in rules.agents else "not defined"),
        ]
    try:
        agent = policy.resolve_agent(rules, requested, default_agent=default_agent, pinned=pinned)
    except GatewayError as exc:
        return {"requested": requested, "chain": chain, "agent": None,
                "error": {"code": exc.code, "message": exc.message}}
    return {"requested": requested, "chain": chain, "agent": agent, "error": None}


def decide(rules: RulesConfig, servers: ServersConfig, agent: str, only_server: str | None,
           tool: str | None, list_tools: Callable[[Any], list[dict]] | None,
           pinset: pins.PinSet | None) -> tuple[list[Verdict], list[Verdict], dict[str, str]]:
    """(server verdicts, tool verdicts, servers that could not be listed)."""
    names = [only_server] if only_server else sorted(servers.servers)
    server_verdicts, tool_verdicts, unlisted = [], [], {}
    for name in names:
        decision = policy.decide_server(rules, agent, name)
        server_verdicts.append(Verdict(name, decision.allowed, decision.rule,
                                       message=None if decision.allowed else server_denial(agent, name)))
        if name not in servers.servers:
            unlisted[name] = "not defined in .mcp.json: a call gets SERVER_UNAVAILABLE"
        if tool is not None:
            tool_verdicts.append(_tool_verdict(rules, agent, name, tool))
        elif only_server and list_tools is not None and name in servers.servers:
            try:
                listed = list_tools(servers.servers[name])
            except GatewayError as exc:
                unlisted[name] = f"tools not listed: {exc.message}"
                continue
            changes = {c.tool: c for c in (pins.compare(pinset, name, listed) or [])} if pinset else {}
            for definition in listed:
                change = changes.get(definition["name"])
                verdict = _tool_verdict(rules, agent, name, definition["name"])
                tool_verdicts.append(Verdict(**{**asdict(verdict), "pin": change.summary() if change else None}))
    return server_verdicts, tool_verdicts, unlisted


def _tool_verdict(rules: RulesConfig, agent: str, server: str, tool: str) -> Verdict:
    decision = policy.decide_tool(rules, agent, server, tool)
    if decision.allowed:
        return Verdict(server, True, decision.rule, tool)
    # A denied server denies its tools with the server's words, as execute_tool does.
    return Verdict(server, False, decision.rule, tool, tool_denial(agent, server, tool))


def write_text(report: dict[str, Any], out: TextIO) -> None:
    who = report["identity"]
    out.write("Identity:\n")
    for step in who["chain"]:
        out.write(f"  {step}\n")
    if who["error"]:
        out.write(f"  -> no access: {who['error']['code']}: {who['error']['message']}\n")
        return
    out.write(f"  -> acts as agent {who['agent']!r}\n")
    out.write(f"Servers (from {report['mcp_config']}):\n")
    for verdict in report["servers"]:
        out.write(_line(verdict["server"], verdict))
    if report["tools"]:
        out.write("Tools:\n")
    for verdict in report["tools"]:
        pin = f" [pins: {verdict['pin']}]" if verdict.get("pin") else ""
        out.write(_line(f"{verdict['server']}/{verdict['tool']}", verdict, pin))
    for server, message in report["unlisted"].items():
        out.write(f"  {server}: {message}\n")


def _line(name: str, verdict: dict[str, Any], suffix: str = "") -> str:
    if verdict["allowed"]:
        return f"  {name}: allowed by {verdict['rule']}{suffix}\n"
    return f"  {name}: denied by {verdict['rule']}: {verdict['message']}{suffix}\n"


def run(rules: RulesConfig, servers: ServersConfig, *, agent: str | None, server: str | None, tool: str | None,
        default_agent: str | None, pinned: str | None, list_tools: Callable[[Any], list[dict]] | None,
        pinset: pins.PinSet | None, as_json: bool, out: TextIO) -> int:
    who = identity(rules, agent, default_agent, pinned)
    report: dict[str, Any] = {"identity": who, "mcp_config": servers.path, "rules": rules.path,
                              "servers": [], "tools": [], "unlisted": {}}
    if who["agent"] is not None:
        server_verdicts, tool_verdicts, unlisted = decide(rules, servers, who["agent"], server, tool, list_tools, pinset)
        report["servers"] = [asdict(v) for v in server_verdicts]
        report["tools"] = [asdict(v) for v in tool_verdicts]
        report["unlisted"] = unlisted
    if as_json:
        out.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        write_text(report, out)
    return 0
