"""adopt_rs.torch: ADOPT as a ``torch.optim.Optimizer`` stepping CPU tensors
in place with the Rust core, a drop-in for torch-adopt's ``adopt.ADOPT``.

>>> import torch
>>> from adopt_rs.torch import ADOPT
>>> model = torch.nn.Linear(4, 1)
>>> opt = ADOPT(model.parameters(), lr=1e-2)
>>> loss = model(torch.ones(2, 4)).pow(2).mean()
>>> loss.backward()
>>> opt.step()
>>> sorted(opt.state[model.weight])
['exp_avg', 'exp_avg_sq', 'step']
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

from . import _core
from ._hyper import EXTRAS, check_clip_lambda, check_extras, default_clip_lambda, flag, native

__all__ = ["ADOPT"]

ParamsT = Union[Iterable[Tensor], Iterable[Dict[str, Any]], Iterable[Tuple[str, Tensor]]]

#: Parameter dtypes the step takes, and how the core steps each: f32 lanes,
#: complex64 as its interleaved real and imaginary f32 lanes (torch's
#: view_as_real), bfloat16 and float16 loaded to f32 and rounded back to
#: nearest, ties to even (torch's rounding).
_DTYPES = {
    torch.float32: "float32",
    torch.complex64: "complex64",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
}

#: The moments' storage types (``moments_dtype``); None is float32.
_MOMENTS = {None: "float32", torch.float32: "float32", torch.bfloat16: "bfloat16"}

#: The group keys that decide how parameters are stored (changing one makes
#: the next step register the group's parameters again, taking their state
#: over), with their defaults.
_LAYOUT_KEYS: Dict[str, Any] = {"moments_dtype": None, "row_sparse": False}

#: torch-adopt's group keys, with the defaults its __setstate__ gives them.
_TORCH_ADOPT_KEYS = {
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
}

#: The group keys a step reads; a group whose values change (a learning-rate
#: schedule) is handed to the core again before the step.
_HYPER_KEYS = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "decouple",
    "maximize",
    "differentiable",
) + tuple(EXTRAS)


def _plain(value: Any) -> Any:
    """A group value as a plain Python value (tensors as numbers), for
    comparing a group with the one the core has."""
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else tuple(value.tolist())
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return value


def _step_count(value: Any, name: str) -> int:
    """A state's ``step`` (a scalar tensor or a number) as a step count."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"state['step'] of {name} has {value.numel()} elements, not 1")
        value = value.item()
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"state['step'] of {name} is {value!r}, not a number") from None
    if not (math.isfinite(x) and x >= 0 and x == int(x) and x < 2.0**64):
        raise ValueError(f"state['step'] of {name} is {x}: a step count is a whole number >= 0")
    return int(x)


def _param_kind(p: Any, name: str, group: Optional[Dict[str, Any]] = None) -> str:
    """How the core steps a parameter (``"float32"``, ``"complex64"``,
    ``"bfloat16"``, ``"float16"`` or ``"table"``) in ``group``; raises
    TypeError or ValueError, naming it, for one it cannot take."""
    if not isinstance(p, Tensor):
        raise TypeError(f"{name} is a {type(p).__name__}, not a tensor")
    if type(p).__torch_dispatch__ != Tensor.__torch_dispatch__:
        raise TypeError(
            f"{name} is a {type(p).__name__}, a tensor subclass with its own dispatch "
            "(such as FSDP2's DTensor): adopt_rs steps plain tensors, whose memory it "
            "can reach"
        )
    if p.device.type != "cpu":
        raise ValueError(
            f"{name} is on {p.device}: adopt_rs steps CPU tensors in place "
            "(keep the model on the CPU, or use torch-adopt on this device)"
        )
    if p.layout is not torch.strided:
        raise TypeError(f"{name} has layout {p.layout}: adopt_rs steps dense (strided) tensors")
    if p.dtype not in _DTYPES:
        raise TypeError(
            f"{name} is {p.dtype}: adopt_rs.torch.ADOPT steps float32, complex64, bfloat16 "
            "and float16 parameters"
        )
    if not p.is_contiguous():
        raise ValueError(
            f"{name} is not contiguous (strides {p.stride()}): the step works on a "
            "parameter's memory in place; make the parameter contiguous before creating "
            "the optimizer"
        )
    kind = _DTYPES[p.dtype]
    if group is None:
        return kind
    moments = group.get("moments_dtype")
    if moments not in _MOMENTS:
        raise TypeError(
            f"{name}: moments_dtype is {moments!r}: the moments are stored as "
            "torch.float32 (None, the default) or torch.bfloat16 (float16 cannot hold "
            "exp_avg_sq = grad**2 for gradients above 256)"
        )
    if group.get("row_sparse"):
        if p.dtype != torch.float32 or p.dim() != 2:
            raise TypeError(
                f"{name} is in a group with row_sparse=True: such a group holds embedding "
                "tables, 2-D float32 parameters (nn.Embedding's weight)"
            )
        if p.shape[0] > 2**32:
            raise ValueError(f"{name} has more than 2**32 rows")
        if p.shape[1] == 0:
            raise ValueError(f"{name} has rows of 0 elements: an embedding table needs a dimension")
        kind = "table"
    if _MOMENTS[moments] != "float32" and kind in ("complex64", "table"):
        raise TypeError(
            f"{name} is {'an embedding table' if kind == 'table' else 'complex'}: its moments "
            "are float32 (moments_dtype=torch.bfloat16 is for real dense parameters)"
        )
    return kind


