"""Clipping of random vectors: exact moments of clip_C(g) for Gaussian g and for a norm distribution.

The per-sample clip operator of DP-SGD (Abadi et al. 2016, arXiv 1607.00133v2, Alg. 1) is

    clip_C(x) = min(1, C/‖x‖) · x = φ(‖x‖) x,   φ(R) = min(1, C/R)   (φ(0) = 1),

C = ``clip_norm``. Opacus divides by ‖x‖ + 1e-6 instead of ‖x‖; the difference is below 1e-6
relative for ‖x‖ ≫ 1e-6 and is ignored here.

For a Gaussian vector g ~ N(μ, s² I_d) (d = ``dim``, m = ‖μ‖ = ``mean_norm``, s = ``std``) write
λ = m²/s² (the noncentrality, λ_nc in NOTATION.md — not a curvature) and c = C/s. Everything below
is a Poisson(λ/2) mixture of central chi-square quantities (the noncentral chi-square χ'²_k(λ) is
χ²_{k+2J} with J ~ Poisson(λ/2)):

* mean:           E[clip_C(g)] = γ μ,  γ = E[min(1, c/√W)],  W ~ χ'²_{d+2}(λ);
* second moment:  E‖clip_C(g)‖² = s²[ d F_{χ'²_{d+2}(λ)}(c²) + λ F_{χ'²_{d+4}(λ)}(c²) + c² S_{χ'²_d(λ)}(c²) ];
* clip fraction:  P(‖g‖ > C) = S_{χ'²_d(λ)}(c²);
* linear response at μ = 0: α₀ = E[φ(R)(1 − 1{R>C}/d)], R = s‖ζ‖, and α₀ = γ(m = 0).
* also E φ(‖g‖) (``gaussian_mean_clip_factor``), E(‖g‖ − C)₊ (``gaussian_mean_excess``), the
  large-d approximation γ ≈ min(1, C/√(m² + d s²)) with its error (``large_dim_shrinkage``),
  and the same moments for an arbitrary norm distribution or norm samples (``clipped_norm_moments``).

F and S are the CDF and survival function. Derivations: proofs/clipped_gaussian_mean.py,
proofs/clipped_gaussian_second_moment.py, proofs/linear_response_shrinkage.py.

Truncation: each series keeps the Poisson indices j in a window around the mean λ/2 whose omitted
Poisson mass is checked (exact tails ``scipy.special.pdtr``/``pdtrc``) to be ≤ ``_TAIL_MASS`` = 1e-16;
because every per-j term of γ and of the clip fraction lies in [0, 1] the truncation error is at most
2·1e-16 (window mass plus renormalisation). The overall error is set by float64 rounding in scipy's
incomplete gamma functions and the sum: ≲ 2e-14 relative against 30-digit mpmath sums
(tests/test_clipping.py), for d up to 1e5 and λ up to 1e4. For λ > 2e4 the sum over j (> 2800
terms) is replaced by a 481-node trapezoid rule in j (``_poisson_trapezoid``), which agrees with
the exact sum to ~1e-14 and keeps the cost bounded for any λ (std → 0). Against an independent
30-digit integral (d = 2 clip fraction) the error is 1e-16 at λ = 1e6 but up to ~5e-10 at λ = 1e8,
where scipy's incomplete gamma at a ~ 5e7 limits it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import integrate, special

from dptheory.validate import check_int, check_nonnegative, check_positive_or_inf

__all__ = [
    "NormMoments",
    "clip",
    "clip_factor",
    "clip_probability",
    "clipped_gaussian_mean_factor",
    "clipped_gaussian_second_moment",
    "clipped_norm_moments",
    "gaussian_mean_clip_factor",
    "gaussian_mean_excess",
    "large_dim_shrinkage",
    "linear_response_shrinkage",
]

_TAIL_MASS = 1e-16  # omitted Poisson mass allowed on each side of the window
_MAX_WIDEN = 60  # step cap on widening the Poisson window
_MAX_EXACT_MEAN = 1e4  # beyond this Poisson mean (λ > 2e4) the sum over j becomes a trapezoid rule


# ---------------------------------------------------------------------------------------------
# The clip operator
# ---------------------------------------------------------------------------------------------


def clip_factor(norms: Any, *, clip_norm: float) -> Any:
    """Clip factor φ(R) = min(1, C/R) elementwise, with φ(0) = 1.

    ``norms`` = R ≥ 0 (array or scalar), ``clip_norm`` = C > 0 (``inf``: no clipping, φ ≡ 1).
    clip_C(x) = φ(‖x‖) x, so φ is the factor by which DP-SGD scales a per-sample gradient.

    Reference: Abadi et al. 2016, arXiv 1607.00133v2, Algorithm 1 (clip step).

    Example:
        >>> clip_factor([0.0, 0.5, 4.0], clip_norm=2.0).tolist()
        [1.0, 1.0, 0.5]
    """
    c = check_positive_or_inf("clip_norm", clip_norm)
    r = np.asarray(norms, dtype=float)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        bad = r[~(np.isfinite(r) & (r >= 0))].ravel()[:3]
        raise ValueError(f"norms must be finite and >= 0, got e.g. {bad.tolist()}")
    with np.errstate(divide="ignore", over="ignore"):  # the discarded branch may overflow
        out = np.where(r > c, c / np.where(r > 0, r, 1.0), 1.0)
    return float(out) if out.ndim == 0 else out


def clip(x: Any, *, clip_norm: float) -> np.ndarray:
    """Per-sample clipping clip_C(x) = min(1, C/‖x‖)·x along the last axis.

    ``x``: one vector (1-D), or samples as rows (2-D, or any leading batch axes); a 0-d scalar is a
    vector in d = 1, clipped to sign(x)·min(|x|, C). ``clip_norm`` = C > 0, ``inf`` for no clipping.
    x = 0 stays 0. Properties: ‖clip_C(x)‖ = min(‖x‖, C) and ‖clip_C(x) − x‖ = (‖x‖ − C)₊.

    Reference: Abadi et al. 2016, arXiv 1607.00133v2, Algorithm 1.

    Example:
        >>> clip([[3.0, 4.0], [0.3, 0.4]], clip_norm=1.0).tolist()
        [[0.6000000000000001, 0.8], [0.3, 0.4]]
    """
    arr = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError("x must be finite, got a non-finite entry")
    c = check_positive_or_inf("clip_norm", clip_norm)
    if arr.ndim == 0:
        return np.asarray(np.sign(arr) * min(abs(float(arr)), c))
    # ‖x‖ = max|x_i|·‖u‖ with u = x / max|x_i| ∈ [−1, 1]^d: no overflow of ‖x‖² (entries ≳ 1e154)
    # and no precision loss to subnormal squares (entries ≲ 1e-154). Rows whose norm exceeds the
    # float range are longer than any finite C and become C·u/‖u‖.
    if math.isinf(c):
        return arr.copy()
    scale = np.max(np.abs(arr), axis=-1, keepdims=True)
    unit = arr / np.where(scale > 0, scale, 1.0)
    unit_norm = np.linalg.norm(unit, axis=-1, keepdims=True)
    with np.errstate(over="ignore"):
        norms = scale * unit_norm
    huge = ~np.isfinite(norms)
    if not np.any(huge):
        return np.asarray(arr * clip_factor(norms, clip_norm=c))
    finite = arr * clip_factor(np.where(huge, 0.0, norms), clip_norm=c)
    return np.where(huge, c * unit / np.where(unit_norm > 0, unit_norm, 1.0), finite)


# ---------------------------------------------------------------------------------------------
# Poisson-mixture machinery (private)
# ---------------------------------------------------------------------------------------------


def _poisson_window(mu: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices j and normalised Poisson(mu) weights on a window with omitted mass ≤ _TAIL_MASS per side.

    Weights are built from the ratio recurrence p_{j+1}/p_j = mu/(j+1) summed in log space from the
    window's start and normalised, which keeps ~1e-13 relative accuracy even for mu ~ 1e6 (the direct
    −mu + j log mu − lnΓ(j+1) loses ~1e-9 to cancellation there).
    """
    if mu == 0.0:
        return np.zeros(1), np.ones(1)
    if mu > _MAX_EXACT_MEAN:
        return _poisson_trapezoid(mu)
    half = 10.0 * math.sqrt(mu) + 10.0
    for _ in range(_MAX_WIDEN):
        lo = max(0, math.floor(mu - half))
        hi = math.ceil(mu + half)
        left = float(special.pdtr(lo - 1, mu)) if lo > 0 else 0.0  # P(J ≤ lo − 1), exact (incomplete Γ)
        right = float(special.pdtrc(hi, mu))  # P(J > hi)
        if left <= _TAIL_MASS and right <= _TAIL_MASS:
            break
        half *= 1.5
    else:  # pragma: no cover - the first window already suffices for every mu tested
        warnings.warn(f"Poisson window for mean {mu} still omits mass {left + right:.2e}", RuntimeWarning, stacklevel=3)
    j = np.arange(lo, hi + 1, dtype=float)
    nxt = j[1:]  # log p_{j} − log p_{j−1} = log(mu / j), written as log1p for accuracy near the mode
    rel = (mu - nxt) / nxt
    steps = np.where(np.abs(rel) < 0.5, np.log1p(np.clip(rel, -0.5, 0.5)), math.log(mu) - np.log(nxt))
    logw = np.concatenate(([0.0], np.cumsum(steps)))
    w = np.exp(logw - logw.max())
    return j, w / w.sum()


