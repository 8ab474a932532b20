"""Per-arm tuning of the network experiments on a validation split, with the grid and the choice saved.

An *arm* is one way of training that an experiment compares (SGD, clip-only, DP-SGD at ε, a pruned
DP-SGD run, …). One learning rate for every arm confounds the arms with the step size: per-sample
norms far above C shrink a clipped step by ‖g_i‖/C, so a clipped arm needs a larger lr. So every arm is
tuned on its own:

* candidates: every ``lr`` in ``lr_grid`` (× ``clip_norm`` in ``clip_grid`` for arms that clip);
  an arm whose lr is *derived* (e.g. the SNR-matched noise-only arm) or that has no grid is not
  tuned and says so;
* for **normalised clipping** (Bu et al. 2022, arXiv 2206.07136v3 §4, AUTO-S): the engine's
  ``clip_rule="normalised"`` rescales every per-sample gradient to C·g_i/(‖g_i‖ + 0.01), so only
  η·C matters; the arm runs at C = ``NORMALISED_CLIP`` = 1 and lr = the grid value, i.e. the grid is
  over the effective step η·C (no clip grid);
* each candidate is trained with every seed in ``tune_seeds`` (disjoint from the evaluation seeds)
  on the training split and scored by its final **validation** accuracy (mean over tune seeds;
  the validation split is carved out of the training pool and disjoint from train and test, the
  test split is never used to choose); the best score wins, ties go to the first grid point. A
  choice on an edge of the lr grid is followed by one more lr beyond that edge (the grid's own
  spacing), up to ``grid_extend`` times; ``at_grid_edge`` says if the final choice is still there.

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

from simulations.net_common import MAX_TUNED_LR, NetExperiment, Sweep, final, select, train_config

__all__ = ["NORMALISED_CLIP", "Arm", "chosen_fields", "grid_points", "random_search_epsilon", "tune"]

NORMALISED_CLIP = 1.0
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


def grid_points(config: NetExperiment, arm: Arm) -> list[dict[str, Any]]:
    """The candidate (lr, clip_norm) overrides of ``arm`` under ``config``'s grids (one point if untuned)."""
    lrs = list(config.lr_grid) if (arm.tune_lr and config.lr_grid) else [None]
    clips = list(config.clip_grid) if (arm.tune_clip and config.clip_grid and not arm.normalised) else [None]
    points = []
    for lr, clip in itertools.product(lrs, clips):
        p: dict[str, Any] = {}
        if arm.normalised:
            p["clip_rule"] = "normalised"
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


def _extension(points: list[dict[str, Any]], scores: list[float]) -> dict[str, Any] | None:
    """The next lr beyond the grid edge that holds the best score (at its clip norm), or None if inside.

    The step is the ratio of the two lr values nearest that edge (the grid's own spacing).
    """
    if not np.any(np.isfinite(scores)):
        return None
    best = points[int(np.nanargmax(scores))]
    same = sorted({p["lr"] for p in points if p.get("clip_norm") == best.get("clip_norm") and "lr" in p})
    if "lr" not in best or len(same) < 2:
        return None
    if best["lr"] == same[0]:
        return {**best, "lr": same[0] * same[0] / same[1]}
    if best["lr"] == same[-1]:
        return {**best, "lr": same[-1] * same[-1] / same[-2]}
    return None


