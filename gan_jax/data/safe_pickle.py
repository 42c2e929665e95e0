"""A pickle reader that admits only what numpy arrays need.

Unpickling calls whatever callables the pickle names, so a pickle from the network can run any
code (e.g. `os.system`). `RestrictedUnpickler.find_class` is the single place where a pickle turns
a name into a callable; it resolves the handful of numpy names that rebuild arrays and refuses
every other name before anything is called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any, BinaryIO

# (module, name) pairs a pickle of numpy arrays / scalars uses, as written by numpy 1.x (numpy.core)
# and numpy 2.x (numpy._core), plus the codec Python 3 uses to pickle bytes under protocol < 3.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside ALLOWED_GLOBALS."""


def _resolve(module: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core (the old path warns); numpy 1 has only numpy.core.
    if module.startswith("numpy.core.") or module.startswith("numpy._core."):
        tail = module.split(".", 2)[2]
        for prefix in ("numpy._core.", "numpy.core."):
            try:
                return getattr(importlib.import_module(prefix + tail), name)
            except (ImportError, AttributeError):
                continue
    return getattr(importlib.import_module(module), name)


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` admits only ALLOWED_GLOBALS.

    Anything else raises UnsafePickleError naming the global, before it is imported or called.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only numpy array reconstruction "
                f"is allowed ({allowed})"
            )
        return _resolve(module, name)


def load(stream: BinaryIO | bytes) -> Any:
    """Unpickles one object from a binary stream (or bytes) with RestrictedUnpickler.

    `encoding="bytes"` reads Python 2 `str` payloads (numpy's array data in old pickles) as bytes
    without a latin-1 round trip, which would briefly double the memory of every array.
    """
    if isinstance(stream, bytes | bytearray):
        stream = io.BytesIO(stream)
    return RestrictedUnpickler(stream, encoding="bytes").load()