def _poisson_trapezoid(mu: float) -> tuple[np.ndarray, np.ndarray]:
    """Real nodes j and weights for Σ_j Pois(j; mu) T(j) when mu > _MAX_EXACT_MEAN (λ > 2e4).

    The summand is analytic in j and varies on the scale √mu (the Poisson weights, and the
    chi-square terms T(k) whose scale is √k ≥ √(2 mu)), so by the Poisson summation formula the
    integer sum equals a trapezoid rule with step h = √mu/20 up to terms of order exp(−2π² mu) and
    exp(−2π²·400), i.e. nothing; the window mu ± 12√mu (inside j > 0 since mu > 1e4) omits < 1e-30
    mass. Weights: Stirling's series log Pois(j) = −mu φ(j/mu) − ½ log(2πj) − 1/(12j) + 1/(360j³)
    + O(j⁻⁵), φ(1 + t) = (1+t) log(1+t) − t = Σ_{n≥2} (−t)ⁿ/(n(n−1)) with t = j/mu − 1 (|t| ≤ 0.12,
    30 terms, truncation < 1e-28 relative; the closed form would lose ~mu·|t|·1e-16 to cancellation),
    then normalised. 481 nodes whatever mu, so the cost is bounded.
    """
    h = math.sqrt(mu) / 20.0
    j = mu + h * np.arange(-240, 241, dtype=float)
    t = j / mu - 1.0
    n = np.arange(30, 1, -1, dtype=float)[:, None]
    phi = np.zeros_like(t)
    for coef, power in zip(1.0 / (n * (n - 1.0)), n):  # Horner-free: 29 terms, smallest first
        phi += coef * (-t) ** power
    logw = -mu * phi - 0.5 * np.log1p(t) - 1.0 / (12.0 * j) + 1.0 / (360.0 * j**3)
    w = np.exp(logw - logw.max())
    return j, w / w.sum()


