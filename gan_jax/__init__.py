"""gan_jax: functional GAN training in JAX.

The public API, importable from the top level (`from gan_jax import train_step`):

- configuration: `get_default_config`, `validate_config`, `ConfigError`;
- building a run: `build_models` (the `Models` pair), `build_optimizers` (the `Optimizers`
  pair), `create_train_state` (the `TrainState` pytree of arrays);
- the step: `train_step` (pure; the noise of step s comes from `fold_in(key, s)`) and
  `step_noise` (that noise, drawn ahead);
- data-parallel and fused forms: `pmap_train_step` (`jax.pmap`), `sharded_train_step` (`jax.jit`
  of `jax.shard_map` on a `data_mesh()`), `fused_train_step` (k steps per dispatch, batches drawn
  on device);
- the loop and scoring: `train_and_evaluate(config, workdir)`, `evaluate_generator`.

Each module stays importable as before (`from gan_jax import models, parallel`), and holds the rest
(`parallel.replicate`, `parallel.shard_batch`, `losses.get_loss`, ...).

`import gan_jax` alone imports none of JAX, Flax, Optax or TFDS: each name is loaded from its
module on first use (PEP 562), so command lines and tools that only need a submodule start fast.
"""

from __future__ import annotations

import importlib

from gan_jax import cpu_mode as _cpu_mode

# GAN_JAX_PORTABLE_CPU=1: XLA reads its flags when JAX starts a backend, so they go in now,
# before any JAX code of the process runs (gan_jax.cpu_mode; no JAX is imported here).
_cpu_mode.apply_portable_flags()

# typing.TYPE_CHECKING without importing typing (a few ms); type checkers read this name the same.
TYPE_CHECKING = False

# name -> the module that defines it.
_EXPORTS = {
    "ConfigError": "gan_jax.config",
    "get_default_config": "gan_jax.config",
    "validate_config": "gan_jax.config",
    "Models": "gan_jax.models",
    "build_models": "gan_jax.models",
    "Optimizers": "gan_jax.optim",
    "build_optimizers": "gan_jax.optim",
    "TrainState": "gan_jax.state",
    "create_train_state": "gan_jax.state",
    "train_step": "gan_jax.step",
    "step_noise": "gan_jax.step",
    "StepNoise": "gan_jax.step",
    "data_mesh": "gan_jax.parallel",
    "pmap_train_step": "gan_jax.parallel",
    "sharded_train_step": "gan_jax.parallel",
    "fused_train_step": "gan_jax.fused",
    "train_and_evaluate": "gan_jax.train",
    "evaluate_generator": "gan_jax.evaluate",
}

# Submodules reachable as attributes (`gan_jax.parallel`) without importing them first.
_SUBMODULES = frozenset(
    {
        "checkpointing",
        "config",
        "cpu_mode",
        "data",
        "errors",
        "evaluate",
        "evaluation",
        "fingerprint",
        "fused",
        "layers",
        "losses",
        "main",
        "models",
        "optim",
        "packing",
        "parallel",
        "paths",
        "plots",
        "r3gan",
        "schedules",
        "seeds",
        "state",
        "step",
        "train",
        "workdir_lock",
        "writers",
        "xla_options",
    }
)

__all__ = [  # the keys of _EXPORTS, spelled out for tools that read __all__ statically
    "ConfigError",
    "Models",
    "Optimizers",
    "StepNoise",
    "TrainState",
    "build_models",
    "build_optimizers",
    "create_train_state",
    "data_mesh",
    "evaluate_generator",
    "fused_train_step",
    "get_default_config",
    "pmap_train_step",
    "sharded_train_step",
    "step_noise",
    "train_and_evaluate",
    "train_step",
    "validate_config",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these
    from typing import Any

    from gan_jax.config import ConfigError, get_default_config, validate_config
    from gan_jax.evaluate import evaluate_generator
    from gan_jax.fused import fused_train_step
    from gan_jax.models import Models, build_models
    from gan_jax.optim import Optimizers, build_optimizers
    from gan_jax.parallel import data_mesh, pmap_train_step, sharded_train_step
    from gan_jax.state import TrainState, create_train_state
    from gan_jax.step import StepNoise, step_noise, train_step
    from gan_jax.train import train_and_evaluate


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
