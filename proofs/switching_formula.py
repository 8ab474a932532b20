"""Exact two-phase composition of the moment recursions (backs ``dptheory.switching``).

Phase b for s steps, then phase a: v(t) = ρ_b^{2t} m0 + c_b G_b(t) for t ≤ s and
v(t) = ρ_a^{2(t−s)} v(s) + c_a G_a(t − s) for t ≥ s, with c = η²τ², G(t) = (1 − ρ^{2t})/(1 − ρ²).
We check symbolically that

1. the composed formula obeys the phase-a recursion v(t+1) = ρ_a² v(t) + c_a for every t ≥ s and
   equals the phase-b solution at t = s (so it is the unique solution of the switched recursion);
2. with identical phases it collapses to the single-phase formula (ρ^{2(T−s)} G(s) + G(T−s) = G(T));
3. the theorem used by the tests: with equal ρ and c_b ≤ c_a,
   v(T; s) = [ρ^{2T} m0 + c_a G(T)] − (c_a − c_b) ρ^{2(T−s)} G(s), and
   v(T; s+1) − v(T; s) = −(c_a − c_b) ρ^{2(T−s−1)} ≤ 0: a later switch to the noisier phase never
   hurts; the early phase's weight ρ^{2(T−s)} G(s) decays geometrically with the time to the end;
4. memory: v(T) − v_a∞ = ρ_a^{2h} (v(T − h) − v_a∞) for a single phase, v_a∞ = c_a/(1 − ρ_a²).
"""

from __future__ import annotations

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "v(T) = rho_a^(2(T-s)) [rho_b^(2s) m0 + c_b G_b(s)] + c_a G_a(T-s); equal phases => single phase; "
    "equal drift, c_b <= c_a => v(T; s) non-increasing in s  [switching.switched_moments, switch_sweep]"
)


def _g(rho, t):
    return (1 - rho ** (2 * t)) / (1 - rho**2)


def verify() -> None:
    t, s, T, h = sp.symbols("t s T h", integer=True, nonnegative=True)
    ra, rb = sp.symbols("rho_a rho_b", positive=True)  # ρ² enters only; the sign of ρ is irrelevant
    ca, cb, m0 = sp.symbols("c_a c_b m0", positive=True)

    vb = rb ** (2 * t) * m0 + cb * _g(rb, t)
    vs = vb.subs(t, s)
    va = ra ** (2 * (t - s)) * vs + ca * _g(ra, t - s)

    # 1. phase-a recursion after the switch, continuity at the switch
    assert sp.simplify(va.subs(t, t + 1) - ra**2 * va - ca) == 0, "after-phase recursion"
    assert sp.simplify(va.subs(t, s) - vs) == 0, "continuity at the switch"
    assert sp.simplify(vb.subs(t, t + 1) - rb**2 * vb - cb) == 0, "before-phase recursion"

    # 2. identical phases collapse to one phase
    same = va.subs({rb: ra, cb: ca}).subs(t, T)
    single = ra ** (2 * T) * m0 + ca * _g(ra, T)
    assert sp.simplify(sp.powsimp(sp.expand(same - single), force=True)) == 0, "identical phases"

    # 3. equal drift, noise switched from c_b to c_a: closed form of the deficit and its monotonicity
    rho = ra
    v_T = va.subs({rb: rho}).subs(t, T)
    deficit_form = rho ** (2 * T) * m0 + ca * _g(rho, T) - (ca - cb) * rho ** (2 * (T - s)) * _g(rho, s)
    assert sp.simplify(sp.powsimp(sp.expand(v_T - deficit_form), force=True)) == 0, "deficit form"
    step = deficit_form.subs(s, s + 1) - deficit_form
    assert sp.simplify(sp.powsimp(sp.expand(step + (ca - cb) * rho ** (2 * (T - s - 1))), force=True)) == 0

    # 4. memory of a single phase: the excess over the stationary value is damped by ρ^{2h}
    vinf = ca / (1 - ra**2)
    single_t = ra ** (2 * t) * m0 + ca * _g(ra, t)
    lhs = single_t.subs(t, T) - vinf
    rhs = ra ** (2 * h) * (single_t.subs(t, T - h) - vinf)
    assert sp.simplify(sp.powsimp(sp.expand(lhs - rhs), force=True)) == 0, "memory identity"


# ---------------------------------------------------------------------------------------------
# the closed form, wired to the code (proofs.links; tests/test_proof_code_links.py)


def switched_second_moment(*, total, switch, m0, eta_a, a_a, tau_a, eta_b, a_b, tau_b):
    """v(T) = ρ_a^{2(T−s)} [ρ_b^{2s} m0 + c_b G_b(s)] + c_a G_a(T−s), c = η²τ², ρ = 1 − ηa, G(t) = (1 − ρ^{2t})/(1 − ρ²)."""
    ra, rb = 1 - eta_a * a_a, 1 - eta_b * a_b
    ca, cb = eta_a**2 * tau_a**2, eta_b**2 * tau_b**2
    vs = rb ** (2 * switch) * m0 + cb * _g(rb, switch)
    return ra ** (2 * (total - switch)) * vs + ca * _g(ra, total - switch)


def _switch_args(total, switch, m0, eta_a, a_a, tau_a, eta_b, a_b, tau_b):
    from dptheory.records import LinearDynamics

    return {
        "before": LinearDynamics(lr=eta_b, drift=(a_b,), noise_var=(tau_b**2,)),
        "after": LinearDynamics(lr=eta_a, drift=(a_a,), noise_var=(tau_a**2,)),
        "switch_step": min(switch, total),
        "total_steps": total,
        "init_error": m0**0.5,
    }


CODE_LINKS = [
    CodeLink(
        function="dptheory.switching.switched_moments",
        closed_form=lambda **v: switched_second_moment(**{**v, "switch": min(v["switch"], v["total"])}),
        symbols={
            "total": (0, 400),
            "switch": (0, 400),
            "m0": (0.0, 25.0),
            "eta_a": (1e-3, 1.0),
            "a_a": (0.01, 1.9),
            "tau_a": (0.0, 3.0),
            "eta_b": (1e-3, 1.0),
            "a_b": (0.01, 1.9),
            "tau_b": (0.0, 3.0),
        },
        integer=frozenset({"total", "switch"}),
        valid=lambda eta_a, a_a, eta_b, a_b, **_: eta_a * a_a < 1.99 and eta_b * a_b < 1.99,
        arguments=_switch_args,
        output=lambda m: float(m.second[-1, 0]),
        rtol=1e-10,
        atol=1e-300,
        note="ρ^{2t} by exp(t log1p(−u)) in the code; geometric sums agree to ~1e-12 relative",
    )
]
