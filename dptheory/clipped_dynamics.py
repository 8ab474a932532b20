"""Per-sample-clipped DP-SGD on the low-rank quadratic basin: stationary state, linear model, flat walk.

The step of records.py with per-sample gradients g_j = H e + s ζ_j (ζ_j spanning n = ``noise_dim``
coordinates: n = d for ``spread="ambient"``, n = r for ``"basin"``) is, conditional on the error e,

    E[update] = γ(m) H e,          m = ‖H e‖,
    Cov[update] = Cov[clip_C(g)]/B + ν²/B² I  (+ γ² (He)(He)ᵀ Var(N)/B² under Poisson sampling),

with γ(m) = ``clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=C)`` the
exact shrinkage of the mean of a clipped Gaussian. The *mean-field step model*
(dptheory.clipped_step) evaluates γ and the clip variance at one value of m, which makes every
direction linear:

    E e_i(t+1)² = [(1 − η a_i)² + η² κ a_i²] E e_i(t)² + η² q_i,
    a_i = γ λ_i,   q_i = (E‖clip g‖² − γ² m²)/(n B) + ν²/B²,   κ = 1/B (Poisson) or 0 (fixed).

Unclipped modes (C = ∞) have γ = 1 and q = s²/B + ν²/B² on the spread coordinates: the exact model
of ``quadratic.noise_only_dynamics``. Under ``spread="basin"`` with λ_flat > 0 the flat gradient
λ_flat e_flat lies outside the support of ζ: its shrinkage is the plain mean clip factor
E[min(1, C/‖g‖)] and its noise ν²/B² (the model uses n = r and the full m² in the noncentrality).

*Closures of the stationary law* (``closure`` argument; dptheory.clipped_closure):

* ``"elliptic"`` (default; dptheory.clipped_elliptic): per-direction shape and radial law of the
  error with the exact discrete-time second-moment balances, the discrete radial chain (small-step
  Fokker–Planck limit for tiny steps); the clip fraction and mean clip factor are averaged over the
  law of m. Exact unclipped, linear, and for equal curvatures with Gaussian update noise; within
  1 % of the exact Monte Carlo from unsaturated to saturated states at steps up to ηγλ ≈ 0.9 (held to
  1 % + 4 SE by tests/test_clipped_elliptic.py); for unequal curvatures high by up to ≈ 0.6 % in
  partly saturated states and low by ≈ 0.5 % in saturated ones (dptheory.clipped_elliptic).
* ``"radial"``: the mean-field second moments times the small-step radial factor R
  (``clipped_closure.radial_closure_factor``); errs high by up to ≈ 6 % for unequal curvatures at
  large steps in partly saturated states.
* ``"mean-field"``: the Gaussian law at the root-mean-square m; errs low by up to (r+1)/r when the
  stationary state is saturated (m ≫ max(C, s√n)).

Which output uses which closure: the stationary loss (:func:`stationary_excess_loss`), the curved
term of :func:`heldout_excess_loss`, the clip fraction and the mean clip factor
(:func:`stationary_clip_fraction`, :func:`stationary_mean_clip_factor`) and the corresponding entries
of :func:`dimension_scaling` take ``closure`` (default elliptic). The mean-field step model alone
gives m (:func:`stationary_gradient_norm`), :func:`stationary_saturation`,
:func:`effective_linear_model` (hence phase switching, dptheory.switching), the flat random walk
(:func:`flat_error_sq`), and all transients of dptheory.clipped_recovery (loss curves, recovery
times), whose saturated plateaus are therefore low by up to (r+1)/r.

Symbols → arguments: records.Basin (d = ``dim``, λ_i = ``curvatures``, s = ``sample_std``,
λ_flat = ``flat_curvature``, κ_test = ``heldout_flat_curvature``, ``spread``) and records.Optimizer
(η = ``lr``, B = ``batch_size``, C = ``effective_clip_norm``, ν = ``noise_std``, ``mode``).
Derivations: proofs/clipped_stationary.py, proofs/clipped_elliptic_closure.py,
proofs/clipped_radial_closure.py, proofs/heldout_excess_loss.py, proofs/saturated_recovery.py.
Every public name of dptheory.clipped_recovery is importable from here.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from dptheory import clipping as _clipping
from dptheory.clipped_closure import CLOSURES, check_closure, radial_closure_factor, radial_factor
from dptheory.clipped_elliptic import elliptic_stationary_law
from dptheory.clipped_recovery import (  # re-exported: the transients live in their own module
    MeanFieldTrajectory,
    RecoveryPrediction,
    expected_loss_curve,
    mean_field_trajectory,
    recovery_time,
    saturated_recovery_steps,
)
from dptheory.clipped_step import (
    SAMPLINGS,
    StepModel,
    check_inputs,
    stationary_gradient_norm_sq,
    stationary_state,
    step_model,
)
from dptheory.quadratic import relaxation_time
from dptheory.records import Basin, LinearDynamics, Optimizer
from dptheory.validate import check_int, check_nonnegative

__all__ = [
    "CLOSURES",
    "SAMPLINGS",
    "MeanFieldTrajectory",
    "RecoveryPrediction",
    "dimension_scaling",
    "effective_linear_model",
    "expected_loss_curve",
    "flat_error_sq",
    "heldout_excess_loss",
    "mean_field_trajectory",
    "radial_closure_factor",
    "recovery_time",
    "saturated_recovery_steps",
    "stationary_clip_fraction",
    "stationary_excess_loss",
    "stationary_gradient_norm",
    "stationary_mean_clip_factor",
    "stationary_saturation",
]


# ---------------------------------------------------------------------------------------------
# public: linear model and stationary state
# ---------------------------------------------------------------------------------------------


def stationary_gradient_norm(*, basin: Basin, optimizer: Optimizer, sampling: str = "fixed") -> float:
    """Self-consistent stationary root-mean-square gradient norm m = √(Σ_i λ_i² E e_i²) of the mean-field model.

        m² = Σ_i λ_i² v_i(m),   v_i(m) = η q_i(m) / (a_i(m) (2 − η a_i(m)(1 + κ))),

    a_i = γ(m) λ_i, q_i(m) = (E‖clip g‖² − γ² m²)/(nB) + ν²/B², κ = 1/B (Poisson) or 0 (module
    docstring; flat coordinates with λ_flat > 0 add (d−r) λ_flat² v_flat). Solved by Brent's method in
    log m² (≤ 200 iterations; a ``RuntimeWarning`` if it stops early). Unclipped: no iteration.
    Returns ``inf`` if the unclipped step is unstable (η λ_i (1 + κ) ≥ 2).
    Reference: derived here, proved in proofs/clipped_stationary.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=100, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, mode="sgd")
        >>> round(stationary_gradient_norm(basin=b, optimizer=o) ** 2, 6)   # λ² η (s²/B)/(λ(2−ηλ))
        0.005263
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    return math.sqrt(stationary_gradient_norm_sq(basin=basin, optimizer=optimizer, poisson=poisson))


