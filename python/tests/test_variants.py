"""The peers' variants through both entry points, against an f64 NumPy model
written from each peer's definition (not from the core):

- timm ``caution``: mask = (u*g > 0), u = u*mask / max(mean(mask), 1e-3);
- pytorch-optimizer ``cautious``: mask = (u*normed > 0), u = u*mask*n/(sum(mask)+1);
- optax ``nesterov``: the parameter moves by b1*m + (1-b1)*normed (new m);
- decoupled decay scaled by lr, not at all (``fixed``) or by lr/max_lr
  (timm's ``corrected_weight_decay``, max_lr the group's initial lr), on
  steps after the first or on every step (``first_step_decay``);
- ``clip_offset=1``: the schedule sees the number of the step being taken.
"""

import numpy as np
import pytest

import adopt_rs

torch = pytest.importorskip("torch")
from adopt_rs.torch import ADOPT  # noqa: E402


def model(p0, grads, lrs, betas=(0.9, 0.99), eps=1e-6, wd=0.0, decouple=False,
          scaling="lr", max_lr=None, first_step=False, clip_offset=0, nesterov=False,
          caution=None, clip=lambda s: s**0.25):
    b1, b2 = betas
    p = p0.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs)):
        g = g.astype(np.float64)
        if wd and not decouple:
            g = g + wd * p
        if wd and decouple and (t > 0 or first_step):
            rate = {"lr": lr, "fixed": 1.0, "corrected": lr * lr / (max_lr or lrs[0])}[scaling]
            p = p * (1 - rate * wd)
        if t == 0:
            v = g * g
            continue
        c = clip(float(t + clip_offset))
        normed = np.clip(g / np.maximum(np.sqrt(v), eps), -c, c)
        m = b1 * m + (1 - b1) * normed
        u = b1 * m + (1 - b1) * normed if nesterov else m.copy()
        if caution == "timm":
            mask = (u * g > 0).astype(np.float64)
            u = u * mask / max(mask.mean(), 1e-3)
        elif caution == "pytorch_optimizer":
            mask = (u * normed > 0).astype(np.float64)
            u = u * mask * mask.size / (mask.sum() + 1)
        p = p - lr * u
        v = b2 * v + (1 - b2) * g * g
    return p


VARIANTS = [
    ({"caution": True}, {"caution": "timm"}),
    ({"cautious": True}, {"caution": "pytorch_optimizer"}),
    ({"nesterov": True}, {"nesterov": True}),
    ({"caution": True, "nesterov": True}, {"caution": "timm", "nesterov": True}),
    ({"weight_decay": 0.2, "decouple": True, "decay_scaling": "fixed"},
     {"wd": 0.2, "decouple": True, "scaling": "fixed"}),
    ({"weight_decay": 0.2, "decouple": True, "first_step_decay": True, "clip_offset": 1},
     {"wd": 0.2, "decouple": True, "first_step": True, "clip_offset": 1}),
    ({"weight_decay": 0.2, "decouple": True, "decay_scaling": "fixed", "first_step_decay": True},
     {"wd": 0.2, "decouple": True, "scaling": "fixed", "first_step": True}),
    ({"weight_decay": 0.2, "decouple": True, "decay_scaling": "corrected", "max_lr": 0.1},
     {"wd": 0.2, "decouple": True, "scaling": "corrected", "max_lr": 0.1}),
    ({"cautious": True, "weight_decay": 0.2, "decouple": True, "first_step_decay": True,
      "clip_offset": 1},
     {"caution": "pytorch_optimizer", "wd": 0.2, "decouple": True, "first_step": True,
      "clip_offset": 1}),
]


def data(n=40, steps=8, seed=0):
    rng = np.random.default_rng(seed)
    p0 = rng.uniform(-2, 2, n).astype(np.float32)
    grads = [(rng.uniform(-1, 1, n) + 0.1).astype(np.float32) for _ in range(steps)]
    return p0, grads


def check(got, want):
    bound = 1e-5 * np.abs(want) + 1e-5
    worst = np.max(np.abs(got.astype(np.float64) - want) - bound)
    assert worst <= 0, f"off the model by {worst} beyond its bound"


@pytest.mark.parametrize("options,peer", VARIANTS)
def test_numpy_step_variants_follow_their_peers(options, peer):
    p0, grads = data()
    lr = 0.05
    p = p0.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    step = 0
    for g in grads:
        step = adopt_rs.adopt_step(p, g, m, v, step, lr=lr, betas=(0.9, 0.99), **options)
    check(p, model(p0, grads, [lr] * len(grads), **peer))


@pytest.mark.parametrize("options,peer", VARIANTS)
def test_torch_variants_follow_their_peers(options, peer):
    p0, grads = data(seed=1)
    lr = 0.05
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = ADOPT([p], lr=lr, betas=(0.9, 0.99), **options)
    for g in grads:
        p.grad = torch.from_numpy(g)
        opt.step()
    check(p.detach().numpy(), model(p0, grads, [lr] * len(grads), **peer))
    assert all(opt.param_groups[0][k] == v for k, v in options.items())


def test_corrected_decay_takes_max_lr_from_the_initial_lr():
    # max_lr=None: the peak is the group's initial lr (LambdaLR's initial_lr).
    p0, grads = data(seed=2)
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = ADOPT([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.3, decouple=True,
                decay_scaling="corrected")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1 / (1 + e))
    lrs = []
    for g in grads:
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.from_numpy(g)
        opt.step()
        sched.step()
    want = model(p0, grads, lrs, wd=0.3, decouple=True, scaling="corrected", max_lr=0.1)
    check(p.detach().numpy(), want)


def test_each_variant_changes_the_trajectory():
    p0, grads = data(seed=3)
    results = []
    for options, _ in VARIANTS:
        p = p0.copy()
        m, v = np.zeros_like(p), np.zeros_like(p)
        step = 0
        for g in grads:
            step = adopt_rs.adopt_step(p, g, m, v, step, lr=0.05, **options)
        results.append(p)
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            assert not np.array_equal(results[i], results[j]), (i, j)


@pytest.mark.parametrize(
    "options,error",
    [
        ({"caution": True, "cautious": True}, "choose one"),
        ({"decay_scaling": "fixed"}, "decouple=True"),
        ({"first_step_decay": True}, "decouple=True"),
        ({"decay_scaling": "cubic", "decouple": True}, "decay_scaling"),
        ({"clip_offset": -1}, "clip_offset"),
        ({"max_lr": 0.0, "decouple": True, "decay_scaling": "corrected"}, "max_lr"),
    ],
)
def test_contradicting_or_bad_extras_are_refused(options, error):
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=error):
        ADOPT([p], **options)
    with pytest.raises(ValueError, match=error):
        x = np.ones(3, np.float32)
        adopt_rs.adopt_step(x, x.copy(), np.zeros(3, np.float32), np.zeros(3, np.float32), 1,
                            **options)
