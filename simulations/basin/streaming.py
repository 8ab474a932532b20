"""The streaming low-rank quadratic basin (``dptheory.records.Basin``) and its curvature spectra.

The basin itself is the shared record (module docstring of ``dptheory/records.py``):
L(e) = ½ Σ_{i≤r} λ_i e_i² + ½ λ_flat ‖e_flat‖², per-sample gradients H e + s ζ_i with fresh ζ_i.
This module builds the curvature vector (λ_1, …, λ_r) from a named spectrum:

=============  ===============================================================
spectrum        λ_i, i = 1 … r
=============  ===============================================================
``flat``        λ_max for every i
``power``       λ_max · i^(−α)                   (α = ``power``)
``two-level``   λ_max for i ≤ ⌈split·r⌉, λ_low after (``split`` ∈ (0, 1])
=============  ===============================================================

(a Haar-random orthonormal basis of the curved directions is ``dptheory.pruning.curvature_basis``).
"""

from __future__ import annotations

import math

import numpy as np

from dptheory.records import Basin
from dptheory.validate import check_int, check_nonnegative, check_positive, check_probability

__all__ = ["SPECTRA", "curvature_spectrum", "streaming_basin"]

SPECTRA = ("flat", "power", "two-level")


def curvature_spectrum(
    *,
    rank: int,
    spectrum: str = "flat",
    max_curvature: float = 1.0,
    power: float = 1.0,
    split: float = 0.5,
    low_curvature: float = 0.1,
) -> np.ndarray:
    """Curvatures (λ_1 ≥ … ≥ λ_r) of a named spectrum (table in the module docstring).

    Args: ``rank`` r, ``max_curvature`` λ_max, ``power`` α (power law), ``split`` fraction of the
    r directions at λ_max and ``low_curvature`` λ_low (two-level).

    Example:
        >>> curvature_spectrum(rank=4, spectrum="power", max_curvature=2.0, power=1.0).tolist()
        [2.0, 1.0, 0.6666666666666666, 0.5]
        >>> curvature_spectrum(rank=4, spectrum="two-level", split=0.25, low_curvature=0.1).tolist()
        [1.0, 0.1, 0.1, 0.1]
    """
    r = check_int("rank", rank, minimum=1)
    lam_max = check_positive("max_curvature", max_curvature)
    if spectrum == "flat":
        return np.full(r, lam_max)
    if spectrum == "power":
        alpha = check_nonnegative("power", power)
        return lam_max * np.arange(1, r + 1, dtype=float) ** (-alpha)
    if spectrum == "two-level":
        frac = check_probability("split", split, open_left=True)
        low = check_positive("low_curvature", low_curvature)
        n_high = max(1, math.ceil(frac * r - 1e-12))
        return np.where(np.arange(r) < n_high, lam_max, low)
    raise ValueError(f"spectrum must be one of {', '.join(SPECTRA)}, got {spectrum!r}")


def streaming_basin(
    *,
    dim: int,
    rank: int,
    sample_std: float,
    spectrum: str = "flat",
    max_curvature: float = 1.0,
    power: float = 1.0,
    split: float = 0.5,
    low_curvature: float = 0.1,
    spread: str = "ambient",
    flat_curvature: float = 0.0,
    heldout_flat_curvature: float = 0.0,
) -> Basin:
    """A ``records.Basin`` whose curvatures follow a named spectrum (:func:`curvature_spectrum`).

    Example:
        >>> b = streaming_basin(dim=10**6, rank=100, sample_std=1.0, spectrum="power", power=0.5)
        >>> b.rank, b.flat_dim, round(b.curvatures[-1], 3)
        (100, 999900, 0.1)
    """
    lam = curvature_spectrum(
        rank=rank, spectrum=spectrum, max_curvature=max_curvature, power=power, split=split, low_curvature=low_curvature
    )
    return Basin(
        dim=dim,
        curvatures=tuple(lam),
        sample_std=sample_std,
        spread=spread,
        flat_curvature=flat_curvature,
        heldout_flat_curvature=heldout_flat_curvature,
    )
