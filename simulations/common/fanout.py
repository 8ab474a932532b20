"""One sweep API for every experiment: a sweep is a list of pure cells, run serially or on Dask.

A :class:`Cell` is a module-level function and its keyword arguments. It must be *pure*: its
result depends only on its arguments — every seed is in them (``simulations.common.sweep.run_seed``
of the cell's config and grid position), never drawn from the worker, the time or a global — so a
cell gives the same bits wherever it runs. :func:`run_cells` runs a list of cells and returns
their results in order:

* **serial** (the default): in this process, one after the other;
* **local cluster** (``workers=N``): ``distributed.LocalCluster(n_workers=N, threads_per_worker=1,
  processes=True)`` on 127.0.0.1, started for the call (or once for a whole study, :func:`session`);
* **a running scheduler** (``scheduler="tcp://host:8786"``): ``distributed.Client(address)`` — a
  cluster made with ``dask scheduler`` and ``dask worker ADDRESS`` on each machine, or by
  dask-jobqueue (``SLURMCluster(...).scheduler_address``). Workers need dpbasin installed (the same
  version: cells are pickled by reference to their function).

Threads. Each worker runs one cell at a time with ``threads`` numba and torch threads (default:
CPU cores // workers locally, 1 on a remote scheduler; BLAS pools are held at 1 on Dask workers).
The numba engines run replicas in parallel with one random stream per replica, so their numbers
do not depend on the thread count; torch runs pin their own thread count in their config.

Memory allocator. Dask's nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), which fixes glibc's mmap threshold at 128 KiB: every
tensor above it is a fresh ``mmap`` whose pages fault in on first use, and a torch step then costs
about 1.4× the same step in a plain process (measured on the 2-core CI machine, most of it system
time). Local clusters start their workers without it; on a worker that has it (a ``dask worker``
started by hand or by dask-jobqueue) :func:`execute` raises the trim and mmap thresholds once
(``mallopt``). The allocator never changes a number.

Resume. With ``cache`` (a :class:`simulations.common.store.CellCache`) each finished cell is stored
as it completes — by the client, so workers need no shared file system — and cells already stored
are not run again.

Example:
    >>> def square(*, x):
    ...     return x * x
    >>> run_cells([Cell(square, {"x": 3}), Cell(square, {"x": 4})], quiet=True)
    [9, 16]
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulations.common.store import CellCache, canonical, code_version, digest, module_name

__all__ = [
    "Cell",
    "Execution",
    "SweepRun",
    "active_execution",
    "execute",
    "execution_field",
    "execution_of",
    "observe",
    "run_cells",
    "session",
]


@dataclass(frozen=True)
class Cell:
    """One pure task of a sweep: ``fn(**kwargs)``; ``label`` is shown in the progress bar.

    ``token``: for arguments that have no canonical form (a network, tensors), a string that the
    caller guarantees determines them; the key then hashes the token instead of the arguments.
    """

    fn: Callable[..., Any]
    kwargs: Mapping[str, Any]
    label: str = ""
    token: str | None = None

    def __post_init__(self) -> None:
        # A cell defined in the script of ``python -m pkg.mod`` refers to ``pkg.mod``'s function, so that
        # it is pickled by reference (workers import it) and keyed like the imported module's cell.
        if self.fn.__module__ == "__main__" and module_name("__main__") != "__main__":
            import importlib

            real = importlib.import_module(module_name("__main__"))
            object.__setattr__(self, "fn", getattr(real, self.fn.__qualname__))

    def key(self) -> str:
        """SHA-256 of the function's name, its canonical arguments and its module's code version."""
        module = self.fn.__module__
        return digest(
            {
                "fn": f"{module_name(module)}.{self.fn.__qualname__}",
                "kwargs": canonical(dict(self.kwargs)) if self.token is None else {"token": self.token},
                "code": code_version(module)["sources"] if module.split(".")[0] == "simulations" else module,
            }
        )


@dataclass(frozen=True)
class Execution:
    """Where cells run: ``scheduler`` address, else ``workers`` local processes, else serially."""

    workers: int = 0
    scheduler: str | None = None
    threads: int = 0

    def __post_init__(self) -> None:
        if int(self.workers) != self.workers or self.workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {self.workers}")
        if int(self.threads) != self.threads or self.threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {self.threads}")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise ValueError(f"scheduler must be an address such as tcp://127.0.0.1:8786, got {self.scheduler!r}")

    @property
    def kind(self) -> str:
        return "scheduler" if self.scheduler else ("local" if self.workers else "serial")

    def threads_per_worker(self) -> int:
        """numba/torch threads each cell gets (the resolved ``threads``)."""
        if self.threads:
            return int(self.threads)
        cores = os.cpu_count() or 1
        if self.kind == "local":
            return max(1, cores // int(self.workers))
        return 1 if self.kind == "scheduler" else cores

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records about the execution."""
        return {
            "kind": self.kind,
            "workers": int(self.workers) if self.kind == "local" else None,
            "scheduler": self.scheduler,
            "threads_per_worker": self.threads_per_worker(),
        }


