"""One prepared script for a GPU session: the larger versions of the claim experiments, time-guarded.

    python -m simulations.gpu_validate --out results/nn/gpu            # on one GPU, ≤ ~8 minutes
    python -m simulations.gpu_validate --out /tmp/gpu-small --small    # CPU smoke test, ≈ 1 minute

Stages run in priority order, each a sweep of ``simulations.nn.train.train`` runs analysed by the
same code as the CLI experiments (``simulations.nn.experiments``):

1. ``width``    — MLP widths 16…2048 (d from ~1.6·10³ to ~4.3·10⁶) on mnist1d, fixed ε and fixed σ;
2. ``prune``    — sparsity sweep (0, 90 %, 99 %) of a width-1024 MLP, all three mask sources;
3. ``ablate``   — the four modes + noise burst with the GroupNorm CNN on mnist1d;
4. ``wrn``      — SGD vs DP-SGD with GroupNorm WRN-16-1 and WRN-16-4 (d ≈ 2.7·10⁶) on the 8×8 digits;
5. ``switch``   — switch-epoch sweep, both directions, width-512 MLP;
6. ``validate`` — theory (``dptheory.clipped_dynamics``) vs measured excess loss.

All on mnist1d / digits (generated or embedded: the GPU machine needs no downloads), 15 epochs,
3 seeds. The stage sizes are estimates (no GPU was available when this was written): the first
GPU session should read ``manifest.json`` and adjust.

Time guard: before every training run the remaining budget (``--budget-s``, default 450 s) is
checked; when it is spent the current stage stops, its completed runs are written to
``<out>/<stage>.partial.json`` and later stages are skipped. ``<out>/manifest.json`` always records
which stages finished, which were cut and why, the device, and the wall time of each stage. A stage
that fails for another reason is recorded with its error and the script moves on: a GPU session
gets whatever could be measured. Exit status 0 if at least one stage completed, else 1 (with one
line on stderr saying so). Device: ``--device auto`` (default) uses CUDA when available, else CPU.

Command line: every option is checked before anything is written — ``--stages`` must name known
stages (comma list, exact lower-case names, no repeats), ``--budget-s`` must be a number of seconds
>= 1, ``--device cuda`` needs a CUDA device, ``--out`` must be a folder that can be created or
written into (not the current folder, not a file, not a dangling link) — and a bad one is one line
on stderr with exit status 2. Each stage's printed tables go to ``<out>/<stage>.log``; the terminal
gets one status line per stage, and the accountant's absl log and Python warnings are collected into
one line each (``simulations.common.cli.collected_diagnostics``). ``--out`` defaults to
``results/nn/gpu``.
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

STAGES = ("width", "prune", "ablate", "wrn", "switch", "validate")
PROG = "python -m simulations.gpu_validate"


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
    """(stage name, experiment module, config) in priority order; ``small`` = CPU smoke-test sizes."""
    from simulations import net_ablate as ablate
    from simulations import net_prune as prune
    from simulations import net_switch as switch
    from simulations import net_validate as validate
    from simulations import net_width as width

    common: dict[str, Any] = dict(device=device, quiet=True)
    if small:
        common.update(dataset="teacher:k=4,d=20", n_train=200, epochs=2, batch_size=10, seeds=(0, 1))
        return [
            ("width", width, width.WidthConfig(**common, widths=(4, 16), out=str(out / "width"))),
            (
                "prune",
                prune,
                prune.PruneConfig(
                    **common, width=16, sparsities=(0.0, 0.9), mask_sources=("init",), out=str(out / "prune")
                ),
            ),
            (
                "ablate",
                ablate,
                ablate.AblateConfig(
                    **common, model="cnn", width=2, depth=1, burst_epoch=1, burst_scale=1.0, out=str(out / "ablate")
                ),
            ),
            (
                "wrn",
                width,
                width.WidthConfig(
                    **{**common, "dataset": "digits", "n_train": 60, "epochs": 1},
                    model="wrn",
                    depth=10,
                    widths=(1, 2),
                    out=str(out / "wrn"),
                ),
            ),
            ("switch", switch, switch.SwitchConfig(**common, width=8, switch_epochs=(1,), out=str(out / "switch"))),
            (
                "validate",
                validate,
                validate.ValidateConfig(
                    **common,
                    widths=(2, 4),
                    sparsities=(0.5,),
                    hessian_k=2,
                    measure_samples=50,
                    out=str(out / "validate"),
                ),
            ),
        ]
    common.update(dataset="mnist1d", seeds=(0, 1, 2), epochs=15)
    return [
        ("width", width, width.WidthConfig(**common, widths=(16, 64, 256, 1024, 2048), out=str(out / "width"))),
        ("prune", prune, prune.PruneConfig(**common, width=1024, sparsities=(0.0, 0.9, 0.99), out=str(out / "prune"))),
        (
            "ablate",
            ablate,
            ablate.AblateConfig(
                **common, model="cnn", width=32, depth=3, burst_epoch=7, burst_scale=0.05, out=str(out / "ablate")
            ),
        ),
        (
            "wrn",
            width,
            width.WidthConfig(
                **{**common, "dataset": "digits", "seeds": (0, 1)},
                model="wrn",
                depth=16,
                widths=(1, 4),
                out=str(out / "wrn"),
            ),
        ),
        ("switch", switch, switch.SwitchConfig(**common, width=512, switch_epochs=(4, 8, 12), out=str(out / "switch"))),
        (
            "validate",
            validate,
            validate.ValidateConfig(
                **{**common, "seeds": (0, 1)},
                widths=(16, 64, 256, 1024),
                sparsities=(0.9, 0.98),
                hessian_k=10,
                measure_samples=1000,
                out=str(out / "validate"),
            ),
        ),
    ]


def run_stage(module: Any, config: Any, *, deadline: float) -> tuple[str, dict]:
    """Run one experiment's ``run(config)`` under the deadline: ('done', metrics) or ('cut', info).

    A cut stage leaves no result folder (the experiments write theirs atomically); its completed
    runs are written to ``<config.out>.partial.json`` instead.
    """
    done: list[dict] = []
    try:
        with time_guard(deadline, done):
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
    out = check_output_dir(args.out, replace=False)
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
    for name, module, config in stage_configs(small=args.small, device=device, out=out):
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
