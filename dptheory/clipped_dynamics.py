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
stationary state is not itself saturated). It FAILS when it is: if the stationary gradient norm m
exceeds both C and s√n (large σ/B), the drift is ηC·He/‖He‖ and the closure underestimates the
stationary loss by up to (r + 1)/r (exactly that in the deep-saturated, small-step limit);
:func:`stationary_saturation` reports the indicator m²/(m² + n s²).

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
Derivations: proofs/clipped_stationary.py and proofs/saturated_recovery.py.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import integrate, optimize, stats

from dptheory import clipping as _clipping
from dptheory._validate import check_finite, check_int, check_nonnegative, check_positive
from dptheory.records import Basin, LinearDynamics, Optimizer

__all__ = [
    "SAMPLINGS",
    "MeanFieldTrajectory",
    "RecoveryPrediction",
    "effective_linear_model",
    "stationary_gradient_norm",
    "stationary_excess_loss",
    "stationary_clip_fraction",
    "stationary_mean_clip_factor",
    "stationary_saturation",
    "flat_error_sq",
    "heldout_excess_loss",
    "mean_field_trajectory",
    "expected_loss_curve",
    "recovery_time",
    "saturated_recovery_steps",
    "dimension_scaling",
]

SAMPLINGS = ("fixed", "poisson")
_MAX_ITER = 200  # step cap of the self-consistency solve


# ---------------------------------------------------------------------------------------------
# validation and the per-step model (private)
# ---------------------------------------------------------------------------------------------


def _check(basin: Any, optimizer: Any, sampling: Any) -> tuple[Basin, Optimizer, bool]:
    if not isinstance(basin, Basin):
        raise ValueError(f"basin must be a dptheory.records.Basin, got {type(basin).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be a dptheory.records.Optimizer, got {type(optimizer).__name__}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    return basin, optimizer, sampling == "poisson"


@dataclass(frozen=True)
class _Step:
    """Per-coordinate coefficients of the mean-field recursion at one value of m²."""

    gamma: float
    drift: np.ndarray  # a_i = γ λ_i, curved
    add_var: np.ndarray  # q_i, curved
    flat_drift: float  # γ λ_flat
    flat_add_var: float  # q_flat
    mult: float  # κ_i / a_i² = 1/B (Poisson) or 0 (fixed)


def _clip_moments(n: int, m2: float, s: float, clip: float) -> tuple[float, float]:
    """(γ, E‖clip g‖² − γ² m²) for one per-sample gradient g ~ N(μ, s² I_n), ‖μ‖² = m²."""
    if math.isinf(clip):
        return 1.0, n * s * s
    m = math.sqrt(max(m2, 0.0))
    g = float(_clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=clip))
    second = float(_clipping.clipped_gaussian_second_moment(dim=n, mean_norm=m, std=s, clip_norm=clip))
    return g, max(second - g * g * m2, 0.0)


class _MomentTable:
    """(γ, clip variance) as functions of m², tabulated lazily on a grid u = log m² of spacing h.

    Cubic (4-node Lagrange) interpolation in u. Error ≤ h⁴/24 · max|∂⁴_u f| ≈ 3e-7 relative where
    the clip moments vary on the scale of m itself (they are smooth in u, e.g. γ ≈ C/√(e^u + ns²));
    at a clipping kink sharper than the grid (s ≲ h·C, nearly deterministic gradients) up to ~1 %.
    Used by the recursions, where m(t) sweeps many decades and each exact evaluation costs ~1–3 ms.
    """

    h = 0.05

    def __init__(self, n: int, s: float, clip: float) -> None:
        self.n, self.s, self.clip = n, s, clip
        self.nodes: dict[int, tuple[float, float]] = {}

    def _node(self, i: int) -> tuple[float, float]:
        if i not in self.nodes:
            self.nodes[i] = _clip_moments(self.n, math.exp(i * self.h), self.s, self.clip)
        return self.nodes[i]

    def __call__(self, m2: float) -> tuple[float, float]:
        if not m2 > 0:
            return _clip_moments(self.n, 0.0, self.s, self.clip)
        x = math.log(m2) / self.h
        i = math.floor(x)
        w = x - i
        weights = (-w * (w - 1) * (w - 2) / 6, (w + 1) * (w - 1) * (w - 2) / 2,
                   -(w + 1) * w * (w - 2) / 2, (w + 1) * w * (w - 1) / 6)
        g = cv = 0.0
        for j, lw in zip(range(i - 1, i + 3), weights):
            gj, cj = self._node(j)
            g += lw * gj
            cv += lw * cj
        return min(1.0, max(g, 0.0)), max(cv, 0.0)


