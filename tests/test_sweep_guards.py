"""Guards of the network sweeps and of the claims' new training fields: every value a sweep's runs will
use is checked and its resources estimated before the first run, a diverging tuning candidate is not
chosen (and never kills the sweep), and the step curves survive a resumed extension unchanged."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from simulations import net_ablate as ablate
from simulations import net_common as _common
from simulations import net_epsilon as epsilon
from simulations import net_prune as prune
from simulations import net_switch as switch
from simulations import net_tune as tune
from simulations import net_width as width
from simulations.common.resources import ResourceError, limits
from simulations.common.stats import interval_verdict, paired_t, verdict
from simulations.nn.train import TrainConfig, TrainingDiverged, run_train, train, training_cost

torch.set_num_threads(1)

TINY = dict(
    dataset="teacher:k=2,d=8",
    n_train=60,
    n_test=30,
    n_val=12,
    epochs=2,
    batch_size=6,
    width=4,
    depth=1,
    seeds=(0, 1),
    tune_seeds=(1000,),
    lr_grid=(0.05, 0.2),
    grid_extend=0,
    quiet=True,
)
SWEEPS = {
    "ablate": lambda **kw: ablate.AblateConfig(**{**TINY, "burst_epoch": 1, "burst_scale": 0.5, **kw}),
    "width": lambda **kw: width.WidthConfig(**{**TINY, "widths": (2, 4), **kw}),
    "prune": lambda **kw: prune.PruneConfig(
        **{**TINY, "sparsities": (0.5,), "n_public": 12, "public_epochs": 1, "public_batch_size": 6, **kw}
    ),
    "epsilon": lambda **kw: epsilon.EpsilonConfig(
        **{**TINY, "epsilons": (2.0,), "n_public": 12, "public_epochs": 1, "public_batch_size": 6, **kw}
    ),
    "switch": lambda **kw: switch.SwitchConfig(**{**TINY, "switch_epochs": (1,), **kw}),
}
MODULES = {"ablate": ablate, "width": width, "prune": prune, "epsilon": epsilon, "switch": switch}


def _no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a run started although the sweep should have been refused up front")

    monkeypatch.setattr(_common, "run_training", refuse)
    monkeypatch.setattr(_common, "run_saved", refuse)


# --------------------------------------------------------------------------------------------
# check_sweep: before the first run


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_a_sweep_that_cannot_fit_is_refused_before_any_run(name, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    config = SWEEPS[name](out=str(tmp_path / "out"))
    with limits(work=1e3), pytest.raises(ResourceError, match="the sweep would take"):
        MODULES[name].run(config)
    with limits(memory="1K"), pytest.raises(ResourceError, match="one run of the sweep would need"):
        MODULES[name].run(config)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_a_sweep_within_the_limits_passes_the_check(name):
    config = SWEEPS[name]()
    _common.check_sweep(config, config.planned_runs())  # the tiny configs fit the default limits


def test_the_work_estimate_scales_with_the_planned_runs():
    config = SWEEPS["width"]()
    one = max(training_cost(_common.train_config(**config.base_fields(**p))).work for p in config.probe_runs())
    planned = config.planned_runs()
    with limits(work=planned * one * 1.01):
        _common.check_sweep(config, planned)
    with limits(work=planned * one * 0.99), pytest.raises(ResourceError):
        _common.check_sweep(config, planned)


@pytest.mark.parametrize(
    "name,change,needle",
    [
        ("ablate", {"lr_grid": (0.1, 1e300)}, "lr must be between"),
        ("ablate", {"burst_scale": 1e300}, "burst_scale must be <="),
        ("width", {"widths": (2, 10**12)}, "one run of the sweep would need"),
        ("prune", {"public_epochs": 10**12}, "the sweep would take"),
        ("epsilon", {"epsilons": (2.0, 1e300)}, "target_epsilon must be <="),
        ("switch", {"lr": 1e300}, "lr must be between"),
    ],
)
def test_a_value_no_run_can_take_is_refused_up_front(name, change, needle, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    with limits(memory="1G", work=3e9), pytest.raises(ValueError, match=needle):
        MODULES[name].run(SWEEPS[name](out=str(tmp_path / "out"), **change))
    assert list(tmp_path.iterdir()) == []


def test_a_derived_value_is_named_with_its_run(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    # an lr of the grid above the engine's range (1e6): the refusal names the run that would use it
    with pytest.raises(ValueError, match=r"lr must be .* \(in a run this sweep plans: .*lr=2e\+06"):
        ablate.run(SWEEPS["ablate"](lr_grid=(0.1, 2e6), out=str(tmp_path / "out")))


def _extended_lrs(grid, extend, edge):
    """The lr values tune() actually tries when the best point keeps being at one edge (stand-in scores)."""
    config = SWEEPS["width"](lr_grid=grid, grid_extend=extend)
    tried = []

    def fake(cfg):
        tried.append(cfg.lr)
        acc = cfg.lr if edge == "top" else 1.0 / cfg.lr  # always best at the edge
        return {"history": [{"val_acc": 0.0}, {"val_acc": acc}]}

    original = _common.run_training
    _common.run_training = lambda cfg, **kw: fake(cfg)
    try:
        tune.tune(config, [tune.Arm("sgd", {"mode": "sgd"})], label="t")
    finally:
        _common.run_training = original
    return config, tried


@pytest.mark.parametrize("edge", ["top", "bottom"])
def test_probes_reach_as_far_as_the_grid_extensions(edge):
    config, tried = _extended_lrs((0.1, 0.5, 2.5), 3, edge)
    probed = [p["lr"] for p in config.probe_runs() if "lr" in p]
    assert len(set(tried)) == 6  # the grid and three extensions
    assert min(probed) <= min(tried) * (1 + 1e-12) and max(probed) >= max(tried) * (1 - 1e-12)


def test_an_extension_beyond_the_engine_range_is_not_tried():
    _, tried = _extended_lrs((1e5, 5e5), 3, "top")
    assert max(tried) == 5e5 and len(set(tried)) == 2  # 2.5e6 would exceed the engine's lr range


# --------------------------------------------------------------------------------------------
# tuning with diverging candidates


def _diverging_above(threshold):
    def fake(cfg, **kw):
        if cfg.lr > threshold:
            raise TrainingDiverged(f"training diverged by epoch 1 (lr {cfg.lr:g})")
        return {"history": [{"val_acc": 0.0}, {"val_acc": cfg.lr}]}

    return fake


def test_a_diverging_candidate_is_not_chosen_and_the_sweep_goes_on(monkeypatch):
    monkeypatch.setattr(_common, "run_training", _diverging_above(1.0))
    config = SWEEPS["width"](lr_grid=(0.1, 0.5, 5.0))
    rec = tune.tune(config, [tune.Arm("sgd", {"mode": "sgd"})], label="t")["sgd"]
    assert rec["chosen"] == {"lr": 0.5}  # the best of the finite candidates (5.0 would score highest)
    top = rec["grid"][2]
    assert top["val_acc"] is None and top["val_acc_per_seed"] == [None] and "diverged" in top["diverged"]
    assert all("diverged" not in g for g in rec["grid"][:2])


def test_every_candidate_diverging_is_one_error(monkeypatch):
    monkeypatch.setattr(_common, "run_training", _diverging_above(0.0))
    config = SWEEPS["width"](lr_grid=(0.1, 0.5))
    with pytest.raises(ValueError, match="every grid point of arm 'sgd' diverged"):
        tune.tune(config, [tune.Arm("sgd", {"mode": "sgd"})], label="t")


def test_an_evaluation_run_that_diverges_still_stops_the_sweep(monkeypatch):
    monkeypatch.setattr(_common, "run_training", _diverging_above(0.0))
    job = ({"arm": "sgd"}, _common.train_config(**SWEEPS["width"]().base_fields(mode="sgd")))
    with pytest.raises(TrainingDiverged):
        _common.Sweep("eval", quiet=True).run([job])


# --------------------------------------------------------------------------------------------
# verdict lines: no "nan" where a number is undefined by design


def test_verdict_line_says_how_an_interval_verdict_was_decided():
    v = interval_verdict(
        claim="1", statement="tau << E", estimate=0.1, ci95=[0.05, 0.2], n_seeds=5, threshold=0.25, test="bootstrap"
    )
    line = _common.verdict_line(v)
    assert "decided by the 95% CI" in line and "nan" not in line


def test_verdict_line_of_one_seed_has_no_nan():
    v = verdict(claim="2", statement="a > b", test=paired_t([0.3]), held_if="greater")
    line = _common.verdict_line({**v, "unit": "points", "scale": 100.0})
    assert "nan" not in line and "[no CI]" in line and "no p-value" in line


# --------------------------------------------------------------------------------------------
# the claims' training fields: validated, counted, resumed


BASE = TrainConfig(
    dataset="teacher:k=2,d=8",
    n_train=60,
    n_test=30,
    width=4,
    depth=1,
    epochs=2,
    batch_size=6,
    lr=0.1,
    noise_multiplier=1.0,
    quiet=True,
    accountants=("rdp",),
)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"layer_diagnostics": "yes"}, "layer_diagnostics must be true or false"),
        ({"layer_diagnostics": True}, "give curve_steps too"),
        ({"curve_steps": (-1,)}, "curve_steps entry must be >= 0"),
        ({"curve_samples": 0}, "curve_samples must be >= 1"),
        ({"n_val": -1}, "n_val must be >= 0"),
        ({"train_split": "public"}, "needs n_public >= 1"),
        ({"switch_lr": 1e300, "switch_epoch": 1, "switch_mode": "sgd"}, "switch_lr must be between"),
        ({"switch_lr": 0.5}, "switch_lr needs switch_epoch"),
    ],
)
def test_new_fields_are_validated(change, needle):
    with pytest.raises(ValueError, match=needle):
        replace(BASE, **change)


def test_curve_steps_past_the_run_are_refused():
    steps = 2 * round(60 / 6)
    train(replace(BASE, curve_steps=(0, steps)))  # "after the last step" is allowed
    with pytest.raises(ValueError, match="curve_steps entries must be <="):
        train(replace(BASE, curve_steps=(0, steps + 1)))


def test_the_cost_counts_validation_curves_diagnostics_and_every_split():
    base = training_cost(BASE)
    more_val = training_cost(replace(BASE, n_val=1000))
    assert more_val.work > base.work and more_val.memory > base.memory  # evaluated every epoch; held in memory
    assert training_cost(replace(BASE, n_public=1000)).memory > base.memory
    curves = training_cost(replace(BASE, curve_steps=tuple(range(10))))
    assert curves.work > base.work
    diag = training_cost(replace(BASE, curve_steps=tuple(range(10)), layer_diagnostics=True))
    assert diag.work > curves.work and diag.memory > curves.memory


def test_a_resumed_extension_records_the_same_curve_as_one_longer_run(tmp_path):
    spe = round(60 / 6)
    cfg = replace(BASE, mode="sgd", curve_steps=(0, 3, 2 * spe), out=str(tmp_path / "r"))
    run_train(cfg)
    extended = train(replace(cfg, epochs=3, resume=True))
    reference = train(replace(cfg, epochs=3, out=None))
    assert extended["curve"] == reference["curve"]
    assert extended["curve"]["step"] == [0, 3, 2 * spe]  # the boundary point once, not twice
    assert np.all(np.isfinite(extended["curve"]["test_acc"]))


def test_layer_diagnostics_are_finite_and_per_layer():
    res = train(replace(BASE, curve_steps=(0, 5), layer_diagnostics=True, diagnostic_samples=16))
    layers = res["curve"]["layers"]
    assert [rec["step"] for rec in layers] == [0, 5]
    for rec in layers:
        assert rec["layers"] and all(math.isfinite(v["norm_q50"]) for v in rec["layers"].values())


def test_sweep_configs_are_frozen_dataclasses_with_probes():
    for make in SWEEPS.values():
        config = make()
        assert dataclasses.is_dataclass(config) and config.probe_runs()


def test_the_tuning_lr_ceiling_is_the_engines():
    from simulations.nn.train import MAX_LR

    assert _common.MAX_TUNED_LR == MAX_LR  # net_common keeps its own copy so that --help does not import torch
