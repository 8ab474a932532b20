"""The study: every experiment behind the paper's figures and claims, at a quick and a full scale.

``python -m simulations.study`` runs each experiment of :data:`STUDY` whose result is not stored
yet — a result is reused when its folder ``<results>/<experiment>/<run key>`` is complete
(``simulations.common.store``: the key covers the whole config and the code it runs) — and writes
a manifest, ``<results>/study-<scale>.json``, naming for every experiment its claims, the
equivalent command line, the folder, the key, whether it was reused and how long it took.
``python -m paper`` launches this command as a separate process and then draws every figure and
the report from the manifest and the folders (``paper`` never imports ``simulations``).

Scales: ``quick`` (CI: the whole study in under 3 minutes on 2 cores) and ``full`` (the numbers of
the report, 13 minutes on 2 cores); both are listed by ``--list``. Cells of every sweep go through
``simulations.common.fanout``: a local Dask cluster started once for the whole study, one worker per
CPU core by default (:func:`default_workers`; ``--workers N`` sets N, ``--workers 0`` runs serially),
or ``--scheduler ADDRESS`` (a running Dask scheduler). The numbers do not depend on which.

Example::

    $ python -m simulations.study --quick --results /tmp/study
    study [##############################] 9/9 runs, 112.4s, eta 0.0s
    9 experiments: 9 run, 0 reused; manifest /tmp/study/study-quick.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from simulations.common import fanout, store

SCALES = ("quick", "full")


@dataclass(frozen=True)
class Entry:
    """One experiment of the study: where its code is, which claims it tests, its two scales."""

    name: str
    module: str
    config: str
    claims: tuple[int, ...]
    command: str
    title: str
    quick: dict[str, Any] = field(default_factory=dict)
    full: dict[str, Any] = field(default_factory=dict)
    seconds: tuple[float, float] = (10.0, 60.0)  # rough (quick, full) cost on 2 cores, for the ETA
    network: bool = False

    def overrides(self, scale: str) -> dict[str, Any]:
        return dict(self.quick if scale == "quick" else self.full)

    def config_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.config)

    def make_config(self, scale: str, *, results: Path, threads: int = 0) -> Any:
        """The config of this entry at ``scale``, written under ``results/<name>/{config}``."""
        cls = self.config_class()
        kwargs = self.overrides(scale)
        kwargs["out"] = str(results / self.name / store.PLACEHOLDER)
        kwargs["quiet"] = True
        names = {f.name for f in dataclasses.fields(cls)}
        if threads and "threads" in names and "threads" in store.execution_fields(cls):
            kwargs["threads"] = threads
        return cls(**kwargs)


NET_QUICK = {"epochs": 2, "seeds": (0, 1), "width": 64}

STUDY: tuple[Entry, ...] = (
    Entry(
        name="basin_dim",
        module="simulations.basin_dim",
        config="BasinDimConfig",
        claims=(2, 3),
        command="python -m simulations.basin_dim",
        title="DP-SGD on a rank-r basin as the ambient dimension d grows",
        quick={"d": 100_000, "points": 4, "replicas": 4, "theory_points": 7},
        full={},
        seconds=(6.0, 20.0),
    ),
    Entry(
        name="recovery",
        module="simulations.recovery",
        config="RecoveryConfig",
        claims=(2,),
        command="python -m simulations.recovery",
        title="recovery from a displacement at stationarity, clipped vs unclipped",
        quick={"d": 100_000, "replicas": 8},
        full={},
        seconds=(5.0, 12.0),
    ),
    Entry(
        name="switch",
        module="simulations.switch",
        config="SwitchConfig",
        claims=(1,),
        command="python -m simulations.switch",
        title="switching between SGD and DP-SGD at step s, both directions",
        quick={"points": 6, "replicas": 16},
        full={},
        seconds=(4.0, 9.0),
    ),
    Entry(
        name="prune",
        module="simulations.prune",
        config="PruneConfig",
        claims=(4,),
        command="python -m simulations.prune",
        title="magnitude pruning at fixed ε: keep fraction, aligned and rotated basins",
        quick={"points": 4, "replicas": 4, "steps": 200},
        full={},
        seconds=(8.0, 30.0),
    ),
    Entry(
        name="net_ablate",
        module="simulations.net_ablate",
        config="AblateConfig",
        claims=(2,),
        command="python -m simulations.nn ablate",
        title="networks: sgd / clip / noise / dpsgd, and recovery from a weight burst",
        quick={**NET_QUICK, "epochs": 3, "burst_epoch": 1},
        full={},
        seconds=(15.0, 70.0),
        network=True,
    ),
    Entry(
        name="net_switch",
        module="simulations.net_switch",
        config="SwitchConfig",
        claims=(1,),
        command="python -m simulations.nn switch",
        title="networks: switching between SGD and DP-SGD at epoch s",
        quick={**NET_QUICK, "epochs": 3, "switch_epochs": (1, 2)},
        full={},
        seconds=(15.0, 120.0),
        network=True,
    ),
    Entry(
        name="net_width",
        module="simulations.net_width",
        config="WidthConfig",
        claims=(3,),
        command="python -m simulations.nn width",
        title="networks: MLP width (parameter count) at fixed ε and σ",
        quick={**NET_QUICK, "widths": (8, 64)},
        full={"widths": (8, 32, 128, 512)},
        seconds=(15.0, 240.0),
        network=True,
    ),
    Entry(
        name="net_prune",
        module="simulations.net_prune",
        config="PruneConfig",
        claims=(4,),
        command="python -m simulations.nn prune",
        title="networks: magnitude pruning at fixed total ε, per mask source",
        quick={**NET_QUICK, "width": 128, "sparsities": (0.9,)},
        full={},
        seconds=(20.0, 150.0),
        network=True,
    ),
    Entry(
        name="net_epsilon",
        module="simulations.net_epsilon",
        config="EpsilonConfig",
        claims=(4,),
        command="python -m simulations.nn epsilon",
        title="networks: the ε–accuracy curve, dense and public-mask pruned DP-SGD with SGD and clip-only anchors",
        quick={
            **NET_QUICK,
            "epochs": 3,
            "n_train": 1500,
            "n_public": 300,
            "public_epochs": 3,
            "epsilons": (1.0, 8.0),
            "lr_grid": (0.5, 2.5),
        },
        full={},
        seconds=(20.0, 160.0),
        network=True,
    ),
    Entry(
        name="net_basin",
        module="simulations.net_basin",
        config="BasinConfig",
        claims=(2, 3),
        command="python -m simulations.nn basin",
        title="theory (spectral model) vs DP-SGD arms warm-started at a converged network minimum",
        quick={
            "widths": (8, 32),
            "center_width": 32,
            "sigmas": (1.0,),
            "clip_factors": (0.3,),
            "mask_sources": ("init",),
            "pretrain_epochs": 10,
            "polish_iter": 100,
            "top_k": 8,
            "probes": 4,
            "lanczos_steps": 30,
            "min_steps": 150,
            "max_steps": 150,
            "seeds": (0, 1),
            "recovery_steps": 30,
            "checks": ("linearised",),
            "lin_n_train": 300,
            "lin_width": 16,
        },
        full={},
        seconds=(90.0, 900.0),
        network=True,
    ),
)


def command_line(entry: Entry, config: Any, folder: Path) -> str:
    """The command that computes ``config`` on its own (flags only where a field is not its default)."""
    parts = [entry.command]
    cls = type(config)
    skip = store.execution_fields(config) | {"out", "quiet"}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        value = getattr(config, f.name)
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, tuple):
            parts.append(f"{flag} {','.join(str(v) for v in value)}")
        else:
            parts.append(f"{flag} {'none' if value is None else value}")
    parts.append(f"--out {folder}")
    return " ".join(parts)


def select(only: Sequence[str]) -> list[Entry]:
    """Entries named in ``only`` (experiment names, or claims as ``1``…``4`` / ``claim1``); all if empty."""
    if not only:
        return list(STUDY)
    chosen = []
    for item in only:
        text = item.strip().lower().removeprefix("claim").strip()
        if text.isdigit():
            hits = [e for e in STUDY if int(text) in e.claims]
        else:
            hits = [e for e in STUDY if e.name == item.strip()]
        if not hits:
            names = ", ".join(e.name for e in STUDY)
            raise ValueError(f"--only: no experiment or claim {item!r} (claims 1-4 or one of {names})")
        chosen += [e for e in hits if e not in chosen]
    return [e for e in STUDY if e in chosen]


class StudyProgress:
    """One line on stderr: runs done of the study, the current experiment's cells, elapsed, ETA.

    The ETA weighs each experiment by its expected cost (:attr:`Entry.seconds`) rescaled by the
    measured speed of the experiments finished so far.
    """

    def __init__(self, entries: Sequence[Entry], scale: str, *, quiet: bool = False):
        self.costs = [e.seconds[0 if scale == "quick" else 1] for e in entries]
        self.names = [e.name for e in entries]
        self.quiet = quiet
        self.start = time.perf_counter()
        self.index = 0
        self.fraction = 0.0
        self.note = ""

    def cells(self, done: int, total: int, label: str) -> None:
        self.fraction = done / max(total, 1)
        self.note = f"{self.names[self.index]} {done}/{total} cells"
        self.show()

    def next(self, skipped: bool = False) -> None:
        if skipped:
            self.costs[self.index] = 0.0
        self.index += 1
        self.fraction = 0.0
        self.note = ""
        self.show()

    def show(self) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        total = sum(self.costs) or 1.0
        done = sum(self.costs[: self.index]) + (
            self.costs[self.index] * self.fraction if self.index < len(self.costs) else 0
        )
        frac = min(done / total, 1.0)
        eta = elapsed / frac - elapsed if frac > 0.02 else float("nan")
        bar = "#" * int(30 * frac)
        eta_text = f"{eta:5.0f}s" if eta == eta else "    ?"
        sys.stderr.write(
            f"\rstudy [{bar:<30}] {self.index}/{len(self.costs)} runs, {elapsed:5.0f}s, eta {eta_text} {self.note[:34]:<34}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if not self.quiet:
            sys.stderr.write("\n")


def run_entry(entry: Entry, scale: str, *, results: Path, rerun: bool, threads: int) -> dict[str, Any]:
    """Run (or reuse) one experiment; its printed table goes to ``stdout.txt`` in its folder."""
    config = entry.make_config(scale, results=results, threads=threads)
    key = store.run_key(config, experiment=entry.name, module=entry.module)
    folder = store.resolve_out(config, experiment=entry.name, module=entry.module)
    record: dict[str, Any] = {
        "name": entry.name,
        "module": entry.module,
        "claims": list(entry.claims),
        "title": entry.title,
        "network": entry.network,
        "folder": str(folder),
        "key": key,
        "command": command_line(entry, config, folder),
    }
    if not rerun and store.is_complete(folder, key):
        return {**record, "status": "ok", "reused": True, "seconds": 0.0}
    module = importlib.import_module(entry.module)
    config = dataclasses.replace(config, out=str(folder))
    out = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            module.run(config)
    except Exception as exc:  # one experiment's failure is reported; the others still run
        return {
            **record,
            "status": "failed",
            "reused": False,
            "seconds": time.perf_counter() - t0,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }
    seconds = time.perf_counter() - t0
    if store.read_run_record(folder) is None:  # experiments outside the sweep API: record the key here
        execution = fanout.active_execution() or fanout.Execution()
        store.write_run_record(
            folder, store.run_record(config, experiment=entry.name, module=entry.module, execution=execution.describe())
        )
    (folder / "stdout.txt").write_text(out.getvalue())
    return {**record, "status": "ok", "reused": False, "seconds": seconds}


def run_study(
    *,
    scale: str,
    results: Path,
    only: Sequence[str] = (),
    execution: fanout.Execution | None = None,
    rerun: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the selected experiments at ``scale`` and write ``<results>/study-<scale>.json``."""
    entries = select(only)
    execution = execution or fanout.Execution()
    progress = StudyProgress(entries, scale, quiet=quiet)
    records = []
    start = time.perf_counter()
    with fanout.session(execution), fanout.observe(progress.cells):
        progress.show()
        for entry in entries:
            rec = run_entry(entry, scale, results=results, rerun=rerun, threads=execution.threads_per_worker())
            records.append(rec)
            progress.next(skipped=rec["reused"])
    progress.close()
    manifest = {
        "scale": scale,
        "results": str(results),
        "execution": execution.describe(),
        "seconds": time.perf_counter() - start,
        "experiments": records,
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"study-{scale}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
    return manifest


def default_workers(scheduler: str | None) -> int:
    """Local workers when ``--workers`` is not given: one per CPU core this process may use, when there
    are at least two and ``distributed`` is installed (the numbers do not depend on it); else 0
    (serial). With a scheduler, 0: its workers run the cells."""
    import importlib.util

    if scheduler:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores >= 2 and importlib.util.find_spec("distributed") is not None else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulations.study [--quick] [--only X,...] [--workers N | --scheduler ADDR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations.study",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--quick", action="store_true", help="the reduced scale (CI; under 3 minutes on 2 cores)")
    parser.add_argument("--only", default="", help="comma list of experiments or claims (1-4)")
    parser.add_argument("--results", default="results", help="folder holding every result folder and the manifest")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Dask LocalCluster worker processes (0: serial; default: one per CPU core when there are 2 or more "
        "and dask is installed, else serial)",
    )
    parser.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:port)")
    parser.add_argument("--threads", type=int, default=0, help="numba/torch threads per worker (0: cores / workers)")
    parser.add_argument("--rerun", action="store_true", help="recompute even the results that are stored")
    parser.add_argument("--list", action="store_true", help="print the experiments of the study and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def error(message: str) -> NoReturn:
        sys.stderr.write(f"python -m simulations.study: error: {message}\n")
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    scale = "quick" if args.quick else "full"
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's per-order convergence notes
    try:
        only = [s for s in args.only.split(",") if s.strip()]
        entries = select(only)
        workers = default_workers(args.scheduler) if args.workers is None else args.workers
        execution = fanout.Execution(workers=workers, scheduler=args.scheduler, threads=args.threads)
        if not args.list:  # a folder of result folders: written into, never replaced (checked before any run)
            from simulations.common.results import check_output_dir

            check_output_dir(args.results, replace=False)
    except ValueError as exc:
        sys.stderr.write(f"python -m simulations.study: error: {exc}\n")
        return 2
    if args.list:
        for e in entries:
            claims = ",".join(map(str, e.claims))
            print(f"{e.name:<13} claims {claims:<4} {e.command}  quick {e.quick}  full {e.full}")
        return 0
    try:
        manifest = run_study(
            scale=scale, results=Path(args.results), only=only, execution=execution, rerun=args.rerun, quiet=args.quiet
        )
    except (ValueError, OSError) as exc:  # e.g. the dask extra missing, no scheduler at the address, a full disk
        sys.stderr.write(f"python -m simulations.study: error: {' '.join(str(exc).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("python -m simulations.study: interrupted (finished cells are stored; run again to resume)\n")
        return 130
    recs = manifest["experiments"]
    failed = [r for r in recs if r["status"] != "ok"]
    reused = sum(r["reused"] for r in recs)
    print(
        f"{len(recs)} experiments: {len(recs) - reused - len(failed)} run, {reused} reused, {len(failed)} failed; "
        f"{manifest['seconds']:.1f}s; manifest {Path(args.results) / f'study-{scale}.json'}"
    )
    for r in failed:
        sys.stderr.write(f"python -m simulations.study: {r['name']} failed: {r['error']}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
