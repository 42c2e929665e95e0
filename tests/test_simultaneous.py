"""Simultaneous updates (config.simultaneous_updates, PacGAN's 2-D code): G's gradient through
the discriminator before this step's update; off, the step is the alternating one, unchanged."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import config as config_lib
from gan_jax import losses, optim
from gan_jax import models as models_lib
from gan_jax import step as step_lib
from gan_jax.state import create_train_state
from tests.helpers import assert_trees_close, assert_trees_equal, leaf_errors, tiny_config

BATCH = 8


def _config(**overrides):
    settings = dict(
        image_shape=(4, 4, 1), g_width=8, d_width=8, latent_dim=4, batch_size=BATCH, ema_decay=0.0
    )
    return tiny_config("seed_mlp", **{**settings, **overrides})


def _recording_sgd():
    """SGD(0.1) whose state is the gradient of its last update (as in test_relativistic.py)."""

    def update(grads, state, params=None):
        del state, params
        return jax.tree.map(lambda g: -0.1 * g, grads), grads

    return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), update)


def test_simultaneous_g_gradient_is_through_the_discriminator_before_its_update():
    models = models_lib.build_models(_config())
    optimizers = optim.Optimizers(_recording_sgd(), _recording_sgd())
    init = functools.partial(create_train_state, config=_config(), optimizers=optimizers)
    state = jax.jit(init)(jax.random.key(0))
    real = jnp.asarray(np.random.default_rng(1).random((BATCH, 4, 4, 1)), jnp.float32)
    key = jax.random.key(2)
    z = step_lib.step_noise(key, 0, local_batch=BATCH, config=_config()).z[0]

    def steps(state, real):
        out = {}
        for simultaneous in (False, True):
            config = _config(simultaneous_updates=simultaneous)
            out[simultaneous] = step_lib.train_step(
                state, {"image": real}, key, models=models, optimizers=optimizers, config=config
            )[0]

        def g_grad(d_params):  # G's non-saturating gradient through D with `d_params`
            def g_loss(g_params):
                fake = models.generator.apply({"params": g_params}, z)
                logits = models.discriminator.apply({"params": d_params}, fake)
                return losses.get_loss("non_saturating").g_loss(logits, None)

            return jax.grad(g_loss)(state.g_params)

        return out, g_grad(state.d_params), g_grad(out[False].d_params)

    out, through_before, through_after = jax.jit(steps)(state, real)
    alternating, simultaneous = out[False], out[True]
    assert_trees_close(simultaneous.g_opt_state, through_before, rtol=1e-6)
    assert_trees_close(alternating.g_opt_state, through_after, rtol=1e-6)
    # The two gradients differ well beyond rounding: the flag changes what G's update reads.
    assert max(leaf_errors(through_before, through_after).values()) > 1e-3
    # D's update, and the state the step returns for D, are the alternating step's.
    for name in ("d_params", "d_state", "d_opt_state"):
        assert_trees_equal(getattr(simultaneous, name), getattr(alternating, name))
    assert int(simultaneous.step) == 1


def test_without_the_flag_the_traced_step_is_the_alternating_one():
    """An old config (no key) and simultaneous_updates=False trace the same program."""
    config = _config()
    old = config.copy_and_resolve_references()
    del old["simultaneous_updates"]
    assert config_lib.setting(old, "simultaneous_updates") is False
    batch, key = {"image": jnp.zeros((BATCH, 4, 4, 1))}, jax.random.key(2)
    traced = []
    for cfg in (config, old, _config(simultaneous_updates=True)):
        models, optimizers = models_lib.build_models(cfg), optim.build_optimizers(cfg)
        state = jax.eval_shape(functools.partial(create_train_state, config=cfg), key)
        step = functools.partial(
            step_lib.train_step, models=models, optimizers=optimizers, config=cfg
        )
        traced.append(str(jax.make_jaxpr(step)(state, batch, key)))
    assert traced[1] == traced[0]
    assert traced[2] != traced[0]  # the comparison sees the flag


def test_simultaneous_updates_need_one_critic_update():
    config = _config(n_critic=2, simultaneous_updates=True)
    pattern = r"config\.simultaneous_updates: .*needs n_critic = 1, got n_critic = 2"
    with pytest.raises(config_lib.ConfigError, match=pattern):
        config_lib.validate_config(config)
    # The step refuses it too, whoever calls it (at trace time).
    plain = _config(n_critic=2)
    models, optimizers = models_lib.build_models(plain), optim.build_optimizers(plain)
    key = jax.random.key(0)
    state = jax.eval_shape(functools.partial(create_train_state, config=plain), key)
    step = functools.partial(
        step_lib.train_step, models=models, optimizers=optimizers, config=config
    )
    with pytest.raises(config_lib.ConfigError, match=pattern):
        jax.eval_shape(step, state, {"image": jnp.zeros((BATCH, 2, 4, 4, 1))}, key)
