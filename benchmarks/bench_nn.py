"""Speed of one DP-SGD step: dpbasin's engine vs Opacus 1.6 (hooks, ghost clipping) vs a non-private step.

Not a test: prints samples/s and the ratios, all measured in ONE run on the same model, batch and
thread count (median over ``--steps`` timed steps after warm-up). Every step is complete: forward,
per-sample gradients, flat clipping (C = 1), Gaussian noise (σ = 1), division by the expected batch
size and an SGD update. Models: the mnist1d MLP (Linear only: dpbasin uses book-keeping) at two
widths, and the small GroupNorm CNN (dpbasin uses torch.func vmap; Opacus ghost clipping does not
apply to GroupNorm layers' norms in the same way and is reported where it runs).

Run:  python benchmarks/bench_nn.py [--steps 20] [--batch 256] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from simulations.nn.engine import bk_applicable, private_gradient, trainable_parameters
from simulations.nn.models import build_model, count_parameters

C, SIGMA = 1.0, 1.0


def _time_interleaved(steppers: dict, steps: int, warmup: int = 3) -> dict:
    """Median seconds per step of each stepper, timed round-robin so machine load hits all alike."""
    for step in steppers.values():
        for _ in range(warmup):
            step()
    times: dict = {k: [] for k in steppers}
    for _ in range(steps):
        for k, step in steppers.items():
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def nonprivate(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def ours(model, x, y, method):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    params = trainable_parameters(model)
    gen = torch.Generator().manual_seed(0)

    def step():
        pg = private_gradient(
            model, x, y, clip_norm=C, noise_std=SIGMA * C, expected_batch_size=x.shape[0], generator=gen, method=method
        )
        for k, p in params.items():
            p.grad = pg.grads[k]
        opt.step()

    return step


def opacus_hooks(model, x, y):
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gm = GradSampleModule(model, loss_reduction="mean")
    opt = DPOptimizer(
        torch.optim.SGD(gm.parameters(), lr=0.01),
        noise_multiplier=SIGMA,
        max_grad_norm=C,
        expected_batch_size=x.shape[0],
    )

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(gm(x), y).backward()
        opt.step()

    return step


def opacus_ghost(model, x, y):
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    gm = GradSampleModuleFastGradientClipping(model, max_grad_norm=C, use_ghost_clipping=True, loss_reduction="mean")
    opt = DPOptimizerFastGradientClipping(
        torch.optim.SGD(gm.parameters(), lr=0.01),
        noise_multiplier=SIGMA,
        max_grad_norm=C,
        expected_batch_size=x.shape[0],
    )
    crit = DPLossFastGradientClipping(gm, opt, nn.CrossEntropyLoss(), loss_reduction="mean")

    def step():
        opt.zero_grad(set_to_none=True)
        crit(gm(x), y).backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"median of {args.steps} round-robin steps; samples/s (higher is better)"
    )
    cases = [("mlp w=256 D=2", "mlp", 256, 2), ("mlp w=1024 D=2", "mlp", 1024, 2), ("cnn w=32 D=3", "cnn", 32, 3)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 40, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    for label, name, width, depth in cases:
        base = build_model(name, input_shape=(40,), num_classes=10, width=width, depth=depth, seed=0)
        runners = {
            "non-private": lambda m: nonprivate(m, x, y),
            "dpbasin auto": lambda m: ours(m, x, y, "auto"),
            "dpbasin vmap": lambda m: ours(m, x, y, "vmap"),
            "opacus hooks": lambda m: opacus_hooks(m, x, y),
            "opacus ghost": lambda m: opacus_ghost(m, x, y),
        }
        steppers = {}
        for key, make in runners.items():
            try:
                step = make(copy.deepcopy(base))
                step()
                steppers[key] = step
            except Exception as exc:  # report, don't hide: e.g. a layer Opacus ghost mode lacks
                print(f"  {label}: {key} failed: {type(exc).__name__}: {str(exc)[:100]}")
        secs = _time_interleaved(steppers, args.steps)
        rows = {k: (args.batch / secs[k] if k in secs else None) for k in runners}
        method = "bk" if bk_applicable(base) else "vmap"
        print(f"\n{label}  (d = {count_parameters(base):,}; dpbasin auto = {method})")
        for key, v in rows.items():
            print(f"  {key:<14} {v:12,.0f}" if v else f"  {key:<14} {'n/a':>12}")
        ours_v, hooks = rows["dpbasin auto"], rows["opacus hooks"]
        ghost, plain = rows["opacus ghost"], rows["non-private"]
        if ours_v and hooks:
            print(f"  dpbasin / opacus hooks  speed ratio {ours_v / hooks:5.2f}x  (goal >= 1.0)")
        if ours_v and ghost:
            print(f"  dpbasin / opacus ghost  speed ratio {ours_v / ghost:5.2f}x")
        if ours_v and plain:
            print(f"  dpbasin step time / non-private     {plain / ours_v:5.2f}x  (goal <= 2.0)")


if __name__ == "__main__":
    main()
