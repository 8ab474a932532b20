"""Claim 2 — clipping, not noise, does the lasting damage; unclipped GD recovers from noise.

Part A (ablation). The four modes of ``dptheory.records.Mode`` — sgd, clip (σ = 0), noise (no
clipping, noise std σ·C_ref on the sum, C_ref = ``clip_norm``), dpsgd — trained from the same seed
(same initialisation, data order and random streams), several seeds. Reported: final test accuracy
per mode (mean ± SE) and the paired differences to SGD; "clipping hurts more than noise" is the
paired difference acc(noise) − acc(clip) > 2 SE.

Part B (recovery). A noise burst — the engine's displacement of the weights at step ``burst_step``
with scale ``burst_scale`` — injected mid-training in the noise-free modes sgd and clip, each paired
with the same run without the burst. The excess training loss Δ(t) = L_burst(t) − L_plain(t) is
recorded per epoch; the recovered fraction 1 − Δ(E)/Δ(t₀) (t₀ the first epoch after the burst)
measures recovery. Claim 2 predicts near-complete recovery without clipping and less with it
(clipped steps have norm ≤ C, so a large displacement is undone at most ηC per step).

Example (the defaults; 18 runs, ~1 minute on 2 shared CPU cores)::

    $ python -m simulations.nn ablate --out results/nn/ablate
    claim 2 (ablate), mnist1d mlp width 128, 10 epochs, sigma=1.0, C=C_ref=1.0, seeds=3
    mode   test acc %    − SGD (paired) %  test loss
    -----  ------------  ----------------  -------------
    sgd    60.53 ± 0.37                    1.109 ± 0.008
    clip   38.43 ± 0.47  -22.10 ± 0.76     1.544 ± 0.004
    noise  59.60 ± 0.15  -0.93 ± 0.32      1.190 ± 0.014
    dpsgd  34.67 ± 0.44  -25.87 ± 0.07     1.742 ± 0.009
      noise − clip = 21.17 ± 0.44 %  (clipping hurts more: True)
      burst after epoch 5 in sgd: excess train loss 0.534 ± 0.068 → -0.045 ± 0.027, recovered 107.7 ± 4.3 %
      burst after epoch 5 in clip: excess train loss 0.700 ± 0.119 → 0.029 ± 0.005, recovered 95.3 ± 1.8 %
      recovered(sgd) − recovered(clip) = 12.4 ± 5.4 %  (unclipped recovers better: True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import paired_difference, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    TEST_ACC,
    TEST_LOSS,
    TRAIN_LOSS,
    NetExperiment,
    Sweep,
    curves,
    history,
    opt,
    per_seed,
    select,
    steps_per_epoch,
    train_config,
)

MODES = ("sgd", "clip", "noise", "dpsgd")
BURST_MODES = ("sgd", "clip")


@dataclass(frozen=True)
class AblateConfig(NetExperiment):
    """Four-mode paired ablation plus a mid-training noise burst (claim 2)."""

    burst_epoch: int = opt(5, "epoch at whose end the burst is injected (0 = no burst part)")
    burst_scale: float = opt(0.1, "burst: w += burst_scale * N(0, I) (the engine's burst_scale)")
    out: str = opt("results/nn/ablate", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= int(self.burst_epoch) < self.epochs:
            raise ValueError(f"burst_epoch must be in [0, epochs), got {self.burst_epoch}")
        if not self.burst_scale > 0:
            raise ValueError(f"burst_scale must be > 0, got {self.burst_scale}")


def jobs(config: AblateConfig, *, burst_step: int | None) -> list[tuple[dict, Any]]:
    out = []
    base = config.base_fields()
    for seed in config.seeds:
        for mode in MODES:
            out.append(
                (
                    {"seed": seed, "mode": mode, "burst": False},
                    train_config(**base, seed=seed, mode=mode, ref_clip_norm=config.clip_norm),
                )
            )
        if burst_step is not None:
            for mode in BURST_MODES:
                out.append(
                    (
                        {"seed": seed, "mode": mode, "burst": True},
                        train_config(
                            **base,
                            seed=seed,
                            mode=mode,
                            ref_clip_norm=config.clip_norm,
                            burst_step=burst_step,
                            burst_scale=config.burst_scale,
                        ),
                    )
                )
    return out


def analyse(config: AblateConfig, results: list[dict]) -> dict:
    seeds = config.seeds
    acc = {m: per_seed(results, seeds, TEST_ACC, mode=m, burst=False) for m in MODES}
    loss = {m: per_seed(results, seeds, TEST_LOSS, mode=m, burst=False) for m in MODES}
    noise_minus_clip = paired_difference(acc["noise"], acc["clip"])
    metrics: dict[str, Any] = {
        "claim": "2: noise errors are recovered from when not clipped; clipping has the larger impact",
        "test_accuracy": {m: summary(acc[m]) for m in MODES},
        "test_loss": {m: summary(loss[m]) for m in MODES},
        "accuracy_minus_sgd": {m: paired_difference(acc[m], acc["sgd"]) for m in MODES if m != "sgd"},
        "noise_minus_clip": noise_minus_clip,
        "clipping_hurts_more": bool(
            noise_minus_clip["n"] > 1 and noise_minus_clip["mean"] > 2 * noise_minus_clip["se"]
        ),
    }
    if config.burst_epoch > 0:
        t0 = config.burst_epoch  # history record t0 = end of the epoch whose last step follows the burst
        recovery = {}
        recovered = {}
        for mode in BURST_MODES:
            excess = np.asarray([_excess_train_loss(results, s, mode) for s in seeds])
            peak, end = excess[:, t0], excess[:, -1]
            with np.errstate(divide="ignore", invalid="ignore"):
                recovered[mode] = np.where(peak > 0, 1.0 - end / peak, np.nan)
            acc_burst = per_seed(results, seeds, TEST_ACC, mode=mode, burst=True)
            recovery[mode] = {
                "excess_train_loss_after_burst": summary(peak),
                "excess_train_loss_at_end": summary(end),
                "recovered_fraction": summary(recovered[mode]),
                "final_accuracy_burst_minus_plain": paired_difference(acc_burst, acc[mode]),
                "excess_curve_mean": excess.mean(axis=0),
            }
        diff = paired_difference(recovered["sgd"], recovered["clip"])
        metrics["burst"] = recovery
        metrics["burst_epoch"] = config.burst_epoch
        metrics["recovered_sgd_minus_clip"] = diff
        metrics["unclipped_recovers_better"] = bool(diff["n"] > 1 and diff["mean"] > 2 * diff["se"])
    metrics["criterion"] = (
        "clipping hurts more: acc(noise) - acc(clip) > 2 SE (paired); unclipped recovers better: "
        "recovered fraction (sgd) - (clip) > 2 SE (paired)"
    )
    return metrics


def _excess_train_loss(results: list[dict], seed: int, mode: str) -> np.ndarray:
    """Δ(t) = L_burst(t) − L_plain(t), per epoch, for one seed and mode (paired runs)."""
    plain = history(select(results, seed=seed, mode=mode, burst=False)[0]["result"], TRAIN_LOSS)
    burst = history(select(results, seed=seed, mode=mode, burst=True)[0]["result"], TRAIN_LOSS)
    return burst - plain


def report(config: AblateConfig, metrics: dict) -> None:
    print(
        f"claim 2 (ablate), {config.dataset} {config.model} width {config.width}, {config.epochs} epochs, "
        f"sigma={config.noise_multiplier}, C=C_ref={config.clip_norm}, seeds={len(config.seeds)}"
    )
    rows = [["mode", "test acc %", "− SGD (paired) %", "test loss"]]
    for m in MODES:
        diff = metrics["accuracy_minus_sgd"].get(m)
        rows.append(
            [
                m,
                fmt_stat(metrics["test_accuracy"][m], 100),
                "" if diff is None else fmt_stat(diff, 100),
                fmt_stat(metrics["test_loss"][m], 1, 3),
            ]
        )
    print_table(rows)
    print(
        f"  noise − clip = {fmt_stat(metrics['noise_minus_clip'], 100)} %  (clipping hurts more: "
        f"{metrics['clipping_hurts_more']})"
    )
    if "burst" in metrics:
        for mode, r in metrics["burst"].items():
            print(
                f"  burst after epoch {metrics['burst_epoch']} in {mode}: excess train loss "
                f"{fmt_stat(r['excess_train_loss_after_burst'], 1, 3)} → {fmt_stat(r['excess_train_loss_at_end'], 1, 3)}, "
                f"recovered {fmt_stat(r['recovered_fraction'], 100, 1)} %"
            )
        print(
            f"  recovered(sgd) − recovered(clip) = {fmt_stat(metrics['recovered_sgd_minus_clip'], 100, 1)} %  "
            f"(unclipped recovers better: {metrics['unclipped_recovers_better']})"
        )


def run(config: AblateConfig) -> dict:
    """Run the ablation (and the burst pair), write the result folder, print the summary."""
    check_output_dir(config.out)
    burst_step = None
    if config.burst_epoch > 0:
        # the engine displaces w just before global step burst_step: before the last step of epoch
        # `burst_epoch`, so history record `burst_epoch` sees the burst after one step
        burst_step = config.burst_epoch * steps_per_epoch(config) - 1
    results = Sweep.of("ablate", config).run(jobs(config, burst_step=burst_step))
    metrics = analyse(config, results)
    metrics["burst_step"] = burst_step
    metrics["runs"] = [{**r["tags"], "seconds": r["seconds"]} for r in results]
    arrays = {
        "test_accuracy": curves(results, TEST_ACC),
        "train_loss": curves(results, TRAIN_LOSS),
        "test_loss": curves(results, TEST_LOSS),
        "mode": np.asarray([r["tags"]["mode"] for r in results]),
        "burst": np.asarray([r["tags"]["burst"] for r in results]),
        "seed": np.asarray([r["tags"]["seed"] for r in results]),
    }
    with result_folder(config.out) as folder:
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    report(config, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(
        AblateConfig, run, argv, prog="python -m simulations.nn ablate", description=__doc__.split("\n\n")[0]
    )


if __name__ == "__main__":
    raise SystemExit(main())
