"""Helpers shared by CLI commands: JSON output and plain tables."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def print_json(obj: Any, stream=None) -> None:
    """Print one JSON document (NaN/inf become null, numpy types become Python)."""
    print(
        json.dumps(_jsonable(obj), indent=None if isinstance(obj, list) else 2),
        file=stream or sys.stdout,
    )


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None, stream=None
) -> None:
    """Print rows as an aligned plain-text table."""
    if not rows:
        return
    cols = list(columns) if columns is not None else list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "nan" if not math.isfinite(v) else f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = stream or sys.stdout
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), file=out)


def id_sort_key(heliostat_id: str) -> tuple:
    """Sort key for heliostat ids: digit runs compare as numbers (H2 before H10)."""
    import re

    return tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", heliostat_id) if p
    )
