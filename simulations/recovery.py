"""Recovery from a displacement at stationarity: clipped vs unclipped, as the dimension grows (claim 2).

For each ambient dimension d (log grid from r to ``--d``) and each ablation mode, the error is run to
stationarity (burn-in of ``--burn-in`` predicted relaxation times, then a window of ``--window``
relaxation times to measure the stationary level), displaced by δ = ``--displacement`` along
(1, …, 1)/√r in the curved directions, and followed for long enough to recover.

Recovery time (one definition for theory and simulation): the number of steps after the
displacement until the mean excess loss over the stationary level, E L(t) − L_stat, first falls to
``--threshold`` × ½ Σ_i λ_i δ_i² (the excess right after the displacement; the cross term 2⟨e, δ⟩
has mean zero at stationarity), linearly interpolated between steps.

* Theory: the mean-field second-moment recursion (``dptheory.clipped_dynamics.expected_loss_curve``;
  exact for the unclipped modes) started from E e_i(0)² = v_i + δ_i², where v_i = ητ_i²/(a_i(2 − ηa_i))
  is the stationary second moment of the effective linear model. The recursion depends on the state
  only through these second moments, so this start is exactly "stationary plus displaced" in the
  model (no approximation beyond the model's own).
* Simulation: the replica-mean training loss after the displacement minus the simulated stationary
  level (time average over the window), with a bootstrap SE over replicas for the crossing time.

Unclipped GD recovers exponentially at rate ηλ whatever d is; with clipping the drift shrinks to
γλ with γ ≈ C/(s√d), so recovery slows by ~√d — and far from the optimum (‖Hδ‖ ≫ C) the clipped
step has constant length ηC, so recovery there is linear in ‖δ‖ rather than logarithmic.

Example (a real run at the defaults)::

    $ python -m simulations.recovery --quiet
          d   mode  γλ_min  L_stat pred      L_stat sim ±2SE  recovery pred  recovery sim ±2SE  max|z| curve
    -------  -----  ------  -----------  -------------------  -------------  -----------------  ------------
        100    sgd       1     0.005208   0.005181 ± 1.2e-04            1.8       1.8 ± 0.0017           1.7
        100   clip       1     0.005208   0.005253 ± 1.0e-04          6.934     6.931 ± 0.0052           2.5
        100  noise       1      0.07031     0.06945 ± 0.0016            1.8     1.797 ± 0.0067           1.7
        100  dpsgd       1      0.07031     0.07022 ± 0.0014          6.977       6.94 ± 0.036           2.6
      10000    sgd       1     0.005208   0.005188 ± 1.1e-04            1.8     1.799 ± 0.0016           1.9
      10000   clip     0.2    8.224e-04  8.194e-04 ± 1.6e-05          13.11      13.1 ± 0.0054           3.7
      10000  noise       1      0.07031     0.07029 ± 0.0013            1.8     1.801 ± 0.0045           2.1
      10000  dpsgd   0.199       0.2584      0.2574 ± 0.0054          13.17      13.27 ± 0.098           3.5
    1000000    sgd       1     0.005208   0.005188 ± 1.2e-04            1.8     1.799 ± 0.0016           2.3
    1000000   clip    0.02    7.852e-05  7.923e-05 ± 1.4e-06          114.8      114.8 ± 0.015           2.6
    1000000  noise       1      0.07031     0.06999 ± 0.0012            1.8       1.8 ± 0.0056           3.4
    1000000  dpsgd    0.02        2.454        2.429 ± 0.051          114.8        114.4 ± 3.2           5.0
    results: results/recovery
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
from simulations.common.checks import validate_basin_config
from simulations.common.cli import run_main
from simulations.common.fanout import Cell, SweepRun, execution_field
from simulations.common.resources import array_bytes, check_basin_sweep, check_memory
from simulations.common.results import check_output_dir, write_results
from simulations.common.stats import batch_means, simulated_recovery
from simulations.common.store import resolve_out
from simulations.common.sweep import log_grid, run_seed
from simulations.common.tables import fmt, table

MODES = (Mode.SGD, Mode.CLIP, Mode.NOISE, Mode.DPSGD)


@dataclass(frozen=True)
class RecoveryConfig:
    """One recovery sweep (every flag of ``python -m simulations.recovery``)."""

    d: int = field(default=1_000_000, metadata={"help": "largest ambient dimension d (grid from rank to d)"})
    rank: int = field(default=100, metadata={"help": "r: number of curved directions (all curvature λ)"})
    points: int = field(default=3, metadata={"help": "number of log-spaced dimensions from rank to d"})
    curvature: float = field(default=1.0, metadata={"help": "λ: curvature of every curved direction"})
    sample_std: float = field(default=0.1, metadata={"help": "s: per-sample gradient spread"})
    spread: str = field(default="ambient", metadata={"help": "per-sample spread", "choices": ("ambient", "basin")})
    clip_norm: float = field(default=2.0, metadata={"help": "C: per-sample clip norm"})
    noise_multiplier: float = field(default=1.0, metadata={"help": "σ: noise std on the sum is σ·C"})
    batch_size: int = field(default=32, metadata={"help": "B: batch size"})
    lr: float = field(default=0.5, metadata={"help": "η: learning rate"})
    displacement: float = field(default=10.0, metadata={"help": "δ: norm of the displacement"})
    threshold: float = field(default=0.1, metadata={"help": "recovered when the mean excess ≤ threshold × initial"})
    burn_in: float = field(default=4.0, metadata={"help": "burn-in, in predicted relaxation times"})
    window: float = field(default=10.0, metadata={"help": "window measuring the stationary level, in relaxation times"})
    steps: int = field(default=50_000, metadata={"help": "cap on the steps of one run"})
    replicas: int = field(default=16, metadata={"help": "independent Monte Carlo replicas per (d, mode)"})
    k_se: float = field(default=2.0, metadata={"help": "k: confidence intervals printed as ± k·SE"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    engine: str = field(default="auto", metadata={"help": "simulation engine", "choices": ENGINES})
    workers: int = execution_field("workers")
    scheduler: str | None = execution_field("scheduler")
    threads: int = execution_field("threads")
    out: str = field(
        default="results/recovery/{config}",
        metadata={"help": "result folder, replaced atomically ({config}: the run key, simulations.common.store)"},
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})

    def __post_init__(self) -> None:
        check_output_dir(self.out)
        validate_basin_config(self)
        check_int("points", self.points, minimum=1)
        check_scale("displacement", self.displacement)
        for name, high in (("threshold", 1.0), ("burn_in", 1e6), ("window", 1e6), ("k_se", 100.0)):
            check_positive(name, getattr(self, name), maximum=high)
        if not self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        check_choice("engine", self.engine, ENGINES)
        points = min(self.points, self.d - self.rank + 1)
        check_memory("the dimension grid", array_bytes(self.points) * 4, detail=f"points {self.points:g}")
        check_basin_sweep(
            runs=len(MODES) * points,
            replicas=self.replicas,
            steps=self.steps,
            batch_size=self.batch_size,
            rank=self.rank,
            dim=self.d,
            engine="reduced" if self.engine == "auto" else self.engine,
            theory_steps=2 * self.steps,
        )
        self.basin(self.d)
        for mode in MODES:
            self.optimizer(mode)

    def dims(self) -> list[int]:
        return log_grid(low=self.rank, high=self.d, points=self.points)

    def basin(self, dim: int) -> Basin:
        return Basin(dim=dim, curvatures=(self.curvature,) * self.rank, sample_std=self.sample_std, spread=self.spread)

    def optimizer(self, mode: Mode) -> Optimizer:
        return Optimizer(
            lr=self.lr,
            batch_size=self.batch_size,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            mode=mode,
        )


def measure(*, basin: Basin, optimizer: Optimizer, config: RecoveryConfig, seed: int) -> dict[str, Any]:
    """One (d, mode): stationarity, displacement, recovery; theory beside simulation."""
    from simulations.basin.engine import RunSpec, simulate

    dyn = phase_dynamics(basin=basin, optimizer=optimizer)
    tau = relaxation_time(lr=optimizer.lr, drift=min(dyn.drift))
    if not math.isfinite(tau):
        x = optimizer.lr * min(dyn.drift)
        raise ValueError(
            f"the predicted dynamics do not contract in float64 (lr·drift = {x:g} must lie in (1e-15, 2)); "
            f"{'lower' if x >= 2 else 'raise'} lr"
        )
    burn, window = math.ceil(config.burn_in * tau), math.ceil(config.window * tau)
    # Horizon: long enough for the prediction to cross the threshold three times over.
    horizon = min(max(20, math.ceil(8 * tau)), config.steps)  # the theory curve is bounded by the cap too
    pred = displacement_recovery(
        basin=basin,
        optimizer=optimizer,
        displacement=config.displacement,
        steps=horizon,
        threshold=config.threshold,
        dynamics=dyn,
    )
    while not pred.time * 3 <= horizon and horizon < config.steps:
        horizon = min(config.steps, horizon * 4)
        pred = displacement_recovery(
            basin=basin,
            optimizer=optimizer,
            displacement=config.displacement,
            steps=horizon,
            threshold=config.threshold,
            dynamics=dyn,
        )
    total = burn + window + horizon
    if total > config.steps:  # the cap bounds every run (burn-in and window included)
        warnings.warn(
            f"d={basin.dim} {optimizer.mode.value}: {total} steps needed, capped at {config.steps}",
            RuntimeWarning,
            stacklevel=2,
        )
        scale = config.steps / total
        burn, window, horizon = (max(1, int(x * scale)) for x in (burn, window, horizon))
        total = burn + window + horizon
    spec = RunSpec(
        steps=total,
        replicas=config.replicas,
        record_every=1,
        seed=seed,
        displacement_step=burn + window,
        displacement=config.displacement,
    )
    trace = simulate(basin=basin, optimizer=optimizer, run=spec, engine=config.engine)
    steps = np.asarray(trace.steps)
    t_disp = burn + window
    win = (steps > burn) & (steps <= t_disp)
    stat = batch_means(trace.train_loss[:, win], n_batches=max(1, min(int(config.window // 5), int(win.sum()))))
    after = steps > t_disp
    sim = simulated_recovery(
        loss=trace.train_loss[:, after],
        stationary=stat.mean,
        initial=pred.initial,
        threshold=config.threshold,
        seed=seed % (2**32),
    )
    n = min(sim["excess"].size, pred.excess.size - 1)
    z = (sim["excess"][:n] - pred.excess[1 : n + 1]) / np.where(sim["excess_se"][:n] > 0, sim["excess_se"][:n], np.nan)
    return {
        "dim": basin.dim,
        "mode": optimizer.mode.value,
        "drift_min": float(min(dyn.drift)),
        "relaxation_time": tau,
        "pred_stationary": pred.stationary,
        "sim_stationary": stat,
        "pred_recovery_time": pred.time,
        "sim_recovery_time": sim["time"],
        "sim_recovery_time_se": sim["time_se"],
        "initial_excess": pred.initial,
        "max_abs_z_curve": float(np.nanmax(np.abs(z))) if n else math.nan,
        "pred_curve": pred.excess[: n + 1],
        "sim_curve": sim["excess"][:n],
        "sim_curve_se": sim["excess_se"][:n],
    }


def format_rows(rows: list[dict[str, Any]], *, k: float) -> str:
    header = [
        "d",
        "mode",
        "γλ_min",
        "L_stat pred",
        f"L_stat sim ±{k:g}SE",
        "recovery pred",
        f"recovery sim ±{k:g}SE",
        "max|z| curve",
    ]
    body = []
    for r in rows:
        s = r["sim_stationary"]
        body.append(
            [
                str(r["dim"]),
                r["mode"],
                fmt(r["drift_min"], 3),
                fmt(r["pred_stationary"]),
                f"{fmt(s.mean)} ± {fmt(k * s.se, 2)}",
                fmt(r["pred_recovery_time"]),
                f"{fmt(r['sim_recovery_time'])} ± {fmt(k * r['sim_recovery_time_se'], 2)}",
                f"{r['max_abs_z_curve']:.1f}",
            ]
        )
    return table(body, header=header)


def measure_cell(*, config: RecoveryConfig, dim: int, mode: str, seed: int) -> dict[str, Any]:
    """One cell of the sweep (pure: every input, the seed included, is an argument): :func:`measure`."""
    return measure(basin=config.basin(dim), optimizer=config.optimizer(Mode(mode)), config=config, seed=seed)


def cells(config: RecoveryConfig) -> list[Cell]:
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


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claim 2: GD recovers from a displacement whatever d is when unclipped, and clipping slows it —
    the recovery-time ratio clip / SGD at the largest d, theory beside simulation (95 %: ± 1.96 SE)."""
    top = max(r["dim"] for r in rows)
    by_mode = {r["mode"]: r for r in rows if r["dim"] == top}
    if "clip" not in by_mode or "sgd" not in by_mode:
        return []
    c, g = by_mode["clip"], by_mode["sgd"]
    ratio = c["sim_recovery_time"] / g["sim_recovery_time"]
    rel = math.hypot(
        c["sim_recovery_time_se"] / c["sim_recovery_time"], g["sim_recovery_time_se"] / g["sim_recovery_time"]
    )
    return [
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
    ]


