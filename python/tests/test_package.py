"""The package itself: importable without torch, typed, documented."""

import inspect
import pathlib
import subprocess
import sys

import adopt_rs


def test_import_without_torch():
    # A torch that cannot be imported: adopt_rs and its NumPy step still work.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, adopt_rs\n"
        "p = np.ones(3, np.float32)\n"
        "assert adopt_rs.adopt_step(p, p.copy(), np.zeros(3, np.float32), np.zeros(3, np.float32), 0) == 1\n"
        "try:\n"
        "    import adopt_rs.torch\n"
        "except ImportError:\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_typed_package():
    root = pathlib.Path(adopt_rs.__file__).parent
    assert (root / "py.typed").exists()
    assert (root / "_core.pyi").exists()
    stub = (root / "_core.pyi").read_text()
    for name in ("def numpy_step", "class Engine", "class AdoptError", "def kernel"):
        assert name in stub


def test_public_api_is_documented():
    import adopt_rs.torch

    for obj in (adopt_rs, adopt_rs.adopt_step, adopt_rs.kernel, adopt_rs.torch,
                adopt_rs.torch.ADOPT, adopt_rs.torch.ADOPT.step):
        assert inspect.getdoc(obj), obj
    assert adopt_rs.kernel() in ("avx512f", "avx2+fma", "neon", "portable")
    assert issubclass(adopt_rs.AdoptError, ValueError)


def test_docstring_examples():
    import doctest

    import adopt_rs.torch

    for module in (adopt_rs, adopt_rs.torch):
        failed, tried = doctest.testmod(module)
        assert tried > 0 and failed == 0, module
