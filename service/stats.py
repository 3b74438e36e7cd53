"""Summary statistics we report everywhere: medians and tails, never single runs."""

from __future__ import annotations

from collections.abc import Iterable


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """Median, p95, p99 and max (nearest-rank), plus the count; {} when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }
