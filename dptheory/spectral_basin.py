"""The measured inputs of the spectral model of DP-SGD near a minimum w*: spectrum and gradient law.

A :class:`SpectralBasin` is what one measures on a trained network at w*: the top-k Hessian
eigenvalues λ_j (Lanczos), a stochastic-Lanczos-quadrature density of the other d − k eigenvalues
(nodes λ_l with weights w_l = how many directions each node stands for; Ghorbani, Krishnan, Xiao
2019, arXiv 1901.10159v1 §2), and the per-example gradients at w* — either measured
(:class:`GradientStatistics`: norms ‖g_i‖ and top projections u_jᵀ g_i over the n training
examples) or the isotropic Gaussian law of dptheory.records.Basin (:class:`GaussianGradients`,
built by :func:`spectral_basin_from_basin`). The model that turns these into predictions is
dptheory.spectral; symbols ↔ arguments in NOTATION.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dptheory.records import Basin
from dptheory.spectral_response import SortedGradientSums
from dptheory.validate import check_int

__all__ = [
    "BULK_NOISES",
    "GaussianGradients",
    "GradientStatistics",
    "SpectralBasin",
    "spectral_basin_from_basin",
]

BULK_NOISES = ("curvature", "uniform")
_PROJECTION_SLACK = 1e-6  # Σ_j p_ij² may exceed R_i² by this relative amount (rounding of measured data)


def _array(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got a non-finite entry")
    return arr


@dataclass(frozen=True, eq=False)
class GradientStatistics:
    """Per-example gradients at the minimum w*, summarised over the n training examples.

    ``norms`` (n,) R_i = ‖g_i(w*)‖ over all d (kept) parameters; ``top_projections`` (n, k)
    p_ij = u_jᵀ g_i(w*) on the top-k Hessian eigenvectors (same order as ``top_eigenvalues``).
    Optional (n, k) per-example curvatures for the drift mean_i J_i H_i instead of J H
    (dptheory.spectral_response, neglected term (ii)): ``top_curvatures`` u_jᵀ H_i u_j and
    ``top_radial_curvatures`` (u_jᵀ ĝ_i)(ĝ_iᵀ H_i u_j), ĝ_i = g_i/R_i. Optional (n, s) ``bulk_sketch``
    y_i = Ω (I − U_k U_kᵀ) g_i (Ω: s × d, orthonormal rows spanning the bulk, or i.i.d. N(0, 1/s)
    entries): gives the bulk part of the clipping bias at every C (dptheory.spectral_response); without
    it the bulk carries no bias. The statistics may be over a
    uniform subsample of the training set (the means are then estimates). Raises ``ValueError`` on
    shapes, non-finite or negative norms, fewer than 2 examples, or Σ_j p_ij² > R_i².

    Example:
        >>> s = GradientStatistics(norms=np.array([1.0, 2.0]), top_projections=np.array([[0.5], [-1.0]]))
        >>> s.n_examples, s.top_dim
        (2, 1)
    """

    norms: np.ndarray
    top_projections: np.ndarray
    top_curvatures: np.ndarray | None = None
    top_radial_curvatures: np.ndarray | None = None
    bulk_sketch: np.ndarray | None = None

    def __post_init__(self) -> None:
        r = _array("norms", self.norms, 1)
        p = _array("top_projections", self.top_projections, 2)
        if np.any(r < 0):
            raise ValueError(f"norms must be >= 0, got e.g. {r[r < 0][:3].tolist()}")
        if r.size < 2:
            raise ValueError(f"gradient statistics need n >= 2 examples, got {r.size}")
        if p.shape[0] != r.size:
            raise ValueError(f"top_projections must have shape (n={r.size}, k), got {p.shape}")
        p2 = p * p
        top = p2.sum(axis=1)
        bad = top > r * r * (1 + _PROJECTION_SLACK) + 1e-300
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"sum_j p_ij^2 must be <= norms_i^2, got {top[i]!r} > {r[i] ** 2!r} for example {i}")
        pair = (self.top_curvatures, self.top_radial_curvatures)
        if (pair[0] is None) != (pair[1] is None):
            raise ValueError("top_curvatures and top_radial_curvatures go together (both or neither)")
        if pair[0] is not None:
            for name in ("top_curvatures", "top_radial_curvatures"):
                arr = _array(name, getattr(self, name), 2)
                if arr.shape != p.shape:
                    raise ValueError(f"{name} must have shape {p.shape}, got {arr.shape}")
                object.__setattr__(self, name, arr)
        if self.bulk_sketch is not None:
            sk = _array("bulk_sketch", self.bulk_sketch, 2)
            if sk.shape[0] != r.size:
                raise ValueError(f"bulk_sketch must have shape (n={r.size}, s), got {sk.shape}")
            object.__setattr__(self, "bulk_sketch", sk)
        object.__setattr__(self, "norms", r)
        object.__setattr__(self, "top_projections", p)
        energy = np.maximum(r * r - top, 0.0)
        object.__setattr__(self, "_bulk_energy", energy)
        sums = SortedGradientSums(
            norms=r,
            projections=p,
            bulk_energy=energy,
            top_curvatures=self.top_curvatures,
            top_radial_curvatures=self.top_radial_curvatures,
            bulk_sketch=self.bulk_sketch,
        )
        object.__setattr__(self, "_sums", sums)

    @property
    def n_examples(self) -> int:
        """Number of examples the statistics are over."""
        return int(self.norms.size)

    @property
    def top_dim(self) -> int:
        """k: number of top directions projected on."""
        return int(self.top_projections.shape[1])

    @property
    def sums(self) -> SortedGradientSums:
        """The statistics sorted by norm with block prefix sums (dptheory.spectral_response), built once."""
        sums: SortedGradientSums = self._sums  # type: ignore[attr-defined]  # set in __post_init__, not a field
        return sums

    @property
    def bulk_energy(self) -> np.ndarray:
        """E_i = R_i² − Σ_j p_ij² ≥ 0 (n,): the per-example gradient energy outside the top-k."""
        energy: np.ndarray = self._bulk_energy  # type: ignore[attr-defined]  # set in __post_init__, not a field
        return energy


@dataclass(frozen=True)
class GaussianGradients:
    """Isotropic Gaussian per-example gradients g_i(w*) = s ζ_i, ζ_i ~ N(0, I) (the records.Basin law).

    ``std`` s; ``support``: "all" (ζ spans all d directions: records.Basin spread "ambient") or
    "top" (only the top-k: spread "basin"). Evaluated exactly (dptheory.spectral_response.
    gaussian_clip_response), so the spectral model reproduces dptheory.clipped_dynamics.

    Example:
        >>> GaussianGradients(std=0.1).support
        'all'
    """

    std: float
    support: str = "all"

    def __post_init__(self) -> None:
        s = float(self.std)
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"std must be finite and >= 0, got {self.std!r}")
        if self.support not in ("all", "top"):
            raise ValueError(f"support must be 'all' or 'top', got {self.support!r}")
        object.__setattr__(self, "std", s)


@dataclass(frozen=True, eq=False)
class SpectralBasin:
    """A measured quadratic model of the training loss near w*: L(w*+e) − L(w*) ≈ ½ eᵀHe.

    ``dim`` d (number of kept parameters); ``top_eigenvalues`` (k,) exact top-k Hessian eigenvalues
    (Lanczos), descending; ``bulk_eigenvalues`` (m,) SLQ nodes for the other d − k directions;
    ``bulk_weights`` (m,) how many of the d − k directions each node stands for (sums to d − k,
    relative tolerance 1e-6); ``gradients`` a :class:`GradientStatistics` (or
    :class:`GaussianGradients`); ``n_train`` n ≥ 2 (the training-set size, setting q = B/n; ``inf``
    for a streaming law); ``bulk_noise``: how the bulk's per-example energy ‖g_i‖² − Σ_j (u_jᵀg_i)²
    spreads over the bulk directions, "curvature" (share ∝ λ_l, Fisher ≈ Hessian; needs a positive
    bulk curvature when there is bulk energy) or "uniform" (share 1/(d − k)). Directions with λ < 0
    are outside the model: a ``RuntimeWarning`` names their weight, and they are excluded.

    Example:
        >>> g = GradientStatistics(norms=np.ones(4), top_projections=np.full((4, 1), 0.5))
        >>> b = SpectralBasin(dim=3, top_eigenvalues=np.array([1.0]), bulk_eigenvalues=np.array([0.1]),
        ...                   bulk_weights=np.array([2.0]), gradients=g, n_train=100)
        >>> b.top_dim, b.bulk_dim, b.negative_weight
        (1, 2.0, 0.0)
    """

    dim: int
    top_eigenvalues: np.ndarray
    bulk_eigenvalues: np.ndarray
    bulk_weights: np.ndarray
    gradients: GradientStatistics | GaussianGradients
    n_train: float
    bulk_noise: str = "curvature"
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        d = check_int("dim", self.dim, minimum=1)
        top = _array("top_eigenvalues", self.top_eigenvalues, 1)
        nodes = _array("bulk_eigenvalues", self.bulk_eigenvalues, 1)
        weights = _array("bulk_weights", self.bulk_weights, 1)
        k = top.size
        if k > d:
            raise ValueError(f"the number of top eigenvalues must be <= dim={d}, got {k}")
        if np.any(np.diff(top) > 0):
            raise ValueError(f"top_eigenvalues must be in descending order, got {top[:5].tolist()}...")
        if nodes.shape != weights.shape:
            raise ValueError(
                f"bulk_eigenvalues and bulk_weights must have equal shapes, got {nodes.shape}, {weights.shape}"
            )
        if np.any(weights < 0):
            raise ValueError(f"bulk_weights must be >= 0, got e.g. {weights[weights < 0][:3].tolist()}")
        if abs(float(weights.sum()) - (d - k)) > 1e-6 * max(d - k, 1):
            raise ValueError(f"bulk_weights must sum to dim - k = {d - k}, got {float(weights.sum())!r}")
        n = float(self.n_train)
        if math.isnan(n) or n < 2 or (math.isfinite(n) and n != int(n)):
            raise ValueError(f"n_train must be an integer >= 2 (or inf), got {self.n_train!r}")
        if self.bulk_noise not in BULK_NOISES:
            raise ValueError(f"bulk_noise must be one of {', '.join(BULK_NOISES)}, got {self.bulk_noise!r}")
        grads = self.gradients
        if isinstance(grads, GradientStatistics):
            if grads.top_dim != k:
                raise ValueError(f"gradients.top_projections must have k={k} columns, got {grads.top_dim}")
            if math.isfinite(n) and grads.n_examples > n:
                raise ValueError(f"gradient statistics over {grads.n_examples} examples exceed n_train={n:g}")
        elif not isinstance(grads, GaussianGradients):
            raise ValueError(f"gradients must be GradientStatistics or GaussianGradients, got {type(grads).__name__}")
        lam = np.concatenate([top, nodes])
        weight = np.concatenate([np.ones(k), weights])
        negative = float(weight[lam < 0].sum())
        positive = np.maximum(nodes, 0.0)
        if self.bulk_noise == "uniform" or nodes.size == 0:
            shares = np.full(nodes.size, 1.0 / max(d - k, 1))
        else:
            total = float(np.sum(weights * positive))
            has_energy = isinstance(grads, GradientStatistics) and float(grads.bulk_energy.max()) > 0
            if total <= 0 and has_energy:
                raise ValueError(
                    "bulk_noise='curvature' needs a positive bulk curvature to spread the bulk energy over"
                )
            shares = positive / total if total > 0 else np.zeros(nodes.size)
        if negative > 0:
            warnings.warn(
                f"SpectralBasin: {negative:g} of {d} directions have negative curvature; they are outside the "
                "quadratic model and excluded from the dynamics and the loss",
                RuntimeWarning,
                stacklevel=3,
            )
        for name, value in (
            ("dim", d),
            ("top_eigenvalues", top),
            ("bulk_eigenvalues", nodes),
            ("bulk_weights", weights),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "n_train", n)
        self._derived.update(curvatures=lam, weights=weight, shares=shares, negative=negative)

    @property
    def top_dim(self) -> int:
        """k: number of exactly known top directions."""
        return int(self.top_eigenvalues.size)

    @property
    def bulk_dim(self) -> float:
        """d − k: number of directions the bulk nodes stand for."""
        return float(self.bulk_weights.sum())

    @property
    def negative_weight(self) -> float:
        """Number of directions with λ < 0 (excluded from the model)."""
        return float(self._derived["negative"])

    @property
    def curvatures(self) -> np.ndarray:
        """λ of every modelled direction: the top-k, then one entry per bulk node (k + m,)."""
        return np.asarray(self._derived["curvatures"])

    @property
    def weights(self) -> np.ndarray:
        """How many directions each entry of :attr:`curvatures` stands for (1 for the top-k)."""
        return np.asarray(self._derived["weights"])

    @property
    def bulk_shares(self) -> np.ndarray:
        """π_l: share of a bulk example's energy in one direction of node l (Σ_l w_l π_l = 1)."""
        return np.asarray(self._derived["shares"])


