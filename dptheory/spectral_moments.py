"""Exact moments of the per-direction linear recursion of DP-SGD near a minimum, in closed form.

Each direction j (a Hessian eigenvector, or one direction of a bulk node) follows

    e(t+1) = ρ e(t) − η f − η ε(t),   ρ = 1 − η a,   E[ε(t) | e(t)] = 0,
    E[ε(t)² | e(t)] = τ² + κ (f + a e(t))²,

η = ``lr``, a = ``drift`` (γ λ), f = ``force`` (the clipped mean m_c along the direction), τ² =
``noise_var`` (sampling variance of the clipped per-example gradients plus the DP noise ν²/B²), κ =
``poisson_mult`` ((1 − q)/B under Poisson sampling, where the batch size itself fluctuates and so
does the mean update f + a e; 0 for fixed batches), from e(0) = 0. With G(x, t) = Σ_{s<t} x^s,
R = ρ² + η² κ a² and S(t) = Σ_{s<t} R^s ρ^{2(t−1−s)} (proofs/spectral_transient.py):

    E e(t) = −η f G(ρ, t)                       (= −(1 − ρ^t) b,  b = f/a the fixed-point shift),
    Var e(t) = η² [κ f² S(t) + τ² G(R, t)]      (= v (1 − ρ^{2t}) for κ = 0,  v = ητ²/(a(2 − ηa))),
    t → ∞ (0 < ηa(2 − ηa(1 + κ)), i.e. R < 1):  E e → −b,  Var e → v = η²τ²/(1 − R),

finite for a = 0 too (then E e = −ηft, Var e = η²(κf² + τ²)t: a random walk with drift). Every term
is a sum of non-negative numbers when 0 ≤ ηa ≤ 1, and is evaluated without cancellation: G through
expm1/log1p, and window sums over t₀ ≤ t < t₁ as the upper-right block of the (12 × 12) matrix power
[[A, I], [0, I]]^{t₁−t₀} (repeated squaring, O(log T) products, no loop over t) acting on the state
z(t) = (1, G(ρ, t), G(ρ, t)², S(t), R^t, G(R, t)), which obeys z(t+1) = A z(t).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "geometric_sum",
    "moment_curves",
    "recovery_excess",
    "stationary_moments",
    "window_moments",
]


def geometric_sum(decay_gap: Any, steps: Any) -> np.ndarray:
    """G(x, t) = Σ_{s<t} x^s for x = 1 − u, u = ``decay_gap`` (broadcast with ``steps`` t ≥ 0).

    Evaluated as −expm1(t·log1p(−u))/u for |u| ≤ ½ (no cancellation for small u; G = t at u = 0) and
    as (1 − x^t)/u otherwise (x may be negative there; t must be integral then). Exact up to rounding.

    Example:
        >>> geometric_sum(np.array([0.0, 1e-12, 0.5]), 10).round(6).tolist()
        [10.0, 10.0, 1.998047]
    """
    u = np.asarray(decay_gap, dtype=float)
    t = np.asarray(steps, dtype=float)
    u, t = np.broadcast_arrays(u, t)
    small = np.abs(u) <= 0.5
    out = np.empty(u.shape)
    us, ts = u[small], t[small]
    with np.errstate(divide="ignore", invalid="ignore"):
        val = -np.expm1(ts * np.log1p(-us)) / np.where(us != 0, us, 1.0)
    out[small] = np.where(us != 0, val, ts)
    ub, tb = u[~small], t[~small]
    with np.errstate(over="ignore", invalid="ignore"):
        out[~small] = (1.0 - np.power(1.0 - ub, tb)) / ub
    return out


def _coefficients(
    lr: float, drift: np.ndarray, poisson_mult: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ρ, 1 − ρ = ηa, R, 1 − R, 1 − ρ²/R) per direction (the last only where κ > 0)."""
    u = lr * drift
    rho = 1.0 - u
    w = u * (2.0 - u * (1.0 + poisson_mult))
    big_r = 1.0 - w
    with np.errstate(divide="ignore", invalid="ignore"):
        z_gap = np.where(big_r > 0, poisson_mult * u * u / np.where(big_r > 0, big_r, 1.0), 1.0)
    return rho, u, big_r, w, z_gap


