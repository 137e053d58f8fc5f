"""What real PyTorch training code does with an optimizer
(shared/PYTORCH-CLIENTS.md), one test per point."""

import copy
import gc
import io
import weakref

import pytest

torch = pytest.importorskip("torch")
adopt = pytest.importorskip("adopt")

from adopt_rs.torch import ADOPT  # noqa: E402
from conftest import same_bits  # noqa: E402


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 2))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=g), torch.randn(16, 2, generator=g)


def train_step(model, opt, seed):
    x, y = batch(seed)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def test_1_construction_from_a_generator_with_defaults():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    ref = adopt.ADOPT(mlp().parameters(), lr=0.01)
    assert len(opt.param_groups[0]["params"]) == 4
    g, r = opt.param_groups[0], ref.param_groups[0]
    assert {k: g[k] for k in r if k != "params"} == {k: r[k] for k in r if k != "params"}
    assert opt.defaults["betas"] == (0.9, 0.9999) and opt.defaults["eps"] == 1e-6
    assert ADOPT.__init__.__defaults__[:2] == adopt.ADOPT.__init__.__defaults__[:2]
    train_step(model, opt, 0)


def test_2_is_a_torch_optimizer_with_its_methods():
    opt = ADOPT(mlp().parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    for name in ("param_groups", "defaults", "state", "state_dict", "load_state_dict", "step",
                 "zero_grad", "add_param_group"):
        assert hasattr(opt, name)
    extra = torch.nn.Parameter(torch.ones(3))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["betas"] == (0.9, 0.9999)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1)  # raises for non-optimizers


def test_2b_groups_added_after_steps_join_the_next_step():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    train_step(model, opt, 0)
    extra = torch.nn.Parameter(torch.ones(3))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    x, y = batch(1)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        extra.grad = torch.ones(3)
        opt.step()
    assert opt.state[extra]["step"].item() == 2.0
    assert opt.state[model[0].weight]["step"].item() == 3.0
    assert (extra.detach() < 1).all()


def test_3_subclassable():
    class Lit(ADOPT):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            self.calls = 0

        def step(self, closure=None):
            self.calls += 1
            return super().step(closure=closure)

    model = mlp()
    opt = Lit(model.parameters(), lr=0.01)
    train_step(model, opt, 0)
    assert opt.calls == 1 and opt.state[model[0].weight]["step"].item() == 1.0


def test_4_closure_by_keyword_runs_under_enable_grad():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    x, y = batch()
    seen = []

    def closure():
        seen.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure=closure)
    assert seen == [True] and isinstance(loss, torch.Tensor)
    assert opt.state[model[0].weight]["step"].item() == 1.0
    assert opt.step() is None  # no closure: the same gradients again
    assert opt.state[model[0].weight]["step"].item() == 2.0


def test_5_fresh_grads_every_step_and_none_skipped():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    ref_model = mlp()
    ref = adopt.ADOPT(ref_model.parameters(), lr=0.01, foreach=False)
    for seed in range(4):
        for m, o in ((model, opt), (ref_model, ref)):
            train_step(m, o, seed)
            o.zero_grad(set_to_none=True)
            assert all(p.grad is None for p in m.parameters())
    # A step with no gradients at all changes nothing.
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(same_bits(a, b) for a, b in zip(before, model.parameters()))
    assert opt.state[model[0].weight]["step"].item() == 4.0
    # Only the bias has a gradient: only it moves and counts.
    model[2].bias.grad = torch.ones(2)
    opt.step()
    assert opt.state[model[2].bias]["step"].item() == 5.0
    assert opt.state[model[2].weight]["step"].item() == 4.0
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5) or a is model[2].bias