def effective_linear_model(
    *, basin: Basin, optimizer: Optimizer, gradient_norm: float | None = None, sampling: str = "fixed"
) -> LinearDynamics:
    """Linear-response (mean-field) dynamics of the clipped step near the optimum, as a LinearDynamics.

        drift a_i = γ λ_i,   a_flat = γ λ_flat,   γ = γ(n, m, s, C) (exact clipped-Gaussian shrinkage;
              a_flat = E[min(1, C/‖g‖)] λ_flat under basin spread, see the module docstring),
        noise τ_i² = (E‖clip_C g‖² − γ² m²)/(n B) + ν²/B²   on the n spread coordinates,
                τ_flat² = ν²/B²                              on flat coordinates under basin spread,

    g ~ N(He, s² I_n), m = ‖He‖ = ``gradient_norm`` (None: the self-consistent stationary value of
    :func:`stationary_gradient_norm`), n = ``basin.noise_dim``, s = ``basin.sample_std``,
    C = ``optimizer.effective_clip_norm``, ν = ``optimizer.noise_std``, B = ``optimizer.batch_size``.
    C = ∞ (modes ``sgd``/``noise``) gives γ = 1, τ² = s²/B + ν²/B²: exactly
    ``quadratic.noise_only_dynamics``.

    ``sampling="poisson"`` (batch size N ~ Poisson(B), sum divided by B): the extra variance
    Var(N)/B² · γ²(He)(He)ᵀ = γ²(He)(He)ᵀ/B is multiplicative; it enters here as additive variance
    γ² λ_i² E e_i²/B per coordinate, with E e_i² the stationary value (gradient_norm None: exact at the
    fixed point) or, for a given m, with m² shared over the curved (and curved-flat) coordinates in
    proportion to λ_i (the small-ηλ stationary shape λ_i² v_i ∝ λ_i). Approximation: mean-field
    (module docstring) for clipped modes; exact for unclipped fixed batches.
    Reference: derived here, proved in proofs/clipped_stationary.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=10_000, curvatures=(1.0, 1.0), sample_std=1.0)
        >>> o = Optimizer(lr=1.0, batch_size=100, clip_norm=1.0, noise_multiplier=1.0)
        >>> dyn = effective_linear_model(basin=b, optimizer=o, gradient_norm=0.0)
        >>> round(dyn.drift[0], 4)            # γ ≈ α₀ ≈ C/(s√d) = 0.01
        0.01
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    lam, lf = basin.curvature_array, basin.flat_curvature
    if gradient_norm is None:
        state = stationary_state(basin=basin, optimizer=optimizer, poisson=poisson)
        m2, st, v, vf = state.gradient_norm_sq, state.step, state.second, state.flat_second
        if not math.isfinite(m2):
            raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
        extra = st.mult * st.drift**2 * v
        extra_f = st.mult * st.flat_drift**2 * vf if (lf > 0 and math.isfinite(vf)) else 0.0
    else:
        m = check_nonnegative("gradient_norm", gradient_norm)
        m2 = m * m
        st = step_model(basin=basin, optimizer=optimizer, poisson=poisson, gradient_norm_sq=m2)
        n_flat = basin.flat_dim if lf > 0 else 0
        weight = float(lam.sum()) + n_flat * lf
        # λ_i² E e_i² = m² λ_i / Σλ (the stationary shape), so the extra variance is κ γ² m² λ_i / Σλ
        extra = st.mult * st.gamma**2 * m2 * lam / weight if weight > 0 else np.zeros_like(lam)
        extra_f = st.mult * st.gamma**2 * m2 * lf / weight if n_flat else 0.0
    return LinearDynamics(
        lr=optimizer.lr,
        drift=tuple(float(x) for x in st.drift),
        noise_var=tuple(float(x) for x in st.add_var + extra),
        flat_dim=basin.flat_dim,
        flat_drift=st.flat_drift,
        flat_noise_var=st.flat_add_var + extra_f,
    )


def stationary_excess_loss(
    *,
    basin: Basin,
    optimizer: Optimizer,
    approx: bool = False,
    sampling: str = "fixed",
    closure: str = "elliptic",
) -> float:
    """Stationary expected training loss E L(∞) = ½ Σ_i λ_i E e_i² (+ ½ λ_flat Σ_flat E e_j²) of the clipped step.

        elliptic:    E e_i² from ``clipped_elliptic.elliptic_stationary_law`` (module docstring),
        mean field:  E e_i² = v_i, i.e. L∞ = Σ_{i≤r} η q / (2 γ (2 − η γ λ_i (1 + κ)))  [+ flat if λ_flat > 0],
        radial:      L∞ = R · (mean-field L∞),   R = ``clipped_closure.radial_closure_factor``,

    γ, q at the self-consistent mean-field m (:func:`stationary_gradient_norm`); κ = 1/B for Poisson
    sampling (``sampling="poisson"``). ``closure``: "elliptic" (default), "radial" or "mean-field"
    (module docstring: where each holds and which way it errs). Returns ``inf`` when the step has
    no stationary state.

    ``approx=True`` (ignores ``closure``): the closed form with no self-consistency and small ηγλ,

        L∞ ≈ Σ_i η q₀ / (4 γ₀),   γ₀ = min(1, C/(s√n)),   q₀ = min(s², C²/n)/B + ν²/B²,

    which in the fully clipped, DP-dominated regime (C ≪ s√n, σ² n ≫ B) is r η C s √n σ²/(4B²):
    linear in r, ∝ √n. It errs (a) low by the factor (1 − ηγλ_i/2) from dropping ηγλ_i; (b) low by
    √(1 + m²/(ns²)) from ignoring m² in ‖g‖² ≈ m² + ns², and by the Jensen gap of E[C/‖g‖] (~1/(4n));
    (c) at the clipping kink C ≈ s√n, where the hard min in γ₀ and q₀ is worst: with ηγλ small the
    largest error over C is ≈ 0.3/√n (sign depends on σ; values in docs/findings-closure.md §4);
    negligible away from the kink.

    Args: ``basin``, ``optimizer`` (records), ``approx``, ``sampling`` ("fixed" | "poisson"),
    ``closure``. Raises ValueError for an invalid ``sampling`` or ``closure``.
    Reference: derived here, proved in proofs/clipped_stationary.py (mean field and the closed form)
    and proofs/clipped_elliptic_closure.py (elliptic).

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=10_000, curvatures=(1.0,) * 4, sample_std=1.0)
        >>> o = Optimizer(lr=1.0, batch_size=64, clip_norm=0.1, noise_multiplier=2.0)
        >>> ex = stationary_excess_loss(basin=b, optimizer=o)
        >>> ap = stationary_excess_loss(basin=b, optimizer=o, approx=True)
        >>> round(ap / (4 * 1.0 * 0.1 * 1.0 * 100 * 2.0**2 / (4 * 64**2)), 2)   # r η C s √d σ²/(4B²)
        1.0
        >>> abs(ex / ap - 1) < 0.01
        True
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    check_closure(closure)
    lam, lf = basin.curvature_array, basin.flat_curvature
    n, s, b = basin.noise_dim, basin.sample_std, optimizer.batch_size
    if approx:
        c = optimizer.effective_clip_norm
        gamma0 = 1.0 if (math.isinf(c) or s == 0.0) else min(1.0, c / (s * math.sqrt(n)))
        clip_var = n * s * s if math.isinf(c) else min(n * s * s, c * c)
        dp = optimizer.noise_std**2 / b**2
        q0 = clip_var / (n * b) + dp
        total = basin.rank * optimizer.lr * q0 / (4.0 * gamma0)
        if lf > 0 and basin.flat_dim > 0:
            qf = q0 if basin.spread == "ambient" else dp
            total += basin.flat_dim * optimizer.lr * qf / (4.0 * gamma0)
        return float(total)
    second, flat_second = _stationary_moments(basin, optimizer, poisson, closure)
    if not np.all(np.isfinite(second)):
        return math.inf
    total = 0.5 * float(np.sum(lam * second))
    if lf > 0 and basin.flat_dim > 0:
        total += 0.5 * lf * basin.flat_dim * flat_second
    return float(total)


