"""Linear response of per-example clipping in a Hessian eigenbasis (backs ``dptheory.spectral_response``).

clip_C(x) = φ(‖x‖) x, φ(R) = min(1, C/R). Verified:

1. its Jacobian at ‖x‖ > C is (C/R)(I − x̂x̂ᵀ) (explicit coordinates, d = 3), i.e.
   J(x) = φ I − 1{R>C} (C/R) x̂ x̂ᵀ on both branches;
2. the diagonal of J in any orthonormal basis u_j is φ − 1{R>C}(C/R)(u_jᵀx)²/R² (a symbolic
   rotation of the d = 3 basis), so mean_i u_jᵀ J(g_i) u_j = γ_j of the docstring, and the first-order
   expansion clip(g + δ) = clip(g) + J(g) δ + O(‖δ‖²) holds (numerically, both branches);
3. isotropic limit: for g ~ N(0, s² I_d) the projections' shares (u_jᵀĝ)² are exchangeable and sum
   to 1, so E[(u_jᵀĝ)² | R] = 1/d and γ_j = E[φ − 1{R>C}(C/R)/d] = E[φ(R)(1 − 1{R>C}/d)] = α₀
   (φ = C/R when clipped), the linear-response shrinkage of dptheory.clipping (symbolic identity);
4. bulk spreading conserves energy: p_il² = π_l E_i with Σ_l w_l π_l = 1 gives Σ_l w_l p_il² = E_i;
5. per-example Hessians along the gradient (least squares: g = a r, H_i = a aᵀ): J(g) H_i = 0 for
   a clipped example, so its linear response vanishes while the mean-Hessian model gives
   φ_i H_i-sized drift — the neglected term (ii) of dptheory.spectral_response, and the diagonal of
   the measured form φ u_jᵀH_iu_j − (C/R)(u_jᵀĝ)(ĝᵀH_iu_j) is 0 for it (symbolic, d = 3).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "gamma_j = mean_i[phi_i - 1{R_i>C} (C/R_i) (u_j^T g_i)^2/R_i^2] (diagonal of the clip Jacobian); "
    "isotropic: = alpha0  [spectral_response.empirical_clip_response]"
)


def shrinkage_diagonal(projection_sq, norm, clip_norm):
    """φ − 1{R>C}(C/R) p²/R²: the (j, j) element of the clip Jacobian at a gradient of norm R."""
    if norm > clip_norm:
        return clip_norm / norm - clip_norm / norm * projection_sq / norm**2
    return 1


def verify() -> None:
    xs = sp.symbols("x1:4", real=True)
    c = sp.symbols("C", positive=True)
    x = sp.Matrix(xs)
    nrm = sp.sqrt(sum(v**2 for v in xs))
    jac = (c * x / nrm).jacobian(x)
    xhat = x / nrm
    # 1. Jacobian beyond the threshold
    assert sp.simplify(jac - (c / nrm) * (sp.eye(3) - xhat * xhat.T)) == sp.zeros(3, 3), "clip Jacobian"
    # 2. its diagonal in a rotated orthonormal basis (rotation about the axis (1, 1, 1)/√3 by θ)
    th = sp.symbols("theta", real=True)
    k = sp.Matrix([1, 1, 1]) / sp.sqrt(3)
    kx = sp.Matrix([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = sp.eye(3) + sp.sin(th) * kx + (1 - sp.cos(th)) * kx * kx
    assert sp.simplify(rot.T * rot - sp.eye(3)) == sp.zeros(3, 3), "rotation is orthonormal"
    for j in range(3):
        u = rot[:, j]
        p = (u.T * x)[0]
        diag = (u.T * jac * u)[0]
        assert sp.simplify(diag - (c / nrm - (c / nrm) * p**2 / nrm**2)) == 0, f"diagonal element {j}"
    # first-order expansion, numerically, unclipped and clipped
    rng = np.random.default_rng(0)

    def clip(v, cn):
        r = np.linalg.norm(v)
        return v * min(1.0, cn / r)

    for cn in (10.0, 0.5):
        g = rng.standard_normal(5)
        r = float(np.linalg.norm(g))
        gh = g / r
        jn = min(1.0, cn / r) * np.eye(5) - (r > cn) * (cn / r) * np.outer(gh, gh)
        for eps in (1e-3, 1e-4):
            d = eps * rng.standard_normal(5)
            rem = np.linalg.norm(clip(g + d, cn) - clip(g, cn) - jn @ d)
            assert rem < 10 * eps**2, f"first-order expansion, C={cn}, eps={eps}: remainder {rem}"
    # 3. isotropic limit: φ − (C/R)(1/d) = φ (1 − 1/d) when clipped (φ = C/R); unclipped both are 1
    d, r = sp.symbols("d R", positive=True)
    assert sp.simplify((c / r - (c / r) / d) - (c / r) * (1 - 1 / d)) == 0, "isotropic clipped branch"
    # 4. bulk energy conservation
    w = rng.integers(1, 50, size=6).astype(float)
    lam = rng.random(6)
    shares = lam / np.sum(w * lam)
    energy = rng.random(4)
    assert np.allclose((energy[:, None] * shares[None, :]) @ w, energy), "bulk spreading conserves energy"
    # 5. least squares: g = a r, H_i = a aᵀ; a clipped example has no linear response
    a = sp.Matrix(sp.symbols("a1:4", real=True))
    res = sp.symbols("r", positive=True)
    g = a * res
    gn = sp.sqrt(sum(v**2 for v in g))
    ghat = g / gn
    jac_clipped = (c / gn) * (sp.eye(3) - ghat * ghat.T)
    assert sp.simplify(jac_clipped * a * a.T) == sp.zeros(3, 3), "J(g) H_i = 0 for a clipped least-squares example"
    for j in range(3):
        u = rot[:, j]
        measured = (c / gn) * (u.T * a * a.T * u)[0] - (c / gn) * (u.T * ghat)[0] * (ghat.T * a * a.T * u)[0]
        assert sp.simplify(measured) == 0, f"measured-curvature drift of a clipped example, direction {j}"


# ---------------------------------------------------------------------------------------------
# the closed form, wired to the code (proofs.links; tests/test_proof_code_links.py)


def _examples(seed, n):
    rng = np.random.default_rng(seed)
    proj = rng.normal(size=n) * rng.uniform(0.2, 3.0, size=n)
    norms = np.abs(proj) + rng.exponential(1.0, size=n)  # ‖g_i‖ ≥ |u_jᵀ g_i|
    return norms, proj


def empirical_shrinkage(*, seed, n, clip_norm):
    """γ_j = mean_i [φ_i − 1{R_i>C}(C/R_i)(u_jᵀg_i)²/R_i²] over n seeded examples (one top direction)."""
    norms, proj = _examples(seed, n)
    return float(np.mean([shrinkage_diagonal(p * p, r, clip_norm) for r, p in zip(norms, proj)]))


def _response_args(seed, n, clip_norm):
    from dptheory.spectral_response import SortedGradientSums

    norms, proj = _examples(seed, n)
    sums = SortedGradientSums(norms=norms, projections=proj[:, None], bulk_energy=norms**2 - proj**2)
    return {"sums": sums, "bulk_shares": np.zeros(0), "curvatures": np.array([1.0]), "clip_norm": clip_norm}


CODE_LINKS = [
    CodeLink(
        function="dptheory.spectral_response.empirical_clip_response",
        closed_form=empirical_shrinkage,
        symbols={"seed": (0, 10**6), "n": (1, 400), "clip_norm": (0.01, 8.0)},
        integer=frozenset({"seed", "n"}),
        arguments=_response_args,
        output=lambda r: float(r.shrinkage[0]),
        rtol=1e-11,
        atol=1e-14,
        note="the code sorts the examples by norm once and uses block prefix sums",
    )
]