def _check_grad(g: Tensor, p: Tensor, name: str, table: bool = False) -> None:
    """Raises TypeError or ValueError, naming the parameter, for a gradient
    the step cannot take (``table``: the parameter is an embedding table of
    a ``row_sparse`` group, which takes row-sparse gradients too)."""
    if g.layout is not torch.strided:
        if g.is_sparse and table:
            _rows_grad(g, p, name)
            return
        if g.is_sparse:
            raise TypeError(
                f"{name} has a sparse gradient (nn.Embedding(sparse=True)?) but is not in a "
                "group with row_sparse=True: put the embedding tables in their own group, "
                "{'params': emb.parameters(), 'row_sparse': True}, so that each row keeps "
                "its own step count"
            )
        raise TypeError(f"the gradient of {name} has layout {g.layout}: it must be dense")
    if g.device != p.device or g.dtype != p.dtype or g.shape != p.shape:
        raise ValueError(
            f"the gradient of {name} is {g.dtype} {tuple(g.shape)} on {g.device}: it must "
            "have the parameter's dtype, shape and device"
        )


def _rows_grad(g: Tensor, p: Tensor, name: str) -> Tuple[Tensor, Tensor, int, int, int]:
    """A table's sparse COO gradient as the engine takes it: (row indices as
    contiguous int32, values as contiguous float32 rows, their data
    pointers and count). Raises TypeError or ValueError, naming the
    parameter, for one it cannot take."""
    if g.dtype != torch.float32 or g.shape != p.shape or g.device != p.device:
        raise ValueError(
            f"the sparse gradient of {name} is {g.dtype} {tuple(g.shape)} on {g.device}: it "
            "must have the parameter's dtype, shape and device"
        )
    if g.sparse_dim() != 1 or g.dense_dim() != 1:
        raise ValueError(
            f"the sparse gradient of {name} has sparse_dim {g.sparse_dim()} and dense_dim "
            f"{g.dense_dim()}: it must list whole rows (sparse_dim 1, as "
            "nn.Embedding(sparse=True) makes)"
        )
    indices = g._indices()[0]
    values = g._values()
    rows = p.shape[0]
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= rows):
        raise ValueError(
            f"the sparse gradient of {name} lists rows from {int(indices.min())} to "
            f"{int(indices.max())}: the table has rows 0 to {rows - 1}"
        )
    # A copy (int64 to int32): memory of its own, which nothing else writes.
    listed = indices.to(torch.int32).contiguous()
    values = values.contiguous()
    return listed, values, listed.data_ptr(), listed.numel(), values.data_ptr()


