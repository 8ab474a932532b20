"""Theory meets networks: DP-SGD arms warm-started at a converged minimum, against the spectral model.

A stationary formula predicts the excess loss *around a minimum*. So every comparison here starts
at one (well-posed by construction) and measures what the model of ``dptheory.spectral`` predicts
from quantities measured there:

1. **The minimum w*** (``simulations.nn.minimum``, cached): cosine SGD, then a full-batch L-BFGS polish
   of the L2-regularised objective L_μ = (1/n) Σ_i ℓ_i + (μ/2)‖m⊙w‖² (cross-entropy alone has no
   finite minimum on data an MLP can interpolate; μ = ``weight_decay``). Plateau criterion, recorded
   per network: ‖mean_i g̃_i(w*)‖ ≤ ``converged_ratio`` · median_i ‖g̃_i(w*)‖.
2. **Measured at w*** on the whole training set (``simulations.nn.measure``): the top-k Hessian
   eigenpairs (Lanczos, full reorthogonalisation), the spectral density of the other d − k
   directions by stochastic Lanczos quadrature (``probes`` × ``lanczos_steps``; Ghorbani, Krishnan,
   Xiao 2019, arXiv 1901.10159v1), the per-example gradient norms and their projections on the top-k
   eigenvectors. These build ``dptheory.spectral.SpectralBasin``.
3. **Arms from w*** (``simulations.nn.warmstart``): sgd, clip, noise (C_ref = C) and dpsgd at the
   small step η = ``lr_factor``/max(λ₁, tr H/B) (ηλ₁ ≤ 0.5 by default, far from the edge of stability
   ηλ₁ = 2; the tr H/B bound keeps SGD below its mini-batch stability edge, :func:`arm_lr`),
   momentum 0, Poisson sampling at B = ``batch_size``, paired streams (the same seed gives every arm
   the same batches and the same ξ). C = ``clip_factors`` × the median per-example norm at w* — a
   data-dependent choice: these runs are a theory check and are **not private**.
   Steps T per network: ``relaxation_times`` relaxation times 1/(η a) of the slowest direction that
   *matters* — the smallest drift a among the directions that carry ``matters`` (90 %) of the model's
   stationary excess of an arm, sorted by drift — clamped to [``min_steps``, ``max_steps``]; each row
   records how many relaxation times it covered.
4. **Measured excess** of an arm = time average over the last third of (arm − SGD) of the training
   objective L_μ (full training split every ``eval_every`` steps: the exact value, no estimator
   bias), with batch-means standard errors over the seeds (``simulations.common.stats.batch_means``;
   one batch per seed unless the window holds several 2.5-relaxation-time batches). The per-step
   Horvitz–Thompson batch loss (unbiased, one extra forward pass) and the test-loss excess are
   reported beside it. **Predicted excess** = the model's window average for the arm minus that for
   SGD (the same pairing), split into the clip-lag/fixed-point part (``bias``) and the fluctuation
   part (``noise``).
5. **Recovery** (claim 2 on a network) at the ``recovery`` points: after the T steps, displacements
   along the top eigenvector, a random direction and a near-flat direction (``measure_basin``), of
   sizes giving an initial excess ``displacement_loss`` (the flat one: the random one's size), each
   paired with the undisplaced continuation; the measured recovery time (first step the seed-mean
   excess is ≤ ``recovery_threshold`` of its initial value; bootstrap SE over seeds) against
   ``spectral_recovery_time``, for a clipped and an unclipped arm.
6. **Two controlled checks.** *linearised*: the linearised network f(w₀) + J(w₀)(w − w₀) of an MLP at
   initialisation with ½‖f − y‖² on one-hot targets (``simulations.nn.measure.linearise``): an exactly
   quadratic loss with H = JᵀJ/n and real, anisotropic per-example gradients; predicted both from the
   measured pipeline and from the exact spectrum (all d eigenpairs). *teacher*: the teacher–student
   task ``teacher:k=K,d=D`` at ``teacher_dims`` D (fixed rank K), the network analogue of ``basin_dim``.

Grids: ``grid="star"`` (the CPU default) varies one axis at a time around a centre (width
``center_width``, σ = ``center_sigma``, C = ``center_clip`` × median, dense): every width, every σ,
every C factor and the sparse networks (both mask sources) appear, but not their products; the
linearised network's σ sweep runs only the noise-only arm (its check). ``grid="full"`` (the GPU stage
of ``simulations.gpu_validate``) crosses widths × masks × σ × C. A clip-only arm does not depend on σ:
it is reported once per (network, C), never copied to the σ points (no pseudo-replicated rows).

Report (``<out>/metrics.json``): ``rows`` (one per point and arm: settings, ``predicted_excess``,
``measured_excess`` {mean, se, n}, the bias/noise split, clip fractions, relaxation coverage),
``recovery`` rows, ``networks`` (what was measured at each w*) and ``summary``: per family, the share
of rows within 25 % of the measurement, the log–log slope and intercept of measured on predicted
with 95 % CIs fitted on the rows (seed means: seeds are never points of the fit), and the same for
two null predictors ∝ d and ∝ √d with one fitted constant each. ``net_basin.png`` is drawn from it.

Example (CPU default; see docs/theory-vs-networks.md for a real run and its reading)::

    $ python -m simulations.nn basin --out results/nn/basin
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dptheory.records import Mode, Optimizer
from dptheory.validate import check_int, check_nonnegative, check_positive
from simulations.common import fanout, store
from simulations.common.agreement import agreement, loglog_fit, scaled_null
from simulations.common.fanout import execution_field
from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import Estimate, batch_means, simulated_recovery
from simulations.common.tables import fmt, table

FAMILIES = ("mlp", "linearised", "teacher")
ROW_ARMS = ("clip", "noise", "dpsgd")
GRIDS = ("star", "full")
DIRECTIONS = ("top", "random", "flat")
PRIVACY = "not private: C from measured per-example norms, w* and its masks from non-private training"


def _opt(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class BasinConfig:
    """Every flag of ``python -m simulations.nn basin`` (module docstring)."""

    dataset: str = _opt("mnist1d", "dataset of the MLP family (simulations.nn.data)")
    n_train: int | None = _opt(2000, "training examples of the MLP family (None: the dataset's)")
    depth: int = _opt(2, "hidden layers of the MLPs")
    widths: tuple[int, ...] = _opt((8, 32, 128), "MLP widths (dense)")
    center_width: int = _opt(32, "width of the star's centre (and of the sparse networks)")
    sparsity: float = _opt(0.9, "sparsity of the pruned networks (at center_width)")
    mask_sources: tuple[str, ...] = _opt(("wstar", "init"), "masks: wstar (dense SGD endpoint; not private), init")
    sigmas: tuple[float, ...] = _opt((0.5, 1.0, 2.0), "noise multipliers sigma")
    clip_factors: tuple[float, ...] = _opt((0.3, 3.0), "C as multiples of the median per-example norm at w*")
    center_sigma: float = _opt(1.0, "sigma of the star's centre")
    center_clip: float = _opt(0.3, "C factor of the star's centre")
    grid: str = _opt("star", "star (one axis at a time, CPU) | full (all products, GPU)", choices=GRIDS)
    weight_decay: float = _opt(1e-3, "mu of the regularised objective (a finite minimum)")
    pretrain_epochs: int = _opt(40, "epochs of the cosine SGD run before the polish")
    pretrain_lr: float = _opt(0.1, "peak lr of the cosine SGD run")
    pretrain_momentum: float = _opt(0.9, "momentum of the cosine SGD run")
    polish_iter: int = _opt(500, "full-batch L-BFGS iterations of the polish")
    converged_ratio: float = _opt(1e-2, "plateau criterion: |mean g| <= this * median |g_i| at w*")
    top_k: int = _opt(16, "top Hessian eigenpairs")
    top_steps: int | None = _opt(None, "Lanczos steps for the top-k (None: max(100, 4 top_k))")
    probes: int = _opt(10, "SLQ probe vectors")
    lanczos_steps: int = _opt(100, "Lanczos steps per SLQ probe (full reorthogonalisation)")
    flat_steps: int = _opt(40, "Lanczos steps on H^2 for the near-flat direction")
    batch_size: int = _opt(128, "expected batch size B of the arms (Poisson)")
    lr_factor: float = _opt(0.5, "eta * lambda_1 of the arms (<= 0.5: far from the edge of stability)")
    relaxation_times: float = _opt(5.0, "steps = this many relaxation times of the slowest direction that matters")
    matters: float = _opt(0.9, "the directions that matter carry this share of the stationary excess")
    min_steps: int = _opt(400, "lower clamp of the steps per arm")
    max_steps: int = _opt(1000, "upper clamp of the steps per arm")
    eval_every: int = _opt(10, "full-split evaluation interval (steps)")
    seeds: tuple[int, ...] = _opt((0, 1, 2), "arm seeds (paired across arms)")
    pretrain_seed: int = _opt(0, "seed of the networks' initialisation and SGD run")
    displacement_loss: float = _opt(0.02, "initial excess of the top and random displacements")
    recovery_steps: int = _opt(100, "steps after a displacement")
    recovery_threshold: float = _opt(0.1, "recovered when the excess is this fraction of its initial value")
    recovery_arms: tuple[str, ...] = _opt(("noise", "dpsgd"), "arms displaced (one unclipped, one clipped)")
    checks: tuple[str, ...] = _opt(("linearised", "teacher"), "controlled checks to run (linearised, teacher)")
    lin_n_train: int = _opt(500, "linearised network: training examples (mnist1d)")
    lin_width: int = _opt(16, "linearised network: width of the one-hidden-layer MLP at initialisation")
    teacher_dims: tuple[int, ...] = _opt((40, 400, 4000), "teacher: ambient input dimensions D")
    teacher_rank: int = _opt(4, "teacher: relevant directions K")
    teacher_width: int = _opt(16, "teacher: MLP width (one hidden layer)")
    teacher_n_train: int = _opt(500, "teacher: training examples")
    bulk_noise: str = _opt(
        "curvature", "model: bulk energy spread (curvature | uniform)", choices=("curvature", "uniform")
    )
    closure: str = _opt("linear", "model: clip-law closure (linear | mean-field)", choices=("linear", "mean-field"))
    curvatures: bool = _opt(
        True, "measure per-example curvatures on the top-k: model drift mean_i J_i H_i (else J H; both reported)"
    )
    bulk_sketch: int = _opt(
        64, "rows s of a Gaussian sketch of the gradients' bulk parts (bulk clipping bias; 0: none)"
    )
    tolerance: float = _opt(0.25, "agreement: relative tolerance of a row")
    k_se: float = _opt(2.0, "agreement: rows within k standard errors")
    device: str = _opt("cpu", "cpu | cuda", choices=("cpu", "cuda"))
    threads: int = _opt(1, "torch CPU threads (1 is fastest on a small shared machine)")
    workers: int = execution_field("workers")
    scheduler: str | None = execution_field("scheduler")
    cache: str | None = _opt(None, "cache of minima and measurements (default: <parent of out>/.basin-cache)")
    out: str = _opt("results/nn/basin", "result folder (replaced atomically)")
    quiet: bool = _opt(False, "no progress on stderr")

    def __post_init__(self) -> None:
        from simulations.nn.data import DATASETS

        fanout.Execution(workers=self.workers, scheduler=self.scheduler)  # refused here, before any run

        if self.dataset.partition(":")[0] not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        ints = {
            "depth": 0,
            "center_width": 1,
            "pretrain_epochs": 1,
            "polish_iter": 0,
            "top_k": 1,
            "probes": 1,
            "lanczos_steps": 1,
            "flat_steps": 0,
            "batch_size": 1,
            "min_steps": 3,
            "max_steps": 3,
            "eval_every": 1,
            "pretrain_seed": 0,
            "recovery_steps": 1,
            "lin_n_train": 2,
            "lin_width": 1,
            "teacher_rank": 1,
            "teacher_width": 1,
            "teacher_n_train": 2,
            "threads": 0,
            "bulk_sketch": 0,
        }
        for name, minimum in ints.items():
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=minimum))
        if self.n_train is not None:
            object.__setattr__(self, "n_train", check_int("n_train", self.n_train, minimum=2))
        if self.top_steps is not None:
            object.__setattr__(self, "top_steps", check_int("top_steps", self.top_steps, minimum=self.top_k))
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps must be >= min_steps ({self.min_steps}), got {self.max_steps}")
        widths = tuple(sorted({check_int("widths entry", w, minimum=1) for w in self.widths}))
        if not widths:
            raise ValueError(f"widths must be a non-empty list of integers >= 1, got {self.widths}")
        object.__setattr__(self, "widths", widths)
        if self.center_width not in widths:
            raise ValueError(f"center_width must be one of widths {widths}, got {self.center_width}")
        sigmas = tuple(sorted({check_nonnegative("sigmas entry", s) for s in self.sigmas}))
        factors = tuple(sorted({check_positive("clip_factors entry", c) for c in self.clip_factors}))
        object.__setattr__(self, "sigmas", sigmas)
        object.__setattr__(self, "clip_factors", factors)
        if self.center_sigma not in sigmas:
            raise ValueError(f"center_sigma must be one of sigmas {sigmas}, got {self.center_sigma}")
        if self.center_clip not in factors:
            raise ValueError(f"center_clip must be one of clip_factors {factors}, got {self.center_clip}")
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        for name, allowed in (("mask_sources", ("wstar", "init")), ("recovery_arms", ("sgd", *ROW_ARMS))):
            values = tuple(getattr(self, name))
            bad = [v for v in values if v not in allowed]
            if bad or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct values of {', '.join(allowed)}, got {values}")
        checks = tuple(self.checks)
        if any(c not in ("linearised", "teacher", "none") for c in checks):
            raise ValueError(f"checks must be a subset of linearised, teacher (or none), got {checks}")
        object.__setattr__(self, "checks", tuple(c for c in checks if c != "none"))
        dims = tuple(sorted({check_int("teacher_dims entry", d, minimum=1) for d in self.teacher_dims}))
        if "teacher" in self.checks and (len(dims) < 2 or dims[0] < self.teacher_rank):
            raise ValueError(
                f"teacher_dims must hold >= 2 dimensions >= teacher_rank ({self.teacher_rank}), got {dims}"
            )
        object.__setattr__(self, "teacher_dims", dims)
        seeds = tuple(int(s) for s in self.seeds)
        if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be >= 2 distinct integers >= 0 (an SE needs two), got {self.seeds}")
        object.__setattr__(self, "seeds", seeds)
        for name in ("weight_decay",):
            check_nonnegative(name, getattr(self, name))
        for name in (
            "pretrain_lr",
            "converged_ratio",
            "relaxation_times",
            "displacement_loss",
            "tolerance",
            "k_se",
        ):
            check_positive(name, getattr(self, name))
        for name in ("lr_factor", "matters", "recovery_threshold"):
            v = check_positive(name, getattr(self, name))
            if v >= (2.0 if name == "lr_factor" else 1.0):
                raise ValueError(f"{name} must be < {2.0 if name == 'lr_factor' else 1.0}, got {v}")
        if not 0 <= self.pretrain_momentum < 1:
            raise ValueError(f"pretrain_momentum must be in [0, 1), got {self.pretrain_momentum}")

    def cache_dir(self) -> Path:
        """Where minima and measurements are cached (``cache`` or ``<parent of out>/.basin-cache``)."""
        return Path(self.cache) if self.cache else Path(self.out).resolve().parent / ".basin-cache"


# ---------------------------------------------------------------------------------------------
# the grid


@dataclass(frozen=True)
class Network:
    """One network of the grid: its family and the :class:`~simulations.nn.minimum.MinimumSpec` fields."""

    family: str
    dataset: str
    width: int
    depth: int
    n_train: int | None = None
    n_test: int | None = None
    sparsity: float = 0.0
    mask: str = "dense"

    @property
    def label(self) -> str:
        base = {"mlp": f"mlp{self.width}", "linearised": f"lin{self.width}", "teacher": self.dataset}[self.family]
        return base if self.mask == "dense" else f"{base}-{self.mask}{self.sparsity:g}"


@dataclass(frozen=True)
class Point:
    """One (network, σ, C factor) of the grid; ``recovery``: displacements are measured here; ``modes``:
    the arms run and reported at this point."""

    network: Network
    noise_multiplier: float
    clip_factor: float
    recovery: bool = False
    modes: tuple[str, ...] = ROW_ARMS


def grid(config: BasinConfig) -> list[Point]:
    """The points of ``config`` (module docstring: star or full, then the controlled checks)."""
    sc, cc = config.center_sigma, config.center_clip
    dense = [Network("mlp", config.dataset, w, config.depth, config.n_train) for w in config.widths]
    sparse = [
        Network("mlp", config.dataset, config.center_width, config.depth, config.n_train, None, config.sparsity, m)
        for m in config.mask_sources
    ]
    points: list[Point] = []
    if config.grid == "star":
        center = next(n for n in dense if n.width == config.center_width)
        points.append(Point(center, sc, cc, recovery=True))
        points += [Point(center, s, cc) for s in config.sigmas if s != sc]
        points += [Point(center, sc, c) for c in config.clip_factors if c != cc]
        points += [Point(n, sc, cc, recovery=True) for n in dense if n is not center]
        points += [Point(n, sc, cc) for n in sparse]
    else:
        for n in dense + sparse:
            for s in config.sigmas:
                for c in config.clip_factors:
                    points.append(Point(n, s, c, recovery=(s == sc and c == cc and n.mask == "dense")))
    if "linearised" in config.checks:
        lin = Network("linearised", "mnist1d", config.lin_width, 1, config.lin_n_train, config.lin_n_train // 2)
        points.append(Point(lin, sc, cc, recovery=True))
        # the σ sweep of the linearised network is its noise-only check (star: no clipped arms there)
        lin_modes = ROW_ARMS if config.grid == "full" else ("noise",)
        points += [Point(lin, s, cc, modes=lin_modes) for s in config.sigmas if s != sc]
        if config.grid == "full":
            points += [Point(lin, sc, c) for c in config.clip_factors if c != cc]
    if "teacher" in config.checks:
        for d in config.teacher_dims:
            net = Network(
                "teacher", f"teacher:k={config.teacher_rank},d={d}", config.teacher_width, 1, config.teacher_n_train
            )
            points.append(Point(net, sc, cc))
    return points


def minimum_spec(config: BasinConfig, net: Network) -> Any:
    """The :class:`~simulations.nn.minimum.MinimumSpec` of an MLP or teacher network of ``config``."""
    from simulations.nn.minimum import MinimumSpec

    return MinimumSpec(
        dataset=net.dataset,
        n_train=net.n_train,
        n_test=net.n_test,
        width=net.width,
        depth=net.depth,
        sparsity=net.sparsity,
        mask=net.mask,
        epochs=config.pretrain_epochs,
        lr=config.pretrain_lr,
        momentum=config.pretrain_momentum,
        batch_size=config.batch_size,
        seed=config.pretrain_seed,
        weight_decay=config.weight_decay,
        polish_iter=config.polish_iter,
        converged_ratio=config.converged_ratio,
        device=config.device,
    )


# ---------------------------------------------------------------------------------------------
# the model (dptheory.spectral) on a measurement


def spectral_basin(meas: Any, *, bulk_noise: str, per_example: bool = True) -> Any:
    """``dptheory.spectral.SpectralBasin`` of a :class:`~simulations.nn.measure.BasinMeasurement`.

    The SLQ nodes of all probes are the bulk nodes, each standing for (d − k)/P · τ directions.
    ``per_example`` (and measured): the top-k drift uses the per-example curvatures (mean_i J_i H_i);
    otherwise the mean Hessian (J H).
    """
    from dptheory.spectral import GradientStatistics, SpectralBasin

    nodes, counts = meas.density.directions()
    curv = per_example and getattr(meas, "top_curvatures", None) is not None
    grads = GradientStatistics(
        norms=meas.norms,
        top_projections=meas.projections,
        top_curvatures=meas.top_curvatures if curv else None,
        top_radial_curvatures=meas.top_radial_curvatures if curv else None,
        bulk_sketch=getattr(meas, "bulk_sketch", None),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # negative curvature: recorded via negative_weight
        return SpectralBasin(
            dim=int(meas.dim),
            top_eigenvalues=meas.top_eigenvalues,
            bulk_eigenvalues=nodes,
            bulk_weights=counts,
            gradients=grads,
            n_train=meas.n_train,
            bulk_noise=bulk_noise,
        )


def exact_basin(eigenvalues: np.ndarray, projections: np.ndarray, norms: np.ndarray, *, n_train: int) -> Any:
    """A ``SpectralBasin`` with every eigenpair known exactly (no bulk): the linearised network's."""
    from dptheory.spectral import GradientStatistics, SpectralBasin

    lam = np.where(np.abs(eigenvalues) < 1e-12 * float(np.max(eigenvalues)), 0.0, eigenvalues)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return SpectralBasin(
            dim=int(lam.size),
            top_eigenvalues=lam,
            bulk_eigenvalues=np.zeros(0),
            bulk_weights=np.zeros(0),
            gradients=GradientStatistics(norms=norms, top_projections=projections),
            n_train=n_train,
        )


