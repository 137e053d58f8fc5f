"""The golden trajectories recorded from torch-adopt (tests/golden), replayed
through both entry points: adopt_rs.adopt_step on NumPy arrays and
adopt_rs.torch.ADOPT on a tensor, each within the golden tolerance at every
step, NaN and infinity classes exact."""

import numpy as np
import pytest

import adopt_rs
from conftest import assert_close, hyper_of, load_golden


def test_numpy_step_replays_golden(golden):
    h = hyper_of(golden.meta)
    p = golden.p0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    step = 0
    for t, g in enumerate(golden.grads, start=1):
        step = adopt_rs.adopt_step(p, g, m, v, step, **h)
        assert step == t
        assert_close(p, golden.after[t - 1], h["lr"], t, f"{golden.name} params")
    t = len(golden.grads)
    assert_close(m, golden.exp_avg, h["lr"], t, f"{golden.name} exp_avg")
    assert_close(v, golden.exp_avg_sq, h["lr"], t, f"{golden.name} exp_avg_sq")


def test_torch_optimizer_replays_golden(golden):
    torch = pytest.importorskip("torch")
    from adopt_rs.torch import ADOPT

    h = hyper_of(golden.meta)
    complex_ = golden.meta["dtype"] == "c64"

    def tensor(lanes):
        t = torch.from_numpy(lanes.copy())
        return torch.view_as_complex(t.view(-1, 2)) if complex_ else t

    p = torch.nn.Parameter(tensor(golden.p0))
    opt = ADOPT([p], **h)
    for t, g in enumerate(golden.grads, start=1):
        p.grad = tensor(g)
        opt.step()
        got = torch.view_as_real(p.detach()).reshape(-1) if complex_ else p.detach()
        assert_close(got.numpy(), golden.after[t - 1], h["lr"], t, f"{golden.name} params")
    state = opt.state[p]
    assert state["step"].dtype == torch.float32 and state["step"].item() == len(golden.grads)
    assert state["exp_avg"].dtype == p.dtype and state["exp_avg"].shape == p.shape
    t = len(golden.grads)
    for key, want in (("exp_avg", golden.exp_avg), ("exp_avg_sq", golden.exp_avg_sq)):
        got = state[key]
        got = torch.view_as_real(got).reshape(-1) if complex_ else got
        assert_close(got.numpy(), want, h["lr"], t, f"{golden.name} {key}")


def test_golden_cases_are_there():
    # The fixture would silently run nothing if the files moved.
    assert len(load_golden("basic_f32").grads) > 0
