"""Measurements at w*, the linearised network, the warm-start arms and train's init_state.

References: per-sample gradients by an explicit per-example loop (float64), dense Hessians by
``torch.autograd.functional.hessian``, the linearised network's closed forms (H = JᵀJ/n, g_i =
J_iᵀ r_i, ∇L(θ*) = 0), exact deterministic gradient descent on a quadratic (q = 1, no noise:
e_t = (1 − ηλ)^t e_0 along an eigenvector), and the Horvitz–Thompson identity E[L̂] = L
(statistical, within k = 4 SE).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dptheory.records import Optimizer
from simulations.nn.hessian import make_hvp
from simulations.nn.measure import (
    exact_spectrum,
    gradient_statistics,
    half_squared_error,
    linearise,
    load_measurement,
    measure_basin,
    per_example_curvatures,
)
from simulations.nn.models import build_model
from simulations.nn.warmstart import Displacement, Problem, run_arm

torch.set_num_threads(1)
K_SE = 4.0


def _data(n=60, dim=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


def _loop_gradients(model, x, y, loss_fn, keep=None):
    params = list(model.parameters())
    rows = []
    for i in range(x.shape[0]):
        loss = loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum()
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)]).double()
        rows.append(g if keep is None else g * keep)
    return torch.stack(rows)


def test_gradient_statistics_match_a_per_example_loop_with_masks():
    model = build_model("mlp", input_shape=(5,), num_classes=3, width=7, depth=1, seed=0)
    x, y = _data()
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    mask = (torch.rand(params[0].shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    with torch.no_grad():
        params[0].mul_(mask)
    masks = {names[0]: mask}
    keep = torch.cat([mask.reshape(-1)] + [torch.ones(p.numel()) for p in params[1:]]).double()
    g = _loop_gradients(model, x, y, torch.nn.functional.cross_entropy, keep)
    u, _ = torch.linalg.qr(torch.randn(keep.numel(), 3, dtype=torch.float64) * keep[:, None])
    got = gradient_statistics(model, x, y, directions=u, masks=masks, chunk_size=16)
    np.testing.assert_allclose(got.norms, g.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(got.projections, (g @ u).numpy(), rtol=1e-4, atol=1e-7)
    resid = (g.norm(dim=1) ** 2 - (g @ u).pow(2).sum(1)).numpy()
    np.testing.assert_allclose(got.residual_energy, resid, rtol=1e-4, atol=1e-8)
    assert got.mean_gradient_norm == pytest.approx(float(g.mean(0).norm()), rel=1e-5)


def test_measure_basin_top_k_trace_and_directions_against_the_dense_hessian(tmp_path):
    model = build_model("mlp", input_shape=(5,), num_classes=3, width=8, depth=1, seed=0)
    x, y = _data(n=80)
    hvp = make_hvp(model, x, y)
    d = sum(p.numel() for p in model.parameters())
    dense = torch.stack([hvp(e) for e in torch.eye(d, dtype=torch.float64)], 1).double().numpy()
    exact = np.linalg.eigvalsh(0.5 * (dense + dense.T))[::-1]
    m = measure_basin(model, x, y, top_k=4, probes=20, lanczos_steps=25, flat_steps=30, seed=0)
    np.testing.assert_allclose(m.top_eigenvalues, exact[:4], rtol=1e-5, atol=1e-7)
    trace, se = m.trace()
    assert abs(trace - exact.sum()) <= K_SE * se
    assert m.dim == m.parameters == d and m.density_dim == d - 4 and m.n_train == 80
    # random direction: curvature = its Rayleigh quotient; near-flat direction: ‖H u‖ tiny next to λ_1
    u = m.random_direction
    assert m.random_curvature == pytest.approx(float(u @ dense @ u), rel=1e-5)
    assert np.linalg.norm(m.flat_direction) == pytest.approx(1.0)
    assert m.flat_gradient_norm < 1e-2 * exact[0]
    assert m.flat_gradient_norm == pytest.approx(float(np.linalg.norm(dense @ m.flat_direction)), rel=1e-4)
    m.save(tmp_path / "m.npz")
    back = load_measurement(tmp_path / "m.npz")
    assert back.dim == m.dim and back.train_loss == m.train_loss
    np.testing.assert_array_equal(back.projections, m.projections)
    np.testing.assert_array_equal(back.top_radial_curvatures, m.top_radial_curvatures)
    # mean_i u_jᵀ H_i u_j = u_jᵀ H u_j = λ_j for the eigenvectors
    np.testing.assert_allclose(m.top_curvatures.mean(0), m.top_eigenvalues, rtol=1e-4, atol=1e-6)
    bare = measure_basin(model, x, y, top_k=2, probes=2, lanczos_steps=5, flat_steps=0, seed=0, curvatures=False)
    bare.save(tmp_path / "bare.npz")
    assert bare.top_curvatures is None and load_measurement(tmp_path / "bare.npz").top_radial_curvatures is None


def test_per_example_curvatures_match_dense_per_example_hessians_with_masks_and_decay():
    model = build_model("mlp", input_shape=(5,), num_classes=3, width=4, depth=1, seed=0).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g)
    names, params = [n for n, _ in model.named_parameters()], list(model.parameters())
    masks = {names[0]: (torch.rand(params[0].shape, generator=g) > 0.5).double()}
    with torch.no_grad():
        params[0].mul_(masks[names[0]])
    keep = torch.cat([masks[names[0]].reshape(-1)] + [torch.ones(p.numel()) for p in params[1:]]).double()
    u, _ = torch.linalg.qr(torch.randn(keep.numel(), 3, generator=g, dtype=torch.float64) * keep[:, None])
    mu = 0.01
    curv, radial = per_example_curvatures(model, x, y, u, masks=masks, weight_decay=mu, chunk_size=3)
    shapes = [p.shape for p in params]
    w = torch.cat([p.detach().reshape(-1) for p in params])

    def objective(flat, i):  # ℓ_i + (μ/2)‖m⊙w‖², differentiated densely
        parts, at = [], 0
        for shp in shapes:
            parts.append(flat[at : at + math.prod(shp)].reshape(shp))
            at += math.prod(shp)
        out = torch.func.functional_call(model, dict(zip(names, parts)), (x[i : i + 1],))
        return torch.nn.functional.cross_entropy(out, y[i : i + 1]) + 0.5 * mu * (flat * keep).pow(2).sum()

    for i in range(x.shape[0]):
        h = torch.autograd.functional.hessian(lambda f, i=i: objective(f, i), w) * keep[:, None] * keep[None, :]
        gi = torch.autograd.functional.jacobian(lambda f, i=i: objective(f, i), w) * keep
        gh = gi / gi.norm()
        np.testing.assert_allclose(curv[i], torch.einsum("dk,de,ek->k", u, h, u).numpy(), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(radial[i], ((gh @ u) * (gh @ h @ u)).numpy(), rtol=1e-8, atol=1e-12)


def test_linearised_network_is_the_exact_quadratic():
    net = build_model("mlp", input_shape=(4,), num_classes=3, width=6, depth=1, seed=0)
    x, y = _data(n=50, dim=4)
    lin = linearise(net, x, y, x[:10], y[:10], num_classes=3, chunk_size=7)
    n, c, d = lin.jac_train.shape
    assert (n, c, d) == (50, 3, sum(p.numel() for p in net.parameters()))
    # J by autograd on one example
    i = 3
    rows = []
    for k in range(c):
        out = net(x[i : i + 1])[0, k]
        rows.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(out, list(net.parameters()))]))
    np.testing.assert_allclose(lin.jac_train[i].numpy(), torch.stack(rows).double().numpy(), rtol=1e-5, atol=1e-7)
    model = lin.model()
    # the engine's Hessian-vector product of the linearised loss is JᵀJ/n exactly
    hvp = make_hvp(model, lin.jac_train, lin.target_train, loss_fn=half_squared_error)
    dense = torch.stack([hvp(e) for e in torch.eye(d, dtype=torch.float64)], 1)
    np.testing.assert_allclose(dense.numpy(), lin.hessian.numpy(), atol=1e-10)
    # per-sample gradients g_i = J_iᵀ r_i, zero mean gradient at θ*
    g = _loop_gradients(model, lin.jac_train, lin.target_train, half_squared_error)
    r = lin.jac_train @ lin.minimum - lin.target_train
    np.testing.assert_allclose(g.numpy(), torch.einsum("ncd,nc->nd", lin.jac_train, r).numpy(), atol=1e-10)
    assert float(g.mean(0).norm()) < 1e-7 * float(g.norm(dim=1).mean())  # lstsq, conditioning-limited
    vals, vecs = exact_spectrum(lin.hessian)
    assert np.all(np.diff(vals) <= 1e-12) and vecs.shape == (d, d)


def test_linearised_network_rejects_a_wrong_class_count():
    net = build_model("mlp", input_shape=(4,), num_classes=3, width=6, depth=1, seed=0)
    x, y = _data(n=10, dim=4)
    with pytest.raises(ValueError, match="num_classes"):
        linearise(net, x, y, x, y, num_classes=4)


def _lin_problem(n=40, seed=0):
    net = build_model("mlp", input_shape=(4,), num_classes=3, width=5, depth=1, seed=seed)
    x, y = _data(n=n, dim=4, seed=seed)
    lin = linearise(net, x, y, x[:10], y[:10], num_classes=3)
    prob = Problem(
        model=lin.model(),
        x_train=lin.jac_train,
        y_train=lin.target_train,
        x_test=lin.jac_test,
        y_test=lin.target_test,
        loss_fn=half_squared_error,
    )
    return lin, prob


def test_arms_share_batches_and_noise_and_reduce_to_sgd_in_their_limits():
    lin, prob = _lin_problem()
    opt = dict(lr=0.05, batch_size=8)
    sgd = run_arm(prob, Optimizer(**opt, mode="sgd"), steps=40, seed=3, eval_every=5)
    clip_inf = run_arm(prob, Optimizer(**opt, mode="clip", clip_norm=math.inf), steps=40, seed=3, eval_every=5)
    noise0 = run_arm(prob, Optimizer(**opt, mode="noise", clip_norm=1.0, noise_multiplier=0.0), steps=40, seed=3)
    for arm in (clip_inf, noise0):
        np.testing.assert_array_equal(arm.batch_loss, sgd.batch_loss)
    np.testing.assert_array_equal(clip_inf.train_loss, sgd.train_loss)
    other = run_arm(prob, Optimizer(**opt, mode="sgd"), steps=40, seed=4, eval_every=5)
    assert not np.array_equal(other.batch_loss, sgd.batch_loss)
    # same seed, a noised arm: the same batches, so the first step's batch loss (at θ*) agrees
    noised = run_arm(prob, Optimizer(**opt, mode="noise", clip_norm=1.0, noise_multiplier=1.0), steps=40, seed=3)
    assert noised.batch_loss[0] == sgd.batch_loss[0] and noised.batch_loss[-1] != sgd.batch_loss[-1]
    assert sgd.train_loss[0] == pytest.approx(lin.train_loss(lin.minimum), rel=1e-12)


def test_horvitz_thompson_batch_loss_is_unbiased():
    # with lr → 0 the weights stay put: every L̂_t estimates the same full training loss L(w)
    net = build_model("mlp", input_shape=(5,), num_classes=3, width=6, depth=1, seed=0)
    x, y = _data(n=60)
    prob = Problem(model=net, x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    arm = run_arm(prob, Optimizer(lr=1e-12, batch_size=6, mode="sgd"), steps=1500, seed=0, eval_every=1500)
    exact = arm.train_loss[0]
    se = arm.batch_loss.std(ddof=1) / math.sqrt(arm.batch_loss.size)
    assert abs(arm.batch_loss.mean() - exact) <= K_SE * se
    # the ratio estimator (divide by the realised size) would be a different quantity; HT is not it
    assert arm.batch_loss.std() > 0


def test_recovery_on_the_exact_quadratic_is_geometric_along_an_eigenvector():
    # q = 1 (every example every step) and no noise: gradient descent is deterministic, the reference
    # stays at θ*, and a displacement δu along an eigenvector (λ, u) has excess ½λδ²(1 − ηλ)^{2t}
    lin, prob = _lin_problem(n=30)
    vals, vecs = exact_spectrum(lin.hessian)
    lr = 0.5 / vals[0]
    disp = [
        Displacement("top", torch.as_tensor(vecs[:, 0]), 0.3),
        Displacement("third", torch.as_tensor(vecs[:, 2]), 0.3),
    ]
    arm = run_arm(
        prob, Optimizer(lr=lr, batch_size=30, mode="sgd"), steps=5, seed=0, displacements=disp, recovery_steps=12
    )
    for j, name in ((0, "top"), (2, "third")):
        rec = arm.recovery[name]
        expect = 0.5 * vals[j] * 0.3**2 * (1 - lr * vals[j]) ** (2 * rec.steps)
        # atol: θ* from lstsq has a gradient of ~1e-9, so the cross term gᵀδu is ~3e-10
        np.testing.assert_allclose(rec.excess, expect, rtol=1e-7, atol=1e-9)
        assert rec.retained == pytest.approx((1 - lr * vals[j]) ** 12, rel=1e-6, abs=1e-8)


def test_run_arm_rejects_bad_arguments():
    _, prob = _lin_problem()
    with pytest.raises(ValueError, match="steps"):
        run_arm(prob, Optimizer(lr=0.1, batch_size=4, mode="sgd"), steps=0, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        run_arm(prob, Optimizer(lr=0.1, batch_size=400, mode="sgd"), steps=1, seed=0)
    with pytest.raises(ValueError, match="recovery_steps"):
        d = Displacement("x", torch.ones(prob.model.theta.numel()), 1.0)
        run_arm(prob, Optimizer(lr=0.1, batch_size=4, mode="sgd"), steps=1, seed=0, displacements=[d])


def test_init_state_starts_from_saved_weights_and_is_not_private(tmp_path):
    from simulations.nn.train import TrainConfig, load_initial_state, run_train, train

    base = dict(dataset="teacher:k=2,d=8", n_train=100, n_test=50, width=6, depth=1, batch_size=20, quiet=True)
    first = run_train(TrainConfig(**base, epochs=2, mode="sgd", out=str(tmp_path / "a")))
    saved = torch.load(first / "model.pt", weights_only=True)
    res, model = train(TrainConfig(**base, epochs=1, mode="sgd", init_state=str(first / "model.pt")), return_model=True)
    assert res["privacy"]["label"].startswith("not private") and "starts from" in res["privacy"]["label"]
    fresh = train(TrainConfig(**base, epochs=1, mode="sgd"))
    # record 0 (before any step) is the saved network's loss, not the fresh initialisation's
    first_metrics = __import__("json").loads((first / "metrics.json").read_text())
    assert res["history"][0]["train_loss"] == pytest.approx(first_metrics["history"][-1]["train_loss"], rel=1e-6)
    assert res["history"][0]["train_loss"] != fresh["history"][0]["train_loss"]
    # a state of another shape is one clear ValueError naming the key
    wrong = build_model("mlp", input_shape=(8,), num_classes=10, width=7, depth=1, seed=0)
    with pytest.raises(ValueError, match="shape"):
        load_initial_state(wrong, first / "model.pt")
    with pytest.raises(FileNotFoundError):
        load_initial_state(wrong, tmp_path / "missing.pt")
    assert set(saved) == set(model.state_dict())


# --------------------------------------------------------------------------------------------
# the regularised objective: ℓ_i + (μ/2)‖m⊙w‖² inside the clip


class _Shared(torch.nn.Module):
    """One Linear layer applied twice: not book-keeping friendly, so the general JVP path is used."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = torch.nn.Linear(5, 5)
        self.out = torch.nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