def execution_field(name: str) -> Any:
    """A config field for ``workers`` / ``scheduler`` / ``threads`` (marked ``execution``: outside
    the run key, :func:`simulations.common.store.canonical`)."""
    helps = {
        "workers": (0, "Dask LocalCluster worker processes (0: run serially in this process)"),
        "scheduler": (None, "address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786 (overrides --workers)"),
        "threads": (0, "numba/torch threads per worker (0: CPU cores / workers; results do not depend on it)"),
    }
    default, text = helps[name]
    return field(default=default, metadata={"help": text, "execution": True})


_ACTIVE: list[Any] = []  # stack of open sessions (a study opens one for all its experiments)
_OBSERVERS: list[Callable[[int, int, str], None]] = []


@contextlib.contextmanager
def observe(callback: Callable[[int, int, str], None]) -> Iterator[None]:
    """Call ``callback(done, total, label)`` whenever a cell of any sweep inside the block finishes
    (a study's progress bar over all its experiments)."""
    _OBSERVERS.append(callback)
    try:
        yield
    finally:
        _OBSERVERS.remove(callback)


def active_execution() -> Execution | None:
    """The execution of the innermost open :func:`session`, if any."""
    return _ACTIVE[-1].execution if _ACTIVE else None


def execution_of(config: Any) -> Execution:
    """The execution a config asks for (its ``workers``/``scheduler``/``threads`` fields, if it has
    them); a config that asks for neither workers nor a scheduler runs in the open :func:`session`,
    if any, else serially."""
    workers = int(getattr(config, "workers", 0) or 0)
    scheduler = getattr(config, "scheduler", None)
    threads = int(getattr(config, "threads", 0) or 0) if hasattr(config, "workers") else 0
    active = active_execution()
    if not workers and not scheduler and active is not None:
        return active
    return Execution(workers=workers, scheduler=scheduler, threads=threads)


def _set_threads(threads: int) -> None:
    import sys

    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]  # numba.config sets its options at import time
    except ImportError:  # pragma: no cover - numba is a core dependency
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(max(1, threads))


_MALLOC_RESTORED = False
TRIM_THRESHOLD = 1 << 28  # bytes of free heap glibc keeps before returning memory to the OS
MMAP_THRESHOLD = 1 << 25  # allocations from this size on get their own mmap (glibc's dynamic maximum)


def _restore_malloc() -> None:
    """Undo a nanny's ``MALLOC_TRIM_THRESHOLD_`` (module docstring) in this process, once; a no-op
    without the variable or without glibc."""
    global _MALLOC_RESTORED
    if _MALLOC_RESTORED or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _MALLOC_RESTORED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its defaults stay
        pass


