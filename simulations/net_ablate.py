"""Claim 2 — clipping, not noise, does the lasting damage; unclipped GD recovers from noise.

Arms (each tuned on the validation split, ``simulations.net_tune``; paired by seed):

* ``sgd`` — no clipping, no noise;
* ``clip`` — clip-only (σ = 0), lr and C tuned;
* ``dpsgd`` — DP-SGD at ``target_epsilon`` (σ calibrated, RDP, conservative), lr and C tuned;
* ``dpsgd_normalised`` — DP-SGD with normalised ("automatic") clipping at the same ε, the grid over
  η·C (Bu et al. 2022, arXiv 2206.07136v3 §4, AUTO-S: the engine's ``clip_rule="normalised"``);
* ``noise_C`` / ``noise_median`` / ``noise_q90`` — noise-only: no clipping, noise std σ·C_ref on
  the sum with DP-SGD's σ and C_ref = the DP arm's chosen C, the median, or the 90th percentile of
  the per-sample gradient norms, lr tuned. With C_ref = C while the norms are many times C the
  noise is that many times *smaller relative to the gradients* than DP-SGD's; C_ref at the median
  norm gives the per-sample signal and the noise the same ratio as in a fully clipped DP-SGD step;
* ``noise_snr`` — C_ref = median and lr = lr_DP·C_DP/C_ref (derived, not tuned): the same noise
  displacement per step and the same per-sample signal size as the DP-SGD arm, so it differs from
  DP-SGD only in the direction of the clipped sum (the per-sample re-weighting of clipping).

C_ref is measured from the step log of the chosen SGD tuning run (mean over steps of the batch
median / 90th percentile of ‖g_i‖): a statistic of the *private* training data. Noise-only is not
private anyway (no clipping: unbounded sensitivity); the record says so.

Recovery: a displacement w += ``burst_scale``·N(0, I) before the last step of epoch ``burst_epoch``
in the arms sgd and clip (their tuned values), each paired with the same run without it; the
recovered fraction is 1 − Δ(E)/Δ(t₀) of the excess training loss Δ.

Verdicts (``metrics["verdicts"]``, paired two-sided t-tests, df = n − 1, Holm within claim 2): for
every noise arm "acc(noise arm) − acc(clip) > 0" (clipping hurts more than noise; the primary one,
``metrics["verdict"]``, uses C_ref = median) and "recovered(sgd) − recovered(clip) > 0".

Example (the CPU default: mnist1d n = 36 000 (10 000 test, 2 000 validation), MLP 128×2, 4 epochs
of B = 1024, ε = 4, 5 seeds, lr grid 3 points, C fixed at 1 — in the fully clipped regime only η·C
matters, so the lr grid covers it; the GPU stage tunes C too)::

    $ python -m simulations.nn ablate --out results/nn/ablate
    claim 2 (ablate), mnist1d n=36000 mlp-128x2, 4 epochs, B=1024; DP arms at eps=4.0 (sigma=0.851); C_ref median=5.39, q90=13.53; seeds=5
    arm               chosen                                     test acc %    - SGD (paired) %  95% CI
    ----------------  -----------------------------------------  ------------  ----------------  ----------------
    sgd               lr=0.5                                     73.16 ± 0.49
    clip              lr=12.5                                    77.21 ± 0.71  +4.05             [+2.21, +5.89]
    dpsgd             lr=2.5                                     60.36 ± 0.12  -12.80            [-14.23, -11.36]
    dpsgd_normalised  clip_rule=normalised, clip_norm=1, lr=2.5  60.41 ± 0.15  -12.75            [-14.00, -11.50]
    noise_C           lr=0.5                                     73.08 ± 0.53  -0.08             [-0.60, +0.45]
    noise_median      lr=0.5                                     70.24 ± 0.52  -2.92             [-3.74, -2.10]
    noise_q90         lr=0.1                                     57.71 ± 0.29  -15.44            [-16.50, -14.39]
    noise_snr          (derived)                                 70.44 ± 0.57  -2.71             [-3.55, -1.87]
      clipping hurts more than noise: acc(noise_C) - acc(clip) > 0: -4.13 [-5.92, -2.33] points, p_holm=0.0062, n=5 -> held: False
      clipping hurts more than noise: acc(noise_median) - acc(clip) > 0: -6.97 [-8.10, -5.84] points, p_holm=0.00025, n=5 -> held: False
      clipping hurts more than noise: acc(noise_q90) - acc(clip) > 0: -19.49 [-21.06, -17.93] points, p_holm=2.1e-05, n=5 -> held: False
      clipping hurts more than noise: acc(noise_snr) - acc(clip) > 0: -6.76 [-7.84, -5.69] points, p_holm=0.00025, n=5 -> held: False
      unclipped GD recovers more of a displacement: recovered(sgd) - recovered(clip) > 0: -7.93 [-26.16, +10.31] percentage points of the excess loss, p_holm=0.29, n=5 -> held: False
    (measured: 92 s CPU serially; 91 s wall with --workers 2 inside the study on the shared 2-core machine)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import claim_family, paired_t, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    TEST_ACC,
    TEST_LOSS,
    TRAIN_LOSS,
    NetExperiment,
    Sweep,
    calibrated_sigma,
    check_sweep,
    curves,
    draw_figure,
    history,
    opt,
    per_seed,
    select,
    steps_per_epoch,
    task_label,
    train_config,
    training_set_size,
    verdict_line,
)
from simulations.net_tune import Arm, chosen_fields, random_search_epsilon, tune

FIRST_ARMS = ("sgd", "clip", "dpsgd", "dpsgd_normalised")
NOISE_ARMS = ("noise_C", "noise_median", "noise_q90", "noise_snr")
ARMS = FIRST_ARMS + NOISE_ARMS
BURST_ARMS = ("sgd", "clip")
PRIMARY_NOISE_ARM = "noise_median"


@dataclass(frozen=True)
class AblateConfig(NetExperiment):
    """Tuned paired ablation (sgd, clip, dpsgd, normalised, four noise-only calibrations) plus a burst (claim 2)."""

    dataset: str = opt("mnist1d", "dataset name (see simulations.nn.data)")
    n_train: int | None = opt(36000, "training examples")
    n_test: int | None = opt(10000, "test examples")
    n_val: int = opt(2000, "validation examples (tuning selects on them)")
    epochs: int = opt(4, "training epochs")
    batch_size: int = opt(1024, "expected batch size B")
    lr_grid: tuple[float, ...] = opt((0.1, 0.5, 2.5), "learning rates tuned per arm (normalised arm: eta*C)")
    target_epsilon: float = opt(4.0, "epsilon of the DP-SGD arms (sigma calibrated, RDP)")
    burst_epoch: int = opt(2, "epoch at whose end the burst is injected (0 = no burst part)")
    burst_scale: float = opt(0.1, "burst: w += burst_scale * N(0, I) (the engine's burst_scale)")
    out: str = opt("results/nn/ablate", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= int(self.burst_epoch) < self.epochs:
            raise ValueError(f"burst_epoch must be in [0, epochs), got {self.burst_epoch}")
        if not (math.isfinite(self.burst_scale) and self.burst_scale > 0):
            raise ValueError(f"burst_scale must be > 0, got {self.burst_scale}")
        if not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ValueError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        self.check_run_count(self.planned_runs())

    def probe_runs(self) -> list[dict[str, Any]]:
        """The shared extremes, the normalised arm's lr = η·C / C, the calibrated DP arm and a burst."""
        from simulations.net_tune import NORMALISED_CLIP

        top = max((self.lr, *self.lr_grid))
        return [
            *super().probe_runs(),
            {"mode": "dpsgd", "clip_rule": "normalised", "clip_norm": NORMALISED_CLIP, "lr": top / NORMALISED_CLIP},
            {"mode": "dpsgd", "target_epsilon": self.target_epsilon},
            {"mode": "noise", "ref_clip_norm": self.clip_norm},
            {"mode": "sgd", "burst_step": 0, "burst_scale": self.burst_scale},
        ]

    def planned_runs(self) -> int:
        lr, clip = max(len(self.lr_grid), 1), max(len(self.clip_grid), 1)
        grids = {"sgd": lr, "clip": lr * clip, "dpsgd": lr * clip, "dpsgd_normalised": lr}
        grids.update(noise_C=lr, noise_median=lr, noise_q90=lr, noise_snr=1)
        tuning = sum(g for g in grids.values() if g > 1) * len(self.tune_seeds)
        burst = len(BURST_ARMS) if self.burst_epoch > 0 else 0
        return tuning + (len(ARMS) + burst) * len(self.seeds)