def _step(basin: Basin, opt: Optimizer, poisson: bool, m2: float, moments=None) -> _Step:
    """Recursion coefficients at m²; ``moments`` (optional callable m² → (γ, clip var)) overrides."""
    n, b = basin.noise_dim, opt.batch_size
    if moments is not None:
        gamma, clip_var = moments(m2)
    else:
        gamma, clip_var = _clip_moments(n, m2, basin.sample_std, opt.effective_clip_norm)
    dp_var = opt.noise_std**2 / b**2
    q_spread = clip_var / (n * b) + dp_var
    flat_gamma = gamma
    if basin.spread == "basin" and basin.flat_curvature > 0 and basin.flat_dim > 0:
        # the flat gradient λ_flat e_flat is deterministic (outside the support of ζ): its shrinkage is
        # the plain mean clip factor E[min(1, C/‖g‖)], not the Stein-weighted γ of the Gaussian part
        flat_gamma = _mean_clip_factor(n, math.sqrt(max(m2, 0.0)), basin.sample_std, opt.effective_clip_norm)
    return _Step(
        gamma=gamma,
        drift=gamma * basin.curvature_array,
        add_var=np.full(basin.rank, q_spread),
        flat_drift=flat_gamma * basin.flat_curvature,
        flat_add_var=q_spread if basin.spread == "ambient" else dp_var,
        mult=1.0 / b if poisson else 0.0,
    )


def _stationary_v(lr: float, a: np.ndarray, q: np.ndarray, mult: float) -> np.ndarray:
    """v = η q / (a (2 − η a (1 + mult))): fixed point of v = [(1−ηa)² + η² mult a²] v + η² q.

    inf where the bracket is ≥ 1 (unstable) and q > 0 or where a = 0 < q; 0 where q = 0.
    """
    a = np.asarray(a, dtype=float)
    q = np.asarray(q, dtype=float)
    den = a * (2.0 - lr * a * (1.0 + mult))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(den > 0, lr * q / np.where(den > 0, den, 1.0), np.inf)
    return np.where(q == 0, 0.0, v)


def _grad_sq(basin: Basin, step: _Step, lr: float) -> float:
    """Σ λ_i² v_i (+ flat part) at the stationary v of ``step``: the map whose fixed point is m²."""
    lam = basin.curvature_array
    v = _stationary_v(lr, step.drift, step.add_var, step.mult)
    total = float(np.sum(lam**2 * v))
    if basin.flat_curvature > 0 and basin.flat_dim > 0:
        vf = float(_stationary_v(lr, np.array([step.flat_drift]), np.array([step.flat_add_var]), step.mult)[0])
        total += basin.flat_dim * basin.flat_curvature**2 * vf
    return total


def _solve_m2(basin: Basin, opt: Optimizer, poisson: bool, max_iter: int = _MAX_ITER) -> float:
    """Self-consistent stationary m² = Σ λ_i² v_i(m²) by Brent's method in u = log m² (step cap)."""
    lr = opt.lr

    def F(m2: float) -> float:
        return _grad_sq(basin, _step(basin, opt, poisson, m2), lr)

    f0 = F(0.0)
    if f0 == 0.0:
        return 0.0
    if not opt.mode.clipped or math.isinf(opt.effective_clip_norm):
        return f0  # γ = 1 and q do not depend on m: one evaluation is the fixed point (maybe inf)

    def h(u: float) -> float:
        val = F(math.exp(u))
        return 700.0 if not math.isfinite(val) else math.log(val) - u if val > 0 else -700.0

    # Bracket: h → +∞ as u → −∞ (F(0) > 0); h → −∞ as u → ∞ (γ ~ C/m makes F grow like m, not m²).
    u_hi = math.log(f0) + 1.0 if math.isfinite(f0) else 0.0
    for _ in range(max_iter):
        if h(u_hi) < 0:
            break
        u_hi += 2.0
    else:
        warnings.warn("stationary gradient norm: no upper bracket found; returning inf", RuntimeWarning)
        return math.inf
    u_lo = u_hi - 2.0
    for _ in range(max_iter):
        if h(u_lo) > 0:
            break
        u_lo -= 2.0
    else:  # pragma: no cover - h(−∞) = +∞ whenever F(0) > 0
        warnings.warn("stationary gradient norm: no lower bracket found", RuntimeWarning)
        return math.exp(u_lo)
    u, res = optimize.brentq(h, u_lo, u_hi, xtol=1e-13, rtol=1e-13, maxiter=max_iter, full_output=True,
                             disp=False)
    if not res.converged:
        warnings.warn(
            f"stationary gradient norm: self-consistency stopped after {max_iter} iterations "
            f"(flag {res.flag}); result may be inaccurate",
            RuntimeWarning,
        )
    return math.exp(u)


