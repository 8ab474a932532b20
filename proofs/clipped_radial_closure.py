"""Radial (small-step Fokker–Planck) closure of the clipped step's stationary state.

Small-step limit of e ← e − η f(ρ) ê + η τ(ρ) ξ in ℝ^r (ρ = ‖e‖, ê = e/ρ, isotropic noise of
per-coordinate variance τ²(ρ)): the Itô SDE de = −f ê dt + √(2D) dW in units of η·steps, D = ητ²/2,
with stationary Fokker–Planck equation ∇·(f ê p) + Δ(D p) = 0. For a radial drift the zero-flux
solution is

    p(e) ∝ exp(−∫₀^ρ f/D du) / D(ρ),   radial law p(ρ) ∝ ρ^{r−1} exp(−∫₀^ρ f/D du) / D(ρ).

Checked here: (1) zero radial flux f p + (D p)' = 0 for general f, D; (2) the full Cartesian
Fokker–Planck equation in r = 3 for a saturating drift f = cρ/√(1+ρ²) (a clip-like shrinkage);
(3) linear drift f = aρ, constant D: the Gaussian law with E ρ² = r D/a, i.e. the mean-field
per-coordinate variance ηq/(2a); (4) saturated drift f = C (normalised GD), constant D: E ρ² =
r(r+1)θ², θ = D/C, against the mean-field closure's r²θ² — the factor (r+1)/r; (5) the unit-free
form used by dptheory.clipped_closure.radial_closure_factor: x = m/m_MF, p ∝ x^{k−1} e^{−k∫g u du}
with g ≡ 1 gives E x² = 1 and with g = 1/u (saturated) gives E x² = (k+1)/k; (6) the discrete-time
weight: to first order in a nonlinearity a(ρ) = a₀(1 + β(ρ² − ρ₀²)/ρ₀²) of the contraction
(ρ₀² = k v the mean-field mean square, Gaussian zeroth order), the step e' = (1 − ηa)e + noise moves
E ρ² by −(2β/k)·w·ρ₀² with w = 2(1 − h)/(2 − h), h = η a₀ (1 + κ) (κ = 1/B: Poisson batches), and
the small-step Fokker–Planck law moves it by −(2β/k)ρ₀² (w → 1 as η → 0); a nonlinearity of the
diffusion alone has no first-order effect in either (the exact moment identities E[aρ²] = k E[D] and
E[ρ²(2ηa − η²a²(1+κ))] = k η² E[q]).
"""

from __future__ import annotations

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "p(ρ) ∝ ρ^{r−1} e^{−∫f/D}/D solves the stationary Fokker–Planck equation (zero radial flux; "
    "Cartesian check r = 3); linear f: E ρ² = rD/a (mean field); f = C: E ρ² = r(r+1)θ² vs mean-field "
    "r²θ²; unit-free form E x² = 1 (frozen) and (k+1)/k (saturated); first-order discrete weight "
    "w = 2(1−h)/(2−h) of the nonlinearity correction  [clipped_closure.radial_closure_factor]"
)

_h = sp.symbols("h", positive=True)
DISCRETE_WEIGHT = 2 * (1 - _h) / (2 - _h)


def discrete_weight(h: float) -> float:
    """w = 2(1 − h)/(2 − h): the proven expression DISCRETE_WEIGHT (step 6), evaluated."""
    return float(DISCRETE_WEIGHT.subs(_h, h))


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipped_closure.radial_discrete_weight",
        closed_form=discrete_weight,
        symbols={"h": (0.0, 1.9)},
        arguments=lambda h: {"drift_step": h},
        rtol=1e-14,
    ),
]


def _gamma_moment(power, r, scale):
    """∫₀^∞ ρ^{r−1+power} e^{−ρ/scale} dρ / ∫₀^∞ ρ^{r−1} e^{−ρ/scale} dρ."""
    rho = sp.symbols("rho", positive=True)
    num = sp.integrate(rho ** (r - 1 + power) * sp.exp(-rho / scale), (rho, 0, sp.oo))
    den = sp.integrate(rho ** (r - 1) * sp.exp(-rho / scale), (rho, 0, sp.oo))
    return sp.gammasimp(num / den)


