"""Claim 4 — is magnitude pruning a suitable dimension reduction for DP-SGD? Mask sources at fixed ε.

Every DP run spends the same total ``target_epsilon`` (σ calibrated, RDP, conservative; a private
mask's mechanism is composed into it). At each sparsity p (fraction of the weight-matrix entries
fixed at zero, noise-free; biases kept) the pruned DP-SGD arms differ in where the mask comes from:

* ``random``       — uniformly random, per layer: data-independent, free (Adamczewski & Park 2023,
  arXiv 2303.04612v1 find random ≈ magnitude selection under DP);
* ``init_layer`` / ``init_global`` — magnitudes at initialisation, per layer / over all layers: free;
* ``public``       — magnitudes after SGD on the **public split** (``n_public`` examples carved out
  of the training pool, disjoint from train, validation and test; ``public_epochs`` epochs of
  ``public_batch_size``): no private example is touched, so the pruned run is labelled private;
* ``private@ε_m``  — magnitudes after a DP-SGD run at ε_m on the private split (for each ε_m in
  ``mask_epsilons``); the pruned run's σ is calibrated so that mask run + pruned run compose to
  ``target_epsilon``;
* ``oracle``       — magnitudes after SGD on the private split: NOT private (the engine never labels
  such a run private), a diagnosis of what mask information could give.

Plus, per sparsity, ``dense_small``: a dense DP-SGD MLP whose width gives about the same number of
parameters as the pruned network keeps — it separates dimension reduction from the information in
the mask. The references are dense SGD and dense DP-SGD at ``target_epsilon``.

Tuning: the dense arms and ``dense_small`` are tuned on the validation split; the pruned arms get
their lr re-tuned per sparsity (on the ``public`` mask; ``--tune-per-source`` tunes every source
separately). Tuning is declared, not accounted (``simulations.net_tune``).

Verdicts (paired two-sided t-tests over seeds, df = n − 1, Holm within claim 4): for every private
source at the heaviest sparsity ≥ 0.9, "acc(pruned) − acc(dense DP-SGD) > 0"; the primary
(``metrics["verdict"]``) is the ``public`` mask; and "acc(public) − acc(dense_small) > 0" (the mask
carries information beyond the parameter count).

Example (the CPU default: mnist1d n = 36 000, MLP 128×2, 4 epochs of B = 1024, ε = 4, p = 0.9,
ε_m = 1, sources random / init_layer / public / private / oracle (``init_global`` collapses to
chance at high sparsity: global ranking at initialisation prunes whole fan-in-128 layers), 5 seeds;
the GPU stage sweeps p ∈ {0.5, 0.9, 0.98}, ε_m ∈ {0.5, 1, 2}, a width-1024 MLP, all sources, each
tuned)::

    $ python -m simulations.nn prune --out results/nn/prune
    claim 4 (prune), mnist1d n=36000 mlp-128x2, 4 epochs, B=1024; total eps=4.0 for every DP run; seeds=5; accuracy in %
      dense: SGD 73.6 ± 0.1, DP-SGD 60.6 ± 0.2
    arm              lr    test acc    - dense DP [95% CI]   eps (rdp)  privacy
    ---------------  ----  ----------  --------------------  ---------  ----------------------------------------
    dense_small@0.9  2.5   55.3 ± 1.2  -5.3 [-8.9, -1.8]     4.00       private
    random@0.9       12.5  49.4 ± 1.2  -11.2 [-14.7, -7.7]   4.00       private
    init_layer@0.9   12.5  49.7 ± 0.6  -11.0 [-12.3, -9.7]   4.00       private
    public@0.9       12.5  52.4 ± 0.7  -8.3 [-10.4, -6.2]    4.00       private
    private@1/p=0.9  12.5  44.2 ± 1.4  -16.4 [-20.8, -12.1]  4.00       private
    oracle@0.9       12.5  54.4 ± 1.0  -6.2 [-9.5, -2.9]     inf        not private: oracle mask from non-privat
      heavy pruning improves DP-SGD: acc(random mask, p=0.9) - acc(dense) > 0: -11.20 [-14.74, -7.66] points, p_holm=0.0019, n=5 -> held: False
      heavy pruning improves DP-SGD: acc(init_layer mask, p=0.9) - acc(dense) > 0: -10.98 [-12.27, -9.69] points, p_holm=9.5e-05, n=5 -> held: False
      heavy pruning improves DP-SGD: acc(public mask, p=0.9) - acc(dense) > 0: -8.28 [-10.41, -6.15] points, p_holm=0.0017, n=5 -> held: False
      heavy pruning improves DP-SGD: acc(private@1 mask, p=0.9) - acc(dense) > 0: -16.44 [-20.80, -12.08] points, p_holm=0.0017, n=5 -> held: False
      the magnitude mask carries information beyond the parameter count: acc(public mask, p=0.9) - acc(dense width 31) > 0: -2.96 [-5.37, -0.56] points, p_holm=0.027, n=5 -> held: False
    (measured: 430 s CPU serially; 102 s wall with --workers 2 inside the study on the shared 2-core machine)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulations.common.results import check_output_dir, result_folder, write_results
from simulations.common.stats import claim_family, paired_t, summary
from simulations.common.tables import fmt_stat, print_table
from simulations.net_common import (
    EPSILON,
    TEST_ACC,
    TRAIN_LOSS,
    NetExperiment,
    Sweep,
    calibrated_sigma,
    check_fraction_list,
    check_sweep,
    curves,
    draw_figure,
    final,
    opt,
    per_seed,
    select,
    steps_per_epoch,
    task_label,
    train_config,
    training_set_size,
    verdict_line,
)
from simulations.net_tune import Arm, chosen_fields, tune

SOURCES = ("random", "init_layer", "init_global", "public", "private", "oracle")
HEAVY = 0.9


@dataclass(frozen=True)
class PruneConfig(NetExperiment):
    """Sparsity sweep at fixed total ε per mask source, with a same-size dense network (claim 4)."""

    n_train: int | None = opt(36000, "training examples")
    n_test: int | None = opt(10000, "test examples")
    n_val: int = opt(2000, "validation examples (tuning selects on them)")
    n_public: int = opt(2000, "public examples (disjoint from train, validation and test) for the public mask")
    width: int = opt(128, "hidden units of the MLP")
    epochs: int = opt(4, "training epochs")
    batch_size: int = opt(1024, "expected batch size B")
    lr_grid: tuple[float, ...] = opt((0.1, 0.5, 2.5), "learning rates tuned per arm")
    sparsities: tuple[float, ...] = opt((0.9,), "fractions of weights pruned (> 0)")
    mask_sources: tuple[str, ...] = opt(
        ("random", "init_layer", "public", "private", "oracle"), "mask sources: " + ", ".join(SOURCES)
    )
    mask_epsilons: tuple[float, ...] = opt((1.0,), "epsilon of each private mask run (< target_epsilon)")
    target_epsilon: float = opt(4.0, "total epsilon of every DP run (a private mask's run is composed into it)")
    public_epochs: int = opt(10, "epochs of the SGD run on the public split that gives the public mask")
    public_batch_size: int = opt(256, "batch size of that public SGD run")
    public_lr: float = opt(0.1, "learning rate of that public SGD run")
    dense_small: bool = opt(True, "add a dense MLP with about the kept parameter count per sparsity")
    tune_per_source: bool = opt(False, "tune the lr of every pruned source separately (else on the public mask)")
    out: str = opt("results/nn/prune", "result folder (replaced atomically)")

    def __post_init__(self) -> None:
        super().__post_init__()
        sp = tuple(sorted(set(check_fraction_list("sparsities", self.sparsities))))
        if not sp or sp[0] <= 0:
            raise ValueError(f"sparsities must be in (0, 1), got {self.sparsities}")
        object.__setattr__(self, "sparsities", sp)
        if not self.mask_sources:
            raise ValueError("mask_sources must not be empty")
        for s in self.mask_sources:
            if s not in SOURCES:
                raise ValueError(f"mask_sources must be among {', '.join(SOURCES)}, got {s!r}")
        if not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ValueError(f"target_epsilon must be > 0, got {self.target_epsilon}")
        eps = tuple(sorted({float(e) for e in self.mask_epsilons}))
        if "private" in self.mask_sources and (not eps or any(not 0 < e < self.target_epsilon for e in eps)):
            raise ValueError(
                f"mask_epsilons must lie in (0, target_epsilon={self.target_epsilon}), got {self.mask_epsilons}"
            )
        object.__setattr__(self, "mask_epsilons", eps)
        if "public" in self.mask_sources and self.n_public < 1:
            raise ValueError(f"the public mask needs n_public >= 1, got {self.n_public}")
        if "public" not in self.mask_sources and not self.tune_per_source and self.tuned:
            raise ValueError(
                "pruned arms are tuned on the public mask: keep 'public' in mask_sources or --tune-per-source"
            )
        for name in ("public_epochs", "public_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.public_lr) and self.public_lr > 0):
            raise ValueError(f"public_lr must be > 0, got {self.public_lr}")
        if self.dense_small and self.model != "mlp":
            raise ValueError(
                f"dense_small is defined for the mlp model, got model={self.model!r} (use --no-dense-small)"
            )
        self.check_run_count(self.planned_runs())

    def probe_runs(self) -> list[dict[str, Any]]:
        """The shared extremes, the most pruned arm, the public mask run and every calibrated ε."""
        public = {
            "mode": "sgd",
            "train_split": "public",
            "epochs": self.public_epochs,
            "batch_size": self.public_batch_size,
            "lr": self.public_lr,
        }
        return [
            *super().probe_runs(),
            {"mode": "dpsgd", "sparsity": self.sparsities[-1], "mask_source": "random", "prune_scope": "layer"},
            *([public] if "public" in self.mask_sources else []),
            *({"mode": "dpsgd", "target_epsilon": e} for e in (self.target_epsilon, *self.mask_epsilons)),
        ]

    @property
    def source_arms(self) -> list[str]:
        """Pruned-arm source names (``private@ε`` per mask epsilon)."""
        out = []
        for s in self.mask_sources:
            out += [f"private@{e:g}" for e in self.mask_epsilons] if s == "private" else [s]
        return out

    def planned_runs(self) -> int:
        lr = max(len(self.lr_grid), 1)
        clip = max(len(self.clip_grid), 1)
        ts, es = len(self.tune_seeds), len(self.seeds)
        per_p = len(self.source_arms) + int(self.dense_small)
        tuned = lr > 1 or clip > 1
        tuning = (lr + lr * clip + (lr * len(self.sparsities) if self.dense_small else 0)) * ts if tuned else 0
        tuning += (
            (lr * len(self.sparsities) * (len(self.source_arms) if self.tune_per_source else 1)) * ts if lr > 1 else 0
        )
        masks = (ts + es) * ("public" in self.mask_sources) + es * len(self.mask_epsilons) * (
            "private" in self.mask_sources
        )
        return tuning + masks + es * (2 + per_p * len(self.sparsities))


def small_width(config: PruneConfig, sparsity: float) -> int:
    """MLP width whose dense parameter count is closest to the pruned network's kept count."""
    from simulations.nn.data import load_dataset
    from simulations.nn.models import mlp_parameter_count

    ds = load_dataset(config.dataset, root=config.data_root, seed=0, n_train=2, n_test=1)
    d_in, c = math.prod(ds.input_shape), ds.num_classes
    w, depth = config.width, config.depth
    weights = d_in * w + (depth - 1) * w * w + w * c if depth > 0 else d_in * c
    biases = depth * w + c
    kept = weights - round(sparsity * weights) + biases
    counts = {v: mlp_parameter_count(input_dim=d_in, num_classes=c, width=v, depth=depth) for v in range(1, w + 1)}
    return min(counts, key=lambda v: (abs(counts[v] - kept), v))


