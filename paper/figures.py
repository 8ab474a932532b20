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

from paper import style

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


def load(folder: str | Path, *, network_ok: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(metrics.json as dict, metrics.npz as dict of arrays)`` of a result folder, or ResultError.

    A malformed file (not UTF-8 JSON, not an object, an ``experiment`` that is not a string, a
    corrupt or pickled ``metrics.npz``) is one ResultError naming it; ``metrics.npz`` is read with
    ``allow_pickle=False``, so no file of a result folder can execute code.
    """
    path = Path(folder)
    if not path.is_dir():
        raise ResultError(f"result folder not found: {str(path)!r}")
    mfile = path / "metrics.json"
    if not mfile.is_file():
        raise ResultError(f"{str(path)!r} is not a result folder: metrics.json missing")
    metrics = read_json_file(mfile)
    if "experiment" in metrics and not isinstance(metrics["experiment"], str):
        raise ResultError(f"malformed {str(mfile)!r}: 'experiment' is not a name")
    if "experiment" not in metrics and not network_ok:
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


FORMATS = ("png", "pdf")
MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, ZeroDivisionError)

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
                raise ResultError(
                    f"cannot write the {name} figure from {str(folder)!r}: {exc.strerror or exc}"
                ) from None

        return inner

    return wrap


def _save(fig: Any, folder: Path, name: str, formats: tuple[str, ...]) -> list[Path]:
    """Write ``name.<ext>`` for each format (readable log ticks, tight box) and close the figure."""
    for ext in formats:
        if ext not in FORMATS:
            plt.close(fig)
            raise ResultError(f"figure format must be one of {', '.join(FORMATS)}, got {ext!r}")
    for ax in fig.axes:
        style.log_ticks(ax)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        paths.append(folder / f"{name}.{ext}")
        fig.savefig(stage(paths[-1]), dpi=120, bbox_inches="tight", format=ext)
    plt.close(fig)
    return paths


def _rows(metrics: dict[str, Any], key: str = "rows") -> list[dict[str, Any]]:
    rows = metrics.get(key)
    if not isinstance(rows, list) or not rows:
        raise ResultError(f"malformed metrics: '{key}' missing or empty")
    return rows


def _k(metrics: dict[str, Any]) -> float:
    return _num(metrics.get("k_se", 2.0))


def _finish(fig: Any, axes: Any, names: list[str], table: dict, *, k: float, open_marker: str | None = None) -> None:
    """One shared legend above the panels: the series, then the theory/measurement convention."""
    handles, labels = style.key_handles(names, table)
    ch, cl = style.convention_handles(open_marker=open_marker)
    cl[1] = f"points: simulation ± {k:g} SE"
    style.shared_legend(fig, handles + ch, labels + cl, ncol=min(len(labels) + len(cl), 7))
    fig.tight_layout(rect=(0, 0, 1, 0.9))


@reads_results("basin_dim")
def basin_dim(folder: str | Path, *, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None) -> list[Path]:
    """Stationary excess loss, clip fraction and recovery time vs ambient dimension d, four modes."""
    folder = Path(folder)
    metrics, arrays = load(folder)
    k = _k(metrics)
    rows = _rows(metrics)
    try:
        modes = list(metrics["modes"])
        fig, axes = style.figure(3, width=4.4, height=3.7)
        shifts = style.offsets(len(modes))
        for mode, shift in zip(modes, shifts):
            st = style.series(mode, style.MODES)
            sel = [r for r in rows if r["mode"] == mode]
            d = np.array([r["dim"] for r in sel], dtype=float)
            loss = np.array([_num(r["sim_loss"]["mean"]) for r in sel])
            loss_se = np.array([_num(r["sim_loss"]["se"]) for r in sel])
            clip = np.array([_num(r["sim_clip_fraction"]["mean"]) for r in sel])
            clip_se = np.array([_num(r["sim_clip_fraction"]["se"]) for r in sel])
            if f"theory_loss_{mode}" in arrays:
                style.theory(axes[0], arrays["theory_dims"], arrays[f"theory_loss_{mode}"], st)
                style.theory(axes[1], arrays["theory_dims"], arrays[f"theory_clip_fraction_{mode}"], st)
            style.points(axes[0], d * shift, loss, st, yerr=k * loss_se)
            style.points(axes[1], d * shift, clip, st, yerr=k * clip_se)
            style.theory(axes[2], d, [_num(r["pred_recovery_time"]) for r in sel], st)
            style.points(
                axes[2],
                d * shift,
                [_num(r["sim_recovery_time"]) for r in sel],
                st,
                yerr=[k * _num(r.get("sim_recovery_time_se", 0.0)) for r in sel],
            )
        axes[0].set(xscale="log", yscale="log", xlabel="ambient dimension d", ylabel="stationary excess loss")
        axes[0].set_title("stationary excess loss")
        axes[1].set(
            xscale="log", xlabel="ambient dimension d", ylabel="fraction of clipped samples", ylim=(-0.05, 1.05)
        )
        axes[1].set_title("clip fraction at stationarity")
        axes[2].set(xscale="log", yscale="log", xlabel="ambient dimension d", ylabel="recovery time (steps)")
        axes[2].set_title("recovery after a displacement")
        _finish(fig, axes, modes, style.MODES, k=k)
        return _save(fig, Path(out or folder), "basin_dim", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed basin_dim results in {str(folder)!r}: {exc}") from None


@reads_results("basin_dim")
def basin_dim_heldout(
    folder: str | Path, *, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None
) -> list[Path]:
    """Flat-direction error ‖e_flat‖² and held-out excess loss vs d at the end of the window."""
    folder = Path(folder)
    metrics, _ = load(folder)
    k = _k(metrics)
    rows = _rows(metrics)
    try:
        modes = list(metrics["modes"])
        fig, axes = style.figure(2, width=4.6, height=3.7)
        for mode, shift in zip(modes, style.offsets(len(modes))):
            st = style.series(mode, style.MODES)
            sel = [r for r in rows if r["mode"] == mode]
            d = np.array([r["dim"] for r in sel], dtype=float)
            for ax, pred, sim in (
                (axes[0], "pred_flat_err_sq", "sim_flat_err_sq"),
                (axes[1], "pred_heldout", "sim_heldout"),
            ):
                y = np.array([_num(r[sim]["mean"]) for r in sel])
                se = np.array([_num(r[sim]["se"]) for r in sel])
                p = np.array([_num(r[pred]) for r in sel])
                pos = p > 0
                style.theory(ax, d[pos], p[pos], st)
                ok = y > 0
                style.points(ax, (d * shift)[ok], y[ok], st, yerr=(k * se)[ok])
        axes[0].set(xscale="log", yscale="log", xlabel="ambient dimension d", ylabel="‖e_flat‖² (flat directions)")
        axes[0].set_title("random walk in the flat directions\n(invisible to the training loss; 0 at d = r: not drawn)")
        axes[1].set(xscale="log", yscale="log", xlabel="ambient dimension d", ylabel="held-out excess loss")
        axes[1].set_title("held-out loss (curved where training is flat)")
        _finish(fig, axes, modes, style.MODES, k=k)
        return _save(fig, Path(out or folder), "basin_dim_heldout", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed basin_dim results in {str(folder)!r}: {exc}") from None


@reads_results("recovery")
def recovery(folder: str | Path, *, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None) -> list[Path]:
    """Mean excess loss after a displacement (theory lines, simulation ± k SE) and recovery time vs d."""
    folder = Path(folder)
    metrics, arrays = load(folder)
    k = _k(metrics)
    rows = _rows(metrics)
    dims = sorted({int(r["dim"]) for r in rows})
    try:
        modes = list(metrics["modes"])
        fig, axes = style.figure(len(dims) + 1, width=3.9, height=3.6)
        threshold = float(metrics.get("threshold", 0.1))
        for ax, d in zip(axes, dims):
            for r in (r for r in rows if int(r["dim"]) == d):
                st = style.series(r["mode"], style.MODES)
                key = f"{r['mode']}_{d}"
                pred, sim, se = (arrays[f"{n}_{key}"] for n in ("pred_curve", "sim_curve", "sim_curve_se"))
                init = _num(r["initial_excess"])
                t = np.arange(pred.size)
                style.theory(ax, np.maximum(t, 0.5), np.clip(pred / init, 1e-4, None), st)
                ts = np.arange(1, sim.size + 1)
                pick = np.unique(np.geomspace(1, sim.size, 14).astype(int)) - 1
                y = sim[pick] / init
                ok = y > 1e-4
                style.points(ax, ts[pick][ok], y[ok], st, yerr=(k * se[pick] / init)[ok])
            ax.axhline(threshold, color="0.45", lw=0.9, ls=(0, (1, 2)))
            ax.text(1.0, threshold * 1.15, f"recovered ({threshold:g})", fontsize=7, color="0.35")
            ax.set(xscale="log", yscale="log", xlabel="steps after the displacement", ylim=(1e-3, 2.0))
            ax.set_ylabel("excess loss / initial excess")
            ax.set_title(f"d = {d:,}".replace(",", " "))
        ax = axes[-1]
        for mode, shift in zip(modes, style.offsets(len(modes))):
            st = style.series(mode, style.MODES)
            sel = [r for r in rows if r["mode"] == mode]
            mode_dims = np.array([r["dim"] for r in sel], dtype=float)
            style.theory(ax, mode_dims, [_num(r["pred_recovery_time"]) for r in sel], st)
            style.points(
                ax,
                mode_dims * shift,
                [_num(r["sim_recovery_time"]) for r in sel],
                st,
                yerr=[k * _num(r["sim_recovery_time_se"]) for r in sel],
            )
        ax.set(xscale="log", yscale="log", xlabel="ambient dimension d", ylabel="recovery time (steps)")
        ax.set_title("recovery time vs d")
        _finish(fig, axes, modes, style.MODES, k=k)
        return _save(fig, Path(out or folder), "recovery", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed recovery results in {str(folder)!r}: {exc}") from None


@reads_results("switch")
def switch(folder: str | Path, *, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None) -> list[Path]:
    """Final training and held-out excess loss vs switch step, both directions: theory lines, simulation ± k SE."""
    folder = Path(folder)
    metrics, _ = load(folder)
    k = _k(metrics)
    rows = _rows(metrics)
    try:
        fig, axes = style.figure(2, width=4.8, height=3.8)
        directions = list(metrics["directions"])
        for name in directions:
            st = style.series(name, style.DIRECTIONS)
            sel = [r for r in rows if r["direction"] == name]
            s = np.array([r["switch_step"] for r in sel], dtype=float)
            style.theory(axes[0], s, [_num(r["pred_mean_field"]) for r in sel], st)
            axes[0].plot(s, [_num(r["pred_linear"]) for r in sel], color=st.color, lw=0.8, ls=(0, (1, 1.5)), alpha=0.8)
            style.points(
                axes[0],
                s,
                [_num(r["sim_loss"]["mean"]) for r in sel],
                st,
                yerr=[k * _num(r["sim_loss"]["se"]) for r in sel],
            )
            style.theory(axes[1], s, [_num(r["pred_heldout_linear"]) for r in sel], st)
            style.points(
                axes[1],
                s,
                [_num(r["sim_heldout"]["mean"]) for r in sel],
                st,
                yerr=[k * _num(r["sim_heldout"]["se"]) for r in sel],
            )
        T = metrics["total_steps"]
        axes[0].set(yscale="log", xlabel=f"switch step s (of T = {T})", ylabel="final training excess loss")
        axes[0].set_title("training loss: set by the last phase\n(thin dotted: linear model near the optimum)")
        axes[1].set(yscale="log", xlabel=f"switch step s (of T = {T})", ylabel="final held-out excess loss")
        axes[1].set_title("held-out loss: grows with time in the noisy phase")
        _finish(fig, axes, directions, style.DIRECTIONS, k=k)
        return _save(fig, Path(out or folder), "switch", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed switch results in {str(folder)!r}: {exc}") from None


@reads_results("switch")
def switch_curves(
    folder: str | Path, *, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None
) -> list[Path]:
    """The two pure runs (no switch) step by step: mean-field theory line vs simulated mean ± k SE."""
    folder = Path(folder)
    metrics, arrays = load(folder)
    k = _k(metrics)
    try:
        modes = list(metrics.get("curve_modes", []))
        if not modes:
            raise ResultError(f"no pure-run curves in {str(folder)!r}")
        fig, axes = style.figure(1, width=5.6, height=3.9)
        ax = axes[0]
        for mode in modes:
            st = style.series(mode, style.MODES)
            th = arrays[f"curve_theory_{mode}"]
            sim, se = arrays[f"curve_sim_{mode}"], arrays[f"curve_sim_se_{mode}"]
            style.theory(ax, np.arange(th.size), th, st)
            t = np.arange(1, sim.size + 1)
            pick = np.linspace(0, sim.size - 1, 26).astype(int)
            style.points(ax, t[pick], sim[pick], st, yerr=k * se[pick])
        early = metrics.get("early_step")
        if early:
            ax.axvline(early, color="0.5", lw=0.8, ls=":")
        ax.set(yscale="log", xlabel="step", ylabel="training excess loss")
        ax.set_title("early phase: DP-SGD moves ≈ ηC per step, SGD geometrically")
        _finish(fig, axes, modes, style.MODES, k=k)
        return _save(fig, Path(out or folder), "switch_curves", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed switch results in {str(folder)!r}: {exc}") from None


@reads_results("prune")
def prune(folder: str | Path, *, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None) -> list[Path]:
    """Stationary excess loss vs keep fraction at fixed ε, per basis and mask source (theory, simulation)."""
    folder = Path(folder)
    metrics, _ = load(folder)
    k = _k(metrics)
    rows = _rows(metrics)
    try:
        bases = metrics["bases"]
        sources = list(metrics["masks"])
        fig, axes = style.figure(len(bases), width=4.8, height=3.9)
        any_open = False
        for ax, basis in zip(axes, bases):
            for source, shift in zip(sources, style.offsets(len(sources), spread=0.04)):
                st = style.series(source, style.MASKS)
                sel = [r for r in rows if r["basis"] == basis and r["mask"] == source]
                f = np.array([_num(r["keep_fraction"]) for r in sel])
                total = np.array([_num(r["pred_loss"]) for r in sel])
                style.theory(ax, f, total, st)
                stat = np.array([bool(r.get("stationary", True)) for r in sel])
                y = np.array([_num(r["sim_loss"]["mean"]) for r in sel])
                err = np.array([k * _num(r["sim_loss"]["se"]) for r in sel])
                style.points(ax, (f * shift)[stat], y[stat], st, yerr=err[stat])
                if np.any(~stat):
                    any_open = True
                    style.points(ax, (f * shift)[~stat], y[~stat], st, yerr=err[~stat], filled=False)
            ax.set(xscale="log", yscale="log", xlabel="keep fraction k/d", ylabel="stationary excess loss")
            ax.set_title(f"{basis} basis; DP-SGD at ε = {_num(metrics['epsilon']):.2f} for every point")
        _finish(fig, axes, sources, style.MASKS, k=k, open_marker="not yet stationary at T" if any_open else None)
        return _save(fig, Path(out or folder), "prune", formats)
    except (KeyError, TypeError, ValueError) as exc:
        plt.close("all")
        raise ResultError(f"malformed prune results in {str(folder)!r}: {exc}") from None


# experiment → the figures drawn from its folder (name of the file written, drawing function)
FIGURES: dict[str, tuple[Callable[..., list[Path]], ...]] = {
    "basin_dim": (basin_dim, basin_dim_heldout),
    "recovery": (recovery,),
    "switch": (switch, switch_curves),
    "prune": (prune,),
}


def draw(folder: str | Path, *, formats: tuple[str, ...] = FORMATS, out: str | Path | None = None) -> list[Path]:
    """Redraw every figure of one result folder (dispatch on its ``experiment``) into ``out`` (default: the folder)."""
    metrics, _ = load(folder, network_ok=True)
    if "experiment" not in metrics:  # a network experiment's folder (identified by its contents)
        from paper import nn_figures

        return nn_figures.draw(folder, formats=formats, out=out)
    name = metrics["experiment"]
    if name not in FIGURES:
        raise ResultError(f"no figure for experiment {name!r} in {str(folder)!r} (known: {', '.join(FIGURES)})")
    paths: list[Path] = []
    for fn in FIGURES[name]:
        paths += fn(folder, formats=formats, out=out)
    return paths
