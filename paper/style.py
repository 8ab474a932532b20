"""One figure style for the whole study: colours, markers, line styles and labels per series.

Every figure of ``paper`` takes its look from here, so a mode has the same colour and marker in
every figure. Conventions (stated once, repeated in each caption of the report):

* **theory is a line, measurement is a point with ± k SE error bars** (k read from the folder);
* a **filled** marker is a measurement that meets the condition the theory assumes (stationary,
  converged); an **open** marker is one that does not (e.g. "not yet stationary at T") — every
  figure that uses open markers says so in its legend;
* modes that coincide (e.g. SGD and noise-only both never clip) stay visible: each mode has its own
  line style, points are offset a little along a log x axis (:func:`offsets`), and markers of
  different sizes are drawn back to front;
* log axes carry a label on every decade, on 1–3 steps below 4.5 decades and on 1–2–5 steps below
  2.5 decades (:func:`log_ticks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType


@dataclass(frozen=True)
class Series:
    """How one series looks: colour, marker, line style, readable label, drawing order."""

    color: str
    marker: str
    linestyle: str
    label: str
    size: float = 5.5
    order: int = 2


# Ablation modes and the other arms (names as the experiments write them → readable labels).
MODES: dict[str, Series] = {
    "sgd": Series("#1f77b4", "o", "-", "SGD", size=8.0, order=1),
    "clip": Series("#ff7f0e", "s", "--", "clip only", size=6.5, order=2),
    "noise": Series("#2ca02c", "^", ":", "noise only", size=6.0, order=3),
    "dpsgd": Series("#d62728", "D", "-.", "DP-SGD", size=4.5, order=4),
    "normclip": Series("#9467bd", "v", (0, (5, 1, 1, 1)), "normalised clipping", size=5.0, order=5),  # type: ignore[arg-type]
    "normalized": Series("#9467bd", "v", (0, (5, 1, 1, 1)), "normalised clipping", size=5.0, order=5),  # type: ignore[arg-type]
    "auto": Series("#9467bd", "v", (0, (5, 1, 1, 1)), "normalised clipping", size=5.0, order=5),  # type: ignore[arg-type]
    "dp_eps": Series("#d62728", "D", "-.", "DP-SGD at fixed ε", size=5.0, order=4),
    "dp_sigma": Series("#8c564b", "P", (0, (3, 1, 1, 1, 1, 1)), "DP-SGD at fixed σ", size=5.5, order=5),  # type: ignore[arg-type]
}

# Pruning-mask sources.
MASKS: dict[str, Series] = {
    "oracle": Series("#7f7f7f", "*", "--", "oracle mask (not private)", size=8.0, order=1),
    "init": Series("#17becf", "o", "-", "initialisation mask (free)", size=5.5, order=2),
    "private": Series("#d62728", "D", "-.", "private mask (ε composed)", size=5.0, order=3),
    "random": Series("#bcbd22", "s", ":", "random mask (free)", size=5.0, order=4),
    "public": Series("#e377c2", "^", (0, (5, 2)), "public-data mask", size=5.5, order=5),  # type: ignore[arg-type]
}

# Switch directions (first phase → second phase).
DIRECTIONS: dict[str, Series] = {
    "sgd->dpsgd": Series("#1f77b4", "o", "-", "SGD, then DP-SGD", size=6.5, order=1),
    "dpsgd->sgd": Series("#d62728", "D", "--", "DP-SGD, then SGD", size=5.0, order=2),
}

THEORY_LW = 1.6
GRID = {"which": "major", "lw": 0.4, "alpha": 0.45}
FONT: dict[RcKeyType, float] = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 7.5}
OPEN_MARKER_NOTE = "open marker: not yet stationary"
matplotlib.rcParams.update(FONT)


def series(name: str, table: dict[str, Series] | None = None) -> Series:
    """The style of ``name`` (looked up in ``table``, else in every table); unknown names get a
    neutral style with the name made readable (underscores → spaces)."""
    for t in (table,) if table is not None else (MODES, MASKS, DIRECTIONS):
        if t is not None and name in t:
            return t[name]
    return Series("#333333", "x", "-", name.replace("_", " "))


def label(name: str) -> str:
    """Readable label of a code name (``clip`` → ``clip only``)."""
    return series(name).label


def figure(ncols: int, *, width: float = 4.3, height: float = 3.6, nrows: int = 1) -> tuple[Any, Any]:
    """A figure of ``nrows`` × ``ncols`` panels in the study's font sizes (axes as a flat array)."""
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.grid(True, **GRID)
        ax.tick_params(labelsize=FONT["font.size"] - 0.5)
    return fig, axes.ravel()


def offsets(n: int, *, spread: float = 0.06) -> list[float]:
    """Multiplicative x offsets (log axes) for ``n`` series: symmetric, ``spread`` decades apart at most."""
    if n <= 1:
        return [1.0] * n
    return [10 ** (spread * (i - (n - 1) / 2) / (n - 1) * 2) for i in range(n)]


