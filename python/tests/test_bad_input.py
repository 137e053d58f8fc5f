"""Every kind of bad input gets a clear TypeError or ValueError naming what
is wrong, and nothing changes: parameters, state tensors and step counts
stay bit for bit as they were."""

import copy
import math

import numpy as np
import pytest

import adopt_rs
from adopt_rs import AdoptError
from conftest import same_bits

torch = pytest.importorskip("torch")
from adopt_rs.torch import ADOPT  # noqa: E402

# -- NumPy ----------------------------------------------------------------------


def arrays(n=4):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    m = rng.standard_normal(n).astype(np.float32)
    v = rng.uniform(0.5, 2, n).astype(np.float32)
    return p, np.ones(n, np.float32), m, v


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


NUMPY_CASES = [
    # (description, function of (p, g, m, v) -> args, kwargs, exception, message)
    ("grads float64", lambda p, g, m, v: ((p, g.astype(np.float64), m, v, 1), {}), TypeError, "grads has dtype float64"),
    ("params a list", lambda p, g, m, v: ((list(p), g, m, v, 1), {}), TypeError, "params must be a numpy.ndarray"),
    ("exp_avg short", lambda p, g, m, v: ((p, g, m[:3].copy(), v, 1), {}), AdoptError, "exp_avg has 3 lanes, expected 4"),
    ("grads long", lambda p, g, m, v: ((p, np.ones(5, np.float32), m, v, 1), {}), AdoptError, "grads has 5 lanes, expected 4"),
    ("params strided", lambda p, g, m, v: ((np.repeat(p, 2)[::2], g, m, v, 1), {}), ValueError, "params is not C-contiguous"),
    ("exp_avg_sq read-only", lambda p, g, m, v: ((p, g, m, read_only(v), 1), {}), ValueError, "exp_avg_sq is read-only"),
    ("big-endian params", lambda p, g, m, v: ((p.astype(">f4"), g, m, v, 1), {}), TypeError, "params has dtype"),
    ("grads are params", lambda p, g, m, v: ((p, p, m, v, 1), {}), ValueError, "share memory"),
    ("m is v", lambda p, g, m, v: ((p, g, m, m, 1), {}), ValueError, "share memory"),
    ("negative step", lambda p, g, m, v: ((p, g, m, v, -1), {}), ValueError, "step must be an integer from 0"),
    ("float step", lambda p, g, m, v: ((p, g, m, v, 1.0), {}), TypeError, "step must be an integer"),
    ("lr inf", lambda p, g, m, v: ((p, g, m, v, 1), {"lr": math.inf}), AdoptError, "lr = inf"),
    ("lr 1e39", lambda p, g, m, v: ((p, g, m, v, 1), {"lr": 1e39}), AdoptError, "lr"),
    ("beta2 1", lambda p, g, m, v: ((p, g, m, v, 1), {"betas": (0.9, 1.0)}), AdoptError, "betas.1"),
    ("clip nan", lambda p, g, m, v: ((p, g, m, v, 1), {"clip_lambda": lambda s: math.nan}), ValueError, "returned nan"),
    ("clip negative", lambda p, g, m, v: ((p, g, m, v, 1), {"clip_lambda": lambda s: -1.0}), ValueError, "returned -1.0"),
    ("clip not a number", lambda p, g, m, v: ((p, g, m, v, 1), {"clip_lambda": lambda s: "x"}), TypeError, "must return a number"),
    ("corrected without max_lr", lambda p, g, m, v: ((p, g, m, v, 1), {"decouple": True, "weight_decay": 0.1, "decay_scaling": "corrected"}), AdoptError, "max_lr"),
    ("inv_scale nan", lambda p, g, m, v: ((p, g, m, v, 1), {"inv_scale": math.nan}), AdoptError, "inv_scale"),
]


@pytest.mark.parametrize("case", NUMPY_CASES, ids=[c[0] for c in NUMPY_CASES])
def test_numpy_bad_input_changes_nothing(case):
    _, build, exc, message = case
    p, g, m, v = arrays()
    before = [a.copy() for a in (p, g, m, v)]
    args, kwargs = build(p, g, m, v)
    with pytest.raises(exc, match=message):
        adopt_rs.adopt_step(*args, **kwargs)
    for a, b in zip((p, g, m, v), before):
        assert same_bits(a, b)


def test_numpy_found_inf_changes_nothing_and_keeps_the_count():
    p, g, m, v = arrays()
    before = [a.copy() for a in (p, m, v)]
    assert adopt_rs.adopt_step(p, g, m, v, 5, found_inf=True) == 5
    for a, b in zip((p, m, v), before):
        assert same_bits(a, b)


def test_numpy_arrays_of_any_shape_step_as_flat_lanes():
    p, g, m, v = (a.reshape(2, 2) for a in arrays())
    q, h, n, w = (a.ravel().copy() for a in (p, g, m, v))
    assert adopt_rs.adopt_step(p, g, m, v, 3) == 4
    assert adopt_rs.adopt_step(q, h, n, w, 3) == 4
    assert same_bits(p.ravel(), q) and same_bits(m.ravel(), n)


