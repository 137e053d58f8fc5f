"""Train a small PyTorch model with adopt_rs.torch.ADOPT and print the loss.

    pip install ./python            # from the repository root (needs Rust and torch)
    python examples/python/train_torch.py

A two-layer network learns y = sin(3x) + x/2 on [-2, 2] from data it
generates, with two parameter groups (decoupled weight decay on the
weights only), a cosine learning-rate schedule and a closure, as a training
loop would. The loss falls from about 0.9 to below 0.01; the script exits
with status 1 if it does not.
"""

import math
import sys

import torch

from adopt_rs.torch import ADOPT

torch.manual_seed(0)
torch.set_num_threads(1)  # a model this small runs fastest on one thread
x = torch.linspace(-2, 2, 1024).unsqueeze(1)
y = torch.sin(3 * x) + x / 2 + 0.02 * torch.randn_like(x)

model = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
opt = ADOPT(
    [{"params": weights, "weight_decay": 1e-4}, {"params": biases}],
    lr=5e-2,
    decouple=True,
)
steps = 1000
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

first = None
for step in range(1, steps + 1):
    batch = torch.randint(0, len(x), (128,))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
        loss.backward()
        return loss

    loss = opt.step(closure).item()
    sched.step()
    first = loss if first is None else first
    if step == 1 or step % 200 == 0:
        print(f"step {step:5d}  loss {loss:.5f}  lr {sched.get_last_lr()[0]:.5f}")

with torch.no_grad():
    final = torch.nn.functional.mse_loss(model(x), y).item()
print(f"full-data loss after {steps} steps: {final:.5f} (first batch: {first:.5f})")
sys.exit(0 if math.isfinite(final) and final < 0.01 else 1)