def verify() -> None:
    rho, u = sp.symbols("rho u", positive=True)
    f, dfun = sp.Function("f"), sp.Function("D")
    # 1. zero radial flux for general drift f and state-dependent diffusion D
    p = sp.exp(-sp.Integral(f(u) / dfun(u), (u, 0, rho))) / dfun(rho)
    flux = f(rho) * p + sp.diff(dfun(rho) * p, rho)
    assert sp.simplify(flux) == 0

    # 2. Cartesian stationary Fokker–Planck in r = 3 for f = cρ/√(1+ρ²), constant D:
    #    ∫ f/D = c(√(1+ρ²) − 1)/D, p = exp(−c√(1+ρ²)/D)
    x1, x2, x3 = sp.symbols("x1 x2 x3", real=True)
    c, dd = sp.symbols("c D", positive=True)
    xs = (x1, x2, x3)
    r2 = x1**2 + x2**2 + x3**2
    pc = sp.exp(-c * sp.sqrt(1 + r2) / dd)
    drift = [c * xi / sp.sqrt(1 + r2) for xi in xs]  # f(ρ) ê = c x/√(1+ρ²)
    fp = sum(sp.diff(drift[i] * pc, xs[i]) + dd * sp.diff(pc, xs[i], 2) for i in range(3))
    assert sp.simplify(fp / pc) == 0
    assert sp.simplify(sp.integrate(c * u / sp.sqrt(1 + u**2), (u, 0, rho)) - c * (sp.sqrt(1 + rho**2) - 1)) == 0

    # 3. linear drift f = aρ, constant D: Gaussian, E ρ² = r D/a; the mean field's small-step
    #    per-coordinate variance is η q/(2a) with D = η q/2 — the same law
    a, r = sp.symbols("a r", positive=True)
    eta, q = sp.symbols("eta q", positive=True)
    w = sp.symbols("w", positive=True)  # w = ρ²

    def gauss(power):
        return sp.integrate(w ** (r / 2 - 1 + power) * sp.exp(-a * w / (2 * dd)), (w, 0, sp.oo))

    second = sp.gammasimp(gauss(1) / gauss(0))
    assert sp.simplify(second - r * dd / a) == 0
    assert sp.simplify((second / r).subs(dd, eta * q / 2) - eta * q / (2 * a)) == 0

    # 4. saturated drift f = C (normalised GD): p ∝ ρ^{r−1} e^{−ρ/θ}, θ = D/C
    cc, theta = sp.symbols("C theta", positive=True)
    assert sp.simplify(sp.integrate(cc / dd, (u, 0, rho)) - rho / (dd / cc)) == 0
    exact = _gamma_moment(2, r, theta)
    assert sp.simplify(exact - r * (r + 1) * theta**2) == 0
    #    mean field: γλ = C/ρ_rms, per-coordinate v = D/(γλ) = D ρ_rms/C, self-consistent ρ_rms² = r v
    rho_rms = sp.symbols("rho_rms", positive=True)
    sol = sp.solve(sp.Eq(rho_rms**2, r * dd * rho_rms / cc), rho_rms)
    assert len(sol) == 1 and sp.simplify(sol[0] ** 2 - r**2 * (dd / cc) ** 2) == 0
    assert sp.simplify(exact.subs(theta, dd / cc) / sol[0] ** 2 - (r + 1) / r) == 0

    # 5. unit-free form (x = m/m_MF, k directions): frozen drift g ≡ 1 → φ = k x²/2, E x² = 1;
    #    saturated g(u) = γ(u)/γ_MF = (C/u)/(C/1) = 1/u → φ = k x, E x² = (k+1)/k
    k, xv = sp.symbols("k x", positive=True)
    frozen = [sp.integrate(xv ** (k - 1 + j) * sp.exp(-k * xv**2 / 2), (xv, 0, sp.oo)) for j in (0, 2)]
    assert sp.simplify(sp.gammasimp(frozen[1] / frozen[0]) - 1) == 0
    assert sp.simplify(sp.integrate(k * (1 / u) * u, (u, 0, xv)) - k * xv) == 0
    assert sp.simplify(_gamma_moment(2, k, 1 / k) - (k + 1) / k) == 0

    # the participation ratio (Σw)²/Σw² of r equal weights is r
    wt = sp.symbols("w_t", positive=True)
    assert sp.simplify((r * wt) ** 2 / (r * wt**2) - r) == 0

    # 6. first order in the nonlinearity β, Gaussian zeroth order: ρ² = v χ²_k, E χ²ʲ known
    beta, v, a0, kap = sp.symbols("beta v a_0 kappa", positive=True)
    chi = {1: k, 2: k * (k + 2), 3: k * (k + 2) * (k + 4)}  # E χ², E χ⁴, E χ⁶
    rho0 = k * v

    def delta_a(power):
        return a0 * beta * (v ** (power + 1) * chi[power + 1] - rho0 * v**power * chi[power]) / rho0

    e_rho2_da = delta_a(1)  # E[ρ² δa], δa = a₀β(ρ² − ρ₀²)/ρ₀²
    assert sp.simplify(e_rho2_da - 2 * a0 * beta * v) == 0
    #    discrete: E ρ'² = E[((1 − ηa)² + η²κa²) ρ²] + k η² q; stationarity, linear in δa
    shift = sp.symbols("Delta")  # E_β ρ² − ρ₀²
    contraction = (1 - eta * a0) ** 2 + eta**2 * kap * a0**2
    d_contraction = sp.diff(((1 - eta * a) ** 2 + eta**2 * kap * a**2), a).subs(a, a0)
    q0 = sp.solve(sp.Eq(rho0, contraction * rho0 + k * eta**2 * q), q)[0]  # the mean-field fixed point
    stationary = sp.Eq(rho0 + shift, contraction * (rho0 + shift) + d_contraction * e_rho2_da + k * eta**2 * q0)
    disc_shift = sp.solve(stationary, shift)[0]
    h = eta * a0 * (1 + kap)
    w = DISCRETE_WEIGHT.subs(_h, h)
    assert sp.simplify(disc_shift - (-2 * beta / k) * w * rho0) == 0
    #    small step (Fokker–Planck, constant D = a₀ v): p ∝ ρ^{k−1} exp(−Φ/D), Φ = ∫ a(u) u du;
    #    first order: ΔE ρ² = −Cov(ρ², δΦ)/D with δΦ = a₀β(ρ⁴/4 − ρ₀²ρ²/2)/ρ₀²
    dd0 = a0 * v
    cov_r2_r4 = v**3 * (chi[3] - chi[1] * chi[2])
    var_r2 = v**2 * (chi[2] - chi[1] ** 2)
    cov = a0 * beta * (cov_r2_r4 / 4 - rho0 * var_r2 / 2) / rho0
    fp_shift = -cov / dd0
    assert sp.simplify(fp_shift - (-2 * beta / k) * rho0) == 0
    assert sp.limit(w, eta, 0) == 1
    #    diffusion nonlinearity only (a ≡ a₀, q = q₀(1 + β_D(ρ² − ρ₀²)/ρ₀²)): E q = q₀ to first order,
    #    so the exact identity E[ρ²(1 − contraction)] = k η² E q leaves E ρ² at ρ₀²
    assert sp.simplify(v * chi[1] - rho0) == 0
