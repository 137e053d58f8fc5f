"""adopt_rs.torch.ADOPT as ``optimizer_class`` of torch's
ZeroRedundancyOptimizer under DistributedDataParallel (gloo, two processes
on 127.0.0.1): each rank steps its shard of the parameters, and after 20
steps the parameters equal a one-process run bit for bit.

The one-process run computes each rank's gradient on that rank's batch and
averages them as DDP does (each halved, then summed: with two ranks every
order of these operations gives the same bits), then steps one ADOPT over
all parameters."""

import datetime
import os
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

WORLD = 2
STEPS = 20
HYPER = dict(lr=0.01, weight_decay=0.01, decouple=True)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 3),
    )


def batch(step, rank):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)


def loss_of(net, step, rank):
    x, y = batch(step, rank)
    return torch.nn.functional.mse_loss(net(x), y)


def worker(rank, store, out):
    # Deterministic kernels: one intra-op thread, as in the reference run.
    torch.set_num_threads(1)
    # gloo's pairs connect over the loopback interface (127.0.0.1).
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # The rendezvous is a file, not a TCPStore: a TCPStore lives in rank 0,
    # and a rank 0 that exits first takes it from under rank 1's teardown
    # (seen once in CI as rank 1 ending in SIGABRT).
    dist.init_process_group(
        "gloo", init_method="file://" + store, rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        from adopt_rs.torch import ADOPT

        ddp = DistributedDataParallel(model())
        opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=ADOPT, **HYPER)
        # Each rank's local ADOPT holds only its shard.
        assert isinstance(opt.optim, ADOPT)
        local = sum(len(g["params"]) for g in opt.optim.param_groups)
        total = len(list(ddp.parameters()))
        assert 0 < local < total, (local, total)
        for step in range(STEPS):
            opt.zero_grad()
            loss_of(ddp, step, rank).backward()
            opt.step()
        if rank == 0:
            torch.save([p.detach().clone() for p in ddp.module.parameters()], out)
        # Orderly teardown: no rank leaves while the other still talks to it,
        # and the objects holding the group go before the group does.
        dist.barrier()
        del opt, ddp
    finally:
        dist.destroy_process_group()


def one_process():
    from adopt_rs.torch import ADOPT

    torch.set_num_threads(1)
    net = model()
    opt = ADOPT(net.parameters(), **HYPER)
    for step in range(STEPS):
        grads = []
        for rank in range(WORLD):
            net.zero_grad()
            loss_of(net, step, rank).backward()
            grads.append([p.grad.clone() for p in net.parameters()])
        for p, *gs in zip(net.parameters(), *grads):
            p.grad = gs[0] * (1.0 / WORLD) + gs[1] * (1.0 / WORLD)
        opt.step()
    return [p.detach() for p in net.parameters()]


def test_zero_redundancy_optimizer_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "params.pt")
    store = str(tmp_path / "rendezvous")
    # Spawned processes import this module by name: make it importable.
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        try:
            mp.spawn(worker, args=(store, out), nprocs=WORLD, join=True)
        except mp.ProcessExitedException as crash:
            # A rank killed by a signal (not an assertion or exception in
            # the worker, which raises ProcessRaisedException) has been seen
            # once in about 150 local runs and once in CI, in gloo's
            # teardown. Run the whole exchange again, once, on a new
            # rendezvous; a second crash fails the test.
            warnings.warn(f"gloo run crashed ({crash}); running it again")
            store += "-again"
            mp.spawn(worker, args=(store, out), nprocs=WORLD, join=True)
    finally:
        sys.path.remove(os.path.dirname(__file__))
    sharded = torch.load(out, weights_only=True)
    reference = one_process()
    assert len(sharded) == len(reference)
    for i, (a, b) in enumerate(zip(sharded, reference)):
        assert torch.equal(a, b), f"parameter {i}: max difference {(a - b).abs().max().item()}"
    # The run moved the parameters (the comparison is not of initial values).
    assert not torch.equal(reference[0], model()[0].weight.detach())