def _mixed_sum(big_r: np.ndarray, z_gap: np.ndarray, poisson_mult: float, t: np.ndarray) -> np.ndarray:
    """S(t) = Σ_{s<t} R^s ρ^{2(t−1−s)} = R^{t−1} G(ρ²/R, t), with 1 − ρ²/R = κ(ηa)²/R (0 where κ = 0)."""
    active = (poisson_mult > 0) & (big_r > 0)
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        lead = np.where(t > 0, np.power(np.where(active, big_r, 1.0), np.maximum(t - 1.0, 0.0)), 0.0)
        out = lead * geometric_sum(z_gap, t)
    return np.where(active, out, 0.0)


def moment_curves(
    *, lr: float, drift: Any, force: Any, noise_var: Any, poisson_mult: float, steps: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(E e(t), Var e(t)) of every direction (columns) at every step t (rows), from e(0) = 0.

    Closed forms of the module docstring; ``drift`` a, ``force`` f, ``noise_var`` τ² are (D,)
    arrays, ``poisson_mult`` κ a scalar, ``steps`` a (T,) array of integers ≥ 0, ``lr`` η.
    Reference: derived here, proved in proofs/spectral_transient.py.

    Example:
        >>> m, v = moment_curves(lr=0.1, drift=np.array([1.0]), force=np.array([0.0]),
        ...                      noise_var=np.array([1.0]), poisson_mult=0.0, steps=np.array([0, 10**6]))
        >>> round(float(v[1, 0]), 12) == round(0.1 / (2 - 0.1), 12)      # v = ητ²/(a(2 − ηa))
        True
    """
    t = np.asarray(steps, dtype=float)[:, None]
    a, f, tau2 = (np.asarray(x, dtype=float)[None, :] for x in (drift, force, noise_var))
    _, u, big_r, w, z_gap = _coefficients(lr, a, poisson_mult)
    mean = -lr * f * geometric_sum(u, t)
    var = lr * lr * (poisson_mult * f * f * _mixed_sum(big_r, z_gap, poisson_mult, t) + tau2 * geometric_sum(w, t))
    return mean, var


def stationary_moments(
    *, lr: float, drift: Any, force: Any, noise_var: Any, poisson_mult: float
) -> tuple[np.ndarray, np.ndarray]:
    """(E e(∞), Var e(∞)) = (−f/a, η²τ²/(1 − R)) per direction; ±inf where there is no stationary state.

    No stationary state when a = 0 (random walk; the mean is −inf·sign(f), or 0 if f = 0, and the
    variance inf unless τ² = κf² = 0) or when R ≥ 1 (ηa(2 − ηa(1 + κ)) ≤ 0: unstable step).

    Example:
        >>> stationary_moments(lr=0.1, drift=np.array([1.0, 0.0]), force=np.array([0.5, 0.0]),
        ...                    noise_var=np.array([0.0, 1.0]), poisson_mult=0.0)[0].tolist()
        [-0.5, 0.0]
    """
    a, f, tau2 = (np.asarray(x, dtype=float) for x in (drift, force, noise_var))
    _, _, _, w, _ = _coefficients(lr, a, poisson_mult)
    stable = (a > 0) & (w > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(stable, -f / np.where(stable, a, 1.0), np.where(f == 0, 0.0, -np.sign(f) * np.inf))
        var = np.where(stable, lr * lr * tau2 / np.where(stable, w, 1.0), np.inf)
    var = np.where(~stable & (tau2 == 0) & (poisson_mult * f * f == 0), 0.0, var)
    return mean, var


def _transition(rho: np.ndarray, big_r: np.ndarray) -> np.ndarray:
    """A (D, 6, 6): z(t+1) = A z(t) for z = (1, G(ρ,t), G(ρ,t)², S(t), R^t, G(R,t))."""
    d = rho.shape[0]
    a = np.zeros((d, 6, 6))
    a[:, 0, 0] = 1.0
    a[:, 1, 0], a[:, 1, 1] = 1.0, rho
    a[:, 2, 0], a[:, 2, 1], a[:, 2, 2] = 1.0, 2.0 * rho, rho * rho
    a[:, 3, 3], a[:, 3, 4] = rho * rho, 1.0
    a[:, 4, 4] = big_r
    a[:, 5, 0], a[:, 5, 5] = 1.0, big_r
    return a


def _matrix_power(m: np.ndarray, n: int) -> np.ndarray:
    """m^n for a stack of square matrices by repeated squaring (⌈log₂ n⌉ squarings)."""
    out = np.broadcast_to(np.eye(m.shape[-1]), m.shape).copy()
    base = m.copy()
    while n > 0:
        if n & 1:
            out = out @ base
        n >>= 1
        if n:
            base = base @ base
    return out


def window_moments(
    *, lr: float, drift: Any, force: Any, noise_var: Any, poisson_mult: float, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Time averages over start ≤ t < stop of (E e(t))² and Var e(t), per direction (D,) each.

    (1/N) Σ_t of the closed forms of :func:`moment_curves`, N = stop − start, as the window sum
    Σ_{s<N} A^s applied to z(start) = A^start z(0) (module docstring): exact, O(log stop) 12 × 12
    products per direction, no loop over t. Reference: derived here, proved in
    proofs/spectral_transient.py.

    Example:
        >>> b2, v = window_moments(lr=0.5, drift=np.array([1.0]), force=np.array([1.0]),
        ...                        noise_var=np.array([0.0]), poisson_mult=0.0, start=0, stop=2)
        >>> float(b2[0])              # E e = 0, −0.5: mean of (0, 0.25)
        0.125
    """
    a, f, tau2 = (np.asarray(x, dtype=float) for x in (drift, force, noise_var))
    rho, _, big_r, _, _ = _coefficients(lr, a, poisson_mult)
    n = stop - start
    trans = _transition(rho, big_r)
    block = np.zeros((a.shape[0], 12, 12))
    block[:, :6, :6] = trans
    block[:, :6, 6:] = np.eye(6)
    block[:, 6:, 6:] = np.eye(6)
    total = _matrix_power(block, n)[:, :6, 6:]
    z0 = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    z_start = _matrix_power(trans, start) @ z0
    zsum = np.einsum("dij,dj->di", total, z_start) / n
    g2, s_sum, gr = zsum[:, 2], zsum[:, 3], zsum[:, 5]
    bias_sq = lr * lr * f * f * g2
    var = lr * lr * (poisson_mult * f * f * s_sum + tau2 * gr)
    return bias_sq, var


def recovery_excess(
    *, lr: float, drift: Any, force: Any, poisson_mult: float, displacement: Any, steps: Any
) -> np.ndarray:
    """Excess of E e(t)² over its stationary value after a displacement δ added at stationarity.

        E e(t)² − (b² + v) = R^t δ² − 2 b ρ^t δ,   b = f/a   (rows t = ``steps``, columns directions),

    because x = e + b has E x(t) = ρ^t δ and E x(t)² = v + R^t δ² (proofs/spectral_transient.py).
    Directions with δ = 0 give 0; ρ^t for non-integral t needs ρ ≥ 0 (ηa ≤ 1).

    Example:
        >>> recovery_excess(lr=0.1, drift=np.array([1.0]), force=np.array([0.0]), poisson_mult=0.0,
        ...                 displacement=np.array([1.0]), steps=np.array([0, 1])).round(12).tolist()
        [[1.0], [0.81]]
    """
    t = np.asarray(steps, dtype=float)[:, None]
    a, f, delta = (np.asarray(x, dtype=float)[None, :] for x in (drift, force, displacement))
    rho, _, big_r, _, _ = _coefficients(lr, a, poisson_mult)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        b = np.where(a > 0, f / np.where(a > 0, a, 1.0), 0.0)
        out = np.power(big_r, t) * delta * delta - 2.0 * b * np.power(rho, t) * delta
    return np.where(delta == 0, 0.0, out)