def _mask_folder(folder: Path, kind: str, seed: int) -> str:
    return str(folder / f"{kind}-seed{seed}")


def run(config: PruneConfig) -> dict:
    check_output_dir(config.out)
    check_sweep(config, config.planned_runs())
    n = training_set_size(config)
    spe = steps_per_epoch(config)
    task = task_label(config)
    sigma = calibrated_sigma(config, target_epsilon=config.target_epsilon)
    dp = {"mode": "dpsgd", "noise_multiplier": sigma}
    with result_folder(config.out) as folder:
        mask_dir = folder / "mask_runs"
        # 1. dense arms (and same-size dense networks), tuned
        dense = [Arm("sgd", {"mode": "sgd"}), Arm("dpsgd", dp, tune_clip=True, private=True)]
        widths = {p: small_width(config, p) for p in config.sparsities} if config.dense_small else {}
        dense += [Arm(f"dense_small@{p:g}", {**dp, "width": w}, private=True) for p, w in widths.items()]
        records = tune(config, dense, label="prune dense")
        sgd_lr = chosen_fields(records, dense[0])
        dp_chosen = chosen_fields(records, dense[1])
        # 2. mask runs (saved, with model.pt): public SGD runs, private DP runs, dense SGD = oracle source
        mask_jobs = []
        public = {
            "mode": "sgd",
            "train_split": "public",
            "epochs": config.public_epochs,
            "batch_size": config.public_batch_size,
            "lr": config.public_lr,
        }
        if "public" in config.mask_sources:
            for s in config.tune_seeds + config.seeds:
                fields = config.base_fields(**public, seed=s, out=_mask_folder(mask_dir, "public", s))
                mask_jobs.append(({"seed": s, "arm": "mask:public"}, train_config(**fields)))
        priors = {}
        if "private" in config.mask_sources:
            for e in config.mask_epsilons:
                sig_m = calibrated_sigma(config, target_epsilon=e)
                from dptheory.privacy import PoissonGaussianMechanism

                priors[e] = (
                    PoissonGaussianMechanism(
                        noise_multiplier=sig_m, sample_rate=config.batch_size / n, steps=spe * config.epochs
                    ),
                )
                for s in config.seeds:
                    fields = config.base_fields(
                        **{**dp_chosen, "noise_multiplier": sig_m},
                        seed=s,
                        out=_mask_folder(mask_dir, f"private{e:g}", s),
                    )
                    mask_jobs.append(({"seed": s, "arm": f"mask:private@{e:g}"}, train_config(**fields)))
        for s in config.seeds:
            fields = config.base_fields(**sgd_lr, seed=s, out=_mask_folder(mask_dir, "sgd", s))
            mask_jobs.append(({"seed": s, "arm": "sgd", "sparsity": 0.0}, train_config(**fields)))
        saved = Sweep.of("prune masks", config).run(mask_jobs, saved=True)
        # 3. pruned arms per sparsity; lr re-tuned per sparsity
        pruned: dict[float, list[Arm]] = {}
        for p in config.sparsities:
            arms = []
            for src in config.source_arms:
                arms.append(_source_arm(config, src, p, dp, dp_chosen, priors, mask_dir))
            pruned[p] = arms
            if config.tune_per_source:
                records.update(tune(config, arms, label=f"prune p={p:g}"))
            else:
                rep = next(a for a in arms if a.name.startswith("public"))
                rec = tune(config, [rep], label=f"prune p={p:g}")[rep.name]
                for a in arms:
                    records[a.name] = {
                        **rec,
                        "selection": rec["selection"] + f" (tuned on the public mask: {rep.name})",
                    }
        # 4. evaluation runs (dense SGD already ran as the oracle's mask source)
        jobs = []
        for s in config.seeds:
            jobs.append(
                ({"seed": s, "arm": "dpsgd", "sparsity": 0.0}, train_config(**config.base_fields(**dp_chosen, seed=s)))
            )
            for p, _w in widths.items():
                a = next(x for x in dense if x.name == f"dense_small@{p:g}")
                jobs.append(
                    (
                        {"seed": s, "arm": a.name, "sparsity": p},
                        train_config(**config.base_fields(**chosen_fields(records, a), seed=s)),
                    )
                )
            for p, arms in pruned.items():
                for a in arms:
                    jobs.append(
                        (
                            {"seed": s, "arm": a.name, "sparsity": p},
                            train_config(**config.base_fields(**chosen_fields(records, a, s), seed=s)),
                        )
                    )
        results = [r for r in saved if r["tags"]["arm"] == "sgd"] + Sweep.of("prune", config).run(jobs)
        metrics = analyse(config, results, task=task, widths=widths)
        metrics.update(
            tuning=records,
            noise_multiplier_dense=sigma,
            mask_runs=[
                {**r["tags"], "privacy": r["result"]["privacy"]["label"], "test_acc": final(r["result"], TEST_ACC)}
                for r in saved
            ],
            threads=config.threads,
            runs=[
                {
                    **r["tags"],
                    "epsilon_rdp": r["result"]["privacy"].get("epsilon_rdp"),
                    "epsilon_pld": r["result"]["privacy"].get("epsilon_pld"),
                    "privacy": r["result"]["privacy"]["label"],
                    "kept_parameters": r["result"].get("kept_parameters"),
                    "seconds": r["seconds"],
                }
                for r in results
            ],
        )
        arrays = {
            "test_accuracy": curves(results, TEST_ACC),
            "train_loss": curves(results, TRAIN_LOSS),
            "sparsity": np.asarray([r["tags"]["sparsity"] for r in results]),
            "arm": np.asarray([r["tags"]["arm"] for r in results]),
            "seed": np.asarray([r["tags"]["seed"] for r in results]),
        }
        write_results(folder, config=config, metrics=metrics, arrays=arrays)
    report(config, metrics)
    return metrics


