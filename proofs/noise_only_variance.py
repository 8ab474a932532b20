"""Exact moments of the noisy linear recursion (backs ``dptheory.quadratic.noise_only_dynamics``,
``error_moments``, ``flat_error_sq`` and ``recovery_time``).

Per direction, e(t+1) = ρ e(t) + η τ ξ(t), ρ = 1 − η a, ξ(t) ~ N(0, 1) independent of e(t). Then
E e(t+1) = ρ E e(t) and E e(t+1)² = ρ² E e(t)² + η² τ² (the cross term has mean 0). We

1. derive the update-noise variance of one unclipped step with a fixed batch of B samples:
   Var[(1/B)(s Σ_j ζ_j + ν ξ)] = s²/B + ν²/B² (expectation over independent N(0, 1) variables,
   moments from sympy.stats, B = 1 … 6; and the general-B sum of independent variances);
2. solve both recurrences with ``rsolve`` and check the closed forms
   E e(t) = ρ^t e0,  E e(t)² = ρ^{2t} m0 + η²τ² (1 − ρ^{2t})/(1 − ρ²)
   = ρ^{2t} m0 + ητ²(1 − ρ^{2t})/(a(2 − ηa)), which satisfy the recursion and the initial value;
3. take a → 0: the random walk m0 + η²τ² t (flat directions, times d − r for the squared norm);
4. recovery: from the stationary variance v plus a displacement δ, E e(t)² = v + ρ^{2t} δ².
"""

from __future__ import annotations

import sympy as sp
from sympy import stats

from proofs.links import CodeLink

STATEMENT = (
    "E e(t)^2 = rho^(2t) m0 + eta tau^2 (1 - rho^(2t)) / (a (2 - eta a)), rho = 1 - eta a; "
    "tau^2 = s^2/B + nu^2/B^2  [quadratic.error_moments, noise_only_dynamics]"
)


def _check_zero(expr, what: str) -> None:
    assert sp.simplify(expr) == 0, f"{what}: residual {sp.simplify(expr)}"


def verify() -> None:
    t = sp.symbols("t", integer=True, nonnegative=True)
    eta, a, tau, m0, e0, s, nu = sp.symbols("eta a tau m0 e0 s nu", positive=True)
    rho = sp.symbols("rho", real=True)
    m = sp.Function("m")

    # 1. update-noise variance of one unclipped step, fixed batch of B samples
    normal = stats.Normal("X", 0, 1)
    moment = {p: stats.E(normal**p) for p in range(3)}  # 1, 0, 1

    def expect(expr, xs):  # E of a polynomial in independent N(0, 1) variables xs
        total = sp.Integer(0)
        for powers, coeff in sp.Poly(sp.expand(expr), *xs).terms():
            total += coeff * sp.Mul(*(moment[p] for p in powers))
        return total

    for b in range(1, 7):
        xs = sp.symbols(f"z0:{b + 1}")  # ζ_1 … ζ_B and ξ
        noise = (s * sum(xs[:b]) + nu * xs[b]) / b
        var = expect(noise**2, xs) - expect(noise, xs) ** 2
        _check_zero(var - (s**2 / b + nu**2 / b**2), f"noise variance, B={b}")
    bsym = sp.symbols("B", positive=True, integer=True)
    j = sp.symbols("j", integer=True)
    var_sum = sp.Sum((s / bsym) ** 2, (j, 1, bsym)).doit() + (nu / bsym) ** 2  # independent terms add
    _check_zero(var_sum - (s**2 / bsym + nu**2 / bsym**2), "noise variance, symbolic B")

    # 2a. mean recursion
    mean = sp.rsolve(m(t + 1) - rho * m(t), m(t), {m(0): e0})
    _check_zero(mean - rho**t * e0, "mean closed form")

    # 2b. second-moment recursion, solved by rsolve, against the closed form
    sol = sp.rsolve(m(t + 1) - rho**2 * m(t) - eta**2 * tau**2, m(t), {m(0): m0})
    closed = rho ** (2 * t) * m0 + eta**2 * tau**2 * (1 - rho ** (2 * t)) / (1 - rho**2)
    _check_zero(sol - closed, "rsolve vs closed form")
    _check_zero(closed.subs(t, t + 1) - rho**2 * closed - eta**2 * tau**2, "closed form obeys recursion")
    _check_zero(closed.subs(t, 0) - m0, "closed form initial value")
    # the form used in dptheory (1 − ρ² = ηa(2 − ηa))
    q = 1 - eta * a
    code_form = q ** (2 * t) * m0 + eta * tau**2 * (1 - q ** (2 * t)) / (a * (2 - eta * a))
    _check_zero(closed.subs(rho, q) - code_form, "closed form in terms of a")
    _check_zero(1 - q**2 - eta * a * (2 - eta * a), "u = 1 - rho^2 = eta a (2 - eta a)")

    # 3. random walk limit a → 0 (flat directions); the squared norm over d − r of them adds up
    _check_zero(sp.limit(code_form, a, 0) - (m0 + eta**2 * tau**2 * t), "random walk limit")
    # the exported closed forms are the ones just derived
    _check_zero(code_form.subs(m0, e0**2) - SECOND_MOMENT, "exported second moment")
    _check_zero(var_sum - UPDATE_NOISE_VAR.subs(_b, bsym), "exported update-noise variance")

    # 4. recovery: stationary variance v plus displacement δ decays back as v + ρ^{2t} δ²
    delta = sp.symbols("delta", real=True)
    v = eta**2 * tau**2 / (1 - rho**2)
    after = closed.subs(m0, v + delta**2)
    _check_zero(after - (v + rho ** (2 * t) * delta**2), "recovery excess")


