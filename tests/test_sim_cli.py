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

import numpy as np
import pytest

from simulations import basin_dim, prune, recovery, switch
from simulations._cli import parse_config
from simulations._compare import fmt

# Tiny but complete runs of every CLI (seconds each; numba's cache makes the JIT a one-off).
TINY = {
    "basin_dim": (basin_dim, ["--d", "1e3", "--rank", "4", "--points", "2", "--replicas", "2", "--window", "5",
                              "--burn-in", "1", "--batch-size", "4", "--theory-points", "3", "--quiet"]),
    "recovery": (recovery, ["--d", "1e3", "--rank", "4", "--points", "2", "--replicas", "2", "--window", "5",
                            "--burn-in", "1", "--batch-size", "4", "--quiet"]),
    "switch": (switch, ["--d", "1e3", "--rank", "4", "--steps", "20", "--points", "3", "--replicas", "2",
                        "--batch-size", "4", "--quiet"]),
    "prune": (prune, ["--d", "60", "--rank", "4", "--support", "4", "--points", "2", "--replicas", "2",
                      "--steps", "30", "--batch-size", "4", "--quiet"]),
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
    import simulations.engine as engine

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
