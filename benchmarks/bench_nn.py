"""Speed and memory of one DP-SGD step: dpbasin's engine vs Opacus 1.6 (hooks, ghost clipping) vs a non-private step.

Not a test. Every step is complete: forward, per-sample gradients (none for the non-private step),
flat clipping at C = 1, Gaussian noise σ = 1 on the sum, division by the batch size and an SGD
update. All methods of a model share its weights, batch and thread count.

* **Time** — samples/s = batch / (median seconds per step) over round-robin steps in ONE process
  (every round runs each method once, so machine load hits all alike), after one warm-up round; the
  number of timed rounds is ``--steps``, capped so a model takes about ``--seconds`` (at least 3).
* **Memory** — a fresh subprocess per (model, method) builds the model and batch, records its own
  resident set size (RSS) as baseline, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``,
  value 5), runs two steps and reports peak RSS − baseline from ``/proc/self/status`` (VmHWM): all
  memory the step itself needs (activations, gradients, per-sample buffers), measured by the kernel,
  nothing left over from other methods. Where the counter cannot be reset, the lifetime peak
  ``ru_maxrss`` − baseline is used and the JSON says so. On CUDA the subprocess reports
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` instead. Runs whose
  per-sample gradients alone would exceed ``--mem-limit-gb`` (Opacus hooks on the WideResNets at
  batch 1 024) are skipped and reported as such.

Models (``--models``, comma separated): ``mlp`` = MLP-1024 (mnist1d shape 40, 2 hidden layers of 1 024),
``cnn`` = the GroupNorm CNN (mnist1d shape 40, width 32, depth 3, 1-D convolutions), ``dpcnn`` = the tanh
CNN of Papernot et al. (1×28×28), ``wrn`` = WideResNet-16-4 with GroupNorm on 3×16×16 inputs (CPU-feasible
size), ``wrn_ws`` = the same with weight-standardised convolutions (De et al.'s DP WideResNet; Opacus
has no grad sampler for it and falls back to functorch). ``all`` = every one.

Run:  python benchmarks/bench_nn.py --threads 1 --json results/bench_nn.json
      python benchmarks/bench_nn.py --models mlp --compare-engine /tmp/old_engine.py   # A/B two engines
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulations.nn.engine import private_gradient, trainable_parameters
from simulations.nn.models import build_model, count_parameters

C, SIGMA, LR = 1.0, 1.0, 0.01
METHODS = ("nonprivate", "dpbasin", "opacus_hooks", "opacus_ghost")
MODELS = {
    # key: (build_model name, input shape, width, depth, description)
    "mlp": ("mlp", (40,), 1024, 2, "MLP-1024: 40 → 1024 → 1024 → 10, ReLU"),
    "cnn": ("cnn", (40,), 32, 3, "GroupNorm CNN, 1-D, width 32, depth 3, input 40"),
    "dpcnn": ("dpcnn", (1, 28, 28), 1, 1, "tanh CNN of Papernot et al. 2021, input 1×28×28"),
    "wrn": ("wrn", (3, 16, 16), 4, 16, "WRN-16-4 GroupNorm, input 3×16×16"),
    "wrn_ws": ("wrn_ws", (3, 16, 16), 4, 16, "WRN-16-4 GroupNorm + weight standardisation, input 3×16×16"),
}
DEFAULT_MODELS = "mlp,cnn,dpcnn,wrn"


def _batch(key: str, batch: int, device: str):
    _, shape, *_ = MODELS[key]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    return x, y


def _model(key: str, device: str) -> nn.Module:
    name, shape, width, depth, _ = MODELS[key]
    return build_model(name, input_shape=shape, num_classes=10, width=width, depth=depth, seed=0).to(device)


# ---------------------------------------------------------------------------------------------
# one complete step per method


def nonprivate(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def dpbasin(model, x, y, engine=None):
    fn = private_gradient if engine is None else engine.private_gradient
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    params = trainable_parameters(model)
    gen = torch.Generator(device=x.device).manual_seed(0)

    def step():
        pg = fn(model, x, y, clip_norm=C, noise_std=SIGMA * C, expected_batch_size=x.shape[0], generator=gen)
        for k, p in params.items():
            p.grad = pg.grads[k]
        opt.step()

    return step


def _opacus(model, x, y, mode):
    """``PrivacyEngine.make_private`` (Opacus 1.6): ``grad_sample_mode`` "hooks" (per-sample gradients)
    or "ghost" (ghost / fast gradient clipping, two backward passes through ``DPLossFastGradientClipping``)."""
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=x.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "secure RNG turned off": fine for timing
        engine = PrivacyEngine(accountant="rdp")
        kw = dict(module=model, optimizer=opt, data_loader=loader, noise_multiplier=SIGMA, max_grad_norm=C)
        if mode == "ghost":
            gm, opt, crit, _ = engine.make_private(
                **kw, criterion=nn.CrossEntropyLoss(), poisson_sampling=False, grad_sample_mode="ghost"
            )
        else:
            gm, opt, _ = engine.make_private(**kw, poisson_sampling=False, grad_sample_mode="hooks")
            crit = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        crit(gm(x), y).backward()
        opt.step()

    return step


def make_step(method: str, model, x, y, engine=None):
    if method == "nonprivate":
        return nonprivate(model, x, y)
    if method == "dpbasin":
        return dpbasin(model, x, y, engine)
    if method == "opacus_hooks":
        return _opacus(model, x, y, "hooks")
    if method == "opacus_ghost":
        return _opacus(model, x, y, "ghost")
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# time (one process, interleaved)


def time_interleaved(steppers: dict, *, steps: int, seconds: float, device: str) -> tuple[dict, int]:
    """Median seconds per step of each stepper: one warm-up round, then round-robin rounds."""
    t0 = time.perf_counter()
    for step in steppers.values():
        step()
    _sync(device)
    rounds = max(3, min(steps, int(seconds / max(time.perf_counter() - t0, 1e-9))))
    times: dict = {k: [] for k in steppers}
    for _ in range(rounds):
        for k, step in steppers.items():
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}, rounds


# ---------------------------------------------------------------------------------------------
# memory (a fresh subprocess per model and method)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(key: str, method: str, batch: int, device: str, threads: int | None) -> dict:
    """Peak memory of two steps over this process's own baseline (module docstring), in MiB."""
    if threads:
        torch.set_num_threads(threads)
    model = _model(key, device)
    x, y = _batch(key, batch, device)
    step = make_step(method, model, x, y)
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20, "how": "cuda.max_memory_allocated"}
    base_kb = _status_kb("VmRSS")
    how = "VmHWM after clear_refs=5"
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        how = "ru_maxrss (lifetime peak; clear_refs unavailable)"
    for _ in range(2):
        step()
    peak_kb = _status_kb("VmHWM") if how.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": (peak_kb - base_kb) / 1024, "how": how}


