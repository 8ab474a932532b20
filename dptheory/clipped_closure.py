"""Closures of the stationary law of the per-sample-clipped step: their names and the radial closure.

The mean-field step model (dptheory.clipped_step) evaluates the e-dependent clip shrinkage γ(m),
m = ‖He‖, and the clip variance at the root-mean-square gradient norm; its stationary law is
Gaussian. A *closure* says which stationary law the outputs of dptheory.clipped_dynamics use
(:data:`CLOSURES`):

* ``"elliptic"`` — dptheory.clipped_elliptic: elliptical law with the exact discrete-time
  per-direction balances and the discrete radial chain (the default);
* ``"radial"`` — the mean-field second moments times the radial factor R below;
* ``"mean-field"`` — the Gaussian law itself.

*Radial closure* (:func:`radial_closure_factor`): the drift γ(m)·He is a nonlinear function of the
radius; in the saturated regime (m ≫ max(C, s√n)) it is normalised gradient descent and the
stationary law is ∝ ρ^{r−1} e^{−ρ/θ}, not Gaussian. For equal curvatures λ and isotropic
per-coordinate noise τ²(m) the small-step (Itô) Fokker–Planck equation of the error e ∈ ℝ^r has the
zero-flux stationary solution

    p(ρ) ∝ ρ^{r−1} / D(ρ) · exp(−∫₀^ρ f(u)/D(u) du),   f(ρ) = γ(λρ) λρ,   D(ρ) = η τ²(λρ)/2,

(proofs/clipped_radial_closure.py): Gaussian, i.e. the mean-field law, when f is linear and D
constant; ρ^{r−1}e^{−ρ/θ} with E ρ² = r(r+1)θ² when saturated (mean field: r²θ²). The closure keeps the
mean-field model for everything that is discrete-time (the factors 2 − ηa_i(1+κ), Poisson batches,
per-direction shapes) and multiplies the mean-field stationary second moments by

    R = 1 + w (R₀ − 1),   R₀ = E_p[m²] / m_MF²,   w = 2(1 − ηa_*)/(2 − ηa_*),   a_* = a₀ (1 + κ),

R₀ the ratio of the radial law's mean square gradient norm to that of the same law with drift and
diffusion frozen at their mean-field stationary values (which is m_MF² by construction), w the exact
discrete-time weight of the first-order nonlinearity correction (w → 1 as η → 0).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import integrate, interpolate, special

from dptheory import clipping as _clipping
from dptheory.clipped_step import StationaryState, check_inputs, stationary_state
from dptheory.records import Basin, Optimizer

__all__ = ["CLOSURES", "check_closure", "radial_closure_factor", "radial_discrete_weight", "radial_factor"]


# ---------------------------------------------------------------------------------------------
# radial (small-step Fokker–Planck) closure of the stationary state
# ---------------------------------------------------------------------------------------------

CLOSURES = ("elliptic", "radial", "mean-field")
_RADIAL_RANGE_NODES = 17  # exact clip-moment evaluations per pass of the range search
_RADIAL_NODES = 41  # exact evaluations of the clip moments on the final range (PCHIP in between)
_RADIAL_FINE = 4097  # Simpson nodes on the interpolant (odd)
_RADIAL_TAIL = 40.0  # the range must end where the log-density is ≥ 40 below its peak (e^−40 ≈ 4e-18)
_RADIAL_TRIES = 12  # step cap of the range search


def check_closure(closure: Any) -> str:
    """Validate a closure name: one of :data:`CLOSURES` (ValueError otherwise); returns it."""
    if closure not in CLOSURES:
        raise ValueError(f"closure must be one of {', '.join(CLOSURES)}, got {closure!r}")
    return str(closure)


def _participation(basin: Basin, v: np.ndarray, vf: float) -> float:
    """k = (Σ w_i)² / Σ w_i², w_i = λ_i v_i: the number of directions sharing the loss (≈ r: w_i ≈ ηq/2γ)."""
    w = basin.curvature_array * np.asarray(v, dtype=float)
    s1, s2 = float(w.sum()), float((w * w).sum())
    if basin.flat_curvature > 0 and basin.flat_dim > 0 and vf > 0:
        wf = basin.flat_curvature * vf
        s1 += basin.flat_dim * wf
        s2 += basin.flat_dim * wf * wf
    return s1 * s1 / s2


def _log_density(k: float, x: np.ndarray, g: np.ndarray, t: np.ndarray) -> np.ndarray:
    """log p(x) = (k−1) log x − log t(x) − k ∫_{x₀}^x g(u) u / t(u) du (cumulative Simpson)."""
    phi = k * integrate.cumulative_simpson(g * x / t, x=x, initial=0.0)
    out: np.ndarray = special.xlogy(k - 1.0, x) - np.log(t) - phi
    return out


def _radial_ratio(
    k: float,
    ratios: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    knee: float,
    nodes: int = _RADIAL_NODES,
    fine: int = _RADIAL_FINE,
    max_tries: int = _RADIAL_TRIES,
) -> float:
    """E_p[x²] for p(x) ∝ x^{k−1}/t(x) · exp(−k ∫ g(u) u / t(u) du), x = m/m_MF.

    ``ratios(x)`` returns (g, t) = (γ(x m_MF)/γ_MF, τ²(x m_MF)/τ²_MF) on an array of x (the costly
    part: exact clip moments); ``knee`` = max(C, s√n)/m_MF, the scale on which they vary. Range:
    start from [max(0, 1 − 15/√k), 1 + 15/√k + 50/k] (the gamma law of the saturated limit, shape k
    and mean 1, has ≤ e^−40 of its mass outside), widen until the log-density at both ends is ≥ 40
    below its peak (≤ 12 widenings, then a RuntimeWarning, stacklevel=2), trim to where it is within 40 of the
    peak; there evaluate (g, t) at ≈ ``nodes`` points uniform in asinh(x/knee), split at the knee,
    interpolate them (monotone cubic, PCHIP) and integrate on ≈ ``fine`` Simpson nodes.
    """
    root = math.sqrt(k)
    lo, hi = max(0.0, 1.0 - 15.0 / root), 1.0 + 15.0 / root + 50.0 / k
    for _ in range(max_tries):
        x = np.linspace(lo, hi, _RADIAL_RANGE_NODES)
        logp = _log_density(k, x, *ratios(x))
        top = float(np.max(logp))
        ok_hi = logp[-1] < top - _RADIAL_TAIL
        ok_lo = lo == 0.0 or logp[0] < top - _RADIAL_TAIL
        if ok_hi and ok_lo:
            break
        if not ok_hi:
            hi = 1.0 + 2.0 * (hi - 1.0)
        if not ok_lo:
            lo = lo / 2.0 if lo > 1e-3 else 0.0
    else:
        warnings.warn(
            f"radial closure: the stationary law did not fit in the range after {max_tries} "
            "widenings; the factor may be inaccurate",
            RuntimeWarning,
            stacklevel=2,
        )
    inside = np.flatnonzero(logp >= top - _RADIAL_TAIL)
    lo2 = x[max(inside[0] - 1, 0)]
    hi2 = x[min(inside[-1] + 1, x.size - 1)]
    # nodes uniform in y = asinh(x/w): spacing ≈ w·Δy near 0 (resolves the clipping knee) and ≈ x·Δy
    # further out (the clip moments vary on the scale of x itself there); the knee itself is a break
    # point (γ has a kink there when s = 0), each side interpolated and integrated on its own
    w = min(max(knee, 1e-6), 1.0)
    breaks = [lo2, knee, hi2] if lo2 < knee < hi2 else [lo2, hi2]
    y_all = math.asinh(hi2 / w) - math.asinh(lo2 / w)
    xs, gs, ts = [], [], []
    for left, right in itertools.pairwise(breaks):
        share = (math.asinh(right / w) - math.asinh(left / w)) / y_all
        yn = np.linspace(math.asinh(left / w), math.asinh(right / w), max(9, round(share * nodes)))
        g, t = ratios(w * np.sinh(yn))
        xf = np.linspace(left, right, max(33, 2 * round(share * fine / 2) + 1))
        yf = np.arcsinh(xf / w)
        xs.append(xf)
        gs.append(interpolate.PchipInterpolator(yn, g)(yf))
        ts.append(np.exp(interpolate.PchipInterpolator(yn, np.log(t))(yf)))
    # log-density piecewise (the exponent's integral carried across the break), then the moments
    offset, logs = 0.0, []
    for xf, gf, tf in zip(xs, gs, ts):
        phi = offset + k * integrate.cumulative_simpson(gf * xf / tf, x=xf, initial=0.0)
        offset = float(phi[-1])
        logs.append(special.xlogy(k - 1.0, xf) - np.log(tf) - phi)
    top = max(float(np.max(lp)) for lp in logs)
    num = sum(integrate.simpson(xf * xf * np.exp(lp - top), x=xf) for xf, lp in zip(xs, logs))
    den = sum(integrate.simpson(np.exp(lp - top), x=xf) for xf, lp in zip(xs, logs))
    return float(num / den)


def radial_factor(
    *, basin: Basin, optimizer: Optimizer, poisson: bool, state: StationaryState, discrete: bool = True
) -> float:
    """Radial nonlinearity factor R = 1 + w (R₀ − 1) (:func:`radial_closure_factor`) at a mean-field state.

    ``state``: the mean-field stationary state (``clipped_step.stationary_state``) of ``basin`` and
    ``optimizer`` with Poisson batches if ``poisson``. ``discrete=False`` returns the small-step
    factor R₀ (w = 1). Returns 1 for unclipped modes, for m² ∉ (0, ∞) and when clipping never acts
    where the law has mass. Reference: derived here, proved in proofs/clipped_radial_closure.py.
    """
    opt = optimizer
    m2, st, v, vf = state.gradient_norm_sq, state.step, state.second, state.flat_second
    c, s, n, b = opt.effective_clip_norm, basin.sample_std, basin.noise_dim, opt.batch_size
    if not opt.mode.clipped or math.isinf(c) or not (0.0 < m2 < math.inf):
        return 1.0  # unclipped (linear drift: the mean-field law is exact) or no fluctuation
    tau2_mf = float(st.add_var[0])
    if not tau2_mf > 0:
        return 1.0
    m_mf = math.sqrt(m2)
    dp = opt.noise_std**2 / b**2
    k = _participation(basin, v, vf)
    m_top = m_mf * (1.0 + 15.0 / math.sqrt(k) + 50.0 / k)
    if float(_clipping.clip_probability(dim=n, mean_norm=m_top, std=s, clip_norm=c)) < 1e-13:
        return 1.0  # clipping never acts where the law has mass: γ ≡ 1, τ² constant, linear drift

    def ratios(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = x * m_mf
        gam = np.asarray(_clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=c), float)
        second = np.asarray(_clipping.clipped_gaussian_second_moment(dim=n, mean_norm=m, std=s, clip_norm=c), float)
        tau2 = np.maximum(second - gam * gam * m * m, 0.0) / (n * b) + dp
        return gam / st.gamma, tau2 / tau2_mf

    knee = max(c, s * math.sqrt(n)) / m_mf
    small_step = _radial_ratio(k, ratios, knee)
    if not discrete:
        return small_step
    # discrete-time weight of the first-order nonlinearity correction, at the loss-share-weighted a₀
    share = basin.curvature_array * np.asarray(v, dtype=float)
    lam_a = float(np.sum(share * basin.curvature_array) / np.sum(share))
    h = opt.lr * st.gamma * lam_a * (1.0 + st.mult)
    return 1.0 + radial_discrete_weight(drift_step=h) * (small_step - 1.0)


def radial_discrete_weight(*, drift_step: float) -> float:
    """Discrete-time weight w = 2(1 − h)/(2 − h) of the first-order nonlinearity correction, h = ``drift_step``.

    h = η a₀ (1 + κ), the per-step contraction of the mean-field state; w → 1 as h → 0 (the
    small-step Fokker–Planck correction), w = 0 at h = 1, negative beyond (where the radial closure
    is not to be used). Exact to first order in the nonlinearity for a Gaussian zeroth-order law.
    Reference: derived here, proved in proofs/clipped_radial_closure.py.

    Example:
        >>> radial_discrete_weight(drift_step=0.5)
        0.6666666666666666
    """
    return 2.0 * (1.0 - drift_step) / (2.0 - drift_step)


def radial_closure_factor(*, basin: Basin, optimizer: Optimizer, sampling: str = "fixed") -> float:
    """Nonlinearity factor R of the radial closure: stationary E m² over the mean-field m² (claims 2–3).

        R = 1 + w (R₀ − 1),   w = 2(1 − ηa_*)/(2 − ηa_*),   a_* = γ_MF λ_a (1 + κ),
        R₀ = ∫ m² p(m) dm / (m_MF² ∫ p(m) dm),
        p(m) ∝ m^{r_eff−1}/τ²(m) · exp(−(r_eff/m_MF²) ∫₀^m [γ(u)/γ_MF] [τ²_MF/τ²(u)] u du).

    p is the small-step stationary law of the gradient norm m = λρ of an isotropic r_eff-dimensional
    error with drift γ(m)·He and per-coordinate diffusion ητ²(m)/2 (module docstring; γ =
    ``clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=C)``, τ²(m) =
    (E‖clip g‖² − γ²m²)/(nB) + ν²/B²), in units where the same law with γ, τ² frozen at their
    mean-field stationary values (γ_MF, τ²_MF at m_MF = ``stationary_gradient_norm``) has E m² = m_MF²
    exactly: the effective curvature λ̄ = γ_MF m_MF²/(r_eff ητ²_MF/2) absorbs the spectrum and the
    discrete-time factors of the mean field. r_eff = (Σλ_iv_i)²/Σλ_i²v_i² (participation ratio of the
    mean-field loss shares λ_iv_i; = r for equal curvatures, ≈ r whenever ηγλ_i ≪ 1). w is the exact
    discrete-time weight of the first-order (in the nonlinearity) correction, w → 1 as η → 0
    (κ = 1/B for Poisson batches, λ_a = Σλ_i²v_i/Σλ_iv_i); the stationary loss is R × the mean field's.

    Limits: R = 1 for unclipped modes and whenever γ and τ² do not depend on m (linear drift);
    R₀ → (r + 1)/r in the saturated limit (γ = C/m, τ² = ν²/B²: p ∝ m^{r−1}e^{−rm/m_MF}), where ηa_*
    ≈ ηC/m_MF is small. Exact: the small-step limit (η → 0) for equal curvatures and isotropic Gaussian
    noise, at any nonlinearity; and first order in the nonlinearity at any step size. Errs high against
    the exact engines: (i) at large steps with a strong nonlinearity, where the higher orders are
    missing (a few %, e.g. at S = ``stationary_saturation`` ≈ 0.8 and ηγλ ≈ 0.65; w is negative for
    ηa_* > 1, where the closure is not to be used); (ii) for unequal curvatures, where γ(‖Λe‖)Λe is
    not a gradient field and the reduction to r_eff equal directions is a heuristic: up to ≈ 6 % in
    partly saturated states at large steps, ≈ 1–4 % in saturated ones, where the elliptic closure
    (dptheory.clipped_elliptic) holds to ≈ 0.5 % (the measured points: docs/findings-closure.md §2);
    (iii) Cov[clip g] is taken isotropic (as in the mean-field model); (iv) under ``spread="basin"``
    with λ_flat > 0 the flat coordinates' own clip factor and noise are not in the reduction. Quadrature: 17 clip-moment
    evaluations per range pass, then 41 on the final range, PCHIP, 4097-node Simpson; relative error
    of R ≲ 2e-5 (tested against ``scipy.integrate.quad``).
    Reference: derived here, proved in proofs/clipped_radial_closure.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=2, curvatures=(1.0, 1.0), sample_std=0.0, spread="basin")
        >>> o = Optimizer(lr=0.1, batch_size=4, clip_norm=0.1, noise_multiplier=40.0)  # m ≈ 10 C
        >>> round(radial_closure_factor(basin=b, optimizer=o), 2)      # saturated: ≈ (r + 1)/r
        1.5
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    state = stationary_state(basin=basin, optimizer=optimizer, poisson=poisson)
    return radial_factor(basin=basin, optimizer=optimizer, poisson=poisson, state=state)
