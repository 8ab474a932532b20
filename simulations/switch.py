"""Does the early or the late phase decide? Switch-step sweeps in both directions (claim 1).

Training runs for T = ``--steps`` steps from an initial curved error of norm ``--init-error``; the
first s steps use ``--first`` (default sgd) and the remaining T − s use ``--second`` (default
dpsgd) — the *forward* sweep, e.g. SGD → DP-SGD — and the *reverse* sweep swaps the two
(DP-SGD → SGD). s runs over ``--points`` values from 0 to T. For each s the final excess loss
(training, and held-out: curved with κ = ``--heldout-flat-curvature`` where training is flat) is

* predicted by ``dptheory.switching.switch_sweep`` — exact phase composition of the per-direction
  linear models (``phase_dynamics``: exact if unclipped, C's mean-field model at the stationary
  gradient norm if clipped; the latter is accurate only near the optimum);
* predicted by composing the full mean-field recursion
  (``dptheory.clipped_dynamics.expected_loss_curve``, γ re-evaluated at the current gradient norm,
  so it follows the saturated early phase): phase 1 for s steps, then phase 2 from the second
  moments reached. Exact in the model because the recursion depends on the state only through the
  per-direction second moments; available for equal curvatures (the moments are then equal and
  follow from the loss) — "nan" otherwise;
* simulated (final loss averaged over ``--replicas`` independent replicas, ± k SE).

The late phase decides if the forward curve stays near the second mode's loss until s is within a
memory horizon (``dptheory.switching.memory_horizon`` of the second phase, printed) of T. The two
pure runs are also recorded at every step (mean-field curve beside the simulated mean ± k SE) to show
the early phase: from a large initial error clipped DP-SGD moves ≈ ηC per step (slower), SGD
geometrically.

Example (a real run at the defaults)::

    $ python -m simulations.switch --quiet
     direction  switch step  pred (linear)  pred (mean-field)             sim ±2SE  z (mean-field)  held-out pred  held-out sim ±2SE
    ----------  -----------  -------------  -----------------  -------------------  --------------  -------------  -----------------
    sgd->dpsgd            0        0.05019            0.05019     0.04507 ± 0.0083            -1.2          1.027     1.019 ± 0.0081
    sgd->dpsgd           20        0.05019            0.05019     0.05443 ± 0.0089            +1.0         0.9452      0.9461 ± 0.01
    sgd->dpsgd           40        0.05019            0.05019      0.05107 ± 0.011            +0.2         0.8631     0.8627 ± 0.012
    sgd->dpsgd           60        0.05019            0.05019     0.05291 ± 0.0087            +0.6          0.781    0.7829 ± 0.0082
    sgd->dpsgd           80        0.05019            0.05019     0.05281 ± 0.0079            +0.7         0.6989    0.7032 ± 0.0082
    sgd->dpsgd          100        0.05018            0.05018     0.05082 ± 0.0086            +0.1         0.6168    0.6188 ± 0.0085
    sgd->dpsgd          120        0.05017            0.05017     0.05414 ± 0.0085            +0.9         0.5347    0.5416 ± 0.0092
    sgd->dpsgd          140        0.05008            0.05008      0.04253 ± 0.006            -2.5         0.4525    0.4442 ± 0.0063
    sgd->dpsgd          160        0.04937            0.04937     0.04551 ± 0.0075            -1.0         0.3697    0.3657 ± 0.0078
    sgd->dpsgd          180        0.04386            0.04386     0.04367 ± 0.0072            -0.1         0.2821    0.2819 ± 0.0072
    sgd->dpsgd          200       0.001042           0.001042  9.593e-04 ± 1.6e-04            -1.1         0.1571   0.1578 ± 5.9e-04
    dpsgd->sgd            0       0.001042           0.001042  9.830e-04 ± 1.5e-04            -0.8         0.1571   0.1565 ± 7.0e-04
    dpsgd->sgd           20       0.001042           0.001042   0.001039 ± 1.3e-04            -0.0         0.2392    0.2387 ± 0.0011
    dpsgd->sgd           40       0.001042           0.001042  9.999e-04 ± 1.5e-04            -0.5         0.3213    0.3212 ± 0.0018
    dpsgd->sgd           60       0.001042           0.001042   0.001221 ± 1.8e-04            +1.9         0.4035     0.4039 ± 0.002
    dpsgd->sgd           80       0.001042           0.001042   0.001131 ± 1.5e-04            +1.2         0.4856    0.4862 ± 0.0025
    dpsgd->sgd          100       0.001042           0.001042   0.001109 ± 1.9e-04            +0.7         0.5677    0.5682 ± 0.0028
    dpsgd->sgd          120       0.001042           0.001042   0.001009 ± 1.5e-04            -0.5         0.6498    0.6503 ± 0.0031
    dpsgd->sgd          140       0.001042           0.001042   0.001045 ± 1.5e-04            +0.0         0.7319    0.7317 ± 0.0037
    dpsgd->sgd          160       0.001042           0.001042  8.659e-04 ± 1.5e-04            -2.4          0.814     0.8126 ± 0.004
    dpsgd->sgd          180       0.001042           0.001042  9.568e-04 ± 1.3e-04            -1.3         0.8961     0.8985 ± 0.006
    dpsgd->sgd          200        0.05019            0.05019     0.04914 ± 0.0071            -0.3          1.027     1.028 ± 0.0076
    memory horizon (steps, 5 %): sgd 3, dpsgd 30
    pure runs, loss at step 20 (theory / simulation): sgd 0.001042 / 9.199e-04; dpsgd 9.475 / 9.494
    results: results/switch
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dptheory.records import Basin, Mode, Optimizer
from dptheory.validate import check_choice, check_int, check_positive, check_scale
from simulations.basin.engine import ENGINES
from simulations.common.checks import validate_basin_config
from simulations.common.cli import run_main
from simulations.common.fanout import Cell, SweepRun, execution_field
from simulations.common.resources import array_bytes, check_basin_sweep, check_memory
from simulations.common.results import check_output_dir, write_results
from simulations.common.stats import replica_mean
from simulations.common.store import resolve_out
from simulations.common.sweep import run_seed
from simulations.common.tables import fmt, table

MODE_NAMES = tuple(m.value for m in Mode)


@dataclass(frozen=True)
class SwitchConfig:
    """One switch-step sweep (every flag of ``python -m simulations.switch``)."""

    d: int = field(default=10_000, metadata={"help": "ambient dimension d"})
    rank: int = field(default=10, metadata={"help": "r: number of curved directions (all curvature λ)"})
    curvature: float = field(default=1.0, metadata={"help": "λ: curvature of every curved direction"})
    sample_std: float = field(default=0.1, metadata={"help": "s: per-sample gradient spread"})
    spread: str = field(default="ambient", metadata={"help": "per-sample spread", "choices": ("ambient", "basin")})
    clip_norm: float = field(default=1.0, metadata={"help": "C: per-sample clip norm"})
    noise_multiplier: float = field(default=1.0, metadata={"help": "σ: noise std on the sum is σ·C"})
    batch_size: int = field(default=16, metadata={"help": "B: batch size"})
    lr: float = field(default=0.5, metadata={"help": "η: learning rate"})
    heldout_flat_curvature: float = field(
        default=1e-3, metadata={"help": "κ: held-out curvature where training is flat"}
    )
    first: str = field(
        default="sgd", metadata={"help": "mode of the first phase (forward sweep)", "choices": MODE_NAMES}
    )
    second: str = field(
        default="dpsgd", metadata={"help": "mode of the second phase (forward sweep)", "choices": MODE_NAMES}
    )
    steps: int = field(default=200, metadata={"help": "T: total number of steps"})
    points: int = field(default=11, metadata={"help": "number of switch steps from 0 to T"})
    init_error: float = field(default=10.0, metadata={"help": "norm of the initial curved error (along (1,…,1)/√r)"})
    replicas: int = field(default=32, metadata={"help": "independent Monte Carlo replicas per switch step"})
    k_se: float = field(default=2.0, metadata={"help": "k: confidence intervals printed as ± k·SE"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    engine: str = field(default="auto", metadata={"help": "simulation engine", "choices": ENGINES})
    workers: int = execution_field("workers")
    scheduler: str | None = execution_field("scheduler")
    threads: int = execution_field("threads")
    out: str = field(
        default="results/switch/{config}",
        metadata={"help": "result folder, replaced atomically ({config}: the run key, simulations.common.store)"},
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})

    def __post_init__(self) -> None:
        check_output_dir(self.out)
        validate_basin_config(self, heldout=True)
        check_int("points", self.points, minimum=1)
        check_scale("init_error", self.init_error, zero=True)
        check_positive("k_se", self.k_se, maximum=100.0)
        check_choice("first", self.first, MODE_NAMES)
        check_choice("second", self.second, MODE_NAMES)
        check_choice("engine", self.engine, ENGINES)
        if self.first == self.second:
            raise ValueError(f"first and second must differ, got both {self.first!r}")
        switches = min(self.points, self.steps + 1)
        check_memory("the switch grid", array_bytes(self.points) * 4, detail=f"points {self.points:g}")
        engine = "reduced" if self.engine == "auto" else self.engine
        common = dict(replicas=self.replicas, steps=self.steps, batch_size=self.batch_size, rank=self.rank, dim=self.d)
        check_basin_sweep(runs=2, engine=engine, theory_steps=self.steps, **common)  # the two pure curves
        check_basin_sweep(
            runs=2 * switches + 2, engine=engine, record_every=self.steps, theory_steps=self.steps, **common
        )
        self.basin()
        self.optimizer(self.first)
        self.optimizer(self.second)

    def basin(self) -> Basin:
        return Basin(
            dim=self.d,
            curvatures=(self.curvature,) * self.rank,
            sample_std=self.sample_std,
            spread=self.spread,
            heldout_flat_curvature=self.heldout_flat_curvature,
        )

    def optimizer(self, mode: str | Mode) -> Optimizer:
        return Optimizer(
            lr=self.lr,
            batch_size=self.batch_size,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            mode=Mode.parse(mode),
        )

    def switch_steps(self) -> np.ndarray:
        return np.unique(np.rint(np.linspace(0, self.steps, self.points)).astype(np.int64))


def switch_cell(*, config: SwitchConfig, direction: int, switch_step: int, seed: int) -> dict[str, Any]:
    """One switch step of one direction (0: first → second, 1: the reverse): the simulated final
    losses and the mean-field prediction (pure: the seed is an argument)."""
    from dptheory.switching import mean_field_switched_loss
    from simulations.basin.engine import RunSpec, simulate

    basin = config.basin()
    first, second = config.optimizer(config.first), config.optimizer(config.second)
    a, b = (first, second) if direction == 0 else (second, first)
    T, s = config.steps, int(switch_step)
    spec = RunSpec(
        steps=T,
        replicas=config.replicas,
        record_every=T,
        seed=seed,
        init_error=config.init_error,
        switch_step=s if s < T else None,
        switch_mode=b.mode if s < T else None,
    )
    trace = simulate(basin=basin, optimizer=a, run=spec, engine=config.engine)
    mf = mean_field_switched_loss(
        basin=basin, before=a, after=b, switch_step=s, total_steps=T, init_error=config.init_error
    )
    return {
        "train": replica_mean(trace.train_loss[:, -1]),
        "heldout": replica_mean(trace.heldout_loss[:, -1]),
        "mean_field": mf,
    }


def curve_cell(*, config: SwitchConfig, mode: str, seed: int) -> dict[str, np.ndarray]:
    """The pure run of ``mode`` recorded at every step: simulated mean ± SE and the mean-field curve."""
    from dptheory.clipped_dynamics import expected_loss_curve
    from simulations.basin.engine import RunSpec, simulate

    basin, opt = config.basin(), config.optimizer(mode)
    coord = np.full(basin.rank, config.init_error / math.sqrt(basin.rank))
    spec = RunSpec(
        steps=config.steps, replicas=config.replicas, record_every=1, seed=seed, init_error=config.init_error
    )
    tr = simulate(basin=basin, optimizer=opt, run=spec, engine=config.engine)
    return {
        f"curve_sim_{mode}": tr.train_loss.mean(axis=0),
        f"curve_sim_se_{mode}": tr.train_loss.std(axis=0, ddof=1) / math.sqrt(config.replicas),
        f"curve_theory_{mode}": np.asarray(
            expected_loss_curve(basin=basin, optimizer=opt, steps=config.steps, init_error=coord)
        ),
    }


def cells(config: SwitchConfig) -> list[Cell]:
    """The sweep's cells: every (direction, switch step) — seed ``run_seed(seed, direction, i)`` — then
    the two pure runs as whole curves (seed ``run_seed(seed, 9, j)``)."""
    out = [
        Cell(
            switch_cell,
            {
                "config": config,
                "direction": direction,
                "switch_step": int(s),
                "seed": run_seed(config.seed, direction, i),
            },
            label=f"{'forward' if direction == 0 else 'reverse'} s={s}",
        )
        for direction in (0, 1)
        for i, s in enumerate(config.switch_steps())
    ]
    out += [
        Cell(curve_cell, {"config": config, "mode": mode, "seed": run_seed(config.seed, 9, j)}, label=f"curve {mode}")
        for j, mode in enumerate((config.first, config.second))
    ]
    return out


def verdicts(rows: list[dict[str, Any]], *, horizons: dict[str, float], config: SwitchConfig) -> list[dict[str, Any]]:
    """Claim 1 (the late phase decides the final training loss): for the forward sweep, the largest
    |z| of the simulated final loss against the loss of a run spent wholly in the second mode, over the
    switch steps at least one memory horizon before T (held if within 3 SE at every such step)."""
    T = config.steps
    h = horizons.get(config.second, math.nan)
    fwd = [r for r in rows if r["direction"] == f"{config.first}->{config.second}"]
    pure = next((r for r in fwd if r["switch_step"] == 0), None)
    early = [r for r in fwd if r["switch_step"] <= T - h and r["switch_step"] > 0]
    if pure is None or not early or not math.isfinite(h):
        return []
    z = [
        (r["sim_loss"].mean - pure["sim_loss"].mean) / math.hypot(r["sim_loss"].se, pure["sim_loss"].se) for r in early
    ]
    worst = max(z, key=abs)
    return [
        {
            "claim": "1",
            "statement": f"the final training loss is set by the last {h:g} steps (the {config.second} memory horizon)",
            "test": f"z of the final loss after switching at s ≤ T − horizon vs a pure {config.second} run "
            f"({len(early)} switch steps); held if |z| ≤ 3 at every one",
            "estimate": float(worst),
            "ci95": [math.nan, math.nan],
            "theory": 0.0,
            "held": bool(all(abs(v) <= 3 for v in z)),
            "unit": "z",
        }
    ]


def run(config: SwitchConfig) -> dict[str, Any]:
    """Sweep the switch step both ways, write the result folder and print the table (``main`` then draws the figure)."""
    from dptheory.switching import memory_horizon, phase_dynamics, switch_sweep

    sweep = SweepRun(config, experiment="switch", module=__name__)
    config = sweep.config
    basin = config.basin()
    first, second = config.optimizer(config.first), config.optimizer(config.second)
    dyn_first, dyn_second = phase_dynamics(basin=basin, optimizer=first), phase_dynamics(basin=basin, optimizer=second)
    s_grid = config.switch_steps()
    T = config.steps
    coord = np.full(basin.rank, config.init_error / math.sqrt(basin.rank))
    lin = switch_sweep(
        before=dyn_first,
        after=dyn_second,
        switch_steps=s_grid,
        total_steps=T,
        curvatures=basin.curvatures,
        init_error=coord,
        flat_curvature=basin.flat_curvature,
        heldout_flat_curvature=basin.heldout_flat_curvature,
    )
    horizons = {config.first: memory_horizon(dynamics=dyn_first), config.second: memory_horizon(dynamics=dyn_second)}

    results = sweep.map(cells(config))
    rows: list[dict[str, Any]] = []
    for direction, (a, b) in enumerate(((first, second), (second, first))):
        name = f"{a.mode.value}->{b.mode.value}"
        for i, s in enumerate(s_grid):
            cell = results[direction * len(s_grid) + i]
            pred_train = (lin.forward_train if direction == 0 else lin.reverse_train)[i]
            pred_held = (lin.forward_test if direction == 0 else lin.reverse_test)[i]
            rows.append(
                {
                    "direction": name,
                    "switch_step": int(s),
                    "pred_linear": float(pred_train),
                    "pred_mean_field": cell["mean_field"],
                    "sim_loss": cell["train"],
                    "pred_heldout_linear": float(pred_held),
                    "sim_heldout": cell["heldout"],
                }
            )
    # The two pure runs as whole loss curves (claim 1's "slower early"): mean-field theory vs simulation.
    curves: dict[str, np.ndarray] = {}
    for part in results[2 * len(s_grid) :]:
        curves.update(part)
    early = max(1, T // 10)
    metrics = {
        "experiment": "switch",
        "early_step": early,
        "curve_modes": [config.first, config.second],
        "k_se": config.k_se,
        "total_steps": T,
        "directions": [r["direction"] for r in rows[:: len(s_grid)]],
        "memory_horizon": horizons,
        "verdicts": verdicts(rows, horizons=horizons, config=config),
        "rows": [{k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in r.items()} for r in rows],
    }
    with sweep.folder() as folder:
        write_results(folder, config=config, metrics=metrics, arrays={"switch_steps": s_grid, **curves})
    k = config.k_se
    header = [
        "direction",
        "switch step",
        "pred (linear)",
        "pred (mean-field)",
        f"sim ±{k:g}SE",
        "z (mean-field)",
        "held-out pred",
        f"held-out sim ±{k:g}SE",
    ]
    body = [
        [
            r["direction"],
            str(r["switch_step"]),
            fmt(r["pred_linear"]),
            fmt(r["pred_mean_field"]),
            f"{fmt(r['sim_loss'].mean)} ± {fmt(k * r['sim_loss'].se, 2)}",
            f"{r['sim_loss'].z(r['pred_mean_field']):+.1f}",
            fmt(r["pred_heldout_linear"]),
            f"{fmt(r['sim_heldout'].mean)} ± {fmt(k * r['sim_heldout'].se, 2)}",
        ]
        for r in rows
    ]
    print(table(body, header=header))
    print("memory horizon (steps, 5 %): " + ", ".join(f"{m} {fmt(h)}" for m, h in horizons.items()))
    print(
        f"pure runs, loss at step {early} (theory / simulation): "
        + "; ".join(
            f"{m} {fmt(curves[f'curve_theory_{m}'][early])} / {fmt(curves[f'curve_sim_{m}'][early - 1])}"
            for m in (config.first, config.second)
        )
    )
    print(f"results: {config.out}")
    return metrics


def draw_figure(config: Any) -> None:
    """Draw ``switch.png`` into the result folder from its files (``paper.figures.switch``)."""
    from paper import figures

    figures.switch(resolve_out(config, experiment="switch", module=__name__), formats=("png",))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m simulations.switch [flags]``."""
    return run_main(
        SwitchConfig, run, argv, prog="python -m simulations.switch", description=__doc__, figure=draw_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
