"""The shared records validate their arguments and encode the four ablation modes exactly."""

import math

import numpy as np
import pytest

from dptheory import Basin, LinearDynamics, Mode, Optimizer


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=-1, curvatures=(1.0,), sample_std=1.0), "dim"),
        (dict(dim=0, curvatures=(1.0,), sample_std=1.0), "dim"),
        (dict(dim=2, curvatures=(1.0, 1.0, 1.0), sample_std=1.0), "rank"),
        (dict(dim=10, curvatures=(1.0, -1.0), sample_std=1.0), "curvatures"),
        (dict(dim=10, curvatures=(1.0, float("nan")), sample_std=1.0), "curvatures"),
        (dict(dim=10, curvatures=(1.0,), sample_std=float("nan")), "sample_std"),
        (dict(dim=10, curvatures=(1.0,), sample_std=-1.0), "sample_std"),
        (dict(dim=10, curvatures=(1.0,), sample_std=1.0, spread="everywhere"), "spread"),
        (dict(dim=2.5, curvatures=(1.0,), sample_std=1.0), "dim"),
    ],
)
def test_basin_rejects_bad_input_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Basin(**kwargs)


def test_basin_accepts_float_integers_like_1e6():
    b = Basin(dim=1e6, curvatures=[1.0] * 3, sample_std=0.1)
    assert b.dim == 1_000_000 and isinstance(b.dim, int)
    assert b.rank == 3 and b.flat_dim == 999_997
    assert b.noise_dim == 1_000_000
    assert Basin(dim=1e6, curvatures=[1.0] * 3, sample_std=0.1, spread="basin").noise_dim == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=0.0, batch_size=1), "lr"),
        (dict(lr=float("nan"), batch_size=1), "lr"),
        (dict(lr=0.1, batch_size=0), "batch_size"),
        (dict(lr=0.1, batch_size=4, clip_norm=0.0), "clip_norm"),
        (dict(lr=0.1, batch_size=4, clip_norm=-1.0), "clip_norm"),
        (dict(lr=0.1, batch_size=4, clip_norm=float("nan")), "clip_norm"),
        (dict(lr=0.1, batch_size=4, noise_multiplier=-0.5), "noise_multiplier"),
        (dict(lr=0.1, batch_size=4, mode="private"), "mode"),
        (dict(lr=0.1, batch_size=4, noise_multiplier=1.0, mode="dpsgd"), "finite clip_norm"),
    ],
)
def test_optimizer_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Optimizer(**kwargs)


def test_modes_table():
    # The table in dptheory/records.py: which modes clip, and the noise std on the gradient sum.
    base = dict(lr=0.1, batch_size=8, clip_norm=2.0, noise_multiplier=1.5, ref_clip_norm=3.0)
    assert Optimizer(**base, mode="sgd").noise_std == 0.0
    assert Optimizer(**base, mode="clip").noise_std == 0.0
    assert Optimizer(**base, mode="noise").noise_std == pytest.approx(1.5 * 3.0)
    assert Optimizer(**base, mode="dpsgd").noise_std == pytest.approx(1.5 * 2.0)
    assert math.isinf(Optimizer(**base, mode="sgd").effective_clip_norm)
    assert math.isinf(Optimizer(**base, mode="noise").effective_clip_norm)
    assert Optimizer(**base, mode="clip").effective_clip_norm == 2.0
    assert [m.clipped for m in Mode] == [False, True, False, True]
    assert [m.noised for m in Mode] == [False, False, True, True]
    assert Optimizer(**base, mode="dpsgd").with_mode("sgd").mode is Mode.SGD


def test_linear_dynamics_validation_and_contraction():
    ld = LinearDynamics(lr=0.5, drift=(1.0, 0.0), noise_var=(0.1, 0.2), flat_dim=3)
    np.testing.assert_allclose(ld.contraction, [0.5, 1.0])
    with pytest.raises(ValueError, match="drift"):
        LinearDynamics(lr=0.5, drift=(-1.0,), noise_var=(0.1,))
    with pytest.raises(ValueError, match="equal length"):
        LinearDynamics(lr=0.5, drift=(1.0, 2.0), noise_var=(0.1,))
