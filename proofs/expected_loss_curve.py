"""Mean-field loss curve of the clipped step (backs dptheory.clipped_recovery.expected_loss_curve).

Conditional on the error e, the clipped step moves coordinate i by −η(a_i e_i + ξ_i) with mean drift
a_i = γ(m) λ_i and update noise E[ξ_i | e] = 0, E[ξ_i² | e] = q_i (+ κ a_i² e_i² for Poisson batches,
κ = 1/B: the compound sum of N ~ Poisson(B) clipped gradients divided by B). Hence, exactly,

    E[e_i'² | e] = [(1 − η a_i)² + η² κ a_i²] e_i² + η² q_i,

and the mean-field recursion v_i(t+1) = R_i v_i(t) + η² q_i, R_i = (1 − ηa_i)² + η²κa_i², evaluates a_i
and q_i at the current root-mean-square gradient norm. With constant coefficients (unclipped modes)
it is exact and solves to

    v_i(t) = R_i^t v_i(0) + η² q_i (1 − R_i^t)/(1 − R_i),   E L(t) = ½ Σ_i λ_i v_i(t);

for deterministic clipped GD (s = 0, ν = 0) it is exact as well, and one eigen-direction with
λ|e| > C moves by exactly ηC per step: E L(t) = ½ λ (|e₀| − tηC)² while λ(|e₀| − tηC) ≥ C.
Checked here symbolically (conditional second moment, the solution of the recursion, the
deterministic step).
"""

from __future__ import annotations

import math

import sympy as sp

from dptheory.records import Basin, Optimizer
from proofs.links import CodeLink

STATEMENT = (
    "E[e'²|e] = [(1−ηa)² + η²κa²]e² + η²q; v(t) = R^t v(0) + η²q(1−R^t)/(1−R); E L(t) = ½Σλ_i v_i(t); "
    "deterministic clipped GD: |e| falls by ηC per step while λ|e| > C  [clipped_recovery.expected_loss_curve]"
)


def unclipped_loss_curve(t: int, eta: float, lam1: float, lam2: float, s: float, B: int, nu: float, e0: float) -> float:
    """E L(t) of an unclipped fixed-batch step (a_i = λ_i, q = s²/B + ν²/B², κ = 0) from e_i(0) = e0."""
    q = s * s / B + nu * nu / B**2
    total = 0.0
    for lam in (lam1, lam2):
        r = (1.0 - eta * lam) ** 2
        rt = r**t
        total += 0.5 * lam * (rt * e0 * e0 + eta * eta * q * (t if r == 1.0 else (1.0 - rt) / (1.0 - r)))
    return total


def clipped_deterministic_loss(t: int, eta: float, lam: float, C: float, e0: float) -> float:
    """½ λ (|e₀| − tηC)²: deterministic clipped GD on one direction while λ|e| stays above C."""
    return 0.5 * lam * (abs(e0) - t * eta * C) ** 2


def last(curve) -> float:
    """The last entry of a loss curve: E L(t) at t = ``steps``."""
    return float(curve[-1])


def _unclipped_args(t, eta, lam1, lam2, s, B, nu, e0):
    return {
        "basin": Basin(dim=8, curvatures=(lam1, lam2), sample_std=s),
        "optimizer": Optimizer(lr=eta, batch_size=B, clip_norm=1.0, noise_multiplier=nu, mode="noise"),
        "steps": t,
        "init_error": e0,
    }


def _clipped_args(t, eta, lam, C, e0):
    return {
        "basin": Basin(dim=1, curvatures=(lam,), sample_std=0.0),
        "optimizer": Optimizer(lr=eta, batch_size=1, clip_norm=C, mode="clip"),
        "steps": t,
        "init_error": e0,
    }


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipped_recovery.expected_loss_curve",
        closed_form=unclipped_loss_curve,
        symbols={
            "t": (0, 200),
            "eta": (0.01, 1.0),
            "lam1": (0.05, 1.5),
            "lam2": (0.05, 1.5),
            "s": (0.0, 3.0),
            "B": (1, 256),
            "nu": (0.0, 5.0),
            "e0": (0.0, 10.0),
        },
        integer=frozenset({"t", "B"}),
        arguments=_unclipped_args,
        output=last,
        rtol=1e-11,
        atol=1e-300,
        note="the code iterates the recursion t times; the closed form uses R^t",
    ),
    CodeLink(
        function="dptheory.clipped_recovery.expected_loss_curve",
        closed_form=clipped_deterministic_loss,
        symbols={"t": (0, 100), "eta": (0.01, 0.5), "lam": (0.5, 2.0), "C": (0.01, 0.1), "e0": (10.0, 100.0)},
        integer=frozenset({"t"}),
        arguments=_clipped_args,
        output=last,
        rtol=1e-10,
        note="deterministic clipped GD (s = 0, ν = 0), iterated t times by the code",
    ),
]


def verify() -> None:
    eta, a, q, kap, e = sp.symbols("eta a q kappa e", real=True)
    xi = sp.symbols("xi", real=True)
    # conditional second moment: e' = (1 − ηa)e − ηξ, E ξ = 0, E ξ² = q + κ a² e² (compound Poisson)
    e_next = (1 - eta * a) * e - eta * xi
    expanded = sp.expand(e_next**2)
    mean_sq = expanded.coeff(xi, 0) + expanded.coeff(xi, 2) * (q + kap * a**2 * e**2)  # E ξ = 0 kills ξ¹
    assert sp.simplify(mean_sq - (((1 - eta * a) ** 2 + eta**2 * kap * a**2) * e**2 + eta**2 * q)) == 0
    # the recursion's solution, by substitution (t symbolic) and at R = 1 (random walk)
    big_r, v0, t = sp.symbols("R v0 t", positive=True)
    sol = big_r**t * v0 + eta**2 * q * (1 - big_r**t) / (1 - big_r)
    assert sp.simplify(sol.subs(t, t + 1) - (big_r * sol + eta**2 * q)) == 0
    assert sp.simplify(sol.subs(t, 0) - v0) == 0
    assert sp.limit(sol, big_r, 1) == v0 + eta**2 * q * t
    # deterministic clipped GD on one direction: e' = e − η (C/(λe)) λ e = e − ηC while λe > C
    lam, c, e_pos = sp.symbols("lambda C e_pos", positive=True)
    step = e_pos - eta * (c / (lam * e_pos)) * lam * e_pos
    assert sp.simplify(step - (e_pos - eta * c)) == 0
    # and the exported curve at t = 3 matches three explicit steps
    ee, vals = 20.0, (0.1, 1.5, 0.05)
    for _ in range(3):
        ee -= vals[0] * (vals[2] / (vals[1] * ee)) * vals[1] * ee
    assert math.isclose(
        clipped_deterministic_loss(3, vals[0], vals[1], vals[2], 20.0), 0.5 * vals[1] * ee * ee, rel_tol=1e-14
    )