def first_arms(config: AblateConfig, *, sigma: float) -> list[Arm]:
    """sgd, clip, dpsgd and normalised DP-SGD; the DP arms get σ calibrated for ``target_epsilon``."""
    dp = {"mode": "dpsgd", "noise_multiplier": sigma}
    return [
        Arm("sgd", {"mode": "sgd"}),
        Arm("clip", {"mode": "clip"}, tune_clip=True),
        Arm("dpsgd", dp, tune_clip=True, private=True),
        Arm("dpsgd_normalised", dp, normalised=True, private=True),
    ]


def noise_arms(config: AblateConfig, *, sigma: float, clip_dp: float, lr_dp: float, refs: dict) -> list[Arm]:
    """The noise-only arms, given DP-SGD's σ and chosen (C, lr) and the measured norm quantiles."""
    base = {"mode": "noise", "noise_multiplier": sigma}
    return [
        Arm("noise_C", {**base, "ref_clip_norm": clip_dp}),
        Arm("noise_median", {**base, "ref_clip_norm": refs["median"]}),
        Arm("noise_q90", {**base, "ref_clip_norm": refs["q90"]}),
        Arm(
            "noise_snr",
            {**base, "ref_clip_norm": refs["median"], "lr": lr_dp * clip_dp / refs["median"]},
            tune_lr=False,
        ),
    ]


