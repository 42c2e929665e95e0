"""The train step: `n_critic` discriminator updates, then one generator update. Pure and jit-able.

    state, metrics = train_step(state, batch, key, models=..., optimizers=..., config=...)

`batch` is {"image": f32 [B, H, W, C] in the generator's pixel range, "label": int [B]} (labels
are needed only by conditional models). With n_critic > 1 each critic update trains on a real
batch of its own, as in Gulrajani et al.'s Algorithm 1: the batch then carries one per update,
{"image": [B, n_critic, H, W, C], "label": [B, n_critic]}, and update i reads [:, i]. The
example axis stays first so that every data-parallel helper, which splits the leading axis,
splits these batches as it splits single ones; `data.sample_batch(..., n_critic=...)` draws
them. To reuse one batch on purpose, pass `jnp.repeat(x[:, None], n_critic, axis=1)`.

All randomness of step s comes from `fold_in(key, state.step)`; pass the same `key` every step.
`step_noise` draws it; code that runs many steps at once (gan_jax/fused.py) may draw it ahead and
pass it in as `noise`.

Data-parallel: with `axis_name`, `batch` holds this device's B/n examples. Gradients, BatchNorm
statistics and metrics are averaged over the axis, and the noise is drawn for the global batch and
sliced by `lax.axis_index`, so the step on n devices computes the same function of the global batch
as the step on one device: a run does not depend on how many devices it ran on.

Packing (PacGAN, `config.pack = m`): the batch holds m * B images (B = batch_size packs), the
generator makes as many, and the discriminator judges them m at a time, concatenated in order on
the last axis (`gan_jax.packing`); the penalties act on packs, and the relativistic loss pairs
real pack i with fake pack i.

Simultaneous updates (`config.simultaneous_updates = True`, n_critic = 1; PacGAN's 2-D code):
the generator's gradient is taken through the discriminator as it was before this step's
discriminator update, so both gradients come from the same parameters and both updates apply
together. By default the updates alternate: G's gradient goes through the D its update just made.

Schedules (R3GAN's burn-in, gan_jax.schedules): the R1 / R2 weights and the EMA decay are read
at `state.step`, Adam's b2 at the optimiser's own update count, all pure functions of the step.

To change the objective, add a pair of functions to `gan_jax.losses`; the step reads them from
`config.loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from gan_jax import config as config_lib
from gan_jax import losses, schedules
from gan_jax.models import SPECTRAL_NORM, Models, apply_model
from gan_jax.optim import Optimizers, ema_decay_of
from gan_jax.packing import pack
from gan_jax.state import TrainState

Batch = dict[str, jax.Array]


def _global_draw(sampler, key: jax.Array, local_shape: tuple[int, ...], axis_name: str | None):
    """Draws `sampler(key, shape)` for the global batch and returns this device's slice.

    Every device draws the same global array (cheap next to the models) so that the noise a given
    example sees does not depend on the number of devices.
    """
    if axis_name is None:
        return sampler(key, local_shape)
    local = local_shape[0]
    num_devices = lax.axis_size(axis_name)
    noise = sampler(key, (num_devices * local, *local_shape[1:]))
    return lax.dynamic_slice_in_dim(noise, lax.axis_index(axis_name) * local, local)


def _pmean(tree: Any, axis_name: str | None) -> Any:
    # A mean over one device is the identity, but XLA:CPU still runs an all-reduce for it
    # (about 16 us each, 3% of a seed_mlp step).
    if axis_name is None or lax.axis_size(axis_name) == 1:
        return tree
    return lax.pmean(tree, axis_name)


def _pmean_statistics(d_state: dict[str, Any], axis_name: str | None) -> dict[str, Any]:
    """Averages the discriminator's batch-dependent collections over devices. Spectral-norm
    vectors are left as they are: each device computes them from the same replicated weights
    and vectors, so they are already identical, and a mean would only add rounding."""
    return {
        name: collection if name == SPECTRAL_NORM else _pmean(collection, axis_name)
        for name, collection in d_state.items()
    }


def global_norm(tree: Any) -> jax.Array:
    """sqrt(sum of squares) over every leaf: `optax.tree.norm`, with each leaf's sum of squares
    as a dot product. XLA:CPU runs a plain squared-sum reduction over a [784, 128] gradient in
    about 80 us; as a dot it takes a few."""
    leaves = [jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)]
    # HIGHEST: on TPU a default-precision f32 dot rounds its inputs to bf16.
    return jnp.sqrt(sum(jnp.dot(leaf, leaf, precision=lax.Precision.HIGHEST) for leaf in leaves))


class StepNoise(NamedTuple):
    """The randomness of one train step, for this device's B examples."""

    z: jax.Array  # f32 [n_critic, B, latent_dim]: the generator's input, per critic update
    mix: jax.Array  # f32 [n_critic, B / pack] in [0, 1): WGAN-GP weights, per update and pack


