"""Transients of the clipped step: mean-field trajectory, loss curves, recovery times (claims 1–3).

The mean-field recursion of dptheory.clipped_step (``step_model``) iterated from a deterministic
start, with γ and q re-evaluated at the current root-mean-square gradient norm m(t): far from the
optimum (m ≫ max(C, s√n)) the error shrinks by ≈ ηC per step (saturated, normalised-GD phase), near
it the decay is exponential at rate ηγ∞λ. Plus the closed-form recovery time of the noise-free
mean-field ODE (proofs/saturated_recovery.py). All transients use the mean-field closure: exact for
unclipped modes and for deterministic clipped GD; where the stationary state they approach is
saturated their plateau is low by up to (r+1)/r (the elliptic closure of
``clipped_dynamics.stationary_excess_loss`` gives the stationary level). Every public name here is
re-exported by dptheory.clipped_dynamics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import integrate, optimize

from dptheory.clipped_step import MomentTable, check_inputs, stationary_state, step_model
from dptheory.records import Basin, LinearDynamics, Optimizer
from dptheory.validate import check_finite, check_int, check_nonnegative, check_positive

__all__ = [
    "DisplacementRecovery",
    "MeanFieldTrajectory",
    "RecoveryPrediction",
    "displacement_recovery",
    "displacement_vector",
    "expected_loss_curve",
    "mean_field_trajectory",
    "recovery_time",
    "saturated_recovery_steps",
]


@dataclass(frozen=True)
class MeanFieldTrajectory:
    """Mean-field second-moment trajectory, index t = 0 … steps.

    ``loss[t]`` = E L(t), ``heldout_loss[t]`` = E L_test(t), ``gradient_norm_sq[t]`` = m(t)²,
    ``gamma[t]`` = γ(m(t)) used for the step t → t+1 (last entry: γ at the final state),
    ``second[t, i]`` = E e_i(t)², ``flat_sq[t]`` = E‖e_flat(t)‖².
    """

    loss: np.ndarray
    heldout_loss: np.ndarray
    gradient_norm_sq: np.ndarray
    gamma: np.ndarray
    second: np.ndarray
    flat_sq: np.ndarray


def _init_vector(init_error: Any, rank: int) -> np.ndarray:
    e0 = np.asarray(init_error, dtype=float)
    if e0.ndim == 0:
        e0 = np.full(rank, float(e0))
    if e0.shape != (rank,) or not np.all(np.isfinite(e0)):
        raise ValueError(f"init_error must be a finite scalar or a length-{rank} vector (the rank), got {init_error!r}")
    return e0


def _run(
    basin: Basin,
    opt: Optimizer,
    poisson: bool,
    v0: np.ndarray,
    f0: float,
    steps: int,
    stop: Callable[[int, float], bool] | None = None,
    tabulate: bool = True,
) -> tuple[MeanFieldTrajectory, int]:
    """Iterate the mean-field recursion; ``stop(t, loss)`` may end it early. Returns (trajectory, last t)."""
    lam, lf, kappa = basin.curvature_array, basin.flat_curvature, basin.heldout_flat_curvature
    nf = basin.flat_dim
    eta = opt.lr
    v = v0.astype(float).copy()
    vf = f0 / nf if nf > 0 else 0.0
    s, c = basin.sample_std, opt.effective_clip_norm
    moments = (
        MomentTable(noise_dim=basin.noise_dim, sample_std=s, clip_norm=c)
        if (tabulate and s > 0 and math.isfinite(c))
        else None
    )
    loss, test, grad, gam, sec, flat = [], [], [], [], [], []
    t = 0
    while True:
        m2 = float(np.sum(lam**2 * v)) + (nf * lf * lf * vf if lf > 0 else 0.0)
        st = step_model(basin=basin, optimizer=opt, poisson=poisson, gradient_norm_sq=m2, moments=moments)
        lt = 0.5 * float(np.sum(lam * v)) + 0.5 * lf * nf * vf
        loss.append(lt)
        test.append(lt + 0.5 * kappa * nf * vf)
        grad.append(m2)
        gam.append(st.gamma)
        sec.append(v.copy())
        flat.append(nf * vf)
        if t >= steps or (stop is not None and stop(t, lt)):
            break
        a = st.drift
        v = ((1.0 - eta * a) ** 2 + eta**2 * st.mult * a * a) * v + eta**2 * st.add_var
        af = st.flat_drift
        vf = ((1.0 - eta * af) ** 2 + eta**2 * st.mult * af * af) * vf + eta**2 * st.flat_add_var
        t += 1
    traj = MeanFieldTrajectory(
        loss=np.array(loss),
        heldout_loss=np.array(test),
        gradient_norm_sq=np.array(grad),
        gamma=np.array(gam),
        second=np.array(sec),
        flat_sq=np.array(flat),
    )
    return traj, t


def mean_field_trajectory(
    *,
    basin: Basin,
    optimizer: Optimizer,
    steps: int,
    init_error: Any,
    init_flat_sq: float = 0.0,
    sampling: str = "fixed",
    tabulate: bool = True,
) -> MeanFieldTrajectory:
    """Mean-field recursion of the per-direction second moments from a deterministic start.

        v_i(t+1) = [(1 − η γ_t λ_i)² + η² κ γ_t² λ_i²] v_i(t) + η² q(t),   v_i(0) = e_i(0)²,
        γ_t, q(t) evaluated at m(t)² = Σ_i λ_i² v_i(t) (+ (d−r) λ_flat² v_flat(t)),

    (module docstring for q, κ; the flat coordinates follow the same recursion with λ_flat and
    τ_flat²). Far from the optimum (m ≫ max(C, s√n)) γ ≈ C/m and the error shrinks by ≈ ηC per
    step (saturated phase); near it γ → α₀ and the decay is exponential at rate ηα₀λ_i.
    Arguments: ``steps`` = T (t = 0 … T), ``init_error`` = e(0) on the r curved axes (scalar: same on
    each), ``init_flat_sq`` = ‖e_flat(0)‖². The clip moments γ(m²), E‖clip g‖² − γ²m² are tabulated
    lazily on a grid of log m² (spacing 0.05, cubic interpolation: relative error ~3e-7, up to ~1 %
    at a clipping kink sharper than the grid; ``tabulate=False`` evaluates them exactly every step).
    Approximation: mean-field (module docstring); exact for unclipped modes and for s = 0
    (deterministic per-sample gradients, never tabulated) with ν = 0 (deterministic clipped GD).
    Reference: derived here, proved in proofs/expected_loss_curve.py and proofs/saturated_recovery.py.

    Example:
        >>> from dptheory.records import Basin, LinearDynamics, Optimizer
        >>> b = Basin(dim=1, curvatures=(1.0,), sample_std=0.0)
        >>> o = Optimizer(lr=0.5, batch_size=1, clip_norm=1.0, mode="clip")
        >>> mean_field_trajectory(basin=b, optimizer=o, steps=3, init_error=2.0).second[:, 0].tolist()
        [4.0, 2.25, 1.0000000000000002, 0.25000000000000006]
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    t_max = check_int("steps", steps, minimum=0)
    e0 = _init_vector(init_error, basin.rank)
    f0 = check_nonnegative("init_flat_sq", init_flat_sq)
    return _run(basin, optimizer, poisson, e0**2, f0, t_max, tabulate=bool(tabulate))[0]


