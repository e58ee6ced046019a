"""Per-agent, per-operation call counts, errors and latency percentiles in bounded memory."""

from __future__ import annotations

import math
import threading
from collections import deque

SAMPLES_KEPT = 1024  # per key: the newest calls decide the percentiles
MAX_KEYS = 1024  # agent ids come from the rules file, but a bound costs nothing


class _Series:
    __slots__ = ("count", "errors", "samples")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.samples: deque[float] = deque(maxlen=SAMPLES_KEPT)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(self, agent: str, operation: str, duration_ms: float, error: bool) -> None:
        key = (agent, operation)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= MAX_KEYS:
                    key = ("(other)", operation)
                series = self._series.setdefault(key, _Series())
            series.count += 1
            series.errors += int(error)
            series.samples.append(duration_ms)

    def snapshot(self) -> dict[str, dict[str, dict[str, float]]]:
        with self._lock:
            items = [(key, s.count, s.errors, sorted(s.samples)) for key, s in self._series.items()]
        report: dict[str, dict[str, dict[str, float]]] = {}
        for (agent, operation), count, errors, samples in sorted(items):
            report.setdefault(agent, {})[operation] = {
                "count": count,
                "errors": errors,
                "p50_ms": round(percentile(samples, 0.50), 2),
                "p95_ms": round(percentile(samples, 0.95), 2),
                "p99_ms": round(percentile(samples, 0.99), 2),
            }
        return report
