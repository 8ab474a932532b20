"""Plain-text tables and number formatting for the command lines (no statistics, no I/O)."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from simulations.common.stats import Estimate

__all__ = ["fmt", "fmt_ci", "fmt_stat", "print_table", "table"]


def fmt(value: float, digits: int = 4) -> str:
    """Compact number formatting for tables (``inf``/``nan`` spelled out)."""
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def fmt_ci(est: Estimate, *, k: float) -> str:
    """``mean ± k·SE`` as text."""
    return f"{fmt(est.mean)} ± {fmt(k * est.se, 2)}"


def table(rows: Sequence[Sequence[Any]], *, header: Sequence[str]) -> str:
    """A plain fixed-width text table (strings are left as they are, numbers via :func:`fmt`)."""
    cells = [[str(h) for h in header]]
    for row in rows:
        cells.append([c if isinstance(c, str) else fmt(c) for c in row])
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt_stat(stat: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± se' of a :func:`simulations.common.stats.summary` (scaled, e.g. 100 for percent).

    Without a standard error (one seed) it is 'mean (n=1)', never '± nan'.
    """
    m, se = stat["mean"] * scale, stat["se"] * scale
    if not math.isfinite(se):
        n = stat.get("n")
        return f"{m:.{digits}f} (n={n})" if n is not None else f"{m:.{digits}f} (no SE)"
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def print_table(rows: Sequence[Sequence[str]], *, file: Any = None) -> None:
    """Print a plain left-aligned fixed-width table (first row = header) on stdout."""
    file = file or sys.stdout
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        file.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
        if j == 0:
            file.write("  ".join("-" * w for w in widths) + "\n")
