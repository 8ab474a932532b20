"""Stationary state of the mean-field clipped recursion (backs dptheory.clipped_dynamics).

The per-direction second moment of the clipped step obeys (module docstring of clipped_dynamics)

    v' = [(1 − η a)² + η² κ a²] v + η² q,   a = γ λ,   κ = 1/B (Poisson batches) or 0 (fixed),

whose fixed point is v* = η q / (a (2 − η a (1 + κ))); the loss weighs it by λ/2, giving
η q / (2 γ (2 − η γ λ)) for fixed batches. Checked here symbolically, together with the Poisson
compound-sum variance that produces κ, the closed form r η C s √n σ²/(4B²) of the fully clipped,
DP-dominated regime, and the (r+1)/r factor by which the mean-field closure underestimates a
saturated stationary state (the elliptic and radial closures, proofs/clipped_elliptic_closure.py and
proofs/clipped_radial_closure.py, hold there).

Exports (``CODE_LINKS``): v* ↔ ``dptheory.quadratic.stationary_variance``; the approximate stationary loss
r η q₀/(4γ₀) with γ₀ = C/(s√n), q₀ = C²/(nB) + σ²C²/B² (C < s√n) ↔
``stationary_excess_loss(approx=True)``; the unclipped stationary loss Σ_i η q/(2(2 − ηλ_i)) ↔
``stationary_excess_loss`` in mode ``noise``.
"""

from __future__ import annotations

import math

import sympy as sp

from dptheory.records import Basin, Optimizer
from proofs.links import CodeLink

STATEMENT = (
    "v* = ηq/(a(2 − ηa(1+κ))) solves v = [(1−ηa)² + η²κa²]v + η²q; "
    "½λv* = ηq/(2γ(2−ηγλ)) (κ=0); "
    "Poisson: Var(Σ_{j≤N} X_j)/B² = Var X/B + (E X)²/B; fully clipped DP limit r η C s √n σ²/(4B²); "
    "saturated stationary E ρ² = r(r+1)θ² vs mean-field r²θ²  [clipped_dynamics.stationary_excess_loss(closure='mean-field')]"
)


_eta, _a, _q, _kappa = sp.symbols("eta a q kappa", positive=True)
V_STAR = _eta * _q / (_a * (2 - _eta * _a * (1 + _kappa)))
_v_star = sp.lambdify((_eta, _a, _q, _kappa), V_STAR, "math")


def stationary_variance(eta: float, a: float, q: float, kappa: float) -> float:
    """v* = ηq/(a(2 − ηa(1 + κ))): the proven expression V_STAR, evaluated."""
    return _v_star(eta, a, q, kappa)


def approx_clipped_loss(r: int, eta: float, C: float, s: float, n: int, sigma: float, B: int) -> float:
    """r η q₀ / (4 γ₀), γ₀ = C/(s√n), q₀ = C²/(nB) + σ²C²/B² (the approx closed form when C < s√n)."""
    g0 = C / (s * math.sqrt(n))
    q0 = C * C / (n * B) + sigma**2 * C**2 / B**2
    return r * eta * q0 / (4.0 * g0)


def unclipped_loss(eta: float, lam1: float, lam2: float, s: float, B: int, nu: float) -> float:
    """Σ_i η q/(2(2 − ηλ_i)), q = s²/B + ν²/B²: the exact stationary loss of an unclipped fixed-batch step."""
    q = s * s / B + nu * nu / B**2
    return sum(eta * q / (2.0 * (2.0 - eta * lam)) for lam in (lam1, lam2))


def _approx_args(eta, C, s, n, sigma, B):
    return {
        "basin": Basin(dim=n, curvatures=(1.0, 1.0, 1.0), sample_std=s),
        "optimizer": Optimizer(lr=eta, batch_size=B, clip_norm=C, noise_multiplier=sigma),
        "approx": True,
    }


def _unclipped_args(eta, lam1, lam2, s, B, nu):
    return {
        "basin": Basin(dim=10, curvatures=(lam1, lam2), sample_std=s),
        "optimizer": Optimizer(lr=eta, batch_size=B, clip_norm=1.0, noise_multiplier=nu, mode="noise"),
    }


CODE_LINKS = [
    CodeLink(
        function="dptheory.quadratic.stationary_variance",
        closed_form=stationary_variance,
        symbols={"eta": (1e-3, 1.0), "a": (1e-3, 0.9), "q": (1e-6, 10.0), "kappa": (0.0, 1.0)},
        arguments=lambda eta, a, q, kappa: {"lr": eta, "drift": a, "noise_var": q, "multiplicative": kappa},
        rtol=1e-13,
    ),
    CodeLink(
        function="dptheory.clipped_dynamics.stationary_excess_loss",
        closed_form=lambda eta, C, s, n, sigma, B: approx_clipped_loss(3, eta, C, s, n, sigma, B),
        symbols={
            "eta": (0.01, 2.0),
            "C": (0.01, 0.9),
            "s": (0.5, 3.0),
            "n": (4, 10_000),
            "sigma": (0.0, 5.0),
            "B": (1, 512),
        },
        integer=frozenset({"n", "B"}),
        arguments=_approx_args,
        note="approx=True, rank 3, C < s√n (so γ₀ = C/(s√n) and q₀ = C²/(nB) + σ²C²/B²)",
    ),
    CodeLink(
        function="dptheory.clipped_dynamics.stationary_excess_loss",
        closed_form=unclipped_loss,
        symbols={
            "eta": (0.01, 1.0),
            "lam1": (0.05, 1.5),
            "lam2": (0.05, 1.5),
            "s": (0.0, 3.0),
            "B": (1, 256),
            "nu": (0.0, 5.0),
        },
        integer=frozenset({"B"}),
        arguments=_unclipped_args,
        note="mode 'noise' (C_ref = 1): the exact Gaussian law under every closure",
    ),
]


