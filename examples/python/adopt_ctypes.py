"""Step a NumPy array in place with ADOPT through the C ABI, using only
ctypes and numpy, and check the result against the Rust crate's own.

Build the shared library first, from the repository root:

    cargo rustc --release --features capi --lib --crate-type cdylib
    python3 examples/python/adopt_ctypes.py            # or: ... path/to/libadopt.so

The expected values in tests/data/capi_python_expected.bin are what the
Rust API (`adopt::adopt_step`) computes from the same inputs; the Rust test
`python_example_expectation_is_what_rust_computes` (tests/capi.rs) checks
that file. The script exits with status 1 if anything differs.
"""

import ctypes
import sys
from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_size_t, c_uint8
from ctypes import c_uint32, c_uint64, c_void_p
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_NAME = {"darwin": "libadopt.dylib", "win32": "adopt.dll"}.get(sys.platform, "libadopt.so")

# Status codes (include/adopt.h, enum AdoptStatus).
ADOPT_STATUS_OK = 0
ADOPT_STATUS_LENGTH_MISMATCH = 3
ADOPT_CLIP_POWER = 2
ADOPT_DECAY_LR = 0


class AdoptHyper(ctypes.Structure):
    """struct AdoptHyper: same fields, same order, same types as the header."""

    _fields_ = [
        ("size", c_uint32),
        ("clip", c_uint32),
        ("lr", c_double),
        ("beta1", c_double),
        ("beta2", c_double),
        ("eps", c_double),
        ("weight_decay", c_double),
        ("clip_scale", c_double),
        ("clip_exponent", c_double),
        ("max_lr", c_double),
        ("clip_offset", c_uint64),
        ("decay_scaling", c_uint32),
        ("decouple", c_uint32),
        ("maximize", c_uint32),
        ("nesterov", c_uint32),
        ("caution", c_uint32),
        ("first_step_decay", c_uint32),
    ]


class AdoptItem(ctypes.Structure):
    """struct AdoptItem: one buffer of adopt_optimizer_step."""

    _fields_ = [
        ("param", c_uint32),
        ("params", POINTER(c_float)),
        ("params_len", c_size_t),
        ("grads", POINTER(c_float)),
        ("grads_len", c_size_t),
    ]


class AdoptError(Exception):
    """A nonzero AdoptStatus with the library's message."""

    def __init__(self, status, message):
        super().__init__(f"adopt status {status}: {message}")
        self.status = status
        self.message = message