def execute(fn: Callable[..., Any], kwargs: Mapping[str, Any], threads: int) -> Any:
    """Run one cell with ``threads`` numba/torch threads (on a worker or in this process); a worker
    gets the commands' logging level for dp-accounting's per-order convergence notes (errors only)
    and glibc's allocator thresholds back (module docstring)."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    _restore_malloc()
    _set_threads(threads)
    return fn(**dict(kwargs))


class _Serial:
    def __init__(self, execution: Execution):
        self.execution = execution

    def run(self, cells: Sequence[tuple[int, Cell]], done: Callable[[int, Any], None]) -> None:
        threads = self.execution.threads_per_worker()
        for i, cell in cells:
            done(i, execute(cell.fn, cell.kwargs, threads))


class _Dask:
    def __init__(self, execution: Execution):
        self.execution = execution
        try:
            import distributed
        except ImportError:
            raise ValueError(
                "--workers/--scheduler need the 'dask' extra (dask and distributed are not installed): "
                "pip install -e '.[dask]'"
            ) from None
        import logging

        logging.getLogger("distributed").setLevel(logging.WARNING)  # no INFO lines (cluster start-up) on stderr
        self._stack = contextlib.ExitStack()
        threads = execution.threads_per_worker()
        if execution.kind == "local":
            env = {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            import dask

            # workers without the nanny's MALLOC_TRIM_THRESHOLD_ (module docstring), and without the
            # statistical profiler sampling the running cell every 10 ms (only a dashboard reads it)
            no_trim = {
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.worker.profile.enabled": False,
            }
            self._stack.enter_context(dask.config.set(no_trim))
            cluster = self._stack.enter_context(
                distributed.LocalCluster(
                    n_workers=int(execution.workers),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",  # the HTTP routes on a free port: never "8787 in use"
                    env=env,
                    silence_logs=logging.WARNING,
                )
            )
            self.client = self._stack.enter_context(distributed.Client(cluster))
        else:
            try:
                self.client = self._stack.enter_context(distributed.Client(execution.scheduler, timeout="20s"))
            except OSError as exc:
                self._stack.close()
                raise ValueError(f"cannot reach the Dask scheduler at {execution.scheduler}: {exc}") from None

    def close(self) -> None:
        import logging

        log = logging.getLogger("distributed")
        level = log.level
        log.setLevel(logging.CRITICAL)  # shutdown races (a CommClosedError traceback) are no news to the user
        try:
            self._stack.close()
        finally:
            log.setLevel(level)

    def _share(self, cells: Sequence[tuple[int, Cell]]) -> dict[int, Any]:
        """id → future for every argument object that several cells hold (a network and its data):
        it is sent to the cluster once (``Client.scatter``) instead of inside every cell's task."""
        seen: dict[int, tuple[int, Any]] = {}
        for _, cell in cells:
            for v in cell.kwargs.values():
                if not isinstance(v, (bool, int, float, str, bytes, type(None))):
                    n, _ = seen.get(id(v), (0, v))
                    seen[id(v)] = (n + 1, v)
        # one object per scatter call inside a list: scatter would split a dict or a list into items
        return {k: self.client.scatter([v], hash=False)[0] for k, (n, v) in seen.items() if n > 1}

    def run(self, cells: Sequence[tuple[int, Cell]], done: Callable[[int, Any], None]) -> None:
        import distributed

        threads = self.execution.threads_per_worker()
        shared = self._share(cells)
        futures = {}
        for i, cell in cells:
            kwargs = {k: shared.get(id(v), v) for k, v in cell.kwargs.items()}
            fut = self.client.submit(execute, cell.fn, kwargs, threads, key=f"cell-{cell.key()}")
            futures[fut] = i
        try:
            for fut in distributed.as_completed(list(futures)):
                done(futures[fut], fut.result())
        finally:
            self.client.cancel([f for f in futures if not f.done()])