def _source_arm(config, src: str, p: float, dp: dict, dp_chosen: dict, priors: dict, mask_dir: Path) -> Arm:
    """The pruned DP-SGD arm of mask source ``src`` at sparsity ``p`` (σ composed for private masks)."""
    base = {**dp, "sparsity": p, "clip_norm": dp_chosen.get("clip_norm", config.clip_norm)}
    name = f"{src}@{p:g}" if not src.startswith("private") else f"{src}/p={p:g}"
    if src == "random":
        return Arm(name, {**base, "mask_source": "random", "prune_scope": "layer"}, private=True)
    if src in ("init_layer", "init_global"):
        return Arm(name, {**base, "mask_source": "init", "prune_scope": src.split("_")[1]}, private=True)
    if src == "public":
        return Arm(
            name,
            {**base, "mask_source": "public", "prune_scope": "layer"},
            private=True,
            seed_fields=lambda s: {"mask_run": _mask_folder(mask_dir, "public", s)},
        )
    if src == "oracle":
        return Arm(
            name,
            {**base, "mask_source": "oracle", "prune_scope": "layer"},
            seed_fields=lambda s: {"mask_run": _mask_folder(mask_dir, "sgd", s)},
        )
    e = float(src.split("@")[1])
    sig = calibrated_sigma(config, target_epsilon=config.target_epsilon, prior=priors[e])
    return Arm(
        name,
        {**base, "noise_multiplier": sig, "mask_source": "private", "prune_scope": "layer"},
        private=True,
        seed_fields=lambda s: {"mask_run": _mask_folder(mask_dir, f"private{e:g}", s)},
    )


