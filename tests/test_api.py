"""The public API at gan_jax's top level: every name resolves, and `import gan_jax` stays light."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import gan_jax

HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow_datasets", "ml_collections")


def test_import_gan_jax_loads_no_heavy_library():
    # A fresh interpreter: this one has long imported JAX.
    code = "import sys, gan_jax; print(' '.join(m for m in sys.modules if m.split('.')[0] in %r))"
    result = subprocess.run(
        [sys.executable, "-c", code % (HEAVY,)], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == []


@pytest.mark.parametrize("name", gan_jax.__all__)
def test_exported_name_is_the_defining_modules_object(name):
    module = importlib.import_module(gan_jax._EXPORTS[name])
    assert getattr(gan_jax, name) is getattr(module, name)
    assert name in dir(gan_jax)


def test_the_api_listing_is_consistent():
    assert gan_jax.__all__ == sorted(gan_jax._EXPORTS)
    # What type checkers see (the TYPE_CHECKING imports) is what __getattr__ loads at run time.
    seen = {}
    for node in ast.walk(ast.parse(inspect.getsource(gan_jax))):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("gan_jax."):
            seen.update({alias.name: node.module for alias in node.names})
    assert seen == gan_jax._EXPORTS
    # The core the product promises: train_step and what it needs, in every parallel form.
    for name in (
        "train_step",
        "TrainState",
        "create_train_state",
        "step_noise",
        "build_models",
        "build_optimizers",
        "get_default_config",
        "pmap_train_step",
        "sharded_train_step",
        "fused_train_step",
        "evaluate_generator",
    ):
        assert name in gan_jax.__all__


def test_submodules_import_as_before():
    from gan_jax import config, models, parallel  # noqa: F401

    assert gan_jax.models is sys.modules["gan_jax.models"]
    assert callable(gan_jax.config.get_default_config)
    # Every submodule is reachable as an attribute of the package, imported or not.
    names = {info.name for info in pkgutil.iter_modules(gan_jax.__path__)}
    assert names == gan_jax._SUBMODULES
    for name in names:
        assert getattr(gan_jax, name) is importlib.import_module(f"gan_jax.{name}")


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'train_stepp'"):
        gan_jax.train_stepp  # noqa: B018
    with pytest.raises(ImportError):
        from gan_jax import no_such_name  # noqa: F401
