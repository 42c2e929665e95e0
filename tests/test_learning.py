"""It learns: a small MLP GAN trained with the library's losses and train_step on the 8-Gaussians
ring, the standard mode-collapse toy, covers at least 6 of the 8 modes."""

import functools
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import config as config_lib
from gan_jax import optim
from gan_jax.models import Models
from gan_jax.state import create_train_state
from gan_jax.step import train_step

RADIUS, STD = 2.0, 0.02
MODES = np.array(
    [
        [RADIUS * math.cos(2 * math.pi * k / 8), RADIUS * math.sin(2 * math.pi * k / 8)]
        for k in range(8)
    ]
)


class ToyGenerator(nn.Module):
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, labels=None, *, train=True):
        h = nn.relu(nn.Dense(128)(z))
        h = nn.relu(nn.Dense(128)(h))
        return nn.Dense(2)(h)


class ToyDiscriminator(nn.Module):
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, labels=None, *, train=True):
        h = nn.relu(nn.Dense(128)(x))
        h = nn.relu(nn.Dense(128)(h))
        return nn.Dense(1)(h)[:, 0]


def _toy_config():
    config = config_lib.get_default_config()
    config.model = "seed_mlp"  # only its validation is used; the models are passed explicitly
    config.image_shape = (2,)
    config.latent_dim = 2
    config.batch_size = 256
    config.num_steps = 2500
    config.ema_decay = 0.0
    for player in (config.g_optimizer, config.d_optimizer):
        player.learning_rate = 1e-3
    return config


def _ring_batch(key, batch_size):
    mode_key, noise_key = jax.random.split(key)
    modes = jnp.asarray(MODES, jnp.float32)[jax.random.randint(mode_key, (batch_size,), 0, 8)]
    return {"image": modes + STD * jax.random.normal(noise_key, (batch_size, 2))}


def _modes_covered(samples, *, min_fraction=0.01, max_distance=0.25):
    """A mode is covered when at least 1% of samples land within 0.25 of it (modes are 1.53
    apart; the data's own spread is 0.02)."""
    distances = np.linalg.norm(samples[:, None, :] - MODES[None], axis=-1)
    nearest, closest = distances.min(axis=1), distances.argmin(axis=1)
    counts = np.bincount(closest[nearest < max_distance], minlength=8)
    return int(np.sum(counts >= min_fraction * len(samples)))


def ring_run(models: Models):
    """The 8-Gaussians run of `models`: (initial state, jitted train: state -> state after
    config.num_steps steps, sample: state -> generated points float [2000, 2])."""
    config = _toy_config()
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config, models=models, optimizers=optimizers)
    step = functools.partial(train_step, models=models, optimizers=optimizers, config=config)
    data_key, train_key, sample_key = jax.random.split(jax.random.key(1), 3)

    @jax.jit
    def train(state):
        def body(state, _):
            batch = _ring_batch(jax.random.fold_in(data_key, state.step), config.batch_size)
            return step(state, batch, train_key)[0], None

        return jax.lax.scan(body, state, length=config.num_steps)[0]

    def sample(state):
        z = jax.random.normal(sample_key, (2000, config.latent_dim))
        return np.asarray(models.generator.apply({"params": state.g_params}, z))

    return state, train, sample


def test_mlp_gan_covers_the_ring_modes():
    state, train, sample = ring_run(Models(ToyGenerator(), ToyDiscriminator(), pixel_range="unit"))
    untrained = _modes_covered(sample(state))
    start = time.process_time()
    state = jax.block_until_ready(train(state))
    cpu_seconds = time.process_time() - start
    trained = _modes_covered(sample(state))

    assert untrained <= 1, "control: an untrained generator should not cover the ring"
    assert trained >= 6, f"the trained generator covers only {trained} of 8 modes"
    assert cpu_seconds < 60, f"training took {cpu_seconds:.0f} s of CPU, over the 60 s budget"