def _stationary(basin: Basin, opt: Optimizer, poisson: bool) -> tuple[float, _Step, np.ndarray, float]:
    """(m², step, v_curved, v_flat per coordinate) at the self-consistent stationary state."""
    m2 = _solve_m2(basin, opt, poisson)
    st = _step(basin, opt, poisson, m2 if math.isfinite(m2) else 1e300)
    v = _stationary_v(opt.lr, st.drift, st.add_var, st.mult)
    vf = float(_stationary_v(opt.lr, np.array([st.flat_drift]), np.array([st.flat_add_var]), st.mult)[0])
    return m2, st, v, vf


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
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    return math.sqrt(_solve_m2(basin, optimizer, poisson))


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
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    lam, lf = basin.curvature_array, basin.flat_curvature
    if gradient_norm is None:
        m2, st, v, vf = _stationary(basin, optimizer, poisson)
        if not math.isfinite(m2):
            raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
        extra = st.mult * st.drift**2 * v
        extra_f = st.mult * st.flat_drift**2 * vf if (lf > 0 and math.isfinite(vf)) else 0.0
    else:
        m = check_nonnegative("gradient_norm", gradient_norm)
        m2 = m * m
        st = _step(basin, optimizer, poisson, m2)
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
    *, basin: Basin, optimizer: Optimizer, approx: bool = False, sampling: str = "fixed"
) -> float:
    """Stationary expected training loss E L(∞) of the clipped step (mean-field model).

        L∞ = Σ_i ½ λ_i v_i = Σ_{i≤r} η q / (2 γ (2 − η γ λ_i (1 + κ)))   [+ flat terms if λ_flat > 0],

    the loss weighs e_i² by λ_i while the dynamics contract with a_i = γλ_i; γ, q are evaluated at the
    self-consistent stationary m (:func:`stationary_gradient_norm`); κ = 1/B for Poisson sampling.

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
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
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
    m2, st, v, vf = _stationary(basin, optimizer, poisson)
    if not math.isfinite(m2):
        return math.inf
    total = 0.5 * float(np.sum(lam * v))
    if lf > 0 and basin.flat_dim > 0:
        total += 0.5 * lf * basin.flat_dim * vf
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
    Irrelevant for unclipped modes (the model is exact there). Returns 0 when m = s = 0.
    Reference: derived here.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=10_000, curvatures=(1.0, 0.5), sample_std=1.0)
        >>> o = Optimizer(lr=1.0, batch_size=256, clip_norm=1.0, noise_multiplier=1.0)
        >>> stationary_saturation(basin=b, optimizer=o) < 1e-3
        True
    """
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    m2 = _solve_m2(basin, optimizer, poisson)
    if not math.isfinite(m2):
        return 1.0
    total = m2 + basin.noise_dim * basin.sample_std**2
    return float(m2 / total) if total > 0 else 0.0


def _mean_clip_factor(n: int, m: float, s: float, clip: float) -> float:
    """E[min(1, C/‖g‖)] for g ~ N(μ, s² I_n), ‖μ‖ = m: ‖g‖²/s² ~ χ'²_n(m²/s²)."""
    if math.isinf(clip):
        return 1.0
    if s == 0.0:
        return 1.0 if m <= clip else clip / m
    if n >= 3:  # clipped_gaussian_mean_factor(dim=k) averages min(1, c/√W) over W ~ χ'²_{k+2}
        return float(_clipping.clipped_gaussian_mean_factor(dim=n - 2, mean_norm=m, std=s, clip_norm=clip))
    lam, c2 = (m / s) ** 2, (clip / s) ** 2
    dist = stats.ncx2(n, lam) if lam > 0 else stats.chi2(n)
    tail, _ = integrate.quad(lambda w: math.sqrt(c2 / w) * dist.pdf(w), c2, np.inf, limit=200)
    return float(min(1.0, dist.cdf(c2) + tail))


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
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    c = optimizer.effective_clip_norm
    if math.isinf(c):
        return 0.0
    m = math.sqrt(_solve_m2(basin, optimizer, poisson))
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
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    m = math.sqrt(_solve_m2(basin, optimizer, poisson))
    return _mean_clip_factor(basin.noise_dim, m, basin.sample_std, optimizer.effective_clip_norm)


# ---------------------------------------------------------------------------------------------
# public: flat directions and held-out loss
# ---------------------------------------------------------------------------------------------


def _steps_array(steps: Any) -> np.ndarray:
    t = np.atleast_1d(np.asarray(steps, dtype=float))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t != np.round(t)):
        raise ValueError(f"steps must be a non-negative integer or a 1-D sequence of them, got {steps!r}")
    return t


