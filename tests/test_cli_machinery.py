"""The CLI generator: defaults, 1e6 integers, one-line errors with exit status 2, atomic results."""

import json
from dataclasses import dataclass, field

import pytest

from simulations.common.cli import build_parser, run_main
from simulations.common.results import read_json, result_folder, to_jsonable, write_results


@dataclass(frozen=True)
class _Cfg:
    d: int = field(default=100, metadata={"help": "dimension"})
    clip_norm: float = field(default=1.0, metadata={"help": "C"})
    dims: tuple[int, ...] = field(default=(1, 2), metadata={"help": "grid"})
    out: str = field(default="out", metadata={"help": "folder"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})

    def __post_init__(self):
        if self.d <= 0:
            raise ValueError(f"d must be > 0, got {self.d}")
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")


def test_integers_accept_scientific_notation_and_lists():
    ns = build_parser(_Cfg).parse_args(["--d", "1e6", "--dims", "1e2,1e3", "--quiet"])
    assert ns.d == 1_000_000 and ns.dims == (100, 1000) and ns.quiet is True


@pytest.mark.parametrize(
    "argv",
    [["--d", "-5"], ["--d", "2.5"], ["--clip-norm", "0"], ["--clip-norm", "nan"], ["--bogus", "1"], ["--d"]],
)
def test_bad_input_is_one_line_and_status_2(argv, capsys):
    ran = []
    code = run_main(_Cfg, ran.append, argv, prog="prog")
    err = capsys.readouterr().err
    assert code == 2
    assert ran == []
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_error_inside_run_is_one_line(tmp_path, capsys):
    def run(cfg):
        with result_folder(tmp_path / "r") as folder:
            (folder / "partial.json").write_text("{}")
            raise ValueError("simulated failure")

    assert run_main(_Cfg, run, [], prog="prog") == 2
    assert capsys.readouterr().err.strip() == "prog: error: simulated failure"
    assert not (tmp_path / "r").exists()
    assert list(tmp_path.iterdir()) == []  # no half-written folder left behind


def test_unwritable_output_path_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def run(cfg):
        with result_folder(blocker / "sub"):
            pass

    assert run_main(_Cfg, run, [], prog="prog") == 2
    assert "not writable" in capsys.readouterr().err


def test_results_round_trip_and_replace(tmp_path):
    target = tmp_path / "run"
    for value in (1.0, 2.0):
        with result_folder(target) as folder:
            write_results(folder, config=_Cfg(), metrics={"x": value, "inf": float("inf")})
    metrics = read_json(target / "metrics.json")
    assert metrics == {"x": 2.0, "inf": "inf"}
    assert read_json(target / "config.json")["dims"] == [1, 2]
    env = json.loads((target / "env.json").read_text())
    assert "python" in env and "numpy" in env
    with pytest.raises(FileNotFoundError, match="missing"):
        read_json(tmp_path / "missing.json")
    assert to_jsonable({"a": (1, float("nan"))}) == {"a": [1, "nan"]}