def analyse(config: PruneConfig, results: list[dict], *, task: str = "", widths: dict | None = None) -> dict:
    """Paired statistics and the claim-4 verdicts (pure: reads ``results``)."""
    seeds = config.seeds
    widths = widths or {}
    dense = per_seed(results, seeds, TEST_ACC, arm="dpsgd")
    sgd = per_seed(results, seeds, TEST_ACC, arm="sgd")
    rows: list[dict] = []
    acc: dict[str, np.ndarray] = {}
    for r in results:
        name = r["tags"]["arm"]
        if name in acc or name in ("sgd", "dpsgd"):
            continue
        acc[name] = per_seed(results, seeds, TEST_ACC, arm=name)
        eps = per_seed(results, seeds, EPSILON, arm=name)
        rows.append(
            {
                "arm": name,
                "sparsity": r["tags"]["sparsity"],
                "test_accuracy": summary(acc[name].tolist()),
                "minus_dense": paired_t(acc[name].tolist(), dense.tolist()),
                "epsilon_rdp": float(np.max(eps)),
                "privacy": sorted({x["result"]["privacy"]["label"] for x in select(results, arm=name)}),
            }
        )
    heavy = [p for p in config.sparsities if p >= HEAVY]
    specs = []
    p_star = heavy[-1] if heavy else None
    if p_star is not None:
        for src in config.source_arms:
            if src == "oracle":
                continue
            name = f"{src}@{p_star:g}" if not src.startswith("private") else f"{src}/p={p_star:g}"
            specs.append(
                {
                    "claim": "4",
                    "statement": f"heavy pruning improves DP-SGD: acc({src} mask, p={p_star:g}) - acc(dense) > 0",
                    "test": paired_t(acc[name].tolist(), dense.tolist()),
                    "held_if": "greater",
                    "unit": "points",
                    "scale": 100.0,
                    "task": task,
                    "key": f"minus_dense.{name}",
                }
            )
        small = f"dense_small@{p_star:g}"
        if "public" in config.mask_sources and small in acc:
            specs.append(
                {
                    "claim": "4",
                    "statement": (
                        f"the magnitude mask carries information beyond the parameter count: "
                        f"acc(public mask, p={p_star:g}) - acc(dense width {widths.get(p_star)}) > 0"
                    ),
                    "test": paired_t(acc[f"public@{p_star:g}"].tolist(), acc[small].tolist()),
                    "held_if": "greater",
                    "unit": "points",
                    "scale": 100.0,
                    "task": task,
                    "key": f"public_minus_dense_small.{p_star:g}",
                }
            )
    verdicts = claim_family(specs)
    oracle = f"oracle@{p_star:g}" if p_star is not None else None
    return {
        "claim": "4: magnitude pruning is a suitable dimension reduction; heavy pruning can improve DP-SGD",
        "task": task,
        "sgd_dense": summary(sgd.tolist()),
        "dpsgd_dense": summary(dense.tolist()),
        "per_source": rows,
        "dense_small_widths": {f"{p:g}": w for p, w in widths.items()},
        "oracle_minus_dense": paired_t(acc[oracle].tolist(), dense.tolist()) if oracle in acc else None,
        "oracle_note": "oracle masks come from non-private SGD on the private split: diagnosis only, never private",
        "verdicts": verdicts,
        "verdict": next((v for v in verdicts if v["key"] == f"minus_dense.public@{p_star:g}"), None),
        "criterion": (
            "paired two-sided t-tests over seeds (df = n - 1), Holm within claim 4; held = adjusted p <= 0.05 "
            "with the estimate in the claimed direction"
        ),
    }