def norm_quantiles(results: list[dict], arm: str, point: int | None) -> dict[str, float]:
    """Mean over steps (and tune seeds) of the batch median / q90 of ‖g_i‖ in the runs of ``arm``."""
    runs = select(results, arm=arm) if point is None else select(results, arm=arm, point=point)
    med = [np.nanmean(r["result"]["steps"]["norm_q50"]) for r in runs]
    q90 = [np.nanmean(r["result"]["steps"]["norm_q90"]) for r in runs]
    return {"median": float(np.mean(med)), "q90": float(np.mean(q90))}


def eval_jobs(config: AblateConfig, arms: list[Arm], records: dict, *, burst_step: int | None) -> list:
    out = []
    for seed in config.seeds:
        for arm in arms:
            fields = config.base_fields(**chosen_fields(records, arm), seed=seed)
            out.append(({"seed": seed, "arm": arm.name, "burst": False}, train_config(**fields)))
            if burst_step is not None and arm.name in BURST_ARMS:
                fields = {**fields, "burst_step": burst_step, "burst_scale": config.burst_scale}
                out.append(({"seed": seed, "arm": arm.name, "burst": True}, train_config(**fields)))
    return out


def _excess_train_loss(results: list[dict], seed: int, arm: str) -> np.ndarray:
    """Δ(t) = L_burst(t) − L_plain(t), per epoch, for one seed and arm (paired runs)."""
    plain = history(select(results, seed=seed, arm=arm, burst=False)[0]["result"], TRAIN_LOSS)
    burst = history(select(results, seed=seed, arm=arm, burst=True)[0]["result"], TRAIN_LOSS)
    return burst - plain