def _flat_curve(basin: Basin, opt: Optimizer, st: _Step, init_flat_sq: float, t: np.ndarray) -> np.ndarray:
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
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    t = _steps_array(steps)
    m2, st, _, _ = _stationary(basin, optimizer, poisson)
    if not math.isfinite(m2):
        raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
    return _flat_curve(basin, optimizer, st, f0, t)


def heldout_excess_loss(
    *, basin: Basin, optimizer: Optimizer, steps: Any, init_flat_sq: float = 0.0, sampling: str = "fixed"
) -> np.ndarray:
    """Expected held-out loss E L_test(t) − L_test(e = 0) with the curved directions at stationarity.

        E L_test(t) = ½ Σ_i λ_i v_i∞ + ½ (λ_flat + κ) E‖e_flat(t)‖²,

    v_i∞ the stationary curved second moments (so the first term is :func:`stationary_excess_loss`
    when λ_flat = 0), κ = ``basin.heldout_flat_curvature``, E‖e_flat(t)‖² from :func:`flat_error_sq`
    (same arguments; the flat coordinates start from ``init_flat_sq``, not from stationarity). L_test(0) = 0, so this is E L_test(t) itself. Mean-field
    model (exact for unclipped modes). Reference: derived here (records.py held-out loss).

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=101, curvatures=(1.0,), sample_std=0.0, heldout_flat_curvature=2.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, clip_norm=1.0, noise_multiplier=1.0)
        >>> h = heldout_excess_loss(basin=b, optimizer=o, steps=[0, 100])
        >>> round(float(h[1] - h[0]), 6)              # ½ κ · 1.0
        1.0
    """
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    t = _steps_array(steps)
    m2, st, v, vf = _stationary(basin, optimizer, poisson)
    if not math.isfinite(m2):
        raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
    flat = _flat_curve(basin, optimizer, st, f0, t)
    curved = 0.5 * float(np.sum(basin.curvature_array * v))
    lf = basin.flat_curvature
    return curved + 0.5 * (lf + basin.heldout_flat_curvature) * flat


# ---------------------------------------------------------------------------------------------
# public: mean-field trajectory, loss curve, recovery
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanFieldTrajectory:
    """Mean-field second-moment trajectory, index t = 0 … steps.

    ``loss[t]`` = E L(t), ``heldout_loss[t]`` = E L_test(t), ``gradient_norm_sq[t]`` = m(t)²,
    ``gamma[t]`` = γ(m(t)) used for the step t → t+1 (last entry: γ at the final state),
    ``second[t, i]`` = E e_i(t)², ``flat_sq[t]`` = E‖e_flat(t)‖².
    """

    loss: np.ndarray
    heldout_loss: np.ndarray
    gradient_norm_sq: np.ndarray
    gamma: np.ndarray
    second: np.ndarray
    flat_sq: np.ndarray


def _init_vector(init_error: Any, rank: int) -> np.ndarray:
    e0 = np.asarray(init_error, dtype=float)
    if e0.ndim == 0:
        e0 = np.full(rank, float(e0))
    if e0.shape != (rank,) or not np.all(np.isfinite(e0)):
        raise ValueError(f"init_error must be a finite scalar or a length-{rank} vector (the rank), got {init_error!r}")
    return e0


def _run(basin: Basin, opt: Optimizer, poisson: bool, v0: np.ndarray, f0: float, steps: int,
         stop=None, tabulate: bool = True) -> tuple[MeanFieldTrajectory, int]:
    """Iterate the mean-field recursion; ``stop(t, loss)`` may end it early. Returns (trajectory, last t)."""
    lam, lf, kappa = basin.curvature_array, basin.flat_curvature, basin.heldout_flat_curvature
    nf = basin.flat_dim
    eta = opt.lr
    v = v0.astype(float).copy()
    vf = f0 / nf if nf > 0 else 0.0
    s, c = basin.sample_std, opt.effective_clip_norm
    moments = _MomentTable(basin.noise_dim, s, c) if (tabulate and s > 0 and math.isfinite(c)) else None
    loss, test, grad, gam, sec, flat = [], [], [], [], [], []
    t = 0
    while True:
        m2 = float(np.sum(lam**2 * v)) + (nf * lf * lf * vf if lf > 0 else 0.0)
        st = _step(basin, opt, poisson, m2, moments)
        lt = 0.5 * float(np.sum(lam * v)) + 0.5 * lf * nf * vf
        loss.append(lt)
        test.append(lt + 0.5 * kappa * nf * vf)
        grad.append(m2)
        gam.append(st.gamma)
        sec.append(v.copy())
        flat.append(nf * vf)
        if t >= steps or (stop is not None and stop(t, lt)):
            break
        a = st.drift
        v = ((1.0 - eta * a) ** 2 + eta**2 * st.mult * a * a) * v + eta**2 * st.add_var
        af = st.flat_drift
        vf = ((1.0 - eta * af) ** 2 + eta**2 * st.mult * af * af) * vf + eta**2 * st.flat_add_var
        t += 1
    traj = MeanFieldTrajectory(
        loss=np.array(loss), heldout_loss=np.array(test), gradient_norm_sq=np.array(grad),
        gamma=np.array(gam), second=np.array(sec), flat_sq=np.array(flat),
    )
    return traj, t


