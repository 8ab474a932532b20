"""Claim 4 — is magnitude pruning a useful dimension reduction for DP-SGD? A sparsity sweep.

A wide MLP is trained with DP-SGD at a fixed target ε (σ calibrated for the training run) with a
magnitude-pruning mask of sparsity p (fraction of weights fixed at zero, noise-free), for each mask
source, labelled honestly:

* ``init``    — magnitudes of the initialisation: data-independent, costs no privacy;
* ``private`` — magnitudes after an earlier DP-SGD run at ``mask_epsilon``: its mechanism is
  COMPOSED into the pruned run, whose σ is calibrated so that the *total* ε is the target;
* ``oracle``  — magnitudes after non-private training: NOT private, a diagnosis only.

Reported: test accuracy vs sparsity per source (mean ± SE over seeds), the paired difference to the
dense DP-SGD run (p = 0, same seed), the total ε of each run, and an SGD reference at p = 0. Claim 4
("heavy pruning can improve DP-SGD") holds for a source if some p ≥ 0.9 beats the dense run by
> 2 SE (paired).

Example (the defaults: 9 dense runs — SGD, DP-SGD at the target ε, DP-SGD at ``mask_epsilon`` per
seed — and 36 pruned runs; measured with ``/usr/bin/time`` on the shared 2-core machine: 2 min 22 s
wall, 156 s CPU on a quiet machine, 4 min 54 s while other jobs were running. Pruned MLPs use the
masked book-keeping per-sample norms (``simulations.nn.engine``; ~3 s per run instead of ~50 s with
vmap) and repeated accounting is memoised in ``dptheory.privacy.epsilon``)::

    $ python -m simulations.nn prune --out results/nn/prune
    claim 4 (prune), mnist1d mlp width 256 depth 2, 10 epochs, target eps=4.0, C=1.0, global magnitude masks, seeds=3; accuracy in %
      dense: SGD 62.2 ± 0.2, DP-SGD 35.0 ± 0.4
    sparsity  init acc    private acc  oracle acc  init − dense  private − dense  oracle − dense  init eps  private eps  oracle eps
    --------  ----------  -----------  ----------  ------------  ---------------  --------------  --------  -----------  ----------
    0.00      35.0 ± 0.4  35.0 ± 0.4   35.0 ± 0.4  0.0 ± 0.0     0.0 ± 0.0        0.0 ± 0.0       4.00      4.00         4.00
    0.50      35.0 ± 0.7  34.6 ± 0.4   39.8 ± 0.2  -0.0 ± 1.1    -0.4 ± 0.1       4.8 ± 0.4       4.00      4.00         inf
    0.90      30.0 ± 1.6  33.3 ± 0.4   44.3 ± 0.2  -5.0 ± 1.7    -1.7 ± 0.3       9.3 ± 0.3       4.00      4.00         inf
    0.95      9.2 ± 0.3   29.0 ± 0.2   37.9 ± 1.1  -25.8 ± 0.3   -6.0 ± 0.6       2.9 ± 1.2       4.00      4.00         inf
    0.98      9.2 ± 0.3   17.0 ± 0.5   28.6 ± 3.0  -25.8 ± 0.3   -18.0 ± 0.6      -6.4 ± 2.9      4.00      4.00         inf
      init [private (data-independent mask)]: best heavy pruning − dense = p=0.9: -5.0 ± 1.7 %; helps: False
      private [private (mask epsilon composed into the total)]: best heavy pruning − dense = p=0.9: -1.7 ± 0.3 %; helps: False
      oracle [NOT private (mask from non-private training)]: best heavy pruning − dense = p=0.9: 9.3 ± 0.3 %; helps: True

At p = 0.95 and 0.98 the ``init`` mask gives chance accuracy (the same 9.2 %: a constant
prediction): global magnitude ranking at initialisation compares |w| ≤ 1/√fan_in across layers, so
it keeps first-layer weights (fan-in 40, |w| ≤ 0.158) before any of the fan-in-256 layers
(|w| ≤ 0.0625); at p ≥ 0.95 the second hidden and the output weight matrices are pruned entirely
(checked: 0 of 65536 and 0 of 2560 kept) and the output depends on the biases only. ``--prune-scope
layer`` keeps every layer's fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import paired_difference, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    EPSILON,
    TEST_ACC,
    TEST_LOSS,
    TRAIN_LOSS,
    NetExperiment,
    Sweep,
    check_fraction_list,
    curves,
    final,
    opt,
    per_seed,
    train_config,
)

SOURCES = ("init", "private", "oracle")
HEAVY = 0.9


@dataclass(frozen=True)
class PruneConfig(NetExperiment):
    """Sparsity sweep at fixed total ε for each mask source (claim 4)."""

    width: int = opt(256, "hidden units of the (wide) MLP")
    sparsities: tuple[float, ...] = opt((0.0, 0.5, 0.9, 0.95, 0.98), "fractions of weights pruned")
    mask_sources: tuple[str, ...] = opt(SOURCES, "mask sources: init, private, oracle")
    prune_scope: str = opt(
        "global", "magnitude ranking over all weights (global) or per layer", choices=("global", "layer")
    )
    target_epsilon: float = opt(4.0, "total epsilon of every DP run (a private mask's run is composed into it)")
    mask_epsilon: float = opt(1.0, "epsilon spent by the DP run that gives the private mask (< target_epsilon)")
    out: str = opt("results/nn/prune", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        sp = tuple(sorted(set(check_fraction_list("sparsities", self.sparsities))))
        if 0.0 not in sp:
            sp = (0.0,) + sp  # the dense run is the paired reference
        object.__setattr__(self, "sparsities", sp)
        for s in self.mask_sources:
            if s not in SOURCES:
                raise ValueError(f"mask_sources must be among {', '.join(SOURCES)}, got {s!r}")
        if not self.mask_sources:
            raise ValueError("mask_sources must not be empty")
        if not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ValueError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if not 0 < self.mask_epsilon < self.target_epsilon:
            raise ValueError(
                f"mask_epsilon must lie in (0, target_epsilon={self.target_epsilon}), got {self.mask_epsilon}"
            )


def dense_jobs(config: PruneConfig, folder: Path) -> list[tuple[dict, Any]]:
    """The dense runs of every seed, saved (with ``model.pt``) so that they can serve as mask sources.

    * SGD — the ``oracle`` mask source (not private) and the non-private reference;
    * DP-SGD at ``target_epsilon`` — the dense reference every pruned run is paired with;
    * DP-SGD at ``mask_epsilon`` — the ``private`` mask source; the engine composes its mechanism
      into the pruned run and calibrates σ so that the *total* is ``target_epsilon``.
    """
    out = []
    for seed in config.seeds:
        out.append(
            (
                {"seed": seed, "mode": "sgd", "sparsity": 0.0, "source": "none"},
                train_config(**config.base_fields(seed=seed, mode="sgd", out=str(folder / f"sgd-seed{seed}"))),
            )
        )
        out.append(
            (
                {"seed": seed, "mode": "dpsgd", "sparsity": 0.0, "source": "none"},
                train_config(
                    **config.base_fields(
                        seed=seed,
                        mode="dpsgd",
                        target_epsilon=config.target_epsilon,
                        out=str(folder / f"dpsgd-seed{seed}"),
                    )
                ),
            )
        )
        if "private" in config.mask_sources:
            out.append(
                (
                    {"seed": seed, "mode": "dpsgd", "sparsity": 0.0, "source": "mask-run"},
                    train_config(
                        **config.base_fields(
                            seed=seed,
                            mode="dpsgd",
                            target_epsilon=config.mask_epsilon,
                            out=str(folder / f"mask-dpsgd-seed{seed}"),
                        )
                    ),
                )
            )
    return out


def pruned_jobs(config: PruneConfig, folder: Path) -> list[tuple[dict, Any]]:
    """DP-SGD at the target ε with a magnitude mask, for every sparsity > 0, source and seed."""
    out = []
    for seed in config.seeds:
        mask_runs = {
            "init": None,
            "private": str(folder / f"mask-dpsgd-seed{seed}"),
            "oracle": str(folder / f"sgd-seed{seed}"),
        }
        for p in config.sparsities[1:]:
            for source in config.mask_sources:
                out.append(
                    (
                        {"seed": seed, "mode": "dpsgd", "sparsity": p, "source": source},
                        train_config(
                            **config.base_fields(
                                seed=seed,
                                mode="dpsgd",
                                target_epsilon=config.target_epsilon,
                                sparsity=p,
                                prune_scope=config.prune_scope,
                                mask_source=source,
                                mask_run=mask_runs[source],
                            )
                        ),
                    )
                )
    return out


def analyse(config: PruneConfig, results: list[dict]) -> dict:
    seeds = config.seeds
    dense = per_seed(results, seeds, TEST_ACC, mode="dpsgd", sparsity=0.0, source="none")
    sgd = per_seed(results, seeds, TEST_ACC, mode="sgd")
    dense_eps = per_seed(results, seeds, EPSILON, mode="dpsgd", sparsity=0.0, source="none")
    per_source: dict[str, Any] = {}
    verdict: dict[str, Any] = {}
    for source in config.mask_sources:
        rows = [
            {
                "sparsity": 0.0,
                "test_accuracy": summary(dense),
                "minus_dense": paired_difference(dense, dense),
                "epsilon": summary(dense_eps),
            }
        ]
        best = None
        for p in config.sparsities[1:]:
            acc = per_seed(results, seeds, TEST_ACC, sparsity=p, source=source)
            eps = per_seed(results, seeds, EPSILON, sparsity=p, source=source)
            diff = paired_difference(acc, dense)
            loss = per_seed(results, seeds, TEST_LOSS, sparsity=p, source=source)
            rows.append(
                {
                    "sparsity": p,
                    "test_accuracy": summary(acc),
                    "test_loss": summary(loss),
                    "minus_dense": diff,
                    "epsilon": _epsilon_summary(eps),
                }
            )
            if p >= HEAVY and (best is None or diff["mean"] > best["minus_dense"]["mean"]):
                best = rows[-1]
        per_source[source] = rows
        helps = bool(
            best is not None
            and best["minus_dense"]["n"] > 1
            and best["minus_dense"]["mean"] > 2 * best["minus_dense"]["se"]
        )
        verdict[source] = {
            "best_heavy_sparsity": None if best is None else best["sparsity"],
            "best_heavy_minus_dense": None if best is None else best["minus_dense"],
            "heavy_pruning_helps": helps,
            "privacy": {
                "init": "private (data-independent mask)",
                "private": "private (mask epsilon composed into the total)",
                "oracle": "NOT private (mask from non-private training)",
            }[source],
        }
    mask_run = [r for r in results if r["tags"]["source"] == "mask-run"]
    return {
        "claim": "4: magnitude pruning is a suitable dimension reduction; heavy pruning can improve DP-SGD",
        "sgd_dense": summary(sgd),
        "dpsgd_dense": summary(dense),
        "per_source": per_source,
        "private_mask_run_accuracy": summary([final(r["result"], TEST_ACC) for r in mask_run]),
        "verdict": verdict,
        "criterion": f"some sparsity >= {HEAVY} beats the dense DP-SGD run by > 2 SE (paired by seed)",
    }


def _epsilon_summary(eps: np.ndarray) -> dict[str, float]:
    """Summary of ε over seeds; ``inf`` (not private) when any run is not private."""
    if np.any(np.isinf(eps)):
        return {"mean": math.inf, "se": math.nan, "n": int(eps.size)}
    return summary(eps)


def report(config: PruneConfig, metrics: dict) -> None:
    print(
        f"claim 4 (prune), {config.dataset} mlp width {config.width} depth {config.depth}, {config.epochs} epochs, "
        f"target eps={config.target_epsilon}, C={config.clip_norm}, {config.prune_scope} magnitude masks, "
        f"seeds={len(config.seeds)}; accuracy in %"
    )
    print(f"  dense: SGD {fmt_stat(metrics['sgd_dense'], 100, 1)}, DP-SGD {fmt_stat(metrics['dpsgd_dense'], 100, 1)}")
    rows = [
        ["sparsity"]
        + [f"{s} acc" for s in config.mask_sources]
        + [f"{s} − dense" for s in config.mask_sources]
        + [f"{s} eps" for s in config.mask_sources]
    ]
    for i, p in enumerate(config.sparsities):
        row = [f"{p:.2f}"]
        row += [fmt_stat(metrics["per_source"][s][i]["test_accuracy"], 100, 1) for s in config.mask_sources]
        row += [fmt_stat(metrics["per_source"][s][i]["minus_dense"], 100, 1) for s in config.mask_sources]
        row += [f"{float(metrics['per_source'][s][i]['epsilon']['mean']):.2f}" for s in config.mask_sources]
        rows.append(row)
    print_table(rows)
    for s, v in metrics["verdict"].items():
        best = v["best_heavy_minus_dense"]
        txt = "n/a" if best is None else f"p={v['best_heavy_sparsity']}: {fmt_stat(best, 100, 1)} %"
        print(f"  {s} [{v['privacy']}]: best heavy pruning − dense = {txt}; helps: {v['heavy_pruning_helps']}")


def run(config: PruneConfig) -> dict:
    check_output_dir(config.out)
    with result_folder(config.out) as folder:
        # the dense runs are written (model.pt) inside the result folder: they are the mask sources
        mask_dir = folder / "mask_runs"
        results = Sweep.of("prune dense", config).run(dense_jobs(config, mask_dir), saved=True)
        results += Sweep.of("prune", config).run(pruned_jobs(config, mask_dir))
        metrics = analyse(config, results)
        metrics["runs"] = [
            {
                **r["tags"],
                "epsilon": final(r["result"], EPSILON),
                "seconds": r["seconds"],
                "privacy": r["result"].get("privacy", {}).get("label"),
            }
            for r in results
        ]
        arrays = {
            "test_accuracy": curves(results, TEST_ACC),
            "train_loss": curves(results, TRAIN_LOSS),
            "sparsity": np.asarray([r["tags"]["sparsity"] for r in results]),
            "source": np.asarray([r["tags"]["source"] for r in results]),
            "mode": np.asarray([r["tags"]["mode"] for r in results]),
            "seed": np.asarray([r["tags"]["seed"] for r in results]),
        }
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    report(config, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(PruneConfig, run, argv, prog="python -m simulations.nn prune", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