def arm_optimizer(mode: str, *, lr: float, batch_size: int, clip_norm: float, noise_multiplier: float) -> Optimizer:
    """The arm's step record: C and C_ref = ``clip_norm`` (noise-only has the DP-SGD noise std σC)."""
    arm = Mode(mode)
    return Optimizer(
        lr=lr,
        batch_size=batch_size,
        clip_norm=clip_norm,
        noise_multiplier=noise_multiplier if arm.noised else 0.0,
        mode=arm,
        ref_clip_norm=clip_norm,
    )


def relaxation(basin: Any, optimizer: Optimizer, *, matters: float, closure: str) -> dict[str, float]:
    """The slowest direction that matters (module docstring) of one arm: its drift and relaxation time.

    Directions sorted by drift a (fastest first); the ones needed to reach ``matters`` of the model's
    stationary excess ½ Σ w λ (E e(∞)² + Var e(∞)) matter; τ = 1/(η a_min) steps. A direction without
    a stationary state (a = 0 with force or noise, λ > 0) makes τ infinite.
    """
    from dptheory.spectral import spectral_directions

    dirs = spectral_directions(basin=basin, optimizer=optimizer, closure=closure)
    used = dirs.loss_weight > 0
    share = dirs.loss_weight[used] * (dirs.stationary_mean[used] ** 2 + dirs.stationary_var[used])
    if not np.all(np.isfinite(share)):
        return {"drift": 0.0, "steps": math.inf, "curvature": math.nan}
    drift, lam = dirs.drift[used], dirs.curvatures[used]
    total = float(share.sum())
    if total <= 0:
        return {"drift": math.nan, "steps": 0.0, "curvature": math.nan}
    order = np.argsort(drift)[::-1]
    cum = np.cumsum(share[order]) / total
    j = order[min(int(np.searchsorted(cum, matters)), order.size - 1)]
    a = float(drift[j])
    return {"drift": a, "steps": 1.0 / (optimizer.lr * a) if a > 0 else math.inf, "curvature": float(lam[j])}


