"""Run an entry's `headersHelper`: a shell command whose stdout is a JSON object of headers.

As Claude Code does: through the shell, with the entry's env, bounded (10 s). Its output
(stdout and stderr) holds credentials, so none of it is ever logged or put in an error:
a failure names only the exit status, the time-out, or what was wrong with the shape.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Mapping

from .errors import ServerUnavailable

HELPER_TIMEOUT_S = 10.0
MAX_OUTPUT_BYTES = 64 * 1024  # headers, not a document: more than this is a broken helper
_KILL_WAIT_S = 2.0


def run_headers_helper(
    server: str, command: str, env: Mapping[str, str], cwd: str | None = None, timeout_s: float = HELPER_TIMEOUT_S
) -> dict[str, str]:
    """The headers the helper prints; ServerUnavailable (naming no output) if it fails."""
    prefix = f"Server {server!r}: its headersHelper"
    try:
        child = subprocess.Popen(
            command, shell=True, env=dict(env), cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group, so a time-out ends its children too
        )
    except OSError as exc:
        raise ServerUnavailable(f"{prefix} could not be started ({exc.strerror})") from None
    try:
        output, _ = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        raise ServerUnavailable(f"{prefix} timed out after {timeout_s:g} s") from None
    finally:
        _kill_group(child)  # a helper that exits leaves no background children behind
        child.stdout.close()
    if child.returncode != 0:
        status = f"killed by signal {-child.returncode}" if child.returncode < 0 else f"exit status {child.returncode}"
        raise ServerUnavailable(f"{prefix} failed ({status})")
    return _parse(prefix, output)


def _parse(prefix: str, output: bytes) -> dict[str, str]:
    if len(output) > MAX_OUTPUT_BYTES:
        raise ServerUnavailable(f"{prefix} printed more than {MAX_OUTPUT_BYTES} bytes")
    try:
        headers = json.loads(output.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ServerUnavailable(f"{prefix} did not print a JSON object") from None
    if not isinstance(headers, dict):
        raise ServerUnavailable(f"{prefix} printed JSON that is not an object")
    bad = sorted(name for name, value in headers.items() if not isinstance(value, str) or not _valid_header(name, value))
    if bad:
        # Header names are not secrets; values are, so only names are quoted.
        raise ServerUnavailable(f"{prefix} printed invalid headers: {', '.join(repr(name) for name in bad)}")
    return headers


def _valid_header(name: str, value: str) -> bool:
    token_chars = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return bool(name) and set(name) <= token_chars and not any(ch in value for ch in "\r\n\0")


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        child.wait(_KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        pass
