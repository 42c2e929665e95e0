"""Several train steps per dispatch: `lax.scan` over `train_step`, batches drawn on device.

Small models lose most of their time to one host dispatch per step; here one call runs k steps,
each sampling its batch from the device-resident split as a pure function of (data seed, step),
so the k-step call computes exactly what k separate `train_step` calls on those batches would.

    step_k = fused_train_step(models=..., optimizers=..., config=..., mesh=mesh, num_steps=k)
    state, metrics = step_k(state, images, labels, key)   # metrics: {name: f32 [k]}

Runs under `jax.jit` + `jax.shard_map` on a 1-D data mesh: the state and the uint8 split are
replicated, and each device gathers and trains on its own rows of the global batch.

Convolutions on CPU: XLA:CPU hands a convolution to its fast (Eigen) kernels only in NHWC/HWIO
form, and the pass that rewrites other forms into it (ConvCanonicalization) visits only the entry
computation. The gradients of a convolution come out in other forms (e.g. `f01b_i01o->01bf` for
the kernel gradient), so inside a `lax.scan` body they fall back to a naive loop nest: measured
here (JAX 0.10.2, the dcgan at batch 256), about 90 s per step against about 1 s. So on CPU, a
step that contains a convolution is unrolled in full (`unroll=None`, the default, decides);
compile time then grows with k, about 10 s for k = 5 of the dcgan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from gan_jax import config as config_lib
from gan_jax import data, xla_options
from gan_jax.models import Models
from gan_jax.optim import Optimizers
from gan_jax.parallel import DATA_AXIS, check_divisible
from gan_jax.state import TrainState
from gan_jax.step import StepNoise, step_noise, train_step

# The noise of all k steps is drawn ahead of them while it takes at most this much memory.
NOISE_AHEAD_MAX_BYTES = 64 * 2**20


def local_batch_indices(
    steps: jax.Array,
    *,
    config: ml_collections.ConfigDict,
    num_examples: int,
    axis_name: str | None,
    data_seed: int | jax.Array | None = None,
) -> jax.Array:
    """This device's rows of the global batches at each of `steps` [k]: int32 [k, local batch],
    or [k, local batch, n_critic] when config.n_critic > 1 (`data.step_batch_indices`; all rows
    when `axis_name` is None). `data_seed` (may be traced) defaults to config.seed.

    With config.stack_on_the_fly each image is drawn as 3 digits: a trailing axis of 3,
    [k, local batch, (n_critic,) 3], for `data.stack_digits` (see gan_jax.data.sampling)."""
    # batch_size counts packs: a step reads pack images per pack (gan_jax.packing).
    digits = config_lib.digits_per_image(config)
    global_batch = config.batch_size * int(config_lib.setting(config, "pack")) * digits
    local = global_batch
    offset = 0
    if axis_name is not None:
        local = global_batch // lax.axis_size(axis_name)
        offset = lax.axis_index(axis_name) * local
    indices = functools.partial(
        data.step_batch_indices,
        n_critic=int(config.n_critic),
        seed=config.seed if data_seed is None else data_seed,
        num_examples=num_examples,
        batch_size=global_batch,
        offset=offset,
        size=local,
    )
    drawn = jax.vmap(indices)(steps)  # [k, local (, n_critic)]
    if digits == 1:
        return drawn
    # Image i's digits are draws digits*i .. digits*i + digits - 1 of its batch.
    drawn = drawn.reshape(drawn.shape[0], local // digits, digits, *drawn.shape[2:])
    return jnp.moveaxis(drawn, 2, -1)


def _has_convolution(jaxpr: jax.extend.core.Jaxpr) -> bool:
    """Whether `jaxpr` or any jaxpr nested in its equations' params holds a convolution."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if isinstance(sub, jax.extend.core.Jaxpr) and _has_convolution(sub):
                    return True
    return False


def _unroll_on_cpu(
    body: Callable, state: TrainState, indices: jax.Array, backend: str | None
) -> bool:
    """Full unrolling on CPU when the step convolves (see the module docstring)."""
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return False
    return _has_convolution(jax.make_jaxpr(body)(state, indices).jaxpr)


