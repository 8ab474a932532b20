"""Shared machinery of the claim experiments: one training run, paired statistics, result folders.

Every experiment is a sweep of ``simulations.nn.train.train`` runs (the training engine) that differ
in one knob, paired across that knob: the same ``seed`` gives the same initialisation, data order and
random streams, so differences between runs with the same seed are *paired* and their standard error
is the SE of the per-seed differences (much smaller than the SE of either mean).

Statistics: mean ± SE with SE = sd / √n (sd with n − 1 degrees of freedom; "nan" for one seed);
claims are decided by paired t-tests (df = n − 1) with 95 % CIs, Holm-adjusted within each claim
(``simulations.common.stats``), and reported as verdict records in ``metrics.json``.

Tuning (``simulations.net_tune``): with ``lr_grid`` / ``clip_grid`` given, every arm of an
experiment is tuned on the validation split (``n_val`` examples carved out of the training pool,
disjoint from train and test) with the ``tune_seeds`` (disjoint from the evaluation ``seeds``); the
grid, the validation score of every point and the choice are saved per arm.

Determinism: every run of an experiment uses ``threads`` torch threads (saved in ``config.json``):
the same seed and thread count give the same numbers on the same machine; different thread counts
need not (float summation order), nor other machines.

Guards (:func:`check_sweep`, called by every experiment's ``run`` right after its output folder is
checked): before anything is loaded or trained, the TrainConfigs of the sweep's extreme runs
(``probe_runs``) are built — so every value any run will use meets the engine's bounds — and one
run's memory and the planned runs' total work are checked against ``--max-memory`` /
``--max-work``. A tuning candidate that diverges is recorded and not chosen (``simulations.net_tune``);
a diverging evaluation run stops the sweep with one line, and nothing is written (result folders
appear atomically, mask runs included).

Fan-out: ``--workers N`` (a Dask LocalCluster of N processes) or ``--scheduler ADDRESS`` (a running
Dask scheduler) runs a sweep's training runs through ``simulations.common.fanout`` (one cell per run,
:func:`run_job`) instead of one after the other in this process; without them (and outside a
fan-out session) :meth:`Sweep.run` runs serially exactly as before. Every seed is in the run's
``TrainConfig``, so the results are identical to the serial ones (same numbers in ``metrics.json``;
only timings differ). Observers see every run: ``before`` for all runs of a sweep before the first is
submitted, ``after`` in run order once they are back. ``workers`` / ``scheduler`` are execution
fields: they enter neither the run key nor the ``TrainConfig``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulations.common.fanout import Cell, Execution, execution_of, run_cells

# --------------------------------------------------------------------------------------------
# the training engine. Imported lazily so that ``--help`` is fast, and reachable through
# one function so that tests can substitute a small stand-in.


def trainer() -> tuple[type, Callable[..., Any]]:
    """(TrainConfig, train) from ``simulations.nn.train``."""
    from simulations.nn.train import TrainConfig, train

    return TrainConfig, train


def train_config(**fields: Any) -> Any:
    """A ``TrainConfig`` from keyword fields; ``None`` values are left at the engine's default."""
    config_cls, _ = trainer()
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(k for k in fields if k not in names)
    if unknown:  # an engine/experiment mismatch is a programming error, not a usage error
        raise RuntimeError(f"TrainConfig has no field(s) {unknown}; experiments and engine disagree")
    return config_cls(**{k: v for k, v in fields.items() if v is not None})


