"""Phase switching on a quadratic basin: does the early or the late phase decide? (claim 1)

Two phases, each a :class:`~dptheory.records.LinearDynamics`: ``before`` runs for the first s =
``switch_step`` steps, ``after`` for the remaining T − s (T = ``total_steps``). Because the mean and
second-moment recursions of each direction are closed (dptheory.quadratic), the composition is
exact (proofs/switching_formula.py):

    m_i(s)  = ρ_{b,i}^s e_i(0),               m_i(T)  = ρ_{a,i}^{T−s} m_i(s),
    v_i(s)  = ρ_{b,i}^{2s} e_i(0)² + η_b² τ_{b,i}² G^b_s,
    v_i(T)  = ρ_{a,i}^{2(T−s)} v_i(s) + η_a² τ_{a,i}² G^a_{T−s},

ρ = 1 − η a, G_t = Σ_{k<t} ρ^{2k}. The state at the switch enters the final moment only through
ρ_a^{2(T−s)}: everything that happened more than a few 1/(η a) steps before the end is forgotten.
:func:`memory_horizon` turns that into a number of steps.

Exactness: exact when both phases are unclipped (``dptheory.quadratic.noise_only_dynamics``). A
clipped phase enters through ``dptheory.clipped_dynamics.effective_linear_model``, a
mean-field (linear-response) model linearised at the optimum: the shrinkage γ is that of a small
error. Early in training, when ‖H e‖ is not small against the per-sample spread, real clipping
shrinks differently (towards a constant-speed step), so the early-phase moments of a clipped phase
are approximate; the late phase near the optimum is where the linearisation is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dptheory.quadratic import (
    ErrorMoments,
    LossCurve,
    check_curvatures,
    check_dynamics,
    check_init_error,
    check_steps,
    losses_from_moments,
    noise_only_dynamics,
    propagate_moments,
)
from dptheory.records import Basin, LinearDynamics, Optimizer
from dptheory.validate import check_int, check_nonnegative, check_probability

__all__ = [
    "SwitchSweep",
    "mean_field_switched_loss",
    "memory_horizon",
    "phase_dynamics",
    "switch_sweep",
    "switched_final_loss",
    "switched_moments",
]


@dataclass(frozen=True)
class SwitchSweep:
    """Final losses over switch steps s, in both orders.

    ``forward_*[k]``: ``before`` for s_k steps, then ``after`` (e.g. SGD → DP-SGD);
    ``reverse_*[k]``: ``after`` for s_k steps, then ``before`` (e.g. DP-SGD → SGD).
    """

    switch_steps: np.ndarray
    total_steps: int
    forward_train: np.ndarray
    forward_test: np.ndarray
    reverse_train: np.ndarray
    reverse_test: np.ndarray


def phase_dynamics(*, basin: Basin, optimizer: Optimizer) -> LinearDynamics:
    """The LinearDynamics of one phase: exact if unclipped, C's mean-field model if clipped.

    Dispatches on ``optimizer.mode``: ``sgd``/``noise`` → ``dptheory.quadratic.noise_only_dynamics``
    (exact), ``clip``/``dpsgd`` → ``dptheory.clipped_dynamics.effective_linear_model``
    (linear-response approximation at the optimum; see the module docstring for which way it errs).

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=4, curvatures=(1.0,), sample_std=1.0)
        >>> phase_dynamics(basin=b, optimizer=Optimizer(lr=0.1, batch_size=2, mode="sgd")).noise_var
        (0.5,)
    """
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
    if not optimizer.mode.clipped:
        return noise_only_dynamics(basin=basin, optimizer=optimizer)
    from dptheory.clipped_dynamics import effective_linear_model  # imported here: it imports this module

    return effective_linear_model(basin=basin, optimizer=optimizer)


def _check_pair(before: LinearDynamics, after: LinearDynamics) -> None:
    check_dynamics(before, "before")
    check_dynamics(after, "after")
    if len(before.drift) != len(after.drift) or before.flat_dim != after.flat_dim:
        raise ValueError(
            "before and after must describe the same basin: got rank "
            f"{len(before.drift)} vs {len(after.drift)}, flat_dim {before.flat_dim} vs {after.flat_dim}"
        )


def _switch_core(
    before: LinearDynamics, after: LinearDynamics, s: np.ndarray, t: np.ndarray, e0: np.ndarray, f0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact moments at times ``t`` for switch steps ``s`` (equal-length 1-D arrays)."""
    first = np.minimum(s, t)  # steps spent in the first phase by time t
    m_b, v_b, f_b = propagate_moments(before, e0, e0**2, f0, first)
    return propagate_moments(after, m_b, v_b, f_b, t - first)