def _table_counts(value: Any, name: str, rows: int) -> Tensor:
    """A table's ``step``: a float32 tensor of one step count per row (from
    one per row, or one count for all rows: a torch-adopt state)."""
    if not isinstance(value, Tensor) or value.numel() == 1:
        return torch.full((rows,), float(_step_count(value, name)), dtype=torch.float32)
    if value.numel() != rows or value.is_complex():
        raise ValueError(
            f"state['step'] of {name} is {value.dtype} {tuple(value.shape)}: an embedding "
            f"table's step holds one count per row ({rows}), or one for all rows"
        )
    counts = value.detach().to(device="cpu", dtype=torch.float64).reshape(rows)
    good = torch.isfinite(counts) & (counts >= 0) & (counts == counts.floor())
    if not bool(good.all()):
        bad = int((~good).nonzero()[0])
        raise ValueError(
            f"state['step'] of {name} is {float(counts[bad])} at row {bad}: a step count is "
            "a whole number >= 0"
        )
    return counts.to(torch.float32).contiguous().clone()


def _view(array: Any, p: Tensor) -> Tensor:
    """A tensor of ``p``'s shape over a NumPy array of the engine's (no
    copy): float32 (complex64 for complex parameters), or bfloat16 from an
    int16 array of its bits."""
    t = torch.from_numpy(array)
    if t.dtype == torch.int16:
        t = t.view(torch.bfloat16)
    elif p.is_complex():
        t = t.view(torch.complex64)
    return t.view(p.shape)


