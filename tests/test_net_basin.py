"""The warm-start basin experiment (``python -m simulations.nn basin``): grid design, the slowest
direction that matters, paired excess statistics, the agreement statistics against independent
references (scipy's linregress, hand computations), the CLI contract and one tiny real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dptheory.records import Basin, Optimizer
from simulations import gpu_validate
from simulations import net_basin as nb
from simulations.common.agreement import agreement, loglog_fit, rms_log_error, scaled_null, within_share
from simulations.nn import __main__ as nn_main
from simulations.nn.warmstart import ArmTrace

# --------------------------------------------------------------------------------------------
# the grid


def test_star_grid_covers_every_axis_and_the_full_grid_crosses_them():
    cfg = nb.BasinConfig(checks=("none",))
    star = nb.grid(cfg)
    dense = {p.network.width for p in star if p.network.mask == "dense"}
    assert dense == set(cfg.widths)
    assert {p.noise_multiplier for p in star} == set(cfg.sigmas)
    assert {p.clip_factor for p in star} == set(cfg.clip_factors)
    assert {p.network.mask for p in star} == {"dense", *cfg.mask_sources}
    # one axis at a time: every point differs from the centre in at most one setting
    c = (cfg.center_width, "dense", cfg.center_sigma, cfg.center_clip)
    for p in star:
        setting = (p.network.width, p.network.mask, p.noise_multiplier, p.clip_factor)
        assert sum(a != b for a, b in zip(setting, c)) <= 1, setting
    full = nb.grid(nb.BasinConfig(grid="full", checks=("none",)))
    n_nets = len(cfg.widths) + len(cfg.mask_sources)
    assert len(full) == n_nets * len(cfg.sigmas) * len(cfg.clip_factors)
    with_checks = nb.grid(nb.BasinConfig())
    assert {p.network.family for p in with_checks} == {"mlp", "linearised", "teacher"}
    assert sorted(p.network.dataset for p in with_checks if p.network.family == "teacher") == sorted(
        f"teacher:k=4,d={d}" for d in cfg.teacher_dims
    )
    lin = [p for p in with_checks if p.network.family == "linearised"]
    assert {p.noise_multiplier for p in lin} == set(cfg.sigmas)
    assert all(p.modes == ("noise",) for p in lin if p.noise_multiplier != cfg.center_sigma)


# --------------------------------------------------------------------------------------------
# the slowest direction that matters


def test_relaxation_picks_the_slowest_direction_needed_for_the_share():
    from dptheory.spectral import spectral_basin_from_basin

    # unclipped SGD with isotropic per-example noise: every curved direction holds ≈ ητ²/4 of the
    # stationary excess (equipartition), so half the share needs only the fast direction and 90 %
    # needs the slow one too
    basin = spectral_basin_from_basin(basin=Basin(dim=2, curvatures=(1.0, 0.01), sample_std=1.0), n_train=10_000)
    opt = Optimizer(lr=0.1, batch_size=10, mode="sgd")
    slow = nb.relaxation(basin, opt, matters=0.9, closure="linear")
    fast = nb.relaxation(basin, opt, matters=0.4, closure="linear")
    assert slow["curvature"] == pytest.approx(0.01) and slow["steps"] == pytest.approx(1 / (0.1 * 0.01))
    assert fast["curvature"] == pytest.approx(1.0) and fast["steps"] == pytest.approx(1 / 0.1)


# --------------------------------------------------------------------------------------------
# the measured excess: paired, window = last third, one batch per seed


def _trace(train, test, batch):
    steps = np.arange(len(train)) * 10
    n = len(batch)
    return ArmTrace(
        batch_loss=np.asarray(batch, float),
        clip_fraction=np.zeros(n),
        mean_clip_factor=np.ones(n),
        eval_steps=steps,
        train_loss=np.asarray(train, float),
        test_loss=np.asarray(test, float),
    )


def test_measured_excess_is_the_paired_window_mean_with_the_seed_se():
    rng = np.random.default_rng(0)
    arms, sgds, per_seed = [], [], []
    for offset in (0.1, 0.3, 0.2):
        base = rng.normal(size=31)
        sgds.append(_trace(base, base, rng.normal(size=300)))
        arms.append(_trace(base + offset, base + 2 * offset, rng.normal(size=300)))
        per_seed.append(offset)
    out = nb.measured_excess(arms, sgds, start=200, stop=300, batch_steps=math.inf)
    assert out["train"]["mean"] == pytest.approx(0.2)
    assert out["train"]["se"] == pytest.approx(np.std(per_seed, ddof=1) / math.sqrt(3))
    assert out["test"]["mean"] == pytest.approx(0.4)
    assert out["n_batches"] == 1 and out["train"]["n"] == 3


# --------------------------------------------------------------------------------------------
# agreement statistics against independent references


def test_loglog_fit_matches_scipy_linregress_and_its_t_interval():
    from scipy import stats

    rng = np.random.default_rng(1)
    p = 10 ** rng.uniform(-4, -1, 20)
    m = p**0.9 * 10 ** rng.normal(0, 0.1, 20)
    fit = loglog_fit(np.append(p, -1.0), np.append(m, 1.0))
    ref = stats.linregress(np.log10(p), np.log10(m))
    t = stats.t.ppf(0.975, 18)
    assert fit["slope"] == pytest.approx(ref.slope) and fit["intercept"] == pytest.approx(ref.intercept)
    assert fit["slope_ci"] == pytest.approx([ref.slope - t * ref.stderr, ref.slope + t * ref.stderr])
    assert fit["intercept_ci"][1] - fit["intercept"] == pytest.approx(t * ref.intercept_stderr)
    assert fit["n"] == 20 and fit["excluded"] == 1


def test_within_share_null_and_rms_by_hand():
    p = np.array([1.0, 2.0, 4.0, np.nan])
    m = np.array([1.2, 1.0, 4.0, 3.0])
    assert within_share(p, m, tolerance=0.25) == pytest.approx(2 / 3)
    d = np.array([10.0, 100.0, 1000.0])
    meas = np.array([2.0, 20.0, 200.0])
    np.testing.assert_allclose(scaled_null(d, meas), meas)  # exactly proportional: c = 0.2
    assert rms_log_error([1.0, 10.0], [10.0, 10.0]) == pytest.approx(math.sqrt(0.5))
    s = agreement([1.0, 2.0, 4.0], [1.0, 2.0, 8.0], [0.1, 0.1, 10.0], tolerance=0.25, k=2.0)
    assert s["within_tolerance"] == pytest.approx(2 / 3) and s["within_k_se"] == 1.0


# --------------------------------------------------------------------------------------------
# command line


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--center-width", "7"], "center_width"),
        (["--seeds", "0"], "seeds"),
        (["--lr-factor", "2.5"], "lr_factor"),
        (["--mask-sources", "magic"], "mask_sources"),
        (["--checks", "everything"], "checks"),
        (["--teacher-dims", "40"], "teacher_dims"),
        (["--center-sigma", "3"], "center_sigma"),
        (["--max-steps", "5", "--min-steps", "10"], "max_steps"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_folder(argv, needle, tmp_path, capsys):
    out = tmp_path / "res"
    assert nn_main.main(["basin", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def _small_argv() -> list[str]:
    argv = []
    for key, value in gpu_validate.basin_small().items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return argv


def test_tiny_run_writes_rows_summary_and_figure_and_reuses_its_cache(tmp_path, capsys):
    out, cache = tmp_path / "basin", tmp_path / "cache"
    base = ["basin", *_small_argv(), "--quiet", "--cache", str(cache)]
    assert nn_main.main([*base, "--out", str(out)]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "net_basin.png").is_file() and (out / "config.json").is_file()
    rows = metrics["rows"]
    assert {r["arm"] for r in rows} == {"clip", "noise", "dpsgd"}
    assert {r["family"] for r in rows} == {"mlp", "linearised", "teacher"}
    for r in rows:
        assert r["privacy"].startswith("not private")
        assert set(r["measured_excess"]) >= {"mean", "se", "n"} and r["measured_excess"]["n"] == 2
        assert r["predicted_excess"] == pytest.approx(r["predicted_bias"] + r["predicted_noise"], rel=1e-9, abs=1e-15)
        assert r["lr_times_lambda1"] <= 0.5 * (1 + 1e-12)
    # one row per arm run: clip-only (independent of σ) is never copied to other σ points
    keys = [
        (r["network"], r["arm"], r["clip_factor"], 0.0 if r["arm"] == "clip" else r["noise_multiplier"]) for r in rows
    ]
    assert len(set(keys)) == len(keys)
    # unclipped noise-only: no clipping bias in the model
    assert all(r["predicted_bias"] == pytest.approx(0.0, abs=1e-15) for r in rows if r["arm"] == "noise")
    summary = metrics["summary"]
    for family in ("mlp", "linearised", "teacher"):
        assert {"model", "null_d", "null_sqrt_d", "model_beats_nulls"} <= set(summary[family])
    assert summary["linearised"]["noise_only"] and "dimension_slopes" in summary["teacher"]
    assert {r["direction"] for r in metrics["recovery"]} == {"top", "random", "flat"}
    # the minima and measurements are cached: asking again reads them (no new files, the same numbers)
    from simulations.nn.minimum import measured_minimum

    cfg = nb.BasinConfig(**gpu_validate.basin_small(), out=str(out), cache=str(cache))
    net = nb.grid(cfg)[0].network
    before = sorted(p.name for p in cache.iterdir())
    kw = dict(
        top_k=cfg.top_k,
        top_steps=cfg.top_steps,
        probes=cfg.probes,
        lanczos_steps=cfg.lanczos_steps,
        flat_steps=cfg.flat_steps,
        curvatures=cfg.curvatures,
        sketch=cfg.bulk_sketch,
    )
    _, meas = measured_minimum(nb.minimum_spec(cfg, net), cache=cache, **kw)
    assert sorted(p.name for p in cache.iterdir()) == before
    record = next(n for n in metrics["networks"] if n["network"] == net.label)
    assert meas.train_loss == pytest.approx(record["train_objective"], rel=1e-12)
    # the per-example-curvature model and the mean-Hessian one are both reported
    assert all("predicted_mean_hessian" in r and r["drift"] == "per-example" for r in rows)
    assert "model_mean_hessian" in summary["mlp"] and metrics["cpu_seconds"] > 0
    # the docs page is rendered from the folder and a hand edit of it is caught
    from paper import basin_doc

    md = tmp_path / "page.md"
    md.write_text(f"# page\n\nprose\n\n{basin_doc.BEGIN}\n{basin_doc.END}\n\nmore prose\n")
    js = tmp_path / "summary.json"
    assert basin_doc.main([str(out), "--json", str(js), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("# page\n\nprose\n\n") and text.endswith("\n\nmore prose\n")
    assert basin_doc.check(md, js) and basin_doc.main(["--check", "--json", str(js), "--markdown", str(md)]) == 0
    share = json.loads(js.read_text())["families"]["mlp"]["model"]["within_tolerance"]
    assert share == summary["mlp"]["model"]["within_tolerance"]
    assert f"{100 * share:.0f} %" in text
    md.write_text(text.replace("Rows outside", "Rows beyond", 1))
    assert not basin_doc.check(md, js)
    readme = tmp_path / "README.md"
    readme.write_text(f"# r\n\n{basin_doc.BEGIN}\n{basin_doc.END}\n")
    assert (
        basin_doc.main([str(out), "--json", str(js), "--markdown", str(tmp_path / "p2.md"), "--readme", str(readme)])
        == 2
    )
    (tmp_path / "p2.md").write_text(f"{basin_doc.BEGIN}\n{basin_doc.END}\n")
    assert (
        basin_doc.main([str(out), "--json", str(js), "--markdown", str(tmp_path / "p2.md"), "--readme", str(readme)])
        == 0
    )
    assert "Done-means" in readme.read_text() and basin_doc.check(tmp_path / "p2.md", js, readme)
    readme.write_text(readme.read_text().replace("rows within", "rows inside", 1))
    assert not basin_doc.check(tmp_path / "p2.md", js, readme)


def test_committed_theory_vs_networks_page_matches_its_summary():
    from paper import basin_doc

    root = Path(__file__).resolve().parents[1]
    docs = root / "docs"
    assert basin_doc.check(docs / "theory-vs-networks.md", docs / "basin-summary.json", root / "README.md")


def test_fanned_out_arms_give_the_serial_numbers(tmp_path):
    # every network measurement and every (arm, seed) run is a fan-out cell under --workers; its bits
    # are the serial run's (separate caches: the workers find and measure the minima themselves)
    kw = dict(gpu_validate.basin_small(), checks=("linearised",), quiet=True)
    serial = nb.run(nb.BasinConfig(**kw, out=str(tmp_path / "serial"), cache=str(tmp_path / "c1")))
    fanned = nb.run(nb.BasinConfig(**kw, out=str(tmp_path / "fanned"), cache=str(tmp_path / "c2"), workers=2))
    assert serial["networks"] and [n["train_objective"] for n in serial["networks"]] == [
        n["train_objective"] for n in fanned["networks"]
    ]
    for a, b in zip(serial["networks"], fanned["networks"]):
        assert np.array_equal(a["top_eigenvalues"], b["top_eigenvalues"])
    assert len(serial["rows"]) == len(fanned["rows"]) > 0
    for a, b in zip(serial["rows"], fanned["rows"]):
        assert (a["network"], a["arm"]) == (b["network"], b["arm"])
        assert a["measured_excess"] == b["measured_excess"] and a["predicted_excess"] == b["predicted_excess"]
    assert [r["measured_recovery"] for r in serial["recovery"]] == [r["measured_recovery"] for r in fanned["recovery"]]
    assert serial["summary"] == fanned["summary"]
    assert json.loads((tmp_path / "fanned" / "config.json").read_text())["workers"] == 2
