"""Clipping turns dimension into error: DP-SGD on a rank-r basin as the ambient dimension d grows.

The headline experiment (claims 2 and 3 of arXiv 2311.06839v1). A streaming rank-r quadratic basin
(``dptheory.records.Basin``) is embedded in d ambient dimensions, d on a log grid from r up to
``--d``; for each d the four ablation modes (sgd, clip, noise, dpsgd; ``records.Mode``) are run to
stationarity with the exact reduced engine (cost independent of d) and compared with the
mean-field theory of ``dptheory.clipped_dynamics``:

* the stationary excess loss, predicted by ``stationary_excess_loss`` and simulated as a time
  average after a burn-in of ``--burn-in`` predicted relaxation times 1/(−ln|1 − η a_min|)
  (a_min = γ λ_min the slowest effective drift), over a window of ``--window`` relaxation times,
  ± k SE from batch means (one batch = 5 relaxation times; ``simulations.common.stats``);
* the clip fraction (``stationary_clip_fraction``);
* the recovery time after a displacement of norm ``--displacement`` injected at the end of the
  averaging window (``recovery_time``; the simulation reads the first step at which the
  replica-mean excess over the stationary level falls below the same threshold);
* the flat-direction error ‖e_flat‖² and the held-out excess loss at the end of the window
  (``flat_error_sq``, ``heldout_excess_loss``).

With the defaults the per-sample gradient norm s√d grows from 1 (d = 100, C = 2: no clipping) to
100 (d = 10⁶: every sample clipped), so DP-SGD's shrinkage γ ≈ C/(s√d) falls and its stationary
loss ≈ r η C s √d σ²/(4B²) grows like √d, while SGD and noise-only stay flat in d.

Each distinct (d, mode) is solved once per run (:class:`Predictions`): the table and the figure's
theory lines (``--theory-points`` dimensions, containing the swept ones) share the stationary solves.

Example (a real run at the defaults; the table goes to stdout, the folder gets config.json,
metrics.json, metrics.npz, env.json and basin_dim.png; ≈ 7.2 s of CPU time and 6.5–7.2 s wall,
median of 3 runs on the shared 2-core machine at a load average of ≈ 2.2, of which ≈ 3 s imports
(scipy, numba, matplotlib), ≈ 1.7 s simulation (0.5 s of it numba loading its cached kernel),
≈ 1.7 s theory, ≈ 0.4 s figure — see benchmarks/bench_simulations.py)::

    $ python -m simulations.basin_dim --d 1e6 --rank 100 --quiet
          d   mode  clip frac (pred)  clip frac (sim ±2SE)  loss pred        loss sim ±2SE     z  recov pred   recov sim ±2SE  flat err² pred  flat err² sim  held-out pred  held-out sim
    -------  -----  ----------------  --------------------  ---------  -------------------  ----  ----------  ---------------  --------------  -------------  -------------  ------------
        100    sgd                 0                 0 ± 0    0.02083    0.02009 ± 6.9e-04  -2.2       0.938  0.938 ± 5.7e-04               0              0         0.0208        0.0206
        100   clip          5.22e-35                 0 ± 0    0.02083    0.02127 ± 6.3e-04  +1.4        4.38     4.38 ± 0.011               0              0         0.0208        0.0213
        100  noise                 0                 0 ± 0     0.5417       0.5354 ± 0.021  -0.6       0.938   0.939 ± 0.0025               0              0          0.542         0.539
        100  dpsgd          2.09e-10                 0 ± 0     0.5417       0.5509 ± 0.014  +1.3        4.59     4.63 ± 0.053               0              0          0.542         0.551
        464    sgd                 0                 0 ± 0    0.02083    0.02077 ± 8.3e-04  -0.2       0.938  0.937 ± 5.7e-04            1.89           1.87         0.0218        0.0211
        464   clip             0.989       0.9906 ± 0.0058    0.01835    0.01813 ± 5.4e-04  -0.8        4.56      4.56 ± 0.01            1.62           1.64         0.0192        0.0186
        464  noise                 0                 0 ± 0     0.5417       0.5323 ± 0.014  -1.3       0.938   0.939 ± 0.0021            49.2           48.7          0.566         0.542
        464  dpsgd                 1                 1 ± 0     0.5796       0.5855 ± 0.013  +0.9        4.76      4.68 ± 0.11            48.6           48.9          0.604         0.576
       2154    sgd                 0                 0 ± 0    0.02083    0.02071 ± 5.1e-04  -0.5       0.938  0.938 ± 4.7e-04            10.7           10.8         0.0262        0.0256
       2154   clip                 1                 1 ± 0   0.006507   0.006557 ± 1.6e-04  +0.6        5.31    5.31 ± 0.0077            4.88            4.9        0.00895       0.00849
       2154  noise                 0                 0 ± 0     0.5417       0.5429 ± 0.018  +0.1       0.938   0.936 ± 0.0045             278            279          0.681          0.64
       2154  dpsgd                 1                 1 ± 0     0.9119       0.8806 ± 0.026  -2.4        5.55      5.52 ± 0.17             682            675           1.25          1.17
      10000    sgd                 0                 0 ± 0    0.02083     0.0207 ± 5.7e-04  -0.5       0.938  0.938 ± 2.6e-04            51.5           51.6         0.0466        0.0453
      10000   clip                 1                 1 ± 0   0.002717   0.002741 ± 9.6e-05  +0.5        8.03    8.03 ± 0.0082              12           11.9        0.00874       0.00878
      10000  noise                 0                 0 ± 0     0.5417        0.5201 ± 0.02  -2.1       0.938   0.939 ± 0.0032        1.34e+03       1.33e+03           1.21          1.16
      10000  dpsgd                 1                 1 ± 0      1.728        1.726 ± 0.059  -0.1        8.29      8.24 ± 0.41        7.63e+03       7.61e+03           5.55          5.43
      46416    sgd                 0                 0 ± 0    0.02083    0.02088 ± 6.6e-04  +0.1       0.938  0.937 ± 5.4e-04             241            240          0.141         0.141
      46416   clip                 1                 1 ± 0   0.001205   0.001222 ± 3.3e-05  +1.0        15.6    15.6 ± 0.0084              27           26.9         0.0147        0.0146
      46416  noise                 0                 0 ± 0     0.5417       0.5417 ± 0.016  +0.0       0.938   0.937 ± 0.0031        6.26e+03       6.29e+03           3.67          3.67
      46416  dpsgd                 1                 1 ± 0      3.523         3.449 ± 0.11  -1.4        15.8      15.2 ± 0.68        7.92e+04       7.93e+04           43.1          43.2
     215443    sgd                 0                 0 ± 0    0.02083     0.0207 ± 8.2e-04  -0.3       0.938  0.937 ± 3.6e-04        1.12e+03       1.12e+03          0.581          0.58
     215443   clip                 1                 1 ± 0  5.481e-04  5.490e-04 ± 1.4e-05  +0.1        33.1     33.1 ± 0.018            59.5           59.5         0.0303        0.0303
     215443  noise                 0                 0 ± 0     0.5417       0.5328 ± 0.013  -1.4       0.938   0.939 ± 0.0027        2.91e+04       2.91e+04           15.1          15.1
     215443  dpsgd                 1                 1 ± 0      7.406         7.277 ± 0.25  -1.0        33.4       33.2 ± 2.8        8.03e+05       8.02e+05            409           408
    1000000    sgd                 0                 0 ± 0    0.02083    0.02015 ± 6.8e-04  -2.0       0.938  0.938 ± 6.1e-04         5.2e+03        5.2e+03           2.62          2.62
    1000000   clip                 1                 1 ± 0  2.520e-04  2.514e-04 ± 5.8e-06  -0.2        71.5     71.5 ± 0.044             129            129         0.0647        0.0647
    1000000  noise                 0                 0 ± 0     0.5417       0.5366 ± 0.015  -0.7       0.938   0.939 ± 0.0029        1.35e+05       1.35e+05           68.1          68.1
    1000000  dpsgd                 1                 1 ± 0      15.78         15.63 ± 0.47  -0.6        71.8       66.8 ± 7.7        8.08e+06       8.08e+06       4.06e+03      4.06e+03
    stationary loss within ±2 SE of the prediction: 24 of 28 rows (an exact theory would leave ≈ 1.8 outside by chance: Student t, SE from 16 batch means)
    results: results/basin_dim
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dptheory.clipped_recovery import displacement_recovery
from dptheory.quadratic import relaxation_time
from dptheory.records import Basin, Mode, Optimizer
from dptheory.switching import phase_dynamics
from dptheory.validate import check_choice, check_int, check_positive, check_scale
from simulations.basin.engine import ENGINES
from simulations.basin.streaming import SPECTRA, curvature_spectrum
from simulations.common.checks import validate_basin_config
from simulations.common.cli import run_main
from simulations.common.fanout import Cell, SweepRun, execution_field
from simulations.common.resources import array_bytes, check_basin_sweep, check_memory
from simulations.common.results import check_output_dir, write_results
from simulations.common.stats import Estimate, batch_means, replica_mean, simulated_recovery
from simulations.common.store import resolve_out
from simulations.common.sweep import log_grid, run_seed
from simulations.common.tables import fmt, fmt_ci, table

MODES = (Mode.SGD, Mode.CLIP, Mode.NOISE, Mode.DPSGD)


@dataclass(frozen=True)
class BasinDimConfig:
    """One basin-dimension sweep (every flag of ``python -m simulations.basin_dim``)."""

    d: int = field(default=1_000_000, metadata={"help": "largest ambient dimension d (grid from rank to d)"})
    rank: int = field(default=100, metadata={"help": "r: number of curved directions of the basin"})
    points: int = field(default=7, metadata={"help": "number of log-spaced dimensions from rank to d"})
    spectrum: str = field(default="flat", metadata={"help": "curvature spectrum", "choices": SPECTRA})
    curvature: float = field(default=1.0, metadata={"help": "λ_max: largest curvature"})
    power: float = field(default=1.0, metadata={"help": "power spectrum: λ_i = λ_max i^-power"})
    split: float = field(default=0.5, metadata={"help": "two-level spectrum: fraction of directions at λ_max"})
    low_curvature: float = field(default=0.1, metadata={"help": "two-level spectrum: the low curvature"})
    sample_std: float = field(default=0.1, metadata={"help": "s: per-sample gradient spread, g_i = H e + s ζ_i"})
    spread: str = field(
        default="ambient",
        metadata={
            "help": "ζ_i spans all d dimensions (ambient) or only the r curved ones (basin)",
            "choices": ("ambient", "basin"),
        },
    )
    clip_norm: float = field(default=2.0, metadata={"help": "C: per-sample clip norm"})
    noise_multiplier: float = field(default=1.0, metadata={"help": "σ: noise std on the sum is σ·C"})
    batch_size: int = field(default=16, metadata={"help": "B: batch size"})
    lr: float = field(default=0.8, metadata={"help": "η: learning rate"})
    heldout_flat_curvature: float = field(
        default=1e-3, metadata={"help": "κ: curvature of the held-out loss in the training-flat directions"}
    )
    burn_in: float = field(default=3.0, metadata={"help": "burn-in, in predicted relaxation times"})
    window: float = field(default=10.0, metadata={"help": "averaging window, in predicted relaxation times"})
    steps: int = field(default=50_000, metadata={"help": "cap on the steps of one run (burn-in + window + recovery)"})
    replicas: int = field(default=8, metadata={"help": "independent Monte Carlo replicas per (d, mode)"})
    displacement: float = field(
        default=10.0, metadata={"help": "δ: norm of the displacement injected after the window"}
    )
    recovery_threshold: float = field(
        default=0.1,
        metadata={"help": "recovered when the mean excess over stationarity falls to this fraction of ½Σλδ²"},
    )
    k_se: float = field(default=2.0, metadata={"help": "k: confidence intervals printed as ± k·SE"})
    theory_points: int = field(
        default=13, metadata={"help": "dimensions on the figure's theory grid (the swept ones are added)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed (one stream per (d, mode, replica))"})
    engine: str = field(default="auto", metadata={"help": "simulation engine", "choices": ENGINES})
    workers: int = execution_field("workers")
    scheduler: str | None = execution_field("scheduler")
    threads: int = execution_field("threads")
    out: str = field(
        default="results/basin_dim/{config}",
        metadata={"help": "result folder, replaced atomically ({config}: the run key, simulations.common.store)"},
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})

    def __post_init__(self) -> None:
        check_output_dir(self.out)
        validate_basin_config(self, spectrum=True, heldout=True)
        check_int("points", self.points, minimum=1)
        check_int("theory_points", self.theory_points, minimum=2)
        for name, high in (("burn_in", 1e6), ("window", 1e6), ("k_se", 100.0)):
            check_positive(name, getattr(self, name), maximum=high)
        if self.window < 5:
            raise ValueError(f"window must be >= 5 relaxation times (one batch), got {self.window}")
        check_positive("recovery_threshold", self.recovery_threshold)
        if not self.recovery_threshold < 1:
            raise ValueError(f"recovery_threshold must be in (0, 1), got {self.recovery_threshold}")
        check_scale("displacement", self.displacement)
        check_choice("engine", self.engine, ENGINES)
        grid = min(self.points, self.d - self.rank + 1) + min(self.theory_points, self.d - self.rank + 1)
        check_memory(
            "the dimension grids",
            array_bytes(self.points + self.theory_points) * 4 + array_bytes(grid, self.rank) * 8,
            detail=f"points {self.points:g} + theory points {self.theory_points:g}",
        )
        check_basin_sweep(
            runs=len(MODES) * min(self.points, self.d - self.rank + 1),
            replicas=self.replicas,
            steps=self.steps,
            batch_size=self.batch_size,
            rank=self.rank,
            dim=self.d,
            engine="reduced" if self.engine == "auto" else self.engine,
            theory_steps=2 * self.steps,
        )
        # Build the records now so their ValueErrors fire at parse time (before any simulation).
        self.basin(self.d)
        self.basin(self.rank)
        for mode in MODES:
            self.optimizer(mode)

    def dims(self) -> list[int]:
        """The ambient dimensions swept: ``points`` log-spaced integers from r to d."""
        return log_grid(low=self.rank, high=self.d, points=self.points)

    def basin(self, dim: int) -> Basin:
        """The basin at ambient dimension ``dim``."""
        curv = curvature_spectrum(
            rank=self.rank,
            spectrum=self.spectrum,
            max_curvature=self.curvature,
            power=self.power,
            split=self.split,
            low_curvature=self.low_curvature,
        )
        return Basin(
            dim=dim,
            curvatures=tuple(curv),
            sample_std=self.sample_std,
            spread=self.spread,
            heldout_flat_curvature=self.heldout_flat_curvature,
        )

    def optimizer(self, mode: Mode) -> Optimizer:
        """The step in ablation ``mode`` (noise-only uses C_ref = C)."""
        return Optimizer(
            lr=self.lr,
            batch_size=self.batch_size,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            mode=mode,
        )


class Predictions:
    """Per-run memo of the stationary predictions (``dptheory.clipped_dynamics``), keyed by (basin, optimizer).

    ``stationary_excess_loss`` (the default elliptic closure of the stationary law) and
    ``stationary_clip_fraction`` are pure functions of the frozen, hashable records ``Basin`` and
    ``Optimizer``, so each distinct pair is solved once per run: the table's rows and the figure's
    theory grid (which contains the swept dimensions) share them. Same numbers as calling the
    functions directly (tests/test_sim_cli.py).
    """

    def __init__(self) -> None:
        self._loss: dict[tuple[Basin, Optimizer], float] = {}
        self._clip: dict[tuple[Basin, Optimizer], float] = {}

    def loss(self, basin: Basin, optimizer: Optimizer) -> float:
        """``stationary_excess_loss(basin=basin, optimizer=optimizer)`` (the default closure)."""
        key = (basin, optimizer)
        if key not in self._loss:
            from dptheory.clipped_dynamics import stationary_excess_loss

            self._loss[key] = float(stationary_excess_loss(basin=basin, optimizer=optimizer))
        return self._loss[key]

    def clip_fraction(self, basin: Basin, optimizer: Optimizer) -> float:
        """``stationary_clip_fraction``; 0 for unclipped modes (they never clip: no call needed)."""
        if not optimizer.mode.clipped:
            return 0.0
        key = (basin, optimizer)
        if key not in self._clip:
            from dptheory.clipped_dynamics import stationary_clip_fraction

            self._clip[key] = float(stationary_clip_fraction(basin=basin, optimizer=optimizer))
        return self._clip[key]

    def remember(self, basin: Basin, optimizer: Optimizer, *, loss: float, clip_fraction: float) -> None:
        """Store predictions computed elsewhere (a sweep cell) by the same functions."""
        self._loss[(basin, optimizer)] = float(loss)
        if optimizer.mode.clipped:
            self._clip[(basin, optimizer)] = float(clip_fraction)


def measure(
    *, basin: Basin, optimizer: Optimizer, config: BasinDimConfig, seed: int, predictions: Predictions | None = None
) -> dict[str, Any]:
    """Simulate one (d, mode) to stationarity, displace, recover; return predictions and estimates.

    ``predictions``: the run's :class:`Predictions` memo (None: a fresh one, nothing shared).
    """
    from dptheory import clipped_dynamics as cd
    from simulations.basin.engine import RunSpec, simulate

    theory = Predictions() if predictions is None else predictions

    dyn = phase_dynamics(basin=basin, optimizer=optimizer)
    tau = relaxation_time(lr=optimizer.lr, drift=min(dyn.drift))
    if not math.isfinite(tau):
        raise ValueError(
            f"the predicted dynamics do not contract in float64 (lr·drift = {optimizer.lr * min(dyn.drift):g} "
            f"must lie in (1e-15, 2)); {'lower' if optimizer.lr * min(dyn.drift) >= 2 else 'raise'} lr"
        )
    burn = math.ceil(config.burn_in * tau)
    window = math.ceil(config.window * tau)
    pred_loss = theory.loss(basin, optimizer)
    pred_clip = theory.clip_fraction(basin, optimizer)
    # Validity indicator of the clipped mean-field closure (S → 1: saturated stationary state, where
    # the model underestimates the loss by up to (r+1)/r; clipped_dynamics.stationary_saturation).
    saturation = float(cd.stationary_saturation(basin=basin, optimizer=optimizer)) if optimizer.mode.clipped else 0.0
    horizon = min(max(10, math.ceil(3 * tau)), config.steps)  # the theory curve is bounded by the cap too
    rec = displacement_recovery(
        basin=basin,
        optimizer=optimizer,
        displacement=config.displacement,
        steps=horizon,
        threshold=config.recovery_threshold,
        dynamics=dyn,
    )
    while not math.isfinite(rec.time) and horizon < config.steps:
        horizon = min(config.steps, horizon * 4)
        rec = displacement_recovery(
            basin=basin,
            optimizer=optimizer,
            displacement=config.displacement,
            steps=horizon,
            threshold=config.recovery_threshold,
            dynamics=dyn,
        )
    # Follow the simulation to 1.5× the predicted recovery time (its crossing must be observable).
    horizon = max(horizon, math.ceil(1.5 * rec.time) + 5) if math.isfinite(rec.time) else horizon
    total = burn + window + horizon
    if total > config.steps:
        warnings.warn(
            f"d={basin.dim} {optimizer.mode.value}: {total} steps needed, capped at {config.steps}",
            RuntimeWarning,
            stacklevel=2,
        )
        scale = config.steps / total
        burn, window, horizon = (max(1, int(x * scale)) for x in (burn, window, horizon))
        total = burn + window + horizon
    t_disp = burn + window
    spec = RunSpec(
        steps=total,
        replicas=config.replicas,
        record_every=1,
        seed=seed,
        displacement_step=t_disp,
        displacement=config.displacement,
    )
    trace = simulate(basin=basin, optimizer=optimizer, run=spec, engine=config.engine)

    steps = np.asarray(trace.steps)
    in_window = (steps > burn) & (steps <= t_disp)
    n_batches = max(1, min(int(config.window // 5), int(in_window.sum())))
    loss = batch_means(trace.train_loss[:, in_window], n_batches=n_batches)
    clip = batch_means(trace.clip_fraction[:, in_window], n_batches=n_batches)
    at_disp = int(np.nonzero(in_window)[0][-1])
    t_end = int(steps[at_disp])
    flat = replica_mean(trace.flat_err_sq[:, at_disp])
    heldout = replica_mean(trace.heldout_loss[:, at_disp])
    pred_flat = float(np.asarray(cd.flat_error_sq(basin=basin, optimizer=optimizer, steps=t_end)).ravel()[-1])
    if basin.flat_curvature == 0.0:
        # heldout_excess_loss = (its curved term) + ½(λ_flat + κ) E‖e_flat(t)‖², and with λ_flat = 0 (as in
        # every basin of this sweep) the curved term is stationary_excess_loss: reuse both predictions
        # rather than solve the closure a second time (same floating-point operations, same number).
        pred_heldout = pred_loss + 0.5 * (basin.flat_curvature + basin.heldout_flat_curvature) * pred_flat
    else:
        pred_heldout = float(
            np.asarray(cd.heldout_excess_loss(basin=basin, optimizer=optimizer, steps=t_end)).ravel()[-1]
        )
    after = steps > t_disp
    sim = simulated_recovery(
        loss=trace.train_loss[:, after],
        stationary=loss.mean,
        initial=rec.initial,
        threshold=config.recovery_threshold,
        seed=seed,
    )
    return {
        "dim": basin.dim,
        "mode": optimizer.mode.value,
        "burn_in_steps": burn,
        "window_steps": window,
        "relaxation_time": tau,
        "n_batches": n_batches,
        "pred_loss": pred_loss,
        "sim_loss": loss,
        "saturation": saturation,
        "pred_clip_fraction": pred_clip,
        "sim_clip_fraction": clip,
        "pred_recovery_time": rec.time,
        "sim_recovery_time": sim["time"],
        "sim_recovery_time_se": sim["time_se"],
        "pred_flat_err_sq": pred_flat,
        "sim_flat_err_sq": flat,
        "pred_heldout": pred_heldout,
        "sim_heldout": heldout,
    }


def theory_dims(config: BasinDimConfig) -> list[int]:
    """The figure's theory grid: ``theory_points`` log-spaced dimensions from r to d, plus the swept ones.

    With the defaults (13 and 7 points) the sweep is every other grid point, so the union adds nothing
    and the lines pass through the dimensions of the simulated points.
    """
    grid = log_grid(low=config.rank, high=config.d, points=config.theory_points)
    return sorted(set(grid) | set(config.dims()))


def theory_curves(config: BasinDimConfig, predictions: Predictions | None = None) -> dict[str, np.ndarray]:
    """Predicted stationary loss and clip fraction on :func:`theory_dims` (for the figure).

    ``predictions``: the run's :class:`Predictions` memo, so dimensions already in the table are not
    solved again (None: a fresh one). Unclipped modes never clip (clip fraction 0, no call needed).
    """
    theory = Predictions() if predictions is None else predictions
    dims = np.array(theory_dims(config))
    out: dict[str, np.ndarray] = {"theory_dims": dims}
    for mode in MODES:
        opt = config.optimizer(mode)
        basins = [config.basin(int(d)) for d in dims]
        out[f"theory_loss_{mode.value}"] = np.array([theory.loss(b, opt) for b in basins], dtype=float)
        out[f"theory_clip_fraction_{mode.value}"] = np.array(
            [theory.clip_fraction(b, opt) for b in basins], dtype=float
        )
    return out


def _pack(rows: list[dict[str, Any]], config: BasinDimConfig) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    metrics_rows = []
    arrays: dict[str, np.ndarray] = {}
    for row in rows:
        m: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, Estimate):
                m[key] = value.as_dict()
            else:
                m[key] = value
        metrics_rows.append(m)
    k = config.k_se
    summary = {
        "experiment": "basin_dim",
        "k_se": k,
        "dims": config.dims(),
        "modes": [m.value for m in MODES],
        "rows": metrics_rows,
        "loss_within_ci": all(abs(r["sim_loss"].mean - r["pred_loss"]) <= k * r["sim_loss"].se for r in rows),
        "loss_rows_within_ci": sum(abs(r["sim_loss"].mean - r["pred_loss"]) <= k * r["sim_loss"].se for r in rows),
        "verdicts": verdicts(rows),
    }
    return summary, arrays


def log_slope(dims: list[int], est: list[Estimate]) -> tuple[float, float]:
    """Weighted least-squares slope of log(mean) on log(d) and its SE (weights 1/(SE/mean)²)."""
    x = np.log(np.asarray(dims, dtype=float))
    y = np.log([e.mean for e in est])
    s = np.asarray([max(e.se / e.mean, 1e-12) for e in est])
    w = 1.0 / s**2
    xm = np.sum(w * x) / np.sum(w)
    sxx = np.sum(w * (x - xm) ** 2)
    slope = float(np.sum(w * (x - xm) * (y - np.sum(w * y) / np.sum(w))) / sxx)
    return slope, float(1.0 / math.sqrt(sxx))


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claim 3 (DP-SGD's stationary loss grows with d once every sample is clipped: log-log slope,
    theory beside simulation) and claim 2 (clipping slows recovery: recovery-time ratio clip / SGD at
    the largest d). ``held`` is decided on the simulation; 95 % intervals are ± 1.96 SE."""
    out = []
    dp = [r for r in rows if r["mode"] == "dpsgd" and r["pred_clip_fraction"] >= 0.99]
    if len(dp) >= 2:
        slope, se = log_slope([r["dim"] for r in dp], [r["sim_loss"] for r in dp])
        pred = float(np.polyfit(np.log([r["dim"] for r in dp]), np.log([r["pred_loss"] for r in dp]), 1)[0])
        out.append(
            {
                "claim": "3",
                "statement": "DP-SGD's stationary excess loss grows with the ambient dimension d once clipping is active",
                "test": f"log-log slope of the simulated loss on d over {len(dp)} fully clipped dimensions (weighted LS)",
                "estimate": slope,
                "ci95": [slope - 1.96 * se, slope + 1.96 * se],
                "theory": pred,
                "held": bool(slope - 1.96 * se > 0),
                "unit": "slope",
            }
        )
    top = max(r["dim"] for r in rows)
    by_mode = {r["mode"]: r for r in rows if r["dim"] == top}
    if "clip" in by_mode and "sgd" in by_mode:
        c, g = by_mode["clip"], by_mode["sgd"]
        ratio = c["sim_recovery_time"] / g["sim_recovery_time"]
        rel = math.hypot(
            c["sim_recovery_time_se"] / c["sim_recovery_time"], g["sim_recovery_time_se"] / g["sim_recovery_time"]
        )
        out.append(
            {
                "claim": "2",
                "statement": f"clipping slows recovery from a displacement (d = {top})",
                "test": "recovery-time ratio clip only / SGD (bootstrap SEs over replicas, delta method)",
                "estimate": ratio,
                "ci95": [ratio * math.exp(-1.96 * rel), ratio * math.exp(1.96 * rel)],
                "theory": c["pred_recovery_time"] / g["pred_recovery_time"],
                "held": bool(ratio * math.exp(-1.96 * rel) > 1),
                "unit": "×",
            }
        )
    return out


