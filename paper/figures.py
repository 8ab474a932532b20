"""Figures of the synthetic-basin experiments, drawn from result folders only (never simulate).

One function per figure; each takes a result folder written by a ``simulations`` command line
(``metrics.json`` with an ``"experiment"`` key, ``metrics.npz`` with the arrays), draws theory as
lines and simulation as points with ± k SE error bars (k read from the folder), and writes
``<experiment>.png`` (and ``.pdf`` unless ``formats`` says otherwise) into the same folder. The
command lines write the PNG only (speed); ``python -m paper`` writes both. ``python -m paper DIR...``
redraws every folder it is given (:func:`draw`).

Example::

    python -m simulations.basin_dim --d 1e4 --rank 10 --out /tmp/bd --quiet
    python -m paper /tmp/bd          # redraws /tmp/bd/basin_dim.png from the files
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

MODE_STYLE = {
    "sgd": {"color": "tab:blue", "marker": "o", "label": "SGD"},
    "clip": {"color": "tab:orange", "marker": "s", "label": "clip only"},
    "noise": {"color": "tab:green", "marker": "^", "label": "noise only"},
    "dpsgd": {"color": "tab:red", "marker": "D", "label": "DP-SGD"},
}


class ResultError(ValueError):
    """A result folder is missing or malformed (reported as one line, exit status 2)."""


MAX_JSON_BYTES = 256 * 2**20


def read_json_file(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``; ResultError (one line naming the file) if it is missing, too large,
    not UTF-8, not JSON or not an object."""
    p = Path(path)
    if not p.is_file():
        raise ResultError(f"{str(p)!r} is missing (not a result folder?)")
    try:
        if p.stat().st_size > MAX_JSON_BYTES:
            raise ResultError(f"malformed {str(p)!r}: larger than {MAX_JSON_BYTES} bytes")
        value = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ResultError(f"malformed {str(p)!r}: not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ResultError(f"malformed {str(p)!r}: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise ResultError(f"malformed {str(p)!r}: nested too deeply") from None
    except OSError as exc:
        raise ResultError(f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    if not isinstance(value, dict):
        raise ResultError(f"malformed {str(p)!r}: a JSON {type(value).__name__}, not an object")
    return value


def load(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(metrics.json as dict, metrics.npz as dict of arrays)`` of a result folder, or ResultError."""
    path = Path(folder)
    if not path.is_dir():
        raise ResultError(f"result folder not found: {str(path)!r}")
    mfile = path / "metrics.json"
    if not mfile.is_file():
        raise ResultError(f"{str(path)!r} is not a result folder: metrics.json missing")
    metrics = read_json_file(mfile)
    if "experiment" not in metrics or not isinstance(metrics["experiment"], str):
        raise ResultError(f"malformed {str(mfile)!r}: no 'experiment' key")
    arrays: dict[str, np.ndarray] = {}
    afile = path / "metrics.npz"
    if afile.is_file():
        try:
            if afile.stat().st_size > 4 * 2**30:
                raise ResultError(f"malformed {str(afile)!r}: larger than 4 GiB")
            with np.load(afile, allow_pickle=False) as npz:  # object arrays (pickles) are refused
                arrays = {k: npz[k] for k in npz.files}
        except ResultError:
            raise
        except Exception as exc:
            raise ResultError(f"malformed {str(afile)!r}: {type(exc).__name__}: {exc}") from None
    return metrics, arrays


def _num(x: Any) -> float:
    """JSON numbers back to float ('inf'/'nan' strings included); anything else is a TypeError/ValueError."""
    if isinstance(x, dict):
        x = x["mean"]
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise TypeError(f"expected a number, got {x!r}")
    return float(x)


MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, ZeroDivisionError)


def reads_results(name: str) -> Callable[[Callable[..., list[Path]]], Callable[..., list[Path]]]:
    """Decorate a figure function so that any malformed content of its folder is one ResultError line
    (``malformed <name> results in <folder>: ...``) and no figure is left open."""

    def wrap(fn: Callable[..., list[Path]]) -> Callable[..., list[Path]]:
        @functools.wraps(fn)
        def inner(folder: str | Path, *args: Any, **kwargs: Any) -> list[Path]:
            try:
                return fn(folder, *args, **kwargs)
            except ResultError:
                plt.close("all")
                raise
            except MALFORMED as exc:
                plt.close("all")
                text = " ".join(str(exc).split())[:200]
                raise ResultError(
                    f"malformed {name} results in {str(folder)!r}: {type(exc).__name__}: {text}"
                ) from None
            except OSError as exc:
                plt.close("all")
                raise ResultError(f"cannot write the {name} figure in {str(folder)!r}: {exc.strerror or exc}") from None

        return inner

    return wrap


FORMATS = ("png", "pdf")

_STAGED: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("staged", default=None)


def stage(path: Path) -> Path:
    """Where to write the figure file ``path``: ``path`` itself, or inside :func:`staged` a temporary
    sibling that is renamed into place only when every figure of the block has been drawn."""
    pending = _STAGED.get()
    if pending is None:
        return path
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    if (tmp, path) not in pending:  # the same figure drawn twice (a folder named twice) is written once
        pending.append((tmp, path))
    return tmp


@contextlib.contextmanager
def staged() -> Iterator[None]:
    """All figure files written inside the block appear together at its end, or (on an error) none."""
    pending: list[tuple[Path, Path]] = []
    token = _STAGED.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    finally:
        _STAGED.reset(token)
    for tmp, final in pending:
        os.replace(tmp, final)


def _plain_ticks(fig: Any, *, minor: bool = True) -> None:
    """Plain-number tick labels on log axes (no mathtext: several times faster to render).

    ``minor=False`` drops the (unlabelled) minor tick marks of log axes: on a few decades they are
    hundreds of tick objects, most of the drawing time of a figure with a fixed layout.
    """
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale in ("log", "symlog"):
                axis.set_major_formatter(fmt)
                if minor:
                    axis.set_minor_formatter(NullFormatter())
                else:
                    axis.set_minor_locator(NullLocator())


def _save(fig: Any, folder: Path, name: str, formats: tuple[str, ...], *, fixed_layout: bool = False) -> list[Path]:
    """Write ``name.<ext>`` for each format and close the figure.

    ``fixed_layout=False``: ``tight_layout`` plus a tight bounding box (each measures every label:
    a full extra layout pass, ≈ 1 s for a three-panel figure). ``fixed_layout=True``: the figure
    already placed its axes (``subplots_adjust``) and has no minor ticks on log axes; saved as is.
    """
    _plain_ticks(fig, minor=not fixed_layout)
    if not fixed_layout:
        fig.tight_layout()
    paths = []
    if not os.access(folder, os.W_OK):
        plt.close(fig)
        raise ResultError(f"cannot write figures into {str(folder)!r}: no write permission")
    for ext in formats:
        if ext not in FORMATS:
            plt.close(fig)
            raise ResultError(f"figure format must be one of {', '.join(FORMATS)}, got {ext!r}")
        paths.append(folder / f"{name}.{ext}")
        fig.savefig(stage(paths[-1]), dpi=110, bbox_inches=None if fixed_layout else "tight", format=ext)
    plt.close(fig)
    return paths


def _rows(metrics: dict[str, Any], key: str = "rows") -> list[dict[str, Any]]:
    rows = metrics.get(key)
    if not isinstance(rows, list) or not rows:
        raise ResultError(f"malformed metrics: '{key}' missing or empty")
    return rows


@reads_results("basin_dim")
def basin_dim(folder: str | Path, *, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Stationary excess loss, clip fraction and recovery time vs ambient dimension d, four modes."""
    folder = Path(folder)
    metrics, arrays = load(folder)
    k = float(metrics.get("k_se", 2.0))
    rows = _rows(metrics)
    try:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        # fixed margins instead of a tight layout (speed): 0.9 in left of each panel, room for a y label
        # and tick labels of up to 6 characters (every decade f"{v:g}" writes: 0.0001, 1e-05, 100000)
        fig.subplots_adjust(left=0.065, right=0.99, bottom=0.12, top=0.92, wspace=0.26)
        for mode in metrics["modes"]:
            st = MODE_STYLE.get(mode, {"color": "k", "marker": "x", "label": mode})
            sel = [r for r in rows if r["mode"] == mode]
            d = np.array([r["dim"] for r in sel], dtype=float)
            loss = np.array([_num(r["sim_loss"]["mean"]) for r in sel])
            loss_se = np.array([_num(r["sim_loss"]["se"]) for r in sel])
            clip = np.array([_num(r["sim_clip_fraction"]["mean"]) for r in sel])
            clip_se = np.array([_num(r["sim_clip_fraction"]["se"]) for r in sel])
            if f"theory_loss_{mode}" in arrays:
                axes[0].plot(arrays["theory_dims"], arrays[f"theory_loss_{mode}"], color=st["color"], lw=1.5)
                axes[1].plot(arrays["theory_dims"], arrays[f"theory_clip_fraction_{mode}"], color=st["color"], lw=1.5)
            axes[0].errorbar(
                d,
                loss,
                yerr=k * loss_se,
                fmt=st["marker"],
                color=st["color"],
                label=st["label"],
                ms=5,
                capsize=2,
                ls="none",
            )
            axes[1].errorbar(d, clip, yerr=k * clip_se, fmt=st["marker"], color=st["color"], ms=5, capsize=2, ls="none")
            pred_rec = np.array([_num(r["pred_recovery_time"]) for r in sel])
            sim_rec = np.array([_num(r["sim_recovery_time"]) for r in sel])
            axes[2].plot(d, pred_rec, color=st["color"], lw=1.5)
            axes[2].plot(d, sim_rec, st["marker"], color=st["color"], ms=5)
        axes[0].set(
            xscale="log",
            yscale="log",
            xlabel="ambient dimension d",
            ylabel="stationary excess loss",
            title=f"lines: theory; points: simulation ± {k:g} SE",
        )
        axes[1].set(
            xscale="log", xlabel="ambient dimension d", ylabel="fraction of clipped samples", ylim=(-0.05, 1.05)
        )
        axes[2].set(
            xscale="log",
            yscale="log",
            xlabel="ambient dimension d",
            ylabel="recovery time (steps)",
            title="after a displacement at stationarity",
        )
        axes[0].legend(fontsize=8, loc="upper left")
        for ax in axes:
            ax.grid(True, which="major", lw=0.4, alpha=0.4)
        return _save(fig, folder, "basin_dim", formats, fixed_layout=True)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed basin_dim results in {str(folder)!r}: {exc}") from None


@reads_results("recovery")
def recovery(folder: str | Path, *, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Mean excess loss after a displacement (theory lines, simulation ± k SE) and recovery time vs d."""
    folder = Path(folder)
    metrics, arrays = load(folder)
    k = float(metrics.get("k_se", 2.0))
    rows = _rows(metrics)
    dims = sorted({int(r["dim"]) for r in rows})
    try:
        fig, axes = plt.subplots(1, len(dims) + 1, figsize=(4.2 * (len(dims) + 1), 3.8), squeeze=False)
        axes = axes[0]
        for ax, d in zip(axes, dims):
            for r in (r for r in rows if int(r["dim"]) == d):
                st = MODE_STYLE.get(r["mode"], {"color": "k", "marker": "x", "label": r["mode"]})
                key = f"{r['mode']}_{d}"
                pred, sim, se = (arrays[f"{n}_{key}"] for n in ("pred_curve", "sim_curve", "sim_curve_se"))
                init = _num(r["initial_excess"])
                ax.plot(np.arange(pred.size), pred / init, color=st["color"], lw=1.5, label=st["label"])
                t = np.arange(1, sim.size + 1)
                every = max(1, sim.size // 25)
                ax.errorbar(
                    t[::every],
                    sim[::every] / init,
                    yerr=k * se[::every] / init,
                    fmt=st["marker"],
                    color=st["color"],
                    ms=3,
                    capsize=1.5,
                    ls="none",
                )
            ax.axhline(float(metrics.get("threshold", 0.1)), color="0.6", lw=0.8, ls=":")
            ax.set(
                xscale="symlog",
                xlabel="steps after the displacement",
                ylabel="excess loss / initial excess",
                title=f"d = {d}",
            )
        axes[0].legend(fontsize=8)
        ax = axes[-1]
        for mode in metrics["modes"]:
            st = MODE_STYLE.get(mode, {"color": "k", "marker": "x", "label": mode})
            sel = [r for r in rows if r["mode"] == mode]
            d = np.array([r["dim"] for r in sel], dtype=float)
            ax.plot(d, [_num(r["pred_recovery_time"]) for r in sel], color=st["color"], lw=1.5)
            ax.errorbar(
                d,
                [_num(r["sim_recovery_time"]) for r in sel],
                yerr=[k * _num(r["sim_recovery_time_se"]) for r in sel],
                fmt=st["marker"],
                color=st["color"],
                ms=5,
                capsize=2,
                ls="none",
                label=st["label"],
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="ambient dimension d",
            ylabel="recovery time (steps)",
            title=f"lines: theory; points: simulation ± {k:g} SE",
        )
        return _save(fig, folder, "recovery", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed recovery results in {str(folder)!r}: {exc}") from None


@reads_results("switch")
def switch(folder: str | Path, *, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Final excess loss vs switch step, both directions: theory lines, simulation ± k SE."""
    folder = Path(folder)
    metrics, arrays = load(folder)
    k = float(metrics.get("k_se", 2.0))
    rows = _rows(metrics)
    try:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        colors = ("tab:purple", "tab:brown")
        for c, name in zip(colors, metrics["directions"]):
            sel = [r for r in rows if r["direction"] == name]
            s = np.array([r["switch_step"] for r in sel], dtype=float)
            for ax, (pkey, skey) in zip(
                axes, (("pred_mean_field", "sim_loss"), ("pred_heldout_linear", "sim_heldout"))
            ):
                ax.plot(s, [_num(r[pkey]) for r in sel], color=c, lw=1.5, label=f"{name} theory")
                if pkey == "pred_mean_field":
                    ax.plot(
                        s, [_num(r["pred_linear"]) for r in sel], color=c, lw=1, ls="--", label=f"{name} linear theory"
                    )
                ax.errorbar(
                    s,
                    [_num(r[skey]["mean"]) for r in sel],
                    yerr=[k * _num(r[skey]["se"]) for r in sel],
                    fmt="o",
                    color=c,
                    ms=4,
                    capsize=2,
                    ls="none",
                    label=f"{name} simulation",
                )
        axes[0].set(
            yscale="log",
            xlabel="switch step s",
            ylabel="final training excess loss",
            title=f"T = {metrics['total_steps']}; points ± {k:g} SE",
        )
        axes[1].set(
            yscale="log",
            xlabel="switch step s",
            ylabel="final held-out excess loss",
            title="held-out (curved where training is flat)",
        )
        axes[0].legend(fontsize=7)
        for mode in metrics.get("curve_modes", []):
            st = MODE_STYLE.get(mode, {"color": "k", "marker": "x", "label": mode})
            theory = arrays[f"curve_theory_{mode}"]
            sim, se = arrays[f"curve_sim_{mode}"], arrays[f"curve_sim_se_{mode}"]
            axes[2].plot(np.arange(theory.size), theory, color=st["color"], lw=1.5, label=f"{st['label']} theory")
            t = np.arange(1, sim.size + 1)
            every = max(1, sim.size // 30)
            axes[2].errorbar(
                t[::every],
                sim[::every],
                yerr=k * se[::every],
                fmt=st["marker"],
                color=st["color"],
                ms=3,
                capsize=1.5,
                ls="none",
                label=f"{st['label']} simulation",
            )
        axes[2].set(yscale="log", xlabel="step", ylabel="training excess loss", title="pure runs (no switch)")
        if metrics.get("curve_modes"):
            axes[2].legend(fontsize=7)
        return _save(fig, folder, "switch", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed switch results in {str(folder)!r}: {exc}") from None


@reads_results("prune")
def prune(folder: str | Path, *, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Stationary excess loss vs keep fraction at fixed ε, per basis and mask source (theory, simulation)."""
    folder = Path(folder)
    metrics, _ = load(folder)
    k = float(metrics.get("k_se", 2.0))
    rows = _rows(metrics)
    try:
        bases = metrics["bases"]
        fig, axes = plt.subplots(1, len(bases), figsize=(5.2 * len(bases), 4), squeeze=False)
        colors = {"oracle": "tab:red", "init": "tab:blue"}
        for ax, basis in zip(axes[0], bases):
            for source in metrics["masks"]:
                sel = [r for r in rows if r["basis"] == basis and r["mask"] == source]
                f = np.array([_num(r["keep_fraction"]) for r in sel])
                total = np.array([_num(r["pred_loss"]) for r in sel])
                c = colors.get(source, "k")
                label = f"{source} mask" + (" (not private)" if source == "oracle" else "")
                ax.plot(f, total, color=c, lw=1.5, label=f"{label}: theory")
                floor = 1e-6 * np.nanmax(total)  # a zero bias (exact) is not drawn on the log scale
                bias = np.array([_num(r["pred_bias"]) for r in sel])
                ax.plot(f, np.where(bias > floor, bias, np.nan), color=c, lw=0.8, ls=":")
                ax.plot(f, [_num(r["pred_dp"]) for r in sel], color=c, lw=0.8, ls="--")
                stat = np.array([bool(r.get("stationary", True)) for r in sel])
                y = np.array([_num(r["sim_loss"]["mean"]) for r in sel])
                err = np.array([k * _num(r["sim_loss"]["se"]) for r in sel])
                ax.errorbar(
                    f[stat],
                    y[stat],
                    yerr=err[stat],
                    fmt="o",
                    color=c,
                    ms=4,
                    capsize=2,
                    ls="none",
                    label=f"{label}: simulation",
                )
                if np.any(~stat):
                    ax.errorbar(
                        f[~stat],
                        y[~stat],
                        yerr=err[~stat],
                        fmt="o",
                        mfc="none",
                        color=c,
                        ms=5,
                        capsize=2,
                        ls="none",
                        label=f"{label}: not yet stationary at T",
                    )
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="keep fraction k/d",
                ylabel="stationary excess loss",
                title=f"{basis} basis; ε = {_num(metrics['epsilon']):.2f} for every point",
            )
        axes[0][0].legend(fontsize=7, title="dotted: bias, dashed: DP term", title_fontsize=7)
        return _save(fig, folder, "prune", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed prune results in {str(folder)!r}: {exc}") from None


FIGURES: dict[str, Callable[[str | Path], list[Path]]] = {
    "prune": prune,
    "switch": switch,
    "basin_dim": basin_dim,
    "recovery": recovery,
}


def draw(folder: str | Path, *, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Redraw the figure of one result folder (dispatch on its ``experiment``)."""
    metrics, _ = load(folder)
    name = metrics["experiment"]
    if name not in FIGURES:
        raise ResultError(f"no figure for experiment {name!r} in {str(folder)!r} (known: {', '.join(FIGURES)})")
    return FIGURES[name](folder, formats=formats)
