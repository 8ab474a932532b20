"""Figures of the network experiments, drawn only from their result folders (figures never train).

    python -m paper.nn_figures results/nn            # draws every experiment folder found below
    python -m paper.nn_figures results/nn/width      # one folder

Each experiment folder (written by ``python -m simulations.nn <command>``) holds ``config.json`` and
``metrics.json``; the figure is saved next to them as ``<command>.png``. The kind of folder is read
from its ``metrics.json`` (the "claim" / "what" entry), not from its name.

At least one folder is required (no folder: one usage line, exit status 2). A folder given on the
command line that holds no network experiment result (itself or one level below) is one line and
exit status 2, as is a malformed file (not UTF-8 JSON, a list where an object belongs, a string or
null where a number belongs, a missing entry): the line names the file, and no figure is written
(all figures of a call appear together, or none). ``--help`` / ``-h`` print this.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from paper import style


def _load(folder: Path) -> tuple[dict, dict]:
    from paper.figures import read_json_file

    return read_json_file(folder / "config.json"), read_json_file(folder / "metrics.json")


def _num(x: Any) -> float:
    """A JSON number (or its 'nan' / 'inf' string) as float; anything else is a TypeError / ValueError."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise TypeError(f"expected a number, got {x!r}")
    return float(x)


def _errorbar(ax: Any, xs: list, stats: list[dict], scale: float = 100.0, *, st: Any = None, label: str = "") -> None:
    """Measured means ± 1 SE over seeds, joined by a thin line in the series' style."""
    ys = [_num(s["mean"]) * scale for s in stats]
    es = [(_num(s["se"]) * scale if s["se"] != "nan" else 0.0) for s in stats]
    st = st or style.series(label)
    ax.plot(xs, ys, color=st.color, ls=st.linestyle, lw=1.0, zorder=st.order)
    style.points(ax, xs, ys, st, yerr=es, label=label or st.label)


def _errorbar_plain(ax: Any, xs: list, stats: list[dict], scale: float = 100.0, **kw: Any) -> None:
    """Means ± 1 SE over seeds with matplotlib's own styling (``kw`` passed to ``errorbar``)."""
    ys = [_num(s["mean"]) * scale for s in stats]
    es = [(_num(s["se"]) * scale if s["se"] != "nan" else 0.0) for s in stats]
    ax.errorbar(xs, ys, yerr=es, capsize=3, marker="o", **kw)


def _ci_bar(ax: Any, labels: list[str], tests: list[dict], scale: float = 100.0, **kw: Any) -> None:
    """Horizontal paired differences with their 95 % CIs (verdict-style)."""
    ys = range(len(labels))
    est = [_num(t["estimate"]) * scale for t in tests]
    lo = [e - _num(t["ci95"][0]) * scale for e, t in zip(est, tests)]
    hi = [_num(t["ci95"][1]) * scale - e for e, t in zip(est, tests)]
    ax.errorbar(est, list(ys), xerr=[lo, hi], fmt="o", capsize=3, **kw)
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.axvline(0, color="black", lw=0.6)


def fig_switch(config: dict, metrics: dict) -> plt.Figure:
    """Final test accuracy vs switch epoch (both directions, every schedule) and the mean post-switch curves."""
    schedules = metrics["per_schedule"]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.5))
    a, b = axes
    for k, (schedule, m) in enumerate(schedules.items()):
        rows = m["per_switch"]
        s = [r["switch_epoch"] for r in rows]
        _errorbar_plain(
            a, s, [r["acc_sgd_then_dpsgd"] for r in rows], label=f"SGD → DP-SGD ({schedule})", color=f"C{2 * k}"
        )
        _errorbar_plain(
            a,
            s,
            [r["acc_dpsgd_then_sgd"] for r in rows],
            label=f"DP-SGD → SGD ({schedule}, not private)",
            color=f"C{2 * k + 1}",
        )
        for key, linestyle, name in (("acc_sgd", "--", "SGD only"), ("acc_dpsgd", ":", "DP-SGD only")):
            a.axhline(_num(m[key]["mean"]) * 100, ls=linestyle, color=f"C{2 * k}", lw=0.8, label=f"{name} ({schedule})")
        for run, curves in m["mean_curves"].items():
            for i, curve in enumerate(curves):
                b.plot(
                    range(len(curve)),
                    [100 * _num(v) for v in curve],
                    color=f"C{2 * k + (run != 'sgd->dpsgd')}",
                    alpha=0.4 + 0.6 * i / max(len(curves) - 1, 1),
                    lw=1,
                    label=(
                        f"{'SGD → DP-SGD' if run == 'sgd->dpsgd' else 'DP-SGD → SGD'} ({schedule}; darker: later switch)"
                        if i == len(curves) - 1
                        else None
                    ),
                )
    a.set(
        xlabel="switch epoch s", ylabel="final test accuracy (%)", title=f"claim 1: switch ({config['epochs']} epochs)"
    )
    a.legend(fontsize=6)
    b.set(xlabel="epoch", ylabel="test accuracy (%)", title="switched runs (seed means)")
    b.legend(fontsize=6)
    return fig