def _chi2_cdf(k: np.ndarray, x: float) -> np.ndarray:
    """F_{χ²_k}(x) = P(k/2, x/2) (regularised lower incomplete gamma)."""
    return np.asarray(special.gammainc(k / 2.0, x / 2.0))


def _chi2_sf(k: np.ndarray, x: float) -> np.ndarray:
    """S_{χ²_k}(x) = Q(k/2, x/2)."""
    return np.asarray(special.gammaincc(k / 2.0, x / 2.0))


def _inv_sqrt_tail(k: np.ndarray, c: float) -> np.ndarray:
    """c·E[V^{-1/2} 1{V > c²}] for V ~ χ²_k (k > 1) = c Γ((k−1)/2)/(√2 Γ(k/2)) · S_{χ²_{k−1}}(c²).

    Computed as exp(log c + log[Γ((k−1)/2)/Γ(k/2)] − ½ log 2 + log S): the gamma ratio is scipy's
    ``poch(k/2, −1/2)``, accurate to ~1 ulp even at k ~ 1e9 where lnΓ differences lose 1e-6.
    """
    ratio = special.poch(k / 2.0, -0.5)
    surv = _chi2_sf(k - 1.0, c * c)
    with np.errstate(divide="ignore"):
        return np.asarray(np.exp(math.log(c) + np.log(ratio) - 0.5 * math.log(2.0) + np.log(surv)))