def mean_field_trajectory(
    *, basin: Basin, optimizer: Optimizer, steps: int, init_error: Any, init_flat_sq: float = 0.0,
    sampling: str = "fixed", tabulate: bool = True,
) -> MeanFieldTrajectory:
    """Mean-field recursion of the per-direction second moments from a deterministic start.

        v_i(t+1) = [(1 − η γ_t λ_i)² + η² κ γ_t² λ_i²] v_i(t) + η² q(t),   v_i(0) = e_i(0)²,
        γ_t, q(t) evaluated at m(t)² = Σ_i λ_i² v_i(t) (+ (d−r) λ_flat² v_flat(t)),

    (module docstring for q, κ; the flat coordinates follow the same recursion with λ_flat and
    τ_flat²). Far from the optimum (m ≫ max(C, s√n)) γ ≈ C/m and the error shrinks by ≈ ηC per
    step (saturated phase); near it γ → α₀ and the decay is exponential at rate ηα₀λ_i.
    Arguments: ``steps`` = T (t = 0 … T), ``init_error`` = e(0) on the r curved axes (scalar: same on
    each), ``init_flat_sq`` = ‖e_flat(0)‖². The clip moments γ(m²), E‖clip g‖² − γ²m² are tabulated
    lazily on a grid of log m² (spacing 0.05, cubic interpolation: relative error ~3e-7, up to ~1 %
    at a clipping kink sharper than the grid; ``tabulate=False`` evaluates them exactly every step).
    Approximation: mean-field (module docstring); exact for unclipped modes and for s = 0
    (deterministic per-sample gradients, never tabulated) with ν = 0 (deterministic clipped GD).
    Reference: derived here, proved in proofs/clipped_stationary.py and proofs/saturated_recovery.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=1, curvatures=(1.0,), sample_std=0.0)
        >>> o = Optimizer(lr=0.5, batch_size=1, clip_norm=1.0, mode="clip")
        >>> mean_field_trajectory(basin=b, optimizer=o, steps=3, init_error=2.0).second[:, 0].tolist()
        [4.0, 2.25, 1.0000000000000002, 0.25000000000000006]
    """
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    t_max = check_int("steps", steps, minimum=0)
    e0 = _init_vector(init_error, basin.rank)
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    return _run(basin, optimizer, poisson, e0**2, f0, t_max, tabulate=bool(tabulate))[0]


def expected_loss_curve(
    *, basin: Basin, optimizer: Optimizer, steps: int, init_error: Any, init_flat_sq: float = 0.0,
    sampling: str = "fixed",
) -> np.ndarray:
    """E[L(t)] for t = 0 … ``steps`` by the mean-field recursion (:func:`mean_field_trajectory`).

        E L(t) = ½ Σ_i λ_i v_i(t) + ½ λ_flat E‖e_flat(t)‖²,

    v_i(t) from the recursion with γ(t), q(t) re-evaluated at m(t) each step. Same arguments and
    approximation as :func:`mean_field_trajectory`. Reference: derived here.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=1, curvatures=(1.0,), sample_std=0.0)
        >>> o = Optimizer(lr=0.5, batch_size=1, clip_norm=1.0, mode="clip")
        >>> expected_loss_curve(basin=b, optimizer=o, steps=2, init_error=2.0).round(12).tolist()  # e: 2, 1.5, 1
        [2.0, 1.125, 0.5]
    """
    return mean_field_trajectory(
        basin=basin, optimizer=optimizer, steps=steps, init_error=init_error, init_flat_sq=init_flat_sq,
        sampling=sampling,
    ).loss


@dataclass(frozen=True)
class RecoveryPrediction:
    """Recovery from a displacement δ of the curved error, added at stationarity.

    ``steps``: first t at which the mean-field excess loss E L(t) − L∞ falls to ``threshold`` times
    its initial value (the model's exact answer). ``ode_steps``: closed form of the noise-free
    mean-field ODE (:func:`saturated_recovery_steps`; continuous time, errs by O(ηγλ) per step).
    ``saturated_steps``: the linear phase alone, (‖Hδ‖ − max(C, s√n))₊ / (η C λ_eff).
    ``linear_rate``: per-step decay rate η γ∞ λ_min of the displacement near the optimum
    (γ∞ = stationary γ ≈ α₀ ≈ C/(s√n) when clipped, 1 unclipped). ``saturated``: ‖Hδ‖ > max(C, s√n).
    """

    steps: float
    ode_steps: float
    saturated_steps: float
    linear_rate: float
    saturated: bool
    gamma_stationary: float


