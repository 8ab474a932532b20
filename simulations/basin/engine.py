"""Public Monte Carlo API: ``simulate(basin=, optimizer=, run=)`` → :class:`Trace`.

The step is exactly the one in ``dptheory/records.py``:

    e ← e − η_t (1/B) [ Σ_{i ∈ batch_t} clip_{C}(H e + s ζ_i) + ν ξ ],

with the mode (hence C and ν) possibly switching at ``RunSpec.switch_step``, η_t following
``RunSpec.lr_schedule``, and an optional displacement of the curved error at one step.

Engines:

* ``"reduced"`` — ``simulations/basin/reduced.py``: exact in distribution for the streaming basin, cost
  independent of d (works for d = 1e12);
* ``"full"`` — ``simulations/basin/kernels.py``: the d-dimensional numba kernel, needed for a rotated
  basis or a pruning mask;
* ``"numpy"`` — ``simulations/basin/kernels_numpy.py``: the plain-numpy twin (slow reference);
* ``"auto"`` — reduced when it applies (no basis, no mask), else full.

Randomness: one ``seed``; replica j uses the j-th child of ``np.random.SeedSequence(seed).spawn``
(its first grandchild seeds the dynamics, its second the random direction of the initial flat
error), so the same seed gives the same Trace, and replicas are independent.

Example:
    >>> from dptheory.records import Basin, Optimizer
    >>> tr = simulate(basin=Basin(dim=10**12, curvatures=(1.0,) * 4, sample_std=1.0),
    ...               optimizer=Optimizer(lr=0.5, batch_size=16, clip_norm=1.0, noise_multiplier=1.0),
    ...               run=RunSpec(steps=50, replicas=2, record_every=25, init_error=1.0))
    >>> tr.engine, tr.train_loss.shape, tr.steps.tolist()
    ('reduced', (2, 2), [25, 50])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dptheory.records import Basin, Mode, Optimizer
from dptheory.validate import check_int, check_nonnegative
from simulations.basin import kernels, kernels_numpy, reduced
from simulations.basin.rng import replica_states

__all__ = [
    "ENGINES",
    "LR_SCHEDULES",
    "SAMPLINGS",
    "RunSpec",
    "Trace",
    "lr_values",
    "replica_seeds",
    "simulate",
    "step_schedule_arrays",
]

ENGINES = ("auto", "full", "reduced", "numpy")
LR_SCHEDULES = ("constant", "cosine", "multistep")
SAMPLINGS = ("fixed", "poisson")
TRACE_METRICS = (
    "train_loss",
    "heldout_loss",
    "curved_err_sq",
    "flat_err_sq",
    "clip_fraction",
    "mean_clip_factor",
    "clip_bias_norm",
)


@dataclass(frozen=True)
class RunSpec:
    """How to run the Monte Carlo (steps, replicas, seed, initial state, schedule, interventions).

    Step t = 0 … steps−1 is the (t+1)-th update. ``switch_step`` = t₀: steps t ≥ t₀ use
    ``switch_mode``. ``displacement_step`` = t_d: just before step t_d the curved error is moved by
    ``displacement`` · V(1,…,1)/√r. Learning-rate schedules (η = ``optimizer.lr``): constant;
    cosine η_t = η (1 + cos(π t / T)) / 2; multistep η_t = η, η/10, η/100 for t/T in [0, ½), [½, ¾), [¾, 1)
    (the network trainer's "step" schedule is a different one: ×γ every k epochs).
    """

    steps: int
    replicas: int = 8
    record_every: int = 1
    seed: int = 0
    init_error: float = 0.0
    init_flat_sq: float = 0.0
    sampling: str = "fixed"
    switch_step: int | None = None
    switch_mode: Mode | None = None
    displacement_step: int | None = None
    displacement: float = 0.0
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", check_int("steps", self.steps, minimum=1))
        object.__setattr__(self, "replicas", check_int("replicas", self.replicas, minimum=1))
        object.__setattr__(self, "record_every", check_int("record_every", self.record_every, minimum=1))
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))
        object.__setattr__(self, "init_error", check_nonnegative("init_error", self.init_error))
        object.__setattr__(self, "init_flat_sq", check_nonnegative("init_flat_sq", self.init_flat_sq))
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if (self.switch_step is None) != (self.switch_mode is None):
            raise ValueError(
                f"switch_step and switch_mode go together, got switch_step={self.switch_step!r}, "
                f"switch_mode={self.switch_mode!r}"
            )
        if self.switch_step is not None:
            assert self.switch_mode is not None  # the two go together (checked just above)
            object.__setattr__(self, "switch_step", check_int("switch_step", self.switch_step, minimum=0))
            object.__setattr__(self, "switch_mode", Mode.parse(self.switch_mode))
        if self.displacement_step is not None:
            ds = check_int("displacement_step", self.displacement_step, minimum=0)
            if ds >= self.steps:
                raise ValueError(f"displacement_step must be < steps={self.steps}, got {ds}")
            object.__setattr__(self, "displacement_step", ds)
        disp = float(self.displacement)
        if not math.isfinite(disp):
            raise ValueError(f"displacement must be finite, got {self.displacement!r}")
        object.__setattr__(self, "displacement", disp)

    @property
    def record_flags(self) -> np.ndarray:
        """Boolean (steps,): record after step t when (t+1) % record_every == 0 or t is the last."""
        t = np.arange(self.steps)
        flags = (t + 1) % self.record_every == 0
        flags[-1] = True
        return flags


@dataclass(frozen=True)
class Trace:
    """Recorded metrics, arrays of shape (replicas, n_records) unless noted.

    ``steps`` (n_records,): number of completed steps at each record. ``train_loss`` ½Σλ_i e_i² +
    ½λ_flat‖e_flat‖²; ``heldout_loss`` = train_loss + ½κ‖e_flat‖²; ``curved_err_sq`` ‖e_curved‖²;
    ``flat_err_sq`` ‖e_flat‖²; ``clip_fraction`` fraction of the step's samples with ‖g_i‖ > C;
    ``mean_clip_factor`` mean min(1, C/‖g_i‖); ``clip_bias_norm`` ‖(1/B)Σ(clip(g_i) − g_i)‖.
    Clip statistics are NaN for a Poisson batch that happens to be empty.
    """

    steps: np.ndarray
    train_loss: np.ndarray
    heldout_loss: np.ndarray
    curved_err_sq: np.ndarray
    flat_err_sq: np.ndarray
    clip_fraction: np.ndarray
    mean_clip_factor: np.ndarray
    clip_bias_norm: np.ndarray
    engine: str
    seed: int

    def arrays(self) -> dict[str, np.ndarray]:
        """All arrays by name (for ``simulations.common.results.write_results``)."""
        out = {"steps": self.steps}
        out.update({k: getattr(self, k) for k in TRACE_METRICS})
        return out


def lr_values(*, lr: float, steps: int, schedule: str = "constant") -> np.ndarray:
    """η_t for t = 0 … steps−1 under a schedule (see :class:`RunSpec`).

    Example:
        >>> lr_values(lr=1.0, steps=4, schedule="multistep").tolist()
        [1.0, 1.0, 0.1, 0.01]
    """
    t = np.arange(steps, dtype=float)
    if schedule == "constant":
        return np.full(steps, float(lr))
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + np.cos(np.pi * t / steps))
    if schedule == "multistep":
        frac = t / steps
        return lr * np.where(frac < 0.5, 1.0, np.where(frac < 0.75, 0.1, 0.01))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def step_schedule_arrays(optimizer: Optimizer, run: RunSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step (η_t, C_t, ν_t) of a run: the lr schedule and the mode before/after ``run.switch_step``."""
    lr_t = lr_values(lr=optimizer.lr, steps=run.steps, schedule=run.lr_schedule)
    clip_t = np.empty(run.steps)
    nu_t = np.empty(run.steps)
    opts = [optimizer]
    if run.switch_step is not None:
        assert run.switch_mode is not None  # RunSpec sets the two together
        opts.append(optimizer.with_mode(run.switch_mode))
    for t in range(run.steps):
        o = opts[1] if run.switch_step is not None and t >= run.switch_step else opts[0]
        clip_t[t] = o.effective_clip_norm
        nu_t[t] = o.noise_std
    return lr_t, clip_t, nu_t


def replica_seeds(run: RunSpec):
    """Per replica: (replica SeedSequence, SeedSequence of the dynamics, SeedSequence of the init)."""
    out = []
    for child in np.random.SeedSequence(run.seed).spawn(run.replicas):
        dyn, init = child.spawn(2)
        out.append((child, dyn, init))
    return out


def _curved_direction(basin: Basin, basis) -> np.ndarray:
    r = basin.rank
    if basis is None:
        v = np.zeros(basin.dim)
        v[:r] = 1.0 / math.sqrt(r)
        return v
    return basis @ np.full(r, 1.0 / math.sqrt(r))


def _initial_errors(basin: Basin, run: RunSpec, basis, seeds, optimum, init_weights, mask) -> np.ndarray:
    """(R, d) initial errors, or (1, d) when every replica starts from the same point."""
    d = basin.dim
    if init_weights is not None:
        e0 = (np.asarray(init_weights, dtype=float) - optimum)[None, :].copy()
    else:
        base = run.init_error * _curved_direction(basin, basis)
        if run.init_flat_sq > 0:
            e0 = np.empty((run.replicas, d))
            for rep in range(run.replicas):
                u = np.random.default_rng(seeds[rep][2]).standard_normal(d)
                if basis is None:
                    u[: basin.rank] = 0.0
                else:
                    u -= basis @ (basis.T @ u)
                e0[rep] = base + math.sqrt(run.init_flat_sq) * u / np.linalg.norm(u)
        else:
            e0 = base[None, :].copy()
    if mask is not None:
        e0[:, ~mask] = -optimum[~mask]
    return e0


def _check_basis(basis, basin: Basin):
    if basis is None:
        return None
    v = np.asarray(basis, dtype=float)
    if v.shape != (basin.dim, basin.rank):
        raise ValueError(f"basis must have shape (dim, rank)=({basin.dim}, {basin.rank}), got {v.shape}")
    if not np.allclose(v.T @ v, np.eye(basin.rank), atol=1e-10):
        raise ValueError("basis must have orthonormal columns (basis.T @ basis = I)")
    return v


def simulate(
    *,
    basin: Basin,
    optimizer: Optimizer,
    run: RunSpec,
    engine: str = "auto",
    basis=None,
    mask=None,
    optimum=None,
    init_weights=None,
) -> Trace:
    """Monte Carlo of DP-SGD on the streaming basin (module docstring): ``run.replicas`` replicas.

    Args: ``basin`` (records.Basin), ``optimizer`` (records.Optimizer), ``run`` (:class:`RunSpec`),
    ``engine`` one of "auto", "full", "reduced", "numpy". For pruning experiments (full/numpy
    engines only): ``basis`` V (d, r) orthonormal curved directions (None: the first r axes),
    ``mask`` boolean keep-mask (d,) — pruned coordinates are held at w_j = 0, i.e. e_j = −w*_j, get
    no update, no noise, and do not count in ‖g_i‖ —, ``optimum`` w* (d,) (default 0), and
    ``init_weights`` w_0 (d,) (default: w* + the RunSpec initial error). Losses are always those of
    the full error e = w − w*, so pruning a curved coordinate costs ½ λ (Vᵀ e)² there.

    Returns a :class:`Trace`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if not isinstance(basin, Basin):
        raise ValueError(f"basin must be a dptheory.records.Basin, got {type(basin).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be a dptheory.records.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(run, RunSpec):
        raise ValueError(f"run must be a RunSpec, got {type(run).__name__}")
    basis = _check_basis(basis, basin)
    d = basin.dim
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (d,):
            raise ValueError(f"mask must have shape ({d},), got {mask.shape}")
    general = basis is not None or mask is not None or optimum is not None or init_weights is not None
    if engine == "auto":
        engine = "full" if general else "reduced"
    if engine == "reduced" and general:
        raise ValueError(
            "engine='reduced' supports only the axis-aligned streaming basin "
            "(no basis, mask, optimum or init_weights); use engine='full'"
        )
    if run.init_flat_sq > 0 and basin.flat_dim == 0:
        raise ValueError(f"init_flat_sq must be 0 when the basin has no flat directions, got {run.init_flat_sq}")
    if optimum is not None:
        optimum = np.asarray(optimum, dtype=float)
        if optimum.shape != (d,):
            raise ValueError(f"optimum must have shape ({d},), got {optimum.shape}")
    if init_weights is not None and np.shape(init_weights) != (d,):
        raise ValueError(f"init_weights must have shape ({d},), got {np.shape(init_weights)}")

    lr_t, clip_t, nu_t = step_schedule_arrays(optimizer, run)
    rec_flag = run.record_flags
    n_rec = int(rec_flag.sum())
    seeds = replica_seeds(run)
    disp_step = -1 if run.displacement_step is None else run.displacement_step
    lam = basin.curvature_array
    s_flat = basin.sample_std if basin.spread == "ambient" else 0.0
    poisson = run.sampling == "poisson"
    out = {k: np.full((run.replicas, n_rec), np.nan) for k in TRACE_METRICS}
    numba_states = replica_states([s[1] for s in seeds])

    if engine == "reduced":
        x0 = np.full((run.replicas, basin.rank), run.init_error / math.sqrt(basin.rank))
        rho0 = np.full(run.replicas, math.sqrt(run.init_flat_sq))
        disp_vec = np.full(basin.rank, run.displacement / math.sqrt(basin.rank))
        reduced.run_reduced(
            x0,
            rho0,
            lam,
            basin.flat_curvature,
            basin.sample_std,
            s_flat,
            float(basin.flat_dim),
            optimizer.batch_size,
            poisson,
            lr_t,
            clip_t,
            nu_t,
            disp_step,
            disp_vec,
            rec_flag,
            basin.heldout_flat_curvature,
            numba_states,
            *(out[k] for k in TRACE_METRICS),
        )
    else:
        if optimum is None:
            optimum = np.zeros(d)
        e0 = _initial_errors(basin, run, basis, seeds, optimum, init_weights, mask)
        disp_vec = run.displacement * _curved_direction(basin, basis)
        if engine == "full":
            basis_t = kernels.as_basis_t(basis, d)
            kept = kernels.as_kept(mask, d)
            kernels.run_streaming(
                e0,
                lam,
                basin.flat_curvature,
                basis_t,
                kept,
                basin.sample_std,
                basin.spread == "basin",
                optimizer.batch_size,
                poisson,
                lr_t,
                clip_t,
                nu_t,
                disp_step,
                disp_vec,
                rec_flag,
                basin.heldout_flat_curvature,
                numba_states,
                *(out[k] for k in TRACE_METRICS),
            )
        else:
            out = kernels_numpy.run_streaming(
                e0,
                curvatures=lam,
                flat_curvature=basin.flat_curvature,
                basis=basis,
                mask=mask,
                sample_std=basin.sample_std,
                basin_spread=basin.spread == "basin",
                batch_size=optimizer.batch_size,
                poisson=poisson,
                lr_t=lr_t,
                clip_t=clip_t,
                nu_t=nu_t,
                disp_step=disp_step,
                disp_vec=disp_vec,
                rec_flag=rec_flag,
                heldout_kappa=basin.heldout_flat_curvature,
                seeds=[s[1] for s in seeds],
            )
    steps = np.flatnonzero(rec_flag) + 1
    return Trace(steps=steps, engine=engine, seed=run.seed, **out)
