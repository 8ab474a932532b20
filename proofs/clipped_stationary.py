"""Stationary state of the mean-field clipped recursion (backs dptheory.clipped_dynamics).

The per-direction second moment of the clipped step obeys (module docstring of clipped_dynamics)

    v' = [(1 − η a)² + η² κ a²] v + η² q,   a = γ λ,   κ = 1/B (Poisson batches) or 0 (fixed),

whose fixed point is v* = η q / (a (2 − η a (1 + κ))); the loss weighs it by λ/2, giving
η q / (2 γ (2 − η γ λ)) for fixed batches. Checked here symbolically, together with the Poisson
compound-sum variance that produces κ, the closed form r η C s √n σ²/(4B²) of the fully clipped,
DP-dominated regime, and the (r+1)/r factor by which the mean-field closure underestimates a
saturated stationary state (a finding: see tests/test_clipped_dynamics.py; fixed by the radial
closure, proofs/clipped_radial_closure.py and dptheory.clipped_closure).
"""

from __future__ import annotations

import sympy as sp

STATEMENT = (
    "v* = ηq/(a(2 − ηa(1+κ))) solves v = [(1−ηa)² + η²κa²]v + η²q; "
    "½λv* = ηq/(2γ(2−ηγλ)) (κ=0); "
    "Poisson: Var(Σ_{j≤N} X_j)/B² = Var X/B + (E X)²/B; fully clipped DP limit r η C s √n σ²/(4B²); "
    "saturated stationary E ρ² = r(r+1)θ² vs mean-field r²θ²  [clipped_dynamics.stationary_excess_loss(closure='mean-field')]"
)


def verify() -> None:
    eta, a, q, kappa, lam, gamma, v = sp.symbols("eta a q kappa lambda gamma v", positive=True)
    # 1. fixed point of the second-moment recursion
    v_star = eta * q / (a * (2 - eta * a * (1 + kappa)))
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
