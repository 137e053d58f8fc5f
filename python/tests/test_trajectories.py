"""adopt_rs.torch.ADOPT against torch-adopt's ADOPT running side by side on
the same gradients: several groups, learning-rate schedules, both decay
modes, complex parameters, maximize, clip none / constant / callable,
parameters whose gradients come and go. Every step stays within the golden
tolerance (|x - r| <= 1e-6|r| + 1e-4 lr t, NaN/inf classes exact)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
adopt = pytest.importorskip("adopt")  # torch-adopt

from adopt_rs.torch import ADOPT  # noqa: E402
from conftest import assert_close  # noqa: E402

SHAPES = [(7, 5), (33,), (4, 4, 3), (1,), ()]


def make_params(seed, complex_=False):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    if complex_:
        params.append(torch.randn(6, 2, generator=g, dtype=torch.complex64))
    return params


def grads_for(params, steps, seed, missing=()):
    """A fixed gradient per parameter and step (None where listed in
    ``missing`` as (step, index))."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        row = []
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=g, dtype=p.dtype) * (1 + t % 3)
            row.append(None if (t, i) in missing else grad)
        out.append(row)
    return out


def run_pair(groups_of, opt_kwargs, steps=12, seed=0, complex_=False, missing=(),
             schedule=None, foreach=False, check_each_step=True):
    """Runs ours and torch-adopt from the same parameters on the same
    gradients and compares the parameters after every step."""
    init = make_params(seed, complex_)
    grads = grads_for(init, steps, seed + 1, missing)
    runs = []
    for cls, extra in ((ADOPT, {}), (adopt.ADOPT, {"foreach": foreach})):
        params = [torch.nn.Parameter(p.clone()) for p in init]
        opt = cls(groups_of(params), **opt_kwargs, **extra)
        sched = schedule(opt) if schedule else None
        runs.append((params, opt, sched))
    lrs = [g["lr"] for g in runs[1][1].param_groups]
    for t in range(1, steps + 1):
        for params, opt, sched in runs:
            for p, g in zip(params, grads[t - 1]):
                p.grad = None if g is None else g.clone()
            opt.step()
            if sched is not None:
                sched.step()
        if check_each_step or t == steps:
            lr = max(lrs)
            for i, (a, b) in enumerate(zip(runs[0][0], runs[1][0])):
                a = torch.view_as_real(a.detach()) if a.is_complex() else a.detach()
                b = torch.view_as_real(b.detach()) if b.is_complex() else b.detach()
                assert_close(a.numpy(), b.numpy(), lr, t, f"param {i}")
    return runs


def one_group(params):
    return params


def three_groups(params):
    return [
        {"params": params[:2]},
        {"params": params[2:4], "lr": 0.03, "weight_decay": 0.1},
        {"params": params[4:], "lr": 0.002, "decouple": True, "weight_decay": 0.5,
         "maximize": True, "betas": (0.5, 0.99)},
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"lr": 0.01, "weight_decay": 0.05},
        {"lr": 0.01, "weight_decay": 0.05, "decouple": True},
        {"lr": 0.02, "maximize": True},
        {"lr": 0.02, "clip_lambda": None},
        {"lr": 0.02, "clip_lambda": lambda step: 0.3},
        {"lr": 0.02, "clip_lambda": lambda step: 0.1 + math.log1p(step)},
        {"lr": 0.02, "betas": (0.3, 0.95), "eps": 1e-3},
        {"lr": 0.05, "betas": (0.0, 0.5)},
    ],
    ids=["defaults", "l2", "decoupled", "maximize", "no_clip", "constant_clip",
         "callable_clip", "low_beta1", "beta1_zero"],
)
@pytest.mark.parametrize("groups_of", [one_group, three_groups], ids=["one_group", "three_groups"])
def test_matches_torch_adopt(kwargs, groups_of):
    run_pair(groups_of, kwargs, complex_=True)


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_torch_adopt_foreach_and_single_tensor(foreach):
    run_pair(three_groups, {"lr": 0.01}, foreach=foreach, complex_=True)


