"""Closed-form moments of one direction of DP-SGD near w* (backs ``dptheory.spectral_moments``).

Per direction e(t+1) = ρ e(t) − η f − η ε(t), ρ = 1 − ηa, E[ε | e] = 0,
E[ε² | e] = τ² + κ (f + a e)² (κ: the Poisson mean part), e(0) = 0. Then

    M1(t+1) = ρ M1 − η f,
    M2(t+1) = ρ² M2 − 2ρηf M1 + η²f² + η²[τ² + κ(f² + 2af M1 + a² M2)],

and with G(x, t) = (1 − x^t)/(1 − x), R = ρ² + η²κa², S(t) = (R^t − ρ^{2t})/(R − ρ²):

1. M1 = −η f G(ρ, t) = −(1 − ρ^t) b, b = f/a;
2. Var = M2 − M1² = η²[κ f² S(t) + τ² G(R, t)] solves the M2 recursion (symbolic t);
3. κ = 0: Var = v(1 − ρ^{2t}), v = ητ²/(a(2 − ηa)); a → 0: M1 = −ηft, Var = η²(κf² + τ²)t;
4. t → ∞ (R < 1): M1 → −b, Var → η²τ²/(1 − R) = ητ²/(a(2 − ηa(1 + κ)));
5. displacement δ at stationarity: x = e + b has E x = ρ^tδ, E x² = v + R^tδ², so
   E e² − (b² + v) = R^tδ² − 2bρ^tδ;
6. the state z(t) = (1, G(ρ,t), G(ρ,t)², S(t), R^t, G(R,t)) obeys z(t+1) = A z(t) for the matrix of
   ``spectral_moments``, and the window sum Σ_{t0≤t<t1} z(t) equals the upper-right block of
   [[A, I], [0, I]]^{t1−t0} applied to z(t0) (checked against the direct sum, numerically).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "E e(t) = -eta f G(rho,t), Var e(t) = eta^2 [kappa f^2 S(t) + tau^2 G(R,t)], R = rho^2 + eta^2 kappa a^2  "
    "[spectral_moments.moment_curves, window_moments]"
)


def mean_closed_form(t, lr, drift, force):
    """E e(t) = −η f (1 − ρ^t)/(1 − ρ), ρ = 1 − ηa."""
    rho = 1 - lr * drift
    return -lr * force * (1 - rho**t) / (1 - rho)


def variance_closed_form(t, lr, drift, force, noise_var, poisson_mult):
    """Var e(t) = η²[κ f² (R^t − ρ^{2t})/(R − ρ²) + τ² (1 − R^t)/(1 − R)]."""
    rho = 1 - lr * drift
    big_r = rho**2 + lr**2 * poisson_mult * drift**2
    mixed = (big_r**t - rho ** (2 * t)) / (big_r - rho**2)
    return lr**2 * (poisson_mult * force**2 * mixed + noise_var * (1 - big_r**t) / (1 - big_r))


def _zero(expr, what: str) -> None:
    r = sp.simplify(sp.powsimp(sp.expand(expr), force=True))
    assert r == 0, f"{what}: residual {r}"


def verify() -> None:
    t = sp.symbols("t", integer=True, nonnegative=True)
    eta, a, f, tau, kap, delta = sp.symbols("eta a f tau kappa delta", positive=True)
    rho = 1 - eta * a
    big_r = rho**2 + eta**2 * kap * a**2
    m1 = mean_closed_form(t, eta, a, f)
    var = variance_closed_form(t, eta, a, f, tau**2, kap)
    m2 = var + m1**2
    # 1–2. the closed forms obey the recursions and start at 0
    _zero(m1.subs(t, t + 1) - (rho * m1 - eta * f), "mean recursion")
    rhs = (
        rho**2 * m2
        - 2 * rho * eta * f * m1
        + eta**2 * f**2
        + eta**2 * (tau**2 + kap * (f**2 + 2 * a * f * m1 + a**2 * m2))
    )
    _zero(m2.subs(t, t + 1) - rhs, "second-moment recursion")
    _zero(m1.subs(t, 0), "mean starts at 0")
    _zero(var.subs(t, 0), "variance starts at 0")
    _zero(m1 + (1 - rho**t) * f / a, "mean = -(1 - rho^t) b")
    # 3. fixed batches and the random-walk limit
    v = eta * tau**2 / (a * (2 - eta * a))
    _zero(var.subs(kap, 0) - v * (1 - rho ** (2 * t)), "kappa = 0: v (1 - rho^2t)")
    for tn in range(0, 5):
        _zero(sp.limit(m1.subs(t, tn), a, 0) + eta * f * tn, f"a -> 0 mean, t={tn}")
        _zero(sp.limit(var.subs(t, tn), a, 0) - eta**2 * (kap * f**2 + tau**2) * tn, f"a -> 0 variance, t={tn}")
    # 4. stationary variance
    stat = eta**2 * tau**2 / (1 - big_r)
    _zero(stat - eta * tau**2 / (a * (2 - eta * a * (1 + kap))), "stationary variance")
    # 5. recovery: x = e + b with E x(0) = δ, E x(0)² = v∞ + δ²
    b = f / a
    x1 = rho**t * delta
    x2 = big_r**t * (stat + delta**2) + stat * (1 - big_r**t)  # x² recursion: x' = ρx − ηε, E ε² = τ² + κa²x²
    _zero(x2.subs(t, t + 1) - (big_r * x2 + eta**2 * tau**2), "x second moment recursion")
    _zero((x2 - 2 * b * x1 + b**2) - (b**2 + stat) - (big_r**t * delta**2 - 2 * b * rho**t * delta), "recovery excess")
    # 6. the transition matrix of spectral_moments and the block window sum (numerically)
    from dptheory.spectral_moments import window_moments

    rng = np.random.default_rng(1)
    for _ in range(5):
        eta_n, a_n, f_n, tau2_n, kap_n = (
            0.3,
            rng.uniform(0.0, 3.0),
            rng.normal(),
            rng.uniform(0.1, 2.0),
            rng.uniform(0, 0.2),
        )
        t0, t1 = int(rng.integers(0, 30)), int(rng.integers(31, 80))
        ts = np.arange(t0, t1)
        rho_n = 1 - eta_n * a_n
        r_n = rho_n**2 + eta_n**2 * kap_n * a_n**2
        g = np.array([sum(rho_n**s for s in range(tt)) for tt in ts])
        s_mix = np.array([sum(r_n**s * rho_n ** (2 * (tt - 1 - s)) for s in range(tt)) for tt in ts])
        g_r = np.array([sum(r_n**s for s in range(tt)) for tt in ts])
        direct_b2 = np.mean(eta_n**2 * f_n**2 * g**2)
        direct_v = np.mean(eta_n**2 * (kap_n * f_n**2 * s_mix + tau2_n * g_r))
        b2, vv = window_moments(
            lr=eta_n,
            drift=np.array([a_n]),
            force=np.array([f_n]),
            noise_var=np.array([tau2_n]),
            poisson_mult=kap_n,
            start=t0,
            stop=t1,
        )
        assert np.isclose(b2[0], direct_b2, rtol=1e-10) and np.isclose(vv[0], direct_v, rtol=1e-10), "window sum"


# ---------------------------------------------------------------------------------------------
# the closed forms, wired to the code (proofs.links; tests/test_proof_code_links.py)

_TRANSIENT = {
    "t": (0, 5000),
    "lr": (1e-3, 1.0),
    "drift": (1e-3, 1.5),
    "force": (-2.0, 2.0),
    "noise_var": (0.0, 4.0),
    "poisson_mult": (0.0, 0.2),
}
# κ is drawn from [0, 0.2]; hypothesis includes the endpoint 0 (the κ = 0 limit).


def _curve_args(t, lr, drift, force, noise_var, poisson_mult):
    return {
        "lr": lr,
        "drift": np.array([drift]),
        "force": np.array([force]),
        "noise_var": np.array([noise_var]),
        "poisson_mult": poisson_mult,
        "steps": np.array([t]),
    }


def _variance_reference(t, lr, drift, force, noise_var, poisson_mult):
    """Var e(t); at κ = 0 the limit v(1 − ρ^{2t}) of item 3 (the general form is 0/0 there)."""
    if poisson_mult == 0.0:
        rho = 1 - lr * drift
        return lr * noise_var / (drift * (2 - lr * drift)) * (1 - rho ** (2 * t))
    return variance_closed_form(t, lr, drift, force, noise_var, poisson_mult)


def _stable(lr, drift, poisson_mult, **_):
    """A stationary direction, and κ either 0 or large enough that R − ρ² = η²κa² does not cancel here."""
    rho = 1 - lr * drift
    gap = lr * lr * poisson_mult * drift * drift
    return rho * rho + gap < 0.999 and (poisson_mult == 0.0 or gap >= 1e-6)


CODE_LINKS = [
    CodeLink(
        function="dptheory.spectral_moments.moment_curves",
        closed_form=lambda t, lr, drift, force, noise_var, poisson_mult: mean_closed_form(t, lr, drift, force),
        symbols=_TRANSIENT,
        integer=frozenset({"t"}),
        valid=_stable,
        arguments=_curve_args,
        output=lambda mv: float(mv[0][0, 0]),
        rtol=1e-10,
        atol=1e-14,
        note="the code evaluates the geometric sums through expm1/log1p (no cancellation for slow directions)",
    ),
    CodeLink(
        function="dptheory.spectral_moments.moment_curves",
        closed_form=_variance_reference,
        symbols=_TRANSIENT,
        integer=frozenset({"t"}),
        valid=_stable,
        arguments=_curve_args,
        output=lambda mv: float(mv[1][0, 0]),
        rtol=1e-9,
        atol=1e-14,
        note="S(t) = (R^t − ρ^{2t})/(R − ρ²) cancels when R ≈ ρ² in the plain form used here",
    ),
]
