"""Per-agent, per-operation call counts, errors and latency percentiles in bounded memory.

Also, for the Prometheus exposition (prometheus.py): calls by outcome and a latency
histogram over fixed buckets, per agent and operation.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque

SAMPLES_KEPT = 1024  # per key: the newest calls decide the percentiles
MAX_KEYS = 1024  # agent ids come from the rules file, but a bound costs nothing
# Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied.
HISTOGRAM_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Series:
    __slots__ = ("count", "errors", "samples", "outcomes", "buckets", "sum_s")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.samples: deque[float] = deque(maxlen=SAMPLES_KEPT)
        self.outcomes: dict[str, int] = {}
        self.buckets = [0] * len(HISTOGRAM_BUCKETS_S)  # not cumulative; exposition sums them
        self.sum_s = 0.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}

    def observe(self, agent: str, operation: str, duration_ms: float, error: bool, outcome: str | None = None) -> None:
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
            outcome = outcome or ("error" if error else "ok")
            series.outcomes[outcome] = series.outcomes.get(outcome, 0) + 1
            seconds = duration_ms / 1000
            series.sum_s += seconds
            index = bisect.bisect_left(HISTOGRAM_BUCKETS_S, seconds)
            if index < len(series.buckets):
                series.buckets[index] += 1

    def histograms(self) -> list[tuple[str, str, dict[str, int], list[int], int, float]]:
        """(agent, operation, calls by outcome, bucket counts, count, sum in seconds), sorted."""
        with self._lock:
            return sorted((agent, operation, dict(s.outcomes), list(s.buckets), s.count, s.sum_s)
                          for (agent, operation), s in self._series.items())

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