def predict_window(basin: Any, optimizer: Optimizer, *, start: int, stop: int, closure: str) -> dict[str, float]:
    """The model's window average of E L(t) − L(w*) for one arm: excess, bias, noise, clip law."""
    from dptheory.spectral import spectral_window_excess

    w = spectral_window_excess(basin=basin, optimizer=optimizer, start=start, stop=stop, closure=closure)
    return {
        "excess": w.excess,
        "bias": w.bias,
        "noise": w.noise,
        "clip_fraction": w.directions.clip_fraction,
        "mean_clip_factor": w.directions.mean_clip_factor,
    }


# ---------------------------------------------------------------------------------------------
# running the arms of one network


def arm_cell(*, threads: int, **kwargs: Any) -> Any:
    """One (arm, seed) run (:func:`arm_cells`) as a fan-out cell: ``run_arm(**kwargs)`` with the
    config's torch thread count (the serial loop's), so a worker gives the serial run's bits.
    Returns (trace, wall seconds of the run)."""
    from simulations.net_common import torch_threads
    from simulations.nn.warmstart import run_arm

    _check_budget(f"basin arm seed {kwargs.get('seed')}")  # the serial run's per-run budget check (none on a worker)
    t0 = time.perf_counter()
    with torch_threads(threads):
        trace = run_arm(**kwargs)
    return trace, time.perf_counter() - t0