def expected_loss_curve(
    *,
    basin: Basin,
    optimizer: Optimizer,
    steps: int,
    init_error: Any,
    init_flat_sq: float = 0.0,
    sampling: str = "fixed",
) -> np.ndarray:
    """E[L(t)] for t = 0 … ``steps`` by the mean-field recursion (:func:`mean_field_trajectory`).

        E L(t) = ½ Σ_i λ_i v_i(t) + ½ λ_flat E‖e_flat(t)‖²,

    v_i(t) from the recursion with γ(t), q(t) re-evaluated at m(t) each step. Same arguments and
    approximation as :func:`mean_field_trajectory`. Reference: derived here, proved in
    proofs/expected_loss_curve.py.

    Example:
        >>> from dptheory.records import Basin, LinearDynamics, Optimizer
        >>> b = Basin(dim=1, curvatures=(1.0,), sample_std=0.0)
        >>> o = Optimizer(lr=0.5, batch_size=1, clip_norm=1.0, mode="clip")
        >>> expected_loss_curve(basin=b, optimizer=o, steps=2, init_error=2.0).round(12).tolist()  # e: 2, 1.5, 1
        [2.0, 1.125, 0.5]
    """
    return mean_field_trajectory(
        basin=basin,
        optimizer=optimizer,
        steps=steps,
        init_error=init_error,
        init_flat_sq=init_flat_sq,
        sampling=sampling,
    ).loss


