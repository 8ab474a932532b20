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


def _load(folder: Path) -> tuple[dict, dict]:
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return config, metrics


def _num(x: Any) -> float:
    return float(x) if not isinstance(x, str) else float(x.replace("inf", "inf"))


def _errorbar(ax: Any, xs: list, stats: list[dict], scale: float = 100.0, **kw: Any) -> None:
    ys = [_num(s["mean"]) * scale for s in stats]
    es = [(_num(s["se"]) * scale if s["se"] != "nan" else 0.0) for s in stats]
    ax.errorbar(xs, ys, yerr=es, capsize=3, marker="o", **kw)


def fig_switch(config: dict, metrics: dict) -> plt.Figure:
    """Final test accuracy vs switch epoch, both directions, with the SGD and DP-SGD baselines."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    rows = metrics["per_switch"]
    s = [r["switch_epoch"] for r in rows]
    _errorbar(ax, s, [r["acc_sgd_then_dpsgd"] for r in rows], label="SGD → DP-SGD")
    _errorbar(ax, s, [r["acc_dpsgd_then_sgd"] for r in rows], label="DP-SGD → SGD (not private)")
    for key, style, label in (("acc_sgd", "--", "SGD"), ("acc_dpsgd", ":", "DP-SGD")):
        ax.axhline(_num(metrics[key]["mean"]) * 100, ls=style, color="gray", label=label)
    ax.set(
        xlabel="switch epoch s", ylabel="final test accuracy (%)", title=f"claim 1: switch ({config['epochs']} epochs)"
    )
    ax.legend(fontsize=7)
    return fig


def fig_ablate(config: dict, metrics: dict) -> plt.Figure:
    """Test accuracy per mode (paired seeds) and the excess training loss after a noise burst."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    modes = list(metrics["test_accuracy"])
    means = [_num(metrics["test_accuracy"][m]["mean"]) * 100 for m in modes]
    ses = [
        _num(metrics["test_accuracy"][m]["se"]) * 100 if metrics["test_accuracy"][m]["se"] != "nan" else 0
        for m in modes
    ]
    a.bar(modes, means, yerr=ses, capsize=3, color=["C0", "C3", "C2", "C1"][: len(modes)])
    a.set(ylabel="final test accuracy (%)", title="claim 2: ablation")
    if "burst" in metrics:
        for mode, r in metrics["burst"].items():
            curve = [_num(v) for v in r["excess_curve_mean"]]
            recovered = _num(r["recovered_fraction"]["mean"])
            b.plot(range(len(curve)), curve, marker=".", label=f"{mode} (recovered {recovered:.0%})")
        b.axvline(metrics["burst_epoch"], color="gray", ls=":")
        b.axhline(0, color="black", lw=0.5)
        b.set(xlabel="epoch", ylabel="train loss: burst − plain", title="recovery from a noise burst")
        b.legend(fontsize=7)
    return fig


def fig_width(config: dict, metrics: dict) -> plt.Figure:
    """Accuracy and the SGD − DP-SGD gap vs parameter count d; clip fraction vs d."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    rows = metrics["per_width"]
    d = [r["dim"] for r in rows]
    for key, label in (
        ("sgd", "SGD"),
        ("dp_eps", f"DP-SGD ε={config['target_epsilon']}"),
        ("dp_sigma", f"DP-SGD σ={config['noise_multiplier']}"),
    ):
        _errorbar(a, d, [r[key]["test_accuracy"] for r in rows], label=label)
    a.set(xscale="log", xlabel="parameters d", ylabel="final test accuracy (%)", title="claim 3: width")
    a.legend(fontsize=7)
    for key in ("dp_eps", "dp_sigma"):
        _errorbar(b, d, [r[key]["gap_sgd_minus_dp"] for r in rows], label=f"gap ({key})")
    b2 = b.twinx()
    b2.plot(d, [_num(r["dp_eps"]["clip_fraction"]["mean"]) for r in rows], "k:", label="clip fraction")
    b2.set(ylim=(0, 1.05), ylabel="clip fraction")
    b.set(xscale="log", xlabel="parameters d", ylabel="SGD − DP-SGD (%)")
    b.legend(fontsize=7, loc="upper left")
    return fig


def fig_prune(config: dict, metrics: dict) -> plt.Figure:
    """DP-SGD test accuracy vs sparsity for each mask source (oracle marked not private)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for source, rows in metrics["per_source"].items():
        label = source + (" (NOT private)" if source == "oracle" else "")
        _errorbar(ax, [r["sparsity"] for r in rows], [r["test_accuracy"] for r in rows], label=label)
    ax.axhline(_num(metrics["sgd_dense"]["mean"]) * 100, color="gray", ls="--", label="SGD dense")
    ax.set(
        xlabel="sparsity", ylabel="final test accuracy (%)", title=f"claim 4: pruning at ε={config['target_epsilon']}"
    )
    ax.legend(fontsize=7)
    return fig


ARM_COLORS = {"sgd": "C0", "clip": "C3", "noise": "C2", "dpsgd": "C1"}
FAMILY_MARKERS = {"mlp": "o", "linearised": "s", "teacher": "^"}
DIRECTION_MARKERS = {"top": "o", "random": "D", "flat": "v"}


def _positive_pairs(xs: list[float], ys: list[float]) -> tuple[float, float]:
    vals = [v for v in xs + ys if v > 0 and v == v and v != float("inf")]
    return (min(vals), max(vals)) if vals else (1e-6, 1.0)