def analyse(config: AblateConfig, results: list[dict], *, task: str = "") -> dict:
    """Paired statistics and the claim-2 verdicts from the evaluation runs (pure)."""
    seeds = config.seeds
    arms = [a for a in ARMS if select(results, arm=a)]
    acc = {a: per_seed(results, seeds, TEST_ACC, arm=a, burst=False) for a in arms}
    loss = {a: per_seed(results, seeds, TEST_LOSS, arm=a, burst=False) for a in arms}
    metrics: dict[str, Any] = {
        "claim": "2: noise errors are recovered from when not clipped; clipping has the larger impact",
        "task": task,
        "test_accuracy": {a: summary(acc[a].tolist()) for a in arms},
        "test_loss": {a: summary(loss[a].tolist()) for a in arms},
        "accuracy_minus_sgd": {a: paired_t(acc[a].tolist(), acc["sgd"].tolist()) for a in arms if a != "sgd"},
        "normalised_minus_flat": paired_t(acc["dpsgd_normalised"].tolist(), acc["dpsgd"].tolist())
        if "dpsgd_normalised" in acc
        else None,
    }
    specs = []
    for a in [x for x in NOISE_ARMS if x in acc]:
        test = paired_t(acc[a].tolist(), acc["clip"].tolist())
        metrics.setdefault("noise_minus_clip", {})[a] = test
        specs.append(
            {
                "claim": "2",
                "statement": f"clipping hurts more than noise: acc({a}) - acc(clip) > 0",
                "test": test,
                "held_if": "greater",
                "unit": "points",
                "scale": 100.0,
                "task": task,
                "key": f"noise_minus_clip.{a}",
            }
        )
    if config.burst_epoch > 0 and select(results, burst=True):
        t0 = config.burst_epoch
        recovery, recovered = {}, {}
        for arm in BURST_ARMS:
            excess = np.asarray([_excess_train_loss(results, s, arm) for s in seeds])
            peak, end = excess[:, t0], excess[:, -1]
            with np.errstate(divide="ignore", invalid="ignore"):
                recovered[arm] = np.where(peak > 0, 1.0 - end / peak, np.nan)
            acc_burst = per_seed(results, seeds, TEST_ACC, arm=arm, burst=True)
            recovery[arm] = {
                "excess_train_loss_after_burst": summary(peak.tolist()),
                "excess_train_loss_at_end": summary(end.tolist()),
                "recovered_fraction": summary(recovered[arm].tolist()),
                "final_accuracy_burst_minus_plain": paired_t(acc_burst.tolist(), acc[arm].tolist()),
                "excess_curve_mean": excess.mean(axis=0),
            }
        test = paired_t(recovered["sgd"].tolist(), recovered["clip"].tolist())
        metrics["burst"] = recovery
        metrics["burst_epoch"] = config.burst_epoch
        metrics["recovered_sgd_minus_clip"] = test
        specs.append(
            {
                "claim": "2",
                "statement": "unclipped GD recovers more of a displacement: recovered(sgd) - recovered(clip) > 0",
                "test": test,
                "held_if": "greater",
                "unit": "percentage points of the excess loss",
                "scale": 100.0,
                "task": task,
                "key": "recovered_sgd_minus_clip",
            }
        )
    verdicts = claim_family(specs)
    metrics["verdicts"] = verdicts
    metrics["verdict"] = next((v for v in verdicts if v["key"] == f"noise_minus_clip.{PRIMARY_NOISE_ARM}"), None)
    metrics["criterion"] = (
        "paired two-sided t-tests over seeds (df = n - 1), 95 % CIs, Holm-adjusted within claim 2; "
        "held = adjusted p <= 0.05 with the estimate in the claimed direction"
    )
    return metrics