@dataclass(frozen=True)
class RecoveryPrediction:
    """Recovery from a displacement δ of the curved error, added at stationarity.

    ``steps``: first t at which the mean-field excess loss E L(t) − L∞ falls to ``threshold`` times
    its initial value (the model's exact answer). ``ode_steps``: closed form of the noise-free
    mean-field ODE (:func:`saturated_recovery_steps`; continuous time, errs by O(ηγλ) per step).
    ``saturated_steps``: the linear phase alone, (‖Hδ‖ − max(C, s√n))₊ / (η C λ_eff).
    ``linear_rate``: per-step decay rate η γ∞ λ_min of the displacement near the optimum
    (γ∞ = stationary γ ≈ α₀ ≈ C/(s√n) when clipped, 1 unclipped). ``saturated``: ‖Hδ‖ > max(C, s√n).
    """

    steps: float
    ode_steps: float
    saturated_steps: float
    linear_rate: float
    saturated: bool
    gamma_stationary: float


def _direction(direction: Any, lam: np.ndarray) -> np.ndarray:
    r = lam.size
    if isinstance(direction, str):
        if direction == "uniform":
            return np.full(r, 1.0 / math.sqrt(r))
        if direction in ("top", "bottom"):
            u = np.zeros(r)
            u[int(np.argmax(lam) if direction == "top" else np.argmin(lam))] = 1.0
            return u
        raise ValueError(
            f"direction must be 'uniform', 'top', 'bottom', an index or a length-{r} vector, got {direction!r}"
        )
    arr = np.asarray(direction, dtype=float)
    if arr.ndim == 0:
        i = check_int("direction", direction, minimum=0)
        if i >= r:
            raise ValueError(f"direction index must be < rank={r}, got {direction!r}")
        u = np.zeros(r)
        u[i] = 1.0
        return u
    if arr.shape != (r,) or not np.all(np.isfinite(arr)) or not np.any(arr != 0):
        raise ValueError(f"direction vector must be finite, nonzero and of length {r}, got {direction!r}")
    unit: np.ndarray = arr / np.linalg.norm(arr)
    return unit


