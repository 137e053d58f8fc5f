"""bfloat16 and float16 parameters: stepped in place with f32 arithmetic,
results rounded to nearest, ties to even (torch's rounding).

The reference is a bit-exact model, not torch-adopt (which computes in the
parameter's dtype): per step, the half parameter is widened to float32,
stepped by ``adopt_rs.adopt_step`` (the core's f32 step, itself held to
torch-adopt's golden trajectories by test_golden) with float32 moments,
and rounded back with torch's ``.to(dtype)``. With
``moments_dtype=torch.bfloat16`` the model's moments are rounded to
bfloat16 after each step as well. Parameters, moments and step counts are
compared bit for bit after every step.

State dicts: the moments of half parameters are float32 by default, which
torch's ``load_state_dict`` casts to the parameter's dtype when torch-adopt
loads them (torch-adopt keeps moments in the parameter's dtype); loading
torch-adopt's half moments into adopt_rs widens them exactly; adopt_rs to
adopt_rs keeps the float32 moments bit for bit."""

import copy

import numpy as np
import pytest

import adopt_rs
from conftest import same_bits

torch = pytest.importorskip("torch")
adopt = pytest.importorskip("adopt")  # torch-adopt

from adopt_rs.torch import ADOPT  # noqa: E402

SHAPES = [(7, 5), (33,), (1,), (0,), (130,)]
HALVES = [torch.bfloat16, torch.float16]


class Model:
    """The f32-arithmetic model of one half-precision parameter."""

    def __init__(self, p, moments=torch.float32, **hyper):
        self.p = p.detach().clone()
        n = p.numel()
        self.m = np.zeros(n, np.float32)
        self.v = np.zeros(n, np.float32)
        self.t = 0
        self.moments = moments
        self.hyper = hyper

    def step(self, g):
        p32 = self.p.float().numpy().ravel().copy()
        g32 = g.float().numpy().ravel().copy()
        self.t = adopt_rs.adopt_step(p32, g32, self.m, self.v, self.t, **self.hyper)
        self.p = torch.from_numpy(p32).to(self.p.dtype).view(self.p.shape)
        if self.moments != torch.float32:
            for a in (self.m, self.v):
                a[:] = torch.from_numpy(a).to(self.moments).float().numpy()


def grads_of(params, steps, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        [(torch.randn(p.shape, generator=g) * (1 + t % 3)).to(p.dtype) for p in params]
        for t in range(steps)
    ]


def check_against_models(opt, params, models, t):
    for i, (p, model) in enumerate(zip(params, models)):
        st = opt.state[p]
        assert same_bits(p.detach(), model.p), f"param {i} ({p.dtype}) differs at step {t}"
        assert st["exp_avg"].dtype == model.moments
        assert same_bits(st["exp_avg"].float().numpy().ravel(), model.m), f"exp_avg {i}, step {t}"
        assert same_bits(st["exp_avg_sq"].float().numpy().ravel(), model.v), f"exp_avg_sq {i}"
        assert st["step"].dtype == torch.float32 and st["step"].shape == ()
        assert float(st["step"]) == model.t


@pytest.mark.parametrize("dtype", HALVES, ids=["bf16", "f16"])
@pytest.mark.parametrize(
    "hyper",
    [
        dict(lr=1e-2),
        dict(lr=3e-3, weight_decay=0.1, decouple=True),
        dict(lr=1e-2, weight_decay=0.01, clip_lambda=None, betas=(0.8, 0.99)),
    ],
    ids=["default", "decoupled", "l2_noclip"],
)
def test_half_params_match_the_f32_model_bit_for_bit(dtype, hyper):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in SHAPES]
    # A float32 parameter in the same step: the mix is one core call.
    dense = torch.nn.Parameter(torch.randn(6))
    models = [Model(p, **hyper) for p in params + [dense]]
    initial = params[0].detach().clone()
    opt = ADOPT(params + [dense], **hyper)
    for t, grads in enumerate(grads_of(params + [dense], 8, 1), 1):
        for p, g, model in zip(params + [dense], grads, models):
            p.grad = g.clone()
            model.step(g)
        opt.step()
        check_against_models(opt, params + [dense], models, t)
    assert all(p.dtype == dtype for p in params)
    assert not same_bits(params[0].detach(), initial)  # it moved


@pytest.mark.parametrize("dtype", HALVES, ids=["bf16", "f16"])
def test_bfloat16_moments_match_the_model_bit_for_bit(dtype):
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in SHAPES]
    dense = torch.nn.Parameter(torch.randn(9))
    all_params = params + [dense]
    models = [Model(p, moments=torch.bfloat16, lr=1e-2) for p in all_params]
    opt = ADOPT(all_params, lr=1e-2, moments_dtype=torch.bfloat16)
    for t, grads in enumerate(grads_of(all_params, 6, 2), 1):
        for p, g, model in zip(all_params, grads, models):
            p.grad = g.clone()
            model.step(g)
        opt.step()
        check_against_models(opt, all_params, models, t)


def test_moments_dtype_per_group():
    a = torch.nn.Parameter(torch.randn(4).to(torch.bfloat16))
    b = torch.nn.Parameter(torch.randn(4).to(torch.bfloat16))
    opt = ADOPT([{"params": [a], "moments_dtype": torch.bfloat16}, {"params": [b]}], lr=1e-2)
    for p in (a, b):
        p.grad = torch.ones(4, dtype=torch.bfloat16)
    opt.step()
    assert opt.state[a]["exp_avg_sq"].dtype == torch.bfloat16
    assert opt.state[b]["exp_avg_sq"].dtype == torch.float32


