"""`gateway.py init`: move an existing Claude Code / Claude Desktop config behind the gateway.

Beside the source file it writes `servers.mcp.json` (the source's server entries, unchanged:
`${VAR}` references stay as written) and a starter rules file, prints the client entry that
lists only the gateway, and with `--write` rewrites the source after a backup. Nothing is
overwritten without `--force`, and a source that already lists only the gateway is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, TextIO

from .locate import RULES_NAME

SERVERS_NAME = "servers.mcp.json"
GATEWAY_ENTRY = "gateway"

STARTER_RULES = {
    "agents": {
        "main": {"allow": {"servers": ["*"]}},
        "reader": {"allow": {"servers": ["*"], "tools": {"*": ["read*", "get*", "list*", "search*"]}}},
    },
    "defaults": {"deny_on_missing_agent": True},
}


class InitError(Exception):
    """A reason not to go on, said in one sentence."""


def client_entry(python: str, gateway: Path, servers: Path, rules: Path) -> dict[str, Any]:
    """The client config that lists only the gateway, with absolute paths."""
    return {"mcpServers": {GATEWAY_ENTRY: {
        "command": python,
        "args": [str(gateway), "--mcp-config", str(servers), "--rules", str(rules)],
    }}}


def lists_only_the_gateway(entries: Mapping[str, Any]) -> bool:
    """True for a config that `init` (or a person) already put behind a gateway."""
    if len(entries) != 1:
        return False
    entry = next(iter(entries.values()))
    if not isinstance(entry, dict):
        return False
    words = [str(entry.get("command", ""))] + [str(arg) for arg in entry.get("args", []) if isinstance(arg, str)]
    return any(Path(word).name in ("gateway.py", "agent-mcp-gateway") for word in words)


def read_source(source: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the whole source document, its mcpServers); InitError when it cannot be moved."""
    try:
        document = json.loads(source.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InitError(f"{source} does not exist: give the client config to move with --from PATH") from None
    except (OSError, ValueError) as exc:
        raise InitError(f"{source} cannot be read as JSON ({exc})") from None
    entries = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise InitError(f"{source} has no server entries under 'mcpServers': nothing to move")
    if lists_only_the_gateway(entries):
        raise InitError(f"{source} already lists only the gateway: nothing to move (not even with --force)")
    return document, entries


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(path.name + ".init-tmp")
    temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def run(source: Path, *, write: bool, force: bool, python: str, gateway: Path,
        environ: Mapping[str, str], out: TextIO) -> int:
    from .config import check_files

    source = Path(os.path.abspath(source))
    try:
        document, entries = read_source(source)
        servers_path, rules_path = source.parent / SERVERS_NAME, source.parent / RULES_NAME
        existing = [str(path) for path in (servers_path, rules_path) if path.exists()]
        if existing and not force:
            raise InitError(f"{' and '.join(existing)} already exist(s): nothing was written; "
                            "pass --force to replace them")
    except InitError as exc:
        out.write(f"error: {exc}\n")
        return 1
    _write_json(servers_path, {"mcpServers": entries})
    _write_json(rules_path, STARTER_RULES)
    out.write(f"Wrote {servers_path} ({len(entries)} server(s), entries unchanged)\n")
    out.write(f"Wrote {rules_path} (agent 'main' may use everything, 'reader' only read*/get*/list*/search* tools; "
              "every call must name its agent_id)\n")
    entry = client_entry(python, gateway, servers_path, rules_path)
    if write:
        backup = source.with_name(f"{source.name}.bak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        shutil.copy2(source, backup)
        _write_json(source, {**document, **entry})
        out.write(f"Backed up {source} to {backup} and rewrote it to list only the gateway\n")
    else:
        out.write(f"Put this in {source} (or run again with --write):\n")
    out.write(json.dumps(entry, indent=2) + "\n")
    problems, warnings = check_files(str(servers_path), str(rules_path), environ)
    for problem in problems:
        out.write(f"error: {problem}\n")
    for warning in warnings:
        out.write(f"warning: {warning}\n")
    out.write(f"check: {len(problems)} error(s), {len(warnings)} warning(s)\n")
    return 1 if problems else 0