def load(path):
    """Loads the library and declares the functions this script uses."""
    lib = ctypes.CDLL(str(path))
    f32p, u64p = POINTER(c_float), POINTER(c_uint64)
    signatures = {
        "adopt_hyper_default": ([], AdoptHyper),
        "adopt_last_error_message": ([], c_char_p),
        "adopt_version": ([], c_char_p),
        "adopt_step_f32": (
            [f32p, c_size_t, f32p, c_size_t, f32p, c_size_t, f32p, c_size_t, u64p,
             POINTER(AdoptHyper)],
            c_int,
        ),
        "adopt_optimizer_new": ([POINTER(c_void_p)], c_int),
        "adopt_optimizer_free": ([c_void_p], None),
        "adopt_optimizer_add_group": ([c_void_p, POINTER(AdoptHyper), POINTER(c_uint32)], c_int),
        "adopt_optimizer_add_param": (
            [c_void_p, c_uint32, c_size_t, c_char_p, POINTER(c_uint32)], c_int),
        "adopt_optimizer_step": ([c_void_p, POINTER(AdoptItem), c_size_t], c_int),
        "adopt_optimizer_save": ([c_void_p, POINTER(c_uint8), c_size_t, POINTER(c_size_t)], c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def check(lib, status):
    """Raises AdoptError for a nonzero status."""
    if status != ADOPT_STATUS_OK:
        raise AdoptError(status, lib.adopt_last_error_message().decode())


def f32_buffer(array, writable):
    """A float* into a NumPy array, which must be contiguous float32."""
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        raise TypeError("need a C-contiguous float32 array")
    if writable and not array.flags.writeable:
        raise TypeError("need a writable array")
    return array.ctypes.data_as(POINTER(c_float)), array.size


def adopt_step(lib, params, grads, exp_avg, exp_avg_sq, step, hyper):
    """One ADOPT step, in place on params, exp_avg, exp_avg_sq and step
    (a ctypes.c_uint64)."""
    p, pn = f32_buffer(params, True)
    g, gn = f32_buffer(grads, False)
    m, mn = f32_buffer(exp_avg, True)
    v, vn = f32_buffer(exp_avg_sq, True)
    check(lib, lib.adopt_step_f32(p, pn, g, gn, m, mn, v, vn, ctypes.byref(step),
                                  ctypes.byref(hyper)))


def inputs(n):
    """The inputs of the Rust test: small integers over powers of two, exact in float32."""
    i = np.arange(n)
    params = ((i % 17).astype(np.float32) - 8) / np.float32(8)
    grads = [(((i * 7 + s * 3) % 23).astype(np.float32) - 11) / np.float32(16) for s in range(5)]
    return params.astype(np.float32), [g.astype(np.float32) for g in grads]


def numpy_model(params, grads, lr, weight_decay, beta1=0.9, beta2=0.9999, eps=1e-6):
    """ADOPT with decoupled decay in float64 (README, "The update rule")."""
    p = params.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(g.astype(np.float64) for g in grads):
        if t == 0:
            v = g * g
            continue
        p = p - lr * weight_decay * p
        normed = np.clip(g / np.maximum(np.sqrt(v), eps), -t**0.25, t**0.25)
        m = m + (1 - beta1) * (normed - m)
        p = p - lr * m
        v = beta2 * v + (1 - beta2) * g * g
    return p, m, v


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "release" / LIBRARY_NAME
    lib = load(path)
    print(f"loaded {path} (adopt {lib.adopt_version().decode()})")

    n = 1000
    params, grads = inputs(n)
    initial = params.copy()
    exp_avg, exp_avg_sq = np.zeros(n, np.float32), np.zeros(n, np.float32)
    step = c_uint64(0)
    hyper = lib.adopt_hyper_default()
    hyper.lr, hyper.weight_decay, hyper.decouple = 1e-2, 0.01, 1
    for g in grads:
        adopt_step(lib, params, g, exp_avg, exp_avg_sq, step, hyper)  # in place

    failures = []
    expected = np.fromfile(ROOT / "tests" / "data" / "capi_python_expected.bin", dtype="<f4")
    expected = expected.reshape(3, n)
    for name, got, want in zip(("params", "exp_avg", "exp_avg_sq"),
                               (params, exp_avg, exp_avg_sq), expected):
        if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            lane = int(np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))[0])
            failures.append(f"{name} differs from Rust at lane {lane}: {got[lane]!r} vs {want[lane]!r}")
    if step.value != 5 or np.array_equal(params, initial):
        failures.append(f"the array did not move in place (step {step.value})")

    # An independent float64 model agrees to float32 precision.
    model = numpy_model(initial, grads, lr=1e-2, weight_decay=0.01)
    for name, got, want in zip(("params", "exp_avg", "exp_avg_sq"),
                               (params, exp_avg, exp_avg_sq), model):
        if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
            failures.append(f"{name} is far from the float64 model: {np.abs(got - want).max()}")

    # Bad input: an error with a message, and nothing changed.
    before = params.copy()
    try:
        adopt_step(lib, params, grads[0][:-1], exp_avg, exp_avg_sq, step, hyper)
        failures.append("a short gradient was accepted")
    except AdoptError as e:
        print(f"refused as expected: {e.message}")
        if e.status != ADOPT_STATUS_LENGTH_MISMATCH or "grads has 999 lanes" not in e.message:
            failures.append(f"unexpected error: {e}")
    if not np.array_equal(params, before) or step.value != 5:
        failures.append("a refused step changed the buffers")

    # The optimizer object: one group, one parameter, the same five steps.
    opt = c_void_p()
    check(lib, lib.adopt_optimizer_new(ctypes.byref(opt)))
    try:
        group, param = c_uint32(), c_uint32()
        check(lib, lib.adopt_optimizer_add_group(opt, ctypes.byref(hyper), ctypes.byref(group)))
        check(lib, lib.adopt_optimizer_add_param(opt, group, n, b"weight", ctypes.byref(param)))
        weights = inputs(n)[0]
        for g in grads:
            item = AdoptItem(param, *f32_buffer(weights, True), *f32_buffer(g, False))
            check(lib, lib.adopt_optimizer_step(opt, ctypes.byref(item), 1))
        if not np.array_equal(weights.view(np.uint32), expected[0].view(np.uint32)):
            failures.append("the optimizer object's result differs from Rust")
        size = c_size_t()
        check(lib, lib.adopt_optimizer_save(opt, None, 0, ctypes.byref(size)))
        checkpoint = np.zeros(size.value, np.uint8)
        check(lib, lib.adopt_optimizer_save(opt, checkpoint.ctypes.data_as(POINTER(c_uint8)),
                                            size, ctypes.byref(size)))
        if bytes(checkpoint[:8]) != b"ADOPTCK\0":
            failures.append("the checkpoint lacks its magic bytes")
    finally:
        lib.adopt_optimizer_free(opt)

    for f in failures:
        print("FAIL:", f)
    if failures:
        sys.exit(1)
    print(f"ok: {n} float32 lanes stepped in place 5 times through ctypes equal the Rust "
          f"result bit for bit; checkpoint of {size.value} bytes")


if __name__ == "__main__":
    main()