def train(opt, params, grads):
    for row in grads:
        for p, g in zip(params, row):
            p.grad = g.clone()
        opt.step()


def half_params(dtype, seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in [(5, 3), (11,)]]


@pytest.mark.parametrize("dtype", HALVES, ids=["bf16", "f16"])
def test_state_dict_to_torch_adopt_casts_the_moments(dtype):
    ours = half_params(dtype)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    grads = grads_of(ours, 5, 3)
    opt = ADOPT(ours, lr=1e-2)
    train(opt, ours, grads[:3])
    ref = adopt.ADOPT(theirs, lr=1e-2)
    for p, q in zip(ours, theirs):
        q.data.copy_(p.detach())
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p, q in zip(ours, theirs):
        st, rt = opt.state[p], ref.state[q]
        assert rt["exp_avg"].dtype == dtype  # torch's cast to the param dtype
        assert same_bits(rt["exp_avg"], st["exp_avg"].to(dtype))
        assert same_bits(rt["exp_avg_sq"], st["exp_avg_sq"].to(dtype))
        assert float(rt["step"]) == 3
    train(ref, theirs, grads[3:])  # torch-adopt continues from the state
    assert all(float(ref.state[q]["step"]) == 5 for q in theirs)


@pytest.mark.parametrize("dtype", HALVES, ids=["bf16", "f16"])
def test_state_dict_from_torch_adopt_widens_the_moments(dtype):
    theirs = half_params(dtype, seed=4)
    ours = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    grads = grads_of(theirs, 5, 5)
    ref = adopt.ADOPT(theirs, lr=1e-2)
    train(ref, theirs, grads[:3])
    opt = ADOPT(ours, lr=1e-2)
    for p, q in zip(ours, theirs):
        p.data.copy_(q.detach())
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    models = []
    for p, q in zip(ours, theirs):
        st, rt = opt.state[p], ref.state[q]
        assert st["exp_avg"].dtype == torch.float32
        assert same_bits(st["exp_avg"], rt["exp_avg"].float())
        assert same_bits(st["exp_avg_sq"], rt["exp_avg_sq"].float())
        model = Model(p, lr=1e-2)
        model.m[:] = rt["exp_avg"].float().numpy().ravel()
        model.v[:] = rt["exp_avg_sq"].float().numpy().ravel()
        model.t = 3
        models.append(model)
    for row in grads[3:]:
        for p, g, model in zip(ours, row, models):
            p.grad = g.clone()
            model.step(g)
        opt.step()
    check_against_models(opt, ours, models, 5)


def test_state_dict_round_trip_keeps_float32_moments_of_half_params():
    a = half_params(torch.bfloat16, seed=6)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    grads = grads_of(a, 6, 7)
    opt_a = ADOPT(a, lr=1e-2)
    train(opt_a, a, grads[:3])
    opt_b = ADOPT(b, lr=1e-2)
    for p, q in zip(a, b):
        q.data.copy_(p.detach())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for p, q in zip(a, b):
        assert opt_b.state[q]["exp_avg"].dtype == torch.float32
        assert same_bits(opt_b.state[q]["exp_avg"], opt_a.state[p]["exp_avg"])
    train(opt_a, a, grads[3:])
    train(opt_b, b, grads[3:])
    for p, q in zip(a, b):
        assert same_bits(p.detach(), q.detach())
        assert same_bits(opt_a.state[p]["exp_avg_sq"], opt_b.state[q]["exp_avg_sq"])


def test_model_to_bfloat16_after_creating_the_optimizer_is_followed():
    torch.manual_seed(8)
    lin = torch.nn.Linear(4, 3)
    opt = ADOPT(lin.parameters(), lr=1e-2)
    lin(torch.randn(2, 4)).sum().backward()
    opt.step()
    before = {n: opt.state[p]["exp_avg_sq"].clone() for n, p in lin.named_parameters()}
    lin.to(torch.bfloat16)
    lin.zero_grad()
    lin(torch.randn(2, 4).to(torch.bfloat16)).sum().backward()
    models = []
    for n, p in lin.named_parameters():
        model = Model(p, lr=1e-2)
        model.v[:] = before[n].numpy().ravel()
        model.t = 1
        model.step(p.grad)
        models.append(model)
    opt.step()
    check_against_models(opt, list(lin.parameters()), models, 2)


# -- bad input: refused, naming the parameter, nothing changed ------------------


def test_half_param_with_a_gradient_of_another_dtype_is_refused():
    params = half_params(torch.bfloat16, seed=10)
    opt = ADOPT(params, lr=1e-2)
    train(opt, params, grads_of(params, 2, 11))
    for p in params:
        p.grad = torch.ones_like(p)
    params[1].grad.data = torch.ones(params[1].shape, dtype=torch.float32)
    before = [p.detach().clone() for p in params]
    state = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in params}
    with pytest.raises(ValueError, match=r"gradient of param_groups\[0\]\['params'\]\[1\].*float32"):
        opt.step()
    for p, b in zip(params, before):
        assert same_bits(p.detach(), b)
        for k, v in state[p].items():
            assert same_bits(opt.state[p][k], v)


@pytest.mark.parametrize("moments", [torch.float16, torch.float64, "bfloat16"])
def test_unsupported_moments_dtype_is_refused(moments):
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\].*moments_dtype"):
        ADOPT([p], moments_dtype=moments)


def test_bfloat16_moments_of_a_complex_param_are_refused():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="complex: its moments are float32"):
        ADOPT([p], moments_dtype=torch.bfloat16)