def _direction(direction: Any, lam: np.ndarray) -> np.ndarray:
    r = lam.size
    if isinstance(direction, str):
        if direction == "uniform":
            return np.full(r, 1.0 / math.sqrt(r))
        if direction in ("top", "bottom"):
            u = np.zeros(r)
            u[int(np.argmax(lam) if direction == "top" else np.argmin(lam))] = 1.0
            return u
        raise ValueError(
            f"direction must be 'uniform', 'top', 'bottom', an index or a length-{r} vector, got {direction!r}"
        )
    arr = np.asarray(direction, dtype=float)
    if arr.ndim == 0:
        i = check_int("direction", direction, minimum=0)
        if i >= r:
            raise ValueError(f"direction index must be < rank={r}, got {direction!r}")
        u = np.zeros(r)
        u[i] = 1.0
        return u
    if arr.shape != (r,) or not np.all(np.isfinite(arr)) or not np.any(arr != 0):
        raise ValueError(f"direction vector must be finite, nonzero and of length {r}, got {direction!r}")
    return arr / np.linalg.norm(arr)


def saturated_recovery_steps(
    *, curvatures: Any, displacement: Any, lr: float, clip_norm: float, noise_scale: float, threshold: float
) -> float:
    """Closed-form recovery time of the noise-free mean-field ODE with large-n shrinkage.

        de_i/dt = −η γ(m) λ_i e_i,   γ(m) = min(1, C/√(m² + a²)),   m² = Σ λ_i² e_i²,   a = s√n.

    Substituting dτ = ηγ dt gives e_i = δ_i e^{−λ_i τ}; recovery ends at τ* where the excess loss
    ½ Σ λ_i δ_i² e^{−2λ_i τ} = threshold × its start, and t* = ∫₀^{τ*} dτ / (η γ(m(τ))).
    For a single direction (x = λ|e| = gradient norm), in the fully clipped phase

        t = [F(x₀) − F(x₁)] / (η C λ),   F(x) = √(x² + a²) − a·asinh(a/x),

    which is linear, (x₀ − x₁)/(ηCλ), while x ≫ a (saturated: the error falls by ηC per step,
    REFERENCE.md §6) and logarithmic, ln(x₀/x₁)·a/(ηCλ), once x ≪ a: exponential decay at rate
    ηλ·C/(s√n) (≈ ηα₀λ, recovery slower by ~√n than unclipped GD's ηλ). If C > a the phase with
    √(x² + a²) ≤ C is unclipped (γ = 1). ``curvatures`` = λ_i, ``displacement`` = δ (vector on the
    curved axes), η = ``lr``, C = ``clip_norm`` (inf: unclipped, t* = τ*/η), a = ``noise_scale`` = s√n.
    Errs: continuous time (relative O(ηγλ) per step; unclipped exact answer uses log(1−ηλ));
    large-n γ (see ``clipping.large_dim_shrinkage``); ignores the stationary noise.
    Reference: derived here, proved in proofs/saturated_recovery.py.

    Example:
        >>> t = saturated_recovery_steps(curvatures=[1.0], displacement=[100.0], lr=0.1, clip_norm=1.0,
        ...                              noise_scale=0.0, threshold=1e-4)   # x: 100 → 1, linear
        >>> round(t, 6)                                                     # (100 − 1)/(ηCλ)
        990.0
    """
    lam = np.atleast_1d(np.asarray(curvatures, dtype=float))
    delta = np.atleast_1d(np.asarray(displacement, dtype=float))
    if lam.ndim != 1 or lam.shape != delta.shape or np.any(lam <= 0) or not np.all(np.isfinite(lam)):
        raise ValueError(f"curvatures must be positive and match displacement's shape, got {curvatures!r}")
    if not np.all(np.isfinite(delta)):
        raise ValueError(f"displacement must be finite, got {displacement!r}")
    eta = check_positive("lr", lr)
    c = float(clip_norm)
    if math.isnan(c) or not c > 0:
        raise ValueError(f"clip_norm must be > 0 (inf allowed), got {clip_norm!r}")
    a = check_nonnegative("noise_scale", noise_scale)
    thr = check_positive("threshold", threshold)
    if thr >= 1.0 or not np.any(delta != 0):
        return 0.0
    w = lam * delta**2

    def excess(tau: float) -> float:
        return float(np.sum(w * np.exp(-2.0 * lam * tau)))

    target = thr * excess(0.0)
    hi = 1.0 / lam.max()
    while excess(hi) > target:
        hi *= 2.0
    tau_star = optimize.brentq(lambda x: excess(x) - target, 0.0, hi, xtol=1e-14, rtol=1e-14)
    if math.isinf(c):
        return tau_star / eta

    def inv_rate(tau: float) -> float:  # 1/(ηγ) = max(1, √(m² + a²)/C)/η
        m2 = float(np.sum((lam * delta) ** 2 * np.exp(-2.0 * lam * tau)))
        return max(1.0, math.sqrt(m2 + a * a) / c) / eta

    if lam.size == 1 or np.all(lam == lam[0]):
        lam0 = float(lam[0])
        x0 = lam0 * float(np.linalg.norm(delta))
        x1 = x0 * math.exp(-lam0 * tau_star)
        return _single_direction_steps(x0, x1, lam0, eta, c, a)
    val, _ = integrate.quad(inv_rate, 0.0, tau_star, limit=200)
    return float(val)


