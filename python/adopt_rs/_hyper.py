"""Hyperparameters as the NumPy step and the torch optimizer take them,
checked and converted to what the native module reads (no torch needed)."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Optional

#: The variants' keyword extras and their defaults (off: torch-adopt's rule).
EXTRAS: Dict[str, Any] = {
    "caution": False,
    "cautious": False,
    "nesterov": False,
    "decay_scaling": "lr",
    "max_lr": None,
    "first_step_decay": False,
    "clip_offset": 0,
}

DECAY_SCALINGS = ("lr", "fixed", "corrected")


def default_clip_lambda(step: float) -> float:
    """torch-adopt's clip schedule, ``step ** 0.25``, with ``step`` the number
    of steps already taken (a module-level function, so optimizers holding
    it pickle)."""
    return step**0.25


def number(value: Any, name: str) -> float:
    """A real number as a float (a 1-element tensor or NumPy scalar too)."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) or hasattr(value, "__float__")
    ):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a number: {e}") from None


def flag(value: Any, name: str) -> bool:
    """A yes/no option: a bool, a NumPy bool, or the integer 0 or 1."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, not {value!r}")


def check_extras(options: Dict[str, Any], where: str = "") -> None:
    """Raises ValueError/TypeError for extras that are out of range or
    contradict each other (``where`` prefixes the message)."""
    prefix = f"{where}: " if where else ""
    for name in ("caution", "cautious", "nesterov", "first_step_decay"):
        flag(options[name], prefix + name)
    if options["caution"] and options["cautious"]:
        raise ValueError(
            f"{prefix}caution (timm's rule) and cautious (pytorch-optimizer's rule) "
            "are two definitions of cautious masking: choose one"
        )
    scaling = options["decay_scaling"]
    if scaling not in DECAY_SCALINGS:
        raise ValueError(
            f"{prefix}decay_scaling must be one of {DECAY_SCALINGS}, not {scaling!r}"
        )
    decouple = options.get("decouple", False)
    if (scaling != "lr" or options["first_step_decay"]) and not decouple:
        raise ValueError(
            f"{prefix}decay_scaling={scaling!r} and first_step_decay apply to "
            "decoupled decay only: pass decouple=True"
        )
    max_lr = options["max_lr"]
    if max_lr is not None:
        max_lr = number(max_lr, prefix + "max_lr")
        if not (math.isfinite(max_lr) and max_lr > 0):
            raise ValueError(f"{prefix}max_lr must be a finite number > 0, not {max_lr}")
    offset = options["clip_offset"]
    if isinstance(offset, bool) or not isinstance(offset, numbers.Integral) or offset < 0:
        raise ValueError(f"{prefix}clip_offset must be an integer >= 0, not {offset!r}")


def native(options: Dict[str, Any], where: str = "") -> Dict[str, Any]:
    """The dict the native module reads from torch-adopt's keys (``lr``,
    ``betas``, ``eps``, ``weight_decay``, ``decouple``, ``maximize``) and
    the extras."""
    prefix = f"{where}: " if where else ""
    check_extras(options, where)
    betas = options["betas"]
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"{prefix}betas must be a pair of numbers, not {betas!r}") from None
    if options["caution"]:
        caution = "timm"
    elif options["cautious"]:
        caution = "pytorch_optimizer"
    else:
        caution = "off"
    max_lr = options["max_lr"]
    return {
        "lr": number(options["lr"], prefix + "lr"),
        "beta1": number(beta1, prefix + "betas[0]"),
        "beta2": number(beta2, prefix + "betas[1]"),
        "eps": number(options["eps"], prefix + "eps"),
        "weight_decay": number(options["weight_decay"], prefix + "weight_decay"),
        "decouple": flag(options["decouple"], prefix + "decouple"),
        "decay_scaling": options["decay_scaling"],
        "max_lr": None if max_lr is None else float(max_lr),
        "first_step_decay": flag(options["first_step_decay"], prefix + "first_step_decay"),
        "maximize": flag(options["maximize"], prefix + "maximize"),
        "nesterov": flag(options["nesterov"], prefix + "nesterov"),
        "caution": caution,
        "clip_offset": int(options["clip_offset"]),
    }


def check_clip_lambda(clip_lambda: Optional[Callable[[float], float]]) -> None:
    """``clip_lambda`` is a callable or None."""
    if clip_lambda is not None and not callable(clip_lambda):
        raise TypeError(
            f"clip_lambda must be a callable (step -> threshold) or None, not {clip_lambda!r}"
        )
