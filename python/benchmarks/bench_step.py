"""Step time of adopt_rs.torch.ADOPT against torch-adopt (foreach and
single-tensor) and torch.optim.AdamW(fused=True), all in this process, and
against the core's own Adopt::step over the same parameter and gradient
buffers (adopt_rs._core.BenchAdopt, no Python in the loop).

Two cases: one parameter of 16M elements, and 1,000 parameters of 4K
elements. Each contender gets its own copy of the parameters and the same
fixed gradients; after a warm-up step (which creates the state) the
torch contenders are timed in turn, round after round, so that a busy spell
of a shared machine falls on all of them; each sample is the mean of a few
steps; reported are the medians over rounds, the median of the per-round
ratios and the ratio of the minima. Then adopt_rs's ADOPT.step() and the
core's Adopt::step alternate one step each (ABBA), for the per-step
overhead of the Python layer.

    python python/benchmarks/bench_step.py            # both cases
    python python/benchmarks/bench_step.py --rounds 31 --pairs 101 --case small
    python python/benchmarks/bench_step.py --dtype bfloat16 --case large

``--dtype bfloat16`` (or ``float16``) makes the parameters and gradients
half precision: adopt_rs steps them with f32 arithmetic and float32
moments, torch-adopt in the parameter's dtype with moments of that dtype,
fused AdamW with moments of that dtype; the core's BenchAdopt (float32
only) is left out.

This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch

import adopt_rs
from adopt_rs import _core
from adopt_rs.torch import ADOPT

warnings.filterwarnings("ignore", category=UserWarning)  # torch-adopt's deprecation notices

LR = 1e-3


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make(shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    grads = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    return params, grads


class Torch:
    """A torch optimizer over its own copy of the parameters."""

    def __init__(self, name, factory, params, grads):
        self.name = name
        self.params = [torch.nn.Parameter(p.clone()) for p in params]
        for p, g in zip(self.params, grads):
            p.grad = g  # shared, read-only for every contender
        self.opt = factory(self.params)
        self.opt.step()  # creates the state
        self.opt.step()  # a first full step: every page touched

    def run(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            self.opt.step()
        return (time.perf_counter() - start) / steps


class Core:
    """The core's Adopt::step over the same kind of buffers."""

    name = "core Adopt::step"

    def __init__(self, params, grads):
        self.params = [p.clone() for p in params]
        self.grads = grads
        self.core = _core.BenchAdopt(self.params, grads, LR)
        self.core.step(2)  # creates the state, and its first moments' pages

    def run(self, steps):
        return sum(self.core.step(steps)) / steps


def contenders(params, grads):
    import adopt  # torch-adopt

    yield Torch("adopt_rs ADOPT", lambda ps: ADOPT(ps, lr=LR), params, grads)
    yield Torch("torch-adopt foreach", lambda ps: adopt.ADOPT(ps, lr=LR, foreach=True), params, grads)
    yield Torch("torch-adopt single-tensor",
                lambda ps: adopt.ADOPT(ps, lr=LR, foreach=False), params, grads)
    yield Torch("AdamW(fused=True)", lambda ps: torch.optim.AdamW(ps, lr=LR, fused=True),
                params, grads)
    if params[0].dtype == torch.float32:
        yield Core(params, grads)


def bench(label, shapes, rounds, steps, pairs, dtype=torch.float32):
    params, grads = make(shapes, dtype=dtype)
    runners = list(contenders(params, grads))
    lanes = sum(p.numel() for p in params)
    print(f"\n{label}: {len(params)} parameter(s), {lanes:,} lanes of {dtype}")

    # The torch optimizers, round after round.
    torch_side = [r for r in runners if not isinstance(r, Core)]
    samples = {r.name: [] for r in torch_side}
    for _ in range(rounds):
        for r in torch_side:
            samples[r.name].append(r.run(steps))
    ours = samples["adopt_rs ADOPT"]
    print(f"{rounds} rounds of {steps} steps each")
    print(f"{'contender':28} {'median ms':>10} {'min ms':>8} {'ours faster by':>15} {'(minima)':>9}")
    for r in torch_side:
        s = samples[r.name]
        ratios = [x / o for x, o in zip(s, ours)]
        print(f"{r.name:28} {statistics.median(s) * 1e3:10.3f} {min(s) * 1e3:8.3f} "
              f"{statistics.median(ratios):14.2f}x {min(s) / min(ours):8.2f}x")

    # The Python step against the core's own step of the same buffers,
    # alternating one step each.
    ours_runner = torch_side[0]
    core = next((r for r in runners if isinstance(r, Core)), None)
    if core is None:
        return
    a, b = [], []
    for i in range(pairs):
        # ABBA: neither side always runs right after the other.
        if i % 2:
            b.append(core.run(1))
            a.append(ours_runner.run(1))
        else:
            a.append(ours_runner.run(1))
            b.append(core.run(1))
    ratios = [x / y for x, y in zip(a, b)]
    print(f"adopt_rs ADOPT.step() against core Adopt::step, {pairs} alternating (ABBA) pairs: "
          f"median {statistics.median(a) * 1e3:.3f} ms against {statistics.median(b) * 1e3:.3f} ms, "
          f"ratio median {statistics.median(ratios):.2f}x (minima {min(a) / min(b):.2f}x), "
          f"overhead median {statistics.median([x - y for x, y in zip(a, b)]) * 1e6:.0f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=["large", "small", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--pairs", type=int, default=41)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"adopt_rs {adopt_rs.__version__}, kernel {adopt_rs.kernel()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs: {cpu_name()}")
    if args.case in ("large", "both"):
        bench("one 16M-element parameter", [(16 * 1024 * 1024,)], args.rounds, 3, args.pairs, dtype)
    if args.case in ("small", "both"):
        bench("1,000 parameters of 4K elements", [(4096,)] * 1000, args.rounds, 5, args.pairs, dtype)


if __name__ == "__main__":
    main()