def _stationary_moments(basin: Basin, optimizer: Optimizer, poisson: bool, closure: str) -> tuple[np.ndarray, float]:
    """(E e_i² on the curved axes, E e_j² per flat coordinate) at stationarity under ``closure``."""
    state = stationary_state(basin=basin, optimizer=optimizer, poisson=poisson)
    if not math.isfinite(state.gradient_norm_sq):
        return np.full(basin.rank, math.inf), math.inf
    if closure == "elliptic":
        law = elliptic_stationary_law(basin=basin, optimizer=optimizer, sampling="poisson" if poisson else "fixed")
        return law.second, law.flat_second
    factor = 1.0
    if closure == "radial":
        factor = radial_factor(basin=basin, optimizer=optimizer, poisson=poisson, state=state)
    return factor * state.second, factor * state.flat_second


def stationary_saturation(*, basin: Basin, optimizer: Optimizer, sampling: str = "fixed") -> float:
    """Saturation S = m² / (m² + n s²) of the mean-field stationary state: validity indicator of the mean field.

    S is the share of the per-sample gradient's mean square E‖g‖² = m² + n s² carried by the mean
    gradient m = ‖He‖ (m = :func:`stationary_gradient_norm`, n = ``basin.noise_dim``, s =
    ``basin.sample_std``). The mean field replaces γ(m) by γ(√E m²): harmless while the clip factor
    hardly depends on m (S → 0: the per-sample noise sets ‖g‖), low by up to (r + 1)/r on the
    stationary loss as S → 1 with C ≪ m (drift ηC·He/‖He‖, radial law ∝ ρ^{r−1}e^{−ρ/θ}, E ρ² =
    r(r+1)θ² against the mean field's r²θ²; proofs/clipped_stationary.py). The elliptic closure
    (the default of :func:`stationary_excess_loss`) holds at any S; S flags where the mean-field
    outputs (m, γ, :func:`effective_linear_model`, the transients) summarise a non-Gaussian state.
    Returns 1 when there is no stationary state and 0 when m = s = 0; irrelevant for unclipped
    modes (the model is exact there). Reference: definition.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=10_000, curvatures=(1.0, 0.5), sample_std=1.0)
        >>> o = Optimizer(lr=1.0, batch_size=256, clip_norm=1.0, noise_multiplier=1.0)
        >>> stationary_saturation(basin=b, optimizer=o) < 1e-3
        True
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    m2 = stationary_gradient_norm_sq(basin=basin, optimizer=optimizer, poisson=poisson)
    if not math.isfinite(m2):
        return 1.0
    total = m2 + basin.noise_dim * basin.sample_std**2
    return float(m2 / total) if total > 0 else 0.0


def stationary_clip_fraction(
    *, basin: Basin, optimizer: Optimizer, sampling: str = "fixed", closure: str = "elliptic"
) -> float:
    """Predicted fraction of clipped per-sample gradients at stationarity, E P(‖g‖ > C).

        P(‖g‖ > C | m) = S_{χ'²_n(m²/s²)}(C²/s²)   (``clipping.clip_probability``),

    averaged over the stationary law of m = ‖He‖ (``closure="elliptic"``, the default:
    ``clipped_elliptic.elliptic_stationary_law``) or evaluated at the mean-field root-mean-square m
    (``"radial"``, ``"mean-field"``; too high in saturated states, where the law of m reaches below C
    while its root mean square is above it). n = ``basin.noise_dim``, s = ``basin.sample_std``,
    C = ``optimizer.effective_clip_norm``; 0 for unclipped modes. Raises ValueError for an invalid
    ``sampling`` or ``closure``. Reference: derived here, proved in proofs/clipped_elliptic_closure.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=1000, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, clip_norm=1.0, noise_multiplier=1.0)
        >>> stationary_clip_fraction(basin=b, optimizer=o)
        1.0
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    check_closure(closure)
    c = optimizer.effective_clip_norm
    if math.isinf(c):
        return 0.0
    if closure == "elliptic":
        return elliptic_stationary_law(basin=basin, optimizer=optimizer, sampling=sampling).clip_fraction
    m = math.sqrt(stationary_gradient_norm_sq(basin=basin, optimizer=optimizer, poisson=poisson))
    return float(_clipping.clip_probability(dim=basin.noise_dim, mean_norm=m, std=basin.sample_std, clip_norm=c))