def test_6_group_keys_rewritten_between_steps():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5**e)
    assert opt.param_groups[0]["initial_lr"] == 0.01
    train_step(model, opt, 0)
    sched.step()
    w = model[0].weight
    before = w.detach().clone()
    w_m = opt.state[w]["exp_avg"].clone()
    train_step(model, opt, 1)
    # The move used lr = 0.005: p_new = p - 0.005 * m_new.
    moved = before - w.detach()
    assert torch.allclose(moved, 0.005 * opt.state[w]["exp_avg"], atol=1e-7)
    assert not torch.equal(w_m, opt.state[w]["exp_avg"])
    # SWA-style rewrites of other keys.
    opt.param_groups[0]["weight_decay"] = 0.5
    opt.param_groups[0]["decouple"] = True
    before = w.detach().clone()
    train_step(model, opt, 2)
    assert not torch.allclose(before - w.detach(), 0.005 * opt.state[w]["exp_avg"], atol=1e-7)


def test_7_step_is_a_plain_method_weakrefable_with_new_attributes():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    ref = weakref.ref(opt)
    assert ref() is opt
    opt.some_new_attribute = 1
    assert callable(opt.step.__func__)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)  # wraps step
    assert getattr(opt.step, "_wrapped_by_lr_sched", False)
    train_step(model, opt, 0)
    sched.step()  # no "scheduler.step() before optimizer.step()" warning needed
    assert opt._opt_called
    del sched, opt
    gc.collect()
    assert ref() is None  # no reference cycle keeps the optimizer alive


def test_8_state_dict_every_epoch_with_torch_save():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01, clip_lambda=lambda s: s**0.5)
    for epoch in range(3):
        train_step(model, opt, epoch)
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        st = saved["optimizer"]["state"][0]
        assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
        assert st["step"].item() == epoch + 1
        assert "clip_lambda" not in saved["optimizer"]["param_groups"][0]


def test_9_deepcopy_of_a_model_holding_its_optimizer():
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()
            self.opt = ADOPT(self.net.parameters(), lr=0.01)

    a = Holder()
    for seed in range(2):
        train_step(a.net, a.opt, seed)
    b = copy.deepcopy(a)
    assert b.opt.param_groups[0]["params"][0] is b.net[0].weight
    for seed in range(2, 5):
        train_step(b.net, b.opt, seed)
    assert a.opt.state[a.net[0].weight]["step"].item() == 2.0
    for seed in range(2, 5):
        train_step(a.net, a.opt, seed)
    for x, y in zip(a.net.parameters(), b.net.parameters()):
        assert same_bits(x, y)
    assert b.opt.state[b.net[0].weight]["step"].item() == 5.0


def test_10_state_reassigned_when_moving_devices():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    train_step(model, opt, 0)
    views = {p: dict(st) for p, st in opt.state.items()}
    for p in list(opt.state):
        opt.state[p] = {k: v.to("cpu") for k, v in opt.state[p].items()}  # same tensors
    train_step(model, opt, 1)
    for p, st in opt.state.items():
        assert all(st[k] is views[p][k] for k in st)  # no take-over was needed
        assert st["step"].item() == 2.0


def test_11_each_parameter_keeps_its_own_step_count():
    model = mlp()
    opt = ADOPT(model.parameters(), lr=0.01)
    train_step(model, opt, 0)
    model[0].weight.requires_grad_(False)  # frozen for two steps
    for seed in (1, 2):
        train_step(model, opt, seed)
    model[0].weight.requires_grad_(True)
    train_step(model, opt, 3)
    assert opt.state[model[0].weight]["step"].item() == 2.0
    assert opt.state[model[0].bias]["step"].item() == 4.0
    # A parameter's first step only records exp_avg_sq.
    late = torch.nn.Parameter(torch.ones(4))
    opt.add_param_group({"params": [late]})
    late.grad = torch.full((4,), 3.0)
    opt.step()
    assert torch.equal(late.detach(), torch.ones(4))
    assert torch.equal(opt.state[late]["exp_avg_sq"], torch.full((4,), 9.0))
    assert torch.equal(opt.state[late]["exp_avg"], torch.zeros(4))