def switched_moments(
    *,
    before: LinearDynamics,
    after: LinearDynamics,
    switch_step: int,
    total_steps: int,
    init_error: Any,
    init_flat_sq: float = 0.0,
    steps: Any = None,
) -> ErrorMoments:
    """Exact moments after ``before`` for s steps then ``after`` until step T.

        E e_i(t)  = ρ_{a,i}^{(t−s)₊} ρ_{b,i}^{min(s,t)} e_i(0),
        E e_i(t)² = ρ_{a,i}^{2(t−s)₊} [ρ_{b,i}^{2 min(s,t)} e_i(0)² + η_b² τ_{b,i}² G^b_{min(s,t)}]
                    + η_a² τ_{a,i}² G^a_{(t−s)₊},

    and likewise for E‖e_flat(t)‖² (module docstring). s = ``switch_step`` (0 … T; s = 0 is all
    ``after``, s = T all ``before``), T = ``total_steps``, e_i(0) = ``init_error``,
    ‖e_flat(0)‖² = ``init_flat_sq``. ``steps`` (default ``[T]``): the times 0 … T to report.
    The phases may differ in lr, drift and noise but must share rank and flat_dim. Exact for the
    linear recursions. Reference: derived here, proved in proofs/switching_formula.py.

    Example:
        >>> sgd = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(0.0,))
        >>> dp = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(1.0,))
        >>> m = switched_moments(before=dp, after=sgd, switch_step=50, total_steps=60, init_error=0.0)
        >>> round(float(m.second[0, 0]), 6)        # 0.9^20 · ητ²(1 − 0.9^100)/(a(2 − ηa))
        0.006399
    """
    _check_pair(before, after)
    total = check_int("total_steps", total_steps, minimum=0)
    check_steps(total, "total_steps")  # <= 2**53: exact in float arithmetic
    s = check_int("switch_step", switch_step, minimum=0)
    if s > total:
        raise ValueError(f"switch_step must be <= total_steps={total}, got {switch_step!r}")
    t = np.array([float(total)]) if steps is None else check_steps(steps)
    if np.any(t > total):
        raise ValueError(f"steps must be <= total_steps={total}, got max {t.max()!r}")
    e0 = check_init_error(init_error, len(before.drift))
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    mean, second, flat = _switch_core(before, after, np.full_like(t, float(s)), t, e0, f0)
    return ErrorMoments(steps=t.astype(np.int64), mean=mean, second=second, flat_sq=flat)


def _sweep_losses(
    before: LinearDynamics,
    after: LinearDynamics,
    s: np.ndarray,
    total: int,
    curvatures: Any,
    init_error: Any,
    init_flat_sq: float,
    flat_curvature: float,
    heldout: float,
) -> LossCurve:
    _check_pair(before, after)
    lam = check_curvatures(curvatures, len(before.drift))
    e0 = check_init_error(init_error, len(before.drift))
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    lf = check_nonnegative("flat_curvature", flat_curvature)
    kappa = check_nonnegative("heldout_flat_curvature", heldout)
    if np.any(s > total):
        raise ValueError(f"switch steps must be <= total_steps={total}, got max {s.max()!r}")
    t = np.full_like(s, float(total))
    _, second, flat = _switch_core(before, after, s, t, e0, f0)
    return losses_from_moments(second, flat, lam, lf, kappa)