ARM_LABELS = {
    "sgd": "SGD",
    "clip": "clip only",
    "dpsgd": "DP-SGD",
    "dpsgd_normalised": "DP-SGD, normalised clipping",
    "noise_C": "noise only, C_ref = C",
    "noise_median": "noise only, C_ref = median norm",
    "noise_q90": "noise only, C_ref = q90 norm",
    "noise_snr": "noise only, SNR-matched",
}
MASK_LABELS = {
    "dense_small": "dense, same parameter count",
    "random": "random mask",
    "init_layer": "init mask (per layer)",
    "init": "init mask (global)",
    "public": "public-data mask",
    "oracle": "oracle mask",
}


def arm_label(name: str) -> str:
    """A readable name for an arm of the claim sweeps (the code name where none is known).

    Example:
        >>> arm_label("noise_snr"), arm_label("public@0.9"), arm_label("private@1/p=0.9")
        ('noise only, SNR-matched', 'public-data mask, p = 0.9', 'private mask (ε_m = 1), p = 0.9')
    """
    if name in ARM_LABELS:
        return ARM_LABELS[name]
    source, _, rest = name.partition("@")
    if source == "private" and "/p=" in rest:
        eps, _, p = rest.partition("/p=")
        return f"private mask (ε_m = {eps}), p = {p}"
    if source in MASK_LABELS and rest:
        return f"{MASK_LABELS[source]}, p = {rest}"
    return name


def fig_ablate(config: dict, metrics: dict) -> plt.Figure:
    """Tuned arms' accuracy minus SGD (paired, 95 % CI) and the excess training loss after a burst."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.5))
    arms = list(metrics["accuracy_minus_sgd"])
    _ci_bar(a, [arm_label(x) for x in arms], [metrics["accuracy_minus_sgd"][x] for x in arms])
    a.set(xlabel="test accuracy − SGD (points, paired)", title="claim 2: tuned arms")
    if "burst" in metrics:
        for mode, r in metrics["burst"].items():
            curve = [_num(v) for v in r["excess_curve_mean"]]
            recovered = _num(r["recovered_fraction"]["mean"])
            b.plot(range(len(curve)), curve, marker=".", label=f"{arm_label(mode)} (recovered {recovered:.0%})")
        b.axvline(metrics["burst_epoch"], color="gray", ls=":")
        b.axhline(0, color="black", lw=0.5)
        b.set(xlabel="epoch", ylabel="train loss: burst − plain", title="recovery from a displacement")
        b.legend(fontsize=7)
    return fig


def fig_width(config: dict, metrics: dict) -> plt.Figure:
    """Tuned SGD and DP-SGD accuracy and their paired gap vs parameter count d; clip fraction vs d."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    rows = metrics["per_width"]
    d = [r["dim"] for r in rows]
    for key, label in (("sgd", "SGD"), ("dpsgd", f"DP-SGD ε={config['target_epsilon']}")):
        _errorbar_plain(a, d, [r[key]["test_accuracy"] for r in rows], label=label)
    a.set(xscale="log", xlabel="parameters d", ylabel="final test accuracy (%)", title="claim 3: width (tuned)")
    a.legend(fontsize=7)
    gaps = [r["gap_sgd_minus_dpsgd"] for r in rows]
    est = [_num(g["estimate"]) * 100 for g in gaps]
    err = [
        [e - _num(g["ci95"][0]) * 100 for e, g in zip(est, gaps)],
        [_num(g["ci95"][1]) * 100 - e for e, g in zip(est, gaps)],
    ]
    b.errorbar(d, est, yerr=err, capsize=3, marker="o", label="gap SGD − DP (95 % CI)")
    b2 = b.twinx()
    b2.plot(d, [_num(r["clip_fraction"]["mean"]) for r in rows], "k:", label="clip fraction")
    b2.set(ylim=(0, 1.05), ylabel="clip fraction")
    b.set(xscale="log", xlabel="parameters d", ylabel="SGD − DP-SGD (points)")
    lines = b.get_legend_handles_labels()
    twin = b2.get_legend_handles_labels()
    b.legend(lines[0] + twin[0], lines[1] + twin[1], fontsize=7, loc="upper left")
    return fig


