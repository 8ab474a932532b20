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


# ------------------------------------------------------------------------------------------------
# output paths: refused up front, one line each; a failed write leaves nothing


@pytest.mark.parametrize(
    "name,match",
    [
        ("", "non-empty"),
        (" ", "non-empty"),
        (".", "current folder"),
        ("..", "current folder"),
        ("/", "current folder"),
        ("sub/..", "current folder"),
        ("afile", "not a directory"),
        ("afile/sub", "not a directory"),
        ("dangling", "dangling symbolic link"),
        ("link", "symbolic link"),
        ("x" * 300, "longer than the file system allows"),
        ("y" * 230, "room for the temporary suffixes"),
        ("precious", "not a result folder"),
    ],
)
def test_output_paths_refused_up_front(name, match, tmp_path, monkeypatch):
    from simulations.common.cli import UsageError
    from simulations.common.results import check_output_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(UsageError, match=match) as info:
        check_output_dir(name)
    assert "\n" not in str(info.value)
    assert (tmp_path / "precious" / "thesis.tex").is_file()


def test_unwritable_parent_and_full_disk(tmp_path, monkeypatch):
    import collections
    import os
    import shutil

    from simulations.common import results
    from simulations.common.cli import UsageError

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # also as root, who may write anywhere
    with pytest.raises(UsageError, match="no write permission"):
        results.check_output_dir(tmp_path / "ro" / "out")
    monkeypatch.undo()
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 0))
    with pytest.raises(UsageError, match="full"):
        results.check_output_dir(tmp_path / "out")


def test_a_failing_final_rename_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    from pathlib import Path

    target = tmp_path / "deep" / "run"
    with result_folder(target) as folder:
        write_results(folder, config=_Cfg(), metrics={"x": 1.0})
    real = Path.rename

    def refuse_into_place(self, dest):
        if Path(dest) == target and ".tmp-" in self.name:
            raise OSError(28, "No space left on device", str(dest))
        return real(self, dest)

    monkeypatch.setattr(Path, "rename", refuse_into_place)
    with pytest.raises(OSError), result_folder(target) as folder:
        write_results(folder, config=_Cfg(), metrics={"x": 2.0})
    assert read_json(target / "metrics.json") == {"x": 1.0}  # the old folder is back
    assert sorted(p.name for p in target.parent.iterdir()) == ["run"]  # no .tmp- / .old- sibling
    monkeypatch.undo()


def test_parents_created_for_a_failed_folder_are_removed(tmp_path):
    target = tmp_path / "a" / "b" / "run"
    with pytest.raises(ValueError, match="boom"), result_folder(target):
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# run_main: what reaches the terminal


def _run_with(fn, argv=(), capsys=None):
    code = run_main(_Cfg, fn, list(argv), prog="prog")
    out = capsys.readouterr()
    return code, out.out, out.err


def test_wrapped_messages_are_folded_into_one_line(capsys):
    def run(cfg):
        raise ValueError("the step has no stationary state\n  (unstable: lr * curvature\n  too large)")

    code, _, err = _run_with(run, capsys=capsys)
    assert code == 2 and err == "prog: error: the step has no stationary state (unstable: lr * curvature too large)\n"


def test_os_errors_are_one_line_exit_2(capsys):
    def run(cfg):
        raise OSError(28, "No space left on device", "out/metrics.json")

    code, _, err = _run_with(run, capsys=capsys)
    assert code == 2 and err == "prog: error: 'out/metrics.json': No space left on device\n"