def step_noise(
    key: jax.Array,
    step: jax.Array | int,
    *,
    local_batch: int,
    config: ml_collections.ConfigDict,
    axis_name: str | None = None,
) -> StepNoise:
    """The noise `train_step` uses at `step`: a pure function of (key, step), vmap-able over step.

    `local_batch`: this device's generator samples (packs times config.pack). With `axis_name`,
    this device's rows of the global batch's noise (see `_global_draw`).
    """
    step_key = jax.random.fold_in(key, step)
    local_packs = local_batch // int(config_lib.setting(config, "pack"))
    zs, mixes = [], []
    for critic_step in range(config.n_critic):
        z_key, mix_key = jax.random.split(jax.random.fold_in(step_key, critic_step))
        shape = (local_batch, config.latent_dim)
        zs.append(_global_draw(jax.random.normal, z_key, shape, axis_name))
        mixes.append(_global_draw(jax.random.uniform, mix_key, (local_packs,), axis_name))
    return StepNoise(jnp.stack(zs), jnp.stack(mixes))


def check_batch(batch: Batch, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError when `batch` does not fit the models that `config` describes."""
    if "image" not in batch:
        raise ValueError(f"batch needs an 'image' entry; got keys {sorted(batch)}")
    n_critic, want_shape = int(config.n_critic), tuple(config.image_shape)
    shape = tuple(batch["image"].shape)
    if n_critic > 1 and shape[2:] == want_shape and shape[1] != n_critic:
        raise ValueError(
            f"config.n_critic={n_critic} needs one real batch per critic update, images "
            f"[B, {n_critic}, *image_shape]; got {shape}"
        )
    if n_critic > 1 and shape[1:] == want_shape:
        raise ValueError(
            f"config.n_critic={n_critic} needs one real batch per critic update, images "
            f"[B, {n_critic}, *image_shape], got one batch {shape}: draw them with "
            f"data.sample_batch(..., n_critic={n_critic}), or repeat this one on axis 1 "
            "to reuse it on purpose"
        )
    m = int(config_lib.setting(config, "pack"))
    if shape[0] % m:
        raise ValueError(
            f"config.pack={m} packs {m} images per discriminator input, so the batch must hold "
            f"a multiple of {m} images (batch_size packs x {m}); got {shape[0]}"
        )
    image_shape = shape[2:] if n_critic > 1 else shape[1:]
    if image_shape != want_shape:
        raise ValueError(
            f"config.image_shape is {want_shape} but the batch holds images of "
            f"shape {image_shape}; set config.image_shape to the data's (H, W, C)"
        )
    if config.num_classes > 0 and "label" not in batch:
        raise ValueError(
            f"config.num_classes={config.num_classes} makes the models conditional, so the "
            "batch needs a 'label' entry"
        )


class GeneratorForward(NamedTuple):
    """One training-mode generator pass, kept so its backward pass can run later."""

    fake: jax.Array  # [B, H, W, C] generated images, outside any gradient
    pullback: Callable[[jax.Array], tuple[Any]]  # cotangent on `fake` -> (grads of g_params,)
    g_state: dict[str, Any]  # the generator's mutable collections after this pass


def generator_forward(
    state: TrainState, z: jax.Array, labels: jax.Array | None, *, generator: nn.Module
) -> GeneratorForward:
    """Runs the generator on `z` [B, latent] in training mode and keeps its VJP."""

    def generate(g_params):
        return apply_model(generator, g_params, state.g_state, z, labels, train=True)

    fake, pullback, g_state = jax.vjp(generate, state.g_params, has_aux=True)
    return GeneratorForward(lax.stop_gradient(fake), pullback, g_state)


def discriminator_update(
    state: TrainState,
    real: jax.Array,
    fake: jax.Array,
    labels: jax.Array | None,
    mix: jax.Array,
    *,
    discriminator: nn.Module,
    optimizer: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step of the discriminator on real [B, ...] and fake [B, ...] images.

    Changes only d_params, d_state and d_opt_state. With config.pack = m the B images of each
    side are judged as B / m packs; `mix` [B / m] in [0, 1) places the WGAN-GP interpolates
    between packs (unused when config.gp_weight == 0).

    The loss minimised: d_loss + (γ1 / 2) R1 + (γ2 / 2) R2 + λ GP, R1 on the real packs, R2 on
    the fake packs (detached from G), γ1 / γ2 config.r1_weight / r2_weight as scheduled at
    state.step (`schedules.penalty_weight`); R3GAN trains with the relativistic loss and both
    penalties.
    """
    objective = losses.get_loss(config.loss)
    m = int(config_lib.setting(config, "pack"))
    real, fake = pack(real, m), pack(fake, m)
    batch_size = real.shape[0]

    def d_logits(d_params, images, image_labels):
        return apply_model(discriminator, d_params, state.d_state, images, image_labels, train=True)

    def d_loss_fn(d_params):
        if "batch_stats" in state.d_state:
            # BatchNorm in D (unrolled_dcgan): each batch normalised by its own statistics, as
            # DCGAN and PacGAN's code do; the running averages see real, then fake.
            real_logits, d_state = apply_model(
                discriminator, d_params, state.d_state, real, labels, train=True
            )
            fake_logits, d_state = apply_model(
                discriminator, d_params, d_state, fake.astype(real.dtype), labels, train=True
            )
        else:
            # One call: without batch-dependent layers the logits are those of two.
            both = jnp.concatenate([real, fake.astype(real.dtype)], axis=0)
            both_labels = None if labels is None else jnp.concatenate([labels, labels], axis=0)
            logits, d_state = d_logits(d_params, both, both_labels)
            real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
        adversarial = objective.d_loss(real_logits, fake_logits)

        def logit_fn(images):
            return d_logits(d_params, images, labels)[0]

        zero = jnp.zeros((), jnp.float32)
        r2_final = float(config_lib.setting(config, "r2_weight"))
        # Python floats without a burn-in: the arithmetic of runs made before schedules.
        r1_weight = schedules.penalty_weight(config.r1_weight, state.step, config=config)
        r2_weight = schedules.penalty_weight(r2_final, state.step, config=config)
        r1 = losses.r1_penalty(logit_fn, real) if config.r1_weight > 0 else zero
        r2 = losses.r2_penalty(logit_fn, fake.astype(real.dtype)) if r2_final > 0 else zero
        gp = losses.gradient_penalty(logit_fn, real, fake, mix) if config.gp_weight > 0 else zero
        total = adversarial + 0.5 * r1_weight * r1 + config.gp_weight * gp
        if r2_final > 0:
            total = total + 0.5 * r2_weight * r2
        metrics = {
            "d_loss": adversarial,
            "r1_penalty": r1,
            "r2_penalty": r2,
            "gp_penalty": gp,
            # D's output as the objective reads it (a probability or a raw score; losses.py).
            "d_real": jnp.mean(objective.d_output(real_logits)),
            "d_fake": jnp.mean(objective.d_output(fake_logits)),
        }
        return total, (metrics, d_state)

    d_grads, (metrics, d_state) = jax.grad(d_loss_fn, has_aux=True)(state.d_params)
    d_grads = _pmean(d_grads, axis_name)
    updates, d_opt_state = optimizer.update(d_grads, state.d_opt_state, state.d_params)
    metrics["d_grad_norm"] = global_norm(d_grads)
    new_state = state.replace(
        d_params=optax.apply_updates(state.d_params, updates),
        d_state=_pmean_statistics(d_state, axis_name),
        d_opt_state=d_opt_state,
    )
    return new_state, metrics


def generator_update(
    state: TrainState,
    forward: GeneratorForward,
    labels: jax.Array | None,
    real: jax.Array | None = None,
    *,
    discriminator: nn.Module,
    optimizer: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step of the generator through the current discriminator.

    Reuses `forward` (the generator pass that made the discriminator's fakes), since the
    generator's params have not changed since. Changes only g_params, g_state, g_opt_state and
    g_ema_params, and counts the step.

    `real` [B, ...]: the real images of the last discriminator update (`labels` are theirs and
    the fakes'), read only by objectives with `needs_real_in_g` (the relativistic loss pairs
    fake pack i with real pack i); None for the others, which never run D on real data here.
    """
    objective = losses.get_loss(config.loss)
    m = int(config_lib.setting(config, "pack"))

    real_logits = None
    if objective.needs_real_in_g:
        if real is None:
            raise ValueError(
                f"config.loss={config.loss!r} pairs fakes with real data in the generator's "
                "update: pass generator_update the real batch of the last discriminator update"
            )
        # R3GAN's generator phase scores the reals with D as its update left it (its loop runs
        # D's phase, then G's). D's returned collections are dropped, as for the fakes below, so
        # G's update leaves d_state as D's update did: train-mode BatchNorm (unrolled_dcgan)
        # normalises the reals by their own batch statistics, as in D's update, but does not
        # move the running averages, nor do the spectral-norm vectors advance. Constant for G's
        # gradient: the real scores do not depend on g_params.
        real_logits, _ = apply_model(
            discriminator, state.d_params, state.d_state, pack(real, m), labels, train=True
        )
        real_logits = lax.stop_gradient(real_logits)

    def g_loss_fn(fake):
        fake_logits, _ = apply_model(
            discriminator, state.d_params, state.d_state, pack(fake, m), labels, train=True
        )
        return objective.g_loss(fake_logits, real_logits)

    g_loss, fake_cotangent = jax.value_and_grad(g_loss_fn)(forward.fake)
    (g_grads,) = forward.pullback(fake_cotangent)
    g_grads = _pmean(g_grads, axis_name)
    updates, g_opt_state = optimizer.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    g_ema_params = state.g_ema_params
    if g_ema_params is not None:
        decay = ema_decay_of(state.step, config=config)
        g_ema_params = optax.incremental_update(g_params, g_ema_params, 1.0 - decay)
    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        g_state=forward.g_state,
        g_opt_state=g_opt_state,
        g_ema_params=g_ema_params,
    )
    return new_state, {"g_loss": g_loss, "g_grad_norm": global_norm(g_grads)}


def train_step(
    state: TrainState,
    batch: Batch,
    key: jax.Array,
    *,
    models: Models,
    optimizers: Optimizers,
    config: ml_collections.ConfigDict,
    axis_name: str | None = None,
    noise: StepNoise | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One GAN training step; returns the new state and scalar metrics (averaged over devices).

    `noise`: `step_noise(key, state.step, ...)` drawn ahead (the step draws it when None).

    Metrics: d_loss and g_loss (the objectives without penalties), r1_penalty, r2_penalty and
    gp_penalty (unweighted; 0 when off), d_real and d_fake (the mean of D's output on real and
    fake images in the last discriminator update, as the loss reads it: a probability for
    minimax / non_saturating, the raw score for hinge / wasserstein / least_squares /
    relativistic; see gan_jax.losses), d_grad_norm and g_grad_norm (global norms of the
    averaged grads).
    The generator's BatchNorm running averages advance once a step, with its last forward pass.
    """
    check_batch(batch, config)
    # Batch-dependent layers must reduce over the same device axis as the gradients.
    generator = models.generator.clone(axis_name=axis_name)
    discriminator = models.discriminator.clone(axis_name=axis_name)
    real = batch["image"]
    labels = batch.get("label") if config.num_classes > 0 else None
    local_batch = real.shape[0]

    def critic_batch(x: jax.Array | None, critic_step: int) -> jax.Array | None:
        # [B, n_critic, ...] -> update critic_step's [B, ...]; one batch when n_critic == 1.
        return x if x is None or config.n_critic == 1 else x[:, critic_step]

    if noise is None:
        noise = step_noise(
            key, state.step, local_batch=local_batch, config=config, axis_name=axis_name
        )
    want_z = (config.n_critic, local_batch, config.latent_dim)
    want_mix = (config.n_critic, local_batch // int(config_lib.setting(config, "pack")))
    if tuple(noise.z.shape) != want_z or tuple(noise.mix.shape) != want_mix:
        raise ValueError(
            f"noise has z {tuple(noise.z.shape)} and mix {tuple(noise.mix.shape)}; this step "
            f"needs z {want_z} (n_critic, local batch, latent_dim) and mix {want_mix} "
            "(n_critic, local packs): draw it with step_noise"
        )

    simultaneous = config_lib.setting(config, "simultaneous_updates")
    if simultaneous:
        config_lib.check_simultaneous_updates(config)
        before = state  # the discriminator G's gradient reads
    for critic_step in range(config.n_critic):
        critic_labels = critic_batch(labels, critic_step)
        forward = generator_forward(state, noise.z[critic_step], critic_labels, generator=generator)
        state, d_metrics = discriminator_update(
            state,
            critic_batch(real, critic_step),
            forward.fake,
            critic_labels,
            noise.mix[critic_step],
            discriminator=discriminator,
            optimizer=optimizers.discriminator,
            config=config,
            axis_name=axis_name,
        )
    # The last forward pass serves the generator update too: its params have not moved. So does
    # the last real batch, for a loss that pairs fakes with reals in G's update: one real batch
    # per step for both players, what the data pipeline draws and images/s counts. (R3GAN's
    # loop, training/training_loop.py in brownvc/R3GAN, draws its G phase a real batch and
    # latents of its own; here G's pairs reuse D's reals and fakes, as its latents already do.)
    if simultaneous:  # G's update through D before its update; D's update kept as it was
        d_after = (state.d_params, state.d_state)
        state = state.replace(d_params=before.d_params, d_state=before.d_state)
    state, g_metrics = generator_update(
        state,
        forward,
        critic_labels,
        critic_batch(real, config.n_critic - 1),
        discriminator=discriminator,
        optimizer=optimizers.generator,
        config=config,
        axis_name=axis_name,
    )
    if simultaneous:
        state = state.replace(d_params=d_after[0], d_state=d_after[1])
    return state, _pmean({**d_metrics, **g_metrics}, axis_name)