def _check_budget(label: str) -> None:
    """Let an active run observer (e.g. the GPU script's time budget) stop the work before a run."""
    from simulations.net_common import check_observers

    check_observers(label)


def _arm_key(mode: str, clip: float, sigma: float) -> tuple[str, float, float]:
    m = Mode(mode)
    return (mode, clip if (m.clipped or m.noised) else 0.0, sigma if m.noised else 0.0)


def _needed_arms(points: list[Point], clips: dict[float, float], config: BasinConfig) -> dict[tuple, bool]:
    """arm key → whether it carries displacements (one run per key and seed, shared by the points)."""
    arms: dict[tuple, bool] = {_arm_key("sgd", 0.0, 0.0): False}
    for p in points:
        c = clips[p.clip_factor]
        for mode in p.modes:
            key = _arm_key(mode, c, p.noise_multiplier)
            arms[key] = arms.get(key, False) or (p.recovery and mode in config.recovery_arms)
        if p.recovery and "sgd" in config.recovery_arms:
            arms[_arm_key("sgd", 0.0, 0.0)] = True
    return arms


def _displacements(meas: Any, config: BasinConfig) -> tuple[list[Any], dict[str, dict[str, float]]]:
    """The three displacements (top, random, flat) and their sizes and curvatures."""
    import torch

    from simulations.nn.warmstart import Displacement

    lam1 = float(meas.top_eigenvalues[0])
    rand_curv = max(float(meas.random_curvature), 1e-12)
    size_top = math.sqrt(2 * config.displacement_loss / lam1)
    size_rand = math.sqrt(2 * config.displacement_loss / rand_curv)
    vecs = {
        "top": (meas.top_vectors[:, 0], size_top, lam1),
        "random": (meas.random_direction, size_rand, float(meas.random_curvature)),
        "flat": (meas.flat_direction, size_rand, float(meas.flat_curvature)),
    }
    out = [Displacement(name, torch.as_tensor(v, dtype=torch.float64), s) for name, (v, s, _) in vecs.items()]
    return out, {name: {"size": s, "curvature": c} for name, (_, s, c) in vecs.items()}


def arm_lr(meas: Any, config: BasinConfig) -> tuple[float, str]:
    """η = ``lr_factor`` / max(λ₁, tr H / B): the small step, also below SGD's mini-batch stability edge.

    With per-example Hessians of large trace (the teacher at large D: ‖x_i‖² ∝ D) a Poisson batch's
    Hessian has eigenvalues ≈ tr H / B ≫ λ₁, and SGD at η = 0.5/λ₁ diverges (measured at D = 400 and
    4000); η tr H / B ≤ ``lr_factor`` keeps it stable. ηλ₁ ≤ ``lr_factor`` either way. Returns (η, which
    bound set it: ``"lambda_1"`` or ``"trace/B"``).
    """
    trace, _ = meas.trace()
    lam1, per_batch = float(meas.top_eigenvalues[0]), trace / config.batch_size
    return config.lr_factor / max(lam1, per_batch), ("lambda_1" if lam1 >= per_batch else "trace/B")


def plan_network(points: list[Point], *, meas: Any, basin: Any, config: BasinConfig) -> dict[str, Any]:
    """What the arms of one network are: η, the C's, the arms the points need (key → displaced), their
    optimizers and relaxation times, the steps T and the displacements."""
    lr, lr_bound = arm_lr(meas, config)
    median = float(np.median(meas.norms))
    clips = {p.clip_factor: p.clip_factor * median for p in points}
    arms = _needed_arms(points, clips, config)
    opts = {
        key: arm_optimizer(
            key[0], lr=lr, batch_size=config.batch_size, clip_norm=key[1] or 1.0, noise_multiplier=key[2]
        )
        for key in arms
    }
    relax = {key: relaxation(basin, opt, matters=config.matters, closure=config.closure) for key, opt in opts.items()}
    need = max((r["steps"] for r in relax.values()), default=0.0)
    steps = int(
        min(
            max(math.ceil(config.relaxation_times * need) if math.isfinite(need) else math.inf, config.min_steps),
            config.max_steps,
        )
    )
    displacements, disp_info = _displacements(meas, config)
    return {
        "arms": arms,
        "opts": opts,
        "steps": steps,
        "displacements": displacements,
        "result": {
            "lr": lr,
            "lr_bound": lr_bound,
            "median_norm": median,
            "clips": clips,
            "relaxation": relax,
            "displacements": disp_info,
        },
    }