# ---------------------------------------------------------------------------------------------
# the closed forms, wired to the code (proofs.links; tests/test_proof_code_links.py)

_t = sp.symbols("t", integer=True, nonnegative=True)
_eta, _a, _tau, _e0, _s, _nu, _b = sp.symbols("eta a tau e0 s nu B", positive=True)
_rho = 1 - _eta * _a
SECOND_MOMENT = _rho ** (2 * _t) * _e0**2 + _eta * _tau**2 * (1 - _rho ** (2 * _t)) / (_a * (2 - _eta * _a))
UPDATE_NOISE_VAR = _s**2 / _b + _nu**2 / _b**2  # τ² of one unclipped step (fixed batch of B samples)
second_moment = sp.lambdify((_t, _eta, _a, _tau, _e0), SECOND_MOMENT, "math")
update_noise_var = sp.lambdify((_s, _nu, _b), UPDATE_NOISE_VAR, "math")


def _records():
    from dptheory.records import Basin, LinearDynamics, Optimizer

    return Basin, LinearDynamics, Optimizer


CODE_LINKS = [
    CodeLink(
        function="dptheory.quadratic.error_moments",
        closed_form=lambda t, eta, a, tau, e0: second_moment(t, eta, a, tau, e0),
        symbols={"t": (0, 300), "eta": (1e-3, 1.0), "a": (0.01, 1.9), "tau": (0.0, 3.0), "e0": (-5.0, 5.0)},
        integer=frozenset({"t"}),
        valid=lambda t, eta, a, **_: eta * a < 1.99,
        arguments=lambda t, eta, a, tau, e0: {
            "dynamics": _records()[1](lr=eta, drift=(a,), noise_var=(tau**2,)),
            "init_error": e0,
            "steps": [t],
        },
        output=lambda m: float(m.second[0, 0]),
        rtol=1e-11,
        note="ρ^{2t} by exp(t log1p(−u)) in the code, by repeated powers here",
    ),
    CodeLink(
        function="dptheory.quadratic.noise_only_dynamics",
        closed_form=lambda s, sigma, c_ref, batch, lam: update_noise_var(s, sigma * c_ref, batch),
        symbols={"s": (0.0, 5.0), "sigma": (0.0, 5.0), "c_ref": (0.1, 10.0), "batch": (1, 512), "lam": (0.1, 2.0)},
        integer=frozenset({"batch"}),
        arguments=lambda s, sigma, c_ref, batch, lam: {
            "basin": _records()[0](dim=7, curvatures=(lam,), sample_std=s),
            "optimizer": _records()[2](
                lr=0.1, batch_size=batch, clip_norm=1.0, noise_multiplier=sigma, mode="noise", ref_clip_norm=c_ref
            ),
        },
        output=lambda dyn: float(dyn.noise_var[0]),
    ),
    CodeLink(
        function="dptheory.quadratic.flat_error_sq",
        closed_form=lambda t, eta, tau, f0, flat: f0 + flat * eta**2 * tau**2 * t,  # the a → 0 random walk
        symbols={"t": (0, 10_000), "eta": (1e-3, 1.0), "tau": (0.0, 3.0), "f0": (0.0, 10.0), "flat": (1, 10**6)},
        integer=frozenset({"t", "flat"}),
        arguments=lambda t, eta, tau, f0, flat: {
            "dynamics": _records()[1](lr=eta, drift=(1.0,), noise_var=(0.0,), flat_dim=flat, flat_noise_var=tau**2),
            "init_flat_sq": f0,
            "steps": [t],
        },
        output=lambda v: float(v[0]),
    ),
]