def run(config: AblateConfig) -> dict:
    """Tune every arm, run the paired evaluation (and the burst pairs), write the folder, print."""
    check_output_dir(config.out)
    check_sweep(config, config.planned_runs())
    spe = steps_per_epoch(config)
    burst_step = config.burst_epoch * spe - 1 if config.burst_epoch > 0 else None
    task = task_label(config)
    # σ of the DP-SGD arms (same q and T for all); the noise-only arms use it too
    sigma = calibrated_sigma(config, target_epsilon=config.target_epsilon)
    arms1 = first_arms(config, sigma=sigma)
    records = tune(config, arms1, label="ablate")
    clip_dp = float(records["dpsgd"]["chosen"].get("clip_norm", config.clip_norm))
    lr_dp = float(records["dpsgd"]["chosen"].get("lr", config.lr))
    refs = _reference_norms(config, records, arms1)
    arms2 = noise_arms(config, sigma=sigma, clip_dp=clip_dp, lr_dp=lr_dp, refs=refs)
    records.update(tune(config, arms2, label="ablate noise"))
    arms = arms1 + arms2
    results = Sweep.of("ablate", config).run(eval_jobs(config, arms, records, burst_step=burst_step))
    metrics = analyse(config, results, task=task)
    n = training_set_size(config)
    for name in ("dpsgd", "dpsgd_normalised"):
        if records[name]["privacy"] is not None:
            records[name]["privacy"]["epsilon_random_search_rdp"] = random_search_epsilon(
                noise_multiplier=sigma,
                sample_rate=config.batch_size / n,
                steps=spe * config.epochs,
                candidates=records[name]["privacy"]["candidates"],
                delta=config.delta,
            )
    metrics.update(
        tuning=records,
        noise_multiplier=sigma,
        reference_norms=refs,
        reference_norms_source=(
            "mean over steps of the batch median / q90 of per-sample norms in the chosen SGD tuning runs: "
            "a statistic of the private training data (noise-only arms are not private anyway)"
        ),
        burst_step=burst_step,
        threads=config.threads,
        runs=[
            {
                **r["tags"],
                "seconds": r["seconds"],
                "privacy": r["result"]["privacy"]["label"],
                "epsilon_rdp": r["result"]["privacy"].get("epsilon_rdp"),
                "epsilon_pld": r["result"]["privacy"].get("epsilon_pld"),
            }
            for r in results
        ],
    )
    arrays = {
        "test_accuracy": curves(results, TEST_ACC),
        "train_loss": curves(results, TRAIN_LOSS),
        "test_loss": curves(results, TEST_LOSS),
        "arm": np.asarray([r["tags"]["arm"] for r in results]),
        "burst": np.asarray([r["tags"]["burst"] for r in results]),
        "seed": np.asarray([r["tags"]["seed"] for r in results]),
    }
    with result_folder(config.out) as folder:
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    report(config, metrics)
    return metrics


def _reference_norms(config: AblateConfig, records: dict, arms: list[Arm]) -> dict[str, float]:
    """Median / q90 of per-sample norms along SGD training (chosen tuning point, or one pilot run)."""
    sgd = next(a for a in arms if a.name == "sgd")
    fields = config.base_fields(**chosen_fields(records, sgd), seed=config.tune_seeds[0])
    pilot = Sweep.of("ablate norms", config).run([({"arm": "sgd"}, train_config(**fields))])
    return norm_quantiles(pilot, "sgd", None)


def report(config: AblateConfig, metrics: dict) -> None:
    print(
        f"claim 2 (ablate), {metrics['task']}; DP arms at eps={config.target_epsilon} "
        f"(sigma={metrics['noise_multiplier']:.3f}); C_ref median={metrics['reference_norms']['median']:.2f}, "
        f"q90={metrics['reference_norms']['q90']:.2f}; seeds={len(config.seeds)}"
    )
    rows = [["arm", "chosen", "test acc %", "- SGD (paired) %", "95% CI"]]
    for a, stat in metrics["test_accuracy"].items():
        diff = metrics["accuracy_minus_sgd"].get(a)
        ch = metrics["tuning"][a]["chosen"] if "tuning" in metrics else {}
        rows.append(
            [
                a,
                ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in ch.items())
                + ("" if metrics["tuning"][a]["tuned"] else " (derived)"),
                fmt_stat(stat, 100),
                "" if diff is None else f"{100 * diff['estimate']:+.2f}",
                "" if diff is None else f"[{100 * diff['ci95'][0]:+.2f}, {100 * diff['ci95'][1]:+.2f}]",
            ]
        )
    print_table(rows)
    for v in metrics["verdicts"]:
        print("  " + verdict_line(v))


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(
        AblateConfig,
        run,
        argv,
        prog="python -m simulations.nn ablate",
        description=__doc__.split("\n\n")[0],
        figure=draw_figure,
    )


if __name__ == "__main__":
    raise SystemExit(main())
