"""The per-step mean-field model of the per-sample-clipped step, and its self-consistent stationary state.

Shared by dptheory.clipped_closure (closures of the stationary law), dptheory.clipped_dynamics
(stationary outputs) and dptheory.clipped_recovery (transients). The step of records.py with
per-sample gradients g_j = H e + s ζ_j (ζ_j spanning n = ``basin.noise_dim`` coordinates) has,
conditional on the error e and with m = ‖He‖,

    E[update] = γ(m) H e,   γ(m) = E[min(1, C/√W)],  W ~ χ'²_{n+2}(m²/s²) · s²  (exact),
    Cov[update] = Cov[clip_C(g)]/B + ν²/B² I  (+ γ² (He)(He)ᵀ/B under Poisson sampling).

The *mean-field* step model spreads the clip variance E‖clip g‖² − γ²m² evenly over the n noise
coordinates and evaluates everything at one value of m², which makes every direction linear:

    v_i' = [(1 − η a_i)² + η² κ a_i²] v_i + η² q_i,
    a_i = γ λ_i,   q_i = (E‖clip g‖² − γ² m²)/(n B) + ν²/B²,   κ = 1/B (Poisson) or 0 (fixed).

Under ``spread="basin"`` with λ_flat > 0 the flat gradient λ_flat e_flat lies outside the support of
ζ, so its shrinkage is the plain mean clip factor E[min(1, C/‖g‖)] (``clipping.gaussian_mean_clip_factor``)
and its only noise is ν²/B². The stationary state solves m² = Σ_i λ_i² v_i(m²) (+ the flat part) by
Brent's method in log m² (:func:`stationary_gradient_norm_sq`).

Symbols → arguments: records.Basin (λ_i = ``curvatures``, s = ``sample_std``, λ_flat =
``flat_curvature``, ``spread``) and records.Optimizer (η = ``lr``, B = ``batch_size``,
C = ``effective_clip_norm``, ν = ``noise_std``). Derivations: proofs/clipped_stationary.py.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from dptheory import clipping as _clipping
from dptheory.quadratic import stationary_variance
from dptheory.records import Basin, Optimizer

__all__ = [
    "SAMPLINGS",
    "MomentTable",
    "StationaryState",
    "StepModel",
    "check_inputs",
    "clip_moments",
    "stationary_gradient_norm_sq",
    "stationary_state",
    "step_model",
]

SAMPLINGS = ("fixed", "poisson")
_MAX_ITER = 200  # step cap of the self-consistency solve


def check_inputs(basin: Any, optimizer: Any, sampling: Any) -> tuple[Basin, Optimizer, bool]:
    """Validate the common arguments of the clipped models; returns (basin, optimizer, poisson).

    Raises:
        ValueError: ``basin`` is not a records.Basin, ``optimizer`` not a records.Optimizer, or
            ``sampling`` not one of :data:`SAMPLINGS`.
    """
    if not isinstance(basin, Basin):
        raise ValueError(f"basin must be a dptheory.records.Basin, got {type(basin).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be a dptheory.records.Optimizer, got {type(optimizer).__name__}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    return basin, optimizer, sampling == "poisson"


@dataclass(frozen=True)
class StepModel:
    """Coefficients of the mean-field recursion at one value of m² (module docstring).

    ``gamma`` = γ(m); ``drift`` = a_i = γλ_i and ``add_var`` = q_i on the curved axes; ``flat_drift``
    = a_flat (γλ_flat, or E[min(1, C/‖g‖)] λ_flat under basin spread) and ``flat_add_var`` = q_flat
    (q under ambient spread, ν²/B² under basin spread); ``mult`` = κ = 1/B (Poisson) or 0 (fixed).
    """

    gamma: float
    drift: np.ndarray
    add_var: np.ndarray
    flat_drift: float
    flat_add_var: float
    mult: float


def clip_moments(
    *, noise_dim: int, gradient_norm_sq: float, sample_std: float, clip_norm: float
) -> tuple[float, float]:
    """(γ, E‖clip_C g‖² − γ² m²) for one per-sample gradient g ~ N(μ, s² I_n), ‖μ‖² = m².

    n = ``noise_dim``, m² = ``gradient_norm_sq`` (negative values are read as 0), s = ``sample_std``,
    C = ``clip_norm`` (inf: (1, n s²)). Exact (``clipping.clipped_gaussian_mean_factor`` and
    ``clipping.clipped_gaussian_second_moment``); the variance is floored at 0 against rounding.

    Example:
        >>> clip_moments(noise_dim=3, gradient_norm_sq=1.0, sample_std=2.0, clip_norm=float("inf"))
        (1.0, 12.0)
    """
    n, s, clip = noise_dim, sample_std, clip_norm
    if math.isinf(clip):
        return 1.0, n * s * s
    m2 = gradient_norm_sq
    m = math.sqrt(max(m2, 0.0))
    g = float(_clipping.clipped_gaussian_mean_factor(dim=n, mean_norm=m, std=s, clip_norm=clip))
    second = float(_clipping.clipped_gaussian_second_moment(dim=n, mean_norm=m, std=s, clip_norm=clip))
    return g, max(second - g * g * m2, 0.0)


class MomentTable:
    """(γ, clip variance) of :func:`clip_moments` as functions of m², tabulated lazily in u = log m².

    Grid spacing h = 0.05 in u, cubic (4-node Lagrange) interpolation. Error ≤ h⁴/24 · max|∂⁴_u f|
    ≈ 3e-7 relative where the clip moments vary on the scale of m itself (they are smooth in u,
    e.g. γ ≈ C/√(e^u + ns²)); at a clipping kink sharper than the grid (s ≲ h·C, nearly
    deterministic gradients) up to ~1 %. Calling it with m² ≤ 0 evaluates the exact moments at 0.
    n = ``noise_dim``, s = ``sample_std``, C = ``clip_norm``.

    Example:
        >>> t = MomentTable(noise_dim=10, sample_std=1.0, clip_norm=1.0)
        >>> g, v = t(2.0)
        >>> abs(g / clip_moments(noise_dim=10, gradient_norm_sq=2.0, sample_std=1.0, clip_norm=1.0)[0] - 1) < 1e-6
        True
    """

    h = 0.05

    def __init__(self, *, noise_dim: int, sample_std: float, clip_norm: float) -> None:
        self.n, self.s, self.clip = noise_dim, sample_std, clip_norm
        self.nodes: dict[int, tuple[float, float]] = {}

    def _exact(self, m2: float) -> tuple[float, float]:
        return clip_moments(noise_dim=self.n, gradient_norm_sq=m2, sample_std=self.s, clip_norm=self.clip)

    def _node(self, i: int) -> tuple[float, float]:
        if i not in self.nodes:
            self.nodes[i] = self._exact(math.exp(i * self.h))
        return self.nodes[i]

    def __call__(self, m2: float) -> tuple[float, float]:
        if not m2 > 0:
            return self._exact(0.0)
        x = math.log(m2) / self.h
        i = math.floor(x)
        w = x - i
        weights = (
            -w * (w - 1) * (w - 2) / 6,
            (w + 1) * (w - 1) * (w - 2) / 2,
            -(w + 1) * w * (w - 2) / 2,
            (w + 1) * w * (w - 1) / 6,
        )
        g = cv = 0.0
        for j, lw in zip(range(i - 1, i + 3), weights):
            gj, cj = self._node(j)
            g += lw * gj
            cv += lw * cj
        return min(1.0, max(g, 0.0)), max(cv, 0.0)


def step_model(
    *, basin: Basin, optimizer: Optimizer, poisson: bool, gradient_norm_sq: float, moments: Any = None
) -> StepModel:
    """Mean-field recursion coefficients (:class:`StepModel`) at m² = ``gradient_norm_sq``.

    ``poisson``: Poisson batches (κ = 1/B). ``moments``: optional callable m² → (γ, clip variance)
    (e.g. a :class:`MomentTable`) replacing the exact :func:`clip_moments`. Formulas: module docstring.
    """
    n, b = basin.noise_dim, optimizer.batch_size
    m2 = gradient_norm_sq
    if moments is not None:
        gamma, clip_var = moments(m2)
    else:
        gamma, clip_var = clip_moments(
            noise_dim=n, gradient_norm_sq=m2, sample_std=basin.sample_std, clip_norm=optimizer.effective_clip_norm
        )
    dp_var = optimizer.noise_std**2 / b**2
    q_spread = clip_var / (n * b) + dp_var
    flat_gamma = gamma
    if basin.spread == "basin" and basin.flat_curvature > 0 and basin.flat_dim > 0:
        # the flat gradient λ_flat e_flat is deterministic (outside the support of ζ): its shrinkage is
        # the plain mean clip factor E[min(1, C/‖g‖)], not the Stein-weighted γ of the Gaussian part
        flat_gamma = float(
            _clipping.gaussian_mean_clip_factor(
                dim=n, mean_norm=math.sqrt(max(m2, 0.0)), std=basin.sample_std, clip_norm=optimizer.effective_clip_norm
            )
        )
    return StepModel(
        gamma=gamma,
        drift=gamma * basin.curvature_array,
        add_var=np.full(basin.rank, q_spread),
        flat_drift=flat_gamma * basin.flat_curvature,
        flat_add_var=q_spread if basin.spread == "ambient" else dp_var,
        mult=1.0 / b if poisson else 0.0,
    )


def _grad_sq(basin: Basin, step: StepModel, lr: float) -> float:
    """Σ λ_i² v_i (+ flat part) at the stationary v of ``step``: the map whose fixed point is m²."""
    lam = basin.curvature_array
    v = stationary_variance(lr=lr, drift=step.drift, noise_var=step.add_var, multiplicative=step.mult)
    total = float(np.sum(lam**2 * v))
    if basin.flat_curvature > 0 and basin.flat_dim > 0:
        vf = float(
            stationary_variance(lr=lr, drift=step.flat_drift, noise_var=step.flat_add_var, multiplicative=step.mult)
        )
        total += basin.flat_dim * basin.flat_curvature**2 * vf
    return total


@functools.lru_cache(maxsize=4096)
def _solve_m2(basin: Basin, opt: Optimizer, poisson: bool, max_iter: int = _MAX_ITER) -> float:
    lr = opt.lr

    def F(m2: float) -> float:
        return _grad_sq(basin, step_model(basin=basin, optimizer=opt, poisson=poisson, gradient_norm_sq=m2), lr)

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
        warnings.warn("stationary gradient norm: no upper bracket found; returning inf", RuntimeWarning, stacklevel=2)
        return math.inf
    u_lo = u_hi - 2.0
    for _ in range(max_iter):
        if h(u_lo) > 0:
            break
        u_lo -= 2.0
    else:  # pragma: no cover - h(−∞) = +∞ whenever F(0) > 0
        warnings.warn("stationary gradient norm: no lower bracket found", RuntimeWarning, stacklevel=2)
        return math.exp(u_lo)
    u, res = optimize.brentq(h, u_lo, u_hi, xtol=1e-13, rtol=1e-13, maxiter=max_iter, full_output=True, disp=False)
    if not res.converged:
        warnings.warn(
            f"stationary gradient norm: self-consistency stopped after {max_iter} iterations "
            f"(flag {res.flag}); result may be inaccurate",
            RuntimeWarning,
            stacklevel=2,
        )
    return math.exp(u)


def stationary_gradient_norm_sq(*, basin: Basin, optimizer: Optimizer, poisson: bool) -> float:
    """Self-consistent stationary m² = Σ_i λ_i² v_i(m²) (+ (d−r) λ_flat² v_flat) of the mean-field model.

    v_i(m²) = η q_i / (a_i (2 − η a_i (1 + κ))) (``quadratic.stationary_variance``) with the
    coefficients of :func:`step_model` at m². Brent's method in u = log m² (≤ 200 iterations; a
    ``RuntimeWarning`` if it stops early); unclipped modes need one evaluation. Returns ``inf`` when
    the step has no stationary state. Memoised on its (frozen, hashable) arguments, so equal inputs
    give the identical float and a warning is emitted once per distinct input.
    Reference: derived here, proved in proofs/clipped_stationary.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=100, curvatures=(1.0,), sample_std=1.0)
        >>> o = Optimizer(lr=0.1, batch_size=10, mode="sgd")
        >>> round(stationary_gradient_norm_sq(basin=b, optimizer=o, poisson=False), 6)  # λ²η(s²/B)/(λ(2−ηλ))
        0.005263
    """
    return _solve_m2(basin, optimizer, bool(poisson))


@dataclass(frozen=True)
class StationaryState:
    """Mean-field stationary state: ``gradient_norm_sq`` = m², the :class:`StepModel` ``step`` at m²,
    ``second`` = v_i on the curved axes, ``flat_second`` = v_flat per flat coordinate (both from
    ``quadratic.stationary_variance``; inf where there is no stationary state)."""

    gradient_norm_sq: float
    step: StepModel
    second: np.ndarray
    flat_second: float


def stationary_state(*, basin: Basin, optimizer: Optimizer, poisson: bool) -> StationaryState:
    """The mean-field stationary state (:class:`StationaryState`) at :func:`stationary_gradient_norm_sq`.

    When m² = inf the step model is evaluated at m² = 1e300 (γ → 0); callers check
    ``gradient_norm_sq`` first. Reference: derived here, proved in proofs/clipped_stationary.py.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> st = stationary_state(basin=Basin(dim=5, curvatures=(1.0,), sample_std=1.0),
        ...                       optimizer=Optimizer(lr=0.5, batch_size=4, mode="sgd"), poisson=False)
        >>> round(float(st.second[0]), 6)                 # η s²/B / (λ(2 − ηλ)) = 0.125/1.5
        0.083333
    """
    m2 = _solve_m2(basin, optimizer, bool(poisson))
    st = step_model(
        basin=basin, optimizer=optimizer, poisson=poisson, gradient_norm_sq=m2 if math.isfinite(m2) else 1e300
    )
    lr = optimizer.lr
    v = stationary_variance(lr=lr, drift=st.drift, noise_var=st.add_var, multiplicative=st.mult)
    vf = float(stationary_variance(lr=lr, drift=st.flat_drift, noise_var=st.flat_add_var, multiplicative=st.mult))
    return StationaryState(gradient_norm_sq=m2, step=st, second=v, flat_second=vf)