def format_rows(rows: list[dict[str, Any]], *, k: float) -> str:
    """The printed table (one line per (d, mode))."""
    header = [
        "d",
        "mode",
        "clip frac (pred)",
        f"clip frac (sim ±{k:g}SE)",
        "loss pred",
        f"loss sim ±{k:g}SE",
        "z",
        "recov pred",
        f"recov sim ±{k:g}SE",
        "flat err² pred",
        "flat err² sim",
        "held-out pred",
        "held-out sim",
    ]
    body = []
    for r in rows:
        z = r["sim_loss"].z(r["pred_loss"])
        body.append(
            [
                str(r["dim"]),
                r["mode"],
                fmt(r["pred_clip_fraction"], 3),
                fmt_ci(r["sim_clip_fraction"], k=k),
                fmt(r["pred_loss"]),
                fmt_ci(r["sim_loss"], k=k),
                f"{z:+.1f}",
                fmt(r["pred_recovery_time"], 3),
                f"{fmt(r['sim_recovery_time'], 3)} ± {fmt(k * r['sim_recovery_time_se'], 2)}",
                fmt(r["pred_flat_err_sq"], 3),
                fmt(r["sim_flat_err_sq"].mean, 3),
                fmt(r["pred_heldout"], 3),
                fmt(r["sim_heldout"].mean, 3),
            ]
        )
    return table(body, header=header)