def run_training(config: Any, *, return_model: bool = False) -> dict:
    """Run one training and return the engine's result dict (per-epoch history inside).

    With ``return_model`` the trained network and its masks (or None) are added as ``"model"`` and
    ``"masks"`` (not JSON: callers drop them before writing).
    """
    _, train = trainer()
    if not return_model:
        return train(config)
    result, model = train(config, return_model=True)
    result["model"] = model
    result["masks"] = result.pop("_masks", None)
    return result


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads (0: leave torch's setting), restoring it after.

    On a small machine shared by several processes, torch's default (one thread per core) made a
    DP-SGD step ~20× slower than one thread (measured: 105 ms vs 5.8 ms for a width-128 MLP).
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_saved(config: Any) -> dict:
    """Run one training with the engine's ``run_train`` (result folder at ``config.out``, with
    ``model.pt``) and return its ``metrics.json`` (history and privacy)."""
    from simulations.common.results import read_json
    from simulations.nn.train import run_train

    path = run_train(config)
    return read_json(Path(path) / "metrics.json")


def history(result: dict, key: str) -> np.ndarray:
    """The per-epoch series ``key`` of a training result as a float array (nan where missing).

    The engine's history is a list of per-epoch records, record 0 = before training, record t = after
    epoch t (``simulations.nn.train``); a dict of lists is accepted too.
    """
    hist = result.get("history", result)
    if isinstance(hist, dict):
        if key not in hist:
            raise KeyError(f"training history has no {key!r}; it has {sorted(hist)}")
        values = list(hist[key])
    else:
        if not any(key in rec for rec in hist):
            raise KeyError(f"training history has no {key!r}; records have {sorted(hist[-1]) if hist else []}")
        values = [rec.get(key) for rec in hist]
    return np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)


def final(result: dict, key: str) -> float:
    """Last value of the per-epoch series ``key``."""
    series = history(result, key)
    return float(series[-1]) if series.size else math.nan


MAX_TUNED_LR = 1e6  # the engine's largest learning rate (simulations.nn.train.MAX_LR)

# names of the per-epoch series in the engine's history (one place to adapt)
# (record 0 is before training, record t after epoch t)
TEST_ACC = "test_acc"
TEST_LOSS = "test_loss"
TRAIN_ACC = "train_acc"
TRAIN_LOSS = "train_loss"
EPSILON = "epsilon_rdp"
CLIP_FRACTION = "clip_fraction"
NORM_MEDIAN = "norm_q50"


# --------------------------------------------------------------------------------------------
# fields shared by the experiment configs (each experiment overrides defaults as it needs)


def opt(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in seeds)
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, got {seeds}")
    return seeds


def check_fraction_list(name: str, values: Sequence[float], *, upper_open: bool = True) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    for v in values:
        if not (0 <= v < 1 if upper_open else 0 <= v <= 1):
            raise ValueError(f"{name} must lie in [0, 1{')' if upper_open else ']'}, got {v}")
    return values


# --------------------------------------------------------------------------------------------
# observers: code that must see every training run of a sweep (a time budget, a run log)


@dataclass(frozen=True)
class RunObserver:
    """Called around every training run of every :class:`Sweep` while it is active (:func:`observe_runs`).

    ``before(config)`` may raise to stop the sweep before that run starts (e.g. a spent time budget);
    ``after(config, result, seconds)`` sees each finished run.
    """

    before: Callable[[Any], None] | None = None
    after: Callable[[Any, dict, float], None] | None = None


_OBSERVERS: list[RunObserver] = []


@contextlib.contextmanager
def observe_runs(observer: RunObserver) -> Iterator[None]:
    """Make ``observer`` see every training run started by a :class:`Sweep` inside the block."""
    _OBSERVERS.append(observer)
    try:
        yield
    finally:
        _OBSERVERS.remove(observer)


def check_observers(config: Any) -> None:
    """Call every active observer's ``before(config)`` (it may raise, e.g. a spent time budget).

    For experiments whose units of work are not :class:`Sweep` runs (``simulations.net_basin``).
    """
    for observer in list(_OBSERVERS):
        if observer.before is not None:
            observer.before(config)


def run_job(*, config: Any, mode: str, diverged_ok: bool) -> tuple[dict, float]:
    """One job of a fanned-out :class:`Sweep` (a ``simulations.common.fanout`` cell): the serial loop's
    body for one run — ``mode`` "saved" (:func:`run_saved`), "model" (:func:`run_training` with the
    network) or "plain" — with divergence turned into ``{"diverged": message, "history": []}`` when
    ``diverged_ok``. Returns ``(result, seconds)``."""
    t0 = time.perf_counter()
    try:
        if mode == "saved":
            result = run_saved(config)
        elif mode == "model":
            result = run_training(config, return_model=True)
        else:
            result = run_training(config)
    except ValueError as exc:
        from simulations.nn.train import TrainingDiverged

        if not (diverged_ok and isinstance(exc, TrainingDiverged)):
            raise
        result = {"diverged": str(exc), "history": []}
    return result, time.perf_counter() - t0