@pytest.mark.parametrize("kind", ["mlp", "shared"])
@pytest.mark.parametrize("clip", [math.inf, 0.3], ids=["unclipped", "clipped"])
def test_regularised_private_gradient_matches_brute_force(clip, kind):
    from simulations.nn.engine import CLIP_EPS
    from simulations.nn.warmstart import regularised_private_gradient

    if kind == "mlp":
        model = build_model("mlp", input_shape=(5,), num_classes=3, width=7, depth=1, seed=0)
    else:
        model = _Shared()
    x, y = _data(n=12)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    mask = (torch.rand(params[0].shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    with torch.no_grad():
        params[0].mul_(mask)
    masks = {names[0]: mask}
    keep = torch.cat([mask.reshape(-1)] + [torch.ones(p.numel()) for p in params[1:]]).double()
    mu, nu, batch = 0.05, 0.7, 10.0
    w = torch.cat([p.detach().reshape(-1) for p in params]).double()
    g = _loop_gradients(model, x, y, torch.nn.functional.cross_entropy, keep) + mu * w * keep
    norms = g.norm(dim=1)
    phi = (clip / (norms + CLIP_EPS)).clamp(max=1.0) if math.isfinite(clip) else torch.ones(12, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    xi = torch.cat([torch.randn(p.shape, generator=gen).reshape(-1) for p in params]).double() * keep
    expect = ((phi[:, None] * g).sum(0) + nu * xi) / batch
    grads, got_phi = regularised_private_gradient(
        model,
        x,
        y,
        weight_decay=mu,
        clip_norm=clip,
        noise_std=nu,
        expected_batch_size=batch,
        generator=torch.Generator().manual_seed(5),
        masks=masks,
    )
    got = torch.cat([grads[n].reshape(-1) for n in names]).double()
    np.testing.assert_allclose(got_phi.double().numpy(), phi.numpy(), rtol=1e-5)
    np.testing.assert_allclose(got.numpy(), expect.numpy(), rtol=1e-4, atol=1e-6)
    if math.isfinite(clip):
        assert float(got_phi.min()) < 1.0  # the clip is active in this check


def test_polish_minimum_reaches_a_stationary_point_of_the_regularised_objective():
    from simulations.nn.warmstart import polish_minimum

    # a smooth (tanh) network: a ReLU network's objective has kinks, where a minimum has no zero gradient
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x, y = _data(n=80)
    x = x.double()
    names = [n for n, _ in model.named_parameters()]
    mask = (torch.rand(model.get_parameter(names[0]).shape, generator=torch.Generator().manual_seed(2)) > 0.5).double()
    with torch.no_grad():
        model.get_parameter(names[0]).mul_(mask)
    info = polish_minimum(model, x, y, weight_decay=0.01, masks={names[0]: mask}, max_iter=300)
    assert info["gradient_norm"] < 1e-6 * info["gradient_norm_before"]
    assert info["objective"] < info["objective_before"]
    assert float(model.get_parameter(names[0])[mask == 0].abs().max()) == 0.0
    # the measured per-example gradients of the regularised objective then have (almost) zero mean
    stats = gradient_statistics(model, x, y, masks={names[0]: mask}, weight_decay=0.01)
    assert stats.mean_gradient_norm < 1e-6 * float(np.median(stats.norms))