def switched_final_loss(
    *,
    before: LinearDynamics,
    after: LinearDynamics,
    switch_step: int,
    total_steps: int,
    curvatures: Any,
    init_error: Any,
    init_flat_sq: float = 0.0,
    flat_curvature: float = 0.0,
    heldout_flat_curvature: float = 0.0,
) -> tuple[float, float]:
    """Expected final (training, held-out) loss after switching from ``before`` to ``after`` at s.

        E L(T) = ½ Σ_i λ_i E e_i(T)² + ½ λ_flat E‖e_flat(T)‖²,
        E L_test(T) = E L(T) + ½ κ E‖e_flat(T)‖²,

    moments from :func:`switched_moments`; λ_i = ``curvatures``, λ_flat = ``flat_curvature``,
    κ = ``heldout_flat_curvature``. Exact when both phases are unclipped; mean-field for a clipped
    phase (module docstring). Reference: derived here, proved in proofs/switching_formula.py.

    Example:
        >>> sgd = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(0.0,))
        >>> dp = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(1.0,))
        >>> [round(x, 6) for x in switched_final_loss(before=dp, after=sgd, switch_step=50,
        ...     total_steps=60, curvatures=(1.0,), init_error=0.0)]
        [0.003199, 0.003199]
    """
    total = check_int("total_steps", total_steps, minimum=0)
    check_steps(total, "total_steps")  # <= 2**53: exact in float arithmetic
    s = check_int("switch_step", switch_step, minimum=0)
    curve = _sweep_losses(
        before,
        after,
        np.array([float(s)]),
        total,
        curvatures,
        init_error,
        init_flat_sq,
        flat_curvature,
        heldout_flat_curvature,
    )
    return float(curve.train[0]), float(curve.test[0])


def switch_sweep(
    *,
    before: LinearDynamics,
    after: LinearDynamics,
    switch_steps: Any,
    total_steps: int,
    curvatures: Any,
    init_error: Any,
    init_flat_sq: float = 0.0,
    flat_curvature: float = 0.0,
    heldout_flat_curvature: float = 0.0,
) -> SwitchSweep:
    """Final expected losses for every switch step s in ``switch_steps``, in both orders (vectorised).

    forward: ``before`` for s steps then ``after``; reverse: ``after`` for s steps then ``before``
    (pass SGD as ``before`` and DP-SGD as ``after`` to get SGD → DP-SGD and DP-SGD → SGD).
    Formulas as :func:`switched_final_loss`.

    Theorem (proofs/switching_formula.py), used by the tests: if the phases share lr and drift and
    differ only in noise, τ_b² ≤ τ_a² in every direction, then

        v(T; s) = v_after-only(T) − η² (τ_a² − τ_b²) ρ^{2(T−s)} G_s

    so the forward final loss is non-increasing in s and the reverse one non-decreasing; the early
    phase's influence is damped by ρ^{2(T−s)} (the late phase decides).

    Example:
        >>> sgd = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(0.0,))
        >>> dp = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(1.0,))
        >>> sw = switch_sweep(before=sgd, after=dp, switch_steps=[0, 90, 100], total_steps=100,
        ...                   curvatures=(1.0,), init_error=0.0)
        >>> sw.forward_train.round(5).tolist(), sw.reverse_train.round(5).tolist()
        ([0.02632, 0.02312, 0.0], [0.0, 0.0032, 0.02632])
    """
    total = check_int("total_steps", total_steps, minimum=0)
    check_steps(total, "total_steps")  # <= 2**53: exact in float arithmetic
    s = check_steps(switch_steps, "switch_steps")
    common = (total, curvatures, init_error, init_flat_sq, flat_curvature, heldout_flat_curvature)
    fwd = _sweep_losses(before, after, s, *common)
    rev = _sweep_losses(after, before, s, *common)
    return SwitchSweep(
        switch_steps=s.astype(np.int64),
        total_steps=total,
        forward_train=fwd.train,
        forward_test=fwd.test,
        reverse_train=rev.train,
        reverse_test=rev.test,
    )


