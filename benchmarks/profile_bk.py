"""Where dpbasin's book-keeping step spends its time beyond the non-private step (not a test).

For each model of ``bench_nn.py`` the per-sample kernels of ``simulations.nn.persample`` that the engine
calls are wrapped by wall-clock timers, then dpbasin and non-private steps alternate (``--rounds``
rounds, one warm-up, the order alternating from round to round). Per step: non-private total, dpbasin total, and inside dpbasin the time in

* ``norms`` — per-sample squared norms of conv and Linear weights (``conv_sq_norms``, ``linear_sq_norms``);
* ``norm_layers`` — GroupNorm/LayerNorm per-sample affine gradients in closed form;
* ``sums`` — the clipped weight sums after the backward (``conv_weight_sum``, ``linear_weight_sum``,
  kept-gradient sums);
* ``rest`` — everything else: forward, the δ-only backward, hooks, noise, optimizer step.

``held_mib`` = what book-keeping holds from the backward until the clipped sums: the (a, δ) pairs
handed to the sum kernels and the kept per-sample gradients (MiB per step at ``--batch``; memory that
a non-private backward frees layer by layer). The medians over rounds are written to ``--json``; ``render_bench.py --profile`` puts them beside the goals.

Run:  python benchmarks/profile_bk.py --threads 1 --models cnn,wrn --json benchmarks/results/profile_bk_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_nn

from simulations.nn import persample as ps

PARTS = {
    "norms": ("conv_sq_norms", "linear_sq_norms"),
    "norm_layers": ("group_norm_per_sample", "layer_norm_per_sample"),
    "sums": ("conv_weight_sum", "linear_weight_sum"),
}
CLOCK: dict[str, float] = {}
HELD: list[int] = []  # bytes held until the sums, this step


def _timed(part: str, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            CLOCK[part] = CLOCK.get(part, 0.0) + time.perf_counter() - t

    return wrapper


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _held_pair(fn):
    def wrapper(a, d, *args, **kwargs):
        HELD.append(_bytes(a) + _bytes(d))
        return fn(a, d, *args, **kwargs)

    return wrapper


def _held_kept(fn):
    def wrapper(self, weights):
        HELD.append(sum(_bytes(g) for _, _, g in self.blocks))
        return fn(self, weights)

    return wrapper


def install() -> None:
    for name in ("conv_weight_sum", "linear_weight_sum"):
        setattr(ps, name, _held_pair(getattr(ps, name)))
    for part, names in PARTS.items():
        for name in names:
            setattr(ps, name, _timed(part, getattr(ps, name)))
    ps.KeptGradients.weighted_sum = _timed("sums", _held_kept(ps.KeptGradients.weighted_sum))


def profile(key: str, batch: int, rounds: int) -> dict:
    model = bench_nn._model(key, "cpu")
    x, y = bench_nn._batch(key, batch, "cpu")
    steps = {m: bench_nn.make_step(m, copy.deepcopy(model), x, y) for m in ("nonprivate", "dpbasin")}
    for step in steps.values():
        step()
    rows: dict[str, list[float]] = {k: [] for k in ("nonprivate", "dpbasin", *PARTS)}
    for r in range(rounds):
        for method in ("nonprivate", "dpbasin") if r % 2 == 0 else ("dpbasin", "nonprivate"):  # alternate order
            CLOCK.clear()
            HELD.clear()
            t = time.perf_counter()
            steps[method]()
            rows[method].append(time.perf_counter() - t)
            if method == "dpbasin":
                for part in PARTS:
                    rows[part].append(CLOCK.get(part, 0.0))
    ms = {k: 1e3 * statistics.median(v) for k, v in rows.items()}
    ms["rest"] = ms["dpbasin"] - sum(ms[p] for p in PARTS)
    return {"batch": batch, "rounds": rounds, "median_ms": ms, "held_mib": sum(HELD) / 2**20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cnn,wrn")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    install()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "models": {}}
    for key in args.models.split(","):
        rec = profile(key, args.batch, args.rounds)
        out["models"][key] = rec
        print(key, {k: round(v, 2) for k, v in rec["median_ms"].items()}, flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
