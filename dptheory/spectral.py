"""A measured-spectrum model of DP-SGD warm-started at a minimum w*: inputs measured, outputs predicted.

Inputs (dptheory.spectral_basin.SpectralBasin) are what one measures on a trained network at w*:
the top-k Hessian eigenpairs (λ_j, u_j), an SLQ density of the other d − k eigenvalues (nodes λ_l,
weights w_l), and the per-example gradients' norms R_i = ‖g_i‖ and top projections p_ij = u_jᵀ g_i.
Outputs are what the step of dptheory/records.py (η = ``lr``, B = ``batch_size``, C = clip norm,
ν = ``noise_std`` on the sum, sum divided by B) started at e(0) = 0 shows: E L(t) − L(w*) over time
(:func:`spectral_excess_loss`), its time average over a window (:func:`spectral_window_excess`),
the recovery time of a displacement (:func:`spectral_recovery_time`) and the clip fraction
(:func:`spectral_clip_fraction`). The model, per direction j (proofs/spectral_linear_response.py,
proofs/spectral_sampling_variance.py, proofs/spectral_transient.py):

1. L(w* + e) − L(w*) = ½ eᵀ H e and g_i(w* + e) = g_i + H e (mean Hessian; see
   dptheory.spectral_response for the neglected per-example spread).
2. Clip linear response: mean_i clip_C(g_i + He) ≈ m_c + diag(γ) H e in the eigenbasis,
   γ_j = mean_i[φ_i − 1{R_i>C}(C/R_i) p_ij²/R_i²], φ_i = min(1, C/R_i), m_c = mean_i φ_i g_i
   (≠ 0 in general although mean_i g_i = 0 at a minimum: the clipping bias); drift a_j = γ_j λ_j.
3. Sampling noise of (1/B) Σ_{i∈S} c_i, c_i = φ_i g_i: Poisson sampling (rate q = B/n) gives the
   covariance ((1 − q)/B) mean_i c_i c_iᵀ — the second moment, mean term included, because the batch
   size fluctuates; its mean part ((1 − q)/B)(m_c + a e)_j² is multiplicative in e and kept exactly.
   Fixed batches of B distinct examples give ((n − B)/((n − 1) B)) Cov_i(c_i). DP noise adds ν²/B²
   to every direction.
4. Relaxation at rate ρ_j = 1 − η γ_j λ_j from e(0) = 0 (dptheory.spectral_moments):
   E e_j(t) = −(1 − ρ_j^t) b_j with the fixed-point shift b_j = (m_c)_j/(γ_j λ_j), Var e_j(t) =
   v_j(1 − ρ_j^{2t}) for fixed batches (v_j = ητ_j²/(a_j(2 − ηa_j))), so slow directions
   (η γ λ T ≲ 1) have not equipartitioned; E L(t) − L(w*) = ½ Σ_j w_j λ_j E e_j(t)² (w_j = 1 on the
   top-k, the SLQ weights on the bulk nodes) = bias ½ Σ w λ (E e)² + noise ½ Σ w λ Var e.
5. λ = 0: a random walk that adds nothing to a quadratic loss. λ < 0: outside the model (w* is
   not a minimum there); excluded from dynamics and loss, their weight recorded as
   ``negative_weight`` (and warned about once when the SpectralBasin is built).

``closure="linear"`` (default) evaluates the clip law at w*: first order in ‖He‖ against the
per-example norms. ``closure="mean-field"`` evaluates it at the self-consistent stationary shift
m² = E‖He‖² = Σ w λ² E e²(∞) (the norm-inflation approximation of dptheory.spectral_response for
measured gradients; the exact Gaussian moments for GaussianGradients, where the model is that of
dptheory.clipped_dynamics with ``closure="mean-field"``) — for all t, so the transient from
e(0) = 0, which passes through smaller shifts, is evaluated at the stationary one.
The bulk carries no clipping bias unless GradientStatistics.bulk_sketch is measured (the bias is not
determined by norms and top projections; without the sketch the bias loss errs low).
Symbols ↔ arguments: NOTATION.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from dptheory.records import Optimizer
from dptheory.spectral_basin import (
    BULK_NOISES,
    GaussianGradients,
    GradientStatistics,
    SpectralBasin,
    spectral_basin_from_basin,
)
from dptheory.spectral_moments import moment_curves, recovery_excess, stationary_moments, window_moments
from dptheory.spectral_response import ClipResponse, empirical_clip_response, gaussian_clip_response
from dptheory.validate import check_int, check_positive

__all__ = [
    "BULK_NOISES",
    "CLOSURES",
    "SAMPLINGS",
    "GaussianGradients",
    "GradientStatistics",
    "SpectralBasin",
    "SpectralCurve",
    "SpectralDirections",
    "SpectralWindow",
    "spectral_basin_from_basin",
    "spectral_clip_fraction",
    "spectral_directions",
    "spectral_excess_loss",
    "spectral_recovery_time",
    "spectral_window_excess",
]

CLOSURES = ("linear", "mean-field")
SAMPLINGS = ("poisson", "fixed")
_MAX_ITER = 200  # step cap of the mean-field self-consistency solve and of the recovery search


@dataclass(frozen=True, eq=False)
class SpectralDirections:
    """The per-direction linear model: top-k directions first, then one entry per bulk node (D = k + m).

    ``curvatures`` λ, ``weights`` w (directions per entry), ``shrinkage`` γ, ``drift`` a = γλ (0 where
    excluded), ``clipped_mean`` m_c (the constant force), ``shift`` b = m_c/a (the fixed point is −b;
    ±inf where a = 0 and m_c ≠ 0), ``sample_var`` V (per-example variance of the clipped gradient),
    ``noise_var`` τ² = (sampling factor) V + ν²/B², ``poisson_mult`` κ = (1 − q)/B (Poisson) or 0,
    ``stationary_mean`` E e(∞), ``stationary_var`` Var e(∞) (inf where none), ``loss_weight``
    ½ w λ (0 where λ ≤ 0 or excluded), ``excluded`` (λ < 0), and the clip law's scalars:
    ``clip_fraction``, ``mean_clip_factor``, ``gradient_norm`` (the shift m it was evaluated at: 0
    for the linear closure). ``negative_weight``: directions with λ < 0.
    """

    lr: float
    curvatures: np.ndarray
    weights: np.ndarray
    shrinkage: np.ndarray
    drift: np.ndarray
    clipped_mean: np.ndarray
    shift: np.ndarray
    sample_var: np.ndarray
    noise_var: np.ndarray
    poisson_mult: float
    stationary_mean: np.ndarray
    stationary_var: np.ndarray
    loss_weight: np.ndarray
    excluded: np.ndarray
    clip_fraction: float
    mean_clip_factor: float
    gradient_norm: float
    negative_weight: float

    @property
    def stationary_loss(self) -> float:
        """½ Σ w λ (E e(∞)² + Var e(∞)): inf if a direction with λ > 0 has no stationary state."""
        second = self.stationary_mean**2 + self.stationary_var
        used = self.loss_weight > 0
        return float(np.sum(self.loss_weight[used] * second[used]))


@dataclass(frozen=True, eq=False)
class SpectralCurve:
    """E L(t) − L(w*) at ``steps`` (T,): ``excess`` = ``bias`` + ``noise``; ``stationary`` (t → ∞, inf if
    some direction has no stationary state); ``direction_bias`` / ``direction_noise`` (T, D) the
    per-direction loss shares ½ w λ (E e)², ½ w λ Var e; ``directions`` the linear model."""

    steps: np.ndarray
    excess: np.ndarray
    bias: np.ndarray
    noise: np.ndarray
    stationary: float
    direction_bias: np.ndarray
    direction_noise: np.ndarray
    directions: SpectralDirections

    @property
    def negative_weight(self) -> float:
        """Directions with λ < 0, excluded from the model."""
        return self.directions.negative_weight


@dataclass(frozen=True, eq=False)
class SpectralWindow:
    """Time average of E L(t) − L(w*) over ``start`` ≤ t < ``stop``: ``excess`` = ``bias`` + ``noise``,
    ``stationary``, per-direction ``direction_bias`` / ``direction_noise`` (D,), ``directions``."""

    start: int
    stop: int
    excess: float
    bias: float
    noise: float
    stationary: float
    direction_bias: np.ndarray
    direction_noise: np.ndarray
    directions: SpectralDirections

    @property
    def negative_weight(self) -> float:
        """Directions with λ < 0, excluded from the model."""
        return self.directions.negative_weight


# ---------------------------------------------------------------------------------------------
# the per-direction model
# ---------------------------------------------------------------------------------------------


def _check(basin: Any, optimizer: Any, sampling: Any, closure: Any) -> None:
    if not isinstance(basin, SpectralBasin):
        raise ValueError(f"basin must be a dptheory.spectral.SpectralBasin, got {type(basin).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be a dptheory.records.Optimizer, got {type(optimizer).__name__}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if closure not in CLOSURES:
        raise ValueError(f"closure must be one of {', '.join(CLOSURES)}, got {closure!r}")
    if optimizer.batch_size > basin.n_train:
        raise ValueError(f"batch_size must be <= n_train={basin.n_train:g}, got {optimizer.batch_size}")


def _sampling_factors(n: float, b: int, poisson: bool) -> tuple[float, float]:
    """(variance factor on V, Poisson multiplier κ): ((1 − q)/B, (1 − q)/B) or ((n − B)/((n − 1)B), 0)."""
    if poisson:
        f = (1.0 - b / n) / b
        return f, f
    return ((n - b) / ((n - 1.0) * b) if math.isfinite(n) else 1.0 / b), 0.0


def _response(basin: SpectralBasin, clip: float, shift_sq: float, shift_dir: np.ndarray | None) -> ClipResponse:
    lam = basin.curvatures
    g = basin.gradients
    if isinstance(g, GaussianGradients):
        k = basin.top_dim
        support = np.arange(lam.size) < k if g.support == "top" else np.ones(lam.size, bool)
        n_noise = k if g.support == "top" else basin.dim
        if n_noise == 0:
            raise ValueError("GaussianGradients(support='top') needs at least one top direction")
        return gaussian_clip_response(
            noise_dim=n_noise, std=g.std, in_support=support, curvatures=lam, clip_norm=clip, shift_sq=shift_sq
        )
    return empirical_clip_response(
        sums=g.sums,
        bulk_shares=basin.bulk_shares,
        curvatures=lam,
        clip_norm=clip,
        shift_sq=shift_sq,
        direction_shift_sq=shift_dir,
        bulk_weights=basin.bulk_weights,
    )


def _assemble(
    basin: SpectralBasin, optimizer: Optimizer, poisson: bool, shift_sq: float, shape: np.ndarray | None = None
) -> SpectralDirections:
    """The linear model at the shift m² = ``shift_sq``, shared over the directions as ``shape`` (Σ w·shape = 1;
    None: ∝ λ, the stationary shape for isotropic noise)."""
    lam, w = basin.curvatures, basin.weights
    excluded = lam < 0
    positive = np.where(lam > 0, lam, 0.0)
    total = float(np.sum(w * positive))
    if shape is None and total > 0:
        shape = positive / total
    shift_dir = shift_sq * shape if (shift_sq > 0 and shape is not None) else None
    resp = _response(basin, optimizer.effective_clip_norm, shift_sq, shift_dir)
    factor, mult = _sampling_factors(basin.n_train, optimizer.batch_size, poisson)
    eta, b = optimizer.lr, optimizer.batch_size
    drift = np.where(excluded, 0.0, np.maximum(resp.drift, 0.0))
    force = np.where(excluded, 0.0, resp.clipped_mean)
    tau2 = factor * resp.sample_var + optimizer.noise_std**2 / b**2
    mean_inf, var_inf = stationary_moments(lr=eta, drift=drift, force=force, noise_var=tau2, poisson_mult=mult)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(
            drift > 0, force / np.where(drift > 0, drift, 1.0), np.where(force == 0, 0.0, np.sign(force) * np.inf)
        )
    return SpectralDirections(
        lr=eta,
        curvatures=lam,
        weights=w,
        shrinkage=resp.shrinkage,
        drift=drift,
        clipped_mean=force,
        shift=shift,
        sample_var=resp.sample_var,
        noise_var=tau2,
        poisson_mult=mult,
        stationary_mean=mean_inf,
        stationary_var=var_inf,
        loss_weight=np.where(excluded, 0.0, 0.5 * w * positive),
        excluded=excluded,
        clip_fraction=resp.clip_fraction,
        mean_clip_factor=resp.mean_clip_factor,
        gradient_norm=math.sqrt(shift_sq),
        negative_weight=basin.negative_weight,
    )


def _gradient_sq(dirs: SpectralDirections) -> float:
    """E‖He‖² = Σ w λ² E e(∞)² over the directions with λ > 0 (inf if one has no stationary state)."""
    used = dirs.loss_weight > 0
    second = dirs.stationary_mean[used] ** 2 + dirs.stationary_var[used]
    lam = dirs.curvatures[used]
    return float(np.sum(dirs.weights[used] * lam * lam * second))


def _self_consistent(basin: SpectralBasin, optimizer: Optimizer, poisson: bool) -> SpectralDirections:
    """Solve m² = E‖He‖²(m²) by Brent's method in log m² (as dptheory.clipped_dynamics; step cap)."""
    first = _assemble(basin, optimizer, poisson, 0.0)
    f0 = _gradient_sq(first)
    if f0 == 0.0 or not math.isfinite(f0) or math.isinf(optimizer.effective_clip_norm):
        return first  # unclipped: the clip law does not depend on the shift, one evaluation is the fixed point
    used = first.loss_weight > 0
    second = np.where(used, first.stationary_mean**2 + first.stationary_var, 0.0)
    share = np.where(used, first.curvatures**2 * second, 0.0)  # per direction: λ² E e(∞)² of the linear closure
    total = float(np.sum(first.weights * share))
    shape = share / total if (total > 0 and math.isfinite(total)) else None

    def h(u: float) -> float:
        val = _gradient_sq(_assemble(basin, optimizer, poisson, math.exp(u), shape))
        return 700.0 if not math.isfinite(val) else math.log(val) - u if val > 0 else -700.0

    u_hi = math.log(f0) + 1.0
    for _ in range(_MAX_ITER):
        if h(u_hi) < 0:
            break
        u_hi += 2.0
    else:
        warnings.warn(
            "spectral mean-field closure: no upper bracket found; using the linear closure",
            RuntimeWarning,
            stacklevel=3,
        )
        return first
    u_lo = u_hi - 2.0
    while h(u_lo) <= 0:  # h(−∞) = log f0 − u → +∞, so this ends
        u_lo -= 2.0
    u, res = optimize.brentq(h, u_lo, u_hi, xtol=1e-13, rtol=1e-13, maxiter=_MAX_ITER, full_output=True, disp=False)
    if not res.converged:
        warnings.warn(f"spectral mean-field closure stopped after {_MAX_ITER} iterations", RuntimeWarning, stacklevel=3)
    return _assemble(basin, optimizer, poisson, math.exp(u), shape)