def theory(ax: Any, x: ArrayLike, y: ArrayLike, st: Series, **kw: Any) -> None:
    """A theory line in ``st``'s colour and line style."""
    # wider lines under narrower ones: two coinciding theory curves both stay visible
    ax.plot(x, y, color=st.color, ls=st.linestyle, lw=max(1.0, st.size / 4.0), zorder=st.order, **kw)


def points(
    ax: Any,
    x: ArrayLike,
    y: ArrayLike,
    st: Series,
    *,
    yerr: ArrayLike | None = None,
    filled: bool = True,
    **kw: Any,
) -> None:
    """Measured points (± error bars) in ``st``'s colour and marker; open markers if not ``filled``."""
    ax.errorbar(
        x,
        y,
        yerr=yerr,
        fmt=st.marker,
        color=st.color,
        ms=st.size,
        mfc=st.color if filled else "white",
        mew=1.1,
        capsize=2,
        elinewidth=0.9,
        ls="none",
        zorder=10 + st.order,
        **kw,
    )


def legend(ax: Any, **kw: Any) -> Any:
    """A legend for a panel with more than one series (nothing for a single series)."""
    _, labels = ax.get_legend_handles_labels()
    if len(labels) < 2:
        return None
    kw.setdefault("fontsize", FONT["legend.fontsize"])
    kw.setdefault("framealpha", 0.85)
    return ax.legend(**kw)


def shared_legend(fig: Any, handles: list[Any], labels: list[str], *, ncol: int | None = None) -> Any:
    """One legend for the whole figure, above the panels."""
    return fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=ncol or min(len(labels), 4),
        fontsize=FONT["legend.fontsize"],
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )


def key_handles(names: Sequence[str], table: dict[str, Series], *, theory_line: bool = True) -> tuple[list, list]:
    """Legend entries (line + marker) for ``names`` and the theory/measurement convention."""
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for n in names:
        st = series(n, table)
        handles.append(
            Line2D(
                [], [], color=st.color, ls=st.linestyle if theory_line else "none", marker=st.marker, ms=st.size, lw=1.4
            )
        )
        labels.append(st.label)
    return handles, labels


def convention_handles(*, open_marker: str | None = None) -> tuple[list, list]:
    """Legend entries saying 'line: theory', 'point ± k SE: measurement' (and what open markers mean)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", lw=THEORY_LW), Line2D([], [], color="0.3", marker="o", ls="none")]
    labels = ["line: theory", "points: simulation"]
    if open_marker:
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="none"))
        labels.append(f"open marker: {open_marker}")
    return handles, labels


def log_ticks(ax: Any, axis: str = "both") -> None:
    """Readable log-axis ticks: every decade labelled; 1–2–5 labels when under two decades (an axis whose
    ticks the figure set itself keeps them)."""
    fmt = FuncFormatter(lambda v, _: _tick_text(v))
    for name in ("x", "y") if axis == "both" else (axis,):
        ax_axis = getattr(ax, f"{name}axis")
        if getattr(ax, f"get_{name}scale")() != "log":
            continue
        if isinstance(ax_axis.get_major_locator(), FixedLocator):  # ticks the figure chose itself
            continue
        lo, hi = getattr(ax, f"get_{name}lim")()
        if lo <= 0 or hi <= 0:
            continue
        decades = math.log10(hi / lo)
        if decades < 4.5:
            mantissas = (1, 1.5, 2, 3, 5, 7) if decades < 0.7 else (1, 2, 5) if decades < 2.5 else (1, 3)
            ticks = [
                m * 10.0**e
                for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                for m in mantissas
            ]
            ticks = [t for t in ticks if lo <= t <= hi]
            ax_axis.set_major_locator(FixedLocator(ticks))
        else:
            step = max(1, math.ceil(decades / 7))
            ax_axis.set_major_locator(LogLocator(base=10.0**step, numticks=12))
        ax_axis.set_major_formatter(fmt)
        ax_axis.set_minor_formatter(NullFormatter())


def _tick_text(v: float) -> str:
    if v == 0:
        return "0"
    e = math.floor(math.log10(abs(v)) + 1e-9)
    if -3 <= e <= 3:
        return f"{v:g}"
    m = v / 10.0**e
    return f"{m:g}e{e}" if abs(m - 1) > 1e-9 else f"1e{e}"


def save(fig: Any, folder: Any, name: str, formats: Sequence[str]) -> list[Any]:
    """Finish the figure (readable log ticks on every panel, tight layout) and write ``name.<ext>``."""
    from pathlib import Path

    for ax in fig.axes:
        log_ticks(ax)
    fig.tight_layout()
    paths = []
    for ext in formats:
        path = Path(folder) / f"{name}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths
