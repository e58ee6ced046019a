"""What every command line shares: the common flags, where the config files are, exit codes, logging, config problems.

Imported by cli.py, serve.py, oauth_cli.py and pins_command.py; it imports no command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, TextIO, TypeVar

from . import __version__
from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_CONFIG = REPO_ROOT / "config"
EXIT_CONFIG = 1
EXIT_USAGE = 2  # argparse's code for a bad flag; a bad setting is the same mistake

T = TypeVar("T")


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mcp-config", metavar="PATH", help="the .mcp.json of downstream servers (env GATEWAY_MCP_CONFIG)")
    parser.add_argument("--rules", metavar="PATH", help="the .mcp-gateway-rules.json (env GATEWAY_RULES)")
    parser.add_argument("--pins", metavar="PATH", help="the .mcp-gateway-pins.json (env GATEWAY_PINS)")
    parser.add_argument("--version", action="version", version=f"agent-mcp-gateway {__version__}")


def config_paths(options: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Path, Path]:
    from .locate import find_config_paths

    found_mcp, found_rules = find_config_paths(environ, Path.cwd(), Path.home(), BUNDLED_CONFIG)
    mcp_path = Path(options.mcp_config) if options.mcp_config else found_mcp
    rules_path = Path(options.rules) if options.rules else found_rules
    # Absolute but not resolved: the watcher must see a symlinked config retargeted.
    return Path(os.path.abspath(mcp_path)), Path(os.path.abspath(rules_path))


def pins_path(options: argparse.Namespace, environ: Mapping[str, str], rules_path: Path) -> Path:
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


def configure_logging(level_name: str) -> None:
    level = getattr(logging, level_name)  # a name settings.py has checked
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_quiet_libraries)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def load_or_say(load: Callable[[], T], out: TextIO) -> T | None:
    """What `load()` returns; or, when the config it reads is invalid, None after writing
    each problem to `out` as an `error:` line (the caller exits with its own code)."""
    try:
        return load()
    except ConfigError as exc:
        for problem in exc.problems:
            out.write(f"error: {problem}\n")
        return None