def test_lr_schedule():
    # LambdaLR rewrites group["lr"] between steps and adds "initial_lr".
    runs = run_pair(
        three_groups,
        {"lr": 0.05, "weight_decay": 0.01, "decouple": True},
        schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.9**e),
        steps=15,
    )
    ours = runs[0][1]
    assert all("initial_lr" in g for g in ours.param_groups)
    assert ours.param_groups[1]["lr"] == pytest.approx(0.03 * 0.9**15)


def test_manual_lr_and_hyperparameter_changes_take_effect():
    def schedule(opt):
        class Rewrite:
            step_no = 0

            def step(self):
                self.step_no += 1
                for g in opt.param_groups:
                    g["lr"] = 0.02 / self.step_no
                    g["betas"] = (0.9, 0.99 if self.step_no > 4 else 0.999)
                    g["weight_decay"] = 0.1 if self.step_no > 6 else 0.0
        return Rewrite()

    run_pair(three_groups, {"lr": 0.02}, schedule=schedule, steps=10)


def test_parameters_with_own_step_counts():
    # Gradients come and go: each parameter keeps its own step count, its
    # first step only records exp_avg_sq, and a callable clip is evaluated at
    # each parameter's own count (several counts in one group at once).
    missing = {(0, 1), (1, 1), (2, 1), (0, 3), (4, 0), (5, 0), (5, 2), (7, 4)}
    runs = run_pair(
        one_group, {"lr": 0.02, "clip_lambda": lambda s: 0.2 * s}, missing=missing,
        steps=10, complex_=True,
    )
    ours, ref = runs[0][1], runs[1][1]
    for p, q in zip(runs[0][0], runs[1][0]):
        assert ours.state[p]["step"].item() == ref.state[q]["step"].item()
    counts = {ours.state[p]["step"].item() for p in runs[0][0]}
    assert len(counts) > 2


def test_first_step_only_initialises_exp_avg_sq():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = ADOPT([p], lr=0.1)
    p.grad = torch.tensor([0.5, -1.0, 2.0])
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0, 3.0]))
    st = opt.state[p]
    assert torch.equal(st["exp_avg"], torch.zeros(3))
    assert torch.equal(st["exp_avg_sq"], torch.tensor([0.25, 1.0, 4.0]))
    assert st["step"].item() == 1.0 and st["step"].dtype == torch.float32


def test_clip_lambda_is_called_once_per_group_and_step_count():
    calls = []

    def clip(step):
        calls.append(step)
        return step**0.25

    params = [torch.nn.Parameter(torch.randn(100)) for _ in range(6)]
    opt = ADOPT([{"params": params[:3]}, {"params": params[3:], "lr": 0.01}], clip_lambda=clip)
    for t in range(4):
        for p in params:
            p.grad = torch.randn(100)
        calls.clear()
        opt.step()
        # Never on a first step; once per group after that, with the steps
        # already taken as a float.
        assert calls == ([] if t == 0 else [float(t), float(t)])


def test_clip_lambda_may_return_a_tensor():
    run_pair(one_group, {"lr": 0.02, "clip_lambda": lambda s: torch.tensor(s) ** 0.5})


def test_large_parameter_steps_in_parallel_like_torch_adopt():
    # 300K lanes: the core splits the step across the thread pool.
    g = torch.Generator().manual_seed(3)
    init = torch.randn(300_000, generator=g)
    grads = [torch.randn(300_000, generator=g) for _ in range(4)]
    ours, ref = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    o1, o2 = ADOPT([ours], lr=0.01), adopt.ADOPT([ref], lr=0.01, foreach=False)
    for t, grad in enumerate(grads, start=1):
        ours.grad, ref.grad = grad.clone(), grad.clone()
        o1.step()
        o2.step()
        assert_close(ours.detach().numpy(), ref.detach().numpy(), 0.01, t)
    assert np.isfinite(ours.detach().numpy()).all()
