"""Magnitude-pruning masks: keep the k largest |coordinates| of a stated reference point.

``magnitude_mask(reference=p, keep=k)`` returns the boolean mask M with M_j = 1 for the k indices of
largest |p_j| (ties broken toward the lower index, so the mask is a deterministic function of p).
Pruned weights are then held at 0 (``simulations.engine.simulate(mask=…)``).

Privacy status of the reference point — the mask is released through the trained model, so a
mask computed from private data must itself be paid for:

* **w\\* (oracle)** — :func:`oracle_mask`. Uses the optimum of the *training* objective: **not
  private**; an upper bound on what magnitude pruning can achieve, for analysis only.
* **noisy estimate of w\\*** — :func:`noisy_estimate_mask`. w* + N(0, τ² I) is a stand-in for a
  mask computed from a previous private run; it is private **only if** that estimate was produced by
  a DP mechanism whose (ε, δ) is composed with the training run. Adding Gaussian noise to the oracle
  here is not by itself a DP guarantee (its sensitivity is not bounded).
* **initialisation** — :func:`init_mask`. Data-independent: free in privacy terms.
* **random** — :func:`random_mask`. Data-independent: free (Adamczewski & Park 2023,
  arXiv 2303.04612: random selection is about as good as magnitude selection under DP).
* public (pre-training) weights are as private as the public data they came from.
"""

from __future__ import annotations

import numpy as np

from dptheory._validate import check_int, check_nonnegative
from dptheory.pruning import magnitude_mask  # the one implementation (pure, in the theory layer)

__all__ = ["init_mask", "magnitude_mask", "noisy_estimate_mask", "oracle_mask", "random_mask"]


def oracle_mask(*, optimum, keep: int) -> np.ndarray:
    """Magnitude mask of the optimum w* — an oracle, **not private** (module docstring)."""
    return magnitude_mask(reference=optimum, keep=keep)


def noisy_estimate_mask(*, optimum, noise_std: float, keep: int, seed: int) -> np.ndarray:
    """Magnitude mask of w* + N(0, τ² I), τ = ``noise_std`` — private only if the estimate is (docstring).

    Example:
        >>> noisy_estimate_mask(optimum=[5.0, 0.0, -4.0], noise_std=0.0, keep=2, seed=0).tolist()
        [True, False, True]
    """
    w = np.asarray(optimum, dtype=float)
    tau = check_nonnegative("noise_std", noise_std)
    return magnitude_mask(reference=w + tau * np.random.default_rng(seed).standard_normal(w.shape), keep=keep)


def init_mask(*, init_weights, keep: int) -> np.ndarray:
    """Magnitude mask of the initial weights — data-independent, privacy-free."""
    return magnitude_mask(reference=init_weights, keep=keep)


def random_mask(*, dim: int, keep: int, seed: int) -> np.ndarray:
    """A uniformly random set of ``keep`` coordinates — data-independent, privacy-free.

    Example:
        >>> int(random_mask(dim=10, keep=3, seed=0).sum())
        3
    """
    d = check_int("dim", dim, minimum=1)
    k = check_int("keep", keep, minimum=0)
    if k > d:
        raise ValueError(f"keep must be <= dim={d}, got {k}")
    mask = np.zeros(d, dtype=bool)
    mask[np.random.default_rng(seed).choice(d, size=k, replace=False)] = True
    return mask
