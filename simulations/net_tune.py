"""Per-arm tuning of the network experiments on a validation split, with the grid and the choice saved.

An *arm* is one way of training that an experiment compares (SGD, clip-only, DP-SGD at ε, a pruned
DP-SGD run, …). One learning rate for every arm confounds the arms with the step size: per-sample
norms far above C shrink a clipped step by ‖g_i‖/C, so a clipped arm needs a larger lr (REFERENCE
measurements: clip-only at its own lr matches SGD, at SGD's lr it loses 22 points). So every arm is
tuned on its own:

* candidates: every ``lr`` in ``lr_grid`` (× ``clip_norm`` in ``clip_grid`` for arms that clip);
  an arm whose lr is *derived* (e.g. the SNR-matched noise-only arm) or that has no grid is not
  tuned and says so;
* for **normalised clipping** (Bu et al. 2022, arXiv 2206.07136v3 §3, AUTO-V): every per-sample
  gradient is rescaled to norm C, so only η·C matters; the arm is run with the flat rule at a clip
  norm far below every per-sample norm (``NORMALISED_CLIP`` = 1e-4; its measured clip fraction is
  1.0) and lr = (grid value)/C, i.e. the grid is over the effective step η·C. This emulates the
  engine's flat rule φ_i = C/(‖g_i‖ + 1e-6) → C/‖g_i‖ until the engine has a ``clip_rule`` keyword;
* each candidate is trained with every seed in ``tune_seeds`` (disjoint from the evaluation seeds)
  on the training split and scored by its final **validation** accuracy (mean over tune seeds;
  the validation split is carved out of the training pool and disjoint from train and test, the
  test split is never used to choose); the best score wins, ties go to the first grid point.

Privacy of tuning (Papernot & Steinke 2022, arXiv 2110.03620v2): the candidates are trained on the
private training split, so the *choice* depends on private data. This is **declared, not
accounted**: the ε reported for a tuned arm covers one training run with the chosen values. For a
reader who wants the price, each tuned DP arm also reports ``epsilon_random_search_rdp``: the RDP
ε (at the run's δ) of Papernot & Steinke's random search with a Poisson number of candidates of
mean K = the grid size, each a DP-SGD run with the chosen σ (their Theorem 2; dp-accounting's
``RepeatAndSelectDpEvent`` with shape = ∞) — the cost of a search procedure that would be private,
not of the grid search run here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulations.net_common import NetExperiment, Sweep, final, select, train_config

__all__ = ["NORMALISED_CLIP", "Arm", "chosen_fields", "grid_points", "random_search_epsilon", "tune"]

NORMALISED_CLIP = 1e-4
VAL_ACC = "val_acc"


@dataclass(frozen=True)
class Arm:
    """One arm: its name, the TrainConfig fields that define it, and which hyperparameters are tuned.

    ``tune_lr`` / ``tune_clip``: tune over ``lr_grid`` / ``clip_grid``; ``normalised``: lr grid is
    over η·C at ``NORMALISED_CLIP`` (module docstring); ``private``: a DP-SGD arm (ε reported);
    ``seed_fields(seed)``: fields that depend on the run's seed (e.g. the mask run of that seed).
    """

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    tune_lr: bool = True
    tune_clip: bool = False
    normalised: bool = False
    private: bool = False
    seed_fields: Callable[[int], dict[str, Any]] | None = None

    def fields_for(self, seed: int) -> dict[str, Any]:
        """The arm's fields for a run with ``seed`` (``fields`` updated by ``seed_fields``)."""
        return {**self.fields, **(self.seed_fields(seed) if self.seed_fields is not None else {})}


def grid_points(config: NetExperiment, arm: Arm) -> list[dict[str, float]]:
    """The candidate (lr, clip_norm) overrides of ``arm`` under ``config``'s grids (one point if untuned)."""
    lrs = list(config.lr_grid) if (arm.tune_lr and config.lr_grid) else [None]
    clips = list(config.clip_grid) if (arm.tune_clip and config.clip_grid and not arm.normalised) else [None]
    points = []
    for lr, clip in itertools.product(lrs, clips):
        p: dict[str, float] = {}
        if arm.normalised:
            p["clip_norm"] = NORMALISED_CLIP
            p["lr"] = (config.lr * config.clip_norm if lr is None else lr) / NORMALISED_CLIP
        else:
            if lr is not None:
                p["lr"] = lr
            if clip is not None:
                p["clip_norm"] = clip
        points.append(p)
    return points