@contextlib.contextmanager
def session(execution: Execution | None = None) -> Iterator[Any]:
    """Open ``execution`` (a LocalCluster or a client of a scheduler) for every :func:`run_cells`
    inside the block that does not ask for its own; closed (cluster shut down) on exit."""
    execution = execution or Execution()
    runner = _Dask(execution) if execution.kind != "serial" else _Serial(execution)
    _ACTIVE.append(runner)
    try:
        yield runner
    finally:
        _ACTIVE.remove(runner)
        if isinstance(runner, _Dask):
            runner.close()


def run_cells(
    cells: Sequence[Cell],
    *,
    execution: Execution | None = None,
    cache: CellCache | None = None,
    label: str = "sweep",
    quiet: bool = False,
) -> list[Any]:
    """Run ``cells`` (stored ones are loaded from ``cache``) and return their results in order.

    ``execution``: None uses the open :func:`session` (or serial); an execution that differs from the
    open session's starts its own cluster for this call.
    """
    from simulations.common.cli import Progress

    cells = list(cells)
    results: list[Any] = [None] * len(cells)
    keys = [c.key() for c in cells] if cache is not None else [""] * len(cells)
    todo = []
    for i, (cell, key) in enumerate(zip(cells, keys)):
        hit, value = cache.get(key) if cache is not None else (False, None)
        if hit:
            results[i] = value
        else:
            todo.append((i, cell))
    with Progress(total=len(cells), label=label, quiet=quiet) as bar:
        bar.update(len(cells) - len(todo), note="stored" if len(todo) < len(cells) else "")
        for observer in _OBSERVERS:
            observer(bar.done, len(cells), label)

        def done(i: int, value: Any) -> None:
            results[i] = value
            if cache is not None:
                cache.put(keys[i], value)
            bar.update(note=cells[i].label)
            for observer in _OBSERVERS:
                observer(bar.done, len(cells), label)

        if todo:
            active = _ACTIVE[-1] if _ACTIVE else None
            if active is not None and (execution is None or execution == active.execution):
                active.run(todo, done)
            else:
                with session(execution) as runner:
                    runner.run(todo, done)
    return results


class SweepRun:
    """One experiment run through the sweep API: resolved folder, execution, cell cache, run record.

    ``SweepRun(config, experiment=..., module=__name__)`` resolves ``config.out`` (the ``{config}``
    placeholder → run key, :func:`simulations.common.store.resolve_out`), records the resolved
    folder and thread count in the config it keeps (``.config``, the one to save), and opens the
    cell cache beside the folder. ``map(cells)`` runs cells (finished ones are stored at once);
    ``with run.folder() as tmp:`` writes the result folder atomically with its ``run.json`` and
    removes the cell cache once the folder is in place.
    """

    def __init__(self, config: Any, *, experiment: str, module: str):
        from simulations.common.results import check_output_dir
        from simulations.common.store import execution_fields, resolve_out, run_record

        self.experiment = experiment
        self.execution = execution_of(config)
        self.out = resolve_out(config, experiment=experiment, module=module)
        check_output_dir(self.out)
        changes: dict[str, Any] = {"out": str(self.out)}
        if "threads" in execution_fields(config):
            changes["threads"] = self.execution.threads_per_worker()
        self.config = dataclasses.replace(config, **changes)
        self.record = run_record(self.config, experiment=experiment, module=module, execution=self.execution.describe())
        self.cache = CellCache(self.out)

    @property
    def key(self) -> str:
        return self.record["key"]

    def map(self, cells: Sequence[Cell], *, label: str | None = None) -> list[Any]:
        return run_cells(
            cells,
            execution=self.execution,
            cache=self.cache,
            label=label or self.experiment,
            quiet=bool(getattr(self.config, "quiet", False)),
        )

    @contextlib.contextmanager
    def folder(self) -> Iterator[Any]:
        from simulations.common.results import result_folder
        from simulations.common.store import write_run_record

        with result_folder(self.out) as tmp:
            yield tmp
            write_run_record(tmp, self.record)
        self.cache.clear()