def _inv_sqrt_tail_any(k: np.ndarray, c: float) -> np.ndarray:
    """``_inv_sqrt_tail`` extended to k = 1: c ∫_{c²}^∞ v^{-1} e^{-v/2} dv / √(2π) = c E₁(c²/2)/√(2π)."""
    k = np.asarray(k, dtype=float)
    out = np.empty_like(k)
    one = k == 1.0
    out[~one] = _inv_sqrt_tail(k[~one], c)
    out[one] = c * special.exp1(c * c / 2.0) / math.sqrt(2.0 * math.pi)
    return out


def _broadcast_gaussian(dim: Any, mean_norm: Any, std: Any, clip_norm: Any) -> tuple[Any, ...]:
    """Validate and broadcast the four Gaussian-clipping arguments; returns arrays and a scalar flag."""
    checks: tuple[Callable[[Any], float], ...] = (
        lambda v: float(check_int("dim", v, minimum=1)),
        lambda v: check_nonnegative("mean_norm", v),
        lambda v: check_nonnegative("std", v),
        lambda v: check_positive_or_inf("clip_norm", v),
    )
    args = (dim, mean_norm, std, clip_norm)
    if all(np.ndim(a) == 0 for a in args):  # fast path for scalar calls (solvers call this often)
        return (*(np.asarray(chk(a)) for chk, a in zip(checks, args)), True)
    arrays = [np.vectorize(chk, otypes=[float])(np.asarray(a)) for chk, a in zip(checks, args)]
    return (*np.broadcast_arrays(*arrays), False)


def _apply(
    fn: Callable[[float, float, float, float], float], dim: Any, mean_norm: Any, std: Any, clip_norm: Any
) -> Any:
    d, m, s, c, scalar = _broadcast_gaussian(dim, mean_norm, std, clip_norm)
    out = np.empty(d.shape, dtype=float)
    for idx in np.ndindex(d.shape):
        out[idx] = fn(d[idx], m[idx], s[idx], c[idx])
    return float(out) if scalar else out


# ---------------------------------------------------------------------------------------------
# Gaussian vectors: scalar cores
# ---------------------------------------------------------------------------------------------


def _mean_factor(d: float, m: float, s: float, clip_norm: float) -> float:
    if math.isinf(clip_norm):
        return 1.0
    if s == 0.0:
        return 1.0 if m <= clip_norm else clip_norm / m
    lam, c = (m / s) ** 2, clip_norm / s
    j, w = _poisson_window(lam / 2.0)
    k = d + 2.0 + 2.0 * j
    terms = _chi2_cdf(k, c * c) + _inv_sqrt_tail(k, c)
    return float(min(1.0, max(0.0, np.dot(w, terms))))


def _second_moment(d: float, m: float, s: float, clip_norm: float) -> float:
    if math.isinf(clip_norm):
        return m * m + d * s * s
    if s == 0.0:
        return min(m, clip_norm) ** 2
    lam, c = (m / s) ** 2, clip_norm / s
    j, w = _poisson_window(lam / 2.0)
    k = d + 2.0 * j  # E min(V, c²) = k F_{k+2}(c²) + c² S_k(c²) for V ~ χ²_k
    terms = k * _chi2_cdf(k + 2.0, c * c) + c * c * _chi2_sf(k, c * c)
    return float(s * s * np.dot(w, terms))


def _clip_prob(d: float, m: float, s: float, clip_norm: float) -> float:
    if math.isinf(clip_norm):
        return 0.0
    if s == 0.0:
        return 1.0 if m > clip_norm else 0.0
    lam, c = (m / s) ** 2, clip_norm / s
    j, w = _poisson_window(lam / 2.0)
    return float(min(1.0, np.dot(w, _chi2_sf(d + 2.0 * j, c * c))))


def _norm_clip_factor(d: float, m: float, s: float, clip_norm: float) -> float:
    if math.isinf(clip_norm):
        return 1.0
    if s == 0.0:
        return 1.0 if m <= clip_norm else clip_norm / m
    lam, c = (m / s) ** 2, clip_norm / s
    j, w = _poisson_window(lam / 2.0)
    k = d + 2.0 * j
    terms = _chi2_cdf(k, c * c) + _inv_sqrt_tail_any(k, c)
    return float(min(1.0, max(0.0, np.dot(w, terms))))


