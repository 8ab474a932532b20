"""Continue a network from its minimum w* with one DP-SGD arm: paired streams, per-step loss log, recovery.

An *arm* is one ``dptheory.records.Optimizer`` (mode sgd | clip | noise | dpsgd, lr η, expected
batch size B, clip norm C, noise std ν on the sum). From w* it takes T plain steps (momentum 0,
constant η) of the engine's DP-SGD step (``simulations.nn.engine.private_gradient``, Opacus
semantics):

    S_t ~ Poisson(q = B/n),   w ← m ⊙ (w − η (1/B)[Σ_{i∈S_t} φ_i m⊙g_i + ν m⊙ξ_t]).

**Regularised objective.** With ``weight_decay`` μ > 0 every example's objective is
f_i(w) = ℓ_i(w) + (μ/2)‖m⊙w‖², so the training objective L_μ = (1/n) Σ_i f_i has a finite minimum
(cross-entropy alone has none on data a network can interpolate) and the per-example gradient that
is clipped is g̃_i = m⊙g_i + μ m⊙w (the regulariser inside the clip: the mean of the clipped
gradients is then the quantity a model of clipping at a minimum, mean_i g̃_i(w*) = 0, describes).
Its norm needs no materialised gradient: ‖g̃_i‖² = ‖m⊙g_i‖² + 2μ (m⊙w)ᵀg_i + μ²‖m⊙w‖², with ‖m⊙g_i‖
from the engine and (m⊙w)ᵀg_i the directional derivative of ℓ_i along m⊙w (one forward-mode JVP
for the whole batch), and Σ_i φ_i g̃_i = m⊙∇_w Σ_i φ_i ℓ_i + μ (Σ_i φ_i) m⊙w (one weighted backward
pass; for Linear-only networks both come from one hooked forward/backward pass instead, since
(m⊙w)ᵀg_i = Σ_layers δ_iᵀ z_i with z_i = W a_i + b the layer's output and δ_i = ∂ℓ_i/∂z_i, and
Σ_i φ_i g_i = Σ_layers (Δᵀ diag(φ) A, Δᵀφ)). Losses are then of L_μ (training) and of the plain loss (test). :func:`polish_minimum` finds
the minimum of L_μ by full-batch L-BFGS.

**Paired streams.** The batches S_t come from a CPU generator and ξ_t from a generator on the
model's device, both seeded from ``seed`` only (:func:`stream_seeds`); ξ_t is drawn in every
mode, also when ν = 0. Arms with the same seed therefore see the same S_t and the same ξ_t, and
their differences are paired (their SE is that of the differences).

**Loss log.** At every step t the loss of the Poisson batch is recorded *before* the update,

    L̂_t = (1/B) Σ_{i∈S_t} ℓ_i(w_t)        (Horvitz–Thompson: divide by the expected size B),

an **unbiased** estimator of the training loss L(w_t): S_t is drawn independently of w_t (which
depends on S_0 … S_{t−1} only) and each example enters with probability q, so E[L̂_t | w_t] =
(1/B) Σ_i q ℓ_i(w_t) = L(w_t). It costs one forward pass on the batch. Every ``eval_every`` steps
(and at t = 0) the exact training and test losses (full splits) are recorded as well.

**Recovery.** After the T steps the state (weights and both generator states) is saved; a
reference continues for R steps, and for each displacement u (a flat unit vector) a copy starts
from w_T + δ m⊙u and continues for R steps with the *same* streams. The excess
L(w_disp,t) − L(w_ref,t) (full training loss, every ``recovery_eval_every`` steps, t = 0 included)
is the recovery curve; the retained projection u·(w_disp,R − w_ref,R)/δ says how much of the
displacement is left at the end.

Example (a second on a CPU):
    >>> import torch
    >>> from dptheory.records import Optimizer
    >>> from simulations.nn.models import build_model
    >>> net = build_model("mlp", input_shape=(4,), num_classes=2, width=8, depth=1, seed=0)
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(100, 4, generator=g), torch.randint(0, 2, (100,), generator=g)
    >>> problem = Problem(model=net, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    >>> sgd = run_arm(problem, Optimizer(lr=0.1, batch_size=10, mode="sgd"), steps=30, seed=0, eval_every=10)
    >>> noise0 = run_arm(problem, Optimizer(lr=0.1, batch_size=10, mode="noise", clip_norm=1.0), steps=30, seed=0,
    ...                  eval_every=10)
    >>> sgd.batch_loss.shape, bool((sgd.batch_loss == noise0.batch_loss).all())   # ν = 0: the same run
    ((30,), True)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from dptheory.records import Optimizer
from dptheory.validate import check_int, check_positive
from simulations.nn.engine import (
    CLIP_EPS,
    LossFn,
    bk_applicable,
    default_loss,
    private_gradient,
    trainable_parameters,
)
from simulations.nn.masks import apply_masks
from simulations.nn.measure import evaluate_loss, flat_parameters, set_flat_parameters
from simulations.nn.sampler import poisson_batch

__all__ = [
    "ArmTrace",
    "Displacement",
    "Problem",
    "Recovery",
    "polish_minimum",
    "regularised_private_gradient",
    "run_arm",
    "stream_seeds",
]


@dataclass(frozen=True)
class Problem:
    """What an arm trains: the network at w* (copied, never changed), the data and the loss.

    ``masks``: name → 0/1 tensor (pruned networks) or None; ``loss_fn``: per-sample loss (default
    cross-entropy); ``method``: the engine's per-sample gradient method; ``eval_batch_size``: batch
    size of the full-split evaluations; ``weight_decay``: μ ≥ 0 of the per-example objective
    ℓ_i + (μ/2)‖m⊙w‖² (module docstring).
    """

    model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    masks: Mapping[str, torch.Tensor] | None = None
    loss_fn: LossFn | None = None
    method: str = "auto"
    eval_batch_size: int = 2048
    weight_decay: float = 0.0

    @property
    def n_train(self) -> int:
        """n: training examples."""
        return int(self.x_train.shape[0])


@dataclass(frozen=True)
class Displacement:
    """A displacement w ← w + ``size`` · m⊙u after the arm's T steps; u = ``direction`` (flat, unit)."""

    name: str
    direction: torch.Tensor
    size: float