def stationary_mean_clip_factor(
    *, basin: Basin, optimizer: Optimizer, sampling: str = "fixed", closure: str = "elliptic"
) -> float:
    """Predicted mean clip factor E[min(1, C/‖g‖)] of the per-sample gradients at stationarity.

        E[min(1, C/‖g‖) | m],  ‖g‖²/s² ~ χ'²_n(m²/s²)   (``clipping.gaussian_mean_clip_factor``),

    averaged over the stationary law of m (``closure="elliptic"``, the default) or at the mean-field
    root-mean-square m (``"radial"``, ``"mean-field"``). Not the same as γ (γ averages over
    χ'²_{n+2}: the clip factor weighted along the mean). n = ``basin.noise_dim``, s =
    ``basin.sample_std``, C = ``optimizer.effective_clip_norm`` (1 for unclipped modes). Raises
    ValueError for an invalid ``sampling`` or ``closure``. Reference: derived here, proved in
    proofs/clipped_elliptic_closure.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=10_000, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, clip_norm=1.0, noise_multiplier=1.0)
        >>> round(stationary_mean_clip_factor(basin=b, optimizer=o), 3)     # ≈ C/(s√d)
        0.01
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    check_closure(closure)
    if closure == "elliptic" and optimizer.mode.clipped:
        return elliptic_stationary_law(basin=basin, optimizer=optimizer, sampling=sampling).mean_clip_factor
    m = math.sqrt(stationary_gradient_norm_sq(basin=basin, optimizer=optimizer, poisson=poisson))
    return float(
        _clipping.gaussian_mean_clip_factor(
            dim=basin.noise_dim, mean_norm=m, std=basin.sample_std, clip_norm=optimizer.effective_clip_norm
        )
    )


# ---------------------------------------------------------------------------------------------
# public: flat directions and held-out loss
# ---------------------------------------------------------------------------------------------


def _steps_array(steps: Any) -> np.ndarray:
    t = np.atleast_1d(np.asarray(steps, dtype=float))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t != np.round(t)):
        raise ValueError(f"steps must be a non-negative integer or a 1-D sequence of them, got {steps!r}")
    return t


def _flat_curve(basin: Basin, opt: Optimizer, st: StepModel, init_flat_sq: float, t: np.ndarray) -> np.ndarray:
    """E‖e_flat(t)‖² = R^t F0 + (d−r) η² q_f (1 − R^t)/(1 − R),  R = (1 − η a_f)² + η² κ a_f²."""
    eta, a = opt.lr, st.flat_drift
    big_r = (1.0 - eta * a) ** 2 + eta**2 * st.mult * a * a
    u = 1.0 - big_r
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_r = math.log(big_r) if big_r > 0 else -math.inf
        tl = np.where(t == 0, 0.0, t * log_r)
        decay = np.exp(tl)
        geom = t if u == 0 else -np.expm1(tl) / u
    return decay * init_flat_sq + basin.flat_dim * eta**2 * st.flat_add_var * geom


def flat_error_sq(
    *, basin: Basin, optimizer: Optimizer, steps: Any, init_flat_sq: float = 0.0, sampling: str = "fixed"
) -> np.ndarray:
    """E‖e_flat(t)‖² over the d − r flat directions, with the curved directions at stationarity.

        λ_flat = 0 (random walk):  ‖e_flat(0)‖² + (d − r) η² τ_flat² t,
        λ_flat > 0:  R^t ‖e_flat(0)‖² + (d − r) η² τ_flat² (1 − R^t)/(1 − R),
                     R = (1 − ηγλ_flat)² + η²κγ²λ_flat²,

    τ_flat² = (E‖clip g‖² − γ²m²)/(dB) + ν²/B² (ambient spread) or ν²/B² (basin spread), evaluated
    at the stationary m (:func:`stationary_gradient_norm`); ``init_flat_sq`` = ‖e_flat(0)‖² (a
    squared norm, summed over the flat coordinates); ``steps`` = t (integer or 1-D array); returns an
    array of the same length. Clipping *reduces* the flat random walk (τ_flat² shrinks from s²/B to
    ≈ C²/(dB)) but the DP noise ν²/B² is not reduced. Exact in the mean-field model (the flat noise
    is isotropic across the flat coordinates, and they do not feed back when λ_flat = 0).
    Reference: derived here, proved in proofs/heldout_excess_loss.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=101, curvatures=(1.0,), sample_std=0.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, clip_norm=1.0, noise_multiplier=1.0)
        >>> flat_error_sq(basin=b, optimizer=o, steps=[0, 100]).round(6).tolist()  # 100 η² ν²/B² t
        [0.0, 1.0]
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    t = _steps_array(steps)
    state = stationary_state(basin=basin, optimizer=optimizer, poisson=poisson)
    if not math.isfinite(state.gradient_norm_sq):
        raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
    return _flat_curve(basin, optimizer, state.step, f0, t)


