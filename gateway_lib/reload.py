"""Reload the two config files into the store, and keep a record of every attempt.

Each file reloads on its own: a new `.mcp.json` replaces only the servers half of the
snapshot, a new rules file only the rules half. A file is read, validated and built into
frozen objects before anything is swapped; if any step fails, the config in force stays
as it is and the failure is logged, counted and audited. After every successful swap of
the servers file, the listeners hear the new servers (to drop cached tool lists and
retire sessions of servers that changed or went away).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .audit import utc_now
from .config import load_rules, load_servers
from .errors import ConfigError, Problem
from .model import ServerSpec, Snapshot
from .store import GATEWAY_RULES, MCP_CONFIG, ConfigStore, warnings_by_file

logger = logging.getLogger(__name__)

KINDS = (MCP_CONFIG, GATEWAY_RULES)

# Quiet time after the last write before a file is read: one editor save is one reload.
DEFAULT_DEBOUNCE_S = 0.3

ServersListener = Callable[[Mapping[str, ServerSpec]], None]


@dataclass
class ReloadStatus:
    """What one config file's loads came to. Counts include the load at start-up.

    `last_error` belongs to the latest attempt: it is cleared by the next success.
    """

    path: str
    last_attempt: str | None = None
    last_success: str | None = None
    last_error: str | None = None
    attempt_count: int = 0
    success_count: int = 0


class Reloader:
    """Reloads `.mcp.json` and the rules file into a ConfigStore, one reload at a time.

    The store's current snapshot is taken to be what these two paths held at start-up.
    """

    def __init__(self, store: ConfigStore, mcp_path: str | os.PathLike[str], rules_path: str | os.PathLike[str],
                 environ: Mapping[str, str], audit: Any = None):
        self._store = store
        self._environ = environ
        self._audit = audit
        # Serialises reloads, so listeners hear swaps in the order they happened and the
        # counters of one file are never updated by two threads at once.
        self._lock = threading.Lock()
        self._listeners: list[ServersListener] = []
        started = utc_now()
        self._status = {
            kind: ReloadStatus(str(path), last_attempt=started, last_success=started, attempt_count=1, success_count=1)
            for kind, path in ((MCP_CONFIG, mcp_path), (GATEWAY_RULES, rules_path))
        }

    @property
    def paths(self) -> dict[str, str]:
        """kind -> the path as configured (symlinks not resolved)."""
        return {kind: status.path for kind, status in self._status.items()}

    def add_servers_listener(self, callback: ServersListener) -> None:
        """`callback(servers)` runs after every successful swap of the servers file."""
        with self._lock:
            self._listeners.append(callback)

    def reload_servers(self) -> bool:
        """Reload `.mcp.json`; True when the new file is in force."""
        return self._reload(MCP_CONFIG)

    def reload_rules(self) -> bool:
        """Reload the rules file; True when the new file is in force."""
        return self._reload(GATEWAY_RULES)

    def reload_all(self) -> bool:
        """Reload both files, each on its own: one that fails does not hold back the other."""
        servers_ok = self.reload_servers()
        rules_ok = self.reload_rules()
        return servers_ok and rules_ok

    def status(self) -> dict[str, dict[str, Any]]:
        """Per file: path, last attempt and success, last error, counts, current warnings."""
        snapshot = self._store.current()
        warnings = warnings_by_file(snapshot)
        with self._lock:
            return {kind: {**vars(status), "warnings": warnings[kind]} for kind, status in self._status.items()}

    # --- one attempt ------------------------------------------------------------------

    def _reload(self, kind: str) -> bool:
        with self._lock:
            status = self._status[kind]
            status.attempt_count += 1
            status.last_attempt = utc_now()
            try:
                snapshot = self._load_and_swap(kind, status.path)
            except ConfigError as exc:
                self._rejected(kind, status, exc.problems)
                return False
            except Exception as exc:  # a bug must not take the config in force with it
                logger.exception("Reload of %s failed unexpectedly; the previous config stays in force", status.path)
                problem = Problem(status.path, "$", f"internal error while reloading ({type(exc).__name__})")
                self._rejected(kind, status, [problem], logged=True)
                return False
            status.success_count += 1
            status.last_success = status.last_attempt
            status.last_error = None
            warnings = warnings_by_file(snapshot)[kind]
            logger.info("Reloaded %s", status.path)
            for warning in warnings:
                logger.warning("%s", warning)
            self._record(kind, status.path, "applied", warnings=warnings)
            if kind == MCP_CONFIG:
                self._notify(snapshot.servers.servers)
            return True

    def _load_and_swap(self, kind: str, path: str) -> Snapshot:
        # Everything that can fail happens before the swap, and the swap is one reference
        # assignment inside the store's lock.
        if kind == MCP_CONFIG:
            return self._store.replace_servers(load_servers(path, self._environ))
        return self._store.replace_rules(load_rules(path))

    def _rejected(self, kind: str, status: ReloadStatus, problems: list[Problem], logged: bool = False) -> None:
        status.last_error = "; ".join(str(problem) for problem in problems)
        if not logged:
            logger.error("Reload of %s rejected; the previous config stays in force:", status.path)
            for problem in problems:
                logger.error("  %s", problem)
        self._record(kind, status.path, "rejected", error=_summary(problems))

    def _notify(self, servers: Mapping[str, ServerSpec]) -> None:
        for listener in self._listeners:
            try:
                listener(servers)
            except Exception:
                logger.exception("A listener of server reloads failed; reloading goes on")

    def _record(self, kind: str, path: str, outcome: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.record("config_reload", file=kind, path=path, outcome=outcome, **fields)


def startup_warnings(snapshot: Snapshot) -> list[str]:
    """Every warning of both files, for the log at start-up (the loaders log none themselves)."""
    return list(snapshot.warnings)


def _summary(problems: list[Problem]) -> str:
    """Where the problems are, without their messages: those may quote values from the file."""
    places = [f"{problem.path} (line {problem.line})" if problem.line else problem.path for problem in problems]
    return f"{len(problems)} problem(s) at " + ", ".join(places)