def multi_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    models: Models,
    optimizers: Optimizers,
    config: ml_collections.ConfigDict,
    num_steps: int,
    axis_name: str | None = None,
    unroll: bool | None = None,
    backend: str | None = None,
    data_seed: int | jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`num_steps` train steps on batches sampled on device; metrics stacked to [num_steps].

    `data_seed` (int or traced int scalar) keys the batch order; None uses config.seed.

    `unroll`: unroll the `lax.scan` in full; None does so exactly when `backend` (default: JAX's
    default backend) is CPU and the step contains a convolution (see the module docstring).
    """

    # The indices of all k batches in one vectorised computation, ahead of the steps: inside
    # the scan, each step's index arithmetic (a chain of small integer ops) sat on the critical
    # path before the step could start. Batch i is still sample_batch's batch at step + i.
    steps = state.step + jnp.arange(num_steps, dtype=jnp.int32)
    all_indices = local_batch_indices(
        steps,
        config=config,
        num_examples=images.shape[0],
        axis_name=axis_name,
        data_seed=data_seed,
    )

    # Likewise the noise: on CPU, threefry inside the loop ran as a rolled loop of tiny ops on
    # one step's [B, latent] array at a time, about 5% of a seed_mlp step. Drawn for all steps
    # at once it is the same bits (tests/test_fused.py checks seed_mlp bitwise).
    local_batch = all_indices.shape[1]  # images (not digits) this device reads a step
    noise_bytes = num_steps * config.n_critic * local_batch * (config.latent_dim + 1) * 4
    all_noise = None
    if noise_bytes <= NOISE_AHEAD_MAX_BYTES:
        draw = functools.partial(
            step_noise, key, local_batch=local_batch, config=config, axis_name=axis_name
        )
        all_noise = jax.vmap(draw)(steps)

    def body(state, xs):
        indices, noise = xs
        batch = data.gather_batch(images, labels, indices, pixel_range=models.pixel_range)
        if config_lib.digits_per_image(config) > 1:
            batch = data.stack_digits(batch)
        return train_step(
            state,
            batch,
            key,
            models=models,
            optimizers=optimizers,
            config=config,
            axis_name=axis_name,
            noise=noise,
        )

    def inputs_of_step(i: int) -> tuple[jax.Array, StepNoise | None]:
        noise = None if all_noise is None else jax.tree.map(lambda x: x[i], all_noise)
        return all_indices[i], noise

    if unroll is None:
        unroll = _unroll_on_cpu(body, state, inputs_of_step(0), backend)
    if not unroll:
        # One step per trip. Two or four per trip ran seed_mlp 2-11% faster (XLA:CPU overlaps
        # one step's tail with the next one's head only within a trip), but the states then
        # differ from separate steps, and across splits of the same steps, in the last bit
        # (with YNNPACK's dots or Eigen's alike).
        return lax.scan(body, state, (all_indices, all_noise))
    # Straight-line code, not lax.scan(unroll=True): that keeps a one-trip while loop when
    # num_steps == 1, and XLA:CPU then leaves it (and its convolutions) as it is.
    all_metrics = []
    for i in range(num_steps):
        state, metrics = body(state, inputs_of_step(i))
        all_metrics.append(metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *all_metrics)


def fused_train_step(
    *,
    models: Models,
    optimizers: Optimizers,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    num_steps: int,
    axis_name: str = DATA_AXIS,
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """`multi_step` under `jax.jit(jax.shard_map(...))` on `mesh`, with the state donated.

    Arguments of the returned function: the state and the uint8 split (images [N, H, W, C],
    labels [N]) replicated on the mesh, and the train key.
    """
    if num_steps < 1:
        raise ValueError(f"steps per dispatch must be at least 1, got {num_steps}")
    check_divisible(config.batch_size, mesh.shape[axis_name])
    platform = mesh.devices.flat[0].platform
    body = functools.partial(
        multi_step,
        models=models,
        optimizers=optimizers,
        config=config,
        num_steps=num_steps,
        axis_name=axis_name,
        backend=platform,
    )
    # check_vma=False for pmap semantics: train_step averages gradients itself (see parallel.py).
    mapped = jax.shard_map(
        body, mesh=mesh, in_specs=(P(), P(), P(), P()), out_specs=(P(), P()), check_vma=False
    )
    return xla_options.jit(mapped, platform=platform, donate_argnums=(0,))
