"""What the audit line and the metrics say about one gateway tool call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .sendable import has_lone_surrogate

# The outcome of a call, as the audit log names it; the first two are not failures.
OUTCOME_OK = "ok"
OUTCOME_TOOL_ERROR = "tool_error"  # the downstream tool answered with isError: true
OUTCOME_ERROR = "error"  # a gateway error, answered as a tool result
OUTCOME_INVALID_PARAMS = "invalid_params"
OUTCOME_CANCELLED = "cancelled"
OUTCOME_INTERNAL_ERROR = "internal_error"


@dataclass
class CallRecord:
    """What the audit line and the metrics say about one call; filled in as the call goes."""

    tool: str
    arguments: dict[str, Any]
    agent: str | None = None
    decision: str | None = None
    rule: str | None = None
    outcome: str = OUTCOME_OK
    error_code: str | None = None
    started: float = field(default_factory=time.perf_counter)
    extra: dict[str, Any] = field(default_factory=dict)  # feature fields, e.g. result sizes

    def audit_fields(self) -> dict[str, Any]:
        args = self.arguments.get("args")
        return {
            # Unresolved (refused): the id as the call gave it, so a refusal shows who tried.
            "agent": self.agent if self.agent is not None else _auditable(self.arguments.get("agent_id")),
            "tool": self.tool,
            "server": _auditable(self.arguments.get("server")),
            "downstream_tool": _auditable(self.arguments.get("tool")),
            "arg_names": sorted(_auditable(name) for name in args) if isinstance(args, dict) else None,
            "decision": self.decision,
            "rule": self.rule,
            "outcome": self.outcome,
            "error_code": self.error_code,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
            **self.extra,
        }


def _auditable(value: Any) -> str | None:
    """A string the audit file can hold: lone surrogates written as \\udXXX escapes."""
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if has_lone_surrogate(value) else value