# -- torch: construction ----------------------------------------------------------


@pytest.mark.parametrize(
    "make,exc,message",
    [
        (lambda: torch.empty(3, device="meta"), ValueError, r"\['params'\]\[0\].*is on meta"),
        (lambda: torch.ones(3, dtype=torch.float64), TypeError, "float64"),
        (lambda: torch.ones(3, dtype=torch.complex128), TypeError, "complex128"),
        (lambda: torch.ones(4, 3).t(), ValueError, "not contiguous"),
    ],
    ids=["meta_device", "float64", "complex128", "transposed"],
)
def test_unsupported_parameters_are_named_at_construction(make, exc, message):
    good = torch.nn.Parameter(torch.ones(2))
    bad = torch.nn.Parameter(make())
    with pytest.raises(exc, match=message):
        ADOPT([bad, good])
    opt = ADOPT([good])
    with pytest.raises(exc, match=r"param_groups\[1\]"):
        opt.add_param_group({"params": [bad]})
    assert len(opt.param_groups) == 1  # the refused group was not added


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"betas": (1.0, 0.9)}, "Invalid beta parameter at index 0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value"),
        ({"lr": torch.tensor([0.1, 0.2])}, "Tensor lr must be 1-element"),
        ({"lr": torch.tensor(0.1), "foreach": True}, "lr as a Tensor is not supported"),
        ({"differentiable": True}, "differentiable=True is not supported"),
    ],
)
def test_torch_adopts_value_errors(kwargs, message):
    import adopt

    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=message):
        ADOPT([p], **kwargs)
    if "differentiable" not in kwargs:
        with pytest.raises(ValueError, match=message):
            adopt.ADOPT([p], **kwargs)


def test_tensor_subclasses_with_their_own_dispatch_are_refused():
    class Wrapper(torch.Tensor):  # as DTensor: ops go through __torch_dispatch__
        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            raise NotImplementedError

    bad = torch.Tensor._make_subclass(Wrapper, torch.ones(3), True)
    with pytest.raises(TypeError, match="Wrapper, a tensor subclass with its own dispatch"):
        ADOPT([bad])


def test_fused_is_refused_as_torch_adopt_does():
    with pytest.raises(RuntimeError, match="`fused` is not currently supported"):
        ADOPT([torch.nn.Parameter(torch.ones(3))], fused=True)


def test_duplicate_parameter_in_a_group_is_refused():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="appears twice"):
        ADOPT([p, p])


def test_clip_lambda_must_be_callable():
    with pytest.raises(TypeError, match="clip_lambda must be a callable"):
        ADOPT([torch.nn.Parameter(torch.ones(3))], clip_lambda=0.5)


# -- torch: at a step, nothing changes -----------------------------------------


def trained(n_params=3, steps=2, **kw):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 2)) for _ in range(n_params)]
    opt = ADOPT(params, lr=0.01, **kw)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(5, 2)
        opt.step()
    for p in params:
        p.grad = torch.randn(5, 2)
    return params, opt


def snapshot(opt, params):
    return (
        [p.detach().clone() for p in params],
        {p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}
         for p in opt.state},
    )


def assert_unchanged(opt, params, snap):
    values, state = snap
    for p, before in zip(params, values):
        assert same_bits(p, before)
    assert set(opt.state) == set(state)
    for p, st in state.items():
        assert set(opt.state[p]) == set(st)
        for k, v in st.items():
            assert same_bits(opt.state[p][k], v) if isinstance(v, torch.Tensor) else opt.state[p][k] == v


def refuses(opt, params, exc, message, steps_after=True):
    snap = snapshot(opt, params)
    with pytest.raises(exc, match=message):
        opt.step()
    assert_unchanged(opt, params, snap)


def test_sparse_gradient_is_refused_before_anything_changes():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    lin = torch.nn.Linear(3, 1)
    opt = ADOPT(list(lin.parameters()) + list(emb.parameters()), lr=0.01)
    for _ in range(2):
        lin.zero_grad()
        lin(torch.randn(4, 3)).sum().backward()
        opt.step()
    params = list(lin.parameters()) + list(emb.parameters())
    lin(emb(torch.tensor([1, 2, 2]))).sum().backward()
    assert emb.weight.grad.is_sparse
    refuses(opt, params, TypeError, r"param_groups\[0\]\['params'\]\[2\].*sparse gradient")


def test_data_replaced_by_an_unsupported_dtype():
    params, opt = trained()
    params[1].data = params[1].data.to(torch.float64)
    params[1].grad = None
    params[1].grad = torch.randn(5, 2, dtype=torch.float64)
    refuses(opt, params, TypeError, r"\['params'\]\[1\].*float64")


def test_data_replaced_by_another_size():
    params, opt = trained()
    params[2].data = torch.randn(3)
    params[2].grad = torch.randn(3)
    refuses(opt, params, ValueError, r"\['params'\]\[2\].*has 3 elements, 10 when")


