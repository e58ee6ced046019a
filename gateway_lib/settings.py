"""Every setting of `serve`, from its flag or GATEWAY_* variable, checked against its valid range.

The caller (cli, the only reader of the environment) hands the parsed flags and the
environment in; nothing here reads either itself. All settings are checked before anything
starts, and every bad one is reported, each with what would be valid. A flag wins over its
variable; an empty variable counts as unset, except GATEWAY_AGENT: an empty pin would
silently turn pinning off, so it is refused like an invalid one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .policy import is_valid_agent_id

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_MAX_WORKERS = 16
MAX_WORKERS = 1024
MIN_LINE_BYTES = 1024  # an initialize request must fit
MAX_LINE_BYTES = 1024 ** 3
MAX_TIMEOUT_MS = 24 * 3600 * 1000
MAX_CACHE_TTL_S = 7 * 24 * 3600.0
MAX_DEBOUNCE_MS = 60_000
MAX_SPARE_IDLE_S = 7 * 24 * 3600.0


class SettingsError(Exception):
    """One or more settings are invalid; `problems` says which and what is valid."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ServeSettings:
    debug: bool
    pinned_agent: str | None
    default_agent: str | None
    audit_log: str
    max_workers: int
    max_line_bytes: int
    timeout_ms: int
    tool_cache_ttl_s: float
    log_level: str
    reload_debounce_ms: int
    max_result_tokens: int
    init_strategy: str
    spare_idle_s: float
    max_timeout_ms: int = 600_000


@dataclass(frozen=True)
class Defaults:
    """The defaults that belong to other modules, handed in so this one imports none of them."""

    audit_log: str
    max_line_bytes: int
    timeout_ms: int
    tool_cache_ttl_s: float
    reload_debounce_ms: int
    max_result_tokens: int
    init_strategy: str
    init_strategies: tuple[str, ...]
    spare_idle_s: float
    max_timeout_ms: int = 600_000


def read_serve_settings(options: Any, environ: Mapping[str, str], defaults: Defaults) -> ServeSettings:
    """The settings in force, or SettingsError listing every invalid one."""
    reader = _Reader(environ)
    pinned_agent, default_agent = _identity(reader, options.agent)
    settings = ServeSettings(
        debug=reader.read("--debug", options.debug, "GATEWAY_DEBUG", False, _boolean),
        pinned_agent=pinned_agent,
        default_agent=default_agent,
        audit_log=reader.read("--audit-log", options.audit_log, "GATEWAY_AUDIT_LOG", defaults.audit_log, _path),
        max_workers=reader.read("--max-workers", options.max_workers, "GATEWAY_MAX_WORKERS", DEFAULT_MAX_WORKERS,
                                _integer(1, MAX_WORKERS)),
        max_line_bytes=reader.read("--max-line-bytes", options.max_line_bytes, "GATEWAY_MAX_LINE_BYTES",
                                   defaults.max_line_bytes, _integer(MIN_LINE_BYTES, MAX_LINE_BYTES)),
        timeout_ms=reader.read("--timeout-ms", options.timeout_ms, "GATEWAY_TIMEOUT_MS", defaults.timeout_ms,
                               _integer(1, MAX_TIMEOUT_MS)),
        tool_cache_ttl_s=reader.read("--tool-cache-ttl", options.tool_cache_ttl, "GATEWAY_TOOL_CACHE_TTL",
                                     defaults.tool_cache_ttl_s, _number(0, MAX_CACHE_TTL_S)),
        log_level=reader.read("--log-level", options.log_level, "GATEWAY_LOG_LEVEL", "INFO", _log_level),
        reload_debounce_ms=reader.read(None, None, "GATEWAY_RELOAD_DEBOUNCE_MS", defaults.reload_debounce_ms,
                                       _integer(0, MAX_DEBOUNCE_MS)),
        max_result_tokens=reader.read(None, None, "GATEWAY_MAX_RESULT_TOKENS", defaults.max_result_tokens,
                                      _integer(1, MAX_LINE_BYTES)),
        init_strategy=reader.read("--init-strategy", options.init_strategy, "GATEWAY_INIT_STRATEGY",
                                  defaults.init_strategy, _one_of(defaults.init_strategies)),
        spare_idle_s=reader.read(None, None, "GATEWAY_SPARE_IDLE_S", defaults.spare_idle_s,
                                 _number(0.001, MAX_SPARE_IDLE_S)),
        max_timeout_ms=reader.read(None, None, "GATEWAY_MAX_TIMEOUT_MS", defaults.max_timeout_ms,
                                   _integer(1, MAX_TIMEOUT_MS)),
    )
    if reader.problems:
        raise SettingsError(reader.problems)
    return settings


class _Reader:
    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.problems: list[str] = []

    def read(self, flag: str | None, flag_value: Any, variable: str, default: Any,
             convert: Callable[[Any], Any], empty_is_unset: bool = True) -> Any:
        if flag_value is not None:
            source, raw = flag, flag_value
        elif variable in self._environ and (self._environ[variable] != "" or not empty_is_unset):
            source, raw = variable, self._environ[variable]
        else:
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            self.problems.append(f"{source} {raw!r} is not valid: {exc}")
            return default


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"use one of {', '.join(sorted(TRUE_WORDS))} or {', '.join(sorted(FALSE_WORDS))}")


def _agent_id(raw: str) -> str:
    if not is_valid_agent_id(raw):
        raise ValueError("an agent id is one or more ASCII letters, digits, '_', '.', '-'")
    return raw


def _path(raw: str) -> str:
    if not raw or "\0" in raw:
        raise ValueError("give a file path")
    return raw


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(raw: Any) -> int:
        try:
            value = raw if isinstance(raw, int) else int(raw.strip(), 10)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise ValueError(f"give a whole number from {low} to {high}")
        return value
    return convert


def _number(low: float, high: float) -> Callable[[Any], float]:
    def convert(raw: Any) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN fails every comparison
            raise ValueError(f"give a number from {low:g} to {high:g}")
        return value
    return convert


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"use one of {', '.join(choices)}")
        return raw
    return convert


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"use one of {', '.join(LOG_LEVELS)}")
    return level


def read_identity(agent_flag: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(pinned agent, default agent) from --agent / GATEWAY_AGENT and GATEWAY_DEFAULT_AGENT,
    or SettingsError; for `check`, which has no other serve setting to read."""
    reader = _Reader(environ)
    identity = _identity(reader, agent_flag)
    if reader.problems:
        raise SettingsError(reader.problems)
    return identity


def _identity(reader: "_Reader", agent_flag: str | None) -> tuple[str | None, str | None]:
    pinned = reader.read("--agent", agent_flag, "GATEWAY_AGENT", None, _agent_id, empty_is_unset=False)
    default = reader.read(None, None, "GATEWAY_DEFAULT_AGENT", None, _agent_id)
    return pinned, default


def identity_warnings(pinned: str | None, default: str | None, agents: Iterable[str]) -> list[str]:
    """What a pinned or default agent missing from the rules will do to every call."""
    agents = set(agents)
    warnings = []
    if pinned is not None and pinned not in agents:
        warnings.append(f"pinned agent {pinned!r} (--agent / GATEWAY_AGENT) is not in the rules: "
                        "every call is refused until it is added")
    if default is not None and pinned is None and default not in agents:
        warnings.append(f"GATEWAY_DEFAULT_AGENT {default!r} is not in the rules: a call without agent_id "
                        "gets FALLBACK_AGENT_NOT_IN_RULES until it is added")
    return warnings
