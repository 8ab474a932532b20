"""Noisy gradient descent on a quadratic basin: exact discrete-time moments.

Every function reads a :class:`~dptheory.records.LinearDynamics`, the per-direction recursion

    e_i(t+1) = ρ_i e_i(t) + η τ_i ξ_i(t),   ρ_i = 1 − η a_i,   ξ_i(t) ~ N(0, 1) i.i.d.,

so the unclipped step (``noise_only_dynamics``, exact) and the clipped mean-field model
(``dptheory.clipped_dynamics.effective_linear_model``) plug in alike. The two moment recursions

    E e_i(t+1) = ρ_i E e_i(t),        E e_i(t+1)² = ρ_i² E e_i(t)² + η² τ_i²

are closed (ξ is independent of the past and has mean 0), and solve to (proofs/noise_only_variance.py)

    E e_i(t)  = ρ_i^t e_i(0),
    E e_i(t)² = ρ_i^{2t} E e_i(0)² + η² τ_i² G_t(u_i),   G_t(u) = Σ_{k<t} (1 − u)^k = (1 − (1 − u)^t)/u,

with u_i = 1 − ρ_i² = η a_i (2 − η a_i). G_t is evaluated as −expm1(t·log1p(−u))/u, which has no
cancellation for u → 0 (a_i → 0, the random walk G_t = t, and η a_i → 2, the marginal oscillation)
and is exact at u = 1 (η a_i = 1, ρ = 0, G_t = 1 for t ≥ 1).

Symbols → arguments: η = ``dynamics.lr``, a_i = ``dynamics.drift``, τ_i² = ``dynamics.noise_var``,
λ_i = ``curvatures`` (the curvature that *measures* the loss; a_i ≠ λ_i under clipping),
e_i(0) = ``init_error``, ‖e_flat(0)‖² = ``init_flat_sq``, t = ``steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from dptheory.records import Basin, LinearDynamics, Optimizer
from dptheory.validate import check_finite, check_int, check_nonnegative, check_positive

__all__ = [
    "ErrorMoments",
    "LossCurve",
    "error_moments",
    "expected_loss",
    "flat_error_sq",
    "noise_only_dynamics",
    "recovery_time",
    "relaxation_time",
    "stationary_covariance",
    "stationary_loss",
    "stationary_loss_general",
    "stationary_second_moments",
    "stationary_variance",
]


@dataclass(frozen=True)
class ErrorMoments:
    """Moments of the error at each requested step (leading axis = ``steps``).

    ``mean[k, i]`` = E e_i(t_k), ``second[k, i]`` = E e_i(t_k)², ``flat_sq[k]`` = E‖e_flat(t_k)‖²
    (summed over the ``flat_dim`` flat directions).
    """

    steps: np.ndarray
    mean: np.ndarray
    second: np.ndarray
    flat_sq: np.ndarray


class LossCurve(NamedTuple):
    """Expected training loss E L(t) and held-out loss E L_test(t) at each requested step."""

    train: np.ndarray
    test: np.ndarray


# ----------------------------------------------------------------------------------------------
# construction


def noise_only_dynamics(*, basin: Basin, optimizer: Optimizer) -> LinearDynamics:
    """Exact linear dynamics of an unclipped step (``Mode.SGD`` or ``Mode.NOISE``) on the basin.

    With a fixed batch of B fresh samples g_j = H e + s ζ_j and no clipping, the step of
    records.py is  e ← (I − ηH) e − η [ (s/B) Σ_j ζ_j + (ν/B) ξ ],  so per coordinate

        a_i = λ_i (curved),  a_flat = λ_flat,
        τ² = s²/B · 1{coordinate in the support of ζ} + ν²/B²,

    where the support is all d coordinates for ``spread="ambient"`` and only the r curved ones for
    ``spread="basin"`` (then τ_flat² = ν²/B²). ν = ``optimizer.noise_std`` (σ·C_ref in mode
    ``noise``, 0 in mode ``sgd``). The sign of the noise is irrelevant (it is symmetric).

    Assumptions: exactly B samples per step (fixed batches). Under Poisson sampling the batch size
    N is random and the drift becomes (N/B)H — a multiplicative noise this exact map omits.
    Reference: derived here, variance identity in proofs/noise_only_variance.py.

    Raises ``ValueError`` for the clipped modes (``clip``, ``dpsgd``): use
    ``dptheory.clipped_dynamics.effective_linear_model`` for those.

    Example:
        >>> from dptheory.records import Basin, Optimizer
        >>> b = Basin(dim=10, curvatures=(1.0, 0.5), sample_std=2.0)
        >>> o = Optimizer(lr=0.1, batch_size=4, clip_norm=1.0, noise_multiplier=2.0, mode="noise")
        >>> dyn = noise_only_dynamics(basin=b, optimizer=o)
        >>> dyn.drift, dyn.noise_var, dyn.flat_dim     # τ² = 4/4 + 2²/4²
        ((1.0, 0.5), (1.25, 1.25), 8)
    """
    if not isinstance(basin, Basin):
        raise ValueError(f"basin must be a Basin, got {type(basin).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
    if optimizer.mode.clipped:
        raise ValueError(
            f"optimizer.mode must be unclipped ('sgd' or 'noise') for noise_only_dynamics, got "
            f"{optimizer.mode.value!r}; use dptheory.clipped_dynamics.effective_linear_model"
        )
    b = optimizer.batch_size
    sample_var = basin.sample_std**2 / b
    dp_var = optimizer.noise_std**2 / b**2
    flat_var = dp_var + (sample_var if basin.spread == "ambient" else 0.0)
    return LinearDynamics(
        lr=optimizer.lr,
        drift=basin.curvatures,
        noise_var=(sample_var + dp_var,) * basin.rank,
        flat_dim=basin.flat_dim,
        flat_drift=basin.flat_curvature,
        flat_noise_var=flat_var,
    )


# ----------------------------------------------------------------------------------------------
# private helpers shared with dptheory.switching


def check_dynamics(dynamics: LinearDynamics, name: str = "dynamics") -> LinearDynamics:
    """``dynamics`` if it is a :class:`~dptheory.records.LinearDynamics`, else ``ValueError`` naming ``name``."""
    if not isinstance(dynamics, LinearDynamics):
        raise ValueError(f"{name} must be a LinearDynamics, got {type(dynamics).__name__}")
    return dynamics


def check_steps(steps: Any, name: str = "steps") -> np.ndarray:
    """1-D float array of non-negative integer step counts (a scalar becomes shape (1,))."""
    t = np.atleast_1d(np.asarray(steps, dtype=float))
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"{name} must be a non-negative integer or a 1-D sequence of them, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t != np.round(t)) or np.any(t > 2.0**53):
        bad = t[~(np.isfinite(t) & (t >= 0) & (t == np.round(t)) & (t <= 2.0**53))][:3]
        raise ValueError(f"{name} must be non-negative integers <= 2**53, got e.g. {bad.tolist()}")
    return t


def check_init_error(init_error: Any, rank: int) -> np.ndarray:
    """e(0) on the r = ``rank`` curved axes as a finite length-r array (a scalar is repeated)."""
    e0 = np.asarray(init_error, dtype=float)
    if e0.ndim == 0:
        e0 = np.full(rank, float(e0))
    if e0.shape != (rank,):
        raise ValueError(f"init_error must be a scalar or have length {rank} (the rank), got shape {e0.shape}")
    if not np.all(np.isfinite(e0)):
        raise ValueError(f"init_error must be finite, got e.g. {e0[~np.isfinite(e0)][:3].tolist()}")
    return e0


def check_curvatures(curvatures: Any, rank: int) -> np.ndarray:
    """λ as a finite, non-negative length-r array (r = ``rank`` = len(dynamics.drift))."""
    lam = np.atleast_1d(np.asarray(curvatures, dtype=float))
    if lam.shape != (rank,):
        raise ValueError(f"curvatures must have length {rank} (len(dynamics.drift)), got shape {lam.shape}")
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError(f"curvatures must be finite and >= 0, got e.g. {lam[:3].tolist()}")
    return lam


def _decay_sq(lr: float, drift: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ρ^{2t}, G_t) for u = ηa(2 − ηa), broadcast over ``t`` (shape (..., 1)) and ``drift``.

    G_t(u) = Σ_{k<t} (1−u)^k = −expm1(t·log1p(−u))/u, G_t(0) = t. Exact for every ηa ≥ 0 at finite
    t; for ηa > 2 both grow geometrically and overflow to inf (no warning) beyond float range.
    """
    x = lr * np.asarray(drift, dtype=float)
    u = x * (2.0 - x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_q = np.log1p(-u)  # log ρ², −inf at ρ = 0
        tl = np.where(t == 0, 0.0, t * log_q)
        decay = np.exp(tl)
        geom = np.where(u == 0, t, -np.expm1(tl) / np.where(u == 0, 1.0, u))
    return decay, geom


def propagate_moments(
    dynamics: LinearDynamics, mean0: Any, second0: Any, flat_sq0: Any, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact moments after ``t`` steps of ``dynamics`` from given first/second moments.

    ``mean0``/``second0`` broadcast against shape (len(t), r); ``flat_sq0`` against (len(t),).
    """
    tt = t[:, None]
    a = np.asarray(dynamics.drift, dtype=float)
    tau2 = np.asarray(dynamics.noise_var, dtype=float)
    eta = dynamics.lr
    rho = 1.0 - eta * a
    decay, geom = _decay_sq(eta, a, tt)
    fdecay, fgeom = _decay_sq(eta, np.array([dynamics.flat_drift]), tt)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = _times(np.power(rho, tt), mean0)
        second = _times(decay, second0) + _times(eta**2 * tau2, geom)
        flat_noise = dynamics.flat_dim * eta**2 * dynamics.flat_noise_var
        flat = _times(fdecay[:, 0], flat_sq0) + _times(flat_noise, fgeom[:, 0])
    return mean, second, flat


def _times(x: Any, y: Any) -> np.ndarray:
    """x · y with 0 · inf = 0: a zero initial moment or zero noise contributes nothing, even divergent."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where((np.asarray(x) == 0) | (np.asarray(y) == 0), 0.0, np.multiply(x, y))


def _stationary_second(dynamics: LinearDynamics, a: np.ndarray, tau2: np.ndarray, name: str) -> np.ndarray:
    """v = ητ²/(a(2 − ηa)) (:func:`stationary_variance`, κ = 0); ValueError if ηa ≥ 2."""
    x = dynamics.lr * a
    if np.any(x >= 2):
        raise ValueError(f"lr * {name} must be < 2 for a stationary state (divergent), got {x.max()!r}")
    return stationary_variance(lr=dynamics.lr, drift=a, noise_var=tau2)


def stationary_variance(*, lr: float, drift: Any, noise_var: Any, multiplicative: float = 0.0) -> np.ndarray:
    """Stationary second moment of the linear recursion with additive and multiplicative noise.

        v = η q / (a (2 − η a (1 + κ))),   the fixed point of   v' = [(1 − η a)² + η² κ a²] v + η² q,

    the second-moment recursion of e' = (1 − ηa) e + η(noise of variance q + κa²e²). η = ``lr``,
    a = ``drift``, q = ``noise_var`` (arrays broadcast), κ = ``multiplicative`` (1/B for Poisson batches
    of expected size B, whose random size adds Var(N)/B² · (a e)² to the update; 0 for fixed batches).
    Returns ``inf`` where the bracket is ≥ 1 (no stationary state: a = 0 or η a (1 + κ) ≥ 2) and q > 0,
    and 0 where q = 0. Exact. Reference: derived here, proved in proofs/clipped_stationary.py (κ = 0:
    proofs/noise_only_variance.py).

    Example:
        >>> stationary_variance(lr=0.5, drift=1.0, noise_var=3.0).tolist()
        1.0
        >>> float(stationary_variance(lr=1.0, drift=1.0, noise_var=1.0, multiplicative=0.25))  # 1/(2 − 1.25)
        1.3333333333333333
    """
    a = np.asarray(drift, dtype=float)
    q = np.asarray(noise_var, dtype=float)
    den = a * (2.0 - lr * a * (1.0 + multiplicative))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(den > 0, lr * q / np.where(den > 0, den, 1.0), np.inf)
    return np.where(q == 0, 0.0, v)


def stationary_second_moments(*, dynamics: LinearDynamics) -> np.ndarray:
    """Stationary second moments v_i = η τ_i² / (a_i (2 − η a_i)) of the curved directions.

    The fixed point of E e_i² ← (1 − ηa_i)² E e_i² + η² τ_i² for the recursion e ← (1 − ηa) e + ητ ξ.
    a_i = ``dynamics.drift``, τ_i² = ``dynamics.noise_var``, η = ``dynamics.lr``. A direction with
    a_i = 0 < τ_i² has no stationary state (``inf``: a random walk); τ_i² = 0 gives 0. Exact.
    Raises ``ValueError`` if η a_i ≥ 2 (divergent). Reference: derived here, proved in
    proofs/noise_only_variance.py.

    Example:
        >>> stationary_second_moments(dynamics=LinearDynamics(lr=0.5, drift=(1.0,), noise_var=(3.0,))).tolist()
        [1.0]
    """
    check_dynamics(dynamics)
    a = np.asarray(dynamics.drift, dtype=float)
    return _stationary_second(dynamics, a, np.asarray(dynamics.noise_var, dtype=float), "drift")


def relaxation_time(*, lr: float, drift: float, exact: bool = True) -> float:
    """Relaxation time of one direction: steps for its mean error (1 − η a)^t to shrink by a factor e.

        exact=True:   t_relax = 1 / (−ln|1 − η a|), at least 1 (1 when η a = 1, ``inf`` when |1 − ηa| ≥ 1);
        exact=False:  t_relax ≈ 1 / (η a), the small-step form (errs high by ≈ ηa/2 relative).

    η = ``lr``, a = ``drift`` (γλ with clipping, λ without). Reference: derived here (the mean of
    the linear recursion e ← (1 − ηa) e + noise decays as (1 − ηa)^t).

    Example:
        >>> relaxation_time(lr=0.1, drift=1.0), relaxation_time(lr=0.1, drift=1.0, exact=False)
        (9.491221581029905, 10.0)
    """
    if not exact:
        return 1.0 / (lr * drift)
    c = abs(1.0 - lr * drift)
    if c >= 1.0:
        return math.inf
    if c == 0.0:
        return 1.0
    return max(1.0, -1.0 / math.log(c))


# ----------------------------------------------------------------------------------------------
# moments and losses


def error_moments(*, dynamics: LinearDynamics, init_error: Any, steps: Any, init_flat_sq: float = 0.0) -> ErrorMoments:
    """Exact per-direction E e_i(t), E e_i(t)² and E‖e_flat(t)‖² at each of ``steps``.

        E e_i(t)  = ρ_i^t e_i(0),
        E e_i(t)² = ρ_i^{2t} e_i(0)² + ητ_i² (1 − ρ_i^{2t}) / (a_i (2 − η a_i)),
        E‖e_flat(t)‖² = ρ_f^{2t} ‖e_flat(0)‖² + (d − r) η² τ_f² G_t(u_f),

    ρ_i = 1 − η a_i, G_t(u) = (1 − (1−u)^t)/u → t as u → 0 (random walk for a_f = 0:
    ‖e_flat(0)‖² + (d − r) η² τ_f² t). Arguments: ``dynamics`` (η, a_i, τ_i², flat part),
    ``init_error`` = e_i(0) (scalar or length r, deterministic), ``init_flat_sq`` = ‖e_flat(0)‖²,
    ``steps`` = t (non-negative integers, scalar or 1-D).

    Exact for the linear recursion at every finite t and every η a_i ≥ 0. Divergent behaviour is
    returned, not hidden: for η a_i = 2 the second moment grows linearly, for η a_i > 2
    geometrically, and values beyond float range come back as ``inf``.
    Reference: derived here, proved in proofs/noise_only_variance.py.

    Example:
        >>> dyn = LinearDynamics(lr=0.5, drift=(1.0,), noise_var=(0.0,))
        >>> error_moments(dynamics=dyn, init_error=1.0, steps=[0, 1, 2]).second[:, 0].tolist()
        [1.0, 0.25, 0.0625]
    """
    check_dynamics(dynamics)
    t = check_steps(steps)
    e0 = check_init_error(init_error, len(dynamics.drift))
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    mean, second, flat = propagate_moments(dynamics, e0, e0**2, f0, t)
    return ErrorMoments(steps=t.astype(np.int64), mean=mean, second=second, flat_sq=flat)


def losses_from_moments(second: Any, flat_sq: Any, lam: np.ndarray, flat_curvature: float, heldout: float) -> LossCurve:
    """½ Σ λ_i m2_i + ½ λ_flat F (train) and that + ½ κ F (test); a zero weight never meets an inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        curved = 0.5 * np.sum(np.where(lam == 0, 0.0, lam * second), axis=-1)
        flat_train = 0.5 * flat_curvature * flat_sq if flat_curvature > 0 else np.zeros_like(flat_sq)
        train = curved + flat_train
        test = train + (0.5 * heldout * flat_sq if heldout > 0 else 0.0)
    return LossCurve(train=np.asarray(train, dtype=float), test=np.asarray(test, dtype=float))


def expected_loss(
    *,
    dynamics: LinearDynamics,
    curvatures: Any,
    init_error: Any,
    steps: Any,
    init_flat_sq: float = 0.0,
    flat_curvature: float = 0.0,
    heldout_flat_curvature: float = 0.0,
) -> LossCurve:
    """Exact expected training and held-out loss at each of ``steps``.

        E L(t)      = ½ Σ_i λ_i E e_i(t)² + ½ λ_flat E‖e_flat(t)‖²,
        E L_test(t) = E L(t) + ½ κ E‖e_flat(t)‖²,

    λ_i = ``curvatures`` (what the loss measures; equal to the drift a_i only without clipping),
    λ_flat = ``flat_curvature``, κ = ``heldout_flat_curvature`` (records.py: the held-out loss is
    curved where the training loss is flat). Moments from :func:`error_moments` (same arguments).
    Exact for the linear recursion. Reference: derived here.

    Example:
        >>> dyn = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(1.0,), flat_dim=5, flat_noise_var=1.0)
        >>> c = expected_loss(dynamics=dyn, curvatures=(1.0,), init_error=0.0, steps=10,
        ...                   heldout_flat_curvature=1.0)
        >>> round(float(c.test[0] - c.train[0]), 6)       # ½ κ (d−r) η² τ² t
        0.25
    """
    check_dynamics(dynamics)
    lam = check_curvatures(curvatures, len(dynamics.drift))
    lf = check_nonnegative("flat_curvature", flat_curvature)
    kappa = check_nonnegative("heldout_flat_curvature", heldout_flat_curvature)
    m = error_moments(dynamics=dynamics, init_error=init_error, steps=steps, init_flat_sq=init_flat_sq)
    return losses_from_moments(m.second, m.flat_sq, lam, lf, kappa)


def stationary_loss(
    *, dynamics: LinearDynamics, curvatures: Any, approx: bool = False, flat_curvature: float = 0.0
) -> float:
    """Stationary expected training loss  Σ_i λ_i η τ_i² / (2 a_i (2 − η a_i)).

    With a_i = λ_i and equal τ_i² = τ² (unclipped, ``noise_only_dynamics``) this is the
    equipartition law

        (η τ²/2) Σ_{i≤r} 1/(2 − ηλ_i)  ≈  η τ² r / 4,

    which depends on the rank r but not on d or the λ_i. ``approx=True`` returns the small-ηa form
    Σ_i λ_i η τ_i² / (4 a_i); it always errs **low**: exact/approx = 2/(2 − η a_i) ≥ 1 per direction
    (relative error η a_i/(2 − η a_i)). λ_i = ``curvatures``, a_i, τ_i², η from ``dynamics``;
    flat directions add ½ λ_flat (d − r) η τ_f²/(a_f(2 − η a_f)) when ``flat_curvature`` > 0.

    A direction with a_i = 0 has no stationary state: its term is ``inf`` if τ_i² > 0 (random walk)
    and 0 if τ_i² = 0 (noise contribution only; the initial error then persists forever).
    Raises ``ValueError`` if η a_i ≥ 2 for any direction that enters (no stationary state).
    Reference: derived here, proved in proofs/stationary_equipartition.py.

    Example:
        >>> dyn = LinearDynamics(lr=0.01, drift=(1.0, 2.0), noise_var=(1.0, 1.0))
        >>> round(stationary_loss(dynamics=dyn, curvatures=(1.0, 2.0), approx=True), 6)  # ητ²r/4
        0.005
    """
    check_dynamics(dynamics)
    lam = check_curvatures(curvatures, len(dynamics.drift))
    lf = check_nonnegative("flat_curvature", flat_curvature)
    a = np.asarray(dynamics.drift, dtype=float)
    tau2 = np.asarray(dynamics.noise_var, dtype=float)
    if approx:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(tau2 == 0, 0.0, np.where(a == 0, np.inf, dynamics.lr * tau2 / (2.0 * a)))
    else:
        v = _stationary_second(dynamics, a, tau2, "drift")
    with np.errstate(invalid="ignore"):
        total = 0.5 * float(np.sum(np.where(lam == 0, 0.0, lam * v)))
    if lf > 0 and dynamics.flat_dim > 0:
        af = np.array([dynamics.flat_drift])
        tf = np.array([dynamics.flat_noise_var])
        if approx:
            vf = 0.0 if tf[0] == 0 else (math.inf if af[0] == 0 else dynamics.lr * tf[0] / (2.0 * af[0]))
        else:
            vf = float(_stationary_second(dynamics, af, tf, "flat_drift")[0])
        total += 0.5 * lf * dynamics.flat_dim * vf
    return total


def flat_error_sq(*, dynamics: LinearDynamics, init_flat_sq: float, steps: Any) -> np.ndarray:
    """E‖e_flat(t)‖² over the d − r flat directions at each of ``steps``.

        flat drift a_f = 0 (random walk):  ‖e_flat(0)‖² + (d − r) η² τ_f² t,
        a_f > 0:  ρ_f^{2t} ‖e_flat(0)‖² + (d − r) η τ_f² (1 − ρ_f^{2t}) / (a_f (2 − η a_f)),

    ρ_f = 1 − η a_f; ``init_flat_sq`` = ‖e_flat(0)‖² (a squared *norm*: (d−r)e₀²
    with e₀ per coordinate), d − r = ``dynamics.flat_dim``, τ_f² = ``dynamics.flat_noise_var``.
    Invisible in the training loss when λ_flat = 0, but it enters any loss that is curved there.
    Exact. Reference: derived here, proved in proofs/noise_only_variance.py.

    Example:
        >>> dyn = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(1.0,), flat_dim=99, flat_noise_var=1.0)
        >>> flat_error_sq(dynamics=dyn, init_flat_sq=0.0, steps=[0, 100]).round(6).tolist()
        [0.0, 99.0]
    """
    check_dynamics(dynamics)
    t = check_steps(steps)
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    return propagate_moments(dynamics, np.zeros(len(dynamics.drift)), np.zeros(len(dynamics.drift)), f0, t)[2]


def recovery_time(
    *,
    dynamics: LinearDynamics,
    direction: int | str,
    displacement: float,
    threshold: float = 0.1,
    relative_to: str = "stationary",
) -> float:
    """Steps until a displacement δ of one direction has decayed, by the exact (1 − ηa)^{2t} law.

    Definition: start direction i in its stationary state (mean 0, variance v_i = ητ_i²/(a_i(2−ηa_i)))
    and add δ. Then exactly E e_i(t)² = v_i + ρ_i^{2t} δ², ρ_i = 1 − η a_i: the *mean excess* over
    the stationary level is ρ_i^{2t} δ² (proofs/noise_only_variance.py). The recovery time is the
    smallest integer t ≥ 0 with

        ρ_i^{2t} δ² ≤ threshold · v_i     (``relative_to="stationary"``), or
        ρ_i^{2t} δ² ≤ threshold · δ²      (``relative_to="displacement"``: t = ⌈log threshold / log ρ_i²⌉),

    i.e. t = ⌈log(threshold · ref / δ²) / log ρ_i²⌉₊. ``direction`` is a curved index 0 … r−1 or
    ``"flat"`` (uses the flat drift and noise). Returns ``math.inf`` when it never happens (a_i = 0,
    or v_i = 0 with ρ_i ≠ 0 and δ ≠ 0, since exponential decay never reaches 0 exactly).
    Raises ``ValueError`` if η a_i ≥ 2. Reference: derived here (unclipped GD
    recovers exponentially).

    Example:
        >>> dyn = LinearDynamics(lr=0.1, drift=(1.0,), noise_var=(0.0,))
        >>> recovery_time(dynamics=dyn, direction=0, displacement=1.0, threshold=0.01,
        ...               relative_to="displacement")    # 0.9^{2t} ≤ 0.01
        22.0
    """
    check_dynamics(dynamics)
    if direction == "flat":
        a, tau2 = dynamics.flat_drift, dynamics.flat_noise_var
    else:
        i = check_int("direction", direction, minimum=0)
        if i >= len(dynamics.drift):
            raise ValueError(f"direction must be < rank={len(dynamics.drift)} or 'flat', got {direction!r}")
        a, tau2 = dynamics.drift[i], dynamics.noise_var[i]
    delta = check_finite("displacement", displacement)
    thr = check_positive("threshold", threshold)
    if relative_to not in ("stationary", "displacement"):
        raise ValueError(f"relative_to must be 'stationary' or 'displacement', got {relative_to!r}")
    v = float(_stationary_second(dynamics, np.array([a]), np.array([tau2]), "drift")[0])
    d2 = delta * delta
    target = thr * (v if relative_to == "stationary" else d2)
    x = dynamics.lr * a
    u = x * (2.0 - x)
    log_r2 = math.log1p(-u) if u < 1.0 else -math.inf  # log ρ², accurate for tiny ηa
    if d2 <= target:
        return 0.0
    if log_r2 == -math.inf:
        return 1.0
    if log_r2 == 0.0 or target <= 0.0:  # a = 0 never decays; decay never reaches a zero target
        return math.inf
    log_ratio = math.log(target) - math.log(d2)

    def ok(k: int) -> bool:
        return k * log_r2 <= log_ratio

    k = max(0, math.ceil(log_ratio / log_r2))
    while k > 0 and ok(k - 1):  # guard the rounding of the logarithms both ways
        k -= 1
    while not ok(k):
        k += 1
    return float(k)


# ----------------------------------------------------------------------------------------------
# general (non-diagonal) noise covariance: discrete Lyapunov equation


def _check_square_symmetric(name: str, m: Any, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(m, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} must be {dim}x{dim} like hessian, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    scale = max(1.0, float(np.max(np.abs(arr))))
    if np.max(np.abs(arr - arr.T)) > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric, max |M - M^T| = {np.max(np.abs(arr - arr.T))!r}")
    return np.asarray(0.5 * (arr + arr.T))


def stationary_covariance(*, hessian: Any, lr: float, noise_cov: Any) -> np.ndarray:
    """Stationary covariance Σ of e ← (I − ηH) e − η ζ,  Cov ζ = Σ_ξ: the discrete Lyapunov solution.

    The fixed point Σ = (I − ηH) Σ (I − ηH) + η² Σ_ξ is, after expanding and dividing by η,

        H Σ + Σ H − η H Σ H = η Σ_ξ

    (proofs/lyapunov_stationary.py). Solved in the
    eigenbasis H = V diag(λ) Vᵀ, where the equation decouples entry by entry:

        Σ = V X Vᵀ,   X_kl = η S_kl / (λ_k + λ_l − η λ_k λ_l),   S = Vᵀ Σ_ξ V

    (the denominator is (1 − ρ_k ρ_l)/η > 0 for 0 ≤ ηλ < 2 unless λ_k = λ_l = 0). For diagonal H and
    Σ_ξ this is ητ_i²/(λ_i(2 − ηλ_i)) on the diagonal, as in :func:`stationary_loss`.
    H = ``hessian`` (symmetric PSD, η λ_max < 2), η = ``lr``, Σ_ξ = ``noise_cov`` (symmetric PSD:
    covariance of the noisy gradient direction, the τ² of LinearDynamics). A singular H is allowed
    when the noise has no component in its null space (then Σ is 0 there, from a zero start);
    otherwise the null space is a random walk and ``ValueError`` is raised, as for ηλ_max ≥ 2.
    Reference: derived here, proved in proofs/lyapunov_stationary.py.

    Example:
        >>> import numpy as np
        >>> stationary_covariance(hessian=np.diag([1.0, 2.0]), lr=0.5, noise_cov=np.eye(2)).round(4).tolist()
        [[0.3333, 0.0], [0.0, 0.25]]
    """
    h = _check_square_symmetric("hessian", hessian)
    eta = check_positive("lr", lr)
    s = _check_square_symmetric("noise_cov", noise_cov, dim=h.shape[0])
    lam, vec = np.linalg.eigh(h)
    tol = h.shape[0] * np.finfo(float).eps * max(1.0, float(np.max(np.abs(lam))))
    if lam[0] < -tol:
        raise ValueError(f"hessian must be positive semidefinite, got eigenvalue {lam[0]!r}")
    if np.linalg.eigvalsh(s)[0] < -1e-10 * max(1.0, float(np.max(np.abs(s)))):
        raise ValueError("noise_cov must be positive semidefinite")
    lam = np.where(np.abs(lam) <= tol, 0.0, lam)
    if eta * lam[-1] >= 2:
        raise ValueError(f"lr * max eigenvalue of hessian must be < 2 (stable), got {eta * lam[-1]!r}")
    st = vec.T @ s @ vec
    den = lam[:, None] + lam[None, :] - eta * lam[:, None] * lam[None, :]
    null = den == 0.0
    if np.any(np.abs(st[null]) > 1e-10 * max(1.0, float(np.max(np.abs(st))))):
        raise ValueError(
            "noise_cov has a component in the null space of hessian: no stationary covariance (random walk)"
        )
    x = np.where(null, 0.0, eta * st / np.where(null, 1.0, den))
    sigma = vec @ x @ vec.T
    return np.asarray(0.5 * (sigma + sigma.T))


def stationary_loss_general(*, hessian: Any, lr: float, noise_cov: Any, loss_hessian: Any = None) -> float:
    """Stationary expected loss ½ tr(H_L Σ) for a general noise covariance (Lyapunov Σ).

    Σ from :func:`stationary_covariance` (H = ``hessian`` drives the dynamics), H_L = ``loss_hessian``
    measures the loss (defaults to H; differs under clipping). Closed form in the eigenbasis of H:
    ½ Σ_k η λ_k S_kk/(λ_k(2 − ηλ_k)) = (η/2) Σ_k S_kk/(2 − ηλ_k) when H_L = H — equipartition again.
    Reference: derived here, proved in proofs/lyapunov_stationary.py.

    Example:
        >>> import numpy as np
        >>> round(stationary_loss_general(hessian=np.diag([1.0, 2.0]), lr=0.5, noise_cov=np.eye(2)), 6)
        0.416667
    """
    sigma = stationary_covariance(hessian=hessian, lr=lr, noise_cov=noise_cov)
    if loss_hessian is None:
        hl = _check_square_symmetric("hessian", hessian)
    else:
        hl = _check_square_symmetric("loss_hessian", loss_hessian, dim=sigma.shape[0])
    return 0.5 * float(np.sum(hl * sigma))
