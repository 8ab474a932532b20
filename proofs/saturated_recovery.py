"""Recovery from a large displacement under clipping: linear (saturated) then exponential.

Noise-free mean-field ODE of one eigen-direction, x = λ|e| the gradient norm, a = s√n, C = clip norm:

    dx/dt = −η λ γ(x) x,   γ(x) = C/√(x² + a²)   (fully clipped, large-n shrinkage).

Then t(x₀ → x₁) = [F(x₀) − F(x₁)]/(ηλC) with F(x) = √(x² + a²) − a·asinh(a/x): linear,
(x₀ − x₁)/(ηλC), for a = 0 (normalised GD: the error shrinks by ηC per step) and logarithmic,
a·ln(x₀/x₁)/(ηλC), for x ≪ a (exponential decay at rate ηλ·C/(s√n), slower than unclipped GD's ηλ
by √n/C·s). Backs dptheory.clipped_recovery.saturated_recovery_steps and recovery_time (re-exported
by dptheory.clipped_dynamics).
"""

from __future__ import annotations

import math

import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "dx/dt = −ηλCx/√(x²+a²) ⇒ t = [F(x₀) − F(x₁)]/(ηλC), F(x) = √(x²+a²) − a·asinh(a/x); "
    "a = 0: linear (x₀−x₁)/(ηλC); x ≪ a: a ln(x₀/x₁)/(ηλC)  [clipped_recovery.saturated_recovery_steps]"
)


_x, _a = sp.symbols("x a", positive=True)
PRIMITIVE = sp.sqrt(_x**2 + _a**2) - _a * sp.asinh(_a / _x)


def clipped_recovery_steps(lam: float, delta: float, eta: float, C: float, a: float, thr: float) -> float:
    """[F(x₀) − F(x₁)]/(ηλC), x₀ = λ|δ|, x₁ = x₀√thr, F = PRIMITIVE: one direction, always clipped (a ≥ C).

    The excess loss ½λδ²e^{−2λτ} falls to thr × its start when x = x₀ e^{−λτ} = x₀ √thr.
    """
    x0 = lam * abs(delta)
    x1 = x0 * math.sqrt(thr)
    big_f = sp.lambdify((_x, _a), PRIMITIVE, "math")
    return (big_f(x0, a) - big_f(x1, a)) / (eta * lam * C)


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipped_recovery.saturated_recovery_steps",
        closed_form=clipped_recovery_steps,
        symbols={
            "lam": (0.05, 2.0),
            "delta": (0.01, 100.0),
            "eta": (0.001, 1.0),
            "C": (0.01, 1.0),
            "a": (1.0, 50.0),
            "thr": (1e-6, 0.9),
        },
        arguments=lambda lam, delta, eta, C, a, thr: {
            "curvatures": [lam],
            "displacement": [delta],
            "lr": eta,
            "clip_norm": C,
            "noise_scale": a,
            "threshold": thr,
        },
        rtol=1e-10,
        note="the code finds τ* by Brent's method (xtol 1e-14) before the closed form; a ≥ C: always clipped",
    ),
]


def verify() -> None:
    x, a, eta, lam, c, x0, x1 = sp.symbols("x a eta lambda C x0 x1", positive=True)
    big_f = PRIMITIVE.subs({_x: x, _a: a})
    # dF/dx = √(x²+a²)/x = −ηλC dt/dx along the ODE
    assert sp.simplify(sp.diff(big_f, x) - sp.sqrt(x**2 + a**2) / x) == 0
    t_of = (big_f.subs(x, x0) - big_f.subs(x, x1)) / (eta * lam * c)
    # dt/dx1 = −1/(dx/dt) at x1: the time solves the ODE
    rate = eta * lam * c * x1 / sp.sqrt(x1**2 + a**2)
    assert sp.simplify(sp.diff(t_of, x1) + 1 / rate) == 0
    # a = 0: linear law
    assert sp.simplify(t_of.subs(a, 0) - (x0 - x1) / (eta * lam * c)) == 0
    # x ≪ a: F(x) = a − a ln(2a/x) + O(x²/a); so t → a ln(x0/x1)/(ηλC)
    eps = sp.symbols("epsilon", positive=True)
    small = big_f.subs(x, eps * a)
    lead = a - a * sp.log(2 / eps)
    assert sp.limit(small - lead, eps, 0) == 0
    # unclipped (γ = 1): dx/dt = −ηλx ⇒ t = ln(x0/x1)/(ηλ); its rate over the clipped one is a/C
    t_unclipped = sp.log(x0 / x1) / (eta * lam)
    t_clipped_tail = a * sp.log(x0 / x1) / (eta * lam * c)
    assert sp.simplify(t_clipped_tail / t_unclipped - a / c) == 0
    # discrete normalised GD along an eigen-direction: x' = x − ηλ C (exactly linear per step)
    e = sp.symbols("e", positive=True)
    step = e - eta * (c / (lam * e)) * lam * e  # e − η·(C/‖λe‖)·λe
    assert sp.simplify(lam * step - (lam * e - eta * lam * c)) == 0