def measure_cell(*, config: BasinDimConfig, dim: int, mode: str, seed: int) -> dict[str, Any]:
    """One cell of the sweep (pure: every input, the seed included, is an argument): :func:`measure`."""
    return measure(basin=config.basin(dim), optimizer=config.optimizer(Mode(mode)), config=config, seed=seed)


def cells(config: BasinDimConfig) -> list[Cell]:
    """The sweep's cells, one per (d, mode); cell (i, j) gets seed ``run_seed(seed, i, j)``."""
    return [
        Cell(
            measure_cell,
            {"config": config, "dim": d, "mode": mode.value, "seed": run_seed(config.seed, i, j)},
            label=f"d={d} {mode.value}",
        )
        for i, d in enumerate(config.dims())
        for j, mode in enumerate(MODES)
    ]


def run(config: BasinDimConfig) -> dict[str, Any]:
    """Sweep d × mode, write the result folder and print the table (``main`` then draws the figure)."""

    sweep = SweepRun(config, experiment="basin_dim", module=__name__)
    config = sweep.config
    rows = sweep.map(cells(config))
    theory = Predictions()
    for row in rows:  # the cells' predictions seed the theory grid's memo (same numbers, no second solve)
        basin, opt = config.basin(row["dim"]), config.optimizer(Mode(row["mode"]))
        theory.remember(basin, opt, loss=row["pred_loss"], clip_fraction=row["pred_clip_fraction"])
    metrics, arrays = _pack(rows, config)
    arrays.update(theory_curves(config, theory))
    with sweep.folder() as folder:
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    print(format_rows(rows, k=config.k_se))
    k = config.k_se
    expected_out = sum(_outside(k, r["sim_loss"].n - 1) for r in rows)
    print(
        f"stationary loss within ±{k:g} SE of the prediction: {metrics['loss_rows_within_ci']} of {len(rows)} rows "
        f"(an exact theory would leave ≈ {expected_out:.1f} outside by chance: Student t, SE from "
        f"{rows[0]['sim_loss'].n} batch means)"
    )
    print(f"results: {config.out}")
    return metrics


def _outside(k: float, dof: int) -> float:
    """P(|T| > k), T ~ Student t with ``dof`` degrees of freedom (an estimated SE): the expected
    fraction of rows outside ±k SE when the theory is exact."""
    from scipy.special import stdtr  # Student-t CDF (what scipy.stats.t.sf calls), without scipy.stats

    return float(2.0 * stdtr(max(dof, 1), -k))


def draw_figure(config: Any) -> None:
    """Draw ``basin_dim.png`` into the result folder from its files (``paper.figures.basin_dim``)."""
    from paper import figures

    figures.basin_dim(resolve_out(config, experiment="basin_dim", module=__name__), formats=("png",))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m simulations.basin_dim [flags]``."""
    return run_main(
        BasinDimConfig, run, argv, prog="python -m simulations.basin_dim", description=__doc__, figure=draw_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