def spectral_basin_from_basin(*, basin: Basin, n_train: float = math.inf) -> SpectralBasin:
    """The records.Basin law as a SpectralBasin: top = curvatures (sorted), bulk = λ_flat × (d − r).

    Per-example gradients at w* are s ζ_i with ζ_i ~ N(0, I_d) (spread "ambient": support "all")
    or on the curved directions only ("basin": support "top"), evaluated exactly
    (:class:`GaussianGradients`); ``n_train`` = inf is the streaming law of dptheory.clipped_dynamics.

    Example:
        >>> sb = spectral_basin_from_basin(basin=Basin(dim=10, curvatures=(0.5, 1.0), sample_std=1.0))
        >>> sb.top_eigenvalues.tolist(), sb.bulk_weights.tolist()
        ([1.0, 0.5], [8.0])
    """
    if not isinstance(basin, Basin):
        raise ValueError(f"basin must be a dptheory.records.Basin, got {type(basin).__name__}")
    top = np.sort(basin.curvature_array)[::-1]
    flat = basin.flat_dim
    support = "all" if basin.spread == "ambient" else "top"
    return SpectralBasin(
        dim=basin.dim,
        top_eigenvalues=top,
        bulk_eigenvalues=np.full(1 if flat else 0, basin.flat_curvature),
        bulk_weights=np.full(1 if flat else 0, float(flat)),
        gradients=GaussianGradients(std=basin.sample_std, support=support),
        n_train=n_train,
        bulk_noise="uniform",
    )
