"""Timing for the benchmarks: the best of repeated runs (noise on a shared machine only
ever adds time, so the minimum is the most repeatable figure)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["best_time_s"]


def best_time_s(f: Callable[[], object], n: int = 1, repeats: int = 3) -> float:
    """Best mean time of ``repeats`` runs of ``n`` calls of ``f``, after one warm-up call. [s]"""
    f()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t) / n)
    return best
