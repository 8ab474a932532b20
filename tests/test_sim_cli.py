"""The simulation command lines: tiny runs write complete result folders; bad input → one line, exit 2.

Each CLI is called in-process (``main([...])``) with its output under ``tmp_path``. Bad input must be
caught before any simulation: exit status 2, exactly one line on stderr, no traceback, and no
result folder (nor a temporary sibling) left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings

import numpy as np
import pytest

from simulations import basin_dim, prune, recovery, switch
from simulations.common.cli import parse_config
from simulations.common.sweep import log_grid
from simulations.common.tables import fmt

# Tiny but complete runs of every CLI (seconds each; numba's cache makes the JIT a one-off).
TINY = {
    "basin_dim": (
        basin_dim,
        [
            "--d",
            "1e3",
            "--rank",
            "4",
            "--points",
            "2",
            "--replicas",
            "2",
            "--window",
            "5",
            "--burn-in",
            "1",
            "--batch-size",
            "4",
            "--theory-points",
            "3",
            "--quiet",
        ],
    ),
    "recovery": (
        recovery,
        [
            "--d",
            "1e3",
            "--rank",
            "4",
            "--points",
            "2",
            "--replicas",
            "2",
            "--window",
            "5",
            "--burn-in",
            "1",
            "--batch-size",
            "4",
            "--quiet",
        ],
    ),
    "switch": (
        switch,
        [
            "--d",
            "1e3",
            "--rank",
            "4",
            "--steps",
            "20",
            "--points",
            "3",
            "--replicas",
            "2",
            "--batch-size",
            "4",
            "--quiet",
        ],
    ),
    "prune": (
        prune,
        [
            "--d",
            "60",
            "--rank",
            "4",
            "--support",
            "4",
            "--points",
            "2",
            "--replicas",
            "2",
            "--steps",
            "30",
            "--batch-size",
            "4",
            "--quiet",
        ],
    ),
}

FILES = ("config.json", "metrics.json", "metrics.npz", "env.json")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Run every CLI once at tiny sizes; return {name: (exit code, folder, stdout)}."""
    base = tmp_path_factory.mktemp("cli")
    out = {}
    for name, (mod, argv) in TINY.items():
        folder = base / name
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = mod.main(argv + ["--out", str(folder)])
        out[name] = (code, folder, buf.getvalue())
    return out


@pytest.fixture
def no_figures(monkeypatch):
    """Skip drawing (for reruns whose numbers, not figures, are compared)."""
    from paper import figures

    for name in TINY:
        monkeypatch.setattr(figures, name, lambda folder, formats=(): [])


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_run_writes_the_result_folder(name, tiny_runs):
    code, folder, _ = tiny_runs[name]
    assert code == 0
    for f in FILES:
        assert (folder / f).is_file(), f
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["experiment"] == name
    assert (folder / f"{name}.png").stat().st_size > 1000  # drawn from the files by paper.figures
    config = json.loads((folder / "config.json").read_text())
    assert config["out"] == str(folder) and config["seed"] == 0  # the seed is saved with the results
    env = json.loads((folder / "env.json").read_text())
    assert "numpy" in env and "python" in env
    # No temporary sibling left behind by the atomic write.
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


def _numbers(obj):
    """All numbers in a JSON document, in order (for exact comparisons of two runs)."""
    if isinstance(obj, dict):
        return [x for k in obj for x in _numbers(obj[k])]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [obj]
    return []