@dataclass
class Sweep:
    """Runs a list of (label, TrainConfig) jobs with progress on stderr and a time log.

    ``execution`` (None or serial: in this process, one run after the other) fans the runs out over
    Dask workers (module docstring, "Fan-out"); the results are the same."""

    label: str
    quiet: bool = False
    threads: int = 0
    execution: Execution | None = None

    @classmethod
    def of(cls, label: str, config: NetExperiment) -> Sweep:
        """A sweep with the experiment's ``quiet``, ``threads`` and ``workers`` / ``scheduler`` settings."""
        return cls(label, quiet=config.quiet, threads=config.threads, execution=execution_of(config))

    def run(
        self,
        jobs: Sequence[tuple[dict, Any]],
        *,
        keep_model: Callable[[dict], bool] | None = None,
        saved: bool = False,
        diverged_ok: bool = False,
    ) -> list[dict]:
        """Run every job; ``keep_model(tags)`` True keeps that run's network in ``result["model"]``;
        ``saved`` writes each run's own result folder (its config's ``out``) via :func:`run_saved`.

        A run that diverges (``simulations.nn.train.TrainingDiverged``) stops the sweep, unless
        ``diverged_ok`` (tuning candidates): then its result is ``{"diverged": message}`` and the
        sweep goes on."""

        def job_mode(tags: dict) -> str:
            return "saved" if saved else ("model" if keep_model is not None and keep_model(tags) else "plain")

        if self.execution is not None and self.execution.kind != "serial":
            return self._fan_out(jobs, self.execution, mode=job_mode, diverged_ok=diverged_ok)
        from simulations.common.cli import Progress

        results = []
        start = time.perf_counter()
        # privacy accounting is memoised natively by dptheory.privacy.epsilon (identical numbers)
        with (
            torch_threads(self.threads),
            Progress(total=len(jobs), label=self.label, quiet=self.quiet, min_seconds=0.0) as bar,
        ):
            for tags, config in jobs:
                for observer in _OBSERVERS:
                    if observer.before is not None:
                        observer.before(config)
                result, seconds = run_job(config=config, mode=job_mode(tags), diverged_ok=diverged_ok)
                for observer in _OBSERVERS:
                    if observer.after is not None:
                        observer.after(config, result, seconds)
                results.append({"tags": tags, "result": result, "seconds": seconds})
                bar.update(note=" ".join(f"{k}={v}" for k, v in tags.items()))
        if not self.quiet:
            sys.stderr.write(f"{self.label}: {len(jobs)} runs in {time.perf_counter() - start:.1f}s\n")
        return results

    def _fan_out(
        self,
        jobs: Sequence[tuple[dict, Any]],
        execution: Execution,
        *,
        mode: Callable[[dict], str],
        diverged_ok: bool,
    ) -> list[dict]:
        """:meth:`run` through ``simulations.common.fanout``: one :func:`run_job` cell per job."""
        start = time.perf_counter()
        for _, config in jobs:  # every check before the first run is submitted
            for observer in _OBSERVERS:
                if observer.before is not None:
                    observer.before(config)
        cells = []
        for i, (tags, config) in enumerate(jobs):
            # ``job`` keeps cells distinct whose configs differ only in fields outside the key (``out``)
            kwargs = {"config": config, "mode": mode(tags), "diverged_ok": diverged_ok, "job": i}
            cells.append(Cell(_run_cell, kwargs, label=" ".join(f"{k}={v}" for k, v in tags.items())))
        outputs = run_cells(cells, execution=execution, label=self.label, quiet=self.quiet)
        results = []
        for (tags, config), (result, seconds) in zip(jobs, outputs):
            for observer in _OBSERVERS:
                if observer.after is not None:
                    observer.after(config, result, seconds)
            results.append({"tags": tags, "result": result, "seconds": seconds})
        if not self.quiet:
            sys.stderr.write(
                f"{self.label}: {len(jobs)} runs in {time.perf_counter() - start:.1f}s ({execution.kind})\n"
            )
        return results


