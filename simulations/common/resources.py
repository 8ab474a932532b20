"""Resource guards: a run whose arrays or amount of work cannot fit is refused up front, in one line.

Every command estimates, from its configuration alone and before any allocation or simulation,

* the **memory** of its largest arrays (``check_memory``: bytes), and
* its **work** (``check_work``): the number of elementary operations, counted as runs × replicas ×
  steps × (per-step cost, e.g. batch size × dimension of the per-sample gradients). One unit is
  roughly one multiply-add of the inner loop: this machine class does ≈ 10⁹ of them per second and
  core, so the default limit of 10¹⁴ is about a day of one core.

A run above a limit raises :class:`ResourceError` (a ``ValueError``: the command line prints one line
naming what would be needed and exits with status 2), e.g.::

    python -m simulations.basin_dim: error: the Monte Carlo traces would need 7.3 TiB of memory
    (replicas 1e+12 × ...), above the limit of 12 GiB (--max-memory)

Limits, in order of precedence: ``--max-memory`` / ``--max-work`` on the command line (added to
every command by ``simulations.common.cli.run_main``), the environment variables
``DPBASIN_MAX_MEMORY`` / ``DPBASIN_MAX_WORK``, then the defaults: half the machine's physical
memory, and 10¹⁴ operations. Sizes are written ``512M``, ``12G``, ``1.5GiB`` or in bytes (``1e9``).

The estimates are upper bounds of the dominant arrays, not of every temporary, and are computed in
floating point so that absurd inputs (10¹² replicas) cannot overflow the estimate itself.

Example:
    >>> with limits(memory="1M"):
    ...     check_memory("a small array", array_bytes(1000))
    ...     check_memory("a large array", array_bytes(10**9))
    Traceback (most recent call last):
    ...
    simulations.common.resources.ResourceError: a large array would need 7.45 GiB of memory, above the limit of 1 MiB (--max-memory)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_WORK",
    "MEMORY_ENV",
    "WORK_ENV",
    "Limits",
    "ResourceError",
    "array_bytes",
    "check_memory",
    "check_work",
    "current_limits",
    "format_size",
    "limits",
    "parse_size",
    "physical_memory",
]

MEMORY_ENV = "DPBASIN_MAX_MEMORY"
WORK_ENV = "DPBASIN_MAX_WORK"
DEFAULT_MAX_WORK = 1e14


class ResourceError(ValueError):
    """A run that would exceed the memory or work limit (reported as one line, exit status 2)."""


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


def parse_size(text: str | float | int) -> int:
    """Bytes from ``512M``, ``12G``, ``1.5GiB``, ``2TB`` (binary units) or a plain number of bytes.

    >>> parse_size("512M"), parse_size("1.5GiB"), parse_size("1e9")
    (536870912, 1610612736, 1000000000)
    """
    if isinstance(text, bool):
        raise ValueError(f"a size must look like 512M, 12G or 1e9 (bytes), got {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtTpP]?)(?:i?[bB])?\s*", str(text))
        if match is None:
            raise ValueError(f"a size must look like 512M, 12G or 1e9 (bytes), got {text!r}")
        value, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a size must be a positive number of bytes, got {text!r}")
    total = value * _UNITS[unit]
    if total > 2**62:
        raise ValueError(f"a size must be below 4 EiB, got {text!r}")
    return max(1, int(total))


def format_size(nbytes: float) -> str:
    """``7.45 GiB``-style text (binary units).

    >>> format_size(2**20), format_size(8e12)
    ('1 MiB', '7.28 TiB')
    """
    if not math.isfinite(nbytes):
        return "an unbounded amount"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} EiB"  # pragma: no cover - loop always returns


def physical_memory() -> int:
    """Physical memory of this machine in bytes (8 GiB if the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


@dataclass(frozen=True)
class Limits:
    """The limits in force: ``memory`` in bytes, ``work`` in operations (module docstring)."""

    memory: int
    work: float


def _parse_work(text: str | float) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"a work limit must be a number of operations such as 1e12, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a work limit must be a positive number of operations, got {text!r}")
    return value


def default_limits() -> Limits:
    """Limits from ``$DPBASIN_MAX_MEMORY`` / ``$DPBASIN_MAX_WORK``, else half the memory and 10¹⁴."""
    mem = os.environ.get(MEMORY_ENV)
    work = os.environ.get(WORK_ENV)
    try:
        memory = parse_size(mem) if mem else physical_memory() // 2
    except ValueError as exc:
        raise ResourceError(f"${MEMORY_ENV}: {exc}") from None
    try:
        ops = _parse_work(work) if work else DEFAULT_MAX_WORK
    except ValueError as exc:
        raise ResourceError(f"${WORK_ENV}: {exc}") from None
    return Limits(memory=memory, work=ops)


_CURRENT: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("dpbasin_limits", default=None)


def current_limits() -> Limits:
    """The limits set by the innermost :func:`limits` block, else :func:`default_limits`."""
    return _CURRENT.get() or default_limits()


@contextlib.contextmanager
def limits(*, memory: str | float | None = None, work: str | float | None = None) -> Iterator[Limits]:
    """Set the memory (a size, :func:`parse_size`) and/or work limit inside the block (None: keep)."""
    base = current_limits()
    new = Limits(
        memory=base.memory if memory is None else parse_size(memory),
        work=base.work if work is None else _parse_work(work),
    )
    token = _CURRENT.set(new)
    try:
        yield new
    finally:
        _CURRENT.reset(token)