def _mean_excess(d: float, m: float, s: float, clip_norm: float) -> float:
    if math.isinf(clip_norm):
        return 0.0
    if s == 0.0:
        return max(m - clip_norm, 0.0)
    lam, c = (m / s) ** 2, clip_norm / s
    j, w = _poisson_window(lam / 2.0)
    k = d + 2.0 * j  # E(√V − c)₊ = √2 Γ((k+1)/2)/Γ(k/2) S_{k+1}(c²) − c S_k(c²), V ~ χ²_k
    with np.errstate(divide="ignore"):
        upper = np.exp(0.5 * math.log(2.0) + np.log(special.poch(k / 2.0, 0.5)) + np.log(_chi2_sf(k + 1.0, c * c)))
    terms = np.maximum(upper - c * _chi2_sf(k, c * c), 0.0)
    return float(s * np.dot(w, terms))


def _alpha0(d: float, m: float, s: float, clip_norm: float) -> float:
    del m
    if math.isinf(clip_norm) or s == 0.0:
        return 1.0
    c = clip_norm / s
    out = _chi2_cdf(np.asarray(d), c * c)
    if d > 1.0:
        out = out + (1.0 - 1.0 / d) * _inv_sqrt_tail(np.asarray(d), c)
    return min(1.0, max(0.0, float(out)))


# ---------------------------------------------------------------------------------------------
# Gaussian vectors: public API
# ---------------------------------------------------------------------------------------------


def clipped_gaussian_mean_factor(*, dim: Any, mean_norm: Any, std: Any, clip_norm: Any) -> Any:
    """Shrinkage γ of the mean under clipping: E[clip_C(g)] = γ μ for g ~ N(μ, s² I_d).

        γ = E[min(1, c/√W)],  W ~ χ'²_{d+2}(λ),  λ = m²/s²,  c = C/s,
          = Σ_j Pois(j; λ/2) [ F_{χ²_{k_j}}(c²) + c Γ((k_j−1)/2)/(√2 Γ(k_j/2)) S_{χ²_{k_j−1}}(c²) ],
            k_j = d + 2 + 2j.

    d = ``dim``, m = ‖μ‖ = ``mean_norm``, s = ``std``, C = ``clip_norm`` (``inf``: γ = 1). Clipping only
    shrinks the mean along μ; its direction is unchanged (rotation invariance). Exact (no
    approximation); series truncation error ≤ 2e-16 (module docstring). Limits: s = 0 gives
    min(1, C/m); m = 0 gives the linear-response factor α₀ (``linear_response_shrinkage``), the limit
    of E[clip_C(g)]·μ/m² as m → 0. Stable for d up to ~1e9 and λ up to ~1e6 (cost ∝ √λ terms).
    Vectorised: array arguments broadcast, and an array is returned.

    Reference: Stein/Bock identity E[X h(‖X‖²)] = θ E[h(χ'²_{p+2}(‖θ‖²))] for X ~ N(θ, I_p)
    (Bock 1975, Ann. Stat. 3(1), Theorem A); series derived here, proved in
    proofs/clipped_gaussian_mean.py. Reference values are in tests/test_clipping.py.

    Example:
        >>> round(clipped_gaussian_mean_factor(dim=10, mean_norm=1.0, std=1.0, clip_norm=1.0), 5)
        0.29623
    """
    return _apply(_mean_factor, dim, mean_norm, std, clip_norm)


