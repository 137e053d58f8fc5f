"""A small model trained end to end with adopt_rs.torch.ADOPT: the loss
falls as far as torch-adopt's does on the same run, and the two runs'
parameters stay close."""

import pytest

torch = pytest.importorskip("torch")
adopt = pytest.importorskip("adopt")

from adopt_rs.torch import ADOPT  # noqa: E402


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    y = torch.tanh(x @ w / 2) + 0.05 * torch.randn(512, 1, generator=g)
    return x, y


def train(cls, steps=300, **kw):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    opt = cls(
        [
            {"params": [p for n, p in net.named_parameters() if n.endswith("weight")],
             "weight_decay": 0.01},
            {"params": [p for n, p in net.named_parameters() if n.endswith("bias")]},
        ],
        lr=1e-2,
        decouple=True,
        **kw,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x, y = data()
    losses = []
    for step in range(steps):
        i = torch.arange(step * 64, step * 64 + 64) % 512
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x[i]), y[i])
            loss.backward()
            return loss
        losses.append(opt.step(closure).item())
        sched.step()
    final = torch.nn.functional.mse_loss(net(x), y).item()
    return net, losses, final


@pytest.fixture
def one_thread():
    # A model this small trains fastest on one thread (and a busy machine's
    # second core makes two threads much slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_small_model_trains_like_torch_adopt(one_thread):
    net, losses, final = train(ADOPT)
    ref_net, ref_losses, ref_final = train(adopt.ADOPT, foreach=False)
    initial = sum(losses[:10]) / 10
    assert final < initial / 5, (initial, final)
    assert abs(final - ref_final) <= 0.05 * ref_final + 1e-3, (final, ref_final)
    for a, b in zip(net.parameters(), ref_net.parameters()):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