def verify() -> None:
    eta, a, q, kappa, lam, gamma = sp.symbols("eta a q kappa lambda gamma", positive=True)
    # 1. fixed point of the second-moment recursion
    v_star = V_STAR.subs({_eta: eta, _a: a, _q: q, _kappa: kappa})
    residual = ((1 - eta * a) ** 2 + eta**2 * kappa * a**2) * v_star + eta**2 * q - v_star
    assert sp.simplify(residual) == 0
    # 2. loss weighs by λ, dynamics by γλ
    loss = sp.Rational(1, 2) * lam * v_star.subs({a: gamma * lam, kappa: 0})
    assert sp.simplify(loss - eta * q / (2 * gamma * (2 - eta * gamma * lam))) == 0

    # 3. Poisson compound sum: N ~ Poisson(B), X_j i.i.d. with mean mu, variance s2 (one coordinate)
    b, mu, s2 = sp.symbols("B mu s2", positive=True)
    n = sp.symbols("n", integer=True, nonnegative=True)
    pmf = sp.exp(-b) * b**n / sp.factorial(n)
    e_n = sp.simplify(sp.summation(n * pmf, (n, 0, sp.oo)))
    e_n2 = sp.simplify(sp.summation(n**2 * pmf, (n, 0, sp.oo)))
    # E[S²] = E[N] (s2 + mu²) + E[N(N−1)] mu²  (conditional on N: N variances + N² means²)
    e_s2 = e_n * s2 + e_n2 * mu**2
    var_over_b2 = (e_s2 - (e_n * mu) ** 2) / b**2
    assert sp.simplify(var_over_b2 - (s2 / b + mu**2 / b)) == 0
    # with mu = a e (the clipped drift along one coordinate) that is the κ a² e² term, κ = 1/B

    # 4. fully clipped (γ = C/(s√n), q = C²/(nB) + σ²C²/B²), small ηγλ, r directions
    r, c, s, nn, sigma = sp.symbols("r C s n sigma", positive=True)
    g0 = c / (s * sp.sqrt(nn))
    q0 = c**2 / (nn * b) + sigma**2 * c**2 / b**2
    approx = r * eta * q0 / (4 * g0)
    closed = r * eta * c * s * sp.sqrt(nn) * sigma**2 / (4 * b**2)
    vals = {r: 3, eta: sp.Rational(1, 3), c: sp.Rational(1, 7), s: 2, nn: 50, sigma: sp.Rational(3, 2), b: 16}
    assert math.isclose(float(approx.subs(vals)), approx_clipped_loss(3, 1 / 3, 1 / 7, 2.0, 50, 1.5, 16), rel_tol=1e-14)
    assert sp.simplify(approx - closed - r * eta * c * s / (4 * b * sp.sqrt(nn))) == 0
    assert sp.limit(approx / closed, nn, sp.oo) == 1

    # 5. saturated stationary state (s = 0, m ≫ C, equal curvatures, continuous time):
    #    drift −ηC ρ̂, diffusion D = η²ν²/(2B²) per coordinate → p ∝ exp(−ρ/θ), θ = D/(ηC)
    rho, theta, d_coef, mu_d = sp.symbols("rho theta D mu_d", positive=True)
    p = sp.exp(-rho / theta)
    flux = mu_d * p + d_coef * sp.diff(p, rho)  # radial probability flux (zero at stationarity)
    assert sp.simplify(flux.subs(theta, d_coef / mu_d)) == 0
    rr = sp.symbols("r", positive=True, integer=True)
    second = sp.integrate(rho ** (rr + 1) * p, (rho, 0, sp.oo)) / sp.integrate(rho ** (rr - 1) * p, (rho, 0, sp.oo))
    assert sp.simplify(sp.gammasimp(second) - rr * (rr + 1) * theta**2) == 0
    #    mean-field closure: a = γλ with γλ = C/ρ_rms, v = η²ν²/B² ρ_rms/(2ηC) = 2D ρ_rms/(2ηC)
    rho_rms = sp.symbols("rho_rms", positive=True)
    v_mf = 2 * d_coef * rho_rms / (2 * mu_d)  # per coordinate, small-step limit of ηq/(2a)
    sol = sp.solve(sp.Eq(rho_rms**2, rr * v_mf), rho_rms)
    assert len(sol) == 1 and sp.simplify(sol[0] ** 2 - rr**2 * (d_coef / mu_d) ** 2) == 0
