"""Per-sample-clipped DP-SGD on the low-rank quadratic basin: the mean-field (linear-response) model.

The step of records.py with per-sample gradients g_j = H e + s ζ_j (ζ_j spanning n = ``noise_dim``
coordinates: n = d for ``spread="ambient"``, n = r for ``"basin"``) is, conditional on the error e,

    E[update] = γ(m) H e,          m = ‖H e‖,
    Cov[update] = Cov[clip_C(g)]/B + ν²/B² I  (+ γ² (He)(He)ᵀ Var(N)/B² under Poisson sampling),

with γ(m) = ``clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=C)`` the
exact shrinkage of the mean of a clipped Gaussian (REFERENCE.md §3). The *mean-field* model replaces
the e-dependent γ(m) and clip covariance by their values at the root-mean-square gradient norm
m² = E‖He‖² = Σ_i λ_i² E e_i² and spreads the clip variance E‖clip g‖² − γ² m² evenly over the n
coordinates the per-sample spread covers. Per direction this is the linear recursion

    E e_i(t+1)² = [(1 − η a_i)² + η² κ_i] E e_i(t)² + η² q_i,
    a_i = γ λ_i,   q_i = (E‖clip g‖² − γ² m²)/(n B) + ν²/B²,   κ_i = a_i²/B (Poisson) or 0 (fixed),

re-evaluated at the current m(t) (``expected_loss_curve``) or at its self-consistent stationary value
(``effective_linear_model``, ``stationary_excess_loss``). Unclipped modes (C = ∞) have γ = 1 and
q = s²/B + ν²/B² on the spread coordinates: the exact model of ``quadratic.noise_only_dynamics``.

What the mean-field step neglects (and so where it can err): (i) fluctuations of m around its root
mean square (γ is convex in m, so Jensen makes γ(√E m²) slightly too small when m fluctuates by a
fraction of s√n; negligible when m² ≪ n s² or n large); (ii) the anisotropy of Cov[clip g] (along He
versus across it), which vanishes for n ≫ 1; (iii) the non-Gaussianity of the clipped noise (a sum of
B clipped vectors). tests/test_clipped_dynamics.py measures the total error against an exact Monte
Carlo of the step (≤ 5 % from d = 1e2 to 1e4, unclipped to fully clipped, both spreads, while the
stationary state is not itself saturated). The Gaussian closure FAILS when it is: if the stationary
gradient norm m exceeds both C and s√n (large σ/B), the drift is ηC·He/‖He‖ and the mean-field
stationary loss is low by up to (r + 1)/r (exactly that in the deep-saturated, small-step limit).
Fixed by the *radial closure* (dptheory.clipped_closure, the default of
:func:`stationary_excess_loss`): the small-step Fokker–Planck law of the gradient norm with the exact
nonlinear drift γ(m)m, applied as a factor R on the mean-field second moments (R = 1 unclipped,
→ (r+1)/r saturated); :func:`stationary_saturation` reports the indicator m²/(m² + n s²). Only the
stationary loss uses it (:func:`stationary_excess_loss`, the curved term of
:func:`heldout_excess_loss`, ``dimension_scaling["stationary_loss"]``); m, γ, the clip fraction,
:func:`effective_linear_model` and the loss curves of dptheory.clipped_recovery stay mean-field, so
a saturated plateau of ``expected_loss_curve`` is still low by up to (r+1)/r.

``spread="basin"`` with ``flat_curvature`` > 0: then He has a deterministic component λ_flat e_flat
*outside* the r-dimensional support of ζ, so ‖g‖² = ‖λ e_curved + s ζ‖² + λ_flat² ‖e_flat‖² is not a
noncentral chi-square in r dimensions. The model uses n = r and the full m² = ‖He‖² in the
noncentrality (same mean of ‖g‖², larger variance than the truth), the Stein-weighted γ for the
curved coordinates and the plain mean clip factor E[min(1, C/‖g‖)] for the flat ones (their
gradient is deterministic, so no Stein correction applies; using γ there overestimated the loss by
≈ 50 % at r = 2 — found by the brute-force Monte Carlo in the tests and fixed); their only additive
noise is ν²/B². Exact when λ_flat = 0 (the flat coordinates then only random-walk).

Symbols → arguments: records.Basin (d = ``dim``, λ_i = ``curvatures``, s = ``sample_std``,
λ_flat = ``flat_curvature``, κ_test = ``heldout_flat_curvature``, ``spread``) and records.Optimizer
(η = ``lr``, B = ``batch_size``, C = ``effective_clip_norm``, ν = ``noise_std``, ``mode``).
Derivations: proofs/clipped_stationary.py, proofs/clipped_radial_closure.py and
proofs/saturated_recovery.py. The per-step model and the closures live in dptheory.clipped_closure,
the transients (trajectories, loss curves, recovery) in dptheory.clipped_recovery; every public name
of both is importable from here.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from dptheory import clipping as _clipping
from dptheory.clipped_closure import CLOSURES, check_closure, radial_closure_factor, radial_factor
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
    Reference: derived here, proved in proofs/clipped_stationary.py; REFERENCE.md §6.

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
        drift=st.drift,
        noise_var=st.add_var + extra,
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
    closure: str = "radial",
) -> float:
    """Stationary expected training loss E L(∞) of the clipped step (radial or mean-field closure).

        mean field:  L∞ = Σ_i ½ λ_i v_i = Σ_{i≤r} η q / (2 γ (2 − η γ λ_i (1 + κ)))  [+ flat if λ_flat > 0],
        radial:      L∞ = R · (mean-field L∞),   R = ``clipped_closure.radial_closure_factor``,

    the loss weighs e_i² by λ_i while the dynamics contract with a_i = γλ_i; γ, q are evaluated at the
    self-consistent stationary m (:func:`stationary_gradient_norm`); κ = 1/B for Poisson sampling.
    ``closure="radial"`` (default) corrects the Gaussian mean-field law for the nonlinearity of the
    clipped drift γ(m)·He in the radius (small-step Fokker–Planck law of the gradient norm,
    proofs/clipped_radial_closure.py): R = 1 unclipped, R → (r+1)/r when the stationary state is itself
    saturated (m ≫ max(C, s√n)), where the mean field errs low by exactly that factor (a finding:
    tests/test_clipped_dynamics.py), and R − 1 = O(S) small in the unsaturated regime (S =
    :func:`stationary_saturation`; ≤ 0.3 % on the tests' grid of d = 1e2…1e4, clip fractions 0…1).
    ``closure="mean-field"``: the plain Gaussian closure (the model before the fix). ``approx=True``
    ignores ``closure`` (a closed form of the unsaturated regime).

    ``approx=True``: the closed form with no self-consistency and small ηγλ,

        L∞ ≈ Σ_i η q₀ / (4 γ₀),   γ₀ = min(1, C/(s√n)),   q₀ = min(s², C²/n)/B + ν²/B²,

    which in the fully clipped, DP-dominated regime (C ≪ s√n, σ² n ≫ B) is r η C s √n σ²/(4B²)
    (REFERENCE.md §6): linear in r, ∝ √n. Where it errs: (a) dropping ηγλ_i errs low by the factor
    (1 − ηγλ_i/2); (b) γ₀ ignores m² in ‖g‖² ≈ m² + ns² (errs low by √(1 + m²/(ns²))) and the
    Jensen gap of E[C/‖g‖] (~1/(4n)); (c) at the clipping kink C ≈ s√n the hard min in γ₀ and q₀
    is worst: with ηγλ small the largest error over C is ≈ 0.3/√n (measured: 22 % at n = 2, 9 % at
    n = 10, 2.8 % at n = 100, 0.4 % at n = 1e4; sign depends on σ), negligible away from the kink
    (tests/test_clipped_dynamics.py). Returns ``inf`` when there is no stationary state.
    Reference: derived here, proved in proofs/clipped_stationary.py; REFERENCE.md §6.

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
    state = stationary_state(basin=basin, optimizer=optimizer, poisson=poisson)
    if not math.isfinite(state.gradient_norm_sq):
        return math.inf
    total = 0.5 * float(np.sum(lam * state.second))
    if lf > 0 and basin.flat_dim > 0:
        total += 0.5 * lf * basin.flat_dim * state.flat_second
    if closure == "radial":
        total *= radial_factor(basin=basin, optimizer=optimizer, poisson=poisson, state=state)
    return float(total)


def stationary_saturation(*, basin: Basin, optimizer: Optimizer, sampling: str = "fixed") -> float:
    """Validity indicator of the mean-field closure: S = m² / (m² + n s²) at the stationary m.

    S is the share of the per-sample gradient's mean square E‖g‖² = m² + n s² carried by the mean
    gradient m = ‖He‖ (n = ``basin.noise_dim``, s = ``basin.sample_std``). The closure replaces
    γ(m) by γ(√E m²); that is harmless while the clip factor hardly depends on m (S → 0: the per-sample
    noise sets ‖g‖) and wrong by up to a factor (r + 1)/r on the stationary loss as S → 1 with
    C ≪ m (the stationary state is itself saturated: drift ηC·He/‖He‖, radial law ∝ ρ^{r−1}e^{−ρ/θ},
    E ρ² = r(r+1)θ² against the closure's r²θ²; proofs/clipped_stationary.py). Measured (r = 2,
    tests/test_clipped_dynamics.py and the report): S ≈ 0.02 → model low by ≈ 1.5 %; S ≈ 0.8 → ≈ 40 %.
    The radial closure (``stationary_excess_loss(closure="radial")``, the default) removes this error
    for the stationary loss; S still flags where the other mean-field outputs (m, γ, clip fraction,
    effective_linear_model) are rms-level summaries of a non-Gaussian state.
    Irrelevant for unclipped modes (the model is exact there). Returns 0 when m = s = 0.
    Reference: derived here.

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


def stationary_clip_fraction(*, basin: Basin, optimizer: Optimizer, sampling: str = "fixed") -> float:
    """Predicted fraction of clipped per-sample gradients at stationarity, P(‖g‖ > C).

        P(‖g‖ > C) = S_{χ'²_n(m²/s²)}(C²/s²),   m = stationary gradient norm (mean-field),

    n = ``basin.noise_dim``, s = ``basin.sample_std``, C = ``optimizer.effective_clip_norm`` (0 for
    unclipped modes). Approximation: m is set to its root mean square (it fluctuates).
    Reference: derived here; ``clipping.clip_probability``.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=1000, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, clip_norm=1.0, noise_multiplier=1.0)
        >>> stationary_clip_fraction(basin=b, optimizer=o)
        1.0
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    c = optimizer.effective_clip_norm
    if math.isinf(c):
        return 0.0
    m = math.sqrt(stationary_gradient_norm_sq(basin=basin, optimizer=optimizer, poisson=poisson))
    return float(_clipping.clip_probability(dim=basin.noise_dim, mean_norm=m, std=basin.sample_std, clip_norm=c))


def stationary_mean_clip_factor(*, basin: Basin, optimizer: Optimizer, sampling: str = "fixed") -> float:
    """Predicted mean clip factor E[min(1, C/‖g‖)] of the per-sample gradients at stationarity.

        E[min(1, C/‖g‖)],  ‖g‖²/s² ~ χ'²_n(m²/s²),  m = stationary gradient norm (mean-field).

    Not the same as γ (γ averages over χ'²_{n+2}: the clip factor weighted along the mean).
    n = ``basin.noise_dim``, s = ``basin.sample_std``, C = ``optimizer.effective_clip_norm`` (1 for
    unclipped modes). Approximation: m set to its root mean square. Reference: derived here.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=10_000, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, clip_norm=1.0, noise_multiplier=1.0)
        >>> round(stationary_mean_clip_factor(basin=b, optimizer=o), 3)     # ≈ C/(s√d)
        0.01
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
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
    Reference: derived here (REFERENCE.md §5 flat directions; proofs/clipped_stationary.py).

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
    closure: str = "radial",
) -> np.ndarray:
    """Expected held-out loss E L_test(t) − L_test(e = 0) with the curved directions at stationarity.

        E L_test(t) = ½ Σ_i λ_i v_i∞ + ½ (λ_flat + κ) E‖e_flat(t)‖²,

    v_i∞ the stationary curved second moments (so the first term is :func:`stationary_excess_loss`
    when λ_flat = 0), κ = ``basin.heldout_flat_curvature``, E‖e_flat(t)‖² from :func:`flat_error_sq`
    (same arguments; the flat coordinates start from ``init_flat_sq``, not from stationarity).
    L_test(0) = 0, so this is E L_test(t) itself. Mean-field model (exact for unclipped modes); the
    curved term takes the ``closure`` of :func:`stationary_excess_loss` (the flat transient is
    mean-field either way). Reference: derived here (records.py held-out loss).

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
    curved = 0.5 * float(np.sum(basin.curvature_array * state.second))
    if closure == "radial":
        curved *= radial_factor(basin=basin, optimizer=optimizer, poisson=poisson, state=state)
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
) -> dict[str, np.ndarray]:
    """Mean-field predictions over a grid of ambient dimensions d at fixed everything else (claim 3).

    For each d in ``dims`` (replacing ``basin.dim``; each must be ≥ rank) returns arrays:
    ``stationary_loss`` (:func:`stationary_excess_loss`), ``stationary_loss_approx`` (its closed form),
    ``clip_fraction``, ``mean_clip_factor``, ``gamma`` (stationary γ), ``gradient_norm`` (stationary
    m), ``relaxation_steps`` = 1/(ηγλ_min) (e-folding time of a small displacement of the flattest
    curved direction), ``flat_noise_var`` (τ_flat², the per-step flat random-walk variance / η²),
    ``saturation`` (:func:`stationary_saturation`, the mean-field closure's validity indicator),
    ``radial_factor`` (:func:`radial_closure_factor`, already in ``stationary_loss``), and,
    if ``displacement`` is given, ``recovery_steps`` and ``recovery_ode_steps`` (:func:`recovery_time`).
    With ``spread="ambient"`` and C < s√d the stationary loss grows ∝ √d and γ ∝ 1/√d; with
    ``spread="basin"`` only the flat random walk depends on d. Reference: derived here.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=100, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=1.0, batch_size=64, clip_norm=0.1, noise_multiplier=8.0)
        >>> out = dimension_scaling(basin=b, optimizer=o, dims=[100, 10_000])
        >>> round(float(out["stationary_loss"][1] / out["stationary_loss"][0]), 1)   # ≈ √(10⁴/10²)
        9.8
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
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
    ]
    if displacement is not None:
        keys += ["recovery_steps", "recovery_ode_steps"]
    out: dict[str, list] = {k: [] for k in keys}
    for d_raw in grid.tolist():
        d = check_int("dims", d_raw, minimum=basin.rank)
        b = replace(basin, dim=d)
        state = stationary_state(basin=b, optimizer=optimizer, poisson=poisson)
        m2, st = state.gradient_norm_sq, state.step
        out["dim"].append(d)
        radial = radial_factor(basin=b, optimizer=optimizer, poisson=poisson, state=state) if math.isfinite(m2) else 1.0
        out["radial_factor"].append(radial)
        out["stationary_loss"].append(
            radial * stationary_excess_loss(basin=b, optimizer=optimizer, sampling=sampling, closure="mean-field")
        )
        out["stationary_loss_approx"].append(
            stationary_excess_loss(basin=b, optimizer=optimizer, approx=True, sampling=sampling)
        )
        out["clip_fraction"].append(stationary_clip_fraction(basin=b, optimizer=optimizer, sampling=sampling))
        out["mean_clip_factor"].append(stationary_mean_clip_factor(basin=b, optimizer=optimizer, sampling=sampling))
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