def tune(config: NetExperiment, arms: Sequence[Arm], *, label: str, **common: Any) -> dict[str, dict[str, Any]]:
    """Tune every arm (module docstring); returns ``{arm name: tuning record}``.

    ``common`` are TrainConfig fields shared by all runs (on top of ``config.base_fields``). When the
    best point lies on an edge of the lr grid, one more lr beyond it (the grid's spacing) is tried,
    up to ``config.grid_extend`` times per arm. A record holds ``tuned`` (bool), ``grid`` (each point
    with its per-seed and mean validation accuracy, and whether an extension added it), ``chosen``
    (the TrainConfig overrides to evaluate with), ``at_grid_edge`` (after extensions), ``selection``
    and ``privacy``. A candidate that diverges on any tune seed (``TrainingDiverged``) is not chosen:
    its ``val_acc`` is null and ``diverged`` says why; an arm whose every candidate diverges is a
    ``ValueError``. An extension beyond the engine's lr range is not tried.
    """
    state: dict[str, dict[str, Any]] = {}
    pending: list[tuple[Arm, int]] = []
    for arm in arms:
        points = grid_points(config, arm)
        if len(points) >= 2:
            state[arm.name] = {"points": list(points), "scores": [math.nan] * len(points), "added": set()}
            pending += [(arm, i) for i in range(len(points))]
    rounds = 0
    while pending:
        jobs = []
        for arm, i in pending:
            point = state[arm.name]["points"][i]
            for seed in config.tune_seeds:
                fields = config.base_fields(**{**common, **arm.fields_for(seed), **point, "seed": seed})
                jobs.append(({"arm": arm.name, "point": i, "seed": seed}, train_config(**fields)))
        sweep = Sweep.of(f"{label} tuning" + (f" (extension {rounds})" if rounds else ""), config)
        results = sweep.run(jobs, diverged_ok=True)
        for arm, i in pending:
            runs = select(results, arm=arm.name, point=i)
            vals = [math.nan if "diverged" in r["result"] else final(r["result"], VAL_ACC) for r in runs]
            state[arm.name].setdefault("per_seed", {})[i] = vals
            state[arm.name]["scores"][i] = float(np.mean(vals))  # nan if any tune seed diverged
            diverged = [r["result"]["diverged"] for r in runs if "diverged" in r["result"]]
            if diverged:
                state[arm.name].setdefault("diverged", {})[i] = diverged[0]
        done, pending = pending, []
        if rounds < config.grid_extend:
            for arm in {a.name: a for a, _ in done}.values():
                st = state[arm.name]
                new = _extension(st["points"], st["scores"])
                if new is not None and not 1e-30 <= new["lr"] <= MAX_TUNED_LR:
                    new = None  # beyond the engine's lr range: the edge stays the choice (at_grid_edge)
                if new is not None and new not in st["points"]:
                    st["points"].append(new)
                    st["scores"].append(math.nan)
                    st["added"].add(len(st["points"]) - 1)
                    pending.append((arm, len(st["points"]) - 1))
        rounds += 1
    records = {}
    for arm in arms:
        if arm.name not in state:
            records[arm.name] = {
                "tuned": False,
                "grid": [],
                "chosen": grid_points(config, arm)[0],
                "selection": "not tuned (no grid for this arm, or its values are derived)",
                "privacy": None,
            }
            continue
        st = state[arm.name]
        if not np.any(np.isfinite(st["scores"])):
            first = next(iter(st.get("diverged", {}).values()), "no finite validation accuracy")
            raise ValueError(f"{label}: every grid point of arm {arm.name!r} diverged or failed ({first})")
        grid = [
            {
                **p,
                # a diverged candidate has no validation accuracy: null, with the reason in "diverged"
                "val_acc_per_seed": [v if math.isfinite(v) else None for v in st["per_seed"][i]],
                "val_acc": st["scores"][i] if math.isfinite(st["scores"][i]) else None,
                "extension": i in st["added"],
                **({"diverged": st["diverged"][i]} if i in st.get("diverged", {}) else {}),
            }
            for i, p in enumerate(st["points"])
        ]
        best = int(np.nanargmax(st["scores"]))
        records[arm.name] = {
            "tuned": True,
            "grid": grid,
            "chosen": st["points"][best],
            "chosen_index": best,
            "at_grid_edge": _extension(st["points"], st["scores"]) is not None,
            "selection": (
                f"max mean final validation accuracy over tune seeds {list(config.tune_seeds)} "
                f"({config.n_val} validation examples, disjoint from train and test)"
            ),
            "privacy": {
                "accounted": False,
                "data": "candidates trained on the private training split, chosen on the validation split",
                "reported_epsilon_covers": "one training run with the chosen hyperparameters",
                "candidates": len(st["points"]),
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
