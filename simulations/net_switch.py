"""Claim 1 — DP-SGD is slower early, but does the *late* phase decide the result? Switch sweeps.

For every lr schedule in ``lr_schedules``, switch epoch s in ``switch_epochs`` and seed, two paired
runs of E = ``epochs`` epochs (each phase at its own tuned lr: SGD's for SGD epochs, DP-SGD's for
DP-SGD epochs, ``switch_lr``):

* ``sgd->dpsgd``: SGD for epochs [0, s), DP-SGD for [s, E);
* ``dpsgd->sgd``: DP-SGD for [0, s), SGD for [s, E);

plus the baselines (all SGD, all DP-SGD). Neither switched run is private (each has SGD steps on
the private data): they are a diagnosis of *when* DP-SGD's damage happens. Noise: with
``sigma_policy="fixed_epsilon"`` (default) σ is calibrated per arm so that its DP-SGD phase spends
exactly ``target_epsilon`` (RDP, conservative) — a short DP phase gets less noise, as a practitioner
with that budget would use it; ``"fixed_sigma"`` uses the DP-SGD baseline's σ for every phase.

Measured and tested (paired two-sided t-tests over seeds, df = n − 1; Holm within claim 1):

* **slower early** — early progress = mean over the first 20 % of steps of the normalised test
  accuracy (acc(t) − acc(0)) / (acc(E) − acc(0)) on a fixed 1 000-example test subsample (recorded at
  step resolution, ``curve_steps``); "DP-SGD − SGD < 0". Also reported: the raw early AUC and the
  steps each baseline needs to reach ``target_fraction`` of the DP-SGD baseline's final accuracy;
* **late phase decides** — at the switch epoch nearest E/2, acc(dpsgd→sgd) − acc(sgd→dpsgd) > 0,
  with late-phase dominance L(s) = that difference / (acc(sgd) − acc(dpsgd)) per s;
* **per-layer diagnostics** (``metrics["layer_diagnostics"]``, first seed's baselines, at the curve
  steps, on 256 training examples): per-layer per-sample norms, clip fractions, noise-to-signal and
  weight norms (``simulations.nn.diagnostics.layer_diagnostics``) — not covered by the DP guarantee;
* **memory horizon** — after a switch at s the test accuracy relaxes as a_s + b_s·exp(−(t − s)/τ);
  τ is fitted per direction (shared over s, least squares on the seed-mean curves, τ on a log grid)
  with a 95 % percentile bootstrap over seeds. τ_DP is the horizon of a DP-SGD phase (how long it
  remembers an SGD start), τ_SGD that of an SGD phase. Claim 1 is read as "τ_DP ≪ run length":
  held iff the CI of τ_DP/E lies below 0.25.

Example (the CPU default: mnist1d n = 36 000, MLP 128×2, 6 epochs of B = 1024, s ∈ {1, 3, 5},
constant lr, ε = 4 per arm, 5 seeds — the GPU stage runs ≥ 40 epochs, 11 switch points, constant
and cosine)::

    $ python -m simulations.nn switch --out results/nn/switch
    claim 1 (switch), mnist1d n=36000 mlp-128x2, 6 epochs, B=1024; every DP phase at eps=4.0 (fixed_epsilon); seeds=5; test accuracy in %
      [constant] SGD 79.17 ± 0.28   DP-SGD 62.10 ± 0.36   tau_DP 2.15 ep, tau_SGD 2.32 ep
    s  SGD->DP       DP->SGD (not private)  DP->SGD - SGD->DP        dominance L  sigma SGD->DP / DP->SGD
    -  ------------  ---------------------  -----------------------  -----------  -----------------------
    1  64.28 ± 0.47  79.59 ± 0.30           +15.31 [+13.29, +17.34]  +0.90        0.88 / 0.74
    3  69.83 ± 0.38  70.28 ± 1.11           +0.45 [-2.93, +3.84]     +0.03        0.82 / 0.82
    5  65.48 ± 0.56  35.00 ± 6.71           -30.48 [-48.66, -12.30]  -1.79        0.74 / 0.88
      DP-SGD is slower early (constant lr): normalised early progress DP-SGD - SGD < 0: +0.07 [+0.04, +0.11] (fraction of final progress, first 20% of steps), p_holm=0.012, n=5 -> held: False
      the late phase decides (constant lr): acc(DP->SGD) - acc(SGD->DP) > 0 at s=3: +0.45 [-2.93, +3.84] points, p_holm=0.73, n=5 -> held: False
      DP-SGD forgets quickly (constant lr): tau_DP / run length < 0.25: +0.36 [+0.30, +0.43] (tau_DP / E), decided by the 95% CI, n=5 -> held: False
    (measured: 121 s CPU serially; 95 s wall with --workers 2 inside the study on the shared 2-core machine)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import bootstrap_ci, claim_family, interval_verdict, paired_t, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    TEST_ACC,
    TEST_LOSS,
    NetExperiment,
    Sweep,
    calibrated_sigma,
    check_sweep,
    curves,
    draw_figure,
    opt,
    per_seed,
    select,
    steps_per_epoch,
    task_label,
    train_config,
    verdict_line,
)
from simulations.net_tune import Arm, chosen_fields, tune

SCHEDULES = ("constant", "cosine")
POLICIES = ("fixed_epsilon", "fixed_sigma")
EARLY = 0.2
TAU_GRID = np.geomspace(0.05, 400.0, 240)
HORIZON_THRESHOLD = 0.25
MAX_CURVE_POINTS = 10_000  # each point is an evaluation of the test subsample


@dataclass(frozen=True)
class SwitchConfig(NetExperiment):
    """Switch-epoch sweep in both directions, per lr schedule, at a fixed ε per arm (claim 1)."""

    n_train: int | None = opt(36000, "training examples")
    n_test: int | None = opt(10000, "test examples")
    n_val: int = opt(2000, "validation examples (tuning selects on them)")
    epochs: int = opt(6, "training epochs E")
    batch_size: int = opt(1024, "expected batch size B")
    lr_grid: tuple[float, ...] = opt((0.1, 0.5, 2.5), "learning rates tuned for the SGD and DP-SGD phases")
    switch_epochs: tuple[int, ...] = opt((1, 3, 5), "switch epochs s (0 < s < epochs)")
    lr_schedules: tuple[str, ...] = opt(("constant",), "lr schedules: constant, cosine")
    target_epsilon: float = opt(4.0, "epsilon of every arm's DP-SGD phase (fixed_epsilon policy)")
    sigma_policy: str = opt("fixed_epsilon", "fixed_epsilon (sigma per arm) | fixed_sigma", choices=POLICIES)
    target_fraction: float = opt(0.8, "steps-to-target: fraction of the DP-SGD baseline's final accuracy")
    curve_points: int = opt(9, "step-resolution test points in the first 20% of steps (and 11 over the run)")
    layer_diagnostics: bool = opt(
        True, "per-layer norms / clip fractions / noise-to-signal on the baselines' curve steps"
    )
    out: str = opt("results/nn/switch", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        s = tuple(sorted({int(x) for x in self.switch_epochs}))
        if not s or any(not 0 < x < self.epochs for x in s):
            raise ValueError(f"switch_epochs must lie strictly between 0 and epochs={self.epochs}, got {s}")
        object.__setattr__(self, "switch_epochs", s)
        sch = tuple(dict.fromkeys(self.lr_schedules))
        if not sch or any(x not in SCHEDULES for x in sch):
            raise ValueError(f"lr_schedules must be among {', '.join(SCHEDULES)}, got {self.lr_schedules}")
        object.__setattr__(self, "lr_schedules", sch)
        if not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ValueError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if self.sigma_policy not in POLICIES:
            raise ValueError(f"sigma_policy must be one of {', '.join(POLICIES)}, got {self.sigma_policy!r}")
        if not 0 < self.target_fraction <= 1:
            raise ValueError(f"target_fraction must be in (0, 1], got {self.target_fraction}")
        if not 2 <= int(self.curve_points) <= MAX_CURVE_POINTS:
            raise ValueError(f"curve_points must be between 2 and {MAX_CURVE_POINTS}, got {self.curve_points}")
        self.check_run_count(self.planned_runs())

    def probe_runs(self) -> list[dict[str, Any]]:
        """The shared extremes, a switched run at the last switch epoch with the baselines' curves, and
        the calibrated DP phase of each schedule."""
        top = max((self.lr, *self.lr_grid))
        switched = {
            "mode": "sgd",
            "switch_epoch": self.switch_epochs[-1],
            "switch_mode": "dpsgd",
            "switch_lr": top,
            "curve_steps": (0,),
            "layer_diagnostics": self.layer_diagnostics,
        }
        calibrated = [
            {"mode": "dpsgd", "lr_schedule": s, "target_epsilon": self.target_epsilon} for s in self.lr_schedules
        ]
        return [*super().probe_runs(), switched, *calibrated]

    def planned_runs(self) -> int:
        lr = len(self.lr_grid)
        tuning = 2 * lr * len(self.tune_seeds) if lr > 1 else 0
        per_seed_runs = 2 + 2 * len(self.switch_epochs)
        return len(self.lr_schedules) * (tuning + per_seed_runs * len(self.seeds))


def curve_steps(config: SwitchConfig, total: int) -> tuple[int, ...]:
    """Dense steps over the first 20 % of the run plus 11 over the whole run (the baselines' curves)."""
    early = np.linspace(0, EARLY * total, int(config.curve_points))
    whole = np.linspace(0, total, 11)
    return tuple(sorted({round(x) for x in np.concatenate([early, whole])}))


def sigma_for(config: SwitchConfig, dp_epochs: int) -> float:
    """σ of a DP-SGD phase of ``dp_epochs`` epochs under the config's σ policy."""
    epochs = dp_epochs if config.sigma_policy == "fixed_epsilon" else config.epochs
    return calibrated_sigma(config, target_epsilon=config.target_epsilon, epochs=epochs)


def jobs(config: SwitchConfig, schedule: str, lrs: dict[str, float], total: int) -> list[tuple[dict, Any]]:
    out = []
    base = {"lr_schedule": schedule}
    for seed in config.seeds:
        out.append(
            (
                {"seed": seed, "schedule": schedule, "run": "sgd", "switch_epoch": None},
                train_config(
                    **config.base_fields(
                        **base,
                        mode="sgd",
                        lr=lrs["sgd"],
                        seed=seed,
                        curve_steps=curve_steps(config, total),
                        layer_diagnostics=config.layer_diagnostics,
                    )
                ),
            )
        )
        out.append(
            (
                {"seed": seed, "schedule": schedule, "run": "dpsgd", "switch_epoch": None},
                train_config(
                    **config.base_fields(
                        **base,
                        mode="dpsgd",
                        lr=lrs["dpsgd"],
                        seed=seed,
                        noise_multiplier=sigma_for(config, config.epochs),
                        curve_steps=curve_steps(config, total),
                        layer_diagnostics=config.layer_diagnostics,
                    )
                ),
            )
        )
        for s in config.switch_epochs:
            for first, then in (("sgd", "dpsgd"), ("dpsgd", "sgd")):
                dp_epochs = config.epochs - s if then == "dpsgd" else s
                out.append(
                    (
                        {"seed": seed, "schedule": schedule, "run": f"{first}->{then}", "switch_epoch": s},
                        train_config(
                            **config.base_fields(
                                **base,
                                mode=first,
                                switch_epoch=s,
                                switch_mode=then,
                                lr=lrs[first],
                                switch_lr=lrs[then],
                                noise_multiplier=sigma_for(config, dp_epochs),
                                seed=seed,
                            )
                        ),
                    )
                )
    return out


def early_progress(curve: dict, *, total: int, final_acc: float) -> tuple[float, float]:
    """(raw, normalised) mean test accuracy over steps [0, 0.2·total] (trapezoid on the curve points).

    Normalised: (acc(t) − acc(0)) / (acc(end) − acc(0)), with acc(end) the curve's own point at
    ``total`` when recorded (same test subsample), else ``final_acc``.
    """
    steps = np.asarray(curve["step"], dtype=float)
    acc = np.asarray(curve["test_acc"], dtype=float)
    if steps.size and steps[-1] == total:
        final_acc = float(acc[-1])
    keep = steps <= EARLY * total + 1e-9
    x, y = steps[keep], acc[keep]
    if x.size < 2:
        return math.nan, math.nan
    raw = float(np.trapezoid(y, x) / (x[-1] - x[0]))
    span = final_acc - y[0]
    norm = float(np.trapezoid((y - y[0]) / span, x) / (x[-1] - x[0])) if span > 0 else math.nan
    return raw, norm


def steps_to(curve: dict, target: float) -> float:
    """First recorded step with test accuracy ≥ ``target`` (inf if never)."""
    for step, acc in zip(curve["step"], curve["test_acc"]):
        if acc >= target:
            return float(step)
    return math.inf


def fit_horizon(curves_by_s: dict[int, np.ndarray], epochs: int) -> float:
    """τ (epochs) of acc_s(t) = a_s + b_s exp(−(t − s)/τ), t = s..E, shared over s (module docstring).

    ``curves_by_s[s]`` = the mean test-accuracy history (records 0..E). For each τ on ``TAU_GRID``
    (a_s, b_s) are the least-squares solution per s; the τ with the smallest total squared error
    wins (the grid edge when the relaxation is too slow or too fast to resolve).
    """
    sse = np.zeros(TAU_GRID.size)
    for s, curve in curves_by_s.items():
        t = np.arange(s, epochs + 1, dtype=float) - s
        y = np.asarray(curve, dtype=float)[s : epochs + 1]
        x = np.exp(-t[None, :] / TAU_GRID[:, None])  # (taus, points): the regressor of b_s
        xc = x - x.mean(axis=1, keepdims=True)
        yc = y - y.mean()
        sxx = (xc * xc).sum(axis=1)
        sxy = (xc * yc[None, :]).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            explained = np.where(sxx > 0, sxy * sxy / sxx, 0.0)
        sse += (yc * yc).sum() - explained  # least squares of y = a_s + b_s x, closed form per tau
    if not np.all(np.isfinite(sse)):
        return math.nan
    return float(TAU_GRID[int(np.argmin(sse + 1e-15 * np.arange(TAU_GRID.size)))])


def _schedule_metrics(config: SwitchConfig, results: list[dict], schedule: str, total: int, task: str):
    seeds = config.seeds
    sel = {"schedule": schedule}
    acc_sgd = per_seed(results, seeds, TEST_ACC, run="sgd", **sel)
    acc_dp = per_seed(results, seeds, TEST_ACC, run="dpsgd", **sel)
    gap = paired_t(acc_sgd.tolist(), acc_dp.tolist())
    per_switch: list[dict[str, Any]] = []
    for s in config.switch_epochs:
        late_private = per_seed(results, seeds, TEST_ACC, run="sgd->dpsgd", switch_epoch=s, **sel)
        early_private = per_seed(results, seeds, TEST_ACC, run="dpsgd->sgd", switch_epoch=s, **sel)
        num = paired_t(early_private.tolist(), late_private.tolist())
        per_switch.append(
            {
                "switch_epoch": s,
                "acc_sgd_then_dpsgd": summary(late_private.tolist()),
                "acc_dpsgd_then_sgd": summary(early_private.tolist()),
                "dominance_numerator": num,
                "late_phase_dominance": num["estimate"] / gap["estimate"] if gap["estimate"] else math.nan,
                "sigma_sgd_then_dpsgd": sigma_for(config, config.epochs - s),
                "sigma_dpsgd_then_sgd": sigma_for(config, s),
            }
        )
    # early speed from the step-resolution curves of the baselines
    early: dict[str, dict[str, np.ndarray]] = {}
    target = config.target_fraction * float(np.mean(acc_dp))
    for run, finals in (("sgd", acc_sgd), ("dpsgd", acc_dp)):
        raw, norm, to = [], [], []
        for seed, fin in zip(seeds, finals):
            c = select(results, run=run, seed=seed, **sel)[0]["result"]["curve"]
            r, n = early_progress(c, total=total, final_acc=fin)
            raw.append(r)
            norm.append(n)
            to.append(steps_to(c, target))
        early[run] = {"raw": np.asarray(raw), "normalised": np.asarray(norm), "steps_to_target": np.asarray(to)}
    # memory horizons, bootstrap over seeds
    histories = {}
    for run in ("sgd->dpsgd", "dpsgd->sgd"):
        histories[run] = np.stack(
            [curves(select(results, run=run, switch_epoch=s, **sel), TEST_ACC) for s in config.switch_epochs]
        )  # (switch points, seeds, records)
    horizon = {}
    for run, label in (("sgd->dpsgd", "tau_dpsgd"), ("dpsgd->sgd", "tau_sgd")):
        arr = np.transpose(histories[run], (1, 0, 2))  # (seeds, switch points, records)

        def stat(rows: np.ndarray) -> float:
            mean = rows.mean(axis=0)
            return fit_horizon({s: mean[i] for i, s in enumerate(config.switch_epochs)}, config.epochs)

        horizon[label] = bootstrap_ci(arr, stat, n_boot=200, seed=0)
        horizon[label]["grid_edge"] = bool(horizon[label]["estimate"] in (TAU_GRID[0], TAU_GRID[-1]))
    mid = min(per_switch, key=lambda r: (abs(r["switch_epoch"] - config.epochs / 2), r["switch_epoch"]))
    specs = [
        {
            "claim": "1",
            "statement": f"DP-SGD is slower early ({schedule} lr): normalised early progress DP-SGD - SGD < 0",
            "test": paired_t(early["dpsgd"]["normalised"].tolist(), early["sgd"]["normalised"].tolist()),
            "held_if": "less",
            "unit": "(fraction of final progress, first 20% of steps)",
            "scale": 1.0,
            "task": task,
            "key": f"{schedule}.early_normalised_dpsgd_minus_sgd",
        },
        {
            "claim": "1",
            "statement": (
                f"the late phase decides ({schedule} lr): acc(DP->SGD) - acc(SGD->DP) > 0 at s={mid['switch_epoch']}"
            ),
            "test": mid["dominance_numerator"],
            "held_if": "greater",
            "unit": "points",
            "scale": 100.0,
            "task": task,
            "key": f"{schedule}.dominance_numerator.s{mid['switch_epoch']}",
        },
    ]
    tau = horizon["tau_dpsgd"]
    horizon_verdict = interval_verdict(
        claim="1",
        statement=f"DP-SGD forgets quickly ({schedule} lr): tau_DP / run length < {HORIZON_THRESHOLD}",
        estimate=tau["estimate"] / config.epochs,
        ci95=[x / config.epochs for x in tau["ci95"]],
        n_seeds=len(seeds),
        threshold=HORIZON_THRESHOLD,
        test="exponential relaxation fit, 95 % percentile bootstrap over seeds (200 resamples)",
        unit="(tau_DP / E)",
        task=task,
        key=f"{schedule}.horizon.tau_dpsgd",
    )
    out = {
        "acc_sgd": summary(acc_sgd.tolist()),
        "acc_dpsgd": summary(acc_dp.tolist()),
        "gap_sgd_minus_dpsgd": gap,
        "per_switch": per_switch,
        "verdict_switch_epoch": mid["switch_epoch"],
        "early": {
            run: {k: summary(v.tolist()) for k, v in d.items()} | {"steps_to_target_per_seed": d["steps_to_target"]}
            for run, d in early.items()
        },
        "early_raw_dpsgd_minus_sgd": paired_t(early["dpsgd"]["raw"].tolist(), early["sgd"]["raw"].tolist()),
        "steps_to_target_dpsgd_minus_sgd": paired_t(
            early["dpsgd"]["steps_to_target"].tolist(), early["sgd"]["steps_to_target"].tolist()
        ),
        "target_accuracy": target,
        "horizon": horizon,
        "mean_curves": {run: histories[run].mean(axis=1) for run in histories},
    }
    return out, specs, horizon_verdict


def analyse(config: SwitchConfig, results: list[dict], *, total: int, task: str = "") -> dict:
    """Paired statistics and the claim-1 verdicts from the runs (pure: reads ``results`` only)."""
    per_schedule, specs, horizons = {}, [], []
    for schedule in config.lr_schedules:
        m, sp, hv = _schedule_metrics(config, results, schedule, total, task)
        per_schedule[schedule] = m
        specs += sp
        horizons.append(hv)
    verdicts = claim_family(specs) + horizons
    primary = next(v for v in verdicts if v["key"].startswith(f"{config.lr_schedules[0]}.dominance"))
    return {
        "claim": "1: DP-SGD is slower early, but the late phase decides the final result",
        "task": task,
        "per_schedule": per_schedule,
        "verdicts": verdicts,
        "verdict": primary,
        "criterion": (
            "paired two-sided t-tests over seeds (df = n - 1), Holm within claim 1; the horizon verdict holds iff "
            f"the bootstrap CI of tau_DP / E lies below {HORIZON_THRESHOLD}; switched runs are not private"
        ),
    }


def run(config: SwitchConfig) -> dict:
    """Tune the two phases' lr, run the sweep per schedule, write the result folder, print the summary."""
    check_output_dir(config.out)
    check_sweep(config, config.planned_runs())
    total = steps_per_epoch(config) * config.epochs
    task = task_label(config)
    results, tuning = [], {}
    for schedule in config.lr_schedules:
        arms = [
            Arm("sgd", {"mode": "sgd", "lr_schedule": schedule}),
            Arm(
                "dpsgd",
                {"mode": "dpsgd", "lr_schedule": schedule, "noise_multiplier": sigma_for(config, config.epochs)},
                private=True,
            ),
        ]
        rec = tune(config, arms, label=f"switch {schedule}")
        tuning[schedule] = rec
        lrs = {a.name: float(chosen_fields(rec, a).get("lr", config.lr)) for a in arms}
        results += Sweep.of(f"switch {schedule}", config).run(jobs(config, schedule, lrs, total))
    metrics = analyse(config, results, total=total, task=task)
    metrics["tuning"] = tuning
    metrics["threads"] = config.threads
    metrics["layer_diagnostics"] = {
        f"{r['tags']['schedule']}/{r['tags']['run']}": r["result"]["curve"].get("layers", [])
        for r in results
        if r["tags"]["switch_epoch"] is None and r["tags"]["seed"] == config.seeds[0]
    }
    metrics["runs"] = [
        {
            **r["tags"],
            "final_test_accuracy": float(curves([r], TEST_ACC)[0, -1]),
            "noise_multiplier": r["result"]["privacy"]["noise_multiplier"],
            "epsilon_dp_phase_rdp": _dp_phase_epsilon(r["result"], config.delta),
            "privacy": r["result"]["privacy"]["label"],
            "seconds": r["seconds"],
        }
        for r in results
    ]
    arrays = {
        "test_accuracy": curves(results, TEST_ACC),
        "test_loss": curves(results, TEST_LOSS),
        "run": np.asarray([r["tags"]["run"] for r in results]),
        "schedule": np.asarray([r["tags"]["schedule"] for r in results]),
        "seed": np.asarray([r["tags"]["seed"] for r in results]),
        "switch_epoch": np.asarray(
            [-1 if r["tags"]["switch_epoch"] is None else r["tags"]["switch_epoch"] for r in results]
        ),
    }
    with result_folder(config.out) as folder:
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    report(config, metrics)
    return metrics


def _dp_phase_epsilon(result: dict, delta: float) -> float:
    """RDP ε of the DP-SGD steps of a run (its mechanisms), whatever its label."""
    from dptheory.privacy import PoissonGaussianMechanism, epsilon

    mechs = [PoissonGaussianMechanism(**m) for m in result["privacy"]["mechanisms"]]
    mechs = [m for m in mechs if m.steps > 0]
    return epsilon(mechanisms=mechs, delta=delta, accountant="rdp") if mechs else 0.0


def report(config: SwitchConfig, metrics: dict) -> None:
    print(
        f"claim 1 (switch), {metrics['task']}; every DP phase at eps={config.target_epsilon} "
        f"({config.sigma_policy}); seeds={len(config.seeds)}; test accuracy in %"
    )
    for schedule, m in metrics["per_schedule"].items():
        print(
            f"  [{schedule}] SGD {fmt_stat(m['acc_sgd'], 100)}   DP-SGD {fmt_stat(m['acc_dpsgd'], 100)}   "
            f"tau_DP {m['horizon']['tau_dpsgd']['estimate']:.2f} ep, tau_SGD {m['horizon']['tau_sgd']['estimate']:.2f} ep"
        )
        rows = [
            ["s", "SGD->DP", "DP->SGD (not private)", "DP->SGD - SGD->DP", "dominance L", "sigma SGD->DP / DP->SGD"]
        ]
        for r in m["per_switch"]:
            d = r["dominance_numerator"]
            rows.append(
                [
                    str(r["switch_epoch"]),
                    fmt_stat(r["acc_sgd_then_dpsgd"], 100),
                    fmt_stat(r["acc_dpsgd_then_sgd"], 100),
                    f"{100 * d['estimate']:+.2f} [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]",
                    f"{r['late_phase_dominance']:+.2f}",
                    f"{r['sigma_sgd_then_dpsgd']:.2f} / {r['sigma_dpsgd_then_sgd']:.2f}",
                ]
            )
        print_table(rows)
    for v in metrics["verdicts"]:
        print("  " + verdict_line(v))


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(
        SwitchConfig,
        run,
        argv,
        prog="python -m simulations.nn switch",
        description=__doc__.split("\n\n")[0],
        figure=draw_figure,
    )


if __name__ == "__main__":
    raise SystemExit(main())
