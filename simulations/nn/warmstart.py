"""Continue a network from its minimum w* with one DP-SGD arm: paired streams, per-step loss log, recovery.

An *arm* is one ``dptheory.records.Optimizer`` (mode sgd | clip | noise | dpsgd, lr η, expected
batch size B, clip norm C, noise std ν on the sum). From w* it takes T plain steps (momentum 0,
constant η) of the engine's DP-SGD step (``simulations.nn.engine.private_gradient``, Opacus
semantics):

    S_t ~ Poisson(q = B/n),   w ← m ⊙ (w − η (1/B)[Σ_{i∈S_t} φ_i m⊙g_i + ν m⊙ξ_t]).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dptheory.records import Optimizer
from dptheory.validate import check_int, check_positive
from simulations.nn.engine import LossFn, default_loss, private_gradient, trainable_parameters
from simulations.nn.masks import apply_masks
from simulations.nn.measure import evaluate_loss, flat_parameters, set_flat_parameters
from simulations.nn.sampler import poisson_batch

__all__ = ["ArmTrace", "Displacement", "Problem", "Recovery", "run_arm", "stream_seeds"]


@dataclass(frozen=True)
class Problem:
    """What an arm trains: the network at w* (copied, never changed), the data and the loss.

    ``masks``: name → 0/1 tensor (pruned networks) or None; ``loss_fn``: per-sample loss (default
    cross-entropy); ``method``: the engine's per-sample gradient method; ``eval_batch_size``: batch
    size of the full-split evaluations.
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
        with torch.no_grad():
            batch_loss = float(loss_fn(self.model(xb), yb).double().sum()) / self.batch_size if idx.numel() else 0.0
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
        with torch.no_grad():
            for k, param in self.params.items():
                param.sub_(pg.grads[k], alpha=self.lr)
        if p.masks is not None:
            apply_masks(self.model, p.masks)
        if pg.batch_size:
            phi = pg.clip_factors
            return batch_loss, float((phi < 1).float().mean()), float(phi.mean())
        return batch_loss, 0.0, 1.0

    def losses(self) -> tuple[float, float]:
        p = self.problem
        kw = {"loss_fn": p.loss_fn, "batch_size": p.eval_batch_size}
        return evaluate_loss(self.model, p.x_train, p.y_train, **kw), evaluate_loss(
            self.model, p.x_test, p.y_test, **kw
        )

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
    p = arm.problem
    kw = {"loss_fn": p.loss_fn, "batch_size": p.eval_batch_size}
    at, loss = [0], [evaluate_loss(arm.model, p.x_train, p.y_train, **kw)]
    for t in range(steps):
        arm.step()
        if (t + 1) % every == 0 or t + 1 == steps:
            at.append(t + 1)
            loss.append(evaluate_loss(arm.model, p.x_train, p.y_train, **kw))
    return (np.asarray(at), np.asarray(loss)), flat_parameters(arm.model)
