"""adopt_rs: the ADOPT optimizer (Taniguchi et al., NeurIPS 2024) in Rust.

Two ways in:

- :func:`adopt_step`: one step over float32 NumPy arrays, in place.
- :class:`adopt_rs.torch.ADOPT`: a drop-in for torch-adopt's ``ADOPT``, a
  ``torch.optim.Optimizer`` stepping CPU tensors in place (float32,
  complex64, and bfloat16/float16 with float32 arithmetic; embedding tables
  with row-sparse gradients in ``row_sparse=True`` groups) (import
  ``adopt_rs.torch``; needs torch, which ``import adopt_rs`` does not).

Both run the crate's SIMD kernels, bit-identical to its scalar reference,
which matches torch-adopt on recorded trajectories. Bad input raises
``TypeError`` or ``ValueError`` (:class:`AdoptError` for what the core
refuses) and changes nothing.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Optional, Tuple

from . import _core
from ._core import AdoptError
from ._hyper import check_clip_lambda, default_clip_lambda, native

__all__ = ["AdoptError", "adopt_step", "default_clip_lambda", "kernel", "__version__"]

__version__: str = _core.__version__


def kernel() -> str:
    """The SIMD kernel the core uses on this CPU: ``"avx512f"``,
    ``"avx2+fma"``, ``"neon"`` or ``"portable"`` (``ADOPT_KERNEL=portable``
    pins the portable one; every kernel gives the same bits)."""
    return _core.kernel()


def adopt_step(
    params: Any,
    grads: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    step: int,
    *,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.9999),
    eps: float = 1e-6,
    clip_lambda: Optional[Callable[[float], float]] = default_clip_lambda,
    weight_decay: float = 0.0,
    decouple: bool = False,
    maximize: bool = False,
    caution: bool = False,
    cautious: bool = False,
    nesterov: bool = False,
    decay_scaling: str = "lr",
    max_lr: Optional[float] = None,
    first_step_decay: bool = False,
    clip_offset: int = 0,
    inv_scale: float = 1.0,
    found_inf: bool = False,
) -> int:
    """One ADOPT step over NumPy arrays, in place; returns the new step count.

    ``params``, ``exp_avg`` (first moment ``m``) and ``exp_avg_sq`` (second
    moment ``v``) are C-contiguous, writable float32 arrays of one size (any
    shape: they are stepped as flat lanes); ``grads`` is a C-contiguous
    float32 array of that size. ``step`` is the number of steps already
    taken: 0, with zeroed moments, for a fresh state. The first step only
    records ``v = g*g``; each later one normalises the gradient by the
    previous ``v``, clips it to ``clip_lambda(step)``, and moves ``m`` and
    the parameters.

    Hyperparameters are torch-adopt's (``lr``, ``betas``, ``eps``,
    ``clip_lambda``, ``weight_decay``, ``decouple``, ``maximize``), plus the
    peers' variants: ``caution`` (timm), ``cautious`` (pytorch-optimizer),
    ``nesterov`` (optax), ``decay_scaling`` (``"lr"``, ``"fixed"``, or
    ``"corrected"`` with ``max_lr``, which a single step needs), and
    ``first_step_decay`` (both with ``decouple=True``), ``clip_offset`` (1:
    ``clip_lambda`` gets the number of the step being taken, as
    pytorch-optimizer calls it). ``clip_lambda`` is called once, with
    ``float(step + clip_offset)``, on every step but the first; ``None``
    means no clipping. ``inv_scale`` multiplies every gradient lane first
    (mixed-precision unscaling) and ``found_inf=True`` skips the step
    (returning ``step``) after checking the inputs.

    Raises ``TypeError`` (not a float32 ndarray, a hyperparameter of the
    wrong type), ``ValueError`` (not contiguous, read-only, arrays sharing
    memory) and :class:`AdoptError`, a ``ValueError``, for what the core
    refuses (sizes that differ, a hyperparameter out of range, a negative
    or NaN clip threshold), with the core's message. On any error nothing
    is written.

    >>> import numpy as np
    >>> p = np.ones(4, np.float32); m = np.zeros(4, np.float32); v = np.zeros(4, np.float32)
    >>> t = 0
    >>> for _ in range(3):
    ...     t = adopt_step(p, 2 * (p - 3), m, v, t, lr=0.1)
    >>> t, bool(p[0] > 1.0)
    (3, True)
    """
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"step must be an integer, not {type(step).__name__}")
    step = operator.index(step)
    if not 0 <= step < 2**64:
        raise ValueError(f"step must be an integer from 0 to 2**64 - 1, not {step}")
    check_clip_lambda(clip_lambda)
    options = dict(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decouple=decouple,
        maximize=maximize,
        caution=caution,
        cautious=cautious,
        nesterov=nesterov,
        decay_scaling=decay_scaling,
        max_lr=max_lr,
        first_step_decay=first_step_decay,
        clip_offset=clip_offset,
    )
    hyper = native(options)
    clip: Optional[float]
    if clip_lambda is None:
        clip = None
    elif step == 0:
        clip = float("inf")  # the first step never clips, nor calls the schedule
    else:
        at = step + hyper["clip_offset"]
        try:
            clip = float(clip_lambda(float(at)))
        except (TypeError, ValueError) as e:
            raise TypeError(f"clip_lambda({float(at)}) must return a number: {e}") from None
    return _core.numpy_step(
        params,
        grads,
        exp_avg,
        exp_avg_sq,
        step,
        hyper,
        clip,
        float(inv_scale),
        bool(found_inf),
    )

