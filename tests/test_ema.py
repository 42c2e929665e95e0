"""The EMA generator: its decay ramps up from the first update, and it is sampled with BatchNorm
statistics of its own (standing statistics recomputed from the EMA params)."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import evaluate, optim, train
from gan_jax import models as models_lib
from gan_jax import state as state_lib
from gan_jax import step as step_lib
from tests.helpers import assert_trees_equal, tiny_config


def test_init_weight_after_n_updates_is_the_analytic_bound():
    """Weight left on the initialisation after N ramped updates: prod_t min(d, (1+t)/(10+t)),
    which is 9! N! / (N + 9)! while the ramp is below d; a constant 0.995 leaves 37% at 200."""
    decay_of = jax.jit(functools.partial(optim.ema_decay_at, decay=0.995, rampup=True))
    ema = jnp.ones(())  # the init; every later param is 0, so the EMA is the init's weight
    weights = []
    for t in range(200):
        ema = optax.incremental_update(jnp.zeros(()), ema, 1.0 - decay_of(t))
        weights.append(float(ema))
    for n in (1, 10, 20, 200):
        np.testing.assert_allclose(weights[n - 1], 1.0 / math.comb(n + 9, 9), rtol=1e-4)
    assert weights[199] < 1e-15
    assert optim.ema_decay_at(5, decay=0.995, rampup=False) == 0.995
    assert 0.995**200 > 0.36  # what the unramped EMA kept


@pytest.mark.parametrize("rampup", [True, False])
def test_step_ema_is_the_ramped_average_of_the_live_params(rampup):
    """Through the real step: g_ema_params after k steps equals the recursion
    ema_t = d_t ema_{t-1} + (1 - d_t) params_t, d_t the decay of `ema_decay_at`."""
    config = tiny_config("seed_mlp", ema_decay=0.99, ema_rampup=rampup)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = state_lib.create_train_state(jax.random.key(0), config)
    step = jax.jit(
        functools.partial(step_lib.train_step, models=models, optimizers=optimizers, config=config)
    )
    want = jax.tree.map(lambda x: np.asarray(x, np.float64), state.g_params)
    for t in range(4):
        batch = {"image": jax.random.uniform(jax.random.key(t), (64, 28, 28, 1))}
        state, _ = step(state, batch, jax.random.key(1))
        d = min(0.99, (1 + t) / (10 + t)) if rampup else 0.99
        want = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * np.asarray(p), want, state.g_params)
    leaves = zip(jax.tree.leaves(state.g_ema_params), jax.tree.leaves(want), strict=True)
    for got, expected in leaves:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def _trained_dcgan(num_steps=3, model="dcgan"):
    """A tiny dcgan a few steps in: its EMA params differ from the live ones."""
    config = tiny_config(model, ema_decay=0.9, ema_standing_stats_batches=3, batch_size=16)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    # Jitted: eagerly, XLA compiles every initialiser of the models on its own.
    init = functools.partial(state_lib.create_train_state, config=config)
    state = jax.jit(init)(jax.random.key(0))
    step = jax.jit(
        functools.partial(step_lib.train_step, models=models, optimizers=optimizers, config=config)
    )
    for t in range(num_steps):
        batch = {"image": jax.random.uniform(jax.random.key(t), (16, 28, 28, 1), minval=-1)}
        state, _ = step(state, batch, jax.random.key(1))
    return config, models, state


@functools.partial(jax.jit, static_argnums=0)  # eagerly, every operation compiles on its own
def _batch_norm_inputs(generator, params, g_state, z):
    """Each BatchNorm layer's input in a training-mode pass: {layer name: [B, ..., C]}."""
    inputs = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            inputs[context.module.name] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        generator.apply({"params": params, **g_state}, z, train=True, mutable=["batch_stats"])
    return inputs


# dcgan_compact shows the mechanism in the fast step; the larger dcgan runs with -m slow.
@pytest.mark.parametrize("model", [pytest.param("dcgan", marks=pytest.mark.slow), "dcgan_compact"])
def test_ema_generator_samples_with_statistics_of_its_own_params(model):
    config, models, state = _trained_dcgan(model=model)
    params, g_state = state_lib.sampling_variables(state, models=models, config=config)
    assert_trees_equal(params, state.g_ema_params)

    # The statistics, recomputed independently: each BatchNorm input's per-batch mean and
    # (biased) variance over the training-mode pass of the EMA params, averaged over batches.
    key = jax.random.fold_in(jax.random.key(config.seed), state_lib.STANDING_STATS_STREAM)
    z = jax.random.normal(jax.random.split(key)[0], (3, 16, config.latent_dim))
    per_batch = [
        jax.tree.map(
            lambda x: np.asarray(x, np.float64),
            _batch_norm_inputs(models.generator, state.g_ema_params, state.g_state, z[i]),
        )
        for i in range(3)
    ]
    stats = g_state["batch_stats"]
    assert set(stats) == set(per_batch[0])
    for name in stats:
        axes = tuple(range(per_batch[0][name].ndim - 1))
        mean = np.mean([b[name].mean(axes) for b in per_batch], axis=0)
        var = np.mean([b[name].var(axes) for b in per_batch], axis=0)
        np.testing.assert_allclose(stats[name]["mean"], mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats[name]["var"], var, rtol=1e-4, atol=1e-6)
        # ...and not the live generator's running averages.
        assert not np.allclose(stats[name]["mean"], state.g_state["batch_stats"][name]["mean"])

    # The training loop's grid and evaluate's sampler both sample with them.
    z_grid = jax.random.normal(jax.random.key(5), (config.num_grid_samples, config.latent_dim))
    want_grid, _ = jax.jit(
        functools.partial(models_lib.apply_model, models.generator, train=False)
    )(params, g_state, z_grid)
    grid = train._grid_sampler(models, config, jax.random.key(5))(state)
    np.testing.assert_allclose(grid, want_grid, rtol=1e-4, atol=1e-5)  # other compiler options

    sample_key = jax.random.key(6)
    got = evaluate.sampler_from_state(state, config, models=models)(sample_key, 8)
    want = evaluate.generator_sampler(params, g_state, config, models=models)(sample_key, 8)
    np.testing.assert_array_equal(got, want)
    live = evaluate.generator_sampler(state.g_ema_params, state.g_state, config, models=models)
    assert not np.allclose(got, live(sample_key, 8))


@pytest.mark.slow  # the fast step trains standing statistics on; this is the off branch
def test_standing_statistics_off_keeps_the_running_averages():
    config, models, state = _trained_dcgan(num_steps=1)
    config.ema_standing_stats_batches = 0
    params, g_state = state_lib.sampling_variables(state, models=models, config=config)
    assert_trees_equal((params, g_state), (state.g_ema_params, state.g_state))
    config.ema_decay = 0.0  # no EMA: the live generator with its own running averages
    live = state.replace(g_ema_params=None)
    assert_trees_equal(
        state_lib.sampling_variables(live, models=models, config=config),
        (state.g_params, state.g_state),
    )
