"""Symmetric noise keeps the clipped mean a descent direction (backs
``clipping_bias.clipped_gradient_inner_product``).

Claim: for all x, ξ and C > 0,  ⟨clip_C(x + ξ) + clip_C(x − ξ), x⟩ ≥ 0.  Hence if ξ and −ξ have the
same law, ⟨E clip_C(∇f + ξ), ∇f⟩ ≥ 0 (cf. Chen, Wu & Hong 2020, arXiv 2006.15429v2: symmetric noise ⇒ convergence).

Proof. Swap ξ ↔ −ξ so that a = ⟨x, ξ⟩ ≥ 0. Write G = ‖x‖², X = ‖ξ‖², n± = ‖x ± ξ‖,
φ± = min(1, C/n±); the sum is φ₊(G + a) + φ₋(G − a). If a ≤ G both terms are ≥ 0. If a > G:
(i) n₊² − n₋² = 4a ≥ 0, so φ₊n₊ = min(n₊, C) ≥ min(n₋, C) = φ₋n₋;
(ii) (G + a)² n₋² − (a − G)² n₊² = 4a(GX − a²) ≥ 0 by Cauchy–Schwarz, so (G+a)/n₊ ≥ (a−G)/n₋;
multiplying (i) and (ii): φ₊(G + a) ≥ φ₋(a − G). ∎  Verified: the two polynomial identities.
"""

from __future__ import annotations

import sympy as sp

STATEMENT = "<clip_C(x+xi) + clip_C(x-xi), x> >= 0 for all x, xi  [clipping_bias.clipped_gradient_inner_product]"


def verify() -> None:
    G, X, a = sp.symbols("G X a", real=True)
    n_plus_sq = G + X + 2 * a
    n_minus_sq = G + X - 2 * a
    assert sp.expand(n_plus_sq - n_minus_sq - 4 * a) == 0, "n₊² − n₋² = 4a"
    lhs = (G + a) ** 2 * n_minus_sq - (a - G) ** 2 * n_plus_sq
    assert sp.expand(lhs - 4 * a * (G * X - a**2)) == 0, "(G+a)² n₋² − (a−G)² n₊² = 4a(GX − a²)"
    # the norms come from ‖x ± ξ‖² = ‖x‖² ± 2⟨x, ξ⟩ + ‖ξ‖² in explicit coordinates (d = 3)
    xs, zs = sp.symbols("x1:4", real=True), sp.symbols("z1:4", real=True)
    sq = lambda v: sum(t**2 for t in v)  # noqa: E731
    plus = [p + q for p, q in zip(xs, zs)]
    dot = sum(p * q for p, q in zip(xs, zs))
    assert sp.expand(sq(plus) - (sq(xs) + 2 * dot + sq(zs))) == 0, "‖x+ξ‖² expansion"