def report(config: PruneConfig, metrics: dict) -> None:
    print(
        f"claim 4 (prune), {metrics['task']}; total eps={config.target_epsilon} for every DP run; "
        f"seeds={len(config.seeds)}; accuracy in %"
    )
    print(f"  dense: SGD {fmt_stat(metrics['sgd_dense'], 100, 1)}, DP-SGD {fmt_stat(metrics['dpsgd_dense'], 100, 1)}")
    rows = [["arm", "lr", "test acc", "- dense DP [95% CI]", "eps (rdp)", "privacy"]]
    for r in metrics["per_source"]:
        d = r["minus_dense"]
        lr = metrics["tuning"].get(r["arm"], {}).get("chosen", {}).get("lr")
        rows.append(
            [
                r["arm"],
                "" if lr is None else f"{lr:.3g}",
                fmt_stat(r["test_accuracy"], 100, 1),
                f"{100 * d['estimate']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]",
                f"{r['epsilon_rdp']:.2f}",
                "; ".join(r["privacy"])[:40],
            ]
        )
    print_table(rows)
    for v in metrics["verdicts"]:
        print("  " + verdict_line(v))


def main(argv: list[str] | None = None) -> int:
    from simulations.common.cli import run_main

    return run_main(
        PruneConfig,
        run,
        argv,
        prog="python -m simulations.nn prune",
        description=__doc__.split("\n\n")[0],
        figure=draw_figure,
    )


if __name__ == "__main__":
    raise SystemExit(main())