def run(config: RecoveryConfig) -> dict[str, Any]:
    """Sweep d × mode, write the result folder and print the table (``main`` then draws the figure)."""

    sweep = SweepRun(config, experiment="recovery", module=__name__)
    config = sweep.config
    dims = config.dims()
    rows = sweep.map(cells(config))
    arrays: dict[str, np.ndarray] = {}
    mrows = []
    for r in rows:
        key = f"{r['mode']}_{r['dim']}"
        for name in ("pred_curve", "sim_curve", "sim_curve_se"):
            arrays[f"{name}_{key}"] = np.asarray(r[name])
        mrows.append(
            {
                k: (v.as_dict() if hasattr(v, "as_dict") else v)
                for k, v in r.items()
                if k not in ("pred_curve", "sim_curve", "sim_curve_se")
            }
        )
    metrics = {
        "experiment": "recovery",
        "k_se": config.k_se,
        "threshold": config.threshold,
        "dims": dims,
        "modes": [m.value for m in MODES],
        "rows": mrows,
        "verdicts": verdicts(rows),
    }
    with sweep.folder() as folder:
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    print(format_rows(rows, k=config.k_se))
    print(f"results: {config.out}")
    return metrics


def draw_figure(config: Any) -> None:
    """Draw ``recovery.png`` into the result folder from its files (``paper.figures.recovery``)."""
    from paper import figures

    figures.recovery(resolve_out(config, experiment="recovery", module=__name__), formats=("png",))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m simulations.recovery [flags]``."""
    return run_main(
        RecoveryConfig, run, argv, prog="python -m simulations.recovery", description=__doc__, figure=draw_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