def arm_cells(problem: Any, plan: dict[str, Any], *, config: BasinConfig, label: str) -> list[tuple[tuple, Any]]:
    """(arm key, cell) for every (arm, seed) run of one network's ``plan``: ``run_arm`` on ``problem``."""
    steps, cells = plan["steps"], []
    config_digest = store.digest(store.canonical(config))
    for key, displaced in plan["arms"].items():
        for seed in config.seeds:
            kwargs = {
                "problem": problem,
                "optimizer": plan["opts"][key],
                "steps": steps,
                "seed": seed,
                "eval_every": config.eval_every,
                "displacements": plan["displacements"] if displaced else (),
                "recovery_steps": config.recovery_steps if displaced else 0,
                "threads": config.threads,
            }
            # the network and its data are fixed by the config and the network's label
            token = f"{config_digest}|{label}|{key}|{seed}|{steps}"
            cells.append((key, fanout.Cell(arm_cell, kwargs, label=f"{label} {key[0]} seed {seed}", token=token)))
    return cells


# ---------------------------------------------------------------------------------------------
# measured excess


def _window(trace: Any, start: int, stop: int) -> np.ndarray:
    e = trace.eval_steps
    return (e >= start) & (e < stop)


def measured_excess(arm: list[Any], sgd: list[Any], *, start: int, stop: int, batch_steps: float) -> dict[str, Any]:
    """Paired (arm − SGD) window averages over seeds, with batch-means SEs (module docstring)."""
    sel = _window(arm[0], start, stop)
    train = np.stack([a.train_loss[sel] - s.train_loss[sel] for a, s in zip(arm, sgd)])
    test = np.stack([a.test_loss[sel] - s.test_loss[sel] for a, s in zip(arm, sgd)])
    batch = np.stack([a.batch_loss[start:stop] - s.batch_loss[start:stop] for a, s in zip(arm, sgd)])
    window = stop - start
    n_batches = max(1, int(window // batch_steps)) if math.isfinite(batch_steps) and batch_steps > 0 else 1
    n_batches = min(n_batches, int(sel.sum()))

    def est(values: np.ndarray, b: int) -> dict[str, float]:
        e: Estimate = batch_means(values, n_batches=min(b, values.shape[1]))
        return e.as_dict()

    own = np.stack([a.train_loss[sel] - a.train_loss[0] for a in arm])  # L_arm(t) − L(w*): e(0) = 0 exactly
    sgd_own = np.stack([s.train_loss[sel] - s.train_loss[0] for s in sgd])
    clip = np.stack([a.clip_fraction[start:stop] for a in arm])
    phi = np.stack([a.mean_clip_factor[start:stop] for a in arm])
    return {
        "train": est(train, n_batches),
        "test": est(test, n_batches),
        "batch": est(batch, n_batches),
        "own": est(own, n_batches),
        "sgd_own": est(sgd_own, n_batches),
        "clip_fraction": est(clip, n_batches),
        "mean_clip_factor": est(phi, n_batches),
        "n_batches": n_batches,
    }


def _recovery_rows(
    net: Network, point: Point, mode: str, runs: list[Any], info: dict, basin: Any, opt: Optimizer, config: BasinConfig
) -> list[dict[str, Any]]:
    from dptheory.spectral import spectral_recovery_time

    rows = []
    nodes = np.asarray(basin.bulk_eigenvalues)
    for name in DIRECTIONS:
        curves = np.stack([r.recovery[name].excess for r in runs])  # (seeds, R + 1), t = 0 … R
        initial = curves[:, 0]
        rec = simulated_recovery(
            loss=curves[:, 1:], stationary=0.0, initial=float(initial.mean()), threshold=config.recovery_threshold
        )
        size = info[name]["size"]
        reason = ""
        pred = math.nan
        try:
            if name == "top":
                pred = spectral_recovery_time(
                    basin=basin,
                    optimizer=opt,
                    displacement=size,
                    direction="top",
                    threshold=config.recovery_threshold,
                    closure=config.closure,
                )
            elif name == "flat" and nodes.size:
                node = int(np.argmin(np.abs(nodes - info[name]["curvature"])))
                pred = spectral_recovery_time(
                    basin=basin,
                    optimizer=opt,
                    displacement=size,
                    direction="bulk",
                    bulk_node=node,
                    threshold=config.recovery_threshold,
                    closure=config.closure,
                )
            else:
                reason = "a random direction spreads over the whole bulk; the model takes one direction"
        except ValueError as exc:
            reason = str(exc)
        retained = np.asarray([r.recovery[name].retained for r in runs])
        rows.append(
            {
                "family": net.family,
                "network": net.label,
                "noise_multiplier": point.noise_multiplier,
                "clip_factor": point.clip_factor,
                "arm": mode,
                "direction": name,
                "displacement": size,
                "curvature": info[name]["curvature"],
                "initial_excess": {
                    "mean": float(initial.mean()),
                    "se": float(initial.std(ddof=1) / math.sqrt(initial.size)),
                },
                "predicted_recovery": pred,
                "measured_recovery": {"mean": rec["time"], "se": rec["time_se"]},
                "retained": {
                    "mean": float(retained.mean()),
                    "se": float(retained.std(ddof=1) / math.sqrt(retained.size)),
                },
                "prediction_note": reason,
            }
        )
    return rows


def analyse_network(
    net: Network,
    points: list[Point],
    run: dict[str, Any],
    *,
    basin: Any,
    exact: Any | None,
    config: BasinConfig,
    meas: Any,
    mean_basin: Any | None = None,
) -> tuple[list[dict], list[dict]]:
    """The rows (one per point and arm) and recovery rows of one network.

    ``basin`` gives ``predicted_excess``; ``mean_basin`` (the same measurement with the mean-Hessian
    drift, when ``basin`` uses per-example curvatures) gives ``predicted_mean_hessian`` beside it.
    """
    steps, lr = run["steps"], run["lr"]
    start = steps - steps // 3
    sgd_key = _arm_key("sgd", 0.0, 0.0)
    sgd = run["traces"][sgd_key]
    sgd_opt = arm_optimizer("sgd", lr=lr, batch_size=config.batch_size, clip_norm=1.0, noise_multiplier=0.0)
    base = predict_window(basin, sgd_opt, start=start, stop=steps, closure=config.closure)
    base_exact = predict_window(exact, sgd_opt, start=start, stop=steps, closure=config.closure) if exact else None
    base_mean = (
        predict_window(mean_basin, sgd_opt, start=start, stop=steps, closure=config.closure) if mean_basin else None
    )
    rows, recs = [], []
    seen: set[tuple] = set()
    for p in points:
        c = run["clips"][p.clip_factor]
        for mode in p.modes:
            key = _arm_key(mode, c, p.noise_multiplier)
            if key in seen:  # clip-only does not depend on σ: one row per arm run, never a copy
                continue
            seen.add(key)
            opt = arm_optimizer(
                mode, lr=lr, batch_size=config.batch_size, clip_norm=c, noise_multiplier=p.noise_multiplier
            )
            pred = predict_window(basin, opt, start=start, stop=steps, closure=config.closure)
            rel = run["relaxation"][key]
            meas_ex = measured_excess(
                run["traces"][key], sgd, start=start, stop=steps, batch_steps=2.5 * max(rel["steps"], 1.0)
            )
            row = {
                "family": net.family,
                "network": net.label,
                "dataset": net.dataset,
                "width": net.width,
                "depth": net.depth,
                "sparsity": net.sparsity,
                "mask": net.mask,
                "dim": int(meas.dim),
                "noise_multiplier": p.noise_multiplier,
                "clip_factor": p.clip_factor,
                "clip_norm": c,
                "ref_clip_norm": c,
                "lr": lr,
                "lr_times_lambda1": lr * float(meas.top_eigenvalues[0]),
                "batch_size": config.batch_size,
                "steps": steps,
                "window": [start, steps],
                "arm": mode,
                "predicted_excess": pred["excess"] - base["excess"],
                "predicted_bias": pred["bias"] - base["bias"],
                "predicted_noise": pred["noise"] - base["noise"],
                "predicted_arm": pred,
                "predicted_sgd": base,
                "measured_excess": meas_ex["train"],
                "measured_test_excess": meas_ex["test"],
                "measured_batch_excess": meas_ex["batch"],
                "measured_arm_excess": meas_ex["own"],
                "measured_sgd_excess": meas_ex["sgd_own"],
                "measured_clip_fraction": meas_ex["clip_fraction"],
                "measured_mean_clip_factor": meas_ex["mean_clip_factor"],
                "se_batches_per_seed": meas_ex["n_batches"],
                "relaxation": {
                    **rel,
                    "relaxation_times_run": steps / rel["steps"] if rel["steps"] > 0 else math.inf,
                    "relaxed": bool(steps >= config.relaxation_times * rel["steps"]),
                },
                "privacy": PRIVACY,
            }
            row["drift"] = "per-example" if mean_basin is not None else "mean-hessian"
            if mean_basin is not None:
                assert base_mean is not None  # computed whenever mean_basin is given
                mh = predict_window(mean_basin, opt, start=start, stop=steps, closure=config.closure)
                row["predicted_mean_hessian"] = mh["excess"] - base_mean["excess"]
                row["predicted_mean_hessian_bias"] = mh["bias"] - base_mean["bias"]
                row["predicted_mean_hessian_noise"] = mh["noise"] - base_mean["noise"]
            if exact is not None:
                assert base_exact is not None  # computed whenever exact is given
                ex = predict_window(exact, opt, start=start, stop=steps, closure=config.closure)
                row["predicted_exact"] = ex["excess"] - base_exact["excess"]
                row["predicted_exact_bias"] = ex["bias"] - base_exact["bias"]
                row["predicted_exact_noise"] = ex["noise"] - base_exact["noise"]
            rows.append(row)
            if p.recovery and mode in config.recovery_arms:
                recs += _recovery_rows(net, p, mode, run["traces"][key], run["displacements"], basin, opt, config)
        if p.recovery and "sgd" in config.recovery_arms:
            recs += _recovery_rows(net, p, "sgd", sgd, run["displacements"], basin, sgd_opt, config)
    return rows, recs


# ---------------------------------------------------------------------------------------------
# the summary


def _values(rows: list[dict], key: str) -> np.ndarray:
    return np.asarray([float(r[key]) if not isinstance(r[key], dict) else float(r[key]["mean"]) for r in rows])


def summarise(rows: list[dict], recovery: list[dict], config: BasinConfig) -> dict[str, Any]:
    """Agreement per family (module docstring), null predictors, the linearised noise-only check, D slopes."""
    out: dict[str, Any] = {
        "aggregation": "one row per (network, sigma, C, arm); measured = mean over seeds with a batch-means SE; "
        "fits and shares over rows (seed means), never over seeds",
        "tolerance": config.tolerance,
        "k_se": config.k_se,
    }
    for family in FAMILIES:
        fam = [r for r in rows if r["family"] == family]
        if not fam:
            continue
        pred, meas = _values(fam, "predicted_excess"), _values(fam, "measured_excess")
        se = np.asarray([r["measured_excess"]["se"] for r in fam], dtype=float)
        dims = np.asarray([r["dim"] for r in fam], dtype=float)
        block: dict[str, Any] = {
            "model": agreement(pred, meas, se, tolerance=config.tolerance, k=config.k_se),
            "null_d": agreement(scaled_null(dims, meas), meas, se, tolerance=config.tolerance, k=config.k_se),
            "null_sqrt_d": agreement(
                scaled_null(np.sqrt(dims), meas), meas, se, tolerance=config.tolerance, k=config.k_se
            ),
            "per_arm": {},
            "bias_share_predicted": float(np.nansum(_values(fam, "predicted_bias")) / np.nansum(pred))
            if np.nansum(pred)
            else math.nan,
        }
        block["model_arm_vs_minimum"] = agreement(
            [r["predicted_arm"]["excess"] for r in fam],
            _values(fam, "measured_arm_excess"),
            [r["measured_arm_excess"]["se"] for r in fam],
            tolerance=config.tolerance,
            k=config.k_se,
        )
        sgd_rows = list({r["network"]: r for r in fam}.values())
        block["sgd_vs_minimum"] = agreement(
            [r["predicted_sgd"]["excess"] for r in sgd_rows],
            _values(sgd_rows, "measured_sgd_excess"),
            [r["measured_sgd_excess"]["se"] for r in sgd_rows],
            tolerance=config.tolerance,
            k=config.k_se,
        )
        m = block["model"]
        block["model_beats_nulls"] = bool(
            all(
                m["rms_log10_error"] < block[k]["rms_log10_error"]
                and m["within_tolerance"] >= block[k]["within_tolerance"]
                for k in ("null_d", "null_sqrt_d")
            )
        )
        for arm in ROW_ARMS:
            sub = [r for r in fam if r["arm"] == arm]
            if sub:
                block["per_arm"][arm] = agreement(
                    _values(sub, "predicted_excess"),
                    _values(sub, "measured_excess"),
                    [r["measured_excess"]["se"] for r in sub],
                    tolerance=config.tolerance,
                    k=config.k_se,
                )
        if all("predicted_mean_hessian" in r for r in fam):
            block["model_mean_hessian"] = agreement(
                _values(fam, "predicted_mean_hessian"), meas, se, tolerance=config.tolerance, k=config.k_se
            )
            block["per_arm_mean_hessian"] = {
                arm: agreement(
                    _values(sub, "predicted_mean_hessian"),
                    _values(sub, "measured_excess"),
                    [r["measured_excess"]["se"] for r in sub],
                    tolerance=config.tolerance,
                    k=config.k_se,
                )
                for arm in ROW_ARMS
                if (sub := [r for r in fam if r["arm"] == arm])
            }
        if family == "linearised":
            block["exact"] = agreement(
                _values(fam, "predicted_exact"), meas, se, tolerance=config.tolerance, k=config.k_se
            )
            checks = []
            for r in fam:
                if r["arm"] == "noise":
                    for which in ("predicted_excess", "predicted_exact"):
                        z = (r["measured_excess"]["mean"] - r[which]) / r["measured_excess"]["se"]
                        checks.append(
                            {
                                "noise_multiplier": r["noise_multiplier"],
                                "clip_factor": r["clip_factor"],
                                "prediction": which,
                                "predicted": r[which],
                                "measured": r["measured_excess"],
                                "z": z,
                                "within_k_se": bool(abs(z) <= config.k_se),
                            }
                        )
            block["noise_only"] = checks
        if family == "teacher":
            block["dimension_slopes"] = {}
            for arm in ROW_ARMS:
                sub = [r for r in fam if r["arm"] == arm]
                d_in = [float(r["dataset"].split("d=")[-1]) for r in sub]
                block["dimension_slopes"][arm] = {
                    "input_dims": d_in,
                    "measured_vs_D": loglog_fit(d_in, _values(sub, "measured_excess")),
                    "predicted_vs_D": loglog_fit(d_in, _values(sub, "predicted_excess")),
                    "mean_clip_factor_vs_D": loglog_fit(d_in, _values(sub, "measured_mean_clip_factor")),
                }
        out[family] = block
    if recovery:
        rp = np.asarray([r["predicted_recovery"] for r in recovery], dtype=float)
        rm = np.asarray([r["measured_recovery"]["mean"] for r in recovery], dtype=float)
        rs = np.asarray([r["measured_recovery"]["se"] for r in recovery], dtype=float)
        ok = np.isfinite(rp)
        out["recovery"] = {
            "rows": len(recovery),
            "predicted_rows": int(ok.sum()),
            "model": agreement(rp[ok], rm[ok], rs[ok], tolerance=config.tolerance, k=config.k_se) if ok.any() else None,
        }
    return out


# ---------------------------------------------------------------------------------------------
# orchestration


def _network_record(net: Network, found: Any, meas: Any, run: dict[str, Any], basin: Any) -> dict[str, Any]:
    rho = meas.density
    trace, trace_se = meas.trace()
    return {
        "network": net.label,
        **asdict(net),
        "dim": int(meas.dim),
        "parameters": int(meas.parameters),
        "minimum": found.info if found is not None else {},
        "train_objective": float(meas.train_loss),
        "top_eigenvalues": meas.top_eigenvalues,
        "top_residual_max": float(np.max(meas.top_residuals)),
        "trace": {"mean": trace, "se": trace_se},
        "bulk_count_above_0.1": rho.count_above(0.1),
        "bulk_count_above_0.01": rho.count_above(0.01),
        "negative_weight": float(basin.negative_weight),
        "median_norm": float(np.median(meas.norms)),
        "mean_gradient_norm": float(meas.mean_gradient_norm),
        "top_energy_share": float(np.sum(meas.projections**2) / max(np.sum(meas.norms**2), 1e-300)),
        "lr": run["lr"],
        "lr_bound": run["lr_bound"],
        "steps": run["steps"],
        "arm_seconds": run["seconds"],
        "relaxation": {f"{k[0]}:{k[1]:.4g}:{k[2]:g}": v for k, v in run["relaxation"].items()},
    }


def measure_network(net: Network, config: BasinConfig) -> tuple[Any, Any, Any, Any]:
    """(problem, measurement, exact basin or None, minimum or None) of one network of the grid: the
    linearised network (:func:`_linearised`), else the cached minimum and measurement of an MLP or
    teacher network (``simulations.nn.minimum.measured_minimum``)."""
    from simulations.nn.minimum import measured_minimum
    from simulations.nn.warmstart import Problem

    if net.family == "linearised":
        return _linearised(net, config)
    found, meas = measured_minimum(
        minimum_spec(config, net),
        cache=config.cache_dir(),
        top_k=config.top_k,
        top_steps=config.top_steps,
        probes=config.probes,
        lanczos_steps=config.lanczos_steps,
        flat_steps=config.flat_steps,
        curvatures=config.curvatures,
        sketch=config.bulk_sketch,
    )
    problem = Problem(
        model=found.model,
        x_train=found.x_train,
        y_train=found.y_train,
        x_test=found.x_test,
        y_test=found.y_test,
        masks=found.masks,
        weight_decay=config.weight_decay,
    )
    return problem, meas, None, found


def network_cell(*, config: BasinConfig, net: Network) -> dict[str, Any]:
    """:func:`measure_network` as a fan-out cell, with the config's torch thread count (the serial
    run's bits); ``seconds`` is its wall time (progress only, not a result)."""
    from simulations.net_common import torch_threads

    _check_budget(f"basin network {net.label}")  # the serial run's per-network budget check (none on a worker)
    t0 = time.perf_counter()
    with torch_threads(config.threads):
        problem, meas, exact, found = measure_network(net, config)
    return {"problem": problem, "meas": meas, "exact": exact, "found": found, "seconds": time.perf_counter() - t0}


def _network_token(config: BasinConfig, net: Network) -> str:
    return f"{store.digest(store.canonical(config))}|{net.label}|{net.family}|{net.dataset}|measure"


def _linearised(net: Network, config: BasinConfig) -> tuple[Any, Any, Any, Any]:
    """(problem, measurement, exact basin, None) of the linearised network (module docstring)."""
    import torch

    from simulations.nn.data import load_dataset
    from simulations.nn.measure import exact_spectrum, half_squared_error, linearise, measure_basin
    from simulations.nn.models import build_model
    from simulations.nn.warmstart import Problem

    ds = load_dataset(net.dataset, seed=0, n_train=net.n_train, n_test=net.n_test)
    model = build_model(
        "mlp",
        input_shape=ds.input_shape,
        num_classes=ds.num_classes,
        width=net.width,
        depth=1,
        seed=config.pretrain_seed,
    )
    lin = linearise(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test, num_classes=ds.num_classes)
    device = torch.device(config.device)
    lin_model = lin.model().to(device)
    x, y = lin.jac_train.to(device), lin.target_train.to(device)
    problem = Problem(
        model=lin_model,
        x_train=x,
        y_train=y,
        x_test=lin.jac_test.to(device),
        y_test=lin.target_test.to(device),
        loss_fn=half_squared_error,
        method="vmap",
    )
    meas = measure_basin(
        lin_model,
        x,
        y,
        loss_fn=half_squared_error,
        top_k=config.top_k,
        top_steps=config.top_steps,
        probes=config.probes,
        lanczos_steps=config.lanczos_steps,
        flat_steps=config.flat_steps,
        seed=config.pretrain_seed,
        curvatures=config.curvatures,
        sketch=config.bulk_sketch,
    )
    vals, vecs = exact_spectrum(lin.hessian)
    resid = lin.jac_train @ lin.minimum - lin.target_train
    grads = torch.einsum("ncd,nc->nd", lin.jac_train, resid)
    assert net.n_train is not None  # the linearised network is built with n_train = lin_n_train
    exact = exact_basin(vals, (grads @ torch.as_tensor(vecs)).numpy(), grads.norm(dim=1).numpy(), n_train=net.n_train)
    return problem, meas, exact, None


def run(config: BasinConfig) -> dict[str, Any]:
    """Find, measure and run every network of the grid, write the result folder, print the table."""
    check_output_dir(config.out)
    import dptheory.spectral  # noqa: F401 - fail before any training if the model is missing
    from simulations.net_common import torch_threads

    points = grid(config)
    networks: dict[Network, list[Point]] = {}
    for p in points:
        networks.setdefault(p.network, []).append(p)
    rows: list[dict] = []
    recovery: list[dict] = []
    records = []
    arrays: dict[str, np.ndarray] = {}
    start_all, cpu_all = time.perf_counter(), time.process_time()
    execution = fanout.execution_of(config)  # --workers / --scheduler, or the study's open session
    opened = execution.kind != "serial" and fanout.active_execution() != execution
    with fanout.session(execution) if opened else contextlib.nullcontext(), torch_threads(config.threads):
        # 1. every network found and measured (one cell each; minima and measurements cached on disk);
        # a w*-masked network reads its dense network's SGD run, so it waits for a second wave
        _check_budget(f"basin networks: {len(networks)}")
        found_by: dict[Network, dict[str, Any]] = {}
        for wave in ([n for n in networks if n.mask != "wstar"], [n for n in networks if n.mask == "wstar"]):
            cells = [
                fanout.Cell(
                    network_cell, {"config": config, "net": net}, label=net.label, token=_network_token(config, net)
                )
                for net in wave
            ]
            found_by.update(zip(wave, fanout.run_cells(cells, label="basin networks", quiet=config.quiet)))
        measured = [found_by[net] for net in networks]
        # 2. every (arm, seed) run of every network: one list of cells, so no worker waits for a network
        plans, where, arm_list = [], [], []
        for i, ((net, pts), m) in enumerate(zip(networks.items(), measured)):
            meas = m["meas"]
            basin = spectral_basin(meas, bulk_noise=config.bulk_noise, per_example=config.curvatures)
            if not config.quiet:
                sys.stderr.write(
                    f"basin [{i + 1}/{len(networks)}] {net.label}: d={meas.dim} lambda_1={meas.top_eigenvalues[0]:.4g} "
                    f"measured in {m['seconds']:.0f}s\n"
                )
            plan = plan_network(pts, meas=meas, basin=basin, config=config)
            plans.append((basin, plan))
            for key, cell in arm_cells(m["problem"], plan, config=config, label=net.label):
                where.append((i, key))
                arm_list.append(cell)
        _check_budget(f"basin arms: {len(arm_list)} runs")
        t0 = time.perf_counter()
        traces: list[dict[tuple, list[Any]]] = [{} for _ in networks]
        seconds = [0.0 for _ in networks]
        for (i, key), (trace, sec) in zip(where, fanout.run_cells(arm_list, label="basin arms", quiet=config.quiet)):
            traces[i].setdefault(key, []).append(trace)
            seconds[i] += sec
        arms_wall = time.perf_counter() - t0
        # 3. theory against measurement, per network
        for i, ((net, pts), m) in enumerate(zip(networks.items(), measured)):
            meas, (basin, plan) = m["meas"], plans[i]
            mean_basin = (
                spectral_basin(meas, bulk_noise=config.bulk_noise, per_example=False)
                if config.curvatures and meas.top_curvatures is not None
                else None
            )
            result = {**plan["result"], "traces": traces[i], "steps": plan["steps"], "seconds": seconds[i]}
            r, rec = analyse_network(
                net, pts, result, basin=basin, exact=m["exact"], config=config, meas=meas, mean_basin=mean_basin
            )
            rows += r
            recovery += rec
            records.append(_network_record(net, m["found"], meas, result, basin))
            sgd = result["traces"][_arm_key("sgd", 0.0, 0.0)]
            arrays[f"{net.label}__eval_steps"] = sgd[0].eval_steps
            for key, arm_traces in result["traces"].items():
                name = f"{net.label}__{key[0]}_C{key[1]:.4g}_s{key[2]:g}"
                arrays[name + "__train_excess"] = np.mean(
                    [a.train_loss - s.train_loss for a, s in zip(arm_traces, sgd)], 0
                )
    summary = summarise(rows, recovery, config)
    metrics = {
        "what": "basin",
        "description": "DP-SGD arms warm-started at a converged minimum vs dptheory.spectral (paired, arm - SGD)",
        "privacy": PRIVACY,
        "rows": rows,
        "recovery": recovery,
        "networks": records,
        "summary": summary,
        "seconds": time.perf_counter() - start_all,
        "arms_seconds": arms_wall,
        "cpu_seconds": time.process_time() - cpu_all,
    }
    with result_folder(config.out) as folder:
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    print(report(rows, recovery, summary, config))
    return metrics


def report(rows: list[dict], recovery: list[dict], summary: dict, config: BasinConfig) -> str:
    """The printed table and summary lines."""
    body = []
    for r in rows:
        m = r["measured_excess"]
        z = (m["mean"] - r["predicted_excess"]) / m["se"] if m["se"] and m["se"] > 0 else math.nan
        body.append(
            [
                r["network"],
                r["arm"],
                f"{r['noise_multiplier']:g}",
                f"{r['clip_factor']:g}",
                str(r["steps"]),
                f"{r['relaxation']['relaxation_times_run']:.2g}",
                fmt(r["predicted_bias"], 3),
                fmt(r["predicted_noise"], 3),
                fmt(r["predicted_excess"], 3),
                f"{fmt(m['mean'], 3)} ± {fmt(config.k_se * m['se'], 2)}",
                f"{z:+.1f}",
                fmt(r["measured_test_excess"]["mean"], 3),
            ]
        )
    header = [
        "network",
        "arm",
        "sigma",
        "C/med",
        "T",
        "T/tau",
        "pred bias",
        "pred noise",
        "pred",
        f"meas ±{config.k_se:g}SE",
        "z",
        "test meas",
    ]
    lines = [table(body, header=header)]
    for family in FAMILIES:
        if family not in summary:
            continue
        s = summary[family]
        m, fit = s["model"], s["model"]["loglog"]
        lines.append(
            f"{family}: {m['within_tolerance']:.0%} of {m['rows']} rows within {config.tolerance:.0%}, "
            f"{m['within_k_se']:.0%} within {config.k_se:g} SE; log-log slope {fit['slope']:.2f} "
            f"[{fit['slope_ci'][0]:.2f}, {fit['slope_ci'][1]:.2f}], intercept {fit['intercept']:+.2f} "
            f"({fit['n']} rows, {fit['excluded']} non-positive excluded); RMS log10 error {m['rms_log10_error']:.2f} "
            f"vs null d {s['null_d']['rms_log10_error']:.2f}, null sqrt(d) {s['null_sqrt_d']['rms_log10_error']:.2f}"
        )
        if "model_mean_hessian" in s:
            mh = s["model_mean_hessian"]
            lines.append(
                f"  mean-Hessian drift (no per-example curvatures): {mh['within_tolerance']:.0%} within "
                f"{config.tolerance:.0%}, slope {mh['loglog']['slope']:.2f}, RMS log10 error {mh['rms_log10_error']:.2f}"
            )
        for c in s.get("noise_only", []):
            lines.append(
                f"  noise-only sigma={c['noise_multiplier']:g} C={c['clip_factor']:g}x ({c['prediction']}): "
                f"predicted {c['predicted']:.4g}, measured {c['measured']['mean']:.4g} ± {c['measured']['se']:.2g}, "
                f"z = {c['z']:+.2f}"
            )
        for arm, sl in s.get("dimension_slopes", {}).items():
            lines.append(
                f"  {arm}: excess vs D slope measured {sl['measured_vs_D']['slope']:.2f}, predicted "
                f"{sl['predicted_vs_D']['slope']:.2f}; mean clip factor vs D {sl['mean_clip_factor_vs_D']['slope']:.2f}"
            )
    for r in recovery:
        lines.append(
            f"recovery {r['network']} {r['arm']} {r['direction']}: predicted {fmt(r['predicted_recovery'], 3)}, "
            f"measured {fmt(r['measured_recovery']['mean'], 3)} ± {fmt(r['measured_recovery']['se'], 2)} steps, "
            f"retained {r['retained']['mean']:.2f}"
        )
    lines.append(f"results: {config.out} ({PRIVACY})")
    # an undefined number (a fit over < 3 positive rows, a z without an SE, no prediction) is said so
    return re.sub(r"[+-]?\bnan\b", "n/a", "\n".join(lines))


def draw_figure(config: BasinConfig) -> None:
    """Draw ``net_basin.png`` into the result folder from its files (``paper.nn_figures``)."""
    from paper import nn_figures

    nn_figures.draw(config.out)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulations.nn basin [flags]``: bad input → one line on stderr, exit status 2."""
    from simulations.common.cli import run_main

    return run_main(
        BasinConfig,
        run,
        argv,
        prog="python -m simulations.nn basin",
        description=__doc__.split("\n\n")[0],
        figure=draw_figure,
    )


if __name__ == "__main__":
    raise SystemExit(main())