def clipped_gaussian_second_moment(*, dim: Any, mean_norm: Any, std: Any, clip_norm: Any) -> Any:
    """E‖clip_C(g)‖² = E[min(‖g‖², C²)] for g ~ N(μ, s² I_d).

        E‖clip_C(g)‖² = s² [ d F_{χ'²_{d+2}(λ)}(c²) + λ F_{χ'²_{d+4}(λ)}(c²) + c² S_{χ'²_d(λ)}(c²) ],

    λ = m²/s², c = C/s; d = ``dim``, m = ``mean_norm``, s = ``std``, C = ``clip_norm``. Summed as the
    Poisson(λ/2) mixture Σ_j p_j [k F_{χ²_{k+2}}(c²) + c² S_{χ²_k}(c²)], k = d + 2j, whose terms lie in
    [0, min(c², k)]; truncation error ≤ 2e-16 · min(C², m² + d s²). Limits: C = inf gives m² + d s²;
    s = 0 gives min(m, C)². Exact otherwise.

    Reference: derived here, proved in proofs/clipped_gaussian_second_moment.py.

    Example:
        >>> clipped_gaussian_second_moment(dim=3, mean_norm=1.0, std=2.0, clip_norm=float("inf"))
        13.0
    """
    return _apply(_second_moment, dim, mean_norm, std, clip_norm)


def clip_probability(*, dim: Any, mean_norm: Any, std: Any, clip_norm: Any) -> Any:
    """Fraction of clipped samples P(‖g‖ > C) = S_{χ'²_d(λ)}(c²) for g ~ N(μ, s² I_d).

    λ = m²/s², c = C/s; d = ``dim``, m = ``mean_norm``, s = ``std``, C = ``clip_norm``. Exact (Poisson
    mixture of central chi-square survival functions, truncation error ≤ 2e-16); s = 0 gives
    1{m > C}; C = inf gives 0.

    Reference: definition of the noncentral chi-square (‖g‖²/s² ~ χ'²_d(λ)).

    Example:
        >>> round(clip_probability(dim=1, mean_norm=0.0, std=1.0, clip_norm=1.959963984540054), 6)
        0.05
    """
    return _apply(_clip_prob, dim, mean_norm, std, clip_norm)


def gaussian_mean_clip_factor(*, dim: Any, mean_norm: Any, std: Any, clip_norm: Any) -> Any:
    """Mean clip factor E[φ(‖g‖)] = E[min(1, C/‖g‖)] for g ~ N(μ, s² I_d).

        E φ = E[min(1, c/√W₀)],  W₀ ~ χ'²_d(λ),  λ = m²/s²,  c = C/s,
            = Σ_j Pois(j; λ/2) [ F_{χ²_k}(c²) + c E[V^{-1/2} 1{V > c²}] ],  k = d + 2j,  V ~ χ²_k,

    with c E[V^{-1/2} 1{V > c²}] = c Γ((k−1)/2)/(√2 Γ(k/2)) S_{χ²_{k−1}}(c²) for k ≥ 2 and
    c E₁(c²/2)/√(2π) for k = 1 (E₁ the exponential integral). d = ``dim``, m = ``mean_norm``,
    s = ``std``, C = ``clip_norm``. This is the average factor by which per-sample gradients are
    scaled — not the mean shrinkage γ (``clipped_gaussian_mean_factor`` uses χ'²_{d+2}); γ(dim=d)
    equals this function at dim = d + 2. Exact; truncation error ≤ 2e-16.

    Reference: derived here (same Poisson mixture as proofs/clipped_gaussian_mean.py).

    Example:
        >>> round(gaussian_mean_clip_factor(dim=3, mean_norm=0.0, std=1.0, clip_norm=1e-8) * 1e8, 6)  # E 1/χ₃
        0.797885
    """
    return _apply(_norm_clip_factor, dim, mean_norm, std, clip_norm)


def gaussian_mean_excess(*, dim: Any, mean_norm: Any, std: Any, clip_norm: Any) -> Any:
    """E(‖g‖ − C)₊ for g ~ N(μ, s² I_d): the bound on the clipping bias ‖E clip_C(g) − E g‖.

        E(‖g‖ − C)₊ = s Σ_j Pois(j; λ/2) [ √2 Γ((k+1)/2)/Γ(k/2) S_{χ²_{k+1}}(c²) − c S_{χ²_k}(c²) ],
        k = d + 2j,  λ = m²/s²,  c = C/s

    (from ∫_{c²}^∞ √v f_k(v) dv = √2 Γ((k+1)/2)/Γ(k/2) S_{k+1}(c²), the same density-ratio step as
    proofs/clipped_gaussian_mean.py). d = ``dim``, m = ``mean_norm``, s = ``std``, C = ``clip_norm``.
    Exact up to truncation ≤ 2e-16·s√(d + λ). For C ≫ s√(d + λ) the two terms nearly cancel, so the
    (then e^{−c²/2}-small) result has absolute accuracy ~1e-16·s, not relative accuracy.
    Limits: C = inf gives 0; s = 0 gives (m − C)₊.

    Reference: derived here; bias bound in dptheory/clipping_bias.py.

    Example:
        >>> round(gaussian_mean_excess(dim=1, mean_norm=0.0, std=1.0, clip_norm=1e-300), 6)  # E|Z| = √(2/π)
        0.797885
    """
    return _apply(_mean_excess, dim, mean_norm, std, clip_norm)