@dataclass(frozen=True)
class Recovery:
    """One displacement's recovery curve (module docstring).

    ``steps`` (R',) the recorded steps after the displacement (0 first); ``excess`` (R',) =
    L(w_disp) − L(w_ref) at those steps; ``retained`` = u·(w_disp,R − w_ref,R)/δ.
    """

    steps: np.ndarray
    excess: np.ndarray
    retained: float


@dataclass(frozen=True)
class ArmTrace:
    """The record of one arm (module docstring): per-step arrays (T,) and evaluations (E,).

    ``batch_loss`` = L̂_t; ``clip_fraction`` = share of the batch with φ_i < 1; ``mean_clip_factor``
    = mean φ_i over the batch (1 for an empty batch); ``eval_steps`` (E,) with ``train_loss`` and
    ``test_loss`` (full splits) there; ``recovery`` by displacement name.
    """

    batch_loss: np.ndarray
    clip_fraction: np.ndarray
    mean_clip_factor: np.ndarray
    eval_steps: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    recovery: dict[str, Recovery] = field(default_factory=dict)


def stream_seeds(seed: int) -> tuple[int, int]:
    """(batch-sampling seed, noise seed) derived from ``seed`` (``numpy.random.SeedSequence``)."""
    kids = np.random.SeedSequence([int(seed), 0x5EED]).generate_state(2, dtype=np.uint64)
    return int(kids[0] >> 1), int(kids[1] >> 1)


