"""Magnitude pruning as dimension reduction under DP-SGD: keep-fraction sweep at fixed ε (claim 4).

A rank-r quadratic basin in d weight coordinates, H = U diag(λ) Uᵀ with U either **aligned** (the
first r coordinate axes) or **rotated** (Haar-random orthonormal), from
``dptheory.pruning.curvature_basis``, and an optimum w* from ``dptheory.pruning.optimum_profile``
(``--profile`` sparse | power-law | gaussian, ``--placement`` of its large entries: on the curved
axes of the aligned basis, off them, or random). With placement "curved" in the aligned basis the
basin is aligned with the large weights (the case claim 4 needs); in the rotated basis it is not.

Magnitude masks keep the k largest |coordinates| of a reference point, k on a log grid from r to d.
Mask sources, with the privacy labels of ``dptheory.pruning`` printed in the table and saved:

* ``oracle`` — magnitudes of w* itself: **NOT PRIVATE** (uses the training optimum; diagnosis only);
* ``init`` — magnitudes of the Gaussian initialisation w₀ ~ N(0, ``--init-std``² I): data-independent,
  free (in distribution a uniformly random set of k coordinates).

Pruned weights are held at 0 (so e_j = −w*_j there), receive no update and no noise, and do not count
in the per-sample norms: the per-sample spread lives on the k kept coordinates, norms ≈ s√k instead
of s√d. Every run starts at the same w₀ (pruned coordinates zeroed) and takes T = ``--steps``
DP-SGD steps on the full d-dimensional kernel (``engine="full"``) with Poisson sampling at rate
q = B/n (n = ``--dataset-size``), as the accountant assumes.

Fixed ε: σ, q and T are the same for every keep fraction, so every point has the same privacy cost,
ε = ``dptheory.privacy.epsilon`` of the Poisson-subsampled Gaussian mechanism (σ, q, T) at δ =
``--delta`` (RDP accountant) — the oracle mask's data use is *not* included (it is not private).

Theory (``dptheory.pruning.pruned_excess_loss``, Poisson sampling): the pruning bias (best loss over
the kept coordinates with the pruned ones at 0, a Schur complement) plus the DP stationary term of
the restricted problem (mean-field clipped model on k coordinates). Simulation:
the training loss of the full error, time-averaged over the last ``--window-fraction`` of the run
(± k SE from batch means over replicas).

Example (a real run at the defaults; "NO" marks points whose restricted problem relaxes too slowly
to be stationary within T — compare those only after raising --steps)::

    $ python -m simulations.prune --quiet
      basis    mask     k  keep frac  clip frac sim  bias pred  DP term pred  loss pred       loss sim ±2SE      z   relax τ  stationary
    -------  ------  ----  ---------  -------------  ---------  ------------  ---------  ------------------  -----  --------  ----------
    aligned  oracle    10       0.01              0          0      0.007713   0.007713  0.007806 ± 2.8e-04   +0.7      1.44         yes
    aligned  oracle    32      0.032              0          0      0.007713   0.007713  0.007689 ± 2.9e-04   -0.2      1.44         yes
    aligned  oracle   100        0.1          0.524          0      0.007819   0.007819  0.007899 ± 3.0e-04   +0.5      1.51         yes
    aligned  oracle   316      0.316              1          0       0.01076    0.01076   0.01088 ± 4.7e-04   +0.5      3.04         yes
    aligned  oracle  1000          1              1          0       0.01716    0.01716    0.01804 ± 0.0012   +1.4      5.82         yes
    aligned    init    10       0.01              0        4.5     7.713e-04      4.501     4.501 ± 9.9e-05   -0.0      1.44         yes
    aligned    init    32      0.032              0          4      0.001543      4.002     4.002 ± 1.0e-04   -0.3      1.44         yes
    aligned    init   100        0.1          0.488          4      0.001562      4.002     4.002 ± 1.2e-04   +0.4      1.51         yes
    aligned    init   316      0.316              1        3.5      0.003223      3.503     3.503 ± 2.4e-04   -0.8      3.03         yes
    aligned    init  1000          1              1          0       0.01716    0.01716   0.01701 ± 9.5e-04   -0.3      5.82         yes
    rotated  oracle    10       0.01              0          0       0.00568    0.00568  0.009699 ± 7.7e-04  +10.4  4.34e+04          NO
    rotated  oracle    32      0.032              0          0      0.005718   0.005718  0.006081 ± 5.8e-04   +1.2       151          NO
    rotated  oracle   100        0.1          0.481          0       0.00595    0.00595  0.005371 ± 4.3e-04   -2.7      37.1          NO
    rotated  oracle   316      0.316              1          0      0.009585   0.009585  0.009966 ± 5.8e-04   +1.3      14.8         yes
    rotated  oracle  1000          1              1          0       0.01716    0.01716   0.01755 ± 9.5e-04   +0.8      5.82         yes
    rotated    init    10       0.01              0  9.705e-30      0.005677   0.005677   0.03076 ± 8.0e-04  +62.5  1.09e+06          NO
    rotated    init    32      0.032              0  9.288e-32      0.005711   0.005711  0.007016 ± 6.3e-04   +4.2       269          NO
    rotated    init   100        0.1          0.485  4.840e-32      0.005949   0.005949  0.005937 ± 4.4e-04   -0.1      42.7          NO
    rotated    init   316      0.316              1  1.590e-31      0.009598   0.009598  0.009827 ± 7.2e-04   +0.6      14.2         yes
    rotated    init  1000          1              1          0       0.01716    0.01716   0.01684 ± 9.6e-04   -0.7      5.82         yes
    fixed ε = 0.742 at δ = 1e-05 (RDP; σ = 1, q = B/n = 0.0016, T = 300) for every point; oracle masks: oracle: NOT private (uses w*, data-dependent); an upper bound for any private mask; init masks: data-independent (initialisation): free
    results: results/prune
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dptheory.records import Basin, Mode, Optimizer
from dptheory.validate import check_choice, check_int, check_nonnegative, check_positive, check_probability, check_scale
from simulations.common.checks import validate_basin_config
from simulations.common.cli import run_main
from simulations.common.fanout import Cell, SweepRun, execution_field
from simulations.common.resources import array_bytes, check_basin_sweep, check_memory
from simulations.common.results import check_output_dir, write_results
from simulations.common.stats import batch_means
from simulations.common.store import resolve_out
from simulations.common.sweep import log_grid, run_seed
from simulations.common.tables import fmt, fmt_ci, table

PROFILES = ("sparse", "power-law", "gaussian")
PLACEMENTS = ("curved", "flat", "random")
BASES = ("aligned", "rotated")
MASK_SOURCES = ("oracle", "init")


@dataclass(frozen=True)
class PruneConfig:
    """One keep-fraction sweep (every flag of ``python -m simulations.prune``)."""

    d: int = field(default=1000, metadata={"help": "d: number of weights"})
    rank: int = field(default=10, metadata={"help": "r: number of curved directions (all curvature λ)"})
    curvature: float = field(default=1.0, metadata={"help": "λ: curvature of every curved direction"})
    sample_std: float = field(default=0.1, metadata={"help": "s: per-sample gradient spread (on kept weights)"})
    clip_norm: float = field(default=1.0, metadata={"help": "C: per-sample clip norm"})
    noise_multiplier: float = field(default=1.0, metadata={"help": "σ: noise std on the sum is σ·C"})
    batch_size: int = field(default=16, metadata={"help": "B: expected batch size (Poisson sampling)"})
    lr: float = field(default=0.5, metadata={"help": "η: learning rate"})
    dataset_size: int = field(default=10_000, metadata={"help": "n: examples, for q = B/n in the accountant"})
    delta: float = field(default=1e-5, metadata={"help": "δ of the reported ε"})
    profile: str = field(default="sparse", metadata={"help": "profile of w*", "choices": PROFILES})
    placement: str = field(default="curved", metadata={"help": "where w*'s large entries sit", "choices": PLACEMENTS})
    optimum_scale: float = field(default=1.0, metadata={"help": "scale of w*"})
    support: int = field(default=10, metadata={"help": "sparse profile: number of nonzero w*_j"})
    power: float = field(default=1.0, metadata={"help": "power-law profile: exponent"})
    init_std: float = field(default=0.01, metadata={"help": "std of the Gaussian initialisation w₀ (init masks)"})
    bases: tuple[str, ...] = field(default=BASES, metadata={"help": "bases of the curved directions: aligned, rotated"})
    masks: tuple[str, ...] = field(default=MASK_SOURCES, metadata={"help": "mask sources: oracle (NOT private), init"})
    points: int = field(default=5, metadata={"help": "number of keep counts k, log-spaced from r to d"})
    steps: int = field(default=300, metadata={"help": "T: DP-SGD steps (fixed for every k: fixed ε)"})
    window_fraction: float = field(default=0.5, metadata={"help": "average the loss over this final fraction of T"})
    replicas: int = field(default=8, metadata={"help": "independent Monte Carlo replicas per point"})
    k_se: float = field(default=2.0, metadata={"help": "k: confidence intervals printed as ± k·SE"})
    seed: int = field(default=0, metadata={"help": "random seed (basis, w*, masks, dynamics)"})
    engine: str = field(
        default="full",
        metadata={"help": "engine (a mask needs the d-dimensional kernel)", "choices": ("full", "numpy")},
    )
    workers: int = execution_field("workers")
    scheduler: str | None = execution_field("scheduler")
    threads: int = execution_field("threads")
    out: str = field(
        default="results/prune/{config}",
        metadata={"help": "result folder, replaced atomically ({config}: the run key, simulations.common.store)"},
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})

    def __post_init__(self) -> None:
        check_output_dir(self.out)
        validate_basin_config(self)
        for name in ("points", "dataset_size", "support"):
            check_int(name, getattr(self, name), minimum=1)
        check_positive("k_se", self.k_se, maximum=100.0)
        check_nonnegative("power", self.power, maximum=100.0)
        for name in ("optimum_scale", "init_std"):
            check_scale(name, getattr(self, name))
        check_probability("window_fraction", self.window_fraction, open_left=True)
        check_probability("delta", self.delta, open_left=True)
        if self.delta >= 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        check_choice("profile", self.profile, PROFILES)
        check_choice("placement", self.placement, PLACEMENTS)
        check_choice("engine", self.engine, ("full", "numpy"))
        if self.support > self.d:
            raise ValueError(f"support must be <= d, got support={self.support} > d={self.d}")
        if self.batch_size > self.dataset_size:
            raise ValueError(f"batch_size must be <= dataset_size, got {self.batch_size} > {self.dataset_size}")
        for name, allowed in (("bases", BASES), ("masks", MASK_SOURCES)):
            values = getattr(self, name)
            if isinstance(values, str) or not values:
                raise ValueError(f"{name} must be a non-empty list among {', '.join(allowed)}, got {values!r}")
            for v in values:
                if v not in allowed:
                    raise ValueError(f"{name} must be among {', '.join(allowed)}, got {v!r}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat an entry, got {','.join(values)}")
        points = min(self.points, self.d - self.rank + 1)
        check_memory(
            "the keep-count grid and the curved basis",
            array_bytes(self.points) * 4 + array_bytes(self.d, self.rank) * 4 + array_bytes(self.d) * 8,
            detail=f"points {self.points:g}, d {self.d:g} × rank {self.rank:g}",
        )
        check_basin_sweep(
            runs=len(self.bases) * len(self.masks) * points,
            replicas=self.replicas,
            steps=self.steps,
            batch_size=self.batch_size,
            rank=self.rank,
            dim=self.d,
            engine=self.engine,
        )
        self.basin(self.d)
        self.optimizer()

    def basin(self, dim: int) -> Basin:
        return Basin(dim=dim, curvatures=(self.curvature,) * self.rank, sample_std=self.sample_std)

    def optimizer(self) -> Optimizer:
        return Optimizer(
            lr=self.lr,
            batch_size=self.batch_size,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            mode=Mode.DPSGD,
        )

    def keeps(self) -> list[int]:
        return log_grid(low=self.rank, high=self.d, points=self.points)

    def sample_rate(self) -> float:
        return self.batch_size / self.dataset_size


def make_mask(source: str, *, optimum: np.ndarray, init: np.ndarray, keep: int):
    """``dptheory.pruning.Mask`` (keep, privacy label) of ``keep`` coordinates from ``source``."""
    from dptheory.pruning import init_mask, oracle_mask

    if source == "oracle":
        return oracle_mask(optimum=optimum, keep=keep)
    return init_mask(init=init, keep=keep)


def problem(config: PruneConfig) -> tuple[np.ndarray, np.ndarray]:
    """(w*, w₀): the optimum of the chosen profile and the Gaussian initialisation (both seeded)."""
    from dptheory.pruning import optimum_profile

    w_star = optimum_profile(
        dim=config.d,
        rank=config.rank,
        profile=config.profile,
        scale=config.optimum_scale,
        nonzeros=config.support,
        exponent=config.power,
        placement=config.placement,
        seed=run_seed(config.seed, 1),
    )
    w0 = config.init_std * np.random.default_rng(run_seed(config.seed, 5)).standard_normal(config.d)
    return w_star, w0


def measure(
    *, config: PruneConfig, basis_name: str, source: str, keep: int, w_star: np.ndarray, w0: np.ndarray, seed: int
) -> dict[str, Any]:
    """One point of the sweep: prediction (bias + DP term) beside the simulated time-averaged loss."""
    from dptheory.clipped_dynamics import effective_linear_model
    from dptheory.pruning import curvature_basis, pruned_excess_loss, restricted_curvatures
    from dptheory.quadratic import relaxation_time
    from simulations.basin.engine import RunSpec, simulate

    d = config.d
    basin, opt = config.basin(d), config.optimizer()
    u = curvature_basis(dim=d, rank=config.rank, basis=basis_name, seed=run_seed(config.seed, 2))
    basis = None if basis_name == "aligned" else u  # the kernel's axis-aligned fast path is the same U
    start = config.steps - max(1, round(config.window_fraction * config.steps))
    mask = make_mask(source, optimum=w_star, init=w0, keep=keep)
    pred = pruned_excess_loss(
        curvatures=basin.curvatures,
        basis=u,
        optimum=w_star,
        mask=mask.keep,
        sample_std=config.sample_std,
        optimizer=opt,
        sampling="poisson",
    )
    # Relaxation time of the restricted problem (slowest kept curved direction): a point is compared
    # with the *stationary* prediction only if the burn-in (steps before the window) covers 6 of them.
    ev = restricted_curvatures(curvatures=basin.curvatures, basis=u, mask=mask.keep)
    tau = 1.0
    if ev.size:
        sub = Basin(dim=keep, curvatures=tuple(ev), sample_std=config.sample_std)
        lin = effective_linear_model(basin=sub, optimizer=opt, sampling="poisson")
        tau = relaxation_time(lr=opt.lr, drift=min(lin.drift))
    spec = RunSpec(steps=config.steps, replicas=config.replicas, record_every=1, sampling="poisson", seed=seed)
    trace = simulate(
        basin=basin,
        optimizer=opt,
        run=spec,
        engine=config.engine,
        basis=basis,
        mask=mask.keep,
        optimum=w_star,
        init_weights=np.where(mask.keep, w0, 0.0),
    )
    window = trace.train_loss[:, start:]
    n_batches = max(1, min(10, window.shape[1] // 10))
    return {
        "basis": basis_name,
        "mask": source,
        "privacy": mask.privacy,
        "keep": keep,
        "keep_fraction": keep / d,
        "pred_bias": float(pred.bias),
        "pred_dp": float(pred.variance),
        "pred_loss": float(pred.total),
        "sim_loss": batch_means(window, n_batches=n_batches),
        "sim_clip_fraction": batch_means(_nonempty_clip_fraction(trace.clip_fraction[:, start:]), n_batches=n_batches),
        "relaxation_time": tau,
        "stationary": bool(start >= 6 * tau),
    }


def cells(config: PruneConfig, *, w_star: np.ndarray, w0: np.ndarray) -> list[Cell]:
    """The sweep's cells, one per (basis, mask source, keep count); cell (b, m, i) gets seed
    ``run_seed(seed, 4, b, m, i)``; w* and w₀ (:func:`problem`) are arguments of every cell."""
    return [
        Cell(
            measure,
            {
                "config": config,
                "basis_name": basis_name,
                "source": source,
                "keep": k,
                "w_star": w_star,
                "w0": w0,
                "seed": run_seed(config.seed, 4, b, m, i),
            },
            label=f"{basis_name} {source} k={k}",
        )
        for b, basis_name in enumerate(config.bases)
        for m, source in enumerate(config.masks)
        for i, k in enumerate(config.keeps())
    ]


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claim 4 (heavy pruning can improve DP-SGD at fixed ε), per basis and mask source: the best
    simulated loss over the stationary keep counts below d divided by the dense loss (k = d), theory
    beside simulation; held if the ratio's 95 % interval (± 1.96 SE, delta method) lies below 1."""
    out = []
    for basis in dict.fromkeys(r["basis"] for r in rows):
        for source in dict.fromkeys(r["mask"] for r in rows):
            sel = [r for r in rows if r["basis"] == basis and r["mask"] == source]
            dense = max(sel, key=lambda r: r["keep"])
            pruned = [r for r in sel if r["keep"] < dense["keep"] and r["stationary"]]
            if not pruned or not dense["stationary"]:
                continue
            best = min(pruned, key=lambda r: r["sim_loss"].mean)
            ratio = best["sim_loss"].mean / dense["sim_loss"].mean
            rel = math.hypot(best["sim_loss"].se / best["sim_loss"].mean, dense["sim_loss"].se / dense["sim_loss"].mean)
            out.append(
                {
                    "claim": "4",
                    "statement": f"{source} mask{' (not private)' if source == 'oracle' else ''}, {basis} basis: pruning to "
                    f"{best['keep_fraction']:.3g} of the weights lowers DP-SGD's loss at fixed ε",
                    "test": "best pruned / dense stationary loss (simulated, delta-method SE)",
                    "estimate": ratio,
                    "ci95": [ratio * math.exp(-1.96 * rel), ratio * math.exp(1.96 * rel)],
                    "theory": best["pred_loss"] / dense["pred_loss"],
                    "held": bool(ratio * math.exp(1.96 * rel) < 1),
                    "unit": "×",
                }
            )
    return out


