#!/usr/bin/env python3
"""PyTorch's fused CPU AdamW, the peer issue 3 compares against.

Same bytes per lane as an ADOPT step (reads p, g, m, v; writes p, m, v).
Prints the median Gelem/s over repeated steps for each size and thread
count. Needs only `torch` (CPU build is enough):

    python3 -m venv /tmp/tb && /tmp/tb/bin/pip install torch
    /tmp/tb/bin/python benches/torch_adamw.py            # every size
    /tmp/tb/bin/python benches/torch_adamw.py 1048576    # chosen sizes

Not run by CI (PyTorch is not a dependency of this crate); the numbers go
into BENCHMARKS.md beside `cargo bench --bench step`.
"""

import statistics
import sys
import time

import torch

SIZES = [4096, 65536, 1 << 20, 1 << 24]


def bench(n: int, threads: int) -> float:
    torch.set_num_threads(threads)
    p = torch.nn.Parameter(torch.randn(n, dtype=torch.float32))
    p.grad = torch.randn(n, dtype=torch.float32)
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, fused=True)
    for _ in range(3):  # state allocation and warm-up
        opt.step()
    # Enough steps for about 0.2 s per sample, at least 5.
    t0 = time.perf_counter()
    opt.step()
    one = time.perf_counter() - t0
    reps = max(5, int(0.2 / max(one, 1e-7)))
    samples = []
    for _ in range(15):
        t0 = time.perf_counter()
        for _ in range(reps):
            opt.step()
        samples.append((time.perf_counter() - t0) / reps)
    return n / statistics.median(samples) / 1e9


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    print("lanes,threads,Gelem/s")
    sizes = [int(a) for a in sys.argv[1:]] or SIZES
    for n in sizes:
        for threads in (1, 2):
            print(f"{n},{threads},{bench(n, threads):.3f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