class ADOPT(Optimizer):
    r"""ADOPT (Taniguchi et al., NeurIPS 2024) over CPU tensors, stepped in
    place by the Rust core: torch-adopt's ``ADOPT`` with the same arguments,
    defaults, checks, ``param_groups`` keys and per-parameter state
    (``step``, a float32 scalar tensor; ``exp_avg``; ``exp_avg_sq``), so
    that state dicts load both ways and continue the same trajectory.

    One :meth:`step` is one validated call into the core over every
    parameter that has a gradient, with the GIL released. The moments are
    torch tensors over the core's own buffers (no copy per step). Each
    parameter keeps its own step count; its first step only records
    ``exp_avg_sq``.

    Args:
        params: an iterable of tensors or of parameter-group dicts, as for
            every torch optimizer. CPU, contiguous, float32, complex64,
            bfloat16 or float16.
        lr: learning rate (a float, or a 1-element tensor).
        betas: ``(beta1, beta2)``.
        eps: floor of ``sqrt(exp_avg_sq)``.
        clip_lambda: the clip schedule, called with the number of steps
            already taken as a float (``clip_lambda(1.0)`` on a parameter's
            second step), once per group and step count, never per
            element; ``None`` for no clipping. Optimizer-wide, as in
            torch-adopt.
        weight_decay: the decay coefficient.
        decouple: decoupled (AdamW-style) decay instead of L2.
        foreach, capturable: accepted and stored for torch-adopt's keys;
            they do not change this step (which is always one fused pass).
        maximize: ascend instead of descend.
        differentiable: must be False (the Rust step is not differentiable).
        fused: must not be True, as in torch-adopt.

    The peers' variants, keyword-only and stored in each group (off by
    default):

    - ``caution=True``: timm's cautious masking (``Caution::Timm``).
    - ``cautious=True``: pytorch-optimizer's cautious rule.
    - ``nesterov=True``: optax's Nesterov momentum.
    - ``decay_scaling``: with ``decouple=True``, ``"lr"`` (``p -= lr*wd*p``,
      torch-adopt's), ``"fixed"`` (``p -= wd*p``, pytorch-optimizer's
      ``fixed_decay``) or ``"corrected"`` (``p -= lr**2/max_lr*wd*p``,
      timm's ``corrected_weight_decay``); ``max_lr=None`` takes the group's
      initial learning rate (its ``initial_lr`` once a scheduler sets one).
    - ``first_step_decay=True``: decoupled decay on a parameter's first
      step too (pytorch-optimizer's ``weight_decouple``).
    - ``clip_offset=1``: ``clip_lambda`` gets the number of the step being
      taken (pytorch-optimizer's convention) instead of the steps taken.

    Storage options, keyword-only and group keys (see below):
    ``moments_dtype`` (None for float32, or ``torch.bfloat16``) and
    ``row_sparse`` (False; True for a group of embedding tables).

    Half precision: bfloat16 and float16 parameters (with gradients of
    their dtype) are stepped in place with float32 arithmetic, each result
    rounded to nearest, ties to even (torch's rounding), in the same core
    call as the other parameters. Their moments are float32 by default,
    unlike torch-adopt's (which keeps them in the parameter's dtype): more
    accurate, and float16 cannot hold ``exp_avg_sq = grad**2`` for
    gradients above 256. ``moments_dtype=torch.bfloat16`` (keyword, or a
    group key) stores both moments as bfloat16 instead (half the state
    memory; for real dense parameters of any of the three real dtypes).
    State dicts still load both ways: torch's ``load_state_dict`` casts the
    float32 moments to the parameter's dtype for torch-adopt, and this
    optimizer widens torch-adopt's half moments exactly (and keeps its own
    float32 ones bit for bit).

    Embedding tables: a group with ``row_sparse=True`` holds 2-D float32
    tables (``nn.Embedding(..., sparse=True)``'s weight) stepped by the
    core's row-sparse step. Each row keeps its own step count; a sparse
    gradient steps only the rows it lists (repeated rows summed first, in
    their order), and rows without a gradient stay untouched, as torch's
    ``SparseAdam`` does; a dense gradient steps every row. Such a table's
    ``state["step"]`` is a float32 tensor of one count per row (so a
    table's state dict does not load into torch-adopt, which has no sparse
    step); a torch-adopt state (one count) loads into a table as that count
    on every row. A sparse gradient on a parameter outside such a group is
    refused (torch-adopt refuses sparse gradients too).

    Mixed precision: ``torch.amp.GradScaler("cpu")`` hands this optimizer
    ``grad_scale`` and ``found_inf`` (``_step_supports_amp_scaling``); the
    unscaling is fused into the step and a step with ``found_inf`` changes
    nothing.

    Errors: a parameter or gradient the step cannot take (another device,
    an unsupported dtype, a gradient of another dtype, not contiguous, a
    sparse gradient outside a ``row_sparse`` group or listing rows out of
    range, memory shared between parameters or with a gradient) raises ``TypeError`` or
    ``ValueError`` naming it; hyperparameters the core refuses raise
    :class:`adopt_rs.AdoptError` (a ``ValueError``) naming the group. Either
    way before anything changes.

    The state's tensors may be reassigned (``opt.state[p]["exp_avg"] =
    t``, ``load_state_dict``, a framework moving state between devices):
    a step takes the values over, copying them into the core's buffers, and
    ``opt.state`` then holds the optimizer's own tensors again. Values
    written in place into the state's tensors, the step count included, are
    used as they are.
    """

    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: ParamsT,
        lr: Union[float, Tensor] = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        clip_lambda: Optional[Callable[[float], float]] = default_clip_lambda,
        weight_decay: float = 0.0,
        decouple: bool = False,
        *,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: Optional[bool] = None,
        caution: bool = False,
        cautious: bool = False,
        nesterov: bool = False,
        decay_scaling: str = "lr",
        max_lr: Optional[float] = None,
        first_step_decay: bool = False,
        clip_offset: int = 0,
        moments_dtype: Optional[torch.dtype] = None,
        row_sparse: bool = False,
    ) -> None:
        # torch-adopt's checks, in its order and words.
        if isinstance(lr, Tensor):
            if foreach and not capturable:
                raise ValueError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True"
                )
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        check_clip_lambda(clip_lambda)
        if differentiable:
            raise ValueError(
                "differentiable=True is not supported: the Rust step is not differentiable "
                "(use torch-adopt for differentiating through optimizer steps)"
            )
        extras = dict(
            caution=caution,
            cautious=cautious,
            nesterov=nesterov,
            decay_scaling=decay_scaling,
            max_lr=max_lr,
            first_step_decay=first_step_decay,
            clip_offset=clip_offset,
        )
        check_extras(dict(extras, decouple=decouple))

        self.clip_lambda = clip_lambda
        self._initial_lrs: List[float] = []
        self._engine: Optional[_core.Engine] = None
        self._keys: List[Tuple[Any, ...]] = []
        self._where: List[Tuple[int, int]] = []
        self._layouts: List[Tuple[Any, ...]] = []
        self._tables: List[int] = []
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decouple=decouple,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            **extras,
            moments_dtype=moments_dtype,
            row_sparse=row_sparse,
        )
        super().__init__(params, defaults)

        if fused:
            raise RuntimeError("`fused` is not currently supported")

    # -- groups -------------------------------------------------------------

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """torch's ``add_param_group``, then this optimizer's checks of the
        new group's options and parameters (the group is not added if they
        fail)."""
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        group = self.param_groups[gi]
        try:
            where = f"param_groups[{gi}]"
            if group.get("differentiable"):
                raise ValueError(f"{where}: differentiable=True is not supported")
            check_extras(group, where)
            flag(group["row_sparse"], f"{where}: row_sparse")
            seen = set()
            for j, p in enumerate(group["params"]):
                _param_kind(p, self._name(gi, j, p), group)
                if id(p) in seen:
                    raise ValueError(
                        f"{self._name(gi, j, p)} appears twice in the group: each parameter "
                        "is stepped once"
                    )
                seen.add(id(p))
        except Exception:
            self.param_groups.pop()
            raise
        self._initial_lrs.append(_plain(group["lr"]))

    def _name(self, gi: int, j: int, p: Any) -> str:
        """How messages name parameter ``j`` of group ``gi``."""
        label = f"param_groups[{gi}]['params'][{j}]"
        names = self.param_groups[gi].get("param_names") if gi < len(self.param_groups) else None
        if names and j < len(names):
            label += f" ({names[j]!r})"
        if isinstance(p, Tensor):
            label += f" (shape {tuple(p.shape)}, {p.dtype}, {p.device})"
        return label

    def _initial_lr(self, gi: int, group: Dict[str, Any]) -> Optional[float]:
        """The group's initial learning rate: its ``initial_lr`` (which
        schedulers set), else its ``lr`` when it was added."""
        initial = group.get("initial_lr")
        if initial is None and gi < len(self._initial_lrs):
            initial = self._initial_lrs[gi]
        if initial is None:
            initial = group["lr"]
        initial = float(_plain(initial))
        return initial if math.isfinite(initial) and initial > 0 else None

    def _key(self, gi: int, group: Dict[str, Any]) -> Tuple[Any, ...]:
        return tuple(_plain(group[k]) for k in _HYPER_KEYS) + (self._initial_lr(gi, group),)

    def _native(self, gi: int, group: Dict[str, Any]) -> Dict[str, Any]:
        where = f"param_groups[{gi}]"
        if group["differentiable"]:
            raise ValueError(f"{where}: differentiable=True is not supported")
        return native(group, where)

    def _build(self) -> _core.Engine:
        """A new engine with every group and parameter registered (the
        states are taken over by the next step)."""
        engine = _core.Engine(torch.strided)
        keys: List[Tuple[Any, ...]] = []
        where: List[Tuple[int, int]] = []
        tables: List[int] = []
        for gi, group in enumerate(self.param_groups):
            engine.add_group(self._native(gi, group))
            engine.set_group(gi, self._native(gi, group), self._initial_lr(gi, group))
            keys.append(self._key(gi, group))
            moments = _MOMENTS.get(group.get("moments_dtype"), "float32")
            for j, p in enumerate(group["params"]):
                kind = _param_kind(p, self._name(gi, j, p), group)
                dim = p.shape[1] if kind == "table" else 0
                i = engine.add_param(
                    gi, p, p.numel(), kind, p.dtype, p.data_ptr(), moments, dim
                )
                if kind == "table":
                    tables.append(i)
                where.append((gi, j))
        self._check_disjoint(where)
        self._engine, self._keys, self._where = engine, keys, where
        self._layouts = self._layout_keys()
        self._tables = tables
        return engine

    def _layout_keys(self) -> List[Tuple[Any, ...]]:
        return [tuple(g.get(k, d) for k, d in _LAYOUT_KEYS.items()) for g in self.param_groups]

    def _check_disjoint(self, where: List[Tuple[int, int]]) -> None:
        """Refuses parameters that share memory (a step writes each in place)."""
        spans = []
        for gi, j in where:
            p = self.param_groups[gi]["params"][j]
            if p.numel():
                start = p.data_ptr()
                spans.append((start, start + p.numel() * p.element_size(), gi, j))
        spans.sort()
        for (s0, e0, g0, j0), (s1, e1, g1, j1) in zip(spans, spans[1:]):
            if s1 < e0:
                a = self._name(g0, j0, self.param_groups[g0]["params"][j0])
                b = self._name(g1, j1, self.param_groups[g1]["params"][j1])
                raise ValueError(
                    f"{a} and {b} share memory: a step writes each parameter in place"
                )

    def _prepare(self) -> _core.Engine:
        """The engine, with every group's current hyperparameters."""
        engine = self._engine
        if (
            engine is None
            or len(self._keys) != len(self.param_groups)
            or self._layouts != self._layout_keys()
        ):
            engine = self._build()
        for gi, group in enumerate(self.param_groups):
            key = self._key(gi, group)
            if key != self._keys[gi]:
                engine.set_group(gi, self._native(gi, group), self._initial_lr(gi, group))
                self._keys[gi] = key
        return engine

    # -- state --------------------------------------------------------------

    def _attend(self, ids: List[int]) -> None:
        """Checks, then fixes, what made the engine decline to step these
        parameters: a first step, state tensors replaced, ``.data``
        replaced. Raises, naming the parameter, before changing anything."""
        engine = self._engine
        assert engine is not None
        plans = []
        moved = retyped = False
        for i in ids:
            gi, j = self._where[i]
            p = self.param_groups[gi]["params"][j]
            name = self._name(gi, j, p)
            kind = _param_kind(p, name, self.param_groups[gi])
            table = kind == "table"
            numel, data_ptr, registered = engine.param_info(i)
            if p.numel() != numel:
                raise ValueError(
                    f"{name} has {p.numel()} elements, {numel} when the optimizer registered "
                    "it: its state has that size (create a new optimizer for a resized model)"
                )
            g = p.grad
            if g is not None:
                _check_grad(g, p, name, table)
            st = self.state.get(p)
            plan: Optional[Tuple[Tensor, Tensor, Tensor]] = None
            if st:
                missing = [k for k in ("step", "exp_avg", "exp_avg_sq") if k not in st]
                if missing:
                    raise ValueError(
                        f"the state of {name} has no {', '.join(missing)}: ADOPT's state is "
                        "step, exp_avg and exp_avg_sq"
                    )
                if table:
                    count = _table_counts(st["step"], name, p.shape[0])
                else:
                    count = torch.tensor(float(_step_count(st["step"], name)), dtype=torch.float32)
                for key in ("exp_avg", "exp_avg_sq"):
                    t = st[key]
                    if not isinstance(t, Tensor):
                        raise TypeError(f"state[{key!r}] of {name} is not a tensor")
                    if t.numel() != p.numel() or t.is_complex() != p.is_complex():
                        raise ValueError(
                            f"state[{key!r}] of {name} is {t.dtype} {tuple(t.shape)}: it must "
                            "have the parameter's shape, and be complex if the parameter is"
                        )
                plan = (count, st["exp_avg"], st["exp_avg_sq"])
            moved |= p.data_ptr() != data_ptr
            retyped |= kind != registered
            plans.append((i, p, plan))
        if retyped:
            # `.data` of another dtype (model.to(torch.bfloat16)): register
            # every parameter again; the next step takes the states over.
            self._build()
            return
        if moved:
            self._check_disjoint(self._where)
        engine.prepare_states([i for i, _, _ in plans])
        for i, p, plan in plans:
            engine.update_param(i, p.data_ptr())
            m_array, v_array = engine.arrays(i)
            m, v = _view(m_array, p), _view(v_array, p)
            if plan is None:
                m.zero_()
                v.zero_()
                if p.dim() == 2 and i in self._tables:
                    step = torch.zeros(p.shape[0], dtype=torch.float32)
                else:
                    step = torch.tensor(0.0, dtype=torch.float32)
            else:
                step, m_from, v_from = plan
                m.copy_(m_from.reshape(p.shape))
                v.copy_(v_from.reshape(p.shape))
            st = self.state.get(p)
            if st is None:  # (a plain dict, if a framework replaced the defaultdict)
                st = self.state[p] = {}
            st["step"], st["exp_avg"], st["exp_avg_sq"] = step, m, v
            engine.bind(i, m, v, step)

    # -- the step -----------------------------------------------------------

    def _scaling(self) -> Tuple[float, bool]:
        """GradScaler's ``grad_scale`` and ``found_inf`` (set on the
        optimizer for the step, ``_step_supports_amp_scaling``) as the
        core's inv_scale (1/scale, as GradScaler's own unscale_ computes it)
        and found_inf."""
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        inv_scale = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        return inv_scale, False if found_inf is None else bool(float(found_inf))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # type: ignore[override]
        """One ADOPT step over every parameter that has a gradient.

        Args:
            closure: re-evaluates the model and returns the loss; called
                under ``torch.enable_grad()`` before the update.

        Returns the closure's result (``None`` without a closure).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        inv_scale, found_inf = self._scaling()
        engine = self._prepare()
        for _ in range(4):
            sparse = self._sparse_grads()
            todo = engine.step(
                self.param_groups, self.state, self.clip_lambda, inv_scale, found_inf, sparse
            )
            if todo is None:
                return loss
            layout_changed, ids = todo
            if layout_changed:
                engine = self._build()
                engine = self._prepare()
            else:
                self._attend(ids)
                engine = self._prepare()
        raise RuntimeError("adopt_rs: internal error: a step was declined four times")

    def _sparse_grads(self) -> Optional[Dict[int, Tuple[Tensor, Tensor, int, int, int]]]:
        """The embedding tables' sparse gradients, checked, as the engine
        takes them (None if there are none)."""
        sparse = None
        for i in self._tables:
            gi, j = self._where[i]
            group = self.param_groups[gi]
            if j >= len(group["params"]):
                continue
            p = group["params"][j]
            g = getattr(p, "grad", None)
            if g is not None and g.layout is torch.sparse_coo:
                if sparse is None:
                    sparse = {}
                sparse[i] = _rows_grad(g, p, self._name(gi, j, p))
        return sparse

    # -- pickling, deepcopy, load_state_dict ---------------------------------

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's ``load_state_dict``, then the loaded state is taken over
        at once: copied into the optimizer's own buffers, so that it no
        longer shares memory with ``state_dict`` (torch-adopt keeps the
        loaded tensors themselves). A state the step cannot take (wrong
        shapes, a step count that is not a whole number) raises, and the
        optimizer keeps the state it had."""
        before = {"state": self.state, "param_groups": self.param_groups}
        layouts = [{k: g.get(k, d) for k, d in _LAYOUT_KEYS.items()} for g in self.param_groups]
        super().load_state_dict(state_dict)
        # A state dict without the layout keys (torch-adopt's) keeps each
        # group's own: a table stays a table.
        for group, saved_group, own in zip(
            self.param_groups, state_dict.get("param_groups", []), layouts
        ):
            for key, value in own.items():
                if key not in saved_group:
                    group[key] = value
        # torch casts floating state to the parameter's dtype (bfloat16
        # moments for a bfloat16 parameter); the step takes the saved
        # moments as they are, converting them into its own storage.
        saved = state_dict.get("state", {})
        index = {
            k: p
            for saved_group, group in zip(state_dict.get("param_groups", []), self.param_groups)
            for k, p in zip(saved_group.get("params", []), group["params"])
        }
        for k, st in saved.items():
            p = index.get(k)
            ours = self.state.get(p) if p is not None else None
            if not isinstance(st, dict) or not isinstance(ours, dict):
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                t = st.get(key)
                if isinstance(t, Tensor) and isinstance(ours.get(key), Tensor):
                    if t.dtype != ours[key].dtype and t.is_floating_point():
                        ours[key] = t.to(device=ours[key].device)
        try:
            self._prepare()
            ids = [
                i
                for i, (gi, j) in enumerate(self._where)
                if self.state.get(self.param_groups[gi]["params"][j])
            ]
            if ids:
                self._attend(ids)
        except Exception:
            # A state the step cannot take: back to what was there (torch
            # replaced both objects, leaving the old ones as they were).
            self.__setstate__(before)
            self._prepare()
            raise

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["clip_lambda"] = self.clip_lambda
        state["_initial_lrs"] = list(self._initial_lrs)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("clip_lambda", default_clip_lambda)
        self.__dict__.setdefault("_initial_lrs", [])
        self.__dict__.setdefault("_engine", None)
        self.__dict__.setdefault("_keys", [])
        self.__dict__.setdefault("_where", [])
        self.__dict__.setdefault("_layouts", [])
        self.__dict__.setdefault("_tables", [])
        for group in self.param_groups:
            for key, default in _LAYOUT_KEYS.items():
                group.setdefault(key, self.defaults.get(key, default))
            for key, default in _TORCH_ADOPT_KEYS.items():
                group.setdefault(key, default)
            for key, default in EXTRAS.items():
                group.setdefault(key, self.defaults.get(key, default))