def spectral_directions(
    *,
    basin: SpectralBasin,
    optimizer: Optimizer,
    sampling: str = "poisson",
    closure: str = "linear",
    gradient_norm: float | None = None,
) -> SpectralDirections:
    """The per-direction linear model (drift, force, noise, stationary moments) of DP-SGD near w*.

        a_j = γ_j λ_j,   f_j = (m_c)_j,   τ_j² = F_S V_j + ν²/B²,   κ = (1 − q)/B (Poisson) or 0,
        F_S = (1 − q)/B (Poisson: with κ(f + a e)² the per-step variance is ((1−q)/B) mean_i (u_jᵀc_i)²)
            = (n − B)/((n − 1) B) (fixed batches of B distinct examples),  q = B/n,

    γ, m_c, V from dptheory.spectral_response at the shift m (``closure="linear"``: m = 0;
    ``"mean-field"``: m = ``gradient_norm`` if given, else the self-consistent m² = Σ w λ² E e(∞)²,
    found by Brent's method in log m² with xtol 1e-13, ≤ 200 iterations, a RuntimeWarning if it stops
    early; m² is shared over the directions like λ_j² E e_j(∞)² of the linear closure, a given m ∝ λ,
    the small-step stationary shape of isotropic noise). η = ``lr``,
    B = ``batch_size``, C = ``effective_clip_norm``, ν = ``noise_std`` of ``optimizer``; n =
    ``basin.n_train``. Raises ValueError on a batch larger than n. Reference: derived here, proved in
    proofs/spectral_sampling_variance.py and proofs/spectral_linear_response.py.

    Example:
        >>> from dptheory.records import Basin
        >>> sb = spectral_basin_from_basin(basin=Basin(dim=100, curvatures=(1.0,), sample_std=1.0))
        >>> dirs = spectral_directions(basin=sb, optimizer=Optimizer(lr=0.1, batch_size=10, mode="sgd"))
        >>> dirs.noise_var.tolist()                               # s²/B on every direction
        [0.1, 0.1]
    """
    _check(basin, optimizer, sampling, closure)
    poisson = sampling == "poisson"
    if closure == "linear":
        return _assemble(basin, optimizer, poisson, 0.0)
    if gradient_norm is not None:
        m = float(gradient_norm)
        if not (math.isfinite(m) and m >= 0):
            raise ValueError(f"gradient_norm must be finite and >= 0, got {gradient_norm!r}")
        return _assemble(basin, optimizer, poisson, m * m)
    return _self_consistent(basin, optimizer, poisson)