def memory_horizon(*, dynamics: LinearDynamics, tolerance: float = 0.05, include_flat: bool = False) -> float:
    """Number of final steps that decide the final loss: smallest h with ρ_i^{2h} ≤ ε in every direction.

    Statement (exact for the linear recursion): for any history, the moments h steps before the end
    enter the final second moment only through ρ_i^{2h},

        E e_i(T)² − v_i = ρ_i^{2h} (E e_i(T−h)² − v_i),   v_i = ητ_i²/(a_i(2 − ηa_i)),

    and the last h steps alone produce the fraction 1 − ρ_i^{2h} of the stationary variance v_i.
    With h = max_i ⌈log ε / log ρ_i²⌉ (ε = ``tolerance``) every direction has forgotten all but a
    fraction ε of its state at T − h, and the last h steps make ≥ (1 − ε) of its noise: the final
    loss is decided by the last h steps up to a factor ε of the earlier excess. Directions with
    a_i = 0 never forget: ``inf`` (flat directions count only with ``include_flat=True``, e.g. for a
    held-out loss that is curved there; a flat random walk remembers its whole history).
    Returns h as a float (``inf`` possible, also when h exceeds float range; 1.0 where ρ = 0).
    Raises ``ValueError`` if η a_i ≥ 2.
    Reference: derived here, proved in proofs/switching_formula.py.

    Example:
        >>> memory_horizon(dynamics=LinearDynamics(lr=0.1, drift=(1.0, 2.0), noise_var=(1.0, 1.0)),
        ...                tolerance=0.05)          # ⌈log 0.05 / log 0.81⌉ for the slowest direction
        15.0
    """
    check_dynamics(dynamics)
    eps = check_probability("tolerance", tolerance, open_left=True)
    a = np.asarray(dynamics.drift, dtype=float)
    if include_flat and dynamics.flat_dim > 0:
        a = np.append(a, dynamics.flat_drift)
    x = dynamics.lr * a
    if np.any(x >= 2):
        raise ValueError(f"lr * drift must be < 2 for a finite memory (divergent), got {x.max()!r}")
    if eps == 1.0 or a.size == 0:
        return 0.0
    with np.errstate(divide="ignore"):
        log_r2 = np.log1p(-x * (2.0 - x))  # log ρ², accurate for tiny ηa (ρ² would round to 1)
    if np.any(log_r2 == 0.0):
        return float("inf")
    lr2 = log_r2[np.isfinite(log_r2)]  # ρ = 0 (log ρ² = −inf) forgets in one step
    h = 1.0 if lr2.size < log_r2.size else 0.0
    if lr2.size:
        log_eps = np.log(eps)
        with np.errstate(over="ignore"):  # a horizon beyond float range comes back as inf
            k = np.maximum(0.0, np.ceil(log_eps / lr2))
        k = np.where((k > 0) & ((k - 1) * lr2 <= log_eps), k - 1, k)  # guard the rounding of the
        k = np.where(k * lr2 > log_eps, k + 1, k)  # logarithms both ways (costs at most one step)
        h = max(h, float(k.max()))
    return h


def mean_field_switched_loss(
    *, basin: Basin, before: Optimizer, after: Optimizer, switch_step: int, total_steps: int, init_error: float
) -> float:
    """Final E L(T) of the mean-field recursion: ``before`` for s steps, then ``after`` (equal λ only).

    s = ``switch_step``, T = ``total_steps``, ``init_error`` = ‖e(0)‖ spread equally over the r curved
    axes.
    With equal curvatures λ every curved direction has the same second moment v(t) = 2 L(t)/(λ r),
    and the recursion of ``expected_loss_curve`` depends on the state only through these moments,
    so restarting phase 2 from init_error = √v(s) per coordinate is exact in the model. Returns NaN
    for unequal curvatures.
    """
    from dptheory.clipped_dynamics import expected_loss_curve

    lam = basin.curvature_array
    if not np.all(lam == lam[0]):
        return math.nan
    r = basin.rank
    coord = init_error / math.sqrt(r)
    if switch_step > 0:
        loss_s = float(
            np.asarray(expected_loss_curve(basin=basin, optimizer=before, steps=switch_step, init_error=coord))[
                switch_step
            ]
        )
        coord = math.sqrt(2.0 * loss_s / (lam[0] * r))
    rest = total_steps - switch_step
    if rest == 0:
        return 0.5 * float(lam[0]) * r * coord**2
    return float(np.asarray(expected_loss_curve(basin=basin, optimizer=after, steps=rest, init_error=coord))[rest])