def is_tuned(config: NetExperiment, arm: Arm) -> bool:
    return len(grid_points(config, arm)) > 1


def tune(config: NetExperiment, arms: Sequence[Arm], *, label: str, **common: Any) -> dict[str, dict[str, Any]]:
    """Tune every arm (module docstring); returns ``{arm name: tuning record}``.

    ``common`` are TrainConfig fields shared by all runs (on top of ``config.base_fields``). A record
    holds ``tuned`` (bool), ``grid`` (each point with its per-seed and mean validation accuracy),
    ``chosen`` (the TrainConfig overrides to evaluate with), ``selection`` and ``privacy``.
    """
    jobs = []
    for arm in arms:
        points = grid_points(config, arm)
        if len(points) < 2:
            continue
        for i, point in enumerate(points):
            for seed in config.tune_seeds:
                fields = config.base_fields(**{**common, **arm.fields_for(seed), **point, "seed": seed})
                jobs.append(({"arm": arm.name, "point": i, "seed": seed}, train_config(**fields)))
    results = Sweep.of(f"{label} tuning", config).run(jobs) if jobs else []
    records = {}
    for arm in arms:
        points = grid_points(config, arm)
        if len(points) < 2:
            records[arm.name] = {
                "tuned": False,
                "grid": [],
                "chosen": points[0],
                "selection": "not tuned (no grid for this arm, or its values are derived)",
                "privacy": None,
            }
            continue
        grid = []
        for i, point in enumerate(points):
            vals = [final(r["result"], VAL_ACC) for r in select(results, arm=arm.name, point=i)]
            grid.append({**point, "val_acc_per_seed": vals, "val_acc": float(np.mean(vals))})
        scores = [g["val_acc"] for g in grid]
        best = int(np.nanargmax(scores)) if np.any(np.isfinite(scores)) else 0
        records[arm.name] = {
            "tuned": True,
            "grid": grid,
            "chosen": points[best],
            "chosen_index": best,
            "at_grid_edge": bool(best in (0, len(points) - 1)) and len(config.lr_grid) > 1,
            "selection": (
                f"max mean final validation accuracy over tune seeds {list(config.tune_seeds)} "
                f"({config.n_val} validation examples, disjoint from train and test)"
            ),
            "privacy": {
                "accounted": False,
                "data": "candidates trained on the private training split, chosen on the validation split",
                "reported_epsilon_covers": "one training run with the chosen hyperparameters",
                "candidates": len(points),
                "reference": "Papernot & Steinke 2022, arXiv 2110.03620v2",
            }
            if arm.private
            else None,
        }
    return records


def chosen_fields(records: dict[str, dict[str, Any]], arm: Arm, seed: int | None = None) -> dict[str, Any]:
    """The TrainConfig overrides to evaluate ``arm`` with (for ``seed``): its fields and its tuned choice."""
    base = arm.fields if seed is None else arm.fields_for(seed)
    return {**base, **records[arm.name]["chosen"]}


def random_search_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, candidates: int, delta: float
) -> float:
    """RDP ε of Papernot & Steinke's random search over ``candidates`` (Poisson number of runs, mean K).

    Each run is T = ``steps`` Poisson-subsampled Gaussian steps with σ = ``noise_multiplier`` and
    q = ``sample_rate`` (``dptheory.privacy.dp_event``); the search is dp-accounting's
    ``RepeatAndSelectDpEvent(event, mean=K, shape=inf)`` (arXiv 2110.03620v2 Theorem 2), converted to
    (ε, δ) by its RDP accountant. ``inf`` for σ = 0.
    """
    from dp_accounting import dp_event as dp_event_module
    from dp_accounting import rdp

    from dptheory.privacy import PoissonGaussianMechanism, dp_event

    if noise_multiplier <= 0:
        return math.inf
    event = dp_event(PoissonGaussianMechanism(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps))
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event_module.RepeatAndSelectDpEvent(event, float(candidates), math.inf))
    return float(accountant.get_epsilon(delta))
