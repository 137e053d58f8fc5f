"""State dicts both ways with torch-adopt, through torch.save, continuing
the same trajectory; pickling, deepcopy, and state tensors reassigned or
edited in place."""

import copy
import io
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
adopt = pytest.importorskip("adopt")

from adopt_rs.torch import ADOPT  # noqa: E402
from conftest import assert_close, same_bits  # noqa: E402

LR = 0.02


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(8, 3, generator=g),
        torch.randn(5, generator=g),
        torch.randn(4, generator=g, dtype=torch.complex64),
    ]


def groups(ps):
    return [
        {"params": ps[:2]},
        {"params": ps[2:], "lr": LR / 2, "weight_decay": 0.1, "decouple": True},
    ]


def grads(ps, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in ps] for _ in range(steps)]


def run(opt, ps, gs):
    for row in gs:
        for p, g in zip(ps, row):
            p.grad = g.clone()
        opt.step()


def through_disk(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def flat(p):
    return (torch.view_as_real(p.detach()) if p.is_complex() else p.detach()).numpy()


@pytest.mark.parametrize("direction", ["ours_to_torch_adopt", "torch_adopt_to_ours"])
def test_state_dict_continues_the_trajectory(direction):
    init = params()
    gs = grads(init, 12)
    # The reference: torch-adopt for all 12 steps.
    ref = [torch.nn.Parameter(p.clone()) for p in init]
    ref_opt = adopt.ADOPT(groups(ref), lr=LR, foreach=False)
    run(ref_opt, ref, gs)

    first, second = (ADOPT, adopt.ADOPT) if direction == "ours_to_torch_adopt" else (adopt.ADOPT, ADOPT)
    a = [torch.nn.Parameter(p.clone()) for p in init]
    opt_a = first(groups(a), lr=LR, **({"foreach": False} if first is adopt.ADOPT else {}))
    run(opt_a, a, gs[:5])
    sd = through_disk(opt_a.state_dict())

    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_b = second(groups(b), lr=LR, **({"foreach": False} if second is adopt.ADOPT else {}))
    opt_b.load_state_dict(sd)
    run(opt_b, b, gs[5:])
    for i, (x, r) in enumerate(zip(b, ref)):
        assert_close(flat(x), flat(r), LR, 12, f"param {i}")
    for x, r in zip(b, ref):
        assert opt_b.state[x]["step"].item() == 12.0
        for key in ("exp_avg", "exp_avg_sq"):
            got, want = opt_b.state[x][key], ref_opt.state[r][key]
            assert got.dtype == want.dtype and got.shape == want.shape
            assert_close(flat(got), flat(want), LR, 12, key)


def test_state_dict_has_torch_adopts_layout():
    ps = [torch.nn.Parameter(p) for p in params()]
    ours = ADOPT(groups(ps), lr=LR)
    ref = adopt.ADOPT(groups([torch.nn.Parameter(p.detach().clone()) for p in ps]), lr=LR)
    for opt, pp in ((ours, ps), (ref, ref.param_groups[0]["params"] + ref.param_groups[1]["params"])):
        run(opt, pp, grads(pp, 2))
    a, b = ours.state_dict(), ref.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert list(a["state"][i]) == list(b["state"][i]) == ["step", "exp_avg", "exp_avg_sq"]
        for key in a["state"][i]:
            x, y = a["state"][i][key], b["state"][i][key]
            assert (x.dtype, x.shape, x.device) == (y.dtype, y.shape, y.device)
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        assert set(gb) <= set(ga)
        assert {k: ga[k] for k in gb} == gb


def test_state_dict_pickles_and_holds_no_native_objects():
    ps = [torch.nn.Parameter(p) for p in params()]
    opt = ADOPT(groups(ps), lr=LR, clip_lambda=lambda s: s**0.5)
    run(opt, ps, grads(ps, 3))
    sd = opt.state_dict()
    restored = pickle.loads(pickle.dumps(sd))
    for i, st in sd["state"].items():
        for key, value in st.items():
            assert same_bits(value, restored["state"][i][key])
    assert restored["param_groups"] == sd["param_groups"]


def test_loading_own_state_dict_into_a_new_optimizer():
    init = params()
    gs = grads(init, 8)
    a = [torch.nn.Parameter(p.clone()) for p in init]
    opt_a = ADOPT(groups(a), lr=LR)
    run(opt_a, a, gs[:4])
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_b = ADOPT(groups(b), lr=LR)
    opt_b.load_state_dict(opt_a.state_dict())  # live tensors, no copy
    run(opt_a, a, gs[4:])
    run(opt_b, b, gs[4:])
    for x, y in zip(a, b):
        assert same_bits(x, y)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert same_bits(opt_a.state[x][key], opt_b.state[y][key])
    # b took the values over into its own buffers: they are independent.
    assert opt_b.state[b[0]]["exp_avg"].data_ptr() != opt_a.state[a[0]]["exp_avg"].data_ptr()


def test_deepcopy_is_independent_and_continues_identically():
    init = params()
    gs = grads(init, 8)
    a = [torch.nn.Parameter(p.clone()) for p in init]
    opt_a = ADOPT(groups(a), lr=LR, nesterov=True)
    run(opt_a, a, gs[:4])
    opt_b = copy.deepcopy(opt_a)
    b = opt_b.param_groups[0]["params"] + opt_b.param_groups[1]["params"]
    assert all(x is not y for x, y in zip(a, b))
    before = [opt_a.state[x]["exp_avg"].clone() for x in a]
    run(opt_b, b, gs[4:])
    # Stepping the copy left the original alone...
    for x, m in zip(a, before):
        assert same_bits(opt_a.state[x]["exp_avg"], m)
    assert opt_a.state[a[0]]["step"].item() == 4.0
    run(opt_a, a, gs[4:])
    # ...and both followed the same trajectory.
    for x, y in zip(a, b):
        assert same_bits(x, y)
        assert same_bits(opt_a.state[x]["exp_avg_sq"], opt_b.state[y]["exp_avg_sq"])
    assert opt_b.param_groups[0]["nesterov"] is True
    assert opt_b.clip_lambda is opt_a.clip_lambda


def test_optimizer_itself_pickles_with_the_default_clip():
    ps = [torch.nn.Parameter(p) for p in params()]
    opt = ADOPT(groups(ps), lr=LR)
    run(opt, ps, grads(ps, 2))
    clone = pickle.loads(pickle.dumps(opt))
    qs = clone.param_groups[0]["params"] + clone.param_groups[1]["params"]
    gs = grads(ps, 3, seed=5)
    run(opt, ps, gs)
    run(clone, qs, gs)
    for x, y in zip(ps, qs):
        assert same_bits(x, y)


def reference_after_edit(edit, key):
    """Ours and torch-adopt, two steps, then ``edit`` applied to both
    optimizers' state (through ``opt.state``), then two more steps."""
    init = params()
    gs = grads(init, 4)
    out = []
    for cls in (ADOPT, adopt.ADOPT):
        ps = [torch.nn.Parameter(p.clone()) for p in init]
        opt = cls(groups(ps), lr=LR)
        run(opt, ps, gs[:2])
        for p in ps:
            edit(opt, p)
        run(opt, ps, gs[2:])
        out.append((ps, opt))
    (a, _), (b, _) = out
    for i, (x, r) in enumerate(zip(a, b)):
        assert_close(flat(x), flat(r), LR, 4, f"{key} param {i}")
    return out


def test_reassigned_state_tensors_are_taken_over():
    def replace(opt, p):
        st = opt.state[p]
        st["exp_avg"] = st["exp_avg"].clone() * 0.5
        st["exp_avg_sq"] = st["exp_avg_sq"].clone() + 1.0
    (ps, opt), _ = reference_after_edit(replace, "replaced")
    # state holds the optimizer's own tensors again after the step.
    m = opt.state[ps[0]]["exp_avg"]
    assert opt.state[ps[0]]["exp_avg"] is m
    ps[0].grad = torch.ones_like(ps[0])
    opt.step()
    assert opt.state[ps[0]]["exp_avg"] is m


def test_state_tensors_edited_in_place_are_used():
    def edit(opt, p):
        st = opt.state[p]
        st["exp_avg"].mul_(0.5)
        st["exp_avg_sq"].add_(1.0)
    reference_after_edit(edit, "edited")


def test_step_count_written_in_place_or_replaced_is_taken_over():
    def rewind(opt, p):
        opt.state[p]["step"].fill_(1.0)
    reference_after_edit(rewind, "rewound")

    def replace(opt, p):
        opt.state[p]["step"] = torch.tensor(7.0)
    reference_after_edit(replace, "step replaced")


def test_frameworks_moving_state_to_the_cpu_keep_it_working():
    # Lightning's optimizer_to_device: state[p] = {k: v.to(device)}.
    def move(opt, p):
        opt.state[p] = {k: v.to("cpu") for k, v in opt.state[p].items()}
    (ps, opt), _ = reference_after_edit(move, "moved")
    assert opt.state[ps[0]]["step"].item() == 4.0


def test_cleared_state_starts_over():
    def clear(opt, p):
        opt.state.pop(p)
    reference_after_edit(clear, "cleared")


def test_moments_share_memory_with_the_core():
    p = torch.nn.Parameter(torch.randn(1000))
    opt = ADOPT([p], lr=LR)
    ptrs = []
    for _ in range(3):
        p.grad = torch.randn(1000)
        opt.step()
        st = opt.state[p]
        ptrs.append((st["exp_avg"].data_ptr(), st["exp_avg_sq"].data_ptr(), id(st["exp_avg"])))
    assert ptrs[0] == ptrs[1] == ptrs[2]
    # Writes through the tensor reach the core and the other way round.
    st = opt.state[p]
    st["exp_avg_sq"].fill_(4.0)
    st["exp_avg"].zero_()
    before = p.detach().clone()
    p.grad = torch.full((1000,), 2.0)
    opt.step()  # normed = 2/2 = 1: m = 0.1, p -= lr*0.1
    assert torch.allclose(st["exp_avg"], torch.full((1000,), 0.1))
    assert torch.allclose(p.detach(), before - LR * 0.1)
    assert np.allclose(st["exp_avg_sq"].numpy(), 0.9999 * 4.0 + 1e-4 * 4.0)