@pytest.mark.parametrize("name", list(TINY))
def test_same_seed_gives_identical_numbers_and_another_seed_differs(name, tiny_runs, tmp_path, no_figures, capsys):
    mod, argv = TINY[name]
    _, first, _ = tiny_runs[name]
    assert mod.main(argv + ["--out", str(tmp_path / "again")]) == 0
    a = _numbers(json.loads((first / "metrics.json").read_text()))
    b = _numbers(json.loads((tmp_path / "again" / "metrics.json").read_text()))
    assert len(a) > 10 and a == b
    with np.load(first / "metrics.npz") as x, np.load(tmp_path / "again" / "metrics.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k])
    assert mod.main(argv + ["--seed", "1", "--out", str(tmp_path / "other")]) == 0
    c = _numbers(json.loads((tmp_path / "other" / "metrics.json").read_text()))
    assert c != a


def test_basin_dim_metrics_are_internally_consistent(tiny_runs):
    _, folder, _ = tiny_runs["basin_dim"]
    m = json.loads((folder / "metrics.json").read_text())
    assert m["dims"] == [4, 1000]
    rows = m["rows"]
    assert sorted({r["mode"] for r in rows}) == ["clip", "dpsgd", "noise", "sgd"] and len(rows) == 8
    for r in rows:
        # Unclipped modes never clip; a fraction is in [0, 1]; at d = r there are no flat directions.
        frac = r["sim_clip_fraction"]["mean"]
        assert 0.0 <= frac <= 1.0
        if r["mode"] in ("sgd", "noise"):
            assert frac == 0.0 and r["pred_clip_fraction"] == 0.0
        if r["dim"] == 4:
            assert r["sim_flat_err_sq"]["mean"] == 0.0 and r["pred_flat_err_sq"] == 0.0
    with np.load(folder / "metrics.npz") as z:
        assert z["theory_dims"].tolist() == [4, 63, 1000]


def test_integer_flags_accept_scientific_notation(tmp_path):
    cfg = parse_config(basin_dim.BasinDimConfig, ["--d", "1e6", "--rank", "1e2", "--out", str(tmp_path / "x")])
    assert cfg.d == 1_000_000 and cfg.dims()[0] == 100 and cfg.dims()[-1] == 1_000_000


BAD_INPUTS = {
    "rank > d": ["--d", "10", "--rank", "20"],
    "d <= 0": ["--d", "0"],
    "negative d": ["--d", "-5"],
    "clip <= 0": ["--clip-norm", "0"],
    "negative clip": ["--clip-norm", "-1"],
    "negative sigma": ["--noise-multiplier", "-0.5"],
    "lr <= 0": ["--lr", "0"],
    "NaN": ["--lr", "nan"],
    "NaN sample std": ["--sample-std", "nan"],
    "non-integer d": ["--d", "2.5"],
    "unknown flag": ["--bogus", "1"],
    "missing value": ["--d"],
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("name", list(TINY))
def test_bad_input_is_one_line_exit_2_and_no_folder(name, bad, tmp_path, capsys, monkeypatch):
    mod, _ = TINY[name]
    ran = []
    monkeypatch.setattr(mod, "run", lambda cfg: ran.append(cfg))  # must never be reached
    folder = tmp_path / "out"
    code = mod.main(BAD_INPUTS[bad] + ["--out", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert ran == []
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "error" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(TINY))
def test_unwritable_output_path_is_rejected_before_simulating(name, tmp_path, capsys, monkeypatch):
    mod, argv = TINY[name]
    ran = []
    monkeypatch.setattr(mod, "run", lambda cfg: ran.append(cfg))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = mod.main(argv + ["--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and ran == []
    assert len(err.strip().splitlines()) == 1 and "not writable" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_error_during_the_run_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """A failure after validation (here: the engine) → one line, exit 2, no partial folder."""
    import simulations.basin.engine as engine

    def broken(**kwargs):
        raise ValueError("engine exploded")

    monkeypatch.setattr(engine, "simulate", broken)
    mod, argv = TINY["basin_dim"]
    code = mod.main(argv + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().endswith("engine exploded") and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_table_is_printed_with_the_predictions(tiny_runs):
    out = tiny_runs["basin_dim"][2]
    header = out.splitlines()[0]
    for col in ("clip frac (pred)", "loss pred", "recov pred", "flat err² pred", "held-out pred"):
        assert col in header
    assert sum(1 for line in out.splitlines() if " dpsgd " in line) == 2
    metrics = json.loads((tiny_runs["basin_dim"][1] / "metrics.json").read_text())
    for row in metrics["rows"]:  # every predicted loss in the file is the one printed on its line
        line = next(ln for ln in out.splitlines() if ln.split()[:2] == [str(row["dim"]), row["mode"]])
        assert fmt(row["pred_loss"]) in line.split()
        assert math.isfinite(row["pred_loss"]) and row["pred_loss"] > 0


# ---------------------------------------------------------------------------------------------
# basin_dim's theory bookkeeping (speed without changing a number)
# ---------------------------------------------------------------------------------------------


def _small_config(tmp_path, **kw):
    args = dict(
        d=2000,
        rank=4,
        points=2,
        replicas=2,
        window=5,
        burn_in=1,
        batch_size=4,
        theory_points=3,
        out=str(tmp_path / "x"),
    )
    args.update(kw)
    return basin_dim.BasinDimConfig(**args)


@pytest.mark.parametrize("mode", ["sgd", "clip", "dpsgd"])
def test_measure_predictions_are_the_theory_functions_bit_for_bit(mode, tmp_path):
    """The memoised loss and clip fraction, and the held-out loss assembled from the loss and flat-error
    predictions (λ_flat = 0), are exactly dptheory's numbers: at d = 2000, s√d = 4.5 > C = 2 (clipped)."""
    from dptheory import clipped_dynamics as cd
    from dptheory.records import Mode

    cfg = _small_config(tmp_path)
    basin, opt = cfg.basin(2000), cfg.optimizer(Mode(mode))
    row = basin_dim.measure(basin=basin, optimizer=opt, config=cfg, seed=0)
    t_end = row["burn_in_steps"] + row["window_steps"]  # the last step of the window (every step recorded)
    assert row["pred_loss"] == cd.stationary_excess_loss(basin=basin, optimizer=opt)
    assert row["pred_clip_fraction"] == cd.stationary_clip_fraction(basin=basin, optimizer=opt)
    assert row["pred_heldout"] == float(cd.heldout_excess_loss(basin=basin, optimizer=opt, steps=t_end)[-1])
    assert row["pred_flat_err_sq"] > 0  # d > r: the held-out loss has a flat part, so the identity is not vacuous
    if mode != "sgd":
        assert row["pred_clip_fraction"] > 0.99


def test_measure_heldout_with_curved_flat_directions_calls_the_theory(tmp_path):
    """With λ_flat > 0 the loss-plus-flat shortcut is wrong (the flat stationary part would count twice):
    measure must then use heldout_excess_loss itself."""
    from dptheory import clipped_dynamics as cd
    from dptheory.records import Basin, Mode

    cfg = _small_config(tmp_path, steps=2000)
    basin = Basin(dim=500, curvatures=(1.0,) * 4, sample_std=0.1, flat_curvature=0.5, heldout_flat_curvature=1e-3)
    opt = cfg.optimizer(Mode.DPSGD)
    with warnings.catch_warnings():
        # the recovery curve (curved-only stationary level, flat part starting at 0) never crosses when
        # λ_flat > 0, so the run is capped at --steps: irrelevant to the held-out prediction tested here
        warnings.simplefilter("ignore", RuntimeWarning)
        row = basin_dim.measure(basin=basin, optimizer=opt, config=cfg, seed=0)
    t_end = row["burn_in_steps"] + row["window_steps"]
    exact = float(cd.heldout_excess_loss(basin=basin, optimizer=opt, steps=t_end)[-1])
    assert row["pred_heldout"] == exact
    shortcut = row["pred_loss"] + 0.5 * (basin.flat_curvature + basin.heldout_flat_curvature) * row["pred_flat_err_sq"]
    assert abs(shortcut - exact) > 1e-3 * exact


def test_each_stationary_state_is_solved_once_per_run(tmp_path, monkeypatch, no_figures, capsys):
    """run() calls stationary_excess_loss once per distinct (d, mode) of the table ∪ theory grid, and never
    heldout_excess_loss (λ_flat = 0); the figure's lines pass through the table's predictions."""
    from dptheory import clipped_dynamics as cd

    calls = {"loss": [], "heldout": 0}
    loss = cd.stationary_excess_loss

    def counted(*, basin, optimizer, **kw):
        calls["loss"].append((basin, optimizer))
        return loss(basin=basin, optimizer=optimizer, **kw)

    def heldout(**kw):
        calls["heldout"] += 1
        raise AssertionError("heldout_excess_loss should not be needed when λ_flat = 0")

    monkeypatch.setattr(cd, "stationary_excess_loss", counted)
    monkeypatch.setattr(cd, "heldout_excess_loss", heldout)
    cfg = _small_config(tmp_path, points=3, theory_points=4)
    metrics = basin_dim.run(cfg)
    dims = basin_dim.theory_dims(cfg)
    assert cfg.dims() == [4, 89, 2000] and dims == [4, 32, 89, 252, 2000]  # grid [4, 32, 252, 2000] ∪ sweep
    assert len(calls["loss"]) == len(set(calls["loss"])) == len(dims) * len(basin_dim.MODES)
    assert calls["heldout"] == 0
    with np.load(tmp_path / "x" / "metrics.npz") as z:
        for row in metrics["rows"]:
            j = z["theory_dims"].tolist().index(row["dim"])
            assert z[f"theory_loss_{row['mode']}"][j] == row["pred_loss"]
            assert z[f"theory_clip_fraction_{row['mode']}"][j] == row["pred_clip_fraction"]


def test_default_theory_grid_contains_the_sweep(tmp_path):
    """The defaults (13 theory points, 7 swept) nest: the figure's grid adds no dimension beyond its 13."""
    cfg = basin_dim.BasinDimConfig(out=str(tmp_path / "x"))
    assert len(cfg.dims()) == 7 and basin_dim.theory_dims(cfg) == log_grid(low=100, high=1e6, points=13)
    assert set(cfg.dims()) < set(basin_dim.theory_dims(cfg))


@pytest.mark.parametrize("k", [0.5, 2.0, 4.0])
def test_expected_outside_fraction_is_the_student_t_tail(k):
    """P(|T| > k): dof = 1 is Cauchy, 1 − (2/π) atan k; dof → ∞ is normal, erfc(k/√2)."""
    assert basin_dim._outside(k, 1) == pytest.approx(1.0 - 2.0 / math.pi * math.atan(k), rel=1e-12)
    assert basin_dim._outside(k, 10**7) == pytest.approx(math.erfc(k / math.sqrt(2.0)), rel=1e-5)
    assert basin_dim._outside(k, 15) > basin_dim._outside(k, 1000)  # heavier tails with fewer batch means


@pytest.mark.parametrize("name", list(TINY))
def test_a_failing_figure_keeps_the_results_and_exits_0(name, tmp_path, monkeypatch, capsys):
    """The figure is drawn after the result folder is complete: a plotting error warns (one line naming
    the folder) and never deletes results or turns the run into a usage error."""
    from paper import figures

    def broken(folder, formats=()):
        raise RuntimeError("no display")

    monkeypatch.setattr(figures, name, broken)
    mod, argv = TINY[name]
    folder = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = mod.main(argv + ["--out", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0
    assert all((folder / f).is_file() for f in FILES)
    assert len(err) == 1 and "figure not drawn" in err[0] and str(folder) in err[0] and "no display" in err[0]