def _run_cell(*, config: Any, mode: str, diverged_ok: bool, job: int) -> tuple[dict, float]:
    """:func:`run_job` as a fan-out cell (``job``, the run's position, only keeps cells distinct)."""
    return run_job(config=config, mode=mode, diverged_ok=diverged_ok)


def draw_figure(config: Any) -> None:
    """Draw a network experiment's figure into its result folder from the written files (``paper.nn_figures``).

    Passed as ``run_main(..., figure=draw_figure)``: it runs after the result folder is complete, and
    a failure only warns (the results stay)."""
    from paper import nn_figures

    nn_figures.draw(config.out)


def select(results: Sequence[dict], **tags: Any) -> list[dict]:
    """The results whose tags match every given tag, in run order."""
    return [r for r in results if all(r["tags"].get(k) == v for k, v in tags.items())]


def per_seed(results: Sequence[dict], seeds: Sequence[int], key: str, **tags: Any) -> np.ndarray:
    """final(key) for each seed (in ``seeds`` order) among results matching ``tags``."""
    out = []
    for s in seeds:
        match = select(results, seed=s, **tags)
        if len(match) != 1:
            raise RuntimeError(f"expected one run for seed={s} {tags}, found {len(match)}")
        out.append(final(match[0]["result"], key))
    return np.asarray(out, dtype=float)


def curves(results: Sequence[dict], key: str) -> np.ndarray:
    """Stack the per-epoch series ``key`` of ``results`` into a (runs, epochs) array (nan-padded)."""
    series = [history(r["result"], key) for r in results]
    width = max((s.size for s in series), default=0)
    out = np.full((len(series), width), np.nan)
    for i, s in enumerate(series):
        out[i, : s.size] = s
    return out


# --------------------------------------------------------------------------------------------
# the fields every claim experiment shares; experiments subclass and re-declare defaults