def test_data_replaced_by_a_valid_tensor_is_followed():
    params, opt = trained()
    new = torch.randn(5, 2)
    params[0].data = new
    params[0].grad = torch.randn(5, 2)
    opt.step()
    assert params[0].data_ptr() == new.data_ptr()
    assert opt.state[params[0]]["step"].item() == 3.0


def test_grad_sharing_memory_with_another_parameter():
    params, opt = trained()
    params[0].grad = params[1].detach()
    refuses(opt, params, ValueError, "share memory")


def test_parameters_sharing_memory():
    base = torch.zeros(10)
    a = torch.nn.Parameter(base[:6])
    b = torch.nn.Parameter(base[4:])
    opt = ADOPT([a, b])
    a.grad, b.grad = torch.ones(6), torch.ones(6)
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    assert not opt.state and torch.equal(base, torch.zeros(10))


@pytest.mark.parametrize(
    "key,value,exc,message",
    [
        ("lr", math.inf, AdoptError, r"param_groups\[0\]: invalid hyperparameter lr = inf"),
        ("lr", 1e39, AdoptError, r"param_groups\[0\].*lr"),
        ("eps", math.nan, AdoptError, r"param_groups\[0\].*eps"),
        ("betas", (0.9, 1.5), AdoptError, r"param_groups\[0\].*betas.1"),
        ("weight_decay", "x", TypeError, "weight_decay must be a number"),
        ("caution", "yes", TypeError, "caution must be True or False"),
        ("decay_scaling", "fixed", ValueError, "decouple=True"),
        ("differentiable", True, ValueError, "differentiable=True is not supported"),
    ],
)
def test_group_values_the_core_refuses(key, value, exc, message):
    params, opt = trained()
    opt.param_groups[0][key] = value
    refuses(opt, params, exc, message)


def test_hyperparameters_overflowing_f32_together():
    params, opt = trained(weight_decay=1e20, decouple=True)
    opt.param_groups[0]["lr"] = 1e20
    refuses(opt, params, AdoptError, "decoupled decay rate")


@pytest.mark.parametrize(
    "clip,exc,message",
    [
        (lambda s: math.nan, ValueError, r"clip_lambda\(2.0\) returned nan"),
        (lambda s: -0.5, ValueError, "returned -0.5"),
        (lambda s: 1 / 0, ZeroDivisionError, "division"),
        (lambda s: None, TypeError, "must return a number"),
    ],
)
def test_clip_lambda_failures(clip, exc, message):
    params, opt = trained()
    opt.clip_lambda = clip
    refuses(opt, params, exc, message)


def test_clip_lambda_failing_at_one_of_several_step_counts():
    params, opt = trained()
    late = torch.nn.Parameter(torch.randn(5, 2))
    opt.param_groups[0]["params"].append(late)  # edited in place: re-registered
    late.grad = torch.randn(5, 2)
    opt.step()  # late's first step
    for p in params + [late]:
        p.grad = torch.randn(5, 2)
    opt.clip_lambda = lambda s: 1.0 if s > 2 else math.nan
    refuses(opt, params + [late], ValueError, r"clip_lambda\(1.0\) returned nan")


@pytest.mark.parametrize(
    "edit,exc,message",
    [
        (lambda st: st.__setitem__("exp_avg", torch.zeros(3)), ValueError, r"state\['exp_avg'\].*shape"),
        (lambda st: st.__setitem__("exp_avg_sq", "x"), TypeError, "not a tensor"),
        (lambda st: st.__setitem__("exp_avg", torch.zeros(5, 2, dtype=torch.complex64)), ValueError, "complex"),
        (lambda st: st.__delitem__("exp_avg_sq"), ValueError, "has no exp_avg_sq"),
        (lambda st: st["step"].fill_(-1.0), ValueError, "whole number"),
        (lambda st: st["step"].fill_(2.5), ValueError, "whole number"),
        (lambda st: st["step"].fill_(math.nan), ValueError, "whole number"),
        (lambda st: st.__setitem__("step", torch.ones(2)), ValueError, "2 elements"),
    ],
)
def test_bad_state_is_refused(edit, exc, message):
    params, opt = trained()
    edit(opt.state[params[1]])
    refuses(opt, params, exc, message)


def test_bad_state_dict_is_refused_and_the_state_kept():
    params, opt = trained()
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the state's dicts
    sd["state"][1]["exp_avg"] = torch.zeros(7)
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=r"state\['exp_avg'\]"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, params, snap)
    opt.step()  # and it still steps
    assert opt.state[params[0]]["step"].item() == 3.0


def test_a_refused_step_leaves_the_optimizer_usable():
    params, opt = trained()
    opt.param_groups[0]["lr"] = math.inf
    with pytest.raises(AdoptError):
        opt.step()
    opt.param_groups[0]["lr"] = 0.01
    opt.step()
    assert all(opt.state[p]["step"].item() == 3.0 for p in params)