def linear_response_shrinkage(*, dim: Any, std: Any, clip_norm: Any) -> Any:
    """Linear response α₀ of the clipped mean at μ = 0: E[clip_C(μ + sζ)] = α₀ μ + O(‖μ‖³).

        α₀ = E[φ(R)(1 − 1{R>C}/d)],  φ(R) = min(1, C/R),  R = s‖ζ‖,  ζ ~ N(0, I_d),
           = F_{χ²_d}(c²) + (1 − 1/d) c Γ((d−1)/2)/(√2 Γ(d/2)) S_{χ²_{d−1}}(c²),   c = C/s,

    which equals γ(m = 0) = F_{χ²_{d+2}}(c²) + c Γ((d+1)/2)/(√2 Γ((d+2)/2)) S_{χ²_{d+1}}(c²).
    (For d = 1 the second term vanishes: α₀ = F_{χ²_1}(c²) = P(|sζ| ≤ C).) The remainder is
    O(‖μ‖³) since E[clip(μ + sζ)] = γ(λ) μ with γ smooth in λ = ‖μ‖²/s². d = ``dim``, s = ``std``,
    C = ``clip_norm``. High d: α₀ ≈ C/(s√d) once C < s√d.

    The first form is the trace of the clip Jacobian (I for ‖x‖ ≤ C, (C/‖x‖)(I − x̂x̂ᵀ) beyond)
    averaged over the isotropic noise; derived here, proved in proofs/linear_response_shrinkage.py
    (including the identity α₀ = γ(0)).

    Example:
        >>> round(linear_response_shrinkage(dim=1, std=1.0, clip_norm=1.959963984540054), 6)
        0.95
    """
    return _apply(_alpha0, dim, 0.0, std, clip_norm)


def large_dim_shrinkage(*, dim: Any, mean_norm: Any, std: Any, clip_norm: Any) -> Any:
    """Large-d approximation γ ≈ min(1, C/√(m² + d s²)) of ``clipped_gaussian_mean_factor``.

    d = ``dim``, m = ``mean_norm``, s = ``std``, C = ``clip_norm``. It replaces ‖g‖ by its root mean
    square √(m² + d s²); the norm concentrates with relative spread ≈ 1/√(2d) (m = 0).

    Error: the approximation is worst at its kink C = √(m² + d s²) with m = 0, where it
    *overestimates* γ (it says "no clipping" while half the samples are clipped): approx/exact − 1 =
    1/(2√(π d)) + O(1/d) ≈ 0.28/√d (derived: c/√W ≈ 1 − Z/√(2d) near the kink and E[Z₊] = 1/√(2π);
    proved in proofs/large_dim_shrinkage.py); against the exact γ at the kink (tests/test_clipping.py):
    46 % (d = 1), 30 % (d = 2), 4.4 % (d = 50), 0.9 % (d = 1000). Over all m, C the ratio
    approx/exact − 1 lies in [−0.05, 0.47/√d]; within 1 % for d ≳ 800, or away from the kink
    (C ≤ rms/2 or C ≥ 2 rms).

    Reference: derived here, proved in proofs/large_dim_shrinkage.py.

    Example:
        >>> large_dim_shrinkage(dim=100, mean_norm=0.0, std=1.0, clip_norm=1.0)
        0.1
    """
    d, m, s, c, scalar = _broadcast_gaussian(dim, mean_norm, std, clip_norm)
    rms = np.sqrt(m * m + d * s * s)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(rms > c, c / np.where(rms > 0, rms, 1.0), 1.0)
    return float(out) if scalar else out


