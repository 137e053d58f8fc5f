"""torch.amp.GradScaler("cpu"): the optimizer takes grad_scale and found_inf
(``_step_supports_amp_scaling``), unscales inside the step, and a step with
an overflowed gradient changes nothing; the result follows torch-adopt under
the same scaler, which unscales the gradients first."""

import pytest

torch = pytest.importorskip("torch")
adopt = pytest.importorskip("adopt")

from adopt_rs.torch import ADOPT  # noqa: E402
from conftest import assert_close, same_bits  # noqa: E402


def setup(cls, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = cls(model.parameters(), lr=0.01, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=3)
    return model, opt, scaler


def scaled_step(model, opt, scaler, t, overflow=False, unscale_first=False):
    g = torch.Generator().manual_seed(t)
    x, y = torch.randn(12, 5, generator=g), torch.randn(12, 1, generator=g)
    opt.zero_grad()
    scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
    if overflow:
        model[0].weight.grad[0, 0] = float("inf")
    if unscale_first:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    scaler.step(opt)
    scaler.update()


def test_supports_amp_scaling():
    assert ADOPT._step_supports_amp_scaling is True


@pytest.mark.parametrize("unscale_first", [False, True])
def test_grad_scaler_follows_torch_adopt(unscale_first):
    ours = setup(ADOPT)
    ref = setup(adopt.ADOPT, foreach=False)
    overflow_at = {3, 7}
    for t in range(10):
        for model, opt, scaler in (ours, ref):
            scaled_step(model, opt, scaler, t, t in overflow_at, unscale_first)
        assert ours[2].get_scale() == ref[2].get_scale()
        for a, b in zip(ours[0].parameters(), ref[0].parameters()):
            assert_close(a.detach().numpy(), b.detach().numpy(), 0.01, t + 1)
    w = ours[0][0].weight
    assert ours[1].state[w]["step"].item() == 10 - len(overflow_at)
    assert not hasattr(ours[1], "grad_scale") and not hasattr(ours[1], "found_inf")


def test_found_inf_changes_nothing():
    model, opt, scaler = setup(ADOPT)
    for t in range(3):
        scaled_step(model, opt, scaler, t)
    params = [p.detach().clone() for p in model.parameters()]
    state = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    scale = scaler.get_scale()
    scaled_step(model, opt, scaler, 3, overflow=True)
    assert scaler.get_scale() == scale / 2
    for p, before in zip(model.parameters(), params):
        assert same_bits(p, before)
        for k, v in state[p].items():
            assert same_bits(opt.state[p][k], v)


def test_unscaling_is_fused_and_exact():
    # A power-of-two scale: the fused step equals the step on unscaled
    # gradients bit for bit, and leaves the (scaled) gradients alone.
    p = torch.nn.Parameter(torch.linspace(-1, 1, 50))
    q = torch.nn.Parameter(p.detach().clone())
    o1, o2 = ADOPT([p], lr=0.1), ADOPT([q], lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        grad = torch.randn(50, generator=g)
        p.grad = grad * 1024.0
        o1.grad_scale, o1.found_inf = torch.tensor(1024.0), torch.tensor(0.0)
        o1.step()
        assert same_bits(p.grad, grad * 1024.0)
        q.grad = grad.clone()
        o2.step()
        assert same_bits(p, q)
