"""Discrete Lyapunov equation for the stationary covariance of noisy GD (backs
``dptheory.quadratic.stationary_covariance`` and ``stationary_loss_general``).

e ← A e − η ζ, A = I − ηH (H symmetric), Cov ζ = Σ_ξ. The stationary covariance is the fixed point
Σ = A Σ Aᵀ + η² Σ_ξ. We check symbolically that

1. A Σ Aᵀ + η² Σ_ξ − Σ = −η (HΣ + ΣH − ηHΣH − ηΣ_ξ) for every symmetric Σ (general 2×2 symbols), so
   the fixed point is exactly HΣ + ΣH − ηHΣH = ηΣ_ξ;
2. the covariance recursion Σ(t+1) = AΣ(t)Aᵀ + η²Σ_ξ of the 2×2 case, solved for its fixed point
   as a linear system, solves the Lyapunov equation and matches the eigenbasis closed form
   Σ_kl = η S_kl / (λ_k + λ_l − ηλ_kλ_l) for diagonal H = diag(λ1, λ2) and general S = Σ_ξ;
3. with diagonal H and Σ_ξ the diagonal is ητ_k²/(λ_k(2 − ηλ_k)) (the per-direction law), and
   ½ tr(HΣ) = (η/2) Σ_k S_kk/(2 − ηλ_k) for any S;
4. rotation covariance: with R = [[c, −s], [s, c]], c² + s² = 1, the residual of (RDRᵀ, RXRᵀ, RSRᵀ)
   equals R · residual(D, X, S) · Rᵀ for every symmetric X, so a non-diagonal H is solved by
   rotating the diagonal solution (the eigenbasis method of the code).
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from proofs.links import CodeLink

STATEMENT = (
    "Sigma = A Sigma A^T + eta^2 Sigma_xi  <=>  H Sigma + Sigma H - eta H Sigma H = eta Sigma_xi; "
    "eigenbasis Sigma_kl = eta S_kl/(l_k + l_l - eta l_k l_l)  [quadratic.stationary_covariance]"
)


def _zero(m: sp.Matrix, what: str) -> None:
    m = m.applyfunc(sp.cancel)
    assert m == sp.zeros(*m.shape), f"{what}: residual {m}"


def verify() -> None:
    eta = sp.symbols("eta", positive=True)
    h11, h12, h22, x11, x12, x22, s11, s12, s22 = sp.symbols("h11 h12 h22 x11 x12 x22 s11 s12 s22", real=True)
    H = sp.Matrix([[h11, h12], [h12, h22]])
    X = sp.Matrix([[x11, x12], [x12, x22]])
    S = sp.Matrix([[s11, s12], [s12, s22]])
    I = sp.eye(2)
    A = I - eta * H

    # 1. fixed-point equation ⇔ Lyapunov equation (identity in all symbols)
    fixed = A * X * A.T + eta**2 * S - X
    lyap = H * X + X * H - eta * H * X * H - eta * S
    _zero((fixed + eta * lyap).applyfunc(sp.expand), "fixed point = -eta * Lyapunov residual")

    # 2. solve the stationary covariance of the recursion for diagonal H, compare with the closed form
    l1, l2 = sp.symbols("lambda1 lambda2", positive=True)
    D = sp.diag(l1, l2)
    AD = I - eta * D
    eqs = list(AD * X * AD.T + eta**2 * S - X)
    sol = sp.solve(eqs, [x11, x12, x22], dict=True)
    assert len(sol) == 1, f"unique stationary covariance expected, got {sol}"
    XD = X.subs(sol[0])
    _zero(D * XD + XD * D - eta * D * XD * D - eta * S, "recursion fixed point solves Lyapunov")
    lam = [l1, l2]
    closed = sp.Matrix(2, 2, lambda k, l: eta * S[k, l] / (lam[k] + lam[l] - eta * lam[k] * lam[l]))
    _zero(XD - closed, "eigenbasis closed form")

    # 3. per-direction law and the stationary loss
    for k in range(2):
        assert sp.cancel(closed[k, k] - eta * S[k, k] / (lam[k] * (2 - eta * lam[k]))) == 0, "diagonal law"
    loss = sp.Rational(1, 2) * (D * closed).trace()
    assert sp.cancel(loss - eta / 2 * (s11 / (2 - eta * l1) + s22 / (2 - eta * l2))) == 0, "loss"

    # 4. rotation covariance (polynomial identity modulo c² + s² = 1), for a generic symmetric X
    c, sn = sp.symbols("c s", real=True)
    R = sp.Matrix([[c, -sn], [sn, c]])

    def residual(h, x, q):
        return h * x + x * h - eta * h * x * h - eta * q

    diff = residual(R * D * R.T, R * X * R.T, R * S * R.T) - R * residual(D, X, S) * R.T
    for entry in diff:
        rem = sp.reduced(sp.expand(entry), [c**2 + sn**2 - 1], c, sn)[1]
        assert rem == 0, f"rotation covariance: remainder {rem}"


# ---------------------------------------------------------------------------------------------
# the closed forms, wired to the code (proofs.links; tests/test_proof_code_links.py)


def eigenbasis_covariance(*, eta, lams, noise_eig):
    """Σ_kl = η S_kl / (λ_k + λ_l − η λ_k λ_l) in the eigenbasis of H (S = Σ_ξ in that basis)."""
    lam = np.asarray(lams, dtype=float)
    return eta * np.asarray(noise_eig, dtype=float) / (lam[:, None] + lam[None, :] - eta * lam[:, None] * lam[None, :])


def _entry(sigma, *, k, l):
    return float(sigma[k, l])


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _noise(s11, s22, corr):
    off = corr * np.sqrt(s11 * s22)
    return np.array([[s11, off], [off, s22]])


def _covariance_entry(*, eta, l1, l2, s11, s22, corr, theta, k, l):
    r = _rotation(theta)
    return float((r @ eigenbasis_covariance(eta=eta, lams=(l1, l2), noise_eig=_noise(s11, s22, corr)) @ r.T)[k, l])


_SYMBOLS = {
    "eta": (1e-3, 1.0),
    "l1": (0.05, 1.9),
    "l2": (0.05, 1.9),
    "s11": (0.0, 3.0),
    "s22": (0.0, 3.0),
    "corr": (-0.99, 0.99),
    "theta": (0.0, 3.14),
}


def _args(eta, l1, l2, s11, s22, corr, theta):
    r = _rotation(theta)
    return {"hessian": r @ np.diag([l1, l2]) @ r.T, "lr": eta, "noise_cov": r @ _noise(s11, s22, corr) @ r.T}


CODE_LINKS = [
    CodeLink(
        function="dptheory.quadratic.stationary_covariance",
        closed_form=functools.partial(_covariance_entry, k=k, l=l),
        symbols=_SYMBOLS,
        valid=lambda eta, l1, l2, **_: eta * max(l1, l2) < 1.99,
        arguments=_args,
        output=functools.partial(_entry, k=k, l=l),
        rtol=1e-10,
        atol=1e-14,
        note="the code diagonalises a rotated H numerically (eigh): agreement to rounding of the rotation",
    )
    for k, l in ((0, 0), (0, 1), (1, 1))
] + [
    CodeLink(
        function="dptheory.quadratic.stationary_loss_general",
        closed_form=lambda eta, l1, l2, s11, s22, corr, theta: eta / 2 * (s11 / (2 - eta * l1) + s22 / (2 - eta * l2)),
        symbols=_SYMBOLS,
        valid=lambda eta, l1, l2, **_: eta * max(l1, l2) < 1.99,
        arguments=_args,
        rtol=1e-10,
        atol=1e-14,
        note="½ tr(HΣ) = (η/2) Σ_k S_kk/(2 − ηλ_k), rotation invariant",
    )
]
