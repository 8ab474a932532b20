"""A fork server for the command-line fuzz (``tests/test_fuzz_cli.py``): each case runs in a fresh child.

``python tests/fuzz_server.py MODULE...`` imports the command modules once, then reads one JSON
request per line on stdin::

    {"module": "simulations.basin_dim", "argv": ["--d", "1e12"], "cwd": "/tmp/case", "timeout": 20}

and answers one JSON line per request: ``{"rc", "signal", "timed_out", "seconds", "stdout", "stderr",
"memory_error"}``. Each case runs in a child forked from this process (``os.fork``), so a case costs
its own work and not the imports (~3 s for numba, torch and matplotlib), yet runs as the command
line would: its own working folder, stdout and stderr captured at the file-descriptor level (so
tracebacks the interpreter prints, C-level aborts and library warnings are all seen), an address-
space limit (``resource.RLIMIT_AS``: a size that slips past the guards becomes a ``MemoryError``
instead of taking the machine) and a wall-clock limit (the child is killed: a hang is reported as
one, not waited for).

The server itself never runs numerical code (no torch, numba or BLAS thread pool is started before
the fork: forking after an OpenMP parallel region can deadlock the child). An uncaught exception in
a child is printed as the interpreter prints it (``sys.excepthook``) and exits with status 1.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time

# memory a child may add to the server's address space (the guards must refuse anything larger)
CHILD_EXTRA_ADDRESS_SPACE = 3 * 2**30


def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _child(request: dict, out_path: str, err_path: str) -> None:
    """Run one command in this (forked) process and ``os._exit`` with its status."""
    code = 1
    try:
        fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        fd_err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        os.chdir(request["cwd"])
        for key, value in request.get("env", {}).items():
            os.environ[key] = value
        limit = _address_space() + CHILD_EXTRA_ADDRESS_SPACE
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a hang ends by SIGALRM (reported as a hang)
        signal.alarm(max(1, int(request.get("timeout", 30))))
        module = importlib.import_module(request["module"])
        sys.argv = [request.get("prog", request["module"])] + list(request["argv"])
        try:
            code = module.main(list(request["argv"]))
            code = 0 if code is None else int(code)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_case(request: dict) -> dict:
    """Fork, run ``request`` in the child, wait (at most its timeout + 5 s) and report."""
    scratch = request["scratch"]
    out_path, err_path = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        _child(request, out_path, err_path)
    deadline = t0 + float(request.get("timeout", 30)) + 5.0
    status = None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    with open(out_path, errors="replace") as fh:
        stdout = fh.read()
    with open(err_path, errors="replace") as fh:
        stderr = fh.read()
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return {
        "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": sig,
        "timed_out": sig in (signal.SIGALRM, signal.SIGKILL),
        "seconds": seconds,
        "stdout": stdout[-20000:],
        "stderr": stderr[-20000:],
        "memory_error": "MemoryError" in stderr or "can't allocate memory" in stderr,
    }


def serve(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        sys.stdout.write(json.dumps(run_case(request)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve(sys.argv[1:])