def array_bytes(*shape: float, itemsize: int = 8) -> float:
    """Bytes of an array of ``shape`` (a float: an absurd shape cannot overflow the estimate)."""
    total = float(itemsize)
    for s in shape:
        total *= max(float(s), 0.0)
    return total


def check_memory(what: str, nbytes: float, *, detail: str = "") -> None:
    """Raise :class:`ResourceError` if ``nbytes`` exceed the memory limit; ``what`` names the arrays.

    ``detail`` (e.g. ``"replicas 8 × steps 50000 × 7 metrics × 8 B"``) is shown in parentheses.
    """
    limit = current_limits().memory
    if not nbytes <= limit:  # also refuses nan
        extra = f" ({detail})" if detail else ""
        raise ResourceError(
            f"{what} would need {format_size(nbytes)} of memory{extra}, above the limit of "
            f"{format_size(limit)} (--max-memory)"
        )


def check_work(what: str, operations: float, *, detail: str = "") -> None:
    """Raise :class:`ResourceError` if ``operations`` exceed the work limit (module docstring)."""
    limit = current_limits().work
    if not operations <= limit:
        extra = f" ({detail})" if detail else ""
        raise ResourceError(
            f"{what} would take ≈ {operations:.2g} operations{extra}, above the limit of {limit:.2g} "
            f"(≈ {limit / 1e9 / 3600:.2g} core-hours; --max-work)"
        )


# --------------------------------------------------------------------------------------------
# estimates of the synthetic-basin sweeps (simulations.basin.engine.simulate and the mean-field theory)

TRACE_METRICS = 7  # arrays of shape (replicas, records) in simulations.basin.engine.Trace
THEORY_STEP_COST = 2e4  # one step of the Python mean-field recursion, in operations (measured order)


def check_basin_sweep(
    *,
    runs: int,
    replicas: int,
    steps: int,
    batch_size: int,
    rank: int,
    dim: int,
    engine: str,
    record_every: int = 1,
    theory_steps: int | None = None,
    extra_bytes: float = 0.0,
) -> None:
    """Refuse a sweep of ``runs`` Monte Carlo runs that cannot fit (memory) or would take too long (work).

    Memory: the trace (7 metrics × replicas × steps/record_every float64), the engine state
    (replicas × d float64 twice for the d-dimensional engines ``full`` / ``numpy``, replicas × r for
    ``reduced``), the mean-field theory curves (``theory_steps`` × r float64 four times) and
    ``extra_bytes`` (a command's own arrays). Work: runs × replicas × steps × B × (r, or d for the
    d-dimensional engines; ×10 for the numpy twin) plus runs × theory_steps × (r + 2·10⁴) for the
    Python recursion. ``steps`` is the per-run cap (an upper bound of what a run simulates).
    """
    full = engine in ("full", "numpy")
    width = float(dim) if full else float(rank)
    trace = array_bytes(replicas, max(float(steps) / max(record_every, 1), 1.0), TRACE_METRICS)
    state = array_bytes(replicas + 2, dim) * 2 if full else array_bytes(replicas, rank) * 4
    theory = array_bytes(theory_steps or 0, rank) * 4 + array_bytes(rank) * 8
    total = trace + state + theory + float(extra_bytes)
    check_memory(
        "the Monte Carlo traces and state",
        total,
        detail=f"replicas {replicas:g} × ≤ {steps:g} steps × {TRACE_METRICS} metrics, "
        f"{'d' if full else 'r'} = {width:g}, rank {rank:g}",
    )
    per_step = float(batch_size) * width * (10.0 if engine == "numpy" else 1.0) + width
    ops = float(runs) * float(replicas) * float(steps) * per_step
    ops += float(runs) * float(theory_steps or 0) * (float(rank) + THEORY_STEP_COST)
    check_work(
        "the sweep",
        ops,
        detail=f"{runs:g} runs × {replicas:g} replicas × ≤ {steps:g} steps × B {batch_size:g} × "
        f"{'d' if full else 'r'} {width:g}",
    )


# --------------------------------------------------------------------------------------------
# thread counts (saved with a run's config: torch results depend on them, numba ones do not)


def check_threads(name: str, value: object) -> int:
    """``value`` as a thread count in [0, cores of this machine] (0: the library's default)."""
    from dptheory.validate import check_int

    cores = os.cpu_count() or 1
    return check_int(name, value, minimum=0, maximum=max(cores, 1))


@contextlib.contextmanager
def numba_threads(threads: int) -> Iterator[int]:
    """Run numba's parallel loops with ``threads`` threads (0: all it was started with); restore after.

    Yields the count in force. The basin engines draw one random stream per replica and run each
    replica serially, so their numbers do not depend on the count (tests/test_sim_cli.py).
    """
    import numba

    before = numba.get_num_threads()
    available = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # numba.config sets its options at import time
    n = available if threads == 0 else int(threads)
    if not 1 <= n <= available:
        raise ValueError(f"threads must be between 0 and {available} (numba's thread pool), got {threads}")
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(before)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run with ``threads`` torch intra-op threads (0: torch's own default); restore after. Yields the count."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
