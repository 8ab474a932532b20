"""Figures of the network experiments, drawn only from their result folders (figures never train).

    python -m paper.nn_figures results/nn            # draws every experiment folder found below
    python -m paper.nn_figures results/nn/width      # one folder

Each experiment folder (written by ``python -m simulations.nn <command>``) holds ``config.json`` and
``metrics.json``; the figure is saved next to them as ``<command>.png``. The kind of folder is read
from its ``metrics.json`` (the "claim" / "what" entry), not from its name.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from paper import style


def _load(folder: Path) -> tuple[dict, dict]:
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return config, metrics


def _num(x: Any) -> float:
    return float(x) if not isinstance(x, str) else float(x.replace("inf", "inf"))


def _errorbar(ax: Any, xs: list, stats: list[dict], scale: float = 100.0, *, st: Any = None, label: str = "") -> None:
    """Measured means ± 1 SE over seeds, joined by a thin line in the series' style."""
    ys = [_num(s["mean"]) * scale for s in stats]
    es = [(_num(s["se"]) * scale if s["se"] != "nan" else 0.0) for s in stats]
    st = st or style.series(label)
    ax.plot(xs, ys, color=st.color, ls=st.linestyle, lw=1.0, zorder=st.order)
    style.points(ax, xs, ys, st, yerr=es, label=label or st.label)


def fig_switch(config: dict, metrics: dict) -> plt.Figure:
    """Final test accuracy vs switch epoch, both directions, with the SGD and DP-SGD baselines."""
    fig, axes = style.figure(1, width=5.4, height=3.8)
    ax = axes[0]
    rows = metrics["per_switch"]
    s = [r["switch_epoch"] for r in rows]
    _errorbar(
        ax, s, [r["acc_sgd_then_dpsgd"] for r in rows], st=style.DIRECTIONS["sgd->dpsgd"], label="SGD, then DP-SGD"
    )
    _errorbar(
        ax,
        s,
        [r["acc_dpsgd_then_sgd"] for r in rows],
        st=style.DIRECTIONS["dpsgd->sgd"],
        label="DP-SGD, then SGD (not private)",
    )
    for key in ("acc_sgd", "acc_dpsgd"):
        st = style.series(key.removeprefix("acc_"), style.MODES)
        ax.axhline(
            _num(metrics[key]["mean"]) * 100, ls=st.linestyle, color=st.color, lw=1.0, label=f"{st.label} throughout"
        )
    ax.set(xlabel="switch epoch s", ylabel="final test accuracy (%)")
    ax.set_title(f"switch at epoch s of {config['epochs']}; points: mean ± 1 SE over {len(config['seeds'])} seeds")
    style.legend(ax, loc="best")
    return fig


def fig_ablate(config: dict, metrics: dict) -> plt.Figure:
    """Test accuracy per mode (paired seeds) and the excess training loss after a noise burst."""
    fig, (a, b) = style.figure(2, width=4.6, height=3.8)
    modes = list(metrics["test_accuracy"])
    means = [_num(metrics["test_accuracy"][m]["mean"]) * 100 for m in modes]
    ses = [
        _num(metrics["test_accuracy"][m]["se"]) * 100 if metrics["test_accuracy"][m]["se"] != "nan" else 0
        for m in modes
    ]
    styles = [style.series(m, style.MODES) for m in modes]
    a.bar(range(len(modes)), means, yerr=ses, capsize=3, color=[st.color for st in styles], alpha=0.85)
    a.set_xticks(range(len(modes)), [st.label for st in styles])
    a.set(ylabel="final test accuracy (%)")
    a.set_title(f"test accuracy, mean ± 1 SE over {len(config['seeds'])} seeds")
    if "burst" in metrics:
        for mode, r in metrics["burst"].items():
            st = style.series(mode, style.MODES)
            curve = [_num(v) for v in r["excess_curve_mean"]]
            recovered = _num(r["recovered_fraction"]["mean"])
            b.plot(
                range(len(curve)),
                curve,
                color=st.color,
                ls=st.linestyle,
                marker=st.marker,
                ms=st.size - 1,
                label=f"{st.label} (recovered {recovered:.0%})",
            )
        b.axvline(metrics["burst_epoch"], color="gray", ls=":", lw=0.9, label="weight burst")
        b.axhline(0, color="black", lw=0.5)
        b.set(xlabel="epoch", ylabel="training loss: with burst − without")
        b.set_title("recovery from a weight burst (mean over seeds)")
        style.legend(b)
    return fig