# ---------------------------------------------------------------------------------------------
# public: loss curve, window average, recovery, clip fraction
# ---------------------------------------------------------------------------------------------


def _steps(steps: Any) -> np.ndarray:
    t = np.atleast_1d(np.asarray(steps, dtype=float))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t != np.round(t)):
        raise ValueError(f"steps must be a non-negative integer or a 1-D sequence of them, got {steps!r}")
    return t


def _loss_parts(dirs: SpectralDirections, mean_sq: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = dirs.loss_weight
    with np.errstate(invalid="ignore"):
        return np.where(c > 0, c * mean_sq, 0.0), np.where(c > 0, c * var, 0.0)


def spectral_excess_loss(
    *, basin: SpectralBasin, optimizer: Optimizer, steps: Any, sampling: str = "poisson", closure: str = "linear"
) -> SpectralCurve:
    """E L(t) − L(w*) at the given steps of DP-SGD started at w* (e(0) = 0), split into bias and noise.

        E L(t) − L(w*) = Σ_j ½ w_j λ_j [ (E e_j(t))² + Var e_j(t) ],
        E e_j(t) = −η f_j G(ρ_j, t),  Var e_j(t) = η² [κ f_j² S_j(t) + τ_j² G(R_j, t)],

    ρ_j = 1 − η a_j, R_j = ρ_j² + η²κ a_j², G(x, t) = Σ_{s<t} x^s, S_j(t) = Σ_{s<t} R_j^s ρ_j^{2(t−1−s)}
    (dptheory.spectral_moments; = −(1 − ρ^t) b_j and v_j(1 − ρ^{2t}) for fixed batches), with the
    per-direction model of :func:`spectral_directions` (same ``sampling``, ``closure``). ``steps``: an
    integer or 1-D array of integers ≥ 0. Approximations: those of the module docstring (linear
    response, diagonal J, mean Hessian, bulk without bias). Exact for unclipped modes given the
    quadratic loss and g_i(w) = g_i + H(w − w*). Reference: derived here, proved in
    proofs/spectral_transient.py.

    Example:
        >>> from dptheory.records import Basin
        >>> sb = spectral_basin_from_basin(basin=Basin(dim=1, curvatures=(1.0,), sample_std=1.0))
        >>> c = spectral_excess_loss(basin=sb, optimizer=Optimizer(lr=0.1, batch_size=1, mode="sgd"),
        ...                          steps=[0, 1], sampling="fixed")
        >>> c.excess.round(12).tolist()                           # ½ λ η² s²/B after one step
        [0.0, 0.005]
    """
    dirs = spectral_directions(basin=basin, optimizer=optimizer, sampling=sampling, closure=closure)
    t = _steps(steps)
    mean, var = moment_curves(
        lr=dirs.lr,
        drift=dirs.drift,
        force=dirs.clipped_mean,
        noise_var=dirs.noise_var,
        poisson_mult=dirs.poisson_mult,
        steps=t,
    )
    bias, noise = _loss_parts(dirs, mean**2, var)
    b, v = bias.sum(axis=1), noise.sum(axis=1)
    return SpectralCurve(
        steps=t.astype(np.int64),
        excess=b + v,
        bias=b,
        noise=v,
        stationary=dirs.stationary_loss,
        direction_bias=bias,
        direction_noise=noise,
        directions=dirs,
    )


def spectral_window_excess(
    *,
    basin: SpectralBasin,
    optimizer: Optimizer,
    start: int,
    stop: int,
    sampling: str = "poisson",
    closure: str = "linear",
) -> SpectralWindow:
    """Time average of E L(t) − L(w*) over start ≤ t < stop, from e(0) = 0, split into bias and noise.

        (1/N) Σ_{t=start}^{stop−1} Σ_j ½ w_j λ_j [(E e_j(t))² + Var e_j(t)],   N = stop − start,

    the curve of :func:`spectral_excess_loss` averaged in closed form per direction (window sums of
    geometric series as a 12 × 12 matrix power, dptheory.spectral_moments.window_moments; no loop
    over t). ``start`` ≥ 0 and ``stop`` > ``start`` integers (t counts completed steps: t = 0 is w*).
    Reference: derived here, proved in proofs/spectral_transient.py.

    Example:
        >>> from dptheory.records import Basin
        >>> sb = spectral_basin_from_basin(basin=Basin(dim=1, curvatures=(1.0,), sample_std=1.0))
        >>> w = spectral_window_excess(basin=sb, optimizer=Optimizer(lr=0.1, batch_size=1, mode="sgd"),
        ...                            start=0, stop=2, sampling="fixed")
        >>> round(w.excess, 12)                                   # mean of 0 and 0.005
        0.0025
    """
    t0 = check_int("start", start, minimum=0)
    t1 = check_int("stop", stop, minimum=1)
    if t1 <= t0:
        raise ValueError(f"stop must be > start={t0}, got {stop!r}")
    dirs = spectral_directions(basin=basin, optimizer=optimizer, sampling=sampling, closure=closure)
    mean_sq, var = window_moments(
        lr=dirs.lr,
        drift=dirs.drift,
        force=dirs.clipped_mean,
        noise_var=dirs.noise_var,
        poisson_mult=dirs.poisson_mult,
        start=t0,
        stop=t1,
    )
    bias, noise = _loss_parts(dirs, mean_sq, var)
    return SpectralWindow(
        start=t0,
        stop=t1,
        excess=float(bias.sum() + noise.sum()),
        bias=float(bias.sum()),
        noise=float(noise.sum()),
        stationary=dirs.stationary_loss,
        direction_bias=bias,
        direction_noise=noise,
        directions=dirs,
    )


def _displacement(basin: SpectralBasin, displacement: Any, direction: Any, bulk_node: Any) -> np.ndarray:
    """δ on the D = k + m model directions (one direction of a bulk node, not all w_l of them)."""
    k, size = basin.top_dim, basin.curvatures.size
    delta = np.zeros(size)
    arr = np.asarray(displacement, dtype=float)
    if arr.ndim == 1:
        if arr.shape != (k,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"an array displacement must be finite with shape (k={k},), got {arr.shape}")
        delta[:k] = arr
        return delta
    if arr.ndim != 0 or not math.isfinite(float(arr)):
        raise ValueError(f"displacement must be a finite number or a (k,) array, got {displacement!r}")
    if direction == "top":
        direction = 0
    if direction == "bulk":
        m = size - k
        if bulk_node is None and m != 1:
            raise ValueError(f"direction='bulk' needs bulk_node (0 … {m - 1}) when there are {m} bulk nodes")
        node = 0 if bulk_node is None else check_int("bulk_node", bulk_node, minimum=0)
        if node >= m:
            raise ValueError(f"bulk_node must be < {m}, got {bulk_node!r}")
        delta[k + node] = float(arr)
        return delta
    if isinstance(direction, (bool, str)) or not isinstance(direction, (int, np.integer)):
        raise ValueError(f"direction must be 'top', 'bulk' or an index into the top-k, got {direction!r}")
    if not 0 <= int(direction) < k:
        raise ValueError(f"direction index must be in 0 … {k - 1}, got {direction!r}")
    delta[int(direction)] = float(arr)
    return delta


def spectral_recovery_time(
    *,
    basin: SpectralBasin,
    optimizer: Optimizer,
    displacement: np.ndarray | float,
    direction: str | int = "top",
    threshold: float = 0.1,
    sampling: str = "poisson",
    closure: str = "linear",
    bulk_node: int | None = None,
) -> float:
    """Steps until a displacement δ added at stationarity has decayed, in the linear (small-δ) regime.

        Δ(t) = Σ_j ½ λ_j [R_j^t δ_j² − 2 b_j ρ_j^t δ_j]   (excess of E L(t) over its stationary value),
        t* = first t with Δ(t) ≤ threshold · ½ δᵀ H δ,

    R_j, ρ_j, b_j of :func:`spectral_directions` (proofs/spectral_transient.py); unclipped modes decay at
    ρ_j = 1 − ηλ_j, clipped ones at 1 − ηγ_jλ_j; the cross term is the pull of the fixed-point shift.
    ``displacement``: δ along one direction (``direction`` = "top" = u_1, an index j into the top-k,
    or "bulk": one direction of bulk node ``bulk_node``, required when there are several nodes; its
    bias has no measured sign, so its cross term is left out) or a (k,) array of components on
    u_1 … u_k (``direction`` then ignored). t* is interpolated linearly
    between integer steps (dptheory.curves.first_crossing's definition), found by doubling and
    bisection (assumes Δ crosses once in the last doubling interval). Returns 0 for threshold ≥ 1 and
    inf when a displaced direction has no stationary state or oscillates (ηγλ > 1, ρ < 0). Regime: linear response — valid while
    λ_j|δ_j| is small against the per-example norms and C; far from w* (λ|δ| ≫ C) the clipped step
    has length ≈ ηC per step (a saturated phase, dptheory.clipped_recovery.saturated_recovery_steps)
    that this function does not model (it underestimates the time there). Raises ValueError for a
    displacement without loss (λ ≤ 0 directions only). Reference: derived here.

    Example:
        >>> from dptheory.records import Basin
        >>> sb = spectral_basin_from_basin(basin=Basin(dim=1, curvatures=(1.0,), sample_std=0.0))
        >>> t = spectral_recovery_time(basin=sb, optimizer=Optimizer(lr=0.1, batch_size=1, mode="sgd"),
        ...                            displacement=1.0, threshold=0.81, sampling="fixed")
        >>> round(t, 12)                                          # (1 − ηλ)^{2t} = 0.81 at t = 1
        1.0
    """
    thr = check_positive("threshold", threshold)
    dirs = spectral_directions(basin=basin, optimizer=optimizer, sampling=sampling, closure=closure)
    delta = _displacement(basin, displacement, direction, bulk_node)
    used = (delta != 0) & (dirs.loss_weight > 0)
    if not np.any(used):
        raise ValueError("the displacement has no excess loss (it lies in directions with curvature <= 0 or is 0)")
    if thr >= 1.0:
        return 0.0
    if not np.all(np.isfinite(dirs.stationary_var[used])) or np.any(dirs.drift[used] * dirs.lr > 1.0):
        return math.inf  # no stationary state (or an oscillating ρ < 0 the interpolation cannot follow)
    lam = dirs.curvatures[used]
    target = thr * 0.5 * float(np.sum(lam * delta[used] ** 2))
    top = np.arange(delta.size) < basin.top_dim
    force = np.where(top, dirs.clipped_mean, 0.0)[used]  # a bulk bias has no measured sign: no cross term

    def excess(t: float) -> float:
        val = recovery_excess(
            lr=dirs.lr,
            drift=dirs.drift[used],
            force=force,
            poisson_mult=dirs.poisson_mult,
            displacement=delta[used],
            steps=np.array([t]),
        )
        return float(0.5 * np.sum(lam * val[0]))

    if excess(0) <= target:
        return 0.0
    hi = 1
    for _ in range(_MAX_ITER):
        if excess(hi) <= target:
            break
        hi *= 2
    else:  # pragma: no cover - 2^200 steps
        return math.inf
    lo = hi // 2  # excess(lo) > target (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if excess(mid) <= target:
            hi = mid
        else:
            lo = mid
    y0, y1 = excess(hi - 1), excess(hi)
    return float(hi - 1 + ((y0 - target) / (y0 - y1) if y0 != y1 else 1.0))


def spectral_clip_fraction(
    *, basin: SpectralBasin, optimizer: Optimizer, sampling: str = "poisson", closure: str = "linear"
) -> float:
    """Fraction of per-example gradients clipped at stationarity, P(‖g_i(w)‖ > C).

        linear:      mean_i 1{R_i > C}  (the norms at w*; first order),
        mean-field:  mean_i Φ((R_i² + m² − C²)/(2σ_i)),  σ_i² = Σ_j p_ij² s_j (+ bulk),

    m² = Σ_j s_j the stationary E‖He‖² (:func:`spectral_directions`): the stationary fluctuation
    g_i + He raises ‖g_i + He‖² by m² on average and spreads it by 2σ_i (the Gaussian law of
    g_iᵀ He); exact noncentral chi-square for GaussianGradients. 0 for unclipped modes.
    Reference: derived here.

    Example:
        >>> g = GradientStatistics(norms=np.array([1.0, 2.0, 3.0, 4.0]), top_projections=np.zeros((4, 0)))
        >>> sb = SpectralBasin(dim=2, top_eigenvalues=np.zeros(0), bulk_eigenvalues=np.array([1.0]),
        ...                    bulk_weights=np.array([2.0]), gradients=g, n_train=4)
        >>> spectral_clip_fraction(basin=sb, optimizer=Optimizer(lr=0.1, batch_size=2, clip_norm=2.5))
        0.5
    """
    return spectral_directions(basin=basin, optimizer=optimizer, sampling=sampling, closure=closure).clip_fraction
