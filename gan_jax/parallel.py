"""Data-parallel forms of the train step: `jax.pmap`, and `jax.jit` + `jax.shard_map` on a mesh.

Both compute the same function as `train_step` on the global batch (see `gan_jax.step`).

pmap (what most JAX GAN code uses; in maintenance mode since JAX 0.8):

    p_step = pmap_train_step(models=..., optimizers=..., config=...)
    p_state = replicate(state)
    p_state, metrics = p_step(p_state, shard_batch(global_batch), key)
    state = unreplicate(p_state)

shard_map (the form newer JAX recommends; arrays stay global, the mesh says where they live):

    mesh = data_mesh()
    s_step = sharded_train_step(models=..., optimizers=..., config=..., mesh=mesh)
    state = replicate_on_mesh(state, mesh)
    state, metrics = s_step(state, shard_on_mesh(global_batch, mesh), key)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax import xla_options
from gan_jax.config import ConfigError
from gan_jax.models import Models
from gan_jax.optim import Optimizers
from gan_jax.step import train_step

DATA_AXIS = "data"


def _local_devices(devices: Sequence[jax.Device] | None) -> list[jax.Device]:
    return list(devices) if devices is not None else jax.local_devices()


def check_divisible(global_batch_size: int, num_devices: int) -> None:
    """Raises ConfigError (a ValueError) unless the global batch splits evenly across devices."""
    if global_batch_size % num_devices:
        raise ConfigError(
            f"config.batch_size={global_batch_size} is not divisible by the {num_devices} "
            f"devices; use a multiple of {num_devices}"
        )


def _stacked_sharding(devices: list[jax.Device]) -> NamedSharding:
    """Leading axis of size len(devices), one slice per device: the layout pmap expects."""
    return NamedSharding(Mesh(np.array(devices), ("devices",)), P("devices"))


def replicate(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """Copies every leaf to each device, stacked on a new leading axis (pmap's input layout).

    Builds the global array from one copy per device, so no device ever holds all copies (what
    the removed `jax.device_put_replicated` did).
    """
    devices = _local_devices(devices)
    sharding = _stacked_sharding(devices)

    def put(leaf):
        leaf = jnp.asarray(leaf)
        shards = [jax.device_put(leaf[None], device) for device in devices]
        return jax.make_array_from_single_device_arrays(
            (len(devices), *leaf.shape), sharding, shards
        )

    return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of every leaf of a replicated tree."""
    return jax.tree.map(lambda leaf: leaf[0], tree)


def shard_batch(batch: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """Splits the leading (global batch) axis B of every leaf into [n_devices, B / n_devices]."""
    devices = _local_devices(devices)
    sharding = _stacked_sharding(devices)

    def split(leaf):
        check_divisible(leaf.shape[0], len(devices))
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        return jax.device_put(leaf.reshape((len(devices), -1, *leaf.shape[1:])), sharding)

    return jax.tree.map(split, batch)


def pmap_train_step(
    *,
    models: Models,
    optimizers: Optimizers,
    config: ml_collections.ConfigDict,
    axis_name: str = DATA_AXIS,
    devices: Sequence[jax.Device] | None = None,
) -> Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """`train_step` under `jax.pmap`: (replicated state, sharded batch, key) -> (state, metrics).

    The state is donated: its buffers are reused for the new state. The key is shared by all
    devices (the step derives each device's noise from it). Metrics come back replicated.
    `jax.pmap` takes no compiler options, so on CPU this form runs XLA's default kernels, about
    1.4x slower for the DCGAN than `sharded_train_step` (see gan_jax/xla_options.py), unless
    compiled ahead: `step.lower(state, batch, key).compile(
    compiler_options=xla_options.compiler_options())`.
    """
    step = functools.partial(
        train_step, models=models, optimizers=optimizers, config=config, axis_name=axis_name
    )
    return jax.pmap(
        step, axis_name=axis_name, in_axes=(0, 0, None), donate_argnums=(0,), devices=devices
    )


def data_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over `devices` (default: all devices, of every process) named `axis_name`."""
    devices = list(devices) if devices is not None else jax.devices()
    return Mesh(np.array(devices), (axis_name,))


def replicate_on_mesh(tree: Any, mesh: Mesh) -> Any:
    """Puts every leaf, whole, on every device of `mesh`.

    Always copies, so donating the result to a step never deletes the caller's `tree`.
    """
    # device_put(..., may_alias=False) still aliased the device-0 shard on CPU (JAX 0.10.2).
    return jax.device_put(jax.tree.map(jnp.copy, tree), NamedSharding(mesh, P()))


def shard_on_mesh(batch: Any, mesh: Mesh, axis_name: str = DATA_AXIS) -> Any:
    """Splits the leading (global batch) axis of every leaf across the mesh's `axis_name`."""
    num_devices = mesh.shape[axis_name]
    for leaf in jax.tree.leaves(batch):
        check_divisible(leaf.shape[0], num_devices)
    return jax.device_put(batch, NamedSharding(mesh, P(axis_name)))


def sharded_train_step(
    *,
    models: Models,
    optimizers: Optimizers,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    axis_name: str = DATA_AXIS,
) -> Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """`train_step` under `jax.jit(jax.shard_map(...))`: global arrays in, global arrays out.

    The state is replicated over the mesh (P()), the batch split along `axis_name`; inside,
    each device runs `train_step` on its slice with the collectives of `axis_name`. The state is
    donated.
    """
    check_divisible(config.batch_size, mesh.shape[axis_name])
    step = functools.partial(
        train_step, models=models, optimizers=optimizers, config=config, axis_name=axis_name
    )
    # check_vma=False gives pmap's semantics: the step averages gradients itself (lax.pmean).
    # With the check on, autodiff would already psum the gradients of the replicated params,
    # and the step's own average would leave them n times too large.
    mapped = jax.shard_map(
        step,
        mesh=mesh,
        in_specs=(P(), P(axis_name), P()),
        out_specs=(P(), P()),
        check_vma=False,
    )
    return xla_options.jit(mapped, platform=mesh.devices.flat[0].platform, donate_argnums=(0,))