@dataclass(frozen=True)
class NetExperiment:
    """Fields shared by the network experiments (defaults sized for minutes on 2 CPU cores)."""

    dataset: str = opt("mnist1d", "dataset name (see simulations.nn.data)")
    model: str = opt(
        "mlp",
        "network: mlp | cnn (GroupNorm) | dpcnn (tanh CNN; width/depth unused) | wrn | wrn_ws",
        choices=("mlp", "cnn", "dpcnn", "wrn", "wrn_ws"),
    )
    width: int = opt(128, "hidden units (mlp), channels (cnn) or widen factor (wrn)")
    depth: int = opt(2, "hidden layers (mlp), conv layers (cnn) or total depth (wrn)")
    epochs: int = opt(10, "training epochs")
    batch_size: int = opt(128, "expected batch size B (Poisson sampling rate q = B/n)")
    lr: float = opt(0.1, "learning rate")
    momentum: float = opt(0.9, "heavy-ball momentum")
    clip_norm: float = opt(1.0, "per-sample clipping norm C")
    noise_multiplier: float = opt(1.0, "noise multiplier sigma (ignored where target_epsilon is used)")
    delta: float = opt(1e-5, "privacy delta")
    seeds: tuple[int, ...] = opt((0, 1, 2, 3, 4), "seeds; runs with the same seed are paired")
    n_train: int | None = opt(None, "training examples (None: dataset default)")
    n_test: int | None = opt(None, "test examples (None: dataset default)")
    n_val: int = opt(0, "validation examples carved out of the training pool (tuning selects on them)")
    n_public: int = opt(0, "public examples carved out of the training pool (disjoint; e.g. for public masks)")
    lr_grid: tuple[float, ...] = opt((), "learning-rate grid tuned per arm on the validation split (empty: use lr)")
    clip_grid: tuple[float, ...] = opt((), "clip-norm grid tuned per clipped arm (empty: use clip_norm)")
    tune_seeds: tuple[int, ...] = opt((1000,), "seeds of the tuning runs (disjoint from seeds)")
    grid_extend: int = opt(2, "extend the lr grid beyond an edge choice by one point, up to this many times")
    max_runs: int = opt(3000, "refuse a configuration that plans more training runs than this")
    data_root: str | None = opt(None, "folder with mnist / fashion-mnist / cifar10 files")
    device: str = opt("cpu", "auto | cpu | cuda", choices=("auto", "cpu", "cuda"))
    out: str = opt("results/nn/experiment", "result folder (replaced atomically)")
    threads: int = opt(1, "torch CPU threads (1 is fastest on a small shared machine; 0 = torch's default)")
    augment: str = opt(
        "none", "augment training images: none | shift | shift_flip", choices=("none", "shift", "shift_flip")
    )
    augment_shift: int = opt(2, "largest translation in pixels (augment)")
    augment_multiplicity: int = opt(1, "K augmented copies per example, averaged before clipping (De et al. 2022)")
    workers: int = field(
        default=0,
        metadata={
            "help": "fan the training runs out over N Dask LocalCluster processes (0: serially here); "
            "results are identical",
            "execution": True,
        },
    )
    scheduler: str | None = field(
        default=None,
        metadata={
            "help": "fan the training runs out over a running Dask scheduler, e.g. tcp://127.0.0.1:8786 "
            "(overrides --workers); results are identical",
            "execution": True,
        },
    )
    quiet: bool = opt(False, "no progress on stderr")

    def __post_init__(self) -> None:
        from dptheory.validate import check_int, check_nonnegative, check_positive, check_probability

        for name in ("width", "depth", "epochs", "batch_size", "threads"):
            minimum = 0 if name in ("depth", "threads") else 1
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=minimum))
        object.__setattr__(self, "lr", check_positive("lr", self.lr))
        object.__setattr__(self, "momentum", check_nonnegative("momentum", self.momentum))
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {self.momentum}")
        object.__setattr__(self, "clip_norm", check_positive("clip_norm", self.clip_norm))
        object.__setattr__(self, "noise_multiplier", check_nonnegative("noise_multiplier", self.noise_multiplier))
        object.__setattr__(self, "delta", check_probability("delta", self.delta, open_left=True))
        object.__setattr__(self, "seeds", check_seeds(self.seeds))
        if self.n_train is not None:
            object.__setattr__(self, "n_train", check_int("n_train", self.n_train, minimum=2))
        if self.n_test is not None:
            object.__setattr__(self, "n_test", check_int("n_test", self.n_test, minimum=1))
        object.__setattr__(self, "n_val", check_int("n_val", self.n_val, minimum=0))
        object.__setattr__(self, "n_public", check_int("n_public", self.n_public, minimum=0))
        object.__setattr__(self, "max_runs", check_int("max_runs", self.max_runs, minimum=1))
        object.__setattr__(self, "grid_extend", check_int("grid_extend", self.grid_extend, minimum=0))
        for name in ("lr_grid", "clip_grid"):
            values = tuple(check_positive(f"{name} entry", v) for v in getattr(self, name))
            if any(not math.isfinite(v) for v in values):
                raise ValueError(f"{name} entries must be finite, got {values}")
            object.__setattr__(self, name, tuple(sorted(set(values))))
        object.__setattr__(self, "tune_seeds", check_seeds(self.tune_seeds))
        if set(self.tune_seeds) & set(self.seeds):
            raise ValueError(
                f"tune_seeds must be disjoint from seeds, got tune_seeds={self.tune_seeds} and seeds={self.seeds}"
            )
        if (self.lr_grid or self.clip_grid) and self.n_val < 1:
            raise ValueError(f"tuning (lr_grid / clip_grid) needs a validation split: n_val >= 1, got {self.n_val}")
        # --workers / --scheduler fan the runs out (identical results); refused here, before any run
        Execution(workers=self.workers, scheduler=self.scheduler)
        from simulations.nn.data import DATASETS

        if self.dataset.partition(":")[0] not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")

    def probe_runs(self) -> list[dict[str, Any]]:
        """TrainConfig overrides of this sweep's extreme runs, for :func:`check_sweep` (every run the sweep
        plans uses values inside theirs and is at most as large as the largest of them).

        Here: a DP-SGD run at each end of the lr and clip-norm grids (the grid's edge extensions
        included), with the largest seed. Experiments add their own knobs (widths, sparsities, …).
        """
        lrs = sorted({self.lr, *self.lr_grid})
        if len(self.lr_grid) >= 2 and self.grid_extend:  # net_tune extends an edge by the grid's spacing
            g = sorted(self.lr_grid)
            lrs = [g[0] * (g[0] / g[1]) ** self.grid_extend, *lrs, g[-1] * (g[-1] / g[-2]) ** self.grid_extend]
        lrs = [v for v in lrs if 1e-30 <= v <= MAX_TUNED_LR] or [self.lr]  # tune() skips extensions outside
        clips = sorted({self.clip_norm, *self.clip_grid})
        seed = max((*self.seeds, *self.tune_seeds))
        noise = {"mode": "dpsgd", "noise_multiplier": self.noise_multiplier}
        return [
            {**noise, "lr": lr, "clip_norm": c, "seed": seed} for lr in {lrs[0], lrs[-1]} for c in {clips[0], clips[-1]}
        ]

    @property
    def tuned(self) -> bool:
        """True when any hyperparameter grid is given (arms are tuned on the validation split)."""
        return bool(self.lr_grid or self.clip_grid)

    def check_run_count(self, planned: int) -> None:
        """ValueError when ``planned`` training runs exceed ``max_runs`` (a grid that cannot fit)."""
        if planned > self.max_runs:
            raise ValueError(
                f"this configuration plans {planned} training runs, more than max_runs={self.max_runs}; "
                "use smaller grids or fewer seeds (or raise --max-runs)"
            )

    def base_fields(self, **overrides: Any) -> dict[str, Any]:
        """The TrainConfig fields this experiment fixes for every run, updated by ``overrides``.

        Every field declared on :class:`NetExperiment` itself that ``TrainConfig`` also has is passed
        through by name (:func:`shared_train_fields`; nothing is copied by hand), runs are quiet, and
        ``target_epsilon=...`` in ``overrides`` calibrates σ instead (``noise_multiplier`` is dropped).
        Experiment defaults that differ from a single training run's on purpose: ``width`` 128 (100),
        ``momentum`` 0.9 (0), ``device`` cpu (auto).
        """
        fields = {name: getattr(self, name) for name in shared_train_fields()}
        fields["quiet"] = True
        fields.update(overrides)
        if fields.get("target_epsilon") is not None:
            fields["noise_multiplier"] = None
        return fields


