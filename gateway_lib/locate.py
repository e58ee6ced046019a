"""Where the two config files are, when no path is given on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

MCP_CONFIG_NAME = ".mcp.json"
RULES_NAME = ".mcp-gateway-rules.json"
USER_CONFIG_DIR = Path(".config") / "agent-mcp-gateway"
MCP_CONFIG_ENV = "GATEWAY_MCP_CONFIG"
RULES_ENV = "GATEWAY_RULES"


def find_config_paths(
    environ: Mapping[str, str], cwd: Path, home: Path, bundled: Path
) -> tuple[Path, Path]:
    """(servers file, rules file), each chosen on its own: the environment variable, else
    the working directory, else ~/.config/agent-mcp-gateway, else the bundled default."""
    return (
        _find_one(MCP_CONFIG_ENV, MCP_CONFIG_NAME, environ, cwd, home, bundled),
        _find_one(RULES_ENV, RULES_NAME, environ, cwd, home, bundled),
    )


def _find_one(
    variable: str, name: str, environ: Mapping[str, str], cwd: Path, home: Path, bundled: Path
) -> Path:
    explicit = environ.get(variable)
    if explicit:
        # Taken as given even if missing: loading then fails loudly instead of quietly
        # using some other file.
        return _expand(explicit, cwd, home)
    for candidate in (cwd / name, home / USER_CONFIG_DIR / name):
        if candidate.is_file():
            return candidate
    return bundled / name


def _expand(value: str, cwd: Path, home: Path) -> Path:
    if value == "~" or value.startswith("~/"):
        return home / value[2:]
    return cwd / value  # an absolute value replaces cwd