def saturated_recovery_steps(
    *, curvatures: Any, displacement: Any, lr: float, clip_norm: float, noise_scale: float, threshold: float
) -> float:
    """Closed-form recovery time of the noise-free mean-field ODE with large-n shrinkage.

        de_i/dt = −η γ(m) λ_i e_i,   γ(m) = min(1, C/√(m² + a²)),   m² = Σ λ_i² e_i²,   a = s√n.

    Substituting dτ = ηγ dt gives e_i = δ_i e^{−λ_i τ}; recovery ends at τ* where the excess loss
    ½ Σ λ_i δ_i² e^{−2λ_i τ} = threshold × its start, and t* = ∫₀^{τ*} dτ / (η γ(m(τ))).
    For a single direction (x = λ|e| = gradient norm), in the fully clipped phase

        t = [F(x₀) − F(x₁)] / (η C λ),   F(x) = √(x² + a²) − a·asinh(a/x),

    which is linear, (x₀ − x₁)/(ηCλ), while x ≫ a (saturated: the error falls by ηC per step,
    the saturated phase) and logarithmic, ln(x₀/x₁)·a/(ηCλ), once x ≪ a: exponential decay at rate
    ηλ·C/(s√n) (≈ ηα₀λ, recovery slower by ~√n than unclipped GD's ηλ). If C > a the phase with
    √(x² + a²) ≤ C is unclipped (γ = 1). ``curvatures`` = λ_i, ``displacement`` = δ (vector on the
    curved axes), η = ``lr``, C = ``clip_norm`` (inf: unclipped, t* = τ*/η), a = ``noise_scale`` = s√n.
    Errs: continuous time (relative O(ηγλ) per step; unclipped exact answer uses log(1−ηλ));
    large-n γ (see ``clipping.large_dim_shrinkage``); ignores the stationary noise.
    Reference: derived here, proved in proofs/saturated_recovery.py.

    Example:
        >>> t = saturated_recovery_steps(curvatures=[1.0], displacement=[100.0], lr=0.1, clip_norm=1.0,
        ...                              noise_scale=0.0, threshold=1e-4)   # x: 100 → 1, linear
        >>> round(t, 6)                                                     # (100 − 1)/(ηCλ)
        990.0
    """
    lam = np.atleast_1d(np.asarray(curvatures, dtype=float))
    delta = np.atleast_1d(np.asarray(displacement, dtype=float))
    if lam.ndim != 1 or lam.shape != delta.shape or np.any(lam <= 0) or not np.all(np.isfinite(lam)):
        raise ValueError(f"curvatures must be positive and match displacement's shape, got {curvatures!r}")
    if not np.all(np.isfinite(delta)):
        raise ValueError(f"displacement must be finite, got {displacement!r}")
    eta = check_positive("lr", lr)
    c = float(clip_norm)
    if math.isnan(c) or not c > 0:
        raise ValueError(f"clip_norm must be > 0 (inf allowed), got {clip_norm!r}")
    a = check_nonnegative("noise_scale", noise_scale)
    thr = check_positive("threshold", threshold)
    if thr >= 1.0 or not np.any(delta != 0):
        return 0.0
    w = lam * delta**2

    def excess(tau: float) -> float:
        return float(np.sum(w * np.exp(-2.0 * lam * tau)))

    target = thr * excess(0.0)
    hi = 1.0 / lam.max()
    while excess(hi) > target:
        hi *= 2.0
    tau_star = optimize.brentq(lambda x: excess(x) - target, 0.0, hi, xtol=1e-14, rtol=1e-14)
    if math.isinf(c):
        return float(tau_star) / eta

    def inv_rate(tau: float) -> float:  # 1/(ηγ) = max(1, √(m² + a²)/C)/η
        m2 = float(np.sum((lam * delta) ** 2 * np.exp(-2.0 * lam * tau)))
        return max(1.0, math.sqrt(m2 + a * a) / c) / eta

    if lam.size == 1 or np.all(lam == lam[0]):
        lam0 = float(lam[0])
        x0 = lam0 * float(np.linalg.norm(delta))
        x1 = x0 * math.exp(-lam0 * tau_star)
        return _single_direction_steps(x0, x1, lam0, eta, c, a)
    val, _ = integrate.quad(inv_rate, 0.0, tau_star, limit=200)
    return float(val)


def _saturated_primitive(x: float, a: float) -> float:
    """F(x) = √(x² + a²) − a·asinh(a/x), with dF/dx = √(x² + a²)/x (proofs/saturated_recovery.py)."""
    return math.hypot(x, a) - (a * math.asinh(a / x) if a > 0 else 0.0)


def _single_direction_steps(x0: float, x1: float, lam: float, eta: float, c: float, a: float) -> float:
    """Time for the gradient norm of one eigen-direction to fall from x0 to x1 under the ODE."""
    xc = math.sqrt(c * c - a * a) if c > a else 0.0  # below xc: unclipped (γ = 1)
    t = 0.0
    if x0 > xc:
        lo = max(x1, xc)
        t += (_saturated_primitive(x0, a) - _saturated_primitive(lo, a)) / (eta * c * lam)
    hi = min(x0, xc)
    if hi > x1:
        t += math.log(hi / x1) / (eta * lam)
    return t