@functools.cache
def shared_train_fields() -> tuple[str, ...]:
    """Fields declared on :class:`NetExperiment` that ``TrainConfig`` has too (but ``out``, ``quiet``).

    Computed on first use, so that importing an experiment (``--help``) does not import torch.
    """
    config_cls, _ = trainer()
    train = {f.name for f in dataclasses.fields(config_cls)}
    return tuple(
        f.name for f in dataclasses.fields(NetExperiment) if f.name in train and f.name not in ("out", "quiet")
    )


def check_sweep(config: NetExperiment, planned: int, probes: Sequence[dict[str, Any]] | None = None) -> None:
    """Validate a sweep's values and estimate its resources before any run starts (or anything is loaded).

    Each probe (default ``config.probe_runs()``) is the TrainConfig overrides of one extreme run:
    building its TrainConfig checks every value a run of the sweep will use against the engine's
    bounds (not only the sweep's own), and the largest probe's memory and ``planned`` × the largest
    probe's work are checked against the limits (``simulations.common.resources``,
    ``simulations.nn.train.training_cost``). A sweep that cannot fit is one ``ValueError`` (one line
    on the command line, exit status 2) before anything is trained or written.
    """
    from simulations.common.resources import check_memory, check_work
    from simulations.nn.train import TrainConfig, training_cost

    costs = []
    for probe in config.probe_runs() if probes is None else probes:
        try:
            run = train_config(**config.base_fields(**probe))
        except ValueError as exc:  # name the run, whose values may be derived (e.g. lr = grid / C)
            shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in probe.items())
            raise ValueError(f"{exc} (in a run this sweep plans: {shown})") from None
        if isinstance(run, TrainConfig):  # a stand-in engine (tests) has no cost model
            costs.append(training_cost(run))
    if not costs:
        return
    largest = max(costs, key=lambda c: c.memory)
    check_memory("one run of the sweep", largest.memory, detail=largest.memory_detail)
    heaviest = max(costs, key=lambda c: c.work)
    check_work(
        "the sweep",
        float(planned) * heaviest.work,
        detail=f"{planned} planned runs, the largest {heaviest.work_detail}",
    )