class _Arm:
    """The mutable state of one arm: a private copy of the model and its two generators."""

    def __init__(self, problem: Problem, optimizer: Optimizer, seed: int):
        self.problem = problem
        self.model = copy.deepcopy(problem.model)
        self.params = trainable_parameters(self.model)
        device = next(self.model.parameters()).device
        s_batch, s_noise = stream_seeds(seed)
        self.sampler = torch.Generator().manual_seed(s_batch)
        self.noise = torch.Generator(device=device).manual_seed(s_noise)
        self.device = device
        self.lr = optimizer.lr
        self.batch_size = optimizer.batch_size
        self.clip = optimizer.effective_clip_norm
        self.nu = optimizer.noise_std
        self.q = optimizer.batch_size / problem.n_train
        if self.q > 1:
            raise ValueError(f"batch_size must be <= n ({problem.n_train}), got {optimizer.batch_size}")

    def step(self) -> tuple[float, float, float]:
        """One step; returns (L̂_t, clip fraction, mean clip factor) of the batch it used."""
        p = self.problem
        loss_fn = p.loss_fn or default_loss
        idx = poisson_batch(n=p.n_train, sample_rate=self.q, generator=self.sampler).to(self.device)
        xb, yb = p.x_train[idx], p.y_train[idx]
        mu = p.weight_decay
        with torch.no_grad():
            batch_loss = float(loss_fn(self.model(xb), yb).double().sum()) / self.batch_size if idx.numel() else 0.0
            if mu > 0:
                batch_loss += idx.numel() / self.batch_size * 0.5 * mu * self.weight_sq()
        if mu > 0:
            grads, phi = regularised_private_gradient(
                self.model,
                xb,
                yb,
                weight_decay=mu,
                clip_norm=self.clip,
                noise_std=self.nu,
                expected_batch_size=self.batch_size,
                generator=self.noise,
                masks=p.masks,
                loss_fn=p.loss_fn,
                method=p.method,
            )
        else:
            pg = private_gradient(
                self.model,
                xb,
                yb,
                clip_norm=self.clip,
                noise_std=self.nu,
                expected_batch_size=self.batch_size,
                generator=self.noise,
                masks=p.masks,
                loss_fn=p.loss_fn,
                method=p.method,
            )
            grads, phi = pg.grads, pg.clip_factors
        with torch.no_grad():
            for k, param in self.params.items():
                param.sub_(grads[k], alpha=self.lr)
        if p.masks is not None:
            apply_masks(self.model, p.masks)
        if phi.numel():
            return batch_loss, float((phi < 1).float().mean()), float(phi.mean())
        return batch_loss, 0.0, 1.0

    def weight_sq(self) -> float:
        """‖m⊙w‖² (pruned weights are exactly 0)."""
        return float(sum(param.detach().double().pow(2).sum() for param in self.params.values()))

    def losses(self) -> tuple[float, float]:
        """(L_μ on the training split, plain loss on the test split)."""
        p = self.problem
        kw: dict[str, Any] = {"loss_fn": p.loss_fn, "batch_size": p.eval_batch_size}
        train = evaluate_loss(self.model, p.x_train, p.y_train, **kw) + 0.5 * p.weight_decay * self.weight_sq()
        return train, evaluate_loss(self.model, p.x_test, p.y_test, **kw)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return flat_parameters(self.model).clone(), self.sampler.get_state(), self.noise.get_state()

    def restore(self, snap: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        set_flat_parameters(self.model, snap[0])
        self.sampler.set_state(snap[1])
        self.noise.set_state(snap[2])


def run_arm(
    problem: Problem,
    optimizer: Optimizer,
    *,
    steps: int,
    seed: int,
    eval_every: int = 10,
    displacements: Sequence[Displacement] = (),
    recovery_steps: int = 0,
    recovery_eval_every: int = 1,
) -> ArmTrace:
    """Run one arm from w* for ``steps`` steps, then the recoveries from ``displacements`` (module docstring).

    Args:
        problem: the network at w*, data, loss, masks (:class:`Problem`).
        optimizer: the arm's step (mode, η, B, C, σ, C_ref); momentum is 0 by construction.
        steps: T ≥ 1.
        seed: the streams' seed (same seed → same batches and ξ in every arm).
        eval_every: full-split evaluations every this many steps (and at t = 0).
        displacements: recoveries to measure after the T steps (may be empty).
        recovery_steps: R, steps of each recovery run (and of the shared reference).
        recovery_eval_every: full training-loss evaluation interval during recovery.

    Returns:
        :class:`ArmTrace`.

    Raises:
        ValueError: for a non-positive count or a batch size above n.
    """
    steps = check_int("steps", steps, minimum=1)
    eval_every = check_int("eval_every", eval_every, minimum=1)
    recovery_steps = check_int("recovery_steps", recovery_steps, minimum=0)
    recovery_eval_every = check_int("recovery_eval_every", recovery_eval_every, minimum=1)
    if displacements and recovery_steps == 0:
        raise ValueError("displacements need recovery_steps >= 1, got 0")
    arm = _Arm(problem, optimizer, seed)
    batch, frac, mean_phi = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    train0, test0 = arm.losses()
    ev_steps, ev_train, ev_test = [0], [train0], [test0]
    for t in range(steps):
        batch[t], frac[t], mean_phi[t] = arm.step()
        if (t + 1) % eval_every == 0:
            tr, te = arm.losses()
            ev_steps.append(t + 1)
            ev_train.append(tr)
            ev_test.append(te)
    recoveries = {}
    if displacements:
        snap = arm.snapshot()
        reference, w_ref = _recovery_curve(arm, recovery_steps, recovery_eval_every)
        keep = None
        if problem.masks is not None:
            from simulations.nn.hessian import kept_vector

            keep = kept_vector(arm.model, problem.masks)
        for disp in displacements:
            check_positive("displacement size", disp.size)
            u = disp.direction.to(device=snap[0].device, dtype=snap[0].dtype).reshape(-1)
            if keep is not None:
                u = u * keep
            arm.restore((snap[0] + disp.size * u, snap[1], snap[2]))
            curve, w_disp = _recovery_curve(arm, recovery_steps, recovery_eval_every)
            retained = float(((w_disp - w_ref).double() @ u.double()) / (disp.size * float(u.double() @ u.double())))
            recoveries[disp.name] = Recovery(steps=curve[0], excess=curve[1] - reference[1], retained=retained)
        arm.restore(snap)
    return ArmTrace(
        batch_loss=batch,
        clip_fraction=frac,
        mean_clip_factor=mean_phi,
        eval_steps=np.asarray(ev_steps),
        train_loss=np.asarray(ev_train),
        test_loss=np.asarray(ev_test),
        recovery=recoveries,
    )


def _recovery_curve(arm: _Arm, steps: int, every: int) -> tuple[tuple[np.ndarray, np.ndarray], torch.Tensor]:
    """((recorded steps, full training loss), final flat weights) of ``steps`` steps from the arm's state."""
    at, loss = [0], [arm.losses()[0]]
    for t in range(steps):
        arm.step()
        if (t + 1) % every == 0 or t + 1 == steps:
            at.append(t + 1)
            loss.append(arm.losses()[0])
    return (np.asarray(at), np.asarray(loss)), flat_parameters(arm.model)


def regularised_private_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_decay: float,
    clip_norm: float,
    noise_std: float,
    expected_batch_size: float,
    generator: torch.Generator,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    method: str = "auto",
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(1/B)[Σ_i φ_i g̃_i + ν m⊙ξ] for g̃_i = m⊙g_i + μ m⊙w (module docstring); returns (grads, φ).

    φ_i = min(1, C/(‖g̃_i‖ + 1e-6)) (the engine's clip factor, Opacus semantics), μ = ``weight_decay``,
    C = ``clip_norm`` (``math.inf``: φ = 1), ν = ``noise_std``, B = ``expected_batch_size``; ξ is the
    engine's draw from ``generator`` (the same stream as :func:`~simulations.nn.engine.private_gradient`).
    The weights must already be masked (m⊙w = w).
    """
    from torch.func import functional_call, jvp

    loss_fn = loss_fn or default_loss
    params = trainable_parameters(model)
    pg = private_gradient(
        model,
        x,
        y,
        clip_norm=math.inf,
        noise_std=noise_std,
        expected_batch_size=expected_batch_size,
        generator=generator,
        masks=masks,
        loss_fn=loss_fn,
        method=method,
        keep_sums=True,
    )
    assert pg.unclipped_sum is not None  # keep_sums=True
    w = {k: p.detach() for k, p in params.items()}
    count = pg.batch_size
    noise = {k: pg.grads[k] - pg.unclipped_sum[k] / expected_batch_size for k in params}
    if count == 0:
        return noise, torch.zeros(0, device=next(iter(w.values())).device)
    if math.isinf(clip_norm):
        phi = torch.ones(count, device=x.device)
        total = {k: pg.unclipped_sum[k] + weight_decay * count * w[k] for k in params}
        return {k: total[k] / expected_batch_size + noise[k] for k in params}, phi
    w_sq = sum(v.double().pow(2).sum() for v in w.values())
    layers = _linear_layers(model, x, y, loss_fn) if bk_applicable(model) else None
    if layers is not None:  # Linear-only: (m⊙w)ᵀg_i = Σ_layers δ_i·z_i, Σ φ_i g_i = Σ_layers Δᵀ diag(φ) A
        along = sum((d * z).sum(1) for _, _, d, z in layers)
        sq = pg.per_sample_norms.double() ** 2 + 2 * weight_decay * along.double() + weight_decay**2 * w_sq
        phi = (clip_norm / (sq.clamp(min=0).sqrt() + CLIP_EPS)).clamp(max=1.0).to(pg.per_sample_norms.dtype)
        name_of = {id(p): k for k, p in params.items()}
        total = {k: weight_decay * float(phi.sum()) * w[k] for k in params}
        for module, a, d, _ in layers:
            dphi = d * phi.to(d.dtype).unsqueeze(1)
            if module.weight.requires_grad:
                total[name_of[id(module.weight)]] = total[name_of[id(module.weight)]] + dphi.t() @ a
            if module.bias is not None and module.bias.requires_grad:
                total[name_of[id(module.bias)]] = total[name_of[id(module.bias)]] + dphi.sum(0)
        if masks is not None:
            for k, m in masks.items():
                total[k] = total[k] * m
    else:
        buffers = {k: b.detach() for k, b in model.named_buffers()}

        def losses(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return loss_fn(functional_call(model, (p, buffers), (x,)), y)

        along = jvp(losses, (w,), (w,))[1]  # (m⊙w)ᵀ g_i for every example (w is masked)
        sq = pg.per_sample_norms.double() ** 2 + 2 * weight_decay * along.double() + weight_decay**2 * w_sq
        phi = (clip_norm / (sq.clamp(min=0).sqrt() + CLIP_EPS)).clamp(max=1.0).to(pg.per_sample_norms.dtype)
        weighted = (phi.detach().to(along.dtype) * loss_fn(model(x), y)).sum()
        g = torch.autograd.grad(weighted, list(params.values()), allow_unused=True)
        total = {}
        for (k, p), gk in zip(params.items(), g):
            gk = torch.zeros_like(p) if gk is None else gk.detach()
            if masks is not None and k in masks:
                gk = gk * masks[k]
            total[k] = gk + weight_decay * float(phi.sum()) * w[k]
    return {k: total[k] / expected_batch_size + noise[k] for k in params}, phi


def _linear_layers(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> list | None:
    """[(module, a, δ, z)] of every nn.Linear (input a, output z, δ = ∂Σ_i ℓ_i/∂z), or None if a layer is
    not called exactly once on a 2-D input (then the general JVP path is used)."""
    records: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        records.append((cast(nn.Linear, module), inputs[0].detach(), output))  # hooked on nn.Linear only

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    if len({id(m) for m, _, _ in records}) != len(records) or any(a.dim() != 2 for _, a, _ in records):
        return None
    outputs = [z for _, _, z in records]
    deltas = torch.autograd.grad(loss_fn(out, y).sum(), outputs, allow_unused=True)
    return [
        (m, a, torch.zeros_like(z) if d is None else d.detach(), z.detach()) for (m, a, z), d in zip(records, deltas)
    ]


def polish_minimum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_decay: float,
    masks: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    max_iter: int = 500,
) -> dict[str, float]:
    """Minimise L_μ(w) = (1/n) Σ_i ℓ_i(w) + (μ/2)‖m⊙w‖² over the kept weights by full-batch L-BFGS, in place.

    ``torch.optim.LBFGS`` (history 50, strong-Wolfe line search; Nocedal & Wright 2006, Alg. 7.5) for at
    most ``max_iter`` iterations (``4·max_iter`` evaluations) from the model's current weights; gradients
    are masked, so pruned weights stay 0. A ReLU network's objective is only piecewise smooth: near a
    minimum on a kink the gradient norm stalls at a level set by the kinks rather than going to 0. Returns the objective and the gradient norm ‖∇L_μ‖ before and after, and the
    iterations used (the caller decides whether the gradient is small enough: a plateau criterion).
    """
    max_iter = check_int("max_iter", max_iter, minimum=1)
    loss_fn = loss_fn or default_loss
    params = trainable_parameters(model)
    plist = list(params.values())

    def objective() -> torch.Tensor:
        value = loss_fn(model(x), y).mean()
        if weight_decay > 0:
            value = value + 0.5 * weight_decay * sum(p.pow(2).sum() for p in plist)
        return value

    def gradient_norm() -> tuple[float, float]:
        with torch.enable_grad():
            value = objective()
            gs = torch.autograd.grad(value, plist)
        sq = 0.0
        for (k, _), g in zip(params.items(), gs):
            if masks is not None and k in masks:
                g = g * masks[k]
            sq += float(g.double().pow(2).sum())
        return float(value.detach()), math.sqrt(sq)

    before = gradient_norm()
    opt = torch.optim.LBFGS(
        plist,
        lr=1.0,
        max_iter=max_iter,
        max_eval=4 * max_iter,
        tolerance_grad=1e-12,
        tolerance_change=0.0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        value = objective()
        value.backward()
        if masks is not None:
            for k, p in params.items():
                if k in masks and p.grad is not None:
                    p.grad.mul_(masks[k])
        return value

    with torch.enable_grad():
        opt.step(closure)
    if masks is not None:
        apply_masks(model, masks)
    for p in plist:
        p.grad = None
    after = gradient_norm()
    iters = int(opt.state[plist[0]].get("n_iter", 0)) if plist else 0
    return {
        "objective_before": before[0],
        "gradient_norm_before": before[1],
        "objective": after[0],
        "gradient_norm": after[1],
        "iterations": iters,
    }
