"""Magnitude pruning as a constrained quadratic: bias by the Schur complement, plus a variance term.

With pruned weights fixed at w_P = 0, the loss L(w) = ½ (w − w*)ᵀ H (w − w*) minimised over the
kept weights w_K is ½ w*_Pᵀ (H_PP − H_PK H_KK⁻¹ H_KP) w*_P (H_KK⁺ when singular), attained at
w_K = w*_K + H_KK⁻¹ H_KP w*_P, and every w with w_P = 0 satisfies the exact split

    L(w) = bias + ½ (w_K − w_K^opt)ᵀ H_KK (w_K − w_K^opt),

so the DP-SGD error of the pruned problem is bias + the stationary loss of the restricted quadratic
with Hessian H_KK. Checked on a symbolic 4×4 symmetric H (2 kept, 2 pruned), on a rank-one H with a
singular H_KK, and the aligned case ½ Σ_{pruned j} λ_j w*_j². Backs dptheory.pruning.pruning_bias.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "min_{w_K} L(w_K, w_P = 0) = ½ w*_Pᵀ(H_PP − H_PK H_KK⁻¹ H_KP) w*_P, and L = bias + "
    "½(w_K − w_K^opt)ᵀH_KK(w_K − w_K^opt)  [pruning.pruning_bias, pruning.pruned_excess_loss]"
)


def verify() -> None:
    h = sp.Matrix(4, 4, lambda i, j: sp.Symbol(f"h{min(i, j)}{max(i, j)}"))
    ws = sp.Matrix(sp.symbols("w0:4"))
    k_idx, p_idx = [0, 1], [2, 3]
    hkk, hkp = h.extract(k_idx, k_idx), h.extract(k_idx, p_idx)
    hpk, hpp = h.extract(p_idx, k_idx), h.extract(p_idx, p_idx)
    wk_s, wp_s = ws.extract(k_idx, [0]), ws.extract(p_idx, [0])
    u = sp.Matrix(sp.symbols("u0:2"))  # free kept weights

    def loss(wk):
        w = sp.Matrix([wk[0], wk[1], 0, 0])
        e = w - ws
        return (e.T * h * e)[0] / 2

    grad = [sp.diff(loss(u), ui) for ui in u]
    sol = sp.solve(grad, list(u), dict=True)[0]
    w_opt = sp.Matrix([sol[u[0]], sol[u[1]]])
    assert sp.simplify(w_opt - (wk_s + hkk.inv() * hkp * wp_s)) == sp.zeros(2, 1)
    bias = (wp_s.T * (hpp - hpk * hkk.inv() * hkp) * wp_s)[0] / 2
    assert sp.simplify(loss(w_opt) - bias) == 0
    # Pythagorean split for any kept w_K
    split = bias + ((u - w_opt).T * hkk * (u - w_opt))[0] / 2
    assert sp.simplify(loss(u) - split) == 0

    # rank one, H = λ v vᵀ (H_KK singular): bias 0 unless v_K = 0 (one kept weight compensates)
    lam = sp.Symbol("lambda", positive=True)
    v = sp.Matrix(sp.symbols("v0:3", positive=True))
    h1 = lam * v * v.T
    hkk1 = h1.extract([0, 1], [0, 1])
    pinv = hkk1.pinv()
    schur = h1[2, 2] - (h1.extract([2], [0, 1]) * pinv * h1.extract([0, 1], [2]))[0]
    assert sp.simplify(schur) == 0

    # aligned basin: H diagonal, bias = ½ Σ_{pruned} λ_j w*_j²
    lams = sp.symbols("l0:4", positive=True)
    hd = sp.diag(*lams)
    bias_d = (
        wp_s.T
        * (
            hd.extract(p_idx, p_idx)
            - hd.extract(p_idx, k_idx) * hd.extract(k_idx, k_idx).inv() * hd.extract(k_idx, p_idx)
        )
        * wp_s
    )[0] / 2
    assert sp.simplify(bias_d - (lams[2] * ws[2] ** 2 + lams[3] * ws[3] ** 2) / 2) == 0


# ---------------------------------------------------------------------------------------------
# the closed form, wired to the code (proofs.links; tests/test_proof_code_links.py)


def _problem(seed, dim, rank, keep_bits):
    rng = np.random.default_rng(seed)
    q, rr = np.linalg.qr(rng.standard_normal((dim, rank)))
    basis = q * np.sign(np.diag(rr))
    lam = rng.uniform(0.1, 3.0, size=rank)
    w_star = rng.standard_normal(dim) * 2.0
    keep = np.array([(keep_bits >> j) & 1 == 1 for j in range(dim)])
    return lam, basis, w_star, keep


def schur_bias(*, seed, dim, rank, keep_bits):
    """½ w*_Pᵀ (H_PP − H_PK H_KK⁻¹ H_KP) w*_P for H = U diag(λ) Uᵀ (a seeded random problem); pseudo-inverse
    where H_KK is singular (then the minimum over w_K is still attained)."""
    lam, basis, w, keep = _problem(seed, dim, rank, keep_bits)
    h = basis @ np.diag(lam) @ basis.T
    p, k = ~keep, keep
    schur = h[np.ix_(p, p)] - h[np.ix_(p, k)] @ np.linalg.pinv(h[np.ix_(k, k)]) @ h[np.ix_(k, p)]
    return 0.5 * float(w[p] @ schur @ w[p])


CODE_LINKS = [
    CodeLink(
        function="dptheory.pruning.pruning_bias",
        closed_form=schur_bias,
        symbols={"seed": (0, 10**6), "dim": (2, 9), "rank": (1, 9), "keep_bits": (0, 511)},
        integer=frozenset({"seed", "dim", "rank", "keep_bits"}),
        valid=lambda dim, rank, keep_bits, **_: rank <= dim and keep_bits < 2**dim,
        arguments=lambda seed, dim, rank, keep_bits: dict(
            zip(("curvatures", "basis", "optimum", "mask"), _problem(seed, dim, rank, keep_bits))
        ),
        rtol=1e-9,
        atol=1e-9,
        note="the code solves the least-squares problem min_{w_K} ‖Λ^{1/2} Uᵀ w‖ (lstsq); here the Schur "
        "complement with a pseudo-inverse: two numerically different routes, agreement to conditioning",
    )
]
