#!/usr/bin/env python3
"""PyTorch's fused CPU AdamW against `adopt`, interleaved in one process.

Both move the same bytes per lane (read p, g, m, v; write p, m, v) and do
the same square root and divide per lane. Each sample times a batch of
torch steps, then a batch of `adopt` steps (through the C ABI's
`adopt_step_f32`, decoupled decay as AdamW's), so a noisy host disturbs
both alike; the script prints medians and the median of the per-sample
ratios. Without the library it times torch alone.

    cargo rustc --release --features capi --lib --crate-type cdylib
    OMP_WAIT_POLICY=PASSIVE RAYON_NUM_THREADS=2 \\
        python3 benches/torch_adamw.py --threads 2 1048576 16777216

`--threads N` sets both torch's threads and (through RAYON_NUM_THREADS,
which must match) the rayon pool's. OMP_WAIT_POLICY=PASSIVE keeps torch's
idle OpenMP threads from spinning while `adopt` runs. Needs `torch` and
`numpy`; not run by CI (PyTorch is not a dependency of this crate).
"""

import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "python"))


def torch_stepper(n: int):
    p = torch.nn.Parameter(torch.randn(n, dtype=torch.float32))
    p.grad = torch.randn(n, dtype=torch.float32)
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, fused=True)
    for _ in range(3):  # state allocation and warm-up
        opt.step()
    return opt.step


def adopt_stepper(lib, n: int):
    import adopt_ctypes

    rng = np.random.default_rng(0)
    params = rng.standard_normal(n, dtype=np.float32)
    grads = rng.standard_normal(n, dtype=np.float32)
    exp_avg = np.zeros(n, dtype=np.float32)
    exp_avg_sq = np.zeros(n, dtype=np.float32)
    step = ctypes.c_uint64(0)
    hyper = lib.adopt_hyper_default()
    hyper.weight_decay = 0.01
    hyper.decouple = 1
    p, _ = adopt_ctypes.f32_buffer(params, True)
    g, _ = adopt_ctypes.f32_buffer(grads, False)
    m, _ = adopt_ctypes.f32_buffer(exp_avg, True)
    v, _ = adopt_ctypes.f32_buffer(exp_avg_sq, True)
    buffers = (params, grads, exp_avg, exp_avg_sq)  # alive as long as `one`

    def one():
        assert buffers
        status = lib.adopt_step_f32(
            p, n, g, n, m, n, v, n, ctypes.byref(step), ctypes.byref(hyper)
        )
        if status != 0:
            raise RuntimeError(f"adopt status {status}")
        step.value = 1  # keep the constants of an early step

    for _ in range(3):
        one()
    return one


def timed(f, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[4096, 65536, 1 << 20, 1 << 24])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument(
        "--lib",
        default=str(ROOT / "target" / "release" / "libadopt.so"),
        help="the adopt shared library (cargo rustc --release --features capi --lib --crate-type cdylib)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lib = None
    if Path(args.lib).exists():
        import adopt_ctypes

        rayon = os.environ.get("RAYON_NUM_THREADS")
        if rayon != str(args.threads):
            sys.exit(f"set RAYON_NUM_THREADS={args.threads} to match --threads")
        lib = adopt_ctypes.load(args.lib)
    print(f"torch {torch.__version__}, {args.threads} threads; adopt: {args.lib if lib else 'not found'}")
    print(f"{'lanes':>10} {'torch Gel/s':>12} {'adopt Gel/s':>12} {'adopt/torch':>12}")
    for n in args.sizes:
        t = torch_stepper(n)
        a = adopt_stepper(lib, n) if lib else None
        # About 0.1 s per sample and side.
        reps = max(3, int(0.1 / max(timed(t, 3), 1e-7)))
        tt, at, ratios = [], [], []
        for _ in range(args.samples):
            x = timed(t, reps)
            tt.append(x)
            if a:
                y = timed(a, reps)
                at.append(y)
                ratios.append(x / y)
        trate = n / statistics.median(tt) / 1e9
        if a:
            arate = n / statistics.median(at) / 1e9
            print(f"{n:>10} {trate:>12.3f} {arate:>12.3f} {statistics.median(ratios):>12.2f}")
        else:
            print(f"{n:>10} {trate:>12.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
