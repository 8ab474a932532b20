"""Figures are drawn from result folders only: `python -m paper DIR…` redraws them; bad folders → exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paper import figures
from paper.__main__ import main as paper_main
from simulations import basin_dim, recovery, switch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF"

RUNS = {
    "basin_dim": (
        basin_dim,
        [
            "--d",
            "300",
            "--rank",
            "3",
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
            "300",
            "--rank",
            "3",
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
            "300",
            "--rank",
            "3",
            "--steps",
            "10",
            "--points",
            "3",
            "--replicas",
            "2",
            "--batch-size",
            "4",
            "--quiet",
        ],
    ),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Result folders written by the real CLIs at tiny sizes, with the CLIs' own drawing switched
    off (tests/test_sim_cli.py covers it), so every figure below is drawn from the files alone."""
    base = tmp_path_factory.mktemp("paper")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, (mod, argv) in RUNS.items():
            mp.setattr(figures, name, lambda folder, formats=(): [])
            assert mod.main(argv + ["--out", str(base / name)]) == 0
            assert not list((base / name).glob(f"{name}.*g"))
            out[name] = base / name
    return out


def test_python_m_paper_draws_every_folder_from_the_files(folders, capsys):
    names = list(RUNS)
    assert paper_main(["--format", "png", *(str(folders[n]) for n in names)]) == 0
    printed = capsys.readouterr().out.split()
    expected = [folders[n] / f"{fn.__name__}.png" for n in names for fn in figures.FIGURES[n]]
    assert printed == [str(p) for p in expected]
    assert len(expected) > len(names)  # basin_dim and switch draw two figures each
    for p in expected:
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_python_m_paper_writes_pdf(folders, capsys):
    folder = folders["switch"]
    assert paper_main(["--format", "pdf", str(folder)]) == 0
    assert capsys.readouterr().out.split() == [str(folder / "switch.pdf"), str(folder / "switch_curves.pdf")]
    assert (folder / "switch.pdf").read_bytes()[:4] == PDF_MAGIC


def test_figure_depends_on_the_file_contents(folders, tmp_path):
    """Changing the numbers in metrics.json changes the drawn image (the figure reads the files)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folders["basin_dim"], copy)
    if not (copy / "basin_dim.png").exists():  # normally drawn by the test above
        figures.basin_dim(copy, formats=("png",))
    before = (copy / "basin_dim.png").read_bytes()
    m = json.loads((copy / "metrics.json").read_text())
    for row in m["rows"]:
        row["sim_loss"]["mean"] = 10.0 * float(row["sim_loss"]["mean"]) + 1.0
    (copy / "metrics.json").write_text(json.dumps(m))
    after = figures.basin_dim(copy, formats=("png",))[0].read_bytes()
    assert before != after


def test_drawing_never_imports_a_simulator(folders):
    """`python -m paper` in a fresh interpreter: no engine, kernel or theory module gets imported."""
    code = (
        "import sys; from paper.__main__ import main; rc = main(sys.argv[1:]); "
        "bad = [m for m in sys.modules if m.startswith(('simulations', 'dptheory', 'numba'))]; "
        "print('IMPORTED', bad); raise SystemExit(rc)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "--format", "png", str(folders["recovery"])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == 0, res.stderr
    assert "IMPORTED []" in res.stdout


def _one_line_exit_2(argv, capsys):
    code = paper_main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_missing_folder_is_one_line_exit_2(tmp_path, capsys):
    err = _one_line_exit_2([str(tmp_path / "nope")], capsys)
    assert "not found" in err


def test_folder_without_metrics_is_one_line_exit_2(tmp_path, capsys):
    err = _one_line_exit_2([str(tmp_path)], capsys)
    assert "metrics.json" in err


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"rows": []}),
        json.dumps({"experiment": "nonesuch"}),
        json.dumps({"experiment": "basin_dim", "modes": ["sgd"], "rows": [{"mode": "sgd"}]}),
    ],
)
def test_malformed_metrics_is_one_line_exit_2(content, tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(content)
    _one_line_exit_2([str(tmp_path)], capsys)
    assert not list(tmp_path.glob("*.png"))


def test_an_unknown_claim_or_figure_is_one_line_exit_2(tmp_path, capfd):
    """No folders: the study runs in a separate process; a bad --only is its one-line usage error."""
    code = paper_main(["--only", "claim9", "--results", str(tmp_path / "r"), "--build", str(tmp_path / "b")])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "claim9" in err, err
    assert not (tmp_path / "b" / "report.md").exists()


def test_corrupt_arrays_file_is_one_line_exit_2(folders, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folders["recovery"], copy)
    (copy / "metrics.npz").write_bytes(b"garbage")
    _one_line_exit_2([str(copy)], capsys)


def test_every_registered_experiment_has_a_cli_run_here_or_in_test_sim_cli():
    assert set(figures.FIGURES) >= set(RUNS)
    assert np.all([callable(f) for fns in figures.FIGURES.values() for f in fns])


@pytest.mark.parametrize("scale", [1.0, 1e-4])
def test_basin_dim_fixed_layout_keeps_every_label_inside_the_canvas(scale, folders, tmp_path):
    """The basin_dim figure has fixed margins (no tight layout, for speed): every tick and axis label must
    still fit, i.e. a blank (white) border of a few pixels all round — also with long labels (1e-05)."""
    import shutil

    from matplotlib.image import imread

    copy = tmp_path / "copy"
    shutil.copytree(folders["basin_dim"], copy)
    m = json.loads((copy / "metrics.json").read_text())
    for row in m["rows"]:
        row["sim_loss"]["mean"] = scale * float(row["sim_loss"]["mean"])
    (copy / "metrics.json").write_text(json.dumps(m))
    img = imread(figures.basin_dim(copy, formats=("png",))[0])[..., :3]
    border = np.concatenate([img[:3].ravel(), img[-3:].ravel(), img[:, :3].ravel(), img[:, -3:].ravel()])
    assert img.min() < 0.5  # something was drawn
    assert border.min() == 1.0


def test_python_m_paper_quick_regenerates_the_study_and_a_second_call_reuses_every_result(tmp_path):
    # the done-means, as a new user runs it: the whole quick study from an empty folder (its
    # default execution: one local Dask worker per core), the report with its figures, then a rerun
    results, build = tmp_path / "results", tmp_path / "build"
    cmd = [sys.executable, "-m", "paper", "--quick", "--quiet", "--results", str(results), "--build", str(build)]
    root = Path(__file__).resolve().parents[1]
    first = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    manifest = json.loads((results / "study-quick.json").read_text())
    assert len(manifest["experiments"]) >= 10
    assert all(e["status"] == "ok" and not e["reused"] for e in manifest["experiments"])
    pngs, pdfs = sorted(build.glob("*.png")), sorted(build.glob("*.pdf"))
    assert len(pngs) >= 10 and [p.stem for p in pngs] == [p.stem for p in pdfs]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)
    report = (build / "report.md").read_text()
    assert all(f"({p.name})" in report for p in pngs)  # every figure embedded in the report
    assert all(e["folder"] in report or Path(e["folder"]).name in report for e in manifest["experiments"])
    second = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    again = json.loads((results / "study-quick.json").read_text())
    assert all(e["reused"] for e in again["experiments"])
    assert [e["folder"] for e in again["experiments"]] == [e["folder"] for e in manifest["experiments"]]