def _nonempty_clip_fraction(clip: np.ndarray) -> np.ndarray:
    """Clip fractions with the steps of empty Poisson batches (NaN: no sample, nothing to clip) filled by
    the replica's mean over its non-empty steps (0 if every batch was empty), so that rare empty batches
    do not turn the window average into NaN."""
    clip = np.array(clip, dtype=float)
    empty = np.isnan(clip)
    if empty.any():
        counts = (~empty).sum(axis=1, keepdims=True)
        means = np.where(counts > 0, np.where(empty, 0.0, clip).sum(axis=1, keepdims=True) / np.maximum(counts, 1), 0.0)
        clip = np.where(empty, means, clip)
    return clip


def run(config: PruneConfig) -> dict[str, Any]:
    """Sweep keep counts × bases × mask sources, write the result folder and print the table (``main`` then draws the figure)."""
    from dptheory.privacy import PoissonGaussianMechanism, epsilon

    sweep = SweepRun(config, experiment="prune", module=__name__)
    config = sweep.config
    w_star, w0 = problem(config)
    eps = epsilon(
        mechanisms=PoissonGaussianMechanism(
            noise_multiplier=config.noise_multiplier, sample_rate=config.sample_rate(), steps=config.steps
        ),
        delta=config.delta,
        accountant="rdp",
    )
    keeps = config.keeps()
    start = config.steps - max(1, round(config.window_fraction * config.steps))
    rows = sweep.map(cells(config, w_star=w_star, w0=w0))
    labels: dict[str, str] = {}
    for row in rows:
        labels[row["mask"]] = row["privacy"]
    unsettled = [r for r in rows if not r["stationary"]]
    if unsettled:
        warnings.warn(
            f"{len(unsettled)} point(s) not stationary by the averaging window (burn-in < 6 relaxation "
            "times of the restricted problem): their simulated loss is above the stationary prediction; "
            "raise --steps to compare them",
            RuntimeWarning,
            stacklevel=2,
        )
    metrics = {
        "experiment": "prune",
        "k_se": config.k_se,
        "averaging_start_step": start,
        "epsilon": eps,
        "delta": config.delta,
        "accountant": "rdp",
        "sample_rate": config.sample_rate(),
        "steps": config.steps,
        "noise_multiplier": config.noise_multiplier,
        "bases": list(config.bases),
        "masks": list(config.masks),
        "privacy": labels,
        "verdicts": verdicts(rows),
        "rows": [{k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in r.items()} for r in rows],
    }
    with sweep.folder() as folder:
        write_results(
            folder,
            config=config,
            metrics=metrics,
            arrays={"optimum": w_star, "init_weights": w0, "keeps": np.asarray(keeps)},
        )
    k_se = config.k_se
    header = [
        "basis",
        "mask",
        "k",
        "keep frac",
        "clip frac sim",
        "bias pred",
        "DP term pred",
        "loss pred",
        f"loss sim ±{k_se:g}SE",
        "z",
        "relax τ",
        "stationary",
    ]
    body = [
        [
            r["basis"],
            r["mask"],
            str(r["keep"]),
            fmt(r["keep_fraction"], 3),
            fmt(r["sim_clip_fraction"].mean, 3),
            fmt(r["pred_bias"]),
            fmt(r["pred_dp"]),
            fmt(r["pred_loss"]),
            fmt_ci(r["sim_loss"], k=k_se),
            f"{r['sim_loss'].z(r['pred_loss']):+.1f}",
            fmt(r["relaxation_time"], 3),
            "yes" if r["stationary"] else "NO",
        ]
        for r in rows
    ]
    print(table(body, header=header))
    print(
        f"fixed ε = {eps:.3f} at δ = {config.delta:g} (RDP; σ = {config.noise_multiplier:g}, q = B/n = "
        f"{config.sample_rate():g}, T = {config.steps}) for every point; "
        + "; ".join(f"{s} masks: {labels[s]}" for s in config.masks)
    )
    print(f"results: {config.out}")
    return metrics


def draw_figure(config: Any) -> None:
    """Draw ``prune.png`` into the result folder from its files (``paper.figures.prune``)."""
    from paper import figures

    figures.prune(resolve_out(config, experiment="prune", module=__name__), formats=("png",))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m simulations.prune [flags]``."""
    return run_main(PruneConfig, run, argv, prog="python -m simulations.prune", description=__doc__, figure=draw_figure)


if __name__ == "__main__":
    raise SystemExit(main())