def measure_memory(key: str, method: str, batch: int, device: str, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", key, method, str(batch), "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_mb": None, "error": tail[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def _machine(device: str) -> dict:
    """What the numbers were measured on: CPU model, logical cores, load average at the start, OS, Python."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def run_model(key: str, args, engine=None) -> dict:
    _, shape, _, _, description = MODELS[key]
    base = _model(key, args.device)
    x, y = _batch(key, args.batch, args.device)
    rec: dict = {
        "description": description,
        "input_shape": list(shape),
        "parameters": count_parameters(base),
        "batch": args.batch,
        "errors": {},
    }
    steppers = {}
    for method in METHODS + (("dpbasin_compare",) if engine is not None else ()):
        try:
            m = copy.deepcopy(base)
            step = make_step("dpbasin", m, x, y, engine) if method == "dpbasin_compare" else make_step(method, m, x, y)
            step()
            steppers[method] = step
        except Exception as exc:  # report, don't hide: e.g. a layer an Opacus mode lacks
            rec["errors"][method] = f"{type(exc).__name__}: {str(exc)[:160]}"
    secs, rounds = time_interleaved(steppers, steps=args.steps, seconds=args.seconds, device=args.device)
    rec["timed_rounds"] = rounds
    rec["samples_per_s"] = {m: (args.batch / secs[m] if m in secs else None) for m in steppers | rec["errors"]}
    probe = private_gradient(
        base, x[:2], y[:2], clip_norm=C, noise_std=0.0, expected_batch_size=2, generator=torch.Generator(x.device)
    )
    rec["dpbasin_per_sample_method"] = probe.method
    sps = rec["samples_per_s"]
    rec["ratios"] = {
        "dp_over_nonprivate": _ratio(sps.get("nonprivate"), sps.get("dpbasin")),  # step time ratio
        "speedup_vs_opacus_hooks": _ratio(sps.get("dpbasin"), sps.get("opacus_hooks")),
        "speedup_vs_opacus_ghost": _ratio(sps.get("dpbasin"), sps.get("opacus_ghost")),
    }
    if engine is not None:
        rec["ratios"]["dpbasin_over_compare_engine_time"] = _ratio(sps.get("dpbasin_compare"), sps.get("dpbasin"))
    if args.mem_batch:
        mem: dict = {"batch": args.mem_batch}
        d = rec["parameters"]
        for method in METHODS:
            est_gb = 4 * d * args.mem_batch / 2**30 if method == "opacus_hooks" else 0.0
            if est_gb > args.mem_limit_gb:
                mem[method] = None
                rec["errors"][f"memory_{method}"] = f"skipped: per-sample gradients alone need {est_gb:.1f} GiB"
                continue
            out = measure_memory(key, method, args.mem_batch, args.device, args.threads)
            mem[method] = out.get("peak_mb")
            mem["how"] = out.get("how", mem.get("how"))
            if out.get("error"):
                rec["errors"][f"memory_{method}"] = out["error"]
        rec["peak_memory_mb"] = mem
        rec["ratios"]["memory_dp_over_nonprivate"] = _ratio(mem.get("dpbasin"), mem.get("nonprivate"))
        rec["ratios"]["memory_opacus_ghost_over_nonprivate"] = _ratio(mem.get("opacus_ghost"), mem.get("nonprivate"))
    return rec


def _table(results: dict) -> str:
    rows = [
        f"{'model':<8} {'d':>10} {'method':<8} "
        f"{'np/s':>8} {'dp/s':>8} {'hooks/s':>8} {'ghost/s':>8} {'dp/np':>6} {'vs hooks':>8} {'vs ghost':>8} "
        f"{'mem np':>8} {'mem dp':>8} {'mem ghost':>9} {'mem dp/np':>9}"
    ]

    def f(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) and not math.isnan(v) else "n/a"

    for key, r in results.items():
        s, q, m = r["samples_per_s"], r["ratios"], r.get("peak_memory_mb", {})
        rows.append(
            f"{key:<8} {r['parameters']:>10,} {r['dpbasin_per_sample_method']:<8} "
            f"{f(s.get('nonprivate'), '8,.0f')} {f(s.get('dpbasin'), '8,.0f')} {f(s.get('opacus_hooks'), '8,.0f')} "
            f"{f(s.get('opacus_ghost'), '8,.0f')} {f(q.get('dp_over_nonprivate'), '6.2f')} "
            f"{f(q.get('speedup_vs_opacus_hooks'), '8.2f')} {f(q.get('speedup_vs_opacus_ghost'), '8.2f')} "
            f"{f(m.get('nonprivate'), '8.0f')} {f(m.get('dpbasin'), '8.0f')} {f(m.get('opacus_ghost'), '9.0f')} "
            f"{f(q.get('memory_dp_over_nonprivate'), '9.2f')}"
        )
        for k, v in r["errors"].items():
            rows.append(f"{'':<8} {k}: {v}")
    return "\n".join(rows)


def _load_engine(path: str):
    spec = importlib.util.spec_from_file_location("compare_engine", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--compare-engine must be a Python file, got {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_engine"] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated from {', '.join(MODELS)}, or all")
    ap.add_argument("--batch", type=int, default=256, help="batch size of the timed steps")
    ap.add_argument("--steps", type=int, default=20, help="most timed rounds per model")
    ap.add_argument("--seconds", type=float, default=20.0, help="time budget per model (rounds capped to fit; >= 3)")
    ap.add_argument("--mem-batch", type=int, default=1024, help="batch size of the memory runs (0 = none)")
    ap.add_argument("--mem-limit-gb", type=float, default=4.0, help="skip memory runs needing more (estimated)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--compare-engine", default=None, help="also time private_gradient from this engine file")
    ap.add_argument("--memory-child", nargs=3, metavar=("MODEL", "METHOD", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import warnings

    # Opacus' hooks warn on every model whose input does not require grad; it does not affect results
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    if args.memory_child:
        key, method, batch = args.memory_child
        print(json.dumps(memory_child(key, method, int(batch), args.device, args.threads)))
        return 0
    keys = list(MODELS) if args.models == "all" else [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        ap.error(f"--models must be from {', '.join(MODELS)} or all, got {unknown[0]!r}")
    if args.batch < 1 or args.mem_batch < 0 or args.steps < 1:
        ap.error(
            f"--batch and --steps must be >= 1 and --mem-batch >= 0, got {args.batch}, {args.steps}, {args.mem_batch}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = _load_engine(args.compare_engine) if args.compare_engine else None
    import opacus

    config = {
        "command": " ".join(["python benchmarks/bench_nn.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": _machine(args.device),
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "batch": args.batch,
        "mem_batch": args.mem_batch,
        "clip_norm": C,
        "noise_multiplier": SIGMA,
        "time": "median of interleaved rounds after one warm-up round, one process",
        "memory": "fresh subprocess per (model, method): peak RSS over its own post-setup RSS (VmHWM after "
        "clear_refs=5), two steps; CUDA: max_memory_allocated",
    }
    print(
        f"torch {config['torch']}, opacus {config['opacus']}, threads {config['threads']}, {args.device}, "
        f"batch {args.batch} (memory: batch {args.mem_batch}); samples/s (higher is better), memory MiB over baseline"
    )
    results = {}
    for key in keys:
        results[key] = run_model(key, args, engine)
        print(_table({key: results[key]}).splitlines()[-1 - len(results[key]["errors"])], flush=True)
    print()
    print(_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": config, "models": results}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