# ---------------------------------------------------------------------------------------------
# Norm-distribution model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormMoments:
    """Clipping moments of a per-sample gradient norm R (``clipped_norm_moments``).

    ``mean_clip_factor`` = E[φ(R)], ``clip_fraction`` = P(R > C), ``clipped_second_moment`` =
    E‖clip_C(g)‖² = E[min(R, C)²], ``mean_excess`` = E(R − C)₊ (the bias bound, clipping_bias.py).
    The ``*_se`` fields are standard errors of the sample means (0.0 for an exact quadrature; nan
    for a single sample).
    """

    mean_clip_factor: float
    clip_fraction: float
    clipped_second_moment: float
    mean_excess: float
    mean_clip_factor_se: float = 0.0
    clip_fraction_se: float = 0.0
    clipped_second_moment_se: float = 0.0
    mean_excess_se: float = 0.0


def _quad(f: Callable[[float], float], a: float, b: float) -> float:
    if not b > a:
        return 0.0
    val, _ = integrate.quad(f, a, b, limit=400, epsabs=1e-14, epsrel=1e-11)
    return float(val)


def clipped_norm_moments(*, norms: Any, clip_norm: float) -> NormMoments:
    """Clipping moments E[φ(R)], P(R > C), E[min(R, C)²], E(R − C)₊ of a gradient-norm distribution.

    ``norms``: either a frozen continuous ``scipy.stats`` distribution of R ≥ 0 (exact quadrature:
    E φ(R) = F(C) + C ∫_C^∞ f(r)/r dr, E min(R,C)² = ∫_0^C r² f(r) dr + C² S(C),
    E(R − C)₊ = ∫_C^∞ S(r) dr, which is inf when E R = inf), or a 1-D array of observed norms
    (sample means with standard errors std/√n). ``clip_norm`` = C > 0 (``inf`` allowed).
    The per-sample model: only the norm of g matters for these four moments, whatever its direction.

    Reference: definitions; φ(R) = min(1, C/R) as in Abadi et al. 2016, arXiv 1607.00133v2, Alg. 1.

    Example:
        >>> from scipy import stats
        >>> r = clipped_norm_moments(norms=stats.uniform(0, 2), clip_norm=1.0)
        >>> round(r.clip_fraction, 12), round(r.mean_excess, 12)
        (0.5, 0.25)
    """
    c = check_positive_or_inf("clip_norm", clip_norm)
    if hasattr(norms, "dist") and hasattr(norms, "cdf"):
        return _moments_exact(norms, c)
    r = np.asarray(norms, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(
            f"norms must be a frozen scipy.stats distribution or a non-empty 1-D array, got shape {r.shape}"
        )
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        bad = r[~(np.isfinite(r) & (r >= 0))][:3]
        raise ValueError(f"norms must be finite and >= 0, got e.g. {bad.tolist()}")
    phi = clip_factor(r, clip_norm=c)
    cols = (phi, (r > c).astype(float), np.minimum(r, c) ** 2, np.maximum(r - c, 0.0))
    means = [float(np.mean(x)) for x in cols]
    n = r.size
    ses = [float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else math.nan for x in cols]
    return NormMoments(*means, *ses)


def _moments_exact(dist: Any, c: float) -> NormMoments:
    if not hasattr(dist, "pdf"):
        raise ValueError("norms must be a *continuous* frozen scipy.stats distribution (or pass samples)")
    lo, hi = (float(v) for v in dist.support())
    if lo < 0:
        raise ValueError(f"norms distribution must be supported on R >= 0, got support starting at {lo}")
    if math.isinf(c):
        second = float(dist.moment(2))
        return NormMoments(1.0, 0.0, second, 0.0)
    sf_c = float(dist.sf(c))
    a = max(lo, c)
    mean_factor = float(dist.cdf(c)) + c * _quad(lambda x: dist.pdf(x) / x, a, hi)
    second = _quad(lambda x: x * x * dist.pdf(x), lo, min(c, hi)) + c * c * sf_c
    mean_r = float(dist.mean())
    excess = _quad(lambda x: dist.sf(x), a, hi) if math.isfinite(mean_r) else math.inf
    if c < lo:  # the whole support lies above C: ∫_C^lo S = lo − C
        excess += lo - c
    return NormMoments(min(1.0, mean_factor), sf_c, second, excess)
