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

from proofs.links import CodeLink

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


# ---------------------------------------------------------------------------------------------
# the closed form, wired to the code (proofs.links; tests/test_proof_code_links.py)


def pair_inner_product(*, x1, x2, x3, z1, z2, z3, C):
    """½ ⟨clip_C(x + ξ) + clip_C(x − ξ), x⟩ = ½[φ₊(G + a) + φ₋(G − a)] in the proof's variables
    G = ‖x‖², X = ‖ξ‖², a = ⟨x, ξ⟩, n± = √(G + X ± 2a), φ± = min(1, C/n±)."""
    g = x1 * x1 + x2 * x2 + x3 * x3
    xx = z1 * z1 + z2 * z2 + z3 * z3
    a = x1 * z1 + x2 * z2 + x3 * z3
    n_plus, n_minus = max(g + xx + 2 * a, 0.0) ** 0.5, max(g + xx - 2 * a, 0.0) ** 0.5
    phi_plus = 1.0 if n_plus <= C else C / n_plus
    phi_minus = 1.0 if n_minus <= C else C / n_minus
    return 0.5 * (phi_plus * (g + a) + phi_minus * (g - a))


CODE_LINKS = [
    CodeLink(
        function="dptheory.clipping_bias.clipped_gradient_inner_product",
        closed_form=pair_inner_product,
        symbols={
            **{f"x{i}": (-3.0, 3.0) for i in (1, 2, 3)},
            **{f"z{i}": (-5.0, 5.0) for i in (1, 2, 3)},
            "C": (0.05, 5.0),
        },
        arguments=lambda x1, x2, x3, z1, z2, z3, C: {
            "grad": [x1, x2, x3],
            "noise": [[z1, z2, z3]],
            "clip_norm": C,
            "symmetrize": True,
        },
        rtol=1e-12,
        atol=1e-12,
    )
]
