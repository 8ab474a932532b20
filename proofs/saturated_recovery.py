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

import sympy as sp

STATEMENT = (
    "dx/dt = −ηλCx/√(x²+a²) ⇒ t = [F(x₀) − F(x₁)]/(ηλC), F(x) = √(x²+a²) − a·asinh(a/x); "
    "a = 0: linear (x₀−x₁)/(ηλC); x ≪ a: a ln(x₀/x₁)/(ηλC)  [clipped_recovery.saturated_recovery_steps]"
)


def verify() -> None:
    x, a, eta, lam, c, x0, x1 = sp.symbols("x a eta lambda C x0 x1", positive=True)
    big_f = sp.sqrt(x**2 + a**2) - a * sp.asinh(a / x)
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