def fig_basin(config: dict, metrics: dict) -> plt.Figure:
    """Warm-start basin experiment: predicted vs measured excess (log–log, ±k SE), recovery, teacher D sweep."""
    k = _num(metrics["summary"].get("k_se", 2.0))
    rows = metrics["rows"]
    teacher = [r for r in rows if r["family"] == "teacher"]
    ncols = 3 if teacher else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.6))
    a = axes[0]
    pred = [_num(r["predicted_excess"]) for r in rows]
    meas = [_num(r["measured_excess"]["mean"]) for r in rows]
    lo, hi = _positive_pairs(pred, meas)
    lo, hi = lo / 2, hi * 2
    skipped = 0
    for r, p, m in zip(rows, pred, meas):
        if not (p > 0 and m > 0):
            skipped += 1
            continue
        se = _num(r["measured_excess"]["se"]) if r["measured_excess"]["se"] != "nan" else 0.0
        err = [[min(k * se, m - lo * 1.0001)], [k * se]]
        a.errorbar(
            p,
            m,
            yerr=err,
            fmt=FAMILY_MARKERS.get(r["family"], "o"),
            color=ARM_COLORS.get(r["arm"], "k"),
            ms=5,
            capsize=2,
            lw=0.8,
            alpha=0.85,
        )
    a.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    a.fill_between([lo, hi], [lo * 0.75, hi * 0.75], [lo * 1.25, hi * 1.25], color="0.85", zorder=0)
    a.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    a.set_xlabel("predicted excess loss (model, arm − SGD)")
    a.set_ylabel(f"measured excess loss (±{k:g} SE)")
    share = metrics["summary"].get("mlp", {}).get("model", {}).get("within_tolerance")
    title = "warm start at w*"
    if share is not None and share == share:
        title += f": {_num(share):.0%} of MLP rows within 25 %"
    a.set_title(title, fontsize=10)
    handles = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=arm) for arm, c in ARM_COLORS.items() if arm != "sgd"
    ]
    handles += [
        plt.Line2D([], [], color="0.3", marker=mk, ls="", label=fam)
        for fam, mk in FAMILY_MARKERS.items()
        if any(r["family"] == fam for r in rows)
    ]
    handles.append(plt.Line2D([], [], color="0.85", lw=6, label="identity ± 25 %"))
    a.legend(handles=handles, fontsize=7, loc="upper left")
    if skipped:
        a.text(0.98, 0.02, f"{skipped} rows ≤ 0 not shown", transform=a.transAxes, ha="right", fontsize=7)
    b = axes[1]
    rec = [r for r in metrics.get("recovery", []) if _num(r["predicted_recovery"]) > 0]
    rp = [_num(r["predicted_recovery"]) for r in rec]
    rm = [_num(r["measured_recovery"]["mean"]) for r in rec]
    lo2, hi2 = _positive_pairs(rp, rm)
    lo2, hi2 = lo2 / 2, hi2 * 2
    for r, p, m in zip(rec, rp, rm):
        shown = m if (m > 0 and m != float("inf")) else hi2 / 1.5
        b.plot(
            p,
            shown,
            DIRECTION_MARKERS.get(r["direction"], "o"),
            color=ARM_COLORS.get(r["arm"], "k"),
            mfc="none" if shown != m else ARM_COLORS.get(r["arm"], "k"),
            ms=6,
        )
    b.plot([lo2, hi2], [lo2, hi2], "k-", lw=0.8)
    b.set(xscale="log", yscale="log", xlim=(lo2, hi2), ylim=(lo2, hi2))
    b.set_xlabel("predicted recovery time (steps)")
    b.set_ylabel("measured recovery time (steps)")
    b.set_title("recovery after a displacement (open: not recovered)", fontsize=10)
    dh = [plt.Line2D([], [], color="0.3", marker=mk, ls="", label=d) for d, mk in DIRECTION_MARKERS.items()]
    dh += [
        plt.Line2D([], [], color=ARM_COLORS[arm], marker="o", ls="", label=arm)
        for arm in ("sgd", "noise", "clip", "dpsgd")
        if any(r["arm"] == arm for r in rec)
    ]
    b.legend(handles=dh, fontsize=7, loc="upper left")
    if teacher:
        c = axes[2]
        for arm in ("clip", "noise", "dpsgd"):
            sub = sorted((r for r in teacher if r["arm"] == arm), key=lambda r: float(r["dataset"].split("d=")[-1]))
            dims = [float(r["dataset"].split("d=")[-1]) for r in sub]
            m = [_num(r["measured_excess"]["mean"]) for r in sub]
            se = [k * _num(r["measured_excess"]["se"]) for r in sub]
            c.errorbar(dims, m, yerr=se, fmt="o", color=ARM_COLORS[arm], capsize=2, label=f"{arm} measured")
            c.plot(dims, [_num(r["predicted_excess"]) for r in sub], "-", color=ARM_COLORS[arm], label=f"{arm} model")
        c.set(xscale="log", yscale="symlog" if any(_num(r["measured_excess"]["mean"]) <= 0 for r in teacher) else "log")
        c.set_xlabel("teacher input dimension D (rank fixed)")
        c.set_ylabel(f"excess loss (±{k:g} SE)")
        c.set_title("teacher–student: excess vs D", fontsize=10)
        c.legend(fontsize=7)
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


def draw(folder: str | Path) -> Path | None:
    """Draw the figure of one result folder into ``<folder>/<kind>.png``; None if not an experiment."""
    folder = Path(folder)
    if not (folder / "metrics.json").is_file():
        return None
    config, metrics = _load(folder)
    name = kind(metrics)
    if name is None:
        return None
    fig = FIGURES[name](config, metrics)
    fig.tight_layout()
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
                path = draw(metrics.parent)
                if path is not None:
                    print(path)
                    drawn += 1
    return 0 if drawn else 1


if __name__ == "__main__":
    raise SystemExit(main())