def training_set_size(config: NetExperiment) -> int:
    """n of the experiment's training set (loads the dataset; mnist1d generation is cached)."""
    from simulations.nn.data import load_dataset

    return load_dataset(
        config.dataset,
        root=config.data_root,
        seed=0,
        n_train=config.n_train,
        n_test=config.n_test,
        n_val=config.n_val,
        n_public=config.n_public,
    ).n_train


def task_label(config: NetExperiment) -> str:
    """'<dataset> n=<train size> <model>-<width>x<depth>, <epochs> epochs, B=<B>' for verdicts and tables
    (the dpcnn has a fixed architecture: no size; augmentation and its multiplicity K are named)."""
    size = "" if config.model == "dpcnn" else f"-{config.width}x{config.depth}"
    aug = ""
    if config.augment != "none":
        aug = f", {config.augment.replace('_', '+')} ±{config.augment_shift}px K={config.augment_multiplicity}"
    return (
        f"{config.dataset} n={training_set_size(config)} {config.model}{size}, "
        f"{config.epochs} epochs, B={config.batch_size}{aug}"
    )


def calibrated_sigma(
    config: NetExperiment, *, target_epsilon: float, epochs: int | None = None, prior: tuple = ()
) -> float:
    """σ that a DP-SGD run of ``config`` (``epochs`` DP-SGD epochs, default all) gets for
    ``target_epsilon`` at the run's δ, composed after the ``prior`` mechanisms (RDP, conservative:
    ``dptheory.privacy.noise_multiplier_for_epsilon``, exactly as the engine calibrates). Memoised:
    an experiment calibrates once and passes σ to its runs, whose reported ε checks it."""
    n = training_set_size(config)
    return _sigma(
        float(target_epsilon),
        float(config.delta),
        config.batch_size / n,
        steps_per_epoch(config) * (config.epochs if epochs is None else int(epochs)),
        tuple(prior),
    )


@functools.lru_cache(maxsize=256)
def _sigma(target: float, delta: float, rate: float, steps: int, prior: tuple) -> float:
    from dptheory.privacy import noise_multiplier_for_epsilon

    return noise_multiplier_for_epsilon(
        target_epsilon=target, delta=delta, sample_rate=rate, steps=steps, accountant="rdp", prior_mechanisms=prior
    )


def verdict_line(v: dict) -> str:
    """One line per verdict record for a command's output (estimate and CI in the verdict's unit)."""
    s, p = v["scale"], v["p_value"]
    if math.isfinite(p):
        test = f"p_holm={p:.2g}"
    elif "interval" in str(v.get("adjustment", "")):
        test = "decided by the 95% CI"  # an interval verdict has no test statistic
    else:
        test = "no p-value"  # e.g. one seed: no paired t-test
    lo, hi = (float(x) for x in v["ci95"])
    ci = f"[{s * lo:+.2f}, {s * hi:+.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "[no CI]"
    return f"{v['statement']}: {s * v['estimate']:+.2f} {ci} {v['unit']}, {test}, n={v['n_seeds']} -> held: {v['held']}"


def steps_per_epoch(config: NetExperiment) -> int:
    """The engine's steps per epoch, round(n / B) (``simulations.nn.sampler.steps_per_epoch``)."""
    from simulations.nn.sampler import steps_per_epoch as engine_steps

    return engine_steps(n=training_set_size(config), batch_size=config.batch_size)