def recovery_time(
    *,
    basin: Basin,
    optimizer: Optimizer,
    displacement: float,
    direction: Any = "uniform",
    threshold: float = 0.01,
    max_steps: int = 1_000_000,
    sampling: str = "fixed",
) -> RecoveryPrediction:
    """Steps to recover from a displacement δ of the curved error added at stationarity (claims 2–3).

    Start: E e_i² = v_i∞ + δ_i² (stationary second moments plus the displacement), δ = ``displacement``
    × unit ``direction`` ("uniform": equal on the r curved axes; "top"/"bottom": the largest/smallest
    λ; an index; or a length-r vector). Recovered: first t with E L(t) − L∞ ≤ ``threshold`` ×
    (E L(0) − L∞), by the mean-field recursion (:func:`mean_field_trajectory`, capped at
    ``max_steps`` with a warning). Closed forms alongside (:class:`RecoveryPrediction`):

    * unclipped: exponential, rate ηλ_i (t = ln(1/threshold)/(−2 ln(1 − ηλ)) for one direction);
    * clipped near the optimum: exponential at rate ηγ∞λ_i, γ∞ ≈ α₀ ≈ C/(s√n): slower by ~√n;
    * saturated (‖Hδ‖ ≫ max(C, s√n)): linear, the gradient norm falls by ηCλ per step,
      t ≈ ‖Hδ‖/(ηCλ),
      then the exponential tail — :func:`saturated_recovery_steps` joins the phases exactly for the ODE.

    λ_eff = Σλ_i³δ_i²/Σλ_i²δ_i² (exact initial rate of ‖He‖ in the saturated phase). Mean-field
    approximation (module docstring). Reference: derived here, proved in proofs/expected_loss_curve.py
    and proofs/saturated_recovery.py.

    Example:
        >>> from dptheory.records import Basin, LinearDynamics, Optimizer
        >>> b = Basin(dim=1, curvatures=(1.0,), sample_std=0.0)
        >>> o = Optimizer(lr=0.1, batch_size=1, mode="sgd")
        >>> recovery_time(basin=b, optimizer=o, displacement=1.0, threshold=0.01).steps  # 0.81^t ≤ 0.01
        22.0
    """
    basin, optimizer, poisson = check_inputs(basin, optimizer, sampling)
    delta_norm = check_finite("displacement", displacement)
    thr = check_positive("threshold", threshold)
    cap = check_int("max_steps", max_steps, minimum=1)
    lam = basin.curvature_array
    delta = abs(delta_norm) * _direction(direction, lam)
    state = stationary_state(basin=basin, optimizer=optimizer, poisson=poisson)
    m2, st, v = state.gradient_norm_sq, state.step, state.second
    if not math.isfinite(m2):
        raise ValueError("the step has no stationary state (unstable: lr * curvature too large)")
    loss_inf = 0.5 * float(np.sum(lam * v))
    v0 = v + delta**2
    excess0 = 0.5 * float(np.sum(lam * delta**2))
    if excess0 == 0.0 or thr >= 1.0:
        steps = 0.0
    else:
        vf_tot = 0.0
        if basin.flat_curvature > 0 and basin.flat_dim > 0:
            vf_tot = basin.flat_dim * state.flat_second
        base = loss_inf + 0.5 * basin.flat_curvature * vf_tot

        def stop(t: int, loss_t: float) -> bool:
            return loss_t - base <= thr * excess0

        _, t_end = _run(basin, optimizer, poisson, v0, vf_tot, cap, stop)
        traj_done = t_end < cap
        if not traj_done:
            warnings.warn(
                f"recovery_time: not recovered within max_steps={cap}; returning inf", RuntimeWarning, stacklevel=2
            )
            steps = math.inf
        else:
            steps = float(t_end)
    c = optimizer.effective_clip_norm
    a_scale = basin.sample_std * math.sqrt(basin.noise_dim)
    x0 = float(np.linalg.norm(lam * delta))
    ode = saturated_recovery_steps(
        curvatures=lam, displacement=delta, lr=optimizer.lr, clip_norm=c, noise_scale=a_scale, threshold=thr
    )
    lam_eff = float(np.sum(lam**3 * delta**2) / np.sum(lam**2 * delta**2)) if x0 > 0 else float(lam.max())
    knee = max(c, a_scale)
    sat = bool(x0 > knee)
    sat_steps = (x0 - knee) / (optimizer.lr * c * lam_eff) if (sat and math.isfinite(c)) else 0.0
    displaced = lam[delta != 0] if np.any(delta != 0) else lam
    return RecoveryPrediction(
        steps=steps,
        ode_steps=float(ode),
        saturated_steps=float(sat_steps),
        linear_rate=float(optimizer.lr * st.gamma * displaced.min()),
        saturated=sat,
        gamma_stationary=float(st.gamma),
    )


