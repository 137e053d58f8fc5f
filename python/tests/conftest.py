"""Helpers of the adopt_rs test suite: the golden trajectories of
tests/golden (recorded from torch-adopt 0.1.0) and their tolerance."""

from __future__ import annotations

import json
import pathlib
from typing import Dict, List, NamedTuple

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


class Golden(NamedTuple):
    name: str
    meta: Dict
    p0: np.ndarray  # [L] f32 lanes (complex: interleaved re, im)
    grads: np.ndarray  # [T, L]
    after: np.ndarray  # [T, L] params after each step
    exp_avg: np.ndarray  # [L] after the last step
    exp_avg_sq: np.ndarray  # [L]


def golden_names() -> List[str]:
    return sorted(p.stem for p in GOLDEN.glob("*.json"))


def load_golden(name: str) -> Golden:
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    lanes, steps = meta["lanes"], meta["steps"]
    data = np.fromfile(GOLDEN / f"{name}.bin", dtype="<f4")
    parts = np.split(data, np.cumsum([lanes, steps * lanes, steps * lanes, lanes, lanes]))
    p0, grads, after, m, v = parts[:5]
    return Golden(
        name, meta, p0, grads.reshape(steps, lanes), after.reshape(steps, lanes), m, v
    )


def hyper_of(meta: Dict) -> Dict:
    """torch-adopt's arguments for a golden case."""
    h = meta["hyper"]
    clip = h["clip"]
    if clip["kind"] == "none":
        clip_lambda = None
    elif clip["kind"] == "constant":
        value = clip["value"]
        clip_lambda = lambda step: value  # noqa: E731
    else:
        scale, exponent = clip["scale"], clip["exponent"]
        clip_lambda = lambda step: scale * step**exponent  # noqa: E731
    return dict(
        lr=h["lr"],
        betas=(h["beta1"], h["beta2"]),
        eps=h["eps"],
        weight_decay=h["weight_decay"],
        decouple=h["decouple"],
        maximize=h["maximize"],
        clip_lambda=clip_lambda,
    )


def violations(x, r, lr: float, t: int) -> np.ndarray:
    """Lanes where ``x`` breaks the golden tolerance against the reference
    ``r`` after step ``t`` (1-based): NaN and +-inf exactly where ``r`` has
    them, else ``|x - r| <= 1e-6 |r| + 1e-4 lr t``."""
    x = np.asarray(x, dtype=np.float64).ravel()
    r = np.asarray(r, dtype=np.float64).ravel()
    assert x.shape == r.shape
    bad = np.isnan(x) != np.isnan(r)
    bad |= np.isposinf(x) != np.isposinf(r)
    bad |= np.isneginf(x) != np.isneginf(r)
    finite = np.isfinite(x) & np.isfinite(r)
    bound = 1e-6 * np.abs(r) + 1e-4 * lr * t
    with np.errstate(invalid="ignore"):
        bad |= finite & ~(np.abs(x - r) <= bound)
    return np.flatnonzero(bad)


def assert_close(x, r, lr: float, t: int, what: str = "") -> None:
    bad = violations(x, r, lr, t)
    if bad.size:
        x = np.asarray(x, dtype=np.float64).ravel()
        r = np.asarray(r, dtype=np.float64).ravel()
        i = bad[0]
        raise AssertionError(
            f"{what}: {bad.size} lanes beyond the golden tolerance at step {t}; "
            f"lane {i}: got {x[i]!r}, reference {r[i]!r}"
        )


def same_bits(a, b) -> bool:
    """Equal bit for bit (NumPy arrays or CPU tensors of any dtype), any NaN
    matching any NaN."""
    if hasattr(a, "detach") or hasattr(b, "detach"):
        import torch

        a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_complex():
            a, b = torch.view_as_real(a), torch.view_as_real(b)
        if a.is_floating_point():
            ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
            nan = torch.isnan(a) & torch.isnan(b)
            return bool((nan | (a.contiguous().view(ints) == b.contiguous().view(ints))).all())
        return torch.equal(a, b)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == np.complex64:
        a, b = a.view(np.float32), b.view(np.float32)
    unsigned = f"u{a.itemsize}"
    return bool(np.all((np.isnan(a) & np.isnan(b)) | (a.view(unsigned) == b.view(unsigned))))


@pytest.fixture(params=golden_names())
def golden(request) -> Golden:
    return load_golden(request.param)
