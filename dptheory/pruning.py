"""Magnitude pruning as dimension reduction for DP-SGD on a low-rank quadratic (claim 4).

Weight-space model: w ∈ R^d, training loss L(w) = ½ (w − w*)ᵀ H (w − w*), H = U diag(λ) Uᵀ of rank r,
U ∈ R^{d×r} orthonormal — ``basis="aligned"`` (U = the first r coordinate axes) or ``"rotated"`` (a
seeded random orthonormal U). Per-sample gradients H(w − w*) + s ζ as in records.py.

Magnitude pruning keeps the k largest |coordinates| of a *reference* point and fixes the other d − k
weights at 0. Three references, with very different privacy status (each mask function returns the
mask and a ``privacy`` label):

* ``oracle_mask`` — w* itself: NOT private (data-dependent); an upper bound for any private mask;
* ``noisy_mask`` — w* + noise, e.g. the weights of a first private run: private only if that release
  was DP, and its ε must be composed with the training run's ε;
* ``init_mask`` — the initialisation: data-independent, costs no privacy.

Pruned to the kept set K (pruned set P), the loss splits exactly (proofs/pruning_decomposition.py):

    L(w) = bias + ½ (w_K − w_K^opt)ᵀ H_KK (w_K − w_K^opt),  bias = ½ w*_Pᵀ (H_PP − H_PK H_KK⁺ H_KP) w*_P,

so the DP-SGD error after pruning is the bias plus the stationary loss of the restricted quadratic
(Hessian H_KK, per-sample noise on k coordinates instead of d: norms ∝ √k instead of √d). Pruning
helps when the removed coordinates carry little of w* in the curved directions — the basin is
low-dimensional and aligned with the large weights. A caveat this model makes
precise: the training bias is zero whenever the kept coordinates span the r curved directions
(U_K of rank r — generic for a rotated basin once k ≥ r), so alignment shows up only in the held-out
loss (records.py's κ), the conditioning of H_KK and the transient — see ``pruned_excess_loss``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from dptheory.clipped_dynamics import effective_linear_model, flat_error_sq, stationary_excess_loss
from dptheory.clipping import clipped_gaussian_second_moment
from dptheory.records import SPREADS, Basin, Optimizer
from dptheory.validate import check_int, check_nonnegative, check_positive

__all__ = [
    "BASES",
    "PROFILES",
    "KeepCurve",
    "Mask",
    "PrunedLoss",
    "PruningVerdict",
    "curvature_basis",
    "init_mask",
    "keep_curve",
    "magnitude_mask",
    "noisy_mask",
    "optimal_keep_fraction",
    "optimum_profile",
    "oracle_mask",
    "pruned_excess_loss",
    "pruning_bias",
    "pruning_helps",
    "random_mask",
    "restricted_curvatures",
]

BASES = ("aligned", "rotated")
PROFILES = ("sparse", "power-law", "gaussian")
PLACEMENTS = ("curved", "flat", "random")
_EIG_RTOL = 1e-10  # eigenvalues of H_KK below this × max λ count as zero (flat in the kept space)


# ---------------------------------------------------------------------------------------------
# the problem: basis and optimum
# ---------------------------------------------------------------------------------------------


def curvature_basis(*, dim: int, rank: int, basis: str = "aligned", seed: int | None = None) -> np.ndarray:
    """Orthonormal U ∈ R^{d×r} spanning range(H): coordinate axes 0…r−1 (aligned) or random (rotated).

    ``rotated``: Q of the QR factorisation of a d×r standard Gaussian matrix (seeded by ``seed``),
    with column signs fixed so diag(R) > 0 — Haar distributed on the Stiefel manifold.
    d = ``dim``, r = ``rank``. Reference: standard (Mezzadri 2007, arXiv math-ph/0609050v2, §5).

    Example:
        >>> curvature_basis(dim=3, rank=2).tolist()
        [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """
    d = check_int("dim", dim, minimum=1)
    r = check_int("rank", rank, minimum=1)
    if r > d:
        raise ValueError(f"rank must be <= dim, got rank={rank} > dim={dim}")
    if basis == "aligned":
        return np.eye(d, r)
    if basis != "rotated":
        raise ValueError(f"basis must be one of {', '.join(BASES)}, got {basis!r}")
    rng = np.random.default_rng(seed)
    q, rr = np.linalg.qr(rng.standard_normal((d, r)))
    return q * np.sign(np.where(np.diag(rr) == 0, 1.0, np.diag(rr)))


def optimum_profile(
    *,
    dim: int,
    rank: int,
    profile: str,
    scale: float = 1.0,
    nonzeros: int | None = None,
    exponent: float = 1.0,
    placement: str = "curved",
    seed: int | None = None,
) -> np.ndarray:
    """An optimum w* ∈ R^d with a given magnitude profile and placement of its large entries.

    * ``"sparse"``: ``nonzeros`` = k* entries of magnitude ``scale`` (random signs), the rest 0;
    * ``"power-law"``: sorted magnitudes |w*|_(j) = scale · j^{−α}, j = 1…d, α = ``exponent``;
    * ``"gaussian"``: i.i.d. N(0, scale²) (no placement).

    ``placement`` puts the largest entries on coordinates 0, 1, … (``"curved"``: the curved axes of
    the aligned basis), on coordinates r, r+1, … (``"flat"``: off the curved axes, wrapping around),
    or on a random permutation (``"random"``). r = ``rank``. Random signs and permutations use
    ``seed``.

    Example:
        >>> optimum_profile(dim=5, rank=2, profile="sparse", nonzeros=2, placement="flat", seed=0) != 0
        array([False, False,  True,  True, False])
    """
    d = check_int("dim", dim, minimum=1)
    r = check_int("rank", rank, minimum=1)
    a = check_positive("scale", scale)
    rng = np.random.default_rng(seed)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if profile == "gaussian":
        return a * rng.standard_normal(d)
    if profile == "sparse":
        if nonzeros is None:
            raise ValueError("nonzeros must be given for profile='sparse', got None")
        k = check_int("nonzeros", nonzeros, minimum=0)
        if k > d:
            raise ValueError(f"nonzeros must be <= dim={d}, got {nonzeros!r}")
        mags = np.zeros(d)
        mags[:k] = a
    else:
        alpha = check_nonnegative("exponent", exponent)
        mags = a * np.arange(1, d + 1, dtype=float) ** (-alpha)
    signs = rng.choice([-1.0, 1.0], size=d)
    if placement == "curved":
        order = np.arange(d)
    elif placement == "flat":
        order = (np.arange(d) + min(r, d)) % d
    else:
        order = rng.permutation(d)
    w = np.zeros(d)
    w[order] = mags * signs
    return w


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------


class Mask(NamedTuple):
    """A pruning mask (``keep[j]`` True = weight j kept) and its privacy status in words."""

    keep: np.ndarray
    privacy: str


def _vector(name: str, x: Any, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a finite non-empty 1-D array, got shape {arr.shape}")
    if dim is not None and arr.size != dim:
        raise ValueError(f"{name} must have length {dim}, got {arr.size}")
    return arr


def magnitude_mask(*, reference: Any, keep: int) -> np.ndarray:
    """Boolean mask of the ``keep`` = k largest |reference_j| (ties: lower index first).

    Example:
        >>> magnitude_mask(reference=[0.1, -3.0, 2.0, 0.5], keep=2).tolist()
        [False, True, True, False]
    """
    ref = _vector("reference", reference)
    k = check_int("keep", keep, minimum=0)
    if k > ref.size:
        raise ValueError(f"keep must be <= len(reference)={ref.size}, got {keep!r}")
    order = np.argsort(-np.abs(ref), kind="stable")
    mask = np.zeros(ref.size, dtype=bool)
    mask[order[:k]] = True
    return mask


def oracle_mask(*, optimum: Any, keep: int) -> Mask:
    """Keep the k largest |w*_j|. NOT private: the mask is a function of the data (through w*).

    Example:
        >>> oracle_mask(optimum=[0.0, 2.0, -1.0], keep=1).keep.tolist()
        [False, True, False]
    """
    return Mask(
        magnitude_mask(reference=optimum, keep=keep),
        "oracle: NOT private (uses w*, data-dependent); an upper bound for any private mask",
    )


def noisy_mask(
    *,
    optimum: Any,
    keep: int,
    noise_std: float,
    seed: int | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
) -> Mask:
    """Keep the k largest |w*_j + noise_std·ξ_j|, ξ ~ N(0, I) seeded: a noisy estimate of w*.

    Stands in for the weights of a first (private) training run. The label records that the mask is
    private only if that estimate was a DP release, whose (ε, δ) = (``epsilon``, ``delta``) must be
    composed with the training run's (dptheory.privacy / dp-accounting; not done here).

    Example:
        >>> m = noisy_mask(optimum=[0.0, 5.0, -4.0], keep=2, noise_std=0.1, seed=0, epsilon=1.0, delta=1e-5)
        >>> m.keep.tolist(), m.privacy.startswith("noisy")
        ([False, True, True], True)
    """
    w = _vector("optimum", optimum)
    sd = check_nonnegative("noise_std", noise_std)
    est = w + sd * np.random.default_rng(seed).standard_normal(w.size)
    if epsilon is None:
        label = "noisy estimate of w*: privacy NOT accounted (no epsilon given)"
    else:
        eps = check_positive("epsilon", epsilon)
        dl = "?" if delta is None else f"{check_nonnegative('delta', delta):g}"
        label = (
            f"noisy estimate of w*: private only if a DP release; compose its (epsilon={eps:g}, delta={dl}) "
            "with training"
        )
    return Mask(magnitude_mask(reference=est, keep=keep), label)


def random_mask(*, dim: int, keep: int, seed: int | None = None) -> Mask:
    """Keep ``keep`` = k coordinates drawn uniformly without replacement: data-independent, no privacy cost.

    Example:
        >>> int(random_mask(dim=10, keep=3, seed=0).keep.sum())
        3
    """
    d = check_int("dim", dim, minimum=1)
    k = check_int("keep", keep, minimum=0)
    if k > d:
        raise ValueError(f"keep must be <= dim={d}, got {keep!r}")
    mask = np.zeros(d, dtype=bool)
    mask[np.random.default_rng(seed).choice(d, size=k, replace=False)] = True
    return Mask(mask, "random: data-independent, no privacy cost")


def init_mask(*, init: Any, keep: int) -> Mask:
    """Keep the k largest |initial weights|: data-independent, so it costs no privacy.

    Example:
        >>> init_mask(init=[1.0, -2.0, 0.5], keep=1).privacy
        'data-independent (initialisation): free'
    """
    return Mask(magnitude_mask(reference=init, keep=keep), "data-independent (initialisation): free")


# ---------------------------------------------------------------------------------------------
# bias, restricted problem, total
# ---------------------------------------------------------------------------------------------


def _problem(
    curvatures: Any, basis: Any, optimum: Any, mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lam = np.atleast_1d(np.asarray(curvatures, dtype=float))
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError(f"curvatures must be a non-empty 1-D array of finite values > 0, got {curvatures!r}")
    u = np.asarray(basis, dtype=float)
    if u.ndim != 2 or u.shape[1] != lam.size or not np.all(np.isfinite(u)):
        raise ValueError(f"basis must be a finite d×r array with r = len(curvatures) = {lam.size}, got shape {u.shape}")
    d = u.shape[0]
    if not np.allclose(u.T @ u, np.eye(lam.size), atol=1e-8):
        raise ValueError("basis must have orthonormal columns (Uᵀ U = I)")
    w = _vector("optimum", optimum, d)
    m = np.asarray(mask.keep if isinstance(mask, Mask) else mask)
    if m.shape != (d,) or m.dtype != bool:
        raise ValueError(f"mask must be a boolean array of length {d}, got shape {m.shape} and dtype {m.dtype}")
    return lam, u, w, m


def pruning_bias(*, curvatures: Any, basis: Any, optimum: Any, mask: Any) -> float:
    """Best loss reachable with the pruned weights fixed at 0: the Schur complement of H_KK.

        bias = min_{w_K} L(w_K, w_P = 0) = ½ w*_Pᵀ (H_PP − H_PK H_KK⁺ H_KP) w*_P
             = ½ ‖(I − A A⁺) b‖²,   A = Λ^{1/2} U_Kᵀ,  b = Λ^{1/2} U_Pᵀ w*_P,

    H = U diag(λ) Uᵀ; λ = ``curvatures``, U = ``basis`` (d×r orthonormal), w* = ``optimum``, K = kept
    (``mask`` True, a bool array or a :class:`Mask`), P = pruned. The second form (an r×k least
    squares, cost O(r²k)) never builds the d×d Hessian. Aligned basis: ½ Σ_{pruned curved j} λ_j w*_j².
    Exact. Reference: derived here, proved in proofs/pruning_decomposition.py.

    Example:
        >>> U = curvature_basis(dim=4, rank=2)
        >>> pruning_bias(curvatures=[2.0, 1.0], basis=U, optimum=[1.0, 3.0, 5.0, 0.0],
        ...              mask=[True, False, True, True])      # ½ λ₂ w*₂²
        4.5
    """
    lam, u, w, keep = _problem(curvatures, basis, optimum, mask)
    root = np.sqrt(lam)
    b = root * (u[~keep].T @ w[~keep])
    if not np.any(keep):
        return float(0.5 * b @ b)
    a = root[:, None] * u[keep].T
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    resid = a @ x - b
    return float(0.5 * resid @ resid)


def restricted_curvatures(*, curvatures: Any, basis: Any, mask: Any) -> np.ndarray:
    """Nonzero eigenvalues of H_KK = U_K diag(λ) U_Kᵀ (the curved directions left in the kept space).

    Computed from the r×r matrix Λ^{1/2} U_Kᵀ U_K Λ^{1/2} (same nonzero spectrum); eigenvalues below
    1e-10 × max λ count as flat. Aligned basis: the λ_i of the kept curved axes. Rotated basis: k
    kept of d coordinates shrink each λ by ≈ k/d (U_Kᵀ U_K ≈ (k/d) I).

    Example:
        >>> restricted_curvatures(curvatures=[2.0, 1.0], basis=curvature_basis(dim=4, rank=2),
        ...                       mask=[True, False, True, True]).round(12).tolist()
        [2.0]
    """
    lam, u, _, keep = _problem(curvatures, basis, np.zeros(np.asarray(basis).shape[0]), mask)
    root = np.sqrt(lam)
    uk = u[keep]
    g = (root[:, None] * (uk.T @ uk)) * root[None, :]
    ev = np.linalg.eigvalsh(g)
    return np.sort(ev[ev > _EIG_RTOL * lam.max()])[::-1]


class PrunedLoss(NamedTuple):
    """Predicted DP-SGD loss after pruning: ``total`` = ``bias`` + ``variance`` + ``heldout_bias`` + ``heldout_walk``.

    ``heldout_walk`` = ½ κ E‖e_flat,K(T)‖²: the random walk of the k − r_K kept flat coordinates after
    ``steps`` = T (0 when κ = 0 or no horizon is given).
    ``relaxation_steps`` = 1/(η γ λ_min(H_KK)): the e-folding time of the slowest kept curved
    direction (the price of a badly conditioned H_KK, which the stationary loss does not show).
    """

    total: float
    bias: float
    variance: float
    keep: int
    restricted_rank: int
    heldout_bias: float
    relaxation_steps: float
    heldout_walk: float


def _compensation(lam: np.ndarray, u: np.ndarray, w: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Error e = w_opt − w* at the restricted optimum: −w*_P on P, min-norm A⁺b on K (module doc)."""
    e = np.where(keep, 0.0, -w)
    if np.any(keep):
        root = np.sqrt(lam)
        a = root[:, None] * u[keep].T
        b = root * (u[~keep].T @ w[~keep])
        x, *_ = np.linalg.lstsq(a, b, rcond=None)
        e[keep] = x
    return e


def pruned_excess_loss(
    *,
    curvatures: Any,
    basis: Any,
    optimum: Any,
    mask: Any,
    sample_std: float,
    optimizer: Optimizer,
    spread: str = "ambient",
    sampling: str = "fixed",
    heldout_flat_curvature: float = 0.0,
    steps: int | None = None,
) -> PrunedLoss:
    """Stationary excess loss of DP-SGD on the pruned problem: bias + restricted stationary loss.

        E L∞ = ½ w*_Pᵀ (H_PP − H_PK H_KK⁺ H_KP) w*_P  +  L∞(restricted)
               [+ ½ κ ‖(I − UUᵀ) e_opt‖²  held-out only],

    an exact split (proofs/pruning_decomposition.py). The restricted problem is a quadratic in the k
    kept coordinates with Hessian H_KK (curvatures :func:`restricted_curvatures`, rank r_K ≤ min(r, k))
    centred at the restricted optimum; its stationary loss is
    ``clipped_dynamics.stationary_excess_loss`` of ``Basin(dim=k, curvatures=eig⁺(H_KK),
    sample_std=s, spread=spread)`` — per-sample norms ∝ √k instead of √d.

    Held-out loss (κ = ``heldout_flat_curvature`` > 0, records.py: curved where training is flat):
    adds ½ κ ‖(I − UUᵀ) e_opt‖² for the error e_opt = w_opt − w* of the restricted optimum: −w*_P on
    the pruned weights and, on the kept ones, the minimum-norm compensation H_KK⁺ H_KP w*_P.
    Note: the training bias vanishes whenever U_K has rank r — generic for a
    *rotated* basin once k ≥ r — because the kept weights can compensate for the pruned ones inside
    the r curved directions; the cost of that compensation appears only in the held-out term, in
    ``relaxation_steps`` (λ(H_KK) ≈ λ k/d for a rotated basis) and in the transient, not in the
    stationary training loss. With a horizon ``steps`` = T the held-out loss also gets the random walk
    of the k − r_K kept flat coordinates, ½ κ (k − r_K) η² τ_flat² T (clipped_dynamics.flat_error_sq,
    started at 0): the d − k pruned coordinates do not walk, which is the held-out benefit of pruning.

    Which parts are exact: ``spread="ambient"`` — the kept-coordinate noise s ζ_K ~ N(0, s² I_k) is
    isotropic, so any (rotated) H_KK reduces exactly to an axis-aligned Basin (then only the
    mean-field approximation of clipped_dynamics remains). ``spread="basin"`` — the noise s U_K ζ_r
    has covariance s² U_K U_Kᵀ: for the aligned basis a projector on the kept curved axes (exact);
    for a rotated basis it is *not* isotropic on range(H_KK) (eigenvalues of U_KᵀU_K ≈ k/d) and is
    replaced by isotropic noise of the same total energy, s_eff² = s² tr(U_KᵀU_K)/r_K
    (approximation). Arguments: λ = ``curvatures``, U = ``basis``, w* = ``optimum``, ``mask`` (kept
    = True), s = ``sample_std``, ``optimizer`` (records.Optimizer), ``spread``, ``sampling``.
    Reference: derived here; TP-TopK 2026 (arXiv 2606.04375) for the
    noise ∝ active dimension.

    Example:
        >>> from dptheory.records import Optimizer
        >>> U = curvature_basis(dim=1000, rank=2)
        >>> w = optimum_profile(dim=1000, rank=2, profile="sparse", nonzeros=2, seed=0)
        >>> opt = Optimizer(lr=1.0, batch_size=64, clip_norm=0.1, noise_multiplier=20.0)
        >>> full = pruned_excess_loss(curvatures=[1.0, 1.0], basis=U, optimum=w, mask=np.ones(1000, bool),
        ...                           sample_std=1.0, optimizer=opt)
        >>> pruned = pruned_excess_loss(curvatures=[1.0, 1.0], basis=U, optimum=w,
        ...                             mask=oracle_mask(optimum=w, keep=10), sample_std=1.0, optimizer=opt)
        >>> pruned.bias, round(full.total / pruned.total, 1)     # no bias, ≈ √(1000/10) less variance
        (0.0, 9.4)
    """
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be a dptheory.records.Optimizer, got {type(optimizer).__name__}")
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {', '.join(SPREADS)}, got {spread!r}")
    s = check_nonnegative("sample_std", sample_std)
    kappa = check_nonnegative("heldout_flat_curvature", heldout_flat_curvature)
    lam, u, w, keep = _problem(curvatures, basis, optimum, mask)
    bias = pruning_bias(curvatures=lam, basis=u, optimum=w, mask=keep)
    held = 0.0
    if kappa > 0:
        e = _compensation(lam, u, w, keep)
        proj = u.T @ e
        held = 0.5 * kappa * max(float(e @ e - proj @ proj), 0.0)
    horizon = None if steps is None else check_int("steps", steps, minimum=0)
    k = int(keep.sum())
    ev = restricted_curvatures(curvatures=lam, basis=u, mask=keep) if k else np.zeros(0)
    if k == 0 or ev.size == 0:  # nothing curved left: training loss stays at the bias
        walk = 0.0
        if kappa > 0 and horizon and k:  # pure walk of k coordinates driven by clipped s ζ_K and DP noise
            b = optimizer.batch_size
            m2 = float(
                clipped_gaussian_second_moment(dim=k, mean_norm=0.0, std=s, clip_norm=optimizer.effective_clip_norm)
            )
            walk = 0.5 * kappa * optimizer.lr**2 * horizon * (m2 / b + k * optimizer.noise_std**2 / b**2)
        return PrunedLoss(bias + held + walk, bias, 0.0, k, 0, held, math.inf, walk)
    s_eff = s
    if spread == "basin":
        uk = u[keep]
        s_eff = s * math.sqrt(float(np.trace(uk.T @ uk)) / ev.size)
    sub = Basin(dim=k, curvatures=tuple(ev), sample_std=s_eff, spread=spread)
    var = stationary_excess_loss(basin=sub, optimizer=optimizer, sampling=sampling)
    gamma = effective_linear_model(basin=sub, optimizer=optimizer, sampling=sampling).drift[-1] / ev[-1]
    relax = 1.0 / (optimizer.lr * gamma * float(ev.min()))
    walk = 0.0
    if kappa > 0 and horizon and sub.flat_dim:
        walk = 0.5 * kappa * float(flat_error_sq(basin=sub, optimizer=optimizer, steps=horizon, sampling=sampling)[0])
    return PrunedLoss(bias + var + held + walk, bias, var, k, int(ev.size), held, relax, walk)


class KeepCurve(NamedTuple):
    """Predicted loss over numbers of kept weights; ``best_keep`` minimises ``total`` on the grid."""

    keeps: np.ndarray
    total: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    best_keep: int
    best_fraction: float


def keep_curve(
    *,
    curvatures: Any,
    basis: Any,
    optimum: Any,
    sample_std: float,
    optimizer: Optimizer,
    reference: Any = None,
    keeps: Any = None,
    spread: str = "ambient",
    sampling: str = "fixed",
    heldout_flat_curvature: float = 0.0,
    steps: int | None = None,
) -> KeepCurve:
    """:func:`pruned_excess_loss` for magnitude masks of ``reference`` (default: w*, the oracle).

    ``keeps``: the numbers k of kept weights to evaluate (default: 48 log-spaced integers from 1 to
    d, always including d). Returns the curve and its minimiser over the grid.

    Example:
        >>> from dptheory.records import Optimizer
        >>> U = curvature_basis(dim=100, rank=1)
        >>> w = optimum_profile(dim=100, rank=1, profile="power-law", exponent=1.0, seed=0)
        >>> opt = Optimizer(lr=1.0, batch_size=16, clip_norm=0.1, noise_multiplier=4.0)
        >>> c = keep_curve(curvatures=[1.0], basis=U, optimum=w, sample_std=1.0, optimizer=opt, keeps=[1, 10, 100])
        >>> c.best_keep, bool(c.bias[0] == 0.0)
        (1, True)
    """
    u = np.asarray(basis, dtype=float)
    d = u.shape[0] if u.ndim == 2 else 0
    ref = np.asarray(optimum if reference is None else reference, dtype=float)
    if keeps is None:
        grid = np.unique(np.round(np.geomspace(1, d, 48)).astype(int)) if d else np.array([], int)
        grid = np.unique(np.append(grid, d))
    else:
        grid = np.unique(np.asarray([check_int("keeps", k, minimum=1) for k in np.atleast_1d(keeps)], dtype=int))
    if grid.size == 0 or grid.max() > d:
        raise ValueError(f"keeps must be integers in 1..{d}, got {keeps!r}")
    rows = []
    for k in grid.tolist():
        mask = magnitude_mask(reference=ref, keep=k)
        rows.append(
            pruned_excess_loss(
                curvatures=curvatures,
                basis=u,
                optimum=optimum,
                mask=mask,
                sample_std=sample_std,
                optimizer=optimizer,
                spread=spread,
                sampling=sampling,
                heldout_flat_curvature=heldout_flat_curvature,
                steps=steps,
            )
        )
    total = np.array([p.total for p in rows])
    best = int(grid[int(np.argmin(total))])
    return KeepCurve(
        grid, total, np.array([p.bias for p in rows]), np.array([p.variance for p in rows]), best, best / d
    )


def optimal_keep_fraction(
    *,
    curvatures: Any,
    basis: Any,
    optimum: Any,
    sample_std: float,
    optimizer: Optimizer,
    reference: Any = None,
    spread: str = "ambient",
    sampling: str = "fixed",
    heldout_flat_curvature: float = 0.0,
    steps: int | None = None,
) -> float:
    """Keep fraction k/d minimising the predicted pruned loss, by an exact integer search.

    Searches every k = 1 … d when d ≤ 200; otherwise the 48-point log grid of :func:`keep_curve`
    refined by evaluating every integer between the grid neighbours of the grid minimum (the curve
    bias(k) + variance(k) is piecewise smooth in k; the refinement makes the returned k a true minimum
    over that bracket). Arguments as :func:`keep_curve`. Reference: derived here.

    Example:
        >>> from dptheory.records import Optimizer
        >>> U = curvature_basis(dim=200, rank=2)
        >>> w = optimum_profile(dim=200, rank=2, profile="sparse", nonzeros=2, seed=1)
        >>> opt = Optimizer(lr=1.0, batch_size=64, clip_norm=0.1, noise_multiplier=4.0)
        >>> # k = 5 ≈ B/σ² = 4 kept weights (pruning_helps explains why not k = r = 2)
        >>> optimal_keep_fraction(curvatures=[1.0, 1.0], basis=U, optimum=w, sample_std=1.0, optimizer=opt)
        0.025
    """
    u = np.asarray(basis, dtype=float)
    d = u.shape[0] if u.ndim == 2 else 0
    kw = dict(
        curvatures=curvatures,
        basis=basis,
        optimum=optimum,
        sample_std=sample_std,
        optimizer=optimizer,
        reference=reference,
        spread=spread,
        sampling=sampling,
        heldout_flat_curvature=heldout_flat_curvature,
        steps=steps,
    )
    if d <= 200:
        return keep_curve(keeps=np.arange(1, d + 1), **kw).best_fraction
    coarse = keep_curve(**kw)
    i = int(np.argmin(coarse.total))
    lo = int(coarse.keeps[max(i - 1, 0)])
    hi = int(coarse.keeps[min(i + 1, coarse.keeps.size - 1)])
    return keep_curve(keeps=np.arange(lo, hi + 1), **kw).best_fraction


class PruningVerdict(NamedTuple):
    """Whether pruning lowers the predicted loss, and by how much."""

    helps: bool
    best_keep: int
    best_loss: float
    full_loss: float
    best_bias: float


def pruning_helps(
    *,
    curvatures: Any,
    basis: Any,
    optimum: Any,
    sample_std: float,
    optimizer: Optimizer,
    reference: Any = None,
    keeps: Any = None,
    spread: str = "ambient",
    sampling: str = "fixed",
    heldout_flat_curvature: float = 0.0,
    steps: int | None = None,
) -> PruningVerdict:
    """Does some k < d beat no pruning (k = d)? Claim 4 as a checkable inequality.

        helps  ⇔  min_{k<d} [ bias(k) + L∞^{(k)} ] < L∞^{(d)}.

    In the fully clipped, DP-dominated regime (ambient spread, C ≪ s√k) L∞^{(k)} ≈ r_K η C s √k σ²/(4B²)
    (clipped_dynamics.stationary_excess_loss, approx), so pruning to k helps when
    bias(k) < η C s σ² (r√d − r_K √k)/(4B²) (when σ²k ≫ B). Keeping the clip noise C²/(kB) per
    coordinate, L∞^{(k)} ≈ r_K η C s (1/(√k B) + σ²√k/B²)/4 is minimal at k* = B/σ²: pruning below
    ≈ B/σ² kept weights raises the error again even with zero bias. The pruned weights must carry
    little of w* *in the curved directions* — true when the basin is low-dimensional and aligned with
    the large weights.
    Caveat: for the stationary *training* loss a rotated basin is no obstacle, since any
    k ≥ r generic kept weights compensate exactly inside the r curved directions (bias 0); the
    alignment condition reappears in the held-out loss (``heldout_flat_curvature`` κ > 0: the
    compensation and the pruned w*_P are errors there) and in the conditioning of H_KK
    (``PrunedLoss.relaxation_steps``). Give κ and a horizon ``steps`` to compare held-out losses.
    Arguments as :func:`keep_curve`. Reference: derived here; k* = B/σ² proved in proofs/pruning_optimal_keep.py.

    Example:
        >>> from dptheory.records import Optimizer
        >>> U = curvature_basis(dim=500, rank=2)
        >>> w = optimum_profile(dim=500, rank=2, profile="sparse", nonzeros=2, seed=0)
        >>> opt = Optimizer(lr=1.0, batch_size=64, clip_norm=0.1, noise_multiplier=4.0)
        >>> pruning_helps(curvatures=[1.0, 1.0], basis=U, optimum=w, sample_std=1.0, optimizer=opt).helps
        True
    """
    u = np.asarray(basis, dtype=float)
    d = u.shape[0] if u.ndim == 2 else 0
    curve = keep_curve(
        curvatures=curvatures,
        basis=basis,
        optimum=optimum,
        sample_std=sample_std,
        optimizer=optimizer,
        reference=reference,
        keeps=keeps,
        spread=spread,
        sampling=sampling,
        heldout_flat_curvature=heldout_flat_curvature,
        steps=steps,
    )
    full = pruned_excess_loss(
        curvatures=curvatures,
        basis=basis,
        optimum=optimum,
        mask=np.ones(d, dtype=bool),
        sample_std=sample_std,
        optimizer=optimizer,
        spread=spread,
        sampling=sampling,
        heldout_flat_curvature=heldout_flat_curvature,
        steps=steps,
    )
    sel = curve.keeps < d
    if not np.any(sel):
        return PruningVerdict(False, d, full.total, full.total, full.bias)
    j = int(np.argmin(np.where(sel, curve.total, np.inf)))
    return PruningVerdict(
        bool(curve.total[j] < full.total),
        int(curve.keeps[j]),
        float(curve.total[j]),
        float(full.total),
        float(curve.bias[j]),
    )
