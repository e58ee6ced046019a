"""The Prometheus text exposition format (version 0.0.4): escaping and rendering of samples.

Knows the format only; what is measured comes from probes.py as families of samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed are the three characters the format escapes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


@dataclass
class Family:
    """One metric: its name, type, help line and samples (suffix, labels, value)."""

    name: str
    kind: str  # counter, gauge, histogram
    help: str
    samples: list[tuple[str, Mapping[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))


def render(families: list[Family]) -> str:
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            label_text = ",".join(f'{key}="{escape_label_value(str(val))}"' for key, val in labels.items())
            braces = f"{{{label_text}}}" if label_text else ""
            lines.append(f"{family.name}{suffix}{braces} {format_value(value)}")
    return "\n".join(lines) + "\n"