def _saturated_primitive(x: float, a: float) -> float:
    """F(x) = √(x² + a²) − a·asinh(a/x), with dF/dx = √(x² + a²)/x (proofs/saturated_recovery.py)."""
    return math.hypot(x, a) - (a * math.asinh(a / x) if a > 0 else 0.0)


def _single_direction_steps(x0: float, x1: float, lam: float, eta: float, c: float, a: float) -> float:
    """Time for the gradient norm of one eigen-direction to fall from x0 to x1 under the ODE."""
    xc = math.sqrt(c * c - a * a) if c > a else 0.0  # below xc: unclipped (γ = 1)
    t = 0.0
    if x0 > xc:
        lo = max(x1, xc)
        t += (_saturated_primitive(x0, a) - _saturated_primitive(lo, a)) / (eta * c * lam)
    hi = min(x0, xc)
    if hi > x1:
        t += math.log(hi / x1) / (eta * lam)
    return t


def recovery_time(
    *, basin: Basin, optimizer: Optimizer, displacement: float, direction: Any = "uniform",
    threshold: float = 0.01, max_steps: int = 1_000_000, sampling: str = "fixed",
) -> RecoveryPrediction:
    """Steps to recover from a displacement δ of the curved error added at stationarity (claims 2–3).

    Start: E e_i² = v_i∞ + δ_i² (stationary second moments plus the displacement), δ = ``displacement``
    × unit ``direction`` ("uniform": equal on the r curved axes; "top"/"bottom": the largest/smallest
    λ; an index; or a length-r vector). Recovered: first t with E L(t) − L∞ ≤ ``threshold`` ×
    (E L(0) − L∞), by the mean-field recursion (:func:`mean_field_trajectory`, capped at
    ``max_steps`` with a warning). Closed forms alongside (:class:`RecoveryPrediction`):

    * unclipped: exponential, rate ηλ_i (t = ln(1/threshold)/(−2 ln(1 − ηλ)) for one direction);
    * clipped near the optimum: exponential at rate ηγ∞λ_i, γ∞ ≈ α₀ ≈ C/(s√n): slower by ~√n;
    * saturated (‖Hδ‖ ≫ max(C, s√n)): linear, the gradient norm falls by ηCλ per step,
      t ≈ ‖Hδ‖/(ηCλ),
      then the exponential tail — :func:`saturated_recovery_steps` joins the phases exactly for the ODE.

    λ_eff = Σλ_i³δ_i²/Σλ_i²δ_i² (exact initial rate of ‖He‖ in the saturated phase). Mean-field
    approximation (module docstring). Reference: derived here, proved in proofs/saturated_recovery.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=1, curvatures=(1.0,), sample_std=0.0)
        >>> o = Optimizer(lr=0.1, batch_size=1, mode="sgd")
        >>> recovery_time(basin=b, optimizer=o, displacement=1.0, threshold=0.01).steps  # 0.81^t ≤ 0.01
        22.0
    """
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    delta_norm = check_finite("displacement", displacement)
    thr = check_positive("threshold", threshold)
    cap = check_int("max_steps", max_steps, minimum=1)
    lam = basin.curvature_array
    delta = abs(delta_norm) * _direction(direction, lam)
    m2, st, v, _ = _stationary(basin, optimizer, poisson)
    if not math.isfinite(m2):
        raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
    loss_inf = 0.5 * float(np.sum(lam * v))
    v0 = v + delta**2
    excess0 = 0.5 * float(np.sum(lam * delta**2))
    if excess0 == 0.0 or thr >= 1.0:
        steps = 0.0
    else:
        vf_tot = 0.0
        if basin.flat_curvature > 0 and basin.flat_dim > 0:
            vf_tot = basin.flat_dim * float(
                _stationary_v(optimizer.lr, np.array([st.flat_drift]), np.array([st.flat_add_var]), st.mult)[0]
            )
        base = loss_inf + 0.5 * basin.flat_curvature * vf_tot

        def stop(t: int, loss_t: float) -> bool:
            return loss_t - base <= thr * excess0

        _, t_end = _run(basin, optimizer, poisson, v0, vf_tot, cap, stop)
        traj_done = t_end < cap
        if not traj_done:
            warnings.warn(f"recovery_time: not recovered within max_steps={cap}; returning inf", RuntimeWarning)
            steps = math.inf
        else:
            steps = float(t_end)
    c = optimizer.effective_clip_norm
    a_scale = basin.sample_std * math.sqrt(basin.noise_dim)
    x0 = float(np.linalg.norm(lam * delta))
    ode = saturated_recovery_steps(curvatures=lam, displacement=delta, lr=optimizer.lr, clip_norm=c,
                                   noise_scale=a_scale, threshold=thr)
    lam_eff = float(np.sum(lam**3 * delta**2) / np.sum(lam**2 * delta**2)) if x0 > 0 else float(lam.max())
    knee = max(c, a_scale)
    sat = bool(x0 > knee)
    sat_steps = (x0 - knee) / (optimizer.lr * c * lam_eff) if (sat and math.isfinite(c)) else 0.0
    displaced = lam[delta != 0] if np.any(delta != 0) else lam
    return RecoveryPrediction(
        steps=steps,
        ode_steps=float(ode),
        saturated_steps=float(sat_steps),
        linear_rate=float(optimizer.lr * st.gamma * displaced.min()),
        saturated=sat,
        gamma_stationary=float(st.gamma),
    )


