"""Clipping bias: how far E[clip_C(g)] is from E[g], when it still points downhill, and when it stalls.

Deterministic facts (clip_C(x) = min(1, C/‖x‖) x, C = ``clip_norm``):

* ‖clip_C(x) − x‖ = (‖x‖ − C)₊ and ‖clip_C(x)‖ = min(‖x‖, C) for every x; hence, by the triangle
  inequality and Jensen, for ANY distribution of g (an empirical one included)

      ‖E clip_C(g) − E g‖ ≤ E(‖g‖ − C)₊,        ‖E clip_C(g)‖ ≤ E min(‖g‖, C) ≤ C.       (B)

* Symmetric noise keeps the clipped mean a descent direction: for every x, ξ,
  ⟨clip_C(x + ξ) + clip_C(x − ξ), x⟩ ≥ 0 (derived here, proved in proofs/clip_symmetric_descent.py),
  so ⟨E clip_C(∇f + ξ), ∇f⟩ ≥ 0 whenever ξ and −ξ have the same law. This is the geometric
  observation behind Chen, Wu & Hong 2020 (NeurIPS; arXiv 2006.15429v2): for symmetric gradient
  noise clipped SGD converges, and the clipping bias is bounded by a (Wasserstein-type) distance of
  the gradient distribution to a symmetric one (abstract). The pairwise inequality above and its
  proof are derived here; no theorem or constant of the paper is quoted.
* "≥ 0" can be "= 0": in Chen et al.'s Example 2 the noise is symmetric (±3 around the gradient)
  but always larger than C = 1, so the expected clipped gradient vanishes on all of [−2, 2] and
  clipped GD stalls there. Asymmetric noise does worse: it moves the fixed point itself, leaving an
  irreducible gradient norm of order min(σ, σ²/C) (``stochastic_bias_example``; Koloskova,
  Hendrikx & Stich 2023, ICML, arXiv 2305.01588v2, whose abstract states that with stochastic
  gradients convergence to the optimum cannot be guaranteed, even with small step sizes).

All functions are pure (no I/O, no global state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dptheory.clipping import clip, clipped_gaussian_mean_factor, gaussian_mean_excess
from dptheory.validate import check_positive, check_positive_or_inf, check_probability

__all__ = [
    "BiasBound",
    "StochasticBiasExample",
    "chen_example2_clipped_gradient",
    "clipped_gradient_inner_product",
    "clipping_bias_gaussian",
    "clipping_bias_samples",
    "stochastic_bias_example",
    "two_point_clipped_fixed_point",
]


@dataclass(frozen=True)
class BiasBound:
    """Both sides of the bias bounds (B) (module docstring).

    ``bias_norm`` = ‖E clip_C(g) − E g‖ ≤ ``bias_bound`` = E(‖g‖ − C)₊;
    ``clipped_mean_norm`` = ‖E clip_C(g)‖ ≤ ``clipped_norm_mean`` = E min(‖g‖, C) ≤ ``clip_norm``.
    """

    bias_norm: float
    bias_bound: float
    clipped_mean_norm: float
    clipped_norm_mean: float
    clip_norm: float


def _samples_2d(samples: Any) -> np.ndarray:
    g = np.asarray(samples, dtype=float)
    if g.ndim == 1:
        g = g[:, None]  # n scalar samples = n vectors in d = 1
    if g.ndim != 2 or g.shape[0] == 0 or g.shape[1] == 0:
        raise ValueError(f"samples must be a non-empty (n, d) array (or (n,) scalars), got shape {np.shape(samples)}")
    if not np.all(np.isfinite(g)):
        raise ValueError("samples must be finite, got a non-finite entry")
    return g


def clipping_bias_samples(*, samples: Any, clip_norm: float) -> BiasBound:
    """Both sides of ‖E clip_C(g) − E g‖ ≤ E(‖g‖ − C)₊ and ‖E clip_C(g)‖ ≤ E min(‖g‖, C) ≤ C.

    ``samples``: an (n, d) array of gradient samples g_i (rows), or (n,) scalars (d = 1); the
    expectations are over their empirical distribution, for which (B) holds exactly (it is the
    triangle inequality applied to n terms), up to float rounding of order 1e-15·E‖g‖.
    ``clip_norm`` = C > 0 (``inf``: no clipping, everything 0 but the norms).

    Reference: ‖clip_C(x) − x‖ = (‖x‖ − C)₊ (elementary); cf. Chen, Wu & Hong 2020, arXiv
    2006.15429v2, Sec. 1 (clipping bias).

    Example:
        >>> b = clipping_bias_samples(samples=[[3.0, 0.0], [1.0, 0.0]], clip_norm=1.0)
        >>> b.bias_norm, b.bias_bound
        (1.0, 1.0)
    """
    g = _samples_2d(samples)
    c = check_positive_or_inf("clip_norm", clip_norm)
    norms = np.linalg.norm(g, axis=1)
    clipped = clip(g, clip_norm=c)
    mean, cmean = g.mean(axis=0), clipped.mean(axis=0)
    return BiasBound(
        bias_norm=float(np.linalg.norm(cmean - mean)),
        bias_bound=float(np.mean(np.maximum(norms - c, 0.0))),
        clipped_mean_norm=float(np.linalg.norm(cmean)),
        clipped_norm_mean=float(np.mean(np.minimum(norms, c))),
        clip_norm=c,
    )


def clipping_bias_gaussian(*, dim: int, mean_norm: float, std: float, clip_norm: float) -> BiasBound:
    """Exact both sides of (B) for g ~ N(μ, s² I_d): bias (1 − γ) m ≤ E(‖g‖ − C)₊, ‖E clip‖ = γ m ≤ C.

    γ = ``clipped_gaussian_mean_factor`` (E clip_C(g) = γ μ), E(‖g‖ − C)₊ = ``gaussian_mean_excess``,
    E min(‖g‖, C) = E‖g‖ − E(‖g‖ − C)₊ with E‖g‖ the C → ∞ limit of the latter's complement (computed as
    ``gaussian_mean_excess`` at a vanishing C). d = ``dim``, m = ``mean_norm``, s = ``std``,
    C = ``clip_norm``. Exact (series, truncation ≤ 1e-15 relative).

    Reference: derived here from dptheory.clipping (proofs/clipped_gaussian_mean.py).

    Example:
        >>> b = clipping_bias_gaussian(dim=10, mean_norm=1.0, std=1.0, clip_norm=1.0)
        >>> round(b.bias_norm, 5), b.bias_norm <= b.bias_bound
        (0.70377, True)
    """
    kw = dict(dim=dim, mean_norm=mean_norm, std=std)
    gamma = clipped_gaussian_mean_factor(**kw, clip_norm=clip_norm)
    c = float(clip_norm)
    excess = gaussian_mean_excess(**kw, clip_norm=clip_norm)
    mean_norm_g = gaussian_mean_excess(**kw, clip_norm=1e-300)  # E‖g‖ = E(‖g‖ − 0)₊
    m = float(mean_norm)
    return BiasBound(
        bias_norm=(1.0 - gamma) * m,
        bias_bound=excess,
        clipped_mean_norm=gamma * m,
        clipped_norm_mean=mean_norm_g - excess,
        clip_norm=c,
    )


def clipped_gradient_inner_product(*, grad: Any, noise: Any, clip_norm: float, symmetrize: bool = False) -> float:
    """⟨E clip_C(∇f + ξ), ∇f⟩ over the empirical distribution of the noise samples ξ_i.

    ``grad`` = ∇f (a d-vector, or a scalar for d = 1), ``noise``: (n, d) samples ξ_i (or (n,) for d = 1),
    ``clip_norm`` = C. With ``symmetrize=True`` the average runs over ±ξ_i (the symmetrised empirical
    law); then the result is ≥ 0 exactly (up to rounding), because each pair satisfies
    ⟨clip_C(x + ξ) + clip_C(x − ξ), x⟩ ≥ 0. Without it, a negative value means the clipped mean
    points uphill — possible only for asymmetric noise.

    Reference: pairwise inequality derived here, proved in proofs/clip_symmetric_descent.py; the
    symmetric-noise descent property underlies Chen, Wu & Hong 2020, arXiv 2006.15429v2 (abstract).

    Example:
        >>> clipped_gradient_inner_product(grad=[1.0], noise=[[5.0]], clip_norm=1.0, symmetrize=True)
        0.0
    """
    c = check_positive_or_inf("clip_norm", clip_norm)
    x = np.atleast_1d(np.asarray(grad, dtype=float))
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"grad must be a finite vector, got shape {np.shape(grad)}")
    xi = _samples_2d(noise)
    if xi.shape[1] != x.size:
        raise ValueError(f"noise must have {x.size} columns to match grad, got shape {xi.shape}")
    if symmetrize:
        xi = np.concatenate([xi, -xi])
    return float(clip(x + xi, clip_norm=c).mean(axis=0) @ x)


def chen_example2_clipped_gradient(x: Any, *, anchors: tuple[float, ...] = (-3.0, 3.0), clip_norm: float = 1.0) -> Any:
    """Expected clipped gradient (1/n) Σ_i clip_C(x − a_i) of f(x) = (1/n) Σ_i ½ (x − a_i)².

    ``x``: point(s) (scalar or array, d = 1); ``anchors`` = (a_1, …, a_n); ``clip_norm`` = C. For the
    paper's choice a = (−3, 3), C = 1 it is 0 on all of [−2, 2] (both per-sample gradients clipped to
    ∓1 and cancelling), so clipped GD stalls anywhere there while the minimiser is x* = 0; the
    unclipped gradient is x.

    Reference: Chen, Wu & Hong 2020, arXiv 2006.15429v2, Example 2 (f(x) = ½ Σ_{i=1,2} ½ (x − a_i)²,
    a_1 = −3, a_2 = 3, c = 1).

    Example:
        >>> chen_example2_clipped_gradient([-2.0, 0.5, 2.0, 3.0]).tolist()
        [0.0, 0.0, 0.0, 0.5]
    """
    c = check_positive_or_inf("clip_norm", clip_norm)
    a = np.asarray(anchors, dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"anchors must be a non-empty 1-D sequence of finite numbers, got {anchors!r}")
    xs = np.asarray(x, dtype=float)
    out = np.clip(xs[..., None] - a, -c, c).mean(axis=-1)  # clip in d = 1 is clamping to [−C, C]
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------
# Stochastic-bias example (order min(σ, σ²/C))
# ---------------------------------------------------------------------------------------------


def _two_point(sample_std: float, prob: float) -> tuple[float, float]:
    """Atoms of the mean-zero two-point law: +A w.p. p, −B w.p. 1 − p, variance σ²."""
    a = sample_std * math.sqrt((1.0 - prob) / prob)
    b = sample_std * math.sqrt(prob / (1.0 - prob))
    return a, b


def _on_piece(u: float, sign: int, c: float, tol: float) -> bool:
    """Is u on the closed piece of clamp_C: u ≤ −C (sign −1), |u| ≤ C (0), u ≥ C (+1), up to tol?"""
    if sign == -1:
        return u <= -c + tol
    if sign == 1:
        return u >= c - tol
    return abs(u) <= c + tol


def two_point_clipped_fixed_point(*, sample_std: float, clip_norm: float, prob: float) -> float:
    """Fixed point x* of clipped SGD on f(x) = x²/2 with two-point gradient noise (exact).

    The stochastic gradient is x + ξ, ξ = +A w.p. p and −B w.p. 1 − p, A = σ√((1−p)/p),
    B = σ√(p/(1−p)) (E ξ = 0, E ξ² = σ²). The expected clipped gradient
    h(x) = p clamp(x + A) + (1 − p) clamp(x − B), clamp to [−C, C], is continuous, nondecreasing and
    piecewise linear, strictly increasing unless both atoms are clamped; x* solves h(x*) = 0 (unique
    for p ≠ ½; for p = ½ and σ > C, h vanishes on [C − σ, σ − C] and the smallest root is returned).
    Its gradient norm |∇f(x*)| = |x*| is the irreducible bias: clipped SGD with vanishing step size
    concentrates at x*, not at the minimiser 0. σ = ``sample_std`` (the gradient-noise std σ_g —
    not the noise multiplier), C = ``clip_norm``, p = ``prob`` ∈ (0, 1).
    Solved exactly over the 9 linear pieces (no iteration).

    Reference: derived here (a construction exhibiting the bias order of Koloskova, Hendrikx &
    Stich 2023, arXiv 2305.01588v2); proved in proofs/clip_stochastic_bias.py.

    Example:
        >>> round(two_point_clipped_fixed_point(sample_std=1.0, clip_norm=0.5, prob=0.25), 6)  # 1/√3 − C/3
        0.410684
    """
    s = check_positive("sample_std", sample_std)
    c = check_positive("clip_norm", clip_norm)
    p = check_probability("prob", prob)
    if p in (0.0, 1.0):
        raise ValueError(f"prob must be in (0, 1), got {prob!r}")
    a, b = _two_point(s, p)
    roots = []
    # each atom is clamped low (−1), linear (0) or clamped high (+1)
    for s1 in (-1, 0, 1):
        for s2 in (-1, 0, 1):
            slope = p * (s1 == 0) + (1 - p) * (s2 == 0)
            const = p * (s1 * c if s1 else a) + (1 - p) * (s2 * c if s2 else -b)
            if slope == 0:
                continue
            x = -const / slope
            if all(_on_piece(x + shift, sign, c, 1e-12 * (a + b + c)) for shift, sign in ((a, s1), (-b, s2))):
                roots.append(x)
    # h is continuous with h(−∞) = −C < 0 < C = h(+∞), and just left of its smallest root some atom is
    # linear, so that root lies on a piece with positive slope (closed conditions) and is found above.
    assert roots, "no root found: h must change sign"
    return float(min(roots))


@dataclass(frozen=True)
class StochasticBiasExample:
    """Output of ``stochastic_bias_example``: the noise law, the fixed point and the bounds on its bias."""

    prob: float
    fixed_point: float
    bias: float  # |∇f(x*)| = |x*|
    lower_bound: float  # (√3 − 1)/3 · min(σ, σ²/C), proved
    upper_bound: float  # (x*² + σ²)/(4C), valid for every mean-zero noise of variance σ²


def stochastic_bias_example(*, sample_std: float, clip_norm: float) -> StochasticBiasExample:
    """Irreducible clipping bias of order min(σ, σ²/C) on f(x) = x²/2 with mean-zero noise of variance σ².

    Uses the two-point noise of ``two_point_clipped_fixed_point`` with
    p = 1/4 if C < σ, else p = σ²/(4C²), and returns its fixed point x* and |∇f(x*)| = |x*| with
    the two bounds (derived here, proved in proofs/clip_stochastic_bias.py):

    * lower: for C < σ (p = 1/4), |x*| = σ/√3 − C/3 ≥ (√3 − 1)σ/3; for C ≥ σ,
      |x*| = (σ²/4C)(2√(1−p) − 1)/(1 − p), decreasing in p ≤ 1/4, so ≥ (√3 − 1)σ²/(3C), and
      = σ²/(4C)(1 − p²/4 + O(p³)) → σ²/(4C) as C/σ → ∞. Together |x*| ≥ (√3 − 1)/3 · min(σ, σ²/C)
      with (√3 − 1)/3 ≈ 0.244 (the two cases meet at C = σ);
    * upper, for ANY mean-zero noise of variance σ² in d = 1 (and in any d, with ‖·‖): at a fixed
      point 0 = E clip(x* + ξ), so |x*| = |E clip(x* + ξ) − E(x* + ξ)| ≤ E(|x* + ξ| − C)₊
      ≤ E(x* + ξ)²/(4C) = (x*² + σ²)/(4C), using (u − C)₊ ≤ u²/(4C).

    So for C ≫ σ the constant 1/4 is sharp: sup over noise laws of the bias is σ²/(4C)(1 + o(1)).
    σ = ``sample_std`` (gradient-noise std; E‖ξ‖² = σ² in d > 1), C = ``clip_norm``.

    Reference: Koloskova, Hendrikx & Stich 2023, ICML, arXiv 2305.01588v2 (abstract: with stochastic
    gradients clipped SGD need not converge to the optimum, with a bias of order min(σ, σ²/C)); this
    construction and its constants are derived here, proved in proofs/clip_stochastic_bias.py.

    Example:
        >>> e = stochastic_bias_example(sample_std=1.0, clip_norm=10.0)
        >>> e.lower_bound <= e.bias <= e.upper_bound, round(e.bias * 4 * 10, 6)  # ≈ σ²/(4C)
        (True, 0.999998)
    """
    s = check_positive("sample_std", sample_std)
    c = check_positive("clip_norm", clip_norm)
    p = 0.25 if c < s else s * s / (4.0 * c * c)
    x = two_point_clipped_fixed_point(sample_std=s, clip_norm=c, prob=p)
    return StochasticBiasExample(
        prob=p,
        fixed_point=x,
        bias=abs(x),
        lower_bound=(math.sqrt(3.0) - 1.0) / 3.0 * min(s, s * s / c),
        upper_bound=(x * x + s * s) / (4.0 * c),
    )