def heldout_excess_loss(
    *,
    basin: Basin,
    optimizer: Optimizer,
    steps: Any,
    init_flat_sq: float = 0.0,
    sampling: str = "fixed",
    closure: str = "elliptic",
) -> np.ndarray:
    """Expected held-out loss E L_test(t) − L_test(e = 0) with the curved directions at stationarity.

        E L_test(t) = ½ Σ_i λ_i v_i∞ + ½ (λ_flat + κ) E‖e_flat(t)‖²,

    v_i∞ the stationary curved second moments (so the first term is :func:`stationary_excess_loss`
    when λ_flat = 0), κ = ``basin.heldout_flat_curvature``, E‖e_flat(t)‖² from :func:`flat_error_sq`
    (same arguments; the flat coordinates start from ``init_flat_sq``, not from stationarity).
    L_test(0) = 0, so this is E L_test(t) itself. The curved term takes the ``closure`` of
    :func:`stationary_excess_loss` (default elliptic); the flat transient is the mean-field
    recursion (exact for unclipped modes, and whenever λ_flat = 0 given the flat noise). Raises
    ValueError for invalid arguments or when the step has no stationary state.
    Reference: derived here, proved in proofs/heldout_excess_loss.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=101, curvatures=(1.0,), sample_std=0.0, heldout_flat_curvature=2.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, clip_norm=1.0, noise_multiplier=1.0)
        >>> h = heldout_excess_loss(basin=b, optimizer=o, steps=[0, 100])
        >>> round(float(h[1] - h[0]), 6)              # ½ κ · 1.0
        1.0
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    check_closure(closure)
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    t = _steps_array(steps)
    state = stationary_state(basin=basin, optimizer=optimizer, poisson=poisson)
    if not math.isfinite(state.gradient_norm_sq):
        raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
    flat = _flat_curve(basin, optimizer, state.step, f0, t)
    second, _ = _stationary_moments(basin, optimizer, poisson, closure)
    curved = 0.5 * float(np.sum(basin.curvature_array * second))
    lf = basin.flat_curvature
    return curved + 0.5 * (lf + basin.heldout_flat_curvature) * flat


def dimension_scaling(
    *,
    basin: Basin,
    optimizer: Optimizer,
    dims: Any,
    displacement: float | None = None,
    direction: Any = "uniform",
    threshold: float = 0.01,
    sampling: str = "fixed",
    closure: str = "elliptic",
) -> dict[str, np.ndarray]:
    """Predictions over a grid of ambient dimensions d at fixed everything else (claim 3).

    For each d in ``dims`` (replacing ``basin.dim``; each must be ≥ rank) returns arrays:
    ``stationary_loss`` (:func:`stationary_excess_loss` under ``closure``), ``stationary_loss_approx``
    (its closed form), ``clip_fraction`` and ``mean_clip_factor`` (under ``closure``), ``gamma``
    (mean-field stationary γ), ``gradient_norm`` (mean-field stationary m), ``relaxation_steps``
    = 1/(ηγλ_min) (``quadratic.relaxation_time(exact=False)``: e-folding time of a small displacement
    of the flattest curved direction), ``flat_noise_var`` (τ_flat², the per-step flat random-walk
    variance / η²), ``saturation`` (:func:`stationary_saturation`), ``radial_factor``
    (:func:`radial_closure_factor`), ``closure_factor`` (``stationary_loss`` over the mean-field
    loss), and, if ``displacement`` is given, ``recovery_steps`` and ``recovery_ode_steps``
    (:func:`recovery_time`, mean field). With ``spread="ambient"`` and C < s√d the stationary loss
    grows ∝ √d and γ ∝ 1/√d; with ``spread="basin"`` only the flat random walk depends on d.
    Raises ValueError for invalid arguments. Reference: derived here (the entries' own references).

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=100, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=1.0, batch_size=64, clip_norm=0.1, noise_multiplier=8.0)
        >>> out = dimension_scaling(basin=b, optimizer=o, dims=[100, 10_000])
        >>> round(float(out["stationary_loss"][1] / out["stationary_loss"][0]), 1)   # ≈ √(10⁴/10²)
        9.8
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    check_closure(closure)
    grid = np.atleast_1d(np.asarray(dims))
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"dims must be a non-empty 1-D sequence of integers, got {dims!r}")
    keys = [
        "dim",
        "stationary_loss",
        "stationary_loss_approx",
        "clip_fraction",
        "mean_clip_factor",
        "gamma",
        "gradient_norm",
        "relaxation_steps",
        "flat_noise_var",
        "saturation",
        "radial_factor",
        "closure_factor",
    ]
    if displacement is not None:
        keys += ["recovery_steps", "recovery_ode_steps"]
    out: dict[str, list[Any]] = {k: [] for k in keys}
    for d_raw in grid.tolist():
        d = check_int("dims", d_raw, minimum=basin.rank)
        b = replace(basin, dim=d)
        state = stationary_state(basin=b, optimizer=optimizer, poisson=poisson)
        m2, st = state.gradient_norm_sq, state.step
        out["dim"].append(d)
        radial = radial_factor(basin=b, optimizer=optimizer, poisson=poisson, state=state) if math.isfinite(m2) else 1.0
        out["radial_factor"].append(radial)
        mean_field = stationary_excess_loss(basin=b, optimizer=optimizer, sampling=sampling, closure="mean-field")
        if closure == "radial":
            loss = radial * mean_field
        else:
            loss = stationary_excess_loss(basin=b, optimizer=optimizer, sampling=sampling, closure=closure)
        out["stationary_loss"].append(loss)
        out["closure_factor"].append(loss / mean_field if mean_field > 0 and math.isfinite(mean_field) else 1.0)
        out["stationary_loss_approx"].append(
            stationary_excess_loss(basin=b, optimizer=optimizer, approx=True, sampling=sampling)
        )
        out["clip_fraction"].append(
            stationary_clip_fraction(basin=b, optimizer=optimizer, sampling=sampling, closure=closure)
        )
        out["mean_clip_factor"].append(
            stationary_mean_clip_factor(basin=b, optimizer=optimizer, sampling=sampling, closure=closure)
        )
        out["gamma"].append(st.gamma)
        out["gradient_norm"].append(math.sqrt(m2))
        out["relaxation_steps"].append(
            relaxation_time(lr=optimizer.lr, drift=st.gamma * float(b.curvature_array.min()), exact=False)
        )
        out["flat_noise_var"].append(st.flat_add_var)
        out["saturation"].append(m2 / (m2 + d_noise) if (d_noise := b.noise_dim * b.sample_std**2) + m2 > 0 else 0.0)
        if displacement is not None:
            rec = recovery_time(
                basin=b,
                optimizer=optimizer,
                displacement=displacement,
                direction=direction,
                threshold=threshold,
                sampling=sampling,
            )
            out["recovery_steps"].append(rec.steps)
            out["recovery_ode_steps"].append(rec.ode_steps)
    return {k: np.asarray(v) for k, v in out.items()}
