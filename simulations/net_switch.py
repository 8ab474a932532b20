"""Claim 1 — does the *late* phase decide the result? Switch between SGD and DP-SGD at epoch s.

For every switch epoch s in ``switch_epochs`` and seed, two paired runs of ``epochs`` = E epochs:

* ``sgd→dpsgd``: SGD for epochs [0, s), DP-SGD for [s, E)  (private only in its late phase);
* ``dpsgd→sgd``: DP-SGD for [0, s), SGD for [s, E)         (NOT private: a diagnosis),

plus the two baselines (all SGD, all DP-SGD). If only the late phase mattered, ``dpsgd→sgd`` would end
at the SGD accuracy and ``sgd→dpsgd`` at the DP-SGD accuracy for every s < E. The summary statistic

    late-phase dominance  L(s) = [acc(dpsgd→sgd, s) − acc(sgd→dpsgd, s)] / [acc(sgd) − acc(dpsgd)]

is +1 when only the late phase matters, −1 when only the early phase matters and 0 when both matter
equally; its numerator is reported as a paired difference (mean ± SE over seeds). "Slower early" is
the paired difference acc(dpsgd) − acc(sgd) after the first epoch.

Example (the defaults; 24 runs, ~2 minutes on 2 shared CPU cores)::

    $ python -m simulations.nn switch --out results/nn/switch
    claim 1 (switch), mnist1d mlp width 128, 10 epochs, sigma=1.0, C=1.0, seeds=3; test accuracy in %
      SGD 60.53 ± 0.37   DP-SGD 34.67 ± 0.44   paired gap 25.87 ± 0.07
      after epoch 1: DP-SGD − SGD = -2.23 ± 2.14  (slower early: False)
    s  SGD→DP        DP→SGD (not private)  DP→SGD − SGD→DP  dominance L
    -  ------------  --------------------  ---------------  -----------
    2  43.40 ± 0.36  58.73 ± 0.78          15.33 ± 1.09     +0.59
    5  53.17 ± 0.18  56.03 ± 0.86          2.87 ± 0.90      +0.11
    8  58.77 ± 0.63  47.10 ± 0.75          -11.67 ± 1.21    -0.45
      late phase decides (s=5): False
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import paired_difference, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    TEST_ACC,
    TEST_LOSS,
    NetExperiment,
    Sweep,
    curves,
    opt,
    per_seed,
    select,
    train_config,
)


@dataclass(frozen=True)
class SwitchConfig(NetExperiment):
    """Switch-epoch sweep in both directions (claim 1)."""

    switch_epochs: tuple[int, ...] = opt((2, 5, 8), "switch epochs s (0 < s < epochs)")
    out: str = opt("results/nn/switch", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        s = tuple(int(x) for x in self.switch_epochs)
        if not s or any(not 0 < x < self.epochs for x in s):
            raise ValueError(f"switch_epochs must lie strictly between 0 and epochs={self.epochs}, got {s}")
        object.__setattr__(self, "switch_epochs", tuple(sorted(set(s))))


def jobs(config: SwitchConfig) -> list[tuple[dict, Any]]:
    """(tags, TrainConfig) for the baselines and both switch directions, every seed."""
    out = []
    base = config.base_fields()
    for seed in config.seeds:
        for mode in ("sgd", "dpsgd"):
            out.append(({"seed": seed, "run": mode, "switch_epoch": None}, train_config(**base, seed=seed, mode=mode)))
        for s in config.switch_epochs:
            for first, then in (("sgd", "dpsgd"), ("dpsgd", "sgd")):
                out.append(
                    (
                        {"seed": seed, "run": f"{first}->{then}", "switch_epoch": s},
                        train_config(**base, seed=seed, mode=first, switch_epoch=s, switch_mode=then),
                    )
                )
    return out


def analyse(config: SwitchConfig, results: list[dict]) -> dict:
    """Paired statistics of claim 1 from the runs (pure: reads ``results`` only)."""
    seeds = config.seeds
    acc_sgd = per_seed(results, seeds, TEST_ACC, run="sgd")
    acc_dp = per_seed(results, seeds, TEST_ACC, run="dpsgd")
    first_epoch = {  # history record 1 = after the first epoch (record 0 is the initialisation)
        run: np.asarray([curves(select(results, seed=s, run=run), TEST_ACC)[0, 1] for s in seeds])
        for run in ("sgd", "dpsgd")
    }
    gap = summary(acc_sgd - acc_dp)
    per_switch = []
    for s in config.switch_epochs:
        late_private = per_seed(results, seeds, TEST_ACC, run="sgd->dpsgd", switch_epoch=s)
        early_private = per_seed(results, seeds, TEST_ACC, run="dpsgd->sgd", switch_epoch=s)
        numerator = paired_difference(early_private, late_private)
        dominance = numerator["mean"] / gap["mean"] if gap["mean"] not in (0.0,) else math.nan
        per_switch.append(
            {
                "switch_epoch": s,
                "acc_sgd_then_dpsgd": summary(late_private),
                "acc_dpsgd_then_sgd": summary(early_private),
                "sgd_then_dpsgd_minus_dpsgd": paired_difference(late_private, acc_dp),
                "dpsgd_then_sgd_minus_sgd": paired_difference(early_private, acc_sgd),
                "dominance_numerator": numerator,
                "late_phase_dominance": dominance,
            }
        )
    mid = min(per_switch, key=lambda r: abs(r["switch_epoch"] - config.epochs / 2))
    num = mid["dominance_numerator"]
    late_decides = bool(num["n"] > 1 and num["mean"] > 2 * num["se"] and mid["late_phase_dominance"] > 0.5)
    early = paired_difference(first_epoch["dpsgd"], first_epoch["sgd"])
    return {
        "claim": "1: DP-SGD is slower early, but the late phase decides the final result",
        "acc_sgd": summary(acc_sgd),
        "acc_dpsgd": summary(acc_dp),
        "gap_sgd_minus_dpsgd": gap,
        "first_epoch_acc_dpsgd_minus_sgd": early,
        "slower_early": bool(early["n"] > 1 and early["mean"] < -2 * early["se"]),
        "per_switch": per_switch,
        "verdict_switch_epoch": mid["switch_epoch"],
        "late_phase_decides": late_decides,
        "criterion": "at the switch epoch nearest E/2: acc(dpsgd->sgd) - acc(sgd->dpsgd) > 2 SE (paired) "
        "and late-phase dominance L > 0.5; 'dpsgd->sgd' runs are not private",
    }


def report(config: SwitchConfig, metrics: dict) -> None:
    print(
        f"claim 1 (switch), {config.dataset} {config.model} width {config.width}, {config.epochs} epochs, "
        f"sigma={config.noise_multiplier}, C={config.clip_norm}, seeds={len(config.seeds)}; test accuracy in %"
    )
    print(
        f"  SGD {fmt_stat(metrics['acc_sgd'], 100)}   DP-SGD {fmt_stat(metrics['acc_dpsgd'], 100)}   "
        f"paired gap {fmt_stat(metrics['gap_sgd_minus_dpsgd'], 100)}"
    )
    print(
        f"  after epoch 1: DP-SGD − SGD = {fmt_stat(metrics['first_epoch_acc_dpsgd_minus_sgd'], 100)}"
        f"  (slower early: {metrics['slower_early']})"
    )
    rows = [["s", "SGD→DP", "DP→SGD (not private)", "DP→SGD − SGD→DP", "dominance L"]]
    for r in metrics["per_switch"]:
        rows.append(
            [
                str(r["switch_epoch"]),
                fmt_stat(r["acc_sgd_then_dpsgd"], 100),
                fmt_stat(r["acc_dpsgd_then_sgd"], 100),
                fmt_stat(r["dominance_numerator"], 100),
                f"{r['late_phase_dominance']:+.2f}",
            ]
        )
    print_table(rows)
    print(f"  late phase decides (s={metrics['verdict_switch_epoch']}): {metrics['late_phase_decides']}")


def run(config: SwitchConfig) -> dict:
    """Run the sweep, write the result folder, print the summary; returns the metrics."""
    check_output_dir(config.out)
    job_list = jobs(config)
    results = Sweep.of("switch", config).run(job_list)
    metrics = analyse(config, results)
    metrics["runs"] = [
        {**r["tags"], "final_test_accuracy": float(curves([r], TEST_ACC)[0, -1]), "seconds": r["seconds"]}
        for r in results
    ]
    arrays = {
        "test_accuracy": curves(results, TEST_ACC),
        "test_loss": curves(results, TEST_LOSS),
        "run": np.asarray([r["tags"]["run"] for r in results]),
        "seed": np.asarray([r["tags"]["seed"] for r in results]),
        "switch_epoch": np.asarray(
            [-1 if r["tags"]["switch_epoch"] is None else r["tags"]["switch_epoch"] for r in results]
        ),
    }
    with result_folder(config.out) as folder:
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    report(config, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(
        SwitchConfig, run, argv, prog="python -m simulations.nn switch", description=__doc__.split("\n\n")[0]
    )


if __name__ == "__main__":
    raise SystemExit(main())