def test_a_bug_is_one_internal_error_line_exit_1_and_traceback_on_request(capsys, monkeypatch):
    def run(cfg):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.delenv("DPBASIN_TRACEBACK", raising=False)
    code, _, err = _run_with(run, capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and "internal error: ZeroDivisionError" in err
    monkeypatch.setenv("DPBASIN_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        run_main(_Cfg, run, [], prog="prog")


def test_memory_errors_are_one_line(capsys):
    def run(cfg):
        raise MemoryError("Unable to allocate 7.28 TiB")

    code, _, err = _run_with(run, capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "out of memory" in err


def test_warnings_and_absl_log_are_collected_after_success_only(capsys):
    import logging
    import warnings

    def noisy(cfg, fail=False):
        for alpha in (1.1, 1.2, 1.3):
            logging.getLogger("absl").warning(
                "_compute_log_a_frac failed to converge after 1000 iterations with q=%f, alpha=%f", 0.1, alpha
            )
        warnings.warn("steps capped", RuntimeWarning, stacklevel=1)
        if fail:
            raise ValueError("bad")

    code, _, err = _run_with(noisy, capsys=capsys)
    lines = err.splitlines()
    assert code == 0 and len(lines) == 2, err
    assert "RuntimeWarning: steps capped" in lines[0] and "(×3" in lines[1] and "_compute_log_a_frac" in lines[1]
    code, _, err = _run_with(lambda cfg: noisy(cfg, fail=True), capsys=capsys)
    assert code == 2 and err == "prog: error: bad\n"


def test_help_exits_0_and_resource_flags_are_offered(capsys):
    for flag in ("-h", "--help"):
        code, out, err = _run_with(lambda cfg: None, [flag], capsys=capsys)
        assert code == 0 and "--max-memory" in out and "--max-work" in out and err == ""


def test_progress_bar_is_erased_by_an_error(capsys):
    from simulations.common.cli import Progress

    def run(cfg):
        with Progress(total=3, label="sweep", min_seconds=0.0) as bar:
            bar.update()
            raise ValueError("stopped")

    code, _, err = _run_with(run, capsys=capsys)
    shown = [line.split("\r")[-1].replace("\x1b[K", "") for line in err.split("\n") if line.strip()]
    assert code == 2 and [s for s in shown if s.strip()] == ["prog: error: stopped"]


def test_text_values_refuse_control_characters(capsys):
    @dataclass(frozen=True)
    class Text:
        name: str = field(default="a", metadata={"help": "a name"})

    assert run_main(Text, lambda cfg: None, ["--name", "a\nb"], prog="prog") == 2
    assert "control characters" in capsys.readouterr().err


def test_command_line_defaults_override_only_the_cli(capsys):
    seen = []
    assert run_main(_Cfg, seen.append, [], prog="prog", defaults={"d": 7}) == 0
    assert seen[0].d == 7 and _Cfg().d == 100
    with pytest.raises(KeyError):
        build_parser(_Cfg, defaults={"nope": 1})


# ------------------------------------------------------------------------------------------------
# resource limits


def test_sizes_parse_and_print():
    from simulations.common.resources import format_size, parse_size

    assert parse_size("512M") == 512 * 2**20 and parse_size("2GiB") == 2 * 2**30 and parse_size("1e9") == 10**9
    assert parse_size(" 3k ") == 3072 and format_size(1.5 * 2**30) == "1.5 GiB"
    for bad in ("", "abc", "-1G", "0", "nan", "inf", "1e400", "5X", True):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_limits_refuse_with_what_would_be_needed(monkeypatch, capsys):
    from simulations.common import resources

    with resources.limits(memory="1M", work=1e3):
        resources.check_memory("a", 100.0)
        with pytest.raises(resources.ResourceError, match=r"b would need 1 GiB of memory, above the limit of 1 MiB"):
            resources.check_memory("b", float(2**30))
        with pytest.raises(resources.ResourceError, match=r"would take ≈ 1e\+04 operations"):
            resources.check_work("c", 1e4)
        with pytest.raises(resources.ResourceError):
            resources.check_memory("nan", float("nan"))
    monkeypatch.setenv(resources.MEMORY_ENV, "2K")
    assert resources.current_limits().memory == 2048
    monkeypatch.setenv(resources.MEMORY_ENV, "lots")
    with pytest.raises(resources.ResourceError, match="DPBASIN_MAX_MEMORY"):
        resources.current_limits()
    monkeypatch.delenv(resources.MEMORY_ENV)

    def run(cfg):
        resources.check_memory("the arrays", 8e6)

    assert run_main(_Cfg, run, ["--max-memory", "1M"], prog="prog") == 2
    assert "the arrays would need 7.63 MiB" in capsys.readouterr().err
    assert run_main(_Cfg, run, ["--max-memory", "1G"], prog="prog") == 0
    assert run_main(_Cfg, run, ["--max-memory", "lots"], prog="prog") == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_thread_counts():
    import numba

    from simulations.common.resources import check_threads, numba_threads, torch_threads

    with pytest.raises(ValueError, match="threads must be <="):
        check_threads("threads", 10**6)
    with pytest.raises(ValueError, match=">= 0"):
        check_threads("threads", -1)
    before = numba.get_num_threads()
    with numba_threads(1) as n:
        assert n == 1 == numba.get_num_threads()
    assert numba.get_num_threads() == before
    import torch

    t = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1
    assert torch.get_num_threads() == t