def displacement_vector(*, rank: int, displacement: float) -> np.ndarray:
    """δ_i = δ/√r on every curved axis: a displacement of norm δ = ``displacement`` along (1, …, 1)/√r.

    Example:
        >>> displacement_vector(rank=4, displacement=2.0).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    r = check_int("rank", rank, minimum=1)
    return np.full(r, check_finite("displacement", displacement) / math.sqrt(r))


@dataclass(frozen=True)
class DisplacementRecovery:
    """Predicted recovery from a displacement at stationarity (:func:`displacement_recovery`).

    ``excess[t]`` = E L(t) − L∞ for t = 0 … steps, ``initial`` = ½ Σ λ_i δ_i² (the excess right after
    the displacement), ``stationary`` = L∞, ``time`` = the recovery time (interpolated crossing).
    """

    excess: np.ndarray
    initial: float
    stationary: float
    time: float


def displacement_recovery(
    *,
    basin: Basin,
    optimizer: Optimizer,
    displacement: float,
    steps: int,
    threshold: float,
    dynamics: LinearDynamics | None = None,
) -> DisplacementRecovery:
    """Excess-loss curve after a displacement δ along (1, …, 1)/√r at stationarity, and its recovery time.

    Start: E e_i(0)² = v_i + δ_i², with v_i = ητ_i²/(a_i(2 − ηa_i)) the stationary second moments of
    the step's linear model (``dptheory.switching.phase_dynamics``; exact unclipped, mean-field
    clipped) and δ_i = δ/√r = :func:`displacement_vector`. The mean-field recursion
    (:func:`expected_loss_curve`) depends on the state only through these second moments, so this
    start is exactly "stationary plus displaced" in the model. Recovered: the first t at which
    E L(t) − L∞ falls to ``threshold`` × ½ Σ λ_i δ_i² (L∞ = ½ Σ λ_i v_i; the cross term 2⟨e, δ⟩ has
    mean zero at stationarity), linearly interpolated between steps (``dptheory.curves.first_crossing``);
    ``inf`` if not within ``steps``. ``dynamics``: the step's linear model if already computed.
    Approximation: mean-field for clipped modes (module docstring); exact unclipped.
    Reference: derived here, proved in proofs/expected_loss_curve.py (the recursion) and
    proofs/noise_only_variance.py (the stationary moments).

    Example:
        >>> from dptheory.records import Basin, LinearDynamics, Optimizer
        >>> b = Basin(dim=10, curvatures=(1.0,), sample_std=0.0)
        >>> rec = displacement_recovery(basin=b, optimizer=Optimizer(lr=0.5, batch_size=1, mode="sgd"),
        ...                             displacement=1.0, steps=10, threshold=0.1)
        >>> round(rec.time, 4)           # excess ½·0.25^t falls to 0.05 between t = 1 and 2
        1.8
    """
    from dptheory.curves import first_crossing
    from dptheory.quadratic import stationary_second_moments
    from dptheory.switching import phase_dynamics

    lam = basin.curvature_array
    dyn = phase_dynamics(basin=basin, optimizer=optimizer) if dynamics is None else dynamics
    v = stationary_second_moments(dynamics=dyn)
    delta = displacement_vector(rank=basin.rank, displacement=displacement)
    stationary = 0.5 * float(np.sum(lam * v))
    curve = np.asarray(
        expected_loss_curve(basin=basin, optimizer=optimizer, steps=steps, init_error=np.sqrt(v + delta**2)),
        dtype=float,
    )
    curve = curve[: steps + 1]
    initial = 0.5 * float(np.sum(lam * delta**2))
    excess = curve - stationary
    return DisplacementRecovery(
        excess=excess,
        initial=initial,
        stationary=stationary,
        time=first_crossing(excess, threshold=threshold * initial),
    )
