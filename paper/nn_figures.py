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


def fig_validate(config: dict, metrics: dict) -> plt.Figure:
    """Predicted vs measured excess loss (log-log), one point per run, labelled by sweep point."""
    fig, axes = style.figure(1, width=5.2, height=4.2)
    ax = axes[0]
    markers = "osD^vP*X"
    for i, p in enumerate(metrics["points"]):
        pred = [_num(s["predicted_excess"]) for s in p["per_seed"]]
        meas = [_num(s["measured_excess"]) for s in p["per_seed"]]
        ax.scatter(
            pred, meas, marker=markers[i % len(markers)], s=30, label=f"width {p['width']}, {p['sparsity']:.0%} pruned"
        )
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], "k:", lw=0.8, label="measured = predicted")
    rho = metrics["spearman_all_pairs"]["rho"]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="predicted excess loss",
        ylabel="measured excess loss",
    )
    ax.set_title(f"theory vs networks, one point per run (Spearman {_num(rho):+.2f})")
    style.legend(ax, fontsize=6.5)
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