def fig_prune(config: dict, metrics: dict) -> plt.Figure:
    """Each pruned arm minus dense DP-SGD (paired, 95 % CI) at fixed total ε; oracle marked not private."""
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(metrics["per_source"]) + 1.5))
    rows = metrics["per_source"]
    labels = [
        arm_label(r["arm"]) + (" (NOT private)" if any(p.startswith("not private") for p in r["privacy"]) else "")
        for r in rows
    ]
    _ci_bar(ax, labels, [r["minus_dense"] for r in rows])
    ax.set(
        xlabel="test accuracy − dense DP-SGD (points, paired)",
        title=f"claim 4: pruning at total ε={config['target_epsilon']}",
    )
    return fig


def fig_epsilon(config: dict, metrics: dict) -> plt.Figure:
    """Dense and pruned DP-SGD test accuracy vs ε, with the SGD and clip-only (ε = ∞) anchors."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    eps = [r["epsilon"] for r in metrics["curve"]]
    sparsity = config.get("sparsity", "?")
    labels = {"dense": "DP-SGD, dense", "pruned": f"DP-SGD, public magnitude mask (sparsity {sparsity})"}
    for arm in ("dense", "pruned"):
        _errorbar_plain(ax, eps, [r[arm]["test_accuracy"] for r in metrics["curve"]], label=labels[arm])
    ax.axhline(_num(metrics["sgd"]["mean"]) * 100, color="gray", ls="--", label="SGD (ε = ∞)")
    ax.axhline(_num(metrics["clip"]["mean"]) * 100, color="gray", ls=":", label="clip only (ε = ∞)")
    ax.set(xscale="log", xlabel=f"ε (δ = {config.get('delta', '?')})", ylabel="final test accuracy (%)")
    ax.set_title(f"ε–accuracy: {metrics.get('task', '')}", fontsize=8)
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    return fig


def _pos(values: list[float]) -> list[float]:
    return [v for v in values if v > 0 and v != float("inf") and v == v]


def _identity_panel(ax: Any, rows: list[dict], k: float, title: str) -> None:
    """Predicted (x) vs measured (y, ± k SE) excess, log–log, identity ± 25 %; filled = relaxed (T ≥ 5 τ)."""
    pred = [_num(r["predicted_excess"]) for r in rows]
    meas = [_num(r["measured_excess"]["mean"]) for r in rows]
    vals = _pos(pred + meas)
    lo, hi = (min(vals) / 2, max(vals) * 2) if vals else (1e-6, 1.0)
    ax.fill_between([lo, hi], [lo / 1.25, hi / 1.25], [lo * 1.25, hi * 1.25], color="0.88", zorder=0)
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=style.THEORY_LW, zorder=1)
    hidden = 0
    for arm in ("clip", "noise", "dpsgd"):
        st = style.series(arm, style.MODES)
        for r, p, m in zip(rows, pred, meas):
            if r["arm"] != arm:
                continue
            if not (p > 0 and m > 0):
                hidden += 1
                continue
            se = _num(r["measured_excess"]["se"])
            se = 0.0 if se != se else se
            down = min(k * se, m * (1 - 1e-3))  # a log axis cannot show a bar through zero
            style.points(ax, [p], [m], st, yerr=[[down], [k * se]], filled=bool(r["relaxation"]["relaxed"]))
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    ax.set_xlabel("predicted excess loss (model: arm − SGD)")
    ax.set_ylabel(f"measured excess loss (± {k:g} SE over seeds)")
    ax.set_title(title)
    if hidden:
        ax.text(0.98, 0.02, f"{hidden} rows with a value ≤ 0 not shown", transform=ax.transAxes, ha="right", fontsize=7)


def fig_basin(config: dict, metrics: dict) -> plt.Figure:
    """Warm start at a minimum: predicted vs measured excess (MLP grid, linearised network), the teacher
    dimension sweep and recovery times; points ± k SE over seeds, lines the model."""
    k = _num(metrics["summary"].get("k_se", 2.0))
    rows = metrics["rows"]
    fig, axes = style.figure(2, nrows=2, width=5.0, height=4.3)
    summary = metrics["summary"]
    mlp = [r for r in rows if r["family"] == "mlp"]
    share = summary.get("mlp", {}).get("model", {}).get("within_tolerance", float("nan"))
    _identity_panel(axes[0], mlp, k, f"MLPs warm-started at w*: {_num(share):.0%} of rows within 25 %")
    lin = [r for r in rows if r["family"] == "linearised"]
    _identity_panel(axes[1], lin, k, "linearised network (exact quadratic)")
    c = axes[2]
    teacher = [r for r in rows if r["family"] == "teacher"]
    # log y when every measured excess is positive (the arms span decades); the model's non-positive
    # values then leave gaps in its lines
    log_y = bool(teacher) and all(_num(r["measured_excess"]["mean"]) > 0 for r in teacher)
    for arm in ("clip", "noise", "dpsgd"):
        st = style.series(arm, style.MODES)
        sub = sorted((r for r in teacher if r["arm"] == arm), key=lambda r: float(r["dataset"].split("d=")[-1]))
        if not sub:
            continue
        dims = [float(r["dataset"].split("d=")[-1]) for r in sub]
        pred = [_num(r["predicted_excess"]) for r in sub]
        style.theory(c, dims, [p if p > 0 or not log_y else float("nan") for p in pred], st)
        style.points(
            c,
            dims,
            [_num(r["measured_excess"]["mean"]) for r in sub],
            st,
            yerr=[k * _num(r["measured_excess"]["se"]) for r in sub],
            label=st.label,
        )
    c.set(xscale="log", xlabel="teacher input dimension D (rank fixed)", ylabel=f"excess loss (± {k:g} SE)")
    if log_y:
        c.set_yscale("log")
    else:
        c.axhline(0.0, color="0.5", lw=0.6)
    c.set_title("teacher–student: excess vs D (lines: model)")
    if not teacher:
        c.text(
            0.5,
            0.5,
            "no teacher–student rows in this run\n(not part of this scale)",
            transform=c.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    style.legend(c, loc="best")
    d = axes[3]
    rec = [r for r in metrics.get("recovery", []) if _num(r["predicted_recovery"]) > 0]
    rp = [_num(r["predicted_recovery"]) for r in rec]
    rm = [_num(r["measured_recovery"]["mean"]) for r in rec]
    vals = _pos(rp + rm)
    lo, hi = (min(vals) / 2, max(vals) * 4) if vals else (1.0, 10.0)
    d.plot([lo, hi], [lo, hi], color="0.3", lw=style.THEORY_LW)
    shapes = {"top": "o", "random": "s", "flat": "v"}
    for r, p, m in zip(rec, rp, rm):
        color = style.series(r["arm"], style.MODES).color
        recovered = m > 0 and m != float("inf")
        d.plot(
            [p],
            [m if recovered else hi / 1.5],
            shapes.get(r["direction"], "x"),
            color=color,
            mfc=color if recovered else "white",
            ms=6,
            mew=1.1,
        )
    d.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    d.set_xlabel("predicted recovery time (steps)")
    d.set_ylabel("measured recovery time (steps)")
    d.set_title("recovery after a displacement (colour: arm; open: not recovered)")
    from matplotlib.lines import Line2D

    dir_handles = [
        Line2D([], [], color="0.3", marker=mk, ls="none", label=f"{name} direction")
        for name, mk in shapes.items()
        if any(r["direction"] == name for r in rec)
    ]
    if dir_handles:
        d.legend(handles=dir_handles, loc="lower right", fontsize=style.FONT["legend.fontsize"])
    handles, labels = style.key_handles(["clip", "noise", "dpsgd"], style.MODES, theory_line=False)
    conv_h, conv_l = style.convention_handles(open_marker="arm ran < 5 relaxation times / not recovered")
    conv_l[1] = f"points: measured (± {k:g} SE)"
    conv_l[0] = "line: identity (model = measurement)"
    fig.legend(
        handles + conv_h,
        labels + conv_l,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=3,
        fontsize=style.FONT["legend.fontsize"],
        frameon=False,
    )
    return fig


def kind(metrics: dict) -> str | None:
    """Which experiment wrote ``metrics`` (from its own content)."""
    claim = str(metrics.get("claim", ""))
    if claim.startswith("1"):
        return "switch"
    if claim.startswith("2"):
        return "ablate"
    if claim.startswith("3"):
        return "width"
    if claim.startswith("4"):
        return "prune"
    if claim.startswith("epsilon"):
        return "epsilon"
    if metrics.get("what") == "basin":
        return "basin"
    return None


FIGURES: dict[str, Callable[[dict, dict], plt.Figure]] = {
    "switch": fig_switch,
    "ablate": fig_ablate,
    "width": fig_width,
    "prune": fig_prune,
    "epsilon": fig_epsilon,
    "basin": fig_basin,
}


def draw(folder: str | Path, *, formats: tuple[str, ...] = ("png",), out: str | Path | None = None) -> list[Path]:
    """Draw the figure of one network result folder as ``net_<kind>.<ext>`` into ``out`` (default:
    the folder); ResultError (one line) if the folder is not a network experiment or is malformed."""
    from paper.figures import FORMATS, MALFORMED, ResultError, stage

    folder = Path(folder)
    config, metrics = _load(folder)
    name = kind(metrics)
    if name is None:
        raise ResultError(
            f"{str(folder)!r} is not a result folder of a known experiment (metrics.json has no 'experiment' "
            "and is not a network experiment's)"
        )
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ResultError(f"figure format must be one of {', '.join(FORMATS)}, got {bad[0]!r}")
    try:
        fig = FIGURES[name](config, metrics)
        target = Path(out or folder)
        target.mkdir(parents=True, exist_ok=True)
        for ax in fig.axes:
            style.log_ticks(ax)
        fig.tight_layout()
        paths = []
        for ext in formats:
            paths.append(target / f"net_{name}.{ext}")
            fig.savefig(stage(paths[-1]), dpi=120, bbox_inches="tight", format=ext)
    except MALFORMED as exc:
        raise ResultError(
            f"malformed {name} results in {str(folder)!r}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        ) from None
    except OSError as exc:
        raise ResultError(f"cannot write the {name} figure from {str(folder)!r}: {exc.strerror or exc}") from None
    finally:
        plt.close("all")
    return paths


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _draw_root(root: Path) -> list[Path]:
    """Draw the network experiment folder ``root`` or those one level below it (other result folders
    found below are skipped); ResultError if there are none, or if one of them is malformed."""
    from paper.figures import ResultError

    if not root.is_dir():
        raise ResultError(f"no such folder: {str(root)!r}")
    found: list[Path] = []
    for metrics in sorted([root / "metrics.json", *root.glob("*/metrics.json")]):
        if not metrics.is_file():
            continue
        _, content = _load(metrics.parent)
        if kind(content) is not None:
            found += draw(metrics.parent)
    if not found:
        raise ResultError(f"no network experiment result in {str(root)!r} (nor one level below)")
    return found


def main(argv: list[str] | None = None) -> int:
    """Draw every network experiment folder at or one level below each argument; print the files."""
    from paper.figures import ResultError, staged

    parser = _OneLineParser(
        prog="python -m paper.nn_figures", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", metavar="DIR", help="experiment folders, or folders holding them")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    drawn: list[Path] = []
    try:
        with staged():  # every figure appears at the end, or none does
            for root in map(Path, args.folders):
                drawn += _draw_root(root)
    except (ResultError, OSError) as exc:
        sys.stderr.write(f"python -m paper.nn_figures: error: {' '.join(str(exc).split())}\n")
        return 2
    except Exception as exc:  # a bug, not bad input: still one line
        if os.environ.get("DPBASIN_TRACEBACK"):
            raise
        sys.stderr.write(
            f"python -m paper.nn_figures: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(a bug: please report it)\n"
        )
        return 1
    for path in dict.fromkeys(drawn):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
