"""Property-based fuzz of every command line: bad or edge-case input is one line and exit 2, never a crash.

Commands come from the registry ``simulations.commands.commands()`` (the network dispatcher's
``COMMANDS``, the synthetic CLIs, ``gpu_validate``, ``paper``, ``paper.nn_figures``, ``proofs``), so a
new or rewritten command is fuzzed without editing this file. For a command with a config dataclass
the flags and their value types are read from its fields (int, float, bool, str, ``X | None``,
tuples, ``choices``); hypothesis draws one to three of them and gives each either a well-typed value
(kept tiny: small integers, moderate floats) or an adversarial one (huge, tiny, negative, NaN, inf,
empty, odd strings, bad paths and planted files), on top of a tiny valid base configuration. Valid
but expensive draws are refused by the resource guard: the cases run with ``DPBASIN_MAX_MEMORY=1G``
and ``DPBASIN_MAX_WORK=3e9`` (a few seconds).

The contract checked for every case:

* exit 0 — a result folder, where the command writes one, is complete (``metrics.json`` readable,
  its losses, accuracies and means finite), with no temporary sibling left;
* exit 2 — exactly one line on stderr (as a terminal shows it: a progress bar erased with ``\\r``
  does not count), no traceback, and nothing written: the working folder is exactly as before;
* never — a traceback, an "internal error", another exit status, a signal, a ``MemoryError``, a
  time-out, or the code of a pickle payload planted in a data folder, a result folder or a
  checkpoint running (it would create the file ``PWNED``).

Only ``gpu_validate`` may exit 1, and only with its one line "no stage completed within the ... budget",
and ``paper.claims_doc --check`` / ``paper.readme check`` (the document differs from its records;
nothing written).

Each case runs in a child forked from ``tests/fuzz_server.py`` (its own working folder, its own
stderr, an address-space limit, a kill after the time limit) — in-process speed without sharing a
process with the test. A few cases also run as real ``python -m`` subprocesses, to catch what only
the interpreter prints. Examples per command: ``DPBASIN_FUZZ_EXAMPLES`` (default 6; a quarter of it,
at least 1, for the network sweeps, whose valid cases train tens of tiny networks each);
``DPBASIN_FUZZ_SEED`` makes hypothesis draw a different (seeded) sample than CI's fixed one;
``DPBASIN_FUZZ_REPORT=path.json`` writes every case and its outcome. Each network sweep also has a
valid tiny run and nonsense values of its own flags among the issue cases (:data:`ISSUE_CASES`);
every command has a ``--help`` case and the registry is checked to hold every ``__main__`` module.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from simulations.commands import commands, config_class

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
COMMANDS = {c.prog: c for c in commands()}
NN = "python -m simulations.nn"
# the network sweeps: each valid case trains tens of tiny networks (a few seconds): fewer random draws
SWEEPS = {f"{NN} {name}" for name in ("switch", "ablate", "width", "prune", "epsilon", "basin")}
EXAMPLES = int(os.environ.get("DPBASIN_FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("DPBASIN_FUZZ_SEED")
REPORT = os.environ.get("DPBASIN_FUZZ_REPORT")
CASE_TIMEOUT = 90  # seconds; a case past it is a hang (the guards keep accepted runs to a few seconds)
ENV = {"DPBASIN_MAX_MEMORY": "1G", "DPBASIN_MAX_WORK": "3e9", "DPBASIN_DATA": "no-data-here"}
MARKER = "PWNED"

# ------------------------------------------------------------------------------------------------
# tiny valid bases (only the flags a command has are used: a rewritten command keeps working)

SYNTHETIC_TINY = {"replicas": "2", "steps": "200", "batch_size": "4", "quiet": True, "out": "out", "threads": "1"}
NET_TINY = {
    "dataset": "teacher:k=2,d=8",
    "n_train": "60",
    "n_test": "30",
    "epochs": "2",
    "batch_size": "6",
    "width": "4",
    "depth": "1",
    "seeds": "0,1",
    "quiet": True,
    "out": "out",
    "accountants": "rdp",
    # the sweeps' tuning: a two-point lr grid on a small validation split, one tuning seed
    "n_val": "12",
    "tune_seeds": "1000",
    "lr_grid": "0.05,0.2",
    "grid_extend": "0",
}
PUBLIC_TINY = {"n_public": "12", "public_epochs": "1", "public_batch_size": "6"}
TINY = {
    "python -m simulations.basin_dim": {
        **SYNTHETIC_TINY,
        "d": "300",
        "rank": "3",
        "points": "2",
        "window": "5",
        "burn_in": "1",
        "theory_points": "3",
    },
    "python -m simulations.recovery": {
        **SYNTHETIC_TINY,
        "d": "300",
        "rank": "3",
        "points": "2",
        "window": "5",
        "burn_in": "1",
    },
    "python -m simulations.switch": {**SYNTHETIC_TINY, "d": "100", "rank": "2", "steps": "20", "points": "3"},
    "python -m simulations.prune": {
        **SYNTHETIC_TINY,
        "d": "40",
        "rank": "3",
        "points": "2",
        "steps": "30",
        "support": "3",
        "dataset_size": "1000",
    },
    f"{NN} train": {**NET_TINY},
    f"{NN} switch": {**NET_TINY, "switch_epochs": "1"},
    f"{NN} ablate": {**NET_TINY, "burst_epoch": "1", "burst_scale": "0.5"},
    f"{NN} width": {**NET_TINY, "widths": "2,4"},
    f"{NN} prune": {**NET_TINY, **PUBLIC_TINY, "sparsities": "0.5", "mask_sources": "random,public,oracle"},
    f"{NN} epsilon": {**NET_TINY, **PUBLIC_TINY, "epsilons": "2,8", "sparsity": "0.5"},
    f"{NN} basin": {
        "dataset": "teacher:k=2,d=10",
        "n_train": "60",
        "eval_every": "5",
        "widths": "4",
        "center_width": "4",
        "sigmas": "1",
        "clip_factors": "0.3",
        "center_clip": "0.3",
        "seeds": "0,1",
        "pretrain_epochs": "2",
        "polish_iter": "5",
        "top_k": "2",
        "probes": "2",
        "lanczos_steps": "5",
        "flat_steps": "0",
        "bulk_sketch": "4",
        "batch_size": "10",
        "min_steps": "30",
        "max_steps": "30",
        "recovery_steps": "2",
        "checks": "none",
        "quiet": True,
        "out": "out",
    },
}

# ------------------------------------------------------------------------------------------------
# values

NUMBERS_BAD = [
    "0",
    "-1",
    "-0.5",
    "1e12",
    "1e300",
    "-1e300",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "",
    "x",
    "1e",
    "0x10",
    "1,2",
]
TEXT_BAD = ["", " ", "None", "none", "x" * 300, "ünïcødé", "a,b,,c", "-", "a b", "1e300", "BOGUS"]
PATHS = [
    ".",
    "",
    "..",
    "/",
    "afile",
    "afile/sub",
    "dangling",
    "ro/out",
    "x" * 300,
    "new/deep/out",
    "data_payload",
    "out",
    "notresult",
]
DATA_ROOTS = ["data_payload", "data_nan", "data_none", "data_gz", "data_empty", "afile", "dangling", "nowhere", ""]
MASK_RUNS = ["mask_garbage", "mask_payload", "mask_list", "afile", "nowhere", "out"]
DATASETS = ["teacher:k=2,d=8", "teacher:k=9,d=3", "teacher:q=1", "digits", "cifar10", "mnist", "MNIST1D", "bogus", ""]
SMALL_INTS = st.integers(-1, 6).map(str) | st.sampled_from(["1e1", "2.0", "3", "1.5"])
FLOATS = st.sampled_from(["0.5", "1", "2", "0.1", "0.01", "10", "1e-3", "0.9"]) | st.floats(1e-3, 10).map(
    lambda x: f"{x:.3g}"
)
ADVERSARIAL = st.sampled_from(NUMBERS_BAD + TEXT_BAD)


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _scalar_values(name: str, tp, choices) -> st.SearchStrategy[str]:
    if choices:
        good = [str(getattr(c, "value", c)) for c in choices]
        return st.sampled_from(good) | st.sampled_from(["bogus", "", good[0].upper() + "X"])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from([m.value for m in tp] + ["bogus"])
    if name in ("out",):
        return st.sampled_from(PATHS)
    if name == "data_root":
        return st.sampled_from(DATA_ROOTS)
    if name == "mask_run":
        return st.sampled_from(MASK_RUNS)
    if name == "dataset":
        return st.sampled_from(DATASETS)
    if tp is int:
        return SMALL_INTS | ADVERSARIAL
    if tp is float:
        return FLOATS | ADVERSARIAL
    return st.sampled_from(TEXT_BAD + ["x", "rdp", "init"])


def field_values(f: dataclasses.Field, hints: dict) -> st.SearchStrategy[list[str]]:
    """argv fragments for one config field: ``--flag VALUE`` (or ``--flag`` / ``--no-flag`` for bools)."""
    flag = "--" + f.name.replace("_", "-")
    tp, optional = _base_type(hints[f.name])
    if tp is bool:
        return st.sampled_from([[flag], ["--no-" + flag[2:]], [flag + "=x"]])
    choices = f.metadata.get("choices")
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        element = _scalar_values(f.name, inner, choices)
        lists = st.lists(element, min_size=1, max_size=3).map(",".join)
        value = lists | st.sampled_from(["", ",", "1,,2", "0,0"])
    else:
        value = _scalar_values(f.name, tp, choices)
    if optional:
        value = value | st.just("none")
    return value.map(lambda v: [flag, v])


def base_argv(prog: str, config_cls) -> list[str]:
    names = {f.name for f in dataclasses.fields(config_cls)}
    argv: list[str] = []
    for name, value in TINY.get(prog, {}).items():
        if name not in names:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, value]
    return argv


EXTRA = st.sampled_from(
    [
        ["--bogus", "1"],
        ["--max-memory", "1"],
        ["--max-memory", "abc"],
        ["--max-memory", "-1"],
        ["--max-memory", "1e400"],
        ["--max-work", "0"],
        ["--max-work", "nan"],
        ["--max-work", "1e3"],
        ["--help"],
        ["-h"],
    ]
)


@st.composite
def config_argv(draw, prog: str, config_cls) -> list[str]:
    """A tiny valid base plus one to three drawn flags (later flags win in argparse)."""
    fields = list(dataclasses.fields(config_cls))
    hints = typing.get_type_hints(config_cls)
    chosen = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique_by=lambda f: f.name))
    argv = base_argv(prog, config_cls)
    for f in chosen:
        argv += draw(field_values(f, hints))
    if draw(st.integers(0, 9)) == 0:
        argv += draw(EXTRA)
    if draw(st.integers(0, 19)) == 0 and argv:
        argv = argv[:-1] if not argv[-1].startswith("-") else argv  # a flag left without its value
    return argv


PAPER_FOLDERS = [
    "res_valid",
    "res_badjson",
    "res_list",
    "res_null",
    "res_nonutf8",
    "res_empty",
    "res_npz",
    "afile",
    "nowhere",
    "",
]
VERDICT_FILES = ["verdicts.json", "badverdicts.json", "res_badjson/metrics.json", "afile", "nowhere.json"]
CLAIM_FOLDERS = ["claim_valid", "claim_badverdict", "nn_bad", "res_badjson", "res_list", "afile", "nowhere"]
NN_FOLDERS = ["nn_valid", "nn_bad", "nn_list", "res_empty", "res_nonutf8", "afile", "nowhere", "res_valid"]
HAND_WRITTEN = {
    NN: st.sampled_from([[], ["-h"], ["--help"], ["bogus"], ["TRAIN"], [""], ["train", "--bogus"], ["--version"]]),
    "python -m simulations.gpu_validate": st.tuples(
        st.sampled_from(
            [[], ["--out", "out"], ["--out", "afile"], ["--out", ""], ["--out", "."], ["--out", "dangling"]]
        ),
        st.sampled_from(
            [["--stages", "switch"], ["--stages", "WIDTH"], ["--stages", ""], ["--stages", "switch,switch"]]
        ),
        st.sampled_from([[], ["--budget-s", "0"], ["--budget-s", "nan"], ["--budget-s", "-5"], ["--budget-s", "600"]]),
        st.sampled_from([[], ["--device", "cuda"], ["--device", "tpu"], ["--device", "cpu"]]),
    ).map(lambda parts: ["--small", *(x for p in parts for x in p)]),
    # at least one folder: without one, python -m paper regenerates the whole study (minutes)
    "python -m paper": st.tuples(
        st.lists(st.sampled_from(PAPER_FOLDERS), min_size=1, max_size=2),
        st.sampled_from([[], ["--format", "png"], ["--format", "svg"], ["--format"], ["--workers", "x"]]),
    ).map(lambda t: [*t[0], *t[1]]),
    "python -m paper.nn_figures": st.lists(st.sampled_from(NN_FOLDERS), min_size=0, max_size=2)
    | st.sampled_from([["-h"], ["--help"], ["--bogus"]]),
    # every draw holds a refusal or --list: a valid study would run every experiment (minutes)
    "python -m simulations.study": st.sampled_from(
        [
            ["--list"],
            ["--quick", "--list"],
            ["--only", "bogus"],
            ["--only", "1,bogus", "--quick"],
            ["--workers", "-1", "--only", "1"],
            ["--workers", "x"],
            ["--threads", "-2", "--only", "1"],
            ["--scheduler", "nowhere", "--only", "1"],
            ["--results", "afile", "--only", "1", "--quick"],
            ["--results", "", "--only", "1"],
            ["--results", "dangling", "--only", "1"],
            ["--results", ".", "--only", "1"],
            ["--bogus"],
        ]
    ),
    "python -m paper.claims_doc": st.tuples(
        st.lists(st.sampled_from(CLAIM_FOLDERS), min_size=0, max_size=2),
        st.sampled_from([["--json", p] for p in ("v.json", "afile", "", ".", "nowhere/v.json", "res_valid")] + [[]]),
        st.sampled_from(
            [
                ["--markdown", p]
                for p in ("doc.md", "docstat.md", "docbadstat.md", "nomarkers.md", "nowhere.md", "res_valid", "")
            ]
            + [[]]
        ),
        st.sampled_from([[], ["--check"], ["--bogus"]]),
    ).map(lambda t: [x for part in t for x in part]),
    "python -m paper.basin_doc": st.tuples(
        st.lists(st.sampled_from(CLAIM_FOLDERS + ["nowhere", "", "."]), min_size=0, max_size=1),
        st.sampled_from([["--json", p] for p in ("v.json", "afile", "", ".", "nowhere/v.json")] + [[]]),
        st.sampled_from([["--markdown", p] for p in ("doc.md", "nomarkers.md", "nowhere.md", "")] + [[]]),
        st.sampled_from([[], ["--check"], ["--bogus"], ["--cpu-seconds", "abc"]]),
    ).map(lambda t: [x for part in t for x in part]),
    "python -m paper.readme": st.one_of(
        st.tuples(
            st.just(["collect"]),
            st.lists(st.sampled_from(CLAIM_FOLDERS), min_size=1, max_size=2),
            st.sampled_from([["--json", p] for p in ("v.json", "afile", "", ".", "nowhere/v.json")] + [[]]),
        ),
        st.tuples(
            st.sampled_from([["render"], ["check"], ["RENDER"]]),
            st.lists(st.sampled_from(VERDICT_FILES), min_size=1, max_size=2),
            st.sampled_from([["--readme", p] for p in ("readme.md", "nomarkers.md", "nowhere.md", "res_valid", "")]),
        ),
    ).map(lambda t: [x for part in t for x in part]),
    "python -m proofs": st.sampled_from(
        [["--help"], ["-h"], ["--list"], ["bogus"], ["clip_symmetric_descent"], ["--traceback", "nope"], ["--bogus"]]
    ),
}

# ------------------------------------------------------------------------------------------------
# planted files (created in every case's working folder)


class Payload:
    """Unpickling this runs code: it creates the marker file (what a safe reader must never do)."""

    def __reduce__(self):
        return (exec, (f"open({MARKER!r}, 'w').write('code ran')",))


def _write_idx(path: Path, array, *, compress: bool = False) -> None:
    import gzip
    import struct

    array = np.asarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(blob)
    else:
        path.write_bytes(blob)


def _cifar(folder: Path, make) -> None:
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).write_bytes(pickle.dumps(make(name)))


def build_fixtures(root: Path, result_folder: Path) -> None:
    """The planted files and folders every case may name (module docstring)."""
    import torch

    rng = np.random.default_rng(0)
    (root / "afile").write_text("not a folder\n")
    (root / "dangling").symlink_to(root / "no-such-target")
    (root / "ro").mkdir()
    (root / "notresult").mkdir()
    (root / "notresult" / "precious.txt").write_text("must survive\n")
    good = {b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
    _cifar(root / "data_payload", lambda name: {b"data": Payload(), b"labels": [0]} if name == "data_batch_2" else good)
    _cifar(root / "data_nan", lambda name: {b"data": np.full((3, 3072), np.nan), b"labels": [0, 1, 2]})
    _cifar(root / "data_none", lambda name: {b"data": good[b"data"], b"labels": [None, 1, 2]})
    (root / "data_gz").mkdir()
    (root / "data_gz" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    (root / "data_empty").mkdir()
    for stem, shape in (("train-images-idx3-ubyte", (4, 28, 28)), ("train-labels-idx1-ubyte", (4,))):
        _write_idx(root / "data_empty" / stem, np.zeros(shape))
    _write_idx(root / "data_empty" / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28)))
    _write_idx(root / "data_empty" / "t10k-labels-idx1-ubyte", np.zeros((0,)))
    garbage = root / "mask_garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    (garbage / "metrics.json").write_bytes(b"\xff\xfe\x00")
    (garbage / "model.pt").write_bytes(os.urandom(64))
    payload = root / "mask_payload"
    payload.mkdir()
    (payload / "config.json").write_text(
        json.dumps({"dataset": "teacher:k=2,d=8", "model": "mlp", "width": 4, "depth": 1})
    )
    (payload / "metrics.json").write_text(json.dumps({"privacy": {"label": "private", "mechanisms": []}}))
    torch.save(Payload(), payload / "model.pt")
    (root / "mask_list").mkdir()
    (root / "mask_list" / "config.json").write_text("[]")
    (root / "ckpt").mkdir()
    torch.save({"format": Payload()}, root / "ckpt" / "run.checkpoint.pt")  # a planted checkpoint for --resume
    # result folders for paper / paper.nn_figures
    shutil.copytree(result_folder, root / "res_valid")
    for name, content in (
        ("res_badjson", b"{not json"),
        ("res_list", b"[1, 2]"),
        ("res_nonutf8", b"\xff\xfe{}"),
        (
            "res_null",
            json.dumps(
                {
                    "experiment": "basin_dim",
                    "modes": ["sgd"],
                    "rows": [{"mode": "sgd", "dim": None, "sim_loss": {"mean": None, "se": "x"}}],
                }
            ).encode(),
        ),
    ):
        (root / name).mkdir()
        (root / name / "metrics.json").write_bytes(content)
    (root / "res_empty").mkdir()
    shutil.copytree(result_folder, root / "res_npz")
    (root / "res_npz" / "metrics.npz").write_bytes(b"PK\x03\x04 corrupt")
    stat = {"mean": 0.5, "se": 0.01}
    nn_valid = root / "nn_valid"
    nn_valid.mkdir()
    (nn_valid / "config.json").write_text(json.dumps({"epochs": 4}))
    (nn_valid / "metrics.json").write_text(
        json.dumps(
            {
                "claim": "1: late phase",
                "per_switch": [{"switch_epoch": 2, "acc_sgd_then_dpsgd": stat, "acc_dpsgd_then_sgd": stat}],
                "acc_sgd": stat,
                "acc_dpsgd": stat,
            }
        )
    )
    (root / "nn_bad").mkdir()
    (root / "nn_bad" / "config.json").write_text("{}")
    (root / "nn_bad" / "metrics.json").write_text(json.dumps({"claim": "1", "per_switch": [{"switch_epoch": None}]}))
    (root / "nn_list").mkdir()
    (root / "nn_list" / "config.json").write_text("{}")
    (root / "nn_list" / "metrics.json").write_text(json.dumps({"claim": "3", "per_width": "not a list"}))
    # claim result folders and markdown files for paper.claims_doc
    record = {
        "claim": "2",
        "statement": "a > b",
        "task": "tiny",
        "key": "k",
        "test": "paired t (two-sided), df = 1",
        "estimate": 0.1,
        "ci95": [0.05, 0.15],
        "p_value": 0.01,
        "adjustment": "holm",
        "alpha": 0.05,
        "n_seeds": 2,
        "held": True,
        "direction": "greater",
        "unit": "points",
        "scale": 100.0,
    }
    (root / "claim_valid").mkdir()
    (root / "claim_valid" / "metrics.json").write_text(json.dumps({"claim": "2", "verdicts": [record]}))
    (root / "claim_badverdict").mkdir()
    (root / "claim_badverdict" / "metrics.json").write_text(json.dumps({"claim": "2", "verdicts": [{"claim": 2}, 5]}))
    block = "<!-- verdicts:begin -->\n<!-- verdicts:end -->\n"
    (root / "doc.md").write_text("# claims\n" + block)
    stat_marker = "<!--s:claim_valid:verdicts.0.{}:100:points-->x<!--/s-->\n"
    (root / "docstat.md").write_text("# claims\n" + block + stat_marker.format("estimate"))
    (root / "docbadstat.md").write_text("# claims\n" + block + stat_marker.format("ci95.7"))
    (root / "nomarkers.md").write_text("# no markers here\n")
    (root / "readme.md").write_text("# readme\n<!-- findings:begin -->\n<!-- findings:end -->\n")
    entry = {"command": "python -m simulations.nn ablate", "folder": "claim_valid", "verdict": record}
    (root / "verdicts.json").write_text(json.dumps({"verdicts": [entry]}))
    (root / "badverdicts.json").write_text(json.dumps({"verdicts": [5, {"verdict": "x"}]}))
    os.chmod(root / "ro", 0o555)


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns) if not p.is_dir() else ()
    return out


# ------------------------------------------------------------------------------------------------
# running and judging one case


class Server:
    """The fork server of ``tests/fuzz_server.py``: one child per case."""

    def __init__(self, modules: list[str]):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **ENV)
        env.pop("DPBASIN_TRACEBACK", None)
        self.proc = subprocess.Popen(
            [PYTHON, str(ROOT / "tests" / "fuzz_server.py"), *modules],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        line = self.proc.stdout.readline()
        assert line and json.loads(line).get("ready"), "the fuzz server did not start"

    def run(self, module: str, argv: list[str], cwd: Path, scratch: Path) -> dict:
        request = {"module": module, "argv": argv, "cwd": str(cwd), "scratch": str(scratch), "timeout": CASE_TIMEOUT}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def terminal_lines(text: str) -> list[str]:
    """Non-empty stderr lines as a terminal shows them (a bar erased by ``\\r`` + ``ESC[K`` is gone)."""
    lines = []
    for line in text.split("\n"):
        shown = line.split("\r")[-1].replace("\x1b[K", "")
        if shown.strip():
            lines.append(shown)
    return lines


HEADLINE = re.compile(r"loss|acc|mean|stationary")


def non_finite_headlines(obj, path: str = "") -> list[str]:
    """Keys of headline metrics (losses, accuracies, means) whose value is NaN (or the string 'nan')."""
    bad = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad += non_finite_headlines(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:200]):
            bad += non_finite_headlines(v, f"{path}[{i}]")
    elif (obj == "nan" or (isinstance(obj, float) and math.isnan(obj))) and HEADLINE.search(path.rsplit(".", 1)[-1]):
        bad.append(path)
    return bad


def judge(prog: str, argv: list[str], result: dict, cwd: Path, before: dict) -> str:
    """The outcome of one case: 'ran', 'refused', 'help' (all fine) or the name of a failure kind."""
    err = result["stderr"]
    if (cwd / MARKER).exists():
        return "code-execution"
    if result["timed_out"]:
        return "hang"
    if result["signal"]:
        return f"signal-{result['signal']}"
    if result["memory_error"] or "out of memory" in err:
        return "out-of-memory"
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if "internal error" in err:
        return "internal-error"
    after = snapshot(cwd)
    if set(before) - set(after):
        return "destroyed-files"  # a planted file or folder was deleted (e.g. replaced as a result folder)
    new = sorted(set(after) - set(before))
    leftovers = [p for p in new if re.search(r"\.tmp-|\.old-", Path(p).name)]
    rc = result["rc"]
    if rc == 2:
        if len(terminal_lines(err)) != 1:
            return "multi-line-refusal"
        if new or any(after.get(k) != v for k, v in before.items() if k in after):
            return "half-written"
        return "refused"
    if rc == 0:
        if leftovers:
            return "half-written"
        if "-h" in argv or "--help" in argv or "--list" in argv:
            return "help" if result["stdout"].strip() else "empty-help"
        metrics = [cwd / p for p in new if Path(p).name == "metrics.json"]
        for path in metrics:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                return "unreadable-result"
            if non_finite_headlines(data):
                return "nan-result"
        return "ran"
    if rc == 1 and prog.endswith("gpu_validate") and terminal_lines(err)[-1:] and "no stage completed" in err:
        return "ran"  # its documented status when the time budget allows no stage to finish
    checking = (prog.endswith("claims_doc") and "--check" in argv) or (
        prog.endswith("readme") and argv[:1] == ["check"]
    )
    if rc == 1 and checking and "differs" in result["stdout"]:
        return "half-written" if new or any(after.get(k) != v for k, v in before.items() if k in after) else "ran"
    return f"exit-{rc}"


FINE = {"ran", "refused", "help"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The fork server, a folder of planted files (copied into every case) and the report."""
    base = tmp_path_factory.mktemp("fuzz")
    result = base / "basin_dim_result"
    from simulations import basin_dim

    argv = [*base_argv("python -m simulations.basin_dim", basin_dim.BasinDimConfig), "--out", str(result)]
    cwd = os.getcwd()
    try:
        os.chdir(base)
        assert basin_dim.main(argv) == 0
    finally:
        os.chdir(cwd)
    fixtures = base / "fixtures"
    fixtures.mkdir()
    build_fixtures(fixtures, result)
    modules = sorted(
        {c.module for c in COMMANDS.values()} | {c.config_module for c in COMMANDS.values() if c.config_module}
    )
    server = Server(modules)
    state = {"server": server, "fixtures": fixtures, "base": base, "cases": []}
    yield state
    server.close()
    os.chmod(fixtures / "ro", 0o755)
    if REPORT:
        Path(REPORT).write_text(json.dumps(state["cases"], indent=1))


def run_case(world, prog: str, argv: list[str]) -> str:
    command = COMMANDS[prog]
    cwd = Path(tempfile.mkdtemp(dir=world["base"], prefix="case-"))
    scratch = Path(tempfile.mkdtemp(dir=world["base"], prefix="io-"))
    shutil.rmtree(cwd)
    shutil.copytree(world["fixtures"], cwd, symlinks=True)
    before = snapshot(cwd)
    result = world["server"].run(command.module, [*command.prefix, *argv], cwd, scratch)
    outcome = judge(prog, argv, result, cwd, before)
    world["cases"].append(
        {
            "prog": prog,
            "argv": argv,
            "outcome": outcome,
            "rc": result["rc"],
            "seconds": round(result["seconds"], 2),
            "stderr": result["stderr"][-600:],
        }
    )
    os.chmod(cwd / "ro", 0o755)
    shutil.rmtree(cwd, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return outcome


def strategy(prog: str) -> st.SearchStrategy[list[str]]:
    command = COMMANDS[prog]
    if command.config_module is not None:
        return config_argv(prog, config_class(command.config_module))
    return HAND_WRITTEN[prog]


def examples(prog: str) -> int:
    return max(1, EXAMPLES // 4) if prog in SWEEPS else EXAMPLES


def settle(prog: str, outcomes: list[tuple[list[str], str]]) -> None:
    bad = [(argv, kind) for argv, kind in outcomes if kind not in FINE]
    if not bad:
        return
    kinds = sorted({k for _, k in bad})
    lines = "\n".join(f"  {kind}: {prog} {' '.join(map(repr, argv))}" for argv, kind in bad[:20])
    pytest.fail(f"{len(bad)} of {len(outcomes)} cases failed ({', '.join(kinds)}):\n{lines}")


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_fuzz_command_line(prog, world):
    """Hypothesis draws argv for ``prog``; every case must be fine (module docstring). No shrinking:
    every failing case is listed (a shrunk one would cost many more runs)."""
    outcomes: list[tuple[list[str], str]] = []

    @settings(
        max_examples=examples(prog),
        deadline=None,
        derandomize=SEED is None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(argv=strategy(prog))
    def case(argv):
        outcomes.append((argv, run_case(world, prog, argv)))

    if SEED is not None:
        from hypothesis import seed

        case = seed(int(SEED))(case)
    case()
    settle(prog, outcomes)


# cases of the issue that a random draw may miss, each with its one right outcome
T = f"{NN} train"
TB = base_argv(T, config_class("simulations.nn.train"))
SB = {
    n: base_argv(f"python -m simulations.{n}", config_class(f"simulations.{n}"))
    for n in ("basin_dim", "recovery", "prune", "switch")
}
NB = {
    n: base_argv(f"{NN} {n}", config_class(COMMANDS[f"{NN} {n}"].config_module))
    for n in sorted(s.split()[-1] for s in SWEEPS)
}
SWEEP_CASES = [
    # every sweep at its tiny valid base: it runs (tuning included) and writes finite metrics
    *((f"{NN} {n}", NB[n], "ran") for n in sorted(NB)),
    # nonsense in a sweep's own flags, or values its runs cannot take: refused before anything is written
    (f"{NN} width", [*NB["width"], "--widths", "2,1e12"], "refused"),
    (f"{NN} ablate", [*NB["ablate"], "--lr-grid", "0.1,1e300"], "refused"),
    (f"{NN} ablate", [*NB["ablate"], "--burst-scale", "1e300"], "refused"),
    (f"{NN} ablate", [*NB["ablate"], "--lr-grid", "3e5,1e6"], "refused"),  # normalised arm: lr = 1e6 / 1e-4
    (f"{NN} width", [*NB["width"], "--lr-grid", "1e4,1e5"], "refused"),  # every grid point diverges
    (f"{NN} prune", [*NB["prune"], "--public-epochs", "1e12"], "refused"),
    (f"{NN} prune", [*NB["prune"], "--sparsities", "1"], "refused"),
    (f"{NN} epsilon", [*NB["epsilon"], "--epsilons", "2,1e300"], "refused"),
    (f"{NN} epsilon", [*NB["epsilon"], "--public-batch-size", "1000"], "refused"),
    (f"{NN} switch", [*NB["switch"], "--switch-epochs", "2"], "refused"),
    (f"{NN} switch", [*NB["switch"], "--curve-points", "1e12"], "refused"),
    # tuning: a grid needs a validation split, tuning seeds must differ from the evaluation seeds
    (f"{NN} width", [*NB["width"], "--n-val", "0"], "refused"),
    (f"{NN} width", [*NB["width"], "--tune-seeds", "0"], "refused"),
    (f"{NN} switch", [*NB["switch"], "--out", "notresult"], "refused"),
]
ISSUE_CASES = [
    *SWEEP_CASES,
    (T, [*TB, "--dataset", "cifar10", "--data-root", "data_payload"], "refused"),
    (T, [*TB, "--dataset", "cifar10", "--data-root", "data_nan"], "refused"),
    (T, [*TB, "--dataset", "cifar10", "--data-root", "data_none"], "refused"),
    (T, [*TB, "--dataset", "mnist", "--data-root", "data_gz"], "refused"),
    (T, [*TB, "--dataset", "mnist", "--data-root", "data_empty"], "refused"),
    (T, [*TB, "--dataset", "mnist", "--data-root", "afile"], "refused"),
    (T, [*TB, "--out", "ckpt/run", "--resume"], "refused"),
    (T, [*TB, "--resume"], "ran"),
    (T, [*TB, "--sparsity", "0.5", "--mask-source", "private", "--mask-run", "mask_payload"], "refused"),
    (T, [*TB, "--sparsity", "0.5", "--mask-source", "oracle", "--mask-run", "mask_garbage"], "refused"),
    (T, [*TB, "--lr", "1e6"], "refused"),
    (T, [*TB, "--lr", "1e300"], "refused"),
    (T, [*TB, "--noise-multiplier", "1e-300", "--accountants", "pld"], "refused"),
    (T, [*TB, "--target-epsilon", "1e300"], "refused"),
    (T, [*TB, "--threads", "1000000"], "refused"),
    (T, [*TB, "--width", "1e12"], "refused"),
    (T, [*TB, "--depth", "1e12"], "refused"),
    (T, [*TB, "--n-train", "1e12"], "refused"),
    (T, [*TB, "--switch-epoch", "2", "--switch-mode", "sgd"], "refused"),
    (T, [*TB, "--burst-step", "1000", "--burst-scale", "1"], "refused"),
    (T, [*TB, "--out", "notresult"], "refused"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--replicas", "1e12", "--quiet", "--out", "out"], "refused"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--d", "1e9", "--engine", "full"], "refused"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--power", "-1", "--quiet", "--out", "out"], "refused"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--split", "5"], "refused"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--low-curvature", "-3"], "refused"),
    ("python -m simulations.prune", [*SB["prune"], "--init-std", "1e300"], "refused"),
    ("python -m simulations.recovery", [*SB["recovery"], "--steps", "300", "--d", "1e8", "--points", "1"], "ran"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--out", "."], "refused"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--out", ""], "refused"),
    ("python -m simulations.basin_dim", [*SB["basin_dim"], "--out", "dangling"], "refused"),
    ("python -m simulations.recovery", [*SB["recovery"], "--steps", "300", "--d", "1e12", "--points", "1"], "ran"),
    ("python -m simulations.recovery", [*SB["recovery"], "--sample-std", "0", "--quiet", "--out", "out"], "refused"),
    ("python -m simulations.prune", [*SB["prune"], "--optimum-scale", "1e300", "--quiet", "--out", "out"], "refused"),
    (
        "python -m simulations.prune",
        [*SB["prune"], "--noise-multiplier", "1e-300", "--quiet", "--out", "out"],
        "refused",
    ),
    ("python -m simulations.switch", [*SB["switch"], "--init-error", "1e300", "--quiet", "--out", "out"], "refused"),
    ("python -m proofs", ["--help"], "help"),
    ("python -m proofs", ["-h"], "help"),
    ("python -m simulations.gpu_validate", ["--stages", "WIDTH", "--out", "out"], "refused"),
    ("python -m simulations.gpu_validate", ["--out", "afile"], "refused"),
    ("python -m simulations.gpu_validate", ["--device", "cuda", "--out", "out"], "refused"),
    ("python -m paper.nn_figures", ["res_empty"], "refused"),
    ("python -m paper.nn_figures", ["nn_bad"], "refused"),
    ("python -m paper", ["res_null"], "refused"),
    ("python -m paper", ["res_nonutf8"], "refused"),
    (NN, [], "refused"),
    ("python -m paper.claims_doc", ["claim_valid", "--json", "v.json", "--markdown", "docstat.md"], "ran"),
    ("python -m paper.claims_doc", ["claim_valid", "--json", "v.json", "--markdown", "docbadstat.md"], "refused"),
    ("python -m paper.claims_doc", ["claim_valid", "--json", "v.json", "--markdown", "nomarkers.md"], "refused"),
    ("python -m paper.claims_doc", ["claim_badverdict", "--json", "v.json", "--markdown", "doc.md"], "refused"),
    ("python -m paper.claims_doc", ["claim_valid", "--json", ".", "--markdown", "doc.md"], "refused"),
    ("python -m paper.claims_doc", ["--json", "v.json", "--markdown", "doc.md", "--check"], "refused"),
    ("python -m paper.claims_doc", [], "refused"),
    ("python -m paper.readme", ["render", "verdicts.json", "--readme", "readme.md"], "ran"),
    ("python -m paper.readme", ["check", "verdicts.json", "--readme", "readme.md"], "ran"),  # exit 1: differs
    ("python -m paper.readme", ["render", "badverdicts.json", "--readme", "readme.md"], "refused"),
    ("python -m paper.readme", ["render", "verdicts.json", "--readme", "nomarkers.md"], "refused"),
    ("python -m paper.readme", ["collect", "claim_valid", "--json", "v.json"], "ran"),
    ("python -m paper.readme", ["collect", "res_list", "--json", "v.json"], "refused"),
    ("python -m paper.readme", ["collect", "claim_valid", "--json", "."], "refused"),
    ("python -m paper.readme", [], "refused"),
    ("python -m simulations.study", ["--results", "afile", "--only", "1"], "refused"),
    ("python -m simulations.study", ["--results", "dangling", "--only", "1"], "refused"),
    ("python -m simulations.study", ["--list"], "help"),
]


@pytest.mark.parametrize(
    "prog,argv,expect", ISSUE_CASES, ids=[f"{p.split()[-1]}:{' '.join(a)[-60:]}" for p, a, _ in ISSUE_CASES]
)
def test_issue_cases(prog, argv, expect, world):
    """Each case of the issue has its one right outcome: nonsense is refused (not run), valid input runs."""
    outcome = run_case(world, prog, argv)
    assert outcome == expect, f"{outcome} (expected {expect}): {prog} {argv}\n{world['cases'][-1]['stderr']}"


SUBPROCESS_CASES = [
    ([PYTHON, "-m", "simulations.nn"], 2),
    ([PYTHON, "-m", "proofs", "--help"], 0),
    ([PYTHON, "-m", "paper"], 2),
    ([PYTHON, "-m", "simulations.basin_dim", "--d", "-1"], 2),
    ([PYTHON, "-m", "simulations.nn", "train", "--lr", "nan"], 2),
]


@pytest.mark.parametrize("argv,code", SUBPROCESS_CASES, ids=[" ".join(a[2:]) for a, _ in SUBPROCESS_CASES])
def test_real_interpreter(argv, code, tmp_path):
    """A sample as real ``python -m`` processes: what only the interpreter prints (warnings at exit,
    import errors, a traceback from ``__main__``) shows here."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **ENV)
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    if code == 2:
        assert len(terminal_lines(proc.stderr)) == 1, proc.stderr
    else:
        assert proc.stdout.strip()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_every_command_accepts_no_arguments(prog, tmp_path, monkeypatch, capsys):
    """Without arguments a command runs at its defaults (its config is valid and fits the default
    limits) or, where a required argument is the honest design, prints one usage line and exits 2."""
    command = COMMANDS[prog]
    monkeypatch.chdir(tmp_path)
    if command.no_arguments == "usage":
        import importlib

        code = importlib.import_module(command.module).main(list(command.prefix))
        assert code == 2 and len(terminal_lines(capsys.readouterr().err)) == 1
        return
    if command.config_module is None:
        pytest.skip(f"{prog} has no config dataclass: its no-argument run is a test of its own")
    from simulations.common.cli import parse_config

    defaults = {"out": "results/nn/train"} if prog.endswith(" train") else None
    config = parse_config(config_class(command.config_module), [], defaults=defaults)
    assert config is not None
    from simulations.net_common import NetExperiment, check_sweep
    from simulations.nn.train import TrainConfig, check_training_resources

    if isinstance(config, NetExperiment):  # its defaults fit the default limits (checked as its run() does)
        check_sweep(config, config.planned_runs())
    elif isinstance(config, TrainConfig):
        check_training_resources(config)


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_every_command_has_help(prog, world):
    """``--help`` prints the command's usage on stdout and exits 0, writing nothing."""
    outcome = run_case(world, prog, ["--help"])
    assert outcome == "help", f"{outcome}: {prog} --help\n{world['cases'][-1]['stderr']}"


NOT_COMMANDS = {
    # modules with a __main__ block that are not command lines
    "proofs.reduced_engine": "one proof's self-check, takes no arguments (python -m proofs runs every proof)",
}


def test_every_main_module_is_a_registered_command():
    """A module that can be run with ``python -m`` is in the registry (and so is fuzzed), or is listed
    in :data:`NOT_COMMANDS` with the reason."""
    registered = {c.module for c in COMMANDS.values()} | {c.config_module for c in COMMANDS.values()}
    found = set()
    for package in ("simulations", "paper", "proofs", "dptheory"):
        for path in (ROOT / package).rglob("*.py"):
            if 'if __name__ == "__main__":' in path.read_text():
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    missing = sorted(found - registered - set(NOT_COMMANDS))
    assert not missing, f"command modules missing from simulations.commands: {missing}"
    assert not set(NOT_COMMANDS) - found  # no stale exclusion