def dimension_scaling(
    *, basin: Basin, optimizer: Optimizer, dims: Any, displacement: float | None = None,
    direction: Any = "uniform", threshold: float = 0.01, sampling: str = "fixed",
) -> dict[str, np.ndarray]:
    """Mean-field predictions over a grid of ambient dimensions d at fixed everything else (claim 3).

    For each d in ``dims`` (replacing ``basin.dim``; each must be ≥ rank) returns arrays:
    ``stationary_loss`` (:func:`stationary_excess_loss`), ``stationary_loss_approx`` (its closed form),
    ``clip_fraction``, ``mean_clip_factor``, ``gamma`` (stationary γ), ``gradient_norm`` (stationary
    m), ``relaxation_steps`` = 1/(ηγλ_min) (e-folding time of a small displacement of the flattest
    curved direction), ``flat_noise_var`` (τ_flat², the per-step flat random-walk variance / η²),
    ``saturation`` (:func:`stationary_saturation`, the closure's validity indicator), and,
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
    basin, optimizer, poisson = _check(basin, optimizer, sampling)
    grid = np.atleast_1d(np.asarray(dims))
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"dims must be a non-empty 1-D sequence of integers, got {dims!r}")
    keys = ["dim", "stationary_loss", "stationary_loss_approx", "clip_fraction", "mean_clip_factor", "gamma",
            "gradient_norm", "relaxation_steps", "flat_noise_var", "saturation"]
    if displacement is not None:
        keys += ["recovery_steps", "recovery_ode_steps"]
    out: dict[str, list] = {k: [] for k in keys}
    for d_raw in grid.tolist():
        d = check_int("dims", d_raw, minimum=basin.rank)
        b = replace(basin, dim=d)
        m2, st, v, _ = _stationary(b, optimizer, poisson)
        out["dim"].append(d)
        out["stationary_loss"].append(stationary_excess_loss(basin=b, optimizer=optimizer, sampling=sampling))
        out["stationary_loss_approx"].append(
            stationary_excess_loss(basin=b, optimizer=optimizer, approx=True, sampling=sampling))
        out["clip_fraction"].append(stationary_clip_fraction(basin=b, optimizer=optimizer, sampling=sampling))
        out["mean_clip_factor"].append(stationary_mean_clip_factor(basin=b, optimizer=optimizer, sampling=sampling))
        out["gamma"].append(st.gamma)
        out["gradient_norm"].append(math.sqrt(m2))
        out["relaxation_steps"].append(1.0 / (optimizer.lr * st.gamma * float(b.curvature_array.min())))
        out["flat_noise_var"].append(st.flat_add_var)
        out["saturation"].append(m2 / (m2 + d_noise) if (d_noise := b.noise_dim * b.sample_std**2) + m2 > 0 else 0.0)
        if displacement is not None:
            rec = recovery_time(basin=b, optimizer=optimizer, displacement=displacement, direction=direction,
                                threshold=threshold, sampling=sampling)
            out["recovery_steps"].append(rec.steps)
            out["recovery_ode_steps"].append(rec.ode_steps)
    return {k: np.asarray(v) for k, v in out.items()}
