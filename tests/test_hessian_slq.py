"""Lanczos with full reorthogonalisation and stochastic Lanczos quadrature (simulations.nn.hessian).

References the tests check against: exact eigendecompositions (numpy ``eigh`` of a dense matrix, a
diagonal operator with a known spectrum, the dense Hessian of a small network by
``torch.autograd.functional.hessian``), the Gauss-quadrature exactness for polynomials of degree
≤ 2m − 1, and the unbiasedness of the trace estimator (within k = 4 of its own standard errors).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simulations.nn.hessian import (
    kept_vector,
    lanczos,
    lanczos_eigenpairs,
    make_hvp,
    slq_density,
    top_eigenpairs,
    tridiagonal_quadrature,
)
from simulations.nn.models import build_model

torch.set_num_threads(1)
K_SE = 4.0  # tolerance of the statistical checks, in standard errors of the estimator


def _random_symmetric(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (a + a.T) / 2


def _known_spectrum(d: int = 1500) -> torch.Tensor:
    """A network-like spectrum: a few large outliers, a power-law bulk and a mass at zero."""
    i = torch.arange(1, d + 1, dtype=torch.float64)
    lam = 2.0 * i**-1.2
    lam[:5] = torch.tensor([40.0, 25.0, 18.0, 9.0, 6.0], dtype=torch.float64)
    lam[d // 2 :] = 0.0
    return lam


def test_full_reorthogonalisation_keeps_the_basis_orthonormal():
    # 120 steps on a spectrum with well separated outliers: plain Lanczos loses orthogonality here
    lam = _known_spectrum(400)
    start = torch.ones(400, dtype=torch.float64)
    run = lanczos(lambda v: lam * v, start, steps=120, keep_vectors=True)
    q = run.vectors
    gram = q @ q.T
    assert run.steps == 120
    assert float((gram - torch.eye(run.steps, dtype=torch.float64)).abs().max()) < 1e-10
    # the three-term relation H Q = Q T + β_m q_{m+1} e_mᵀ holds up to the last column
    t = np.diag(run.alpha) + np.diag(run.beta, 1) + np.diag(run.beta, -1)
    hq = (lam[:, None] * q.T).numpy()
    np.testing.assert_allclose(hq[:, :-1], (q.T.numpy() @ t)[:, :-1], atol=1e-9)


def test_lanczos_exhausts_a_small_space_and_recovers_the_exact_spectrum():
    h = _random_symmetric(30, seed=1)
    run = lanczos(lambda v: h @ v, torch.randn(30, dtype=torch.float64), steps=100)
    assert run.steps == 30
    nodes, weights = tridiagonal_quadrature(run.alpha, run.beta)
    np.testing.assert_allclose(nodes, np.linalg.eigvalsh(h.numpy()), atol=1e-9)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauss_quadrature_is_exact_for_degree_up_to_2m_minus_1(seed):
    h = _random_symmetric(60, seed=seed)
    v = torch.randn(60, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    v = v / v.norm()
    m = 5
    run = lanczos(lambda u: h @ u, v, steps=m)
    nodes, weights = tridiagonal_quadrature(run.alpha, run.beta)
    hn = h.numpy()
    vn = v.numpy()
    power = vn.copy()
    for j in range(2 * m):  # v ᵀ H^j v for j = 0 … 2m − 1
        exact = float(vn @ power)
        assert float(np.sum(weights * nodes**j)) == pytest.approx(exact, rel=1e-9, abs=1e-9), j
        power = hn @ power
    # degree 2m is NOT integrated exactly in general (guards against a vacuous check)
    exact = float(vn @ power)
    assert abs(float(np.sum(weights * nodes ** (2 * m))) - exact) > 1e-6 * abs(exact)


def test_deflation_keeps_the_krylov_space_in_the_complement():
    h = _random_symmetric(50, seed=3)
    vals, vecs = np.linalg.eigh(h.numpy())
    top = torch.as_tensor(vecs[:, -4:])
    run = lanczos(lambda u: h @ u, torch.randn(50, dtype=torch.float64), steps=60, deflate=top, keep_vectors=True)
    assert run.steps == 46  # the complement has dimension 50 − 4
    assert float((run.vectors @ top).abs().max()) < 1e-12
    nodes, _ = tridiagonal_quadrature(run.alpha, run.beta)
    np.testing.assert_allclose(nodes, vals[:-4], atol=1e-9)


def test_slq_moments_of_a_known_spectrum_are_within_their_standard_errors():
    lam = _known_spectrum()
    rho = slq_density(lambda v: lam * v, dim=lam.numel(), probes=30, steps=60, seed=0)
    for power in (1, 2, 3):
        est, se = rho.moment(power)
        exact = float((lam**power).sum())
        assert se > 0
        assert abs(est - exact) <= K_SE * se, (power, est, exact, se)
    _, counts = rho.directions()
    assert counts.sum() == pytest.approx(lam.numel(), rel=1e-12)
    # the extreme node converges to λ_max fast (Kaniel–Paige): every probe finds 40 to 1e-8
    assert np.allclose(rho.nodes.max(axis=1), 40.0, atol=1e-8)


def test_slq_standard_error_is_calibrated_over_independent_replicates():
    # 40 replicates of a 6-probe estimate of tr H: the spread of the estimates matches the mean
    # reported SE (ratio within [0.7, 1.4]; with 40 replicates the sd's relative SE is ≈ 11 %)
    lam = _known_spectrum(600)
    exact = float(lam.sum())
    est, ses = [], []
    for r in range(40):
        rho = slq_density(lambda v: lam * v, dim=600, probes=6, steps=10, seed=100 + r)
        e, s = rho.moment(1)
        est.append(e)
        ses.append(s)
    est = np.asarray(est)
    ratio = np.std(est, ddof=1) / np.sqrt(np.mean(np.square(ses)))
    assert 0.7 < ratio < 1.4, ratio
    assert abs(est.mean() - exact) < K_SE * np.std(est, ddof=1) / math.sqrt(est.size)


def _small_network_hessian(masked: bool):
    model = build_model("mlp", input_shape=(6,), num_classes=4, width=10, depth=1, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 6, generator=g), torch.randint(0, 4, (80,), generator=g)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    masks = None
    if masked:
        m = (torch.rand(params[0].shape, generator=g) > 0.4).float()
        masks = {names[0]: m}
        with torch.no_grad():
            params[0].mul_(m)
    shapes = [p.shape for p in params]

    def loss_of(flat):
        parts, i = [], 0
        for shp in shapes:
            n = math.prod(shp)
            parts.append(flat[i : i + n].reshape(shp))
            i += n
        out = torch.func.functional_call(model, dict(zip(names, parts)), (x,))
        return torch.nn.functional.cross_entropy(out, y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    dense = torch.autograd.functional.hessian(loss_of, flat).double()
    keep = kept_vector(model, masks).bool()
    dense = dense[keep][:, keep].numpy()
    return model, x, y, masks, keep, dense


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_slq_and_top_k_on_a_small_network_match_its_dense_hessian(masked):
    model, x, y, masks, keep, dense = _small_network_hessian(masked)
    hvp = make_hvp(model, x, y, masks=masks)
    total = keep.numel()
    exact = np.linalg.eigvalsh(dense)[::-1]
    kept = kept_vector(model, masks)
    vals, vecs, resid = lanczos_eigenpairs(hvp, dim=total, k=4, steps=100, seed=0, kept=kept)
    np.testing.assert_allclose(vals, exact[:4], rtol=1e-6, atol=1e-7)
    assert float(resid.max()) < 1e-6
    assert float(vecs[~keep].abs().sum()) == 0.0  # the Ritz vectors live on the kept coordinates
    # the same eigenvalues as the existing ARPACK routine
    arpack, _ = top_eigenpairs(hvp, dim=total, k=4, seed=0, dense_below=0, tol=1e-10)
    np.testing.assert_allclose(vals, arpack, rtol=1e-5)
    rho = slq_density(hvp, dim=total, probes=20, steps=30, seed=1, kept=kept, deflate=vecs)
    assert rho.dim == int(keep.sum()) - 4
    bulk = exact[4:]
    for power in (1, 2):
        est, se = rho.moment(power)
        assert abs(est - float(np.sum(bulk**power))) <= K_SE * se, (power, est, np.sum(bulk**power), se)
    # deflated: no bulk node above the 5th eigenvalue (up to the Ritz accuracy)
    assert rho.nodes.max() <= exact[4] + 1e-6


def test_slq_rejects_bad_arguments():
    lam = torch.ones(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="probes"):
        slq_density(lambda v: lam * v, dim=5, probes=0)
    with pytest.raises(ValueError, match="dimension"):
        slq_density(lambda v: lam * v, dim=5, deflate=torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be"):
        lanczos_eigenpairs(lambda v: lam * v, dim=5, k=6, steps=10)
