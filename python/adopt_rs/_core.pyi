"""Type stubs of adopt_rs._core, the native module (Rust, PyO3). Use the
documented wrappers: adopt_rs.adopt_step and adopt_rs.torch.ADOPT."""

from typing import Any, Callable, Dict, List, Optional, Tuple, TypedDict

import numpy as np
import numpy.typing as npt

__version__: str

class AdoptError(ValueError):
    """An input the adopt core refused (a hyperparameter out of range, a clip
    threshold that is negative or NaN, buffers of different sizes, ...). The
    message says what; nothing was changed."""

class HyperArgs(TypedDict):
    """A group's hyperparameters as the native module reads them."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decouple: bool
    decay_scaling: str  # "lr", "fixed" or "corrected"
    max_lr: Optional[float]
    first_step_decay: bool
    maximize: bool
    nesterov: bool
    caution: str  # "off", "timm" or "pytorch_optimizer"
    clip_offset: int

def numpy_step(
    params: npt.NDArray[np.float32],
    grads: npt.NDArray[np.float32],
    exp_avg: npt.NDArray[np.float32],
    exp_avg_sq: npt.NDArray[np.float32],
    step: int,
    hyper: HyperArgs,
    clip: Optional[float],
    inv_scale: float,
    found_inf: bool,
) -> int:
    """One step over float32 arrays in place (``clip``: this step's
    threshold, None for none); returns the new step count."""

def kernel() -> str:
    """The SIMD kernel in use: "avx512f", "avx2+fma", "neon" or "portable"."""

class Engine:
    """An adopt ``Adopt`` optimizer over torch tensors (adopt_rs.torch's
    machinery; ``strided`` is ``torch.strided``, against which gradients
    are checked)."""

    def __init__(self, strided: Any) -> None: ...
    def add_group(self, hyper: HyperArgs) -> int: ...
    def set_group(self, group: int, hyper: HyperArgs, initial_lr: Optional[float] = None) -> None: ...
    def add_param(
        self,
        group: int,
        param: Any,
        numel: int,
        kind: str,  # "float32", "complex64", "bfloat16", "float16" or "table"
        dtype: Any,  # the parameter's torch dtype (its gradients' too)
        data_ptr: int,
        moments: str,  # "float32" or "bfloat16"
        dim: int = 0,  # a table's row length
    ) -> int: ...
    def update_param(self, id: int, data_ptr: int) -> None: ...
    def param_info(self, id: int) -> Tuple[int, int, str]:
        """(numel, data pointer, kind) as registered."""
    def prepare_states(self, ids: List[int]) -> None: ...
    def arrays(self, id: int) -> Tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The moments over the engine's buffers: float32, or int16 arrays of
        bfloat16 bits."""
    def bind(self, id: int, exp_avg: Any, exp_avg_sq: Any, step: Any) -> None: ...
    def step_count(self, id: int) -> Optional[List[int]]:
        """The step count (one, or one per row of a table)."""
    def param_count(self) -> int: ...
    def step(
        self,
        param_groups: List[dict],
        state: dict,
        clip_lambda: Optional[Callable[[float], Any]],
        inv_scale: float,
        found_inf: bool,
        sparse: Optional[Dict[int, Tuple[Any, Any, int, int, int]]] = None,
    ) -> Optional[Tuple[bool, List[int]]]: ...