def fig_width(config: dict, metrics: dict) -> plt.Figure:
    """Accuracy and the SGD − DP-SGD gap vs parameter count d; clip fraction vs d."""
    fig, (a, b) = style.figure(2, width=4.6, height=3.8)
    rows = metrics["per_width"]
    d = [r["dim"] for r in rows]
    for key, label in (
        ("sgd", "SGD"),
        ("dp_eps", f"DP-SGD at ε = {config['target_epsilon']:g}"),
        ("dp_sigma", f"DP-SGD at σ = {config['noise_multiplier']:g}"),
    ):
        _errorbar(a, d, [r[key]["test_accuracy"] for r in rows], st=style.series(key, style.MODES), label=label)
    a.set(xscale="log", xlabel="parameters d", ylabel="final test accuracy (%)")
    a.set_title(f"accuracy vs width; mean ± 1 SE over {len(config['seeds'])} seeds")
    style.legend(a)
    for key, label in (
        ("dp_eps", f"at ε = {config['target_epsilon']:g}"),
        ("dp_sigma", f"at σ = {config['noise_multiplier']:g}"),
    ):
        _errorbar(
            b,
            d,
            [r[key]["gap_sgd_minus_dp"] for r in rows],
            st=style.series(key, style.MODES),
            label=f"SGD − DP-SGD {label}",
        )
    b.set(xscale="log", xlabel="parameters d", ylabel="SGD − DP-SGD (points)")
    b.set_title("gap between SGD and DP-SGD vs d")
    style.legend(b, loc="upper left")
    return fig


def fig_prune(config: dict, metrics: dict) -> plt.Figure:
    """DP-SGD test accuracy vs sparsity for each mask source (oracle marked not private)."""
    fig, axes = style.figure(1, width=5.4, height=3.8)
    ax = axes[0]
    for source, rows in metrics["per_source"].items():
        st = style.series(source, style.MASKS)
        _errorbar(ax, [r["sparsity"] for r in rows], [r["test_accuracy"] for r in rows], st=st, label=st.label)
    sgd = style.MODES["sgd"]
    ax.axhline(
        _num(metrics["sgd_dense"]["mean"]) * 100, color=sgd.color, ls="--", lw=1.0, label="dense SGD (not private)"
    )
    ax.set(xlabel="fraction of weights pruned", ylabel="final test accuracy (%)")
    ax.set_title(f"DP-SGD at total ε = {config['target_epsilon']:g}; mean ± 1 SE over {len(config['seeds'])} seeds")
    style.legend(ax, loc="lower left")
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
    for arm in ("clip", "noise", "dpsgd"):
        st = style.series(arm, style.MODES)
        sub = sorted((r for r in teacher if r["arm"] == arm), key=lambda r: float(r["dataset"].split("d=")[-1]))
        if not sub:
            continue
        dims = [float(r["dataset"].split("d=")[-1]) for r in sub]
        style.theory(c, dims, [_num(r["predicted_excess"]) for r in sub], st)
        style.points(
            c,
            dims,
            [_num(r["measured_excess"]["mean"]) for r in sub],
            st,
            yerr=[k * _num(r["measured_excess"]["se"]) for r in sub],
            label=st.label,
        )
    c.set(xscale="log", xlabel="teacher input dimension D (rank fixed)", ylabel=f"excess loss (± {k:g} SE)")
    c.axhline(0.0, color="0.5", lw=0.6)
    c.set_title("teacher–student: excess vs D (lines: model)")
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
    if metrics.get("what") == "basin":
        return "basin"
    return None


FIGURES: dict[str, Callable[[dict, dict], plt.Figure]] = {
    "switch": fig_switch,
    "ablate": fig_ablate,
    "width": fig_width,
    "prune": fig_prune,
    "basin": fig_basin,
}


def draw(folder: str | Path, *, formats: tuple[str, ...] = ("png",), out: str | Path | None = None) -> list[Path]:
    """Draw the figure of one network result folder as ``net_<kind>.<ext>`` into ``out`` (default:
    the folder); ResultError (one line) if the folder is not a network experiment or is malformed."""
    from paper.figures import FORMATS, ResultError

    folder = Path(folder)
    try:
        config, metrics = _load(folder)
    except (OSError, ValueError) as exc:
        raise ResultError(f"{str(folder)!r} is not a readable result folder: {exc}") from None
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
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        plt.close("all")
        raise ResultError(f"malformed {name} results in {str(folder)!r}: {exc}") from None
    target = Path(out or folder)
    target.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        style.log_ticks(ax)
    fig.tight_layout()
    paths = []
    for ext in formats:
        paths.append(target / f"net_{name}.{ext}")
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0 if args else 2
    drawn = 0
    for root in map(Path, args):
        if not root.exists():
            sys.stderr.write(f"paper.nn_figures: error: no such folder: {str(root)!r}\n")
            return 2
        for metrics in sorted([root / "metrics.json"] + list(root.glob("*/metrics.json"))):
            if metrics.is_file():
                try:
                    paths = draw(metrics.parent)
                except ValueError:
                    continue
                for path in paths:
                    print(path)
                    drawn += 1
    return 0 if drawn else 1


if __name__ == "__main__":
    raise SystemExit(main())
