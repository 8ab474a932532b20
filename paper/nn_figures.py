"""Figures of the network experiments, drawn only from their result folders (figures never train).

    python -m paper.nn_figures results/nn            # draws every experiment folder found below
    python -m paper.nn_figures results/nn/width      # one folder

Each experiment folder (written by ``python -m simulations.nn <command>``) holds ``config.json`` and
``metrics.json``; the figure is saved next to them as ``<command>.png``. The kind of folder is read
from its ``metrics.json`` (the "claim" / "what" entry), not from its name.

At least one folder is required (no folder: one usage line, exit status 2). A folder given on the
command line that holds no experiment result (itself or one level below) is one line and exit
status 2, as is a malformed file (not UTF-8 JSON, a list where an object belongs, a string or null
where a number belongs, a missing entry): the line names the file. ``--help`` / ``-h`` print this.
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

from paper.figures import MALFORMED, ResultError, read_json_file, stage, staged


def _load(folder: Path) -> tuple[dict, dict]:
    return read_json_file(folder / "config.json"), read_json_file(folder / "metrics.json")


def _num(x: Any) -> float:
    """A JSON number (or its 'nan' / 'inf' string) as float; anything else is a TypeError / ValueError."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise TypeError(f"expected a number, got {x!r}")
    return float(x)


def _errorbar(ax: Any, xs: list, stats: list[dict], scale: float = 100.0, **kw: Any) -> None:
    ys = [_num(s["mean"]) * scale for s in stats]
    es = [(_num(s["se"]) * scale if s["se"] != "nan" else 0.0) for s in stats]
    es = [e if e == e else 0.0 for e in es]  # an SE of one seed is nan: no bar
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


def fig_validate(config: dict, metrics: dict) -> plt.Figure:
    """Predicted vs measured excess loss (log-log), one point per run, labelled by sweep point."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for p in metrics["points"]:
        pred = [_num(s["predicted_excess"]) for s in p["per_seed"]]
        meas = [_num(s["measured_excess"]) for s in p["per_seed"]]
        ax.scatter(pred, meas, label=f"w={p['width']} p={p['sparsity']:.2f}")
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
    rho = metrics["spearman_all_pairs"]["rho"]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="predicted excess loss",
        ylabel="measured excess loss",
        title=f"theory vs networks (Spearman {_num(rho):+.2f})",
    )
    ax.legend(fontsize=6)
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
    if "points" in metrics and "spearman_all_pairs" in metrics:
        return "validate"
    return None


FIGURES: dict[str, Callable[[dict, dict], plt.Figure]] = {
    "switch": fig_switch,
    "ablate": fig_ablate,
    "width": fig_width,
    "prune": fig_prune,
    "validate": fig_validate,
}


def draw(folder: str | Path) -> Path | None:
    """Draw the figure of one result folder into ``<folder>/<kind>.png``; None if not an experiment.

    Raises ``ResultError`` (one line naming the folder) if its files are malformed.
    """
    folder = Path(folder)
    if not (folder / "metrics.json").is_file():
        return None
    config, metrics = _load(folder)
    name = kind(metrics)
    if name is None:
        return None
    try:
        fig = FIGURES[name](config, metrics)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(stage(path), dpi=120, format="png")
    except MALFORMED as exc:
        raise ResultError(
            f"malformed {name} results in {str(folder)!r}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        ) from None
    except OSError as exc:
        raise ResultError(f"cannot write the {name} figure in {str(folder)!r}: {exc.strerror or exc}") from None
    finally:
        plt.close("all")
    return path


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    """Draw every experiment folder found at or one level below each argument; print the files."""
    parser = _OneLineParser(
        prog="python -m paper.nn_figures", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", metavar="DIR", help="experiment folders, or folders holding them")
    try:
        args = parser.parse_args(argv)
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


def _draw_root(root: Path) -> list[Path]:
    """Draw the experiment folder ``root`` or those one level below it; ResultError if there are none."""
    if not root.is_dir():
        raise ResultError(f"no such folder: {str(root)!r}")
    found = []
    for metrics in sorted([root / "metrics.json", *root.glob("*/metrics.json")]):
        if metrics.is_file():
            path = draw(metrics.parent)
            if path is not None:
                found.append(path)
    if not found:
        raise ResultError(f"no network experiment result in {str(root)!r} (nor one level below)")
    return found


if __name__ == "__main__":
    raise SystemExit(main())
