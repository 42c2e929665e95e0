"""PacGAN packing: what the discriminator sees with config.pack = m, and m = 1 as the plain step.

The data-parallel and fused forms with packs are checked beside the other runs in
test_parallel.py and test_fused.py; resume with packs in test_train_resume.py.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax import config as config_lib
from gan_jax import losses, optim, packing
from gan_jax import models as models_lib
from gan_jax import step as step_lib
from gan_jax.state import create_train_state, dummy_inputs
from tests.helpers import tiny_config


def _hand_packed(samples, m: int) -> np.ndarray:
    """Pack p = samples p*m, ..., p*m + m - 1 side by side on the last axis, built with numpy."""
    samples = np.asarray(samples)
    return np.concatenate([samples[j::m] for j in range(m)], axis=-1)


def test_pack_puts_consecutive_samples_side_by_side_in_order():
    images = np.arange(6 * 2 * 3 * 2, dtype=np.float32).reshape(6, 2, 3, 2)
    packed = np.asarray(packing.pack(jnp.asarray(images), 3))
    assert packed.shape == (2, 2, 3, 6) == (2, *packing.packed_shape((2, 3, 2), 3))
    for p in range(2):
        for j in range(3):
            # Member j of pack p is sample p*3 + j, in channels 2j and 2j + 1.
            np.testing.assert_array_equal(packed[p, ..., 2 * j : 2 * j + 2], images[p * 3 + j])
    vectors = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
    np.testing.assert_array_equal(
        np.asarray(packing.pack(jnp.asarray(vectors), 4)),
        [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]],
    )
    assert packing.pack(vectors, 1) is vectors


def test_pack_rejects_a_count_that_does_not_split_into_packs():
    with pytest.raises(ValueError, match="7 samples do not make packs of 2"):
        packing.pack(jnp.zeros((7, 3)), 2)


def _d_setup(model, m, **overrides):
    config = tiny_config(model, pack=m, batch_size=8, **overrides)
    models = models_lib.build_models(config)
    state = create_train_state(jax.random.key(0), config)
    images = 8 * m
    real = jax.random.uniform(jax.random.key(1), (images, *config.image_shape))
    z = jax.random.normal(jax.random.key(2), (images, config.latent_dim))
    forward = step_lib.generator_forward(state, z, None, generator=models.generator)
    return config, models, optim.build_optimizers(config), state, real, forward


def _d_logits(models, state, images):
    logits, _ = models_lib.apply_model(
        models.discriminator, state.d_params, state.d_state, jnp.asarray(images), train=True
    )
    return logits


@pytest.mark.parametrize(
    ("model", "m"),
    [
        ("seed_mlp", 2),
        ("seed_mlp", 3),
        # The convolutional families' packs (12-26 s of compiling); their first layers' growth is
        # checked in the fast step by test_only_the_first_discriminator_layer_grows.
        pytest.param("dcgan", 2, marks=pytest.mark.slow),
        pytest.param("unrolled_dcgan", 2, marks=pytest.mark.slow),
    ],
)
def test_discriminator_judges_the_packs_of_consecutive_samples(model, m):
    """The step's losses and penalties are those of D on packs built by hand: only a pack made
    of the right samples in the right order gives D's first layer the same input."""
    config, models, optimizers, state, real, forward = _d_setup(
        model, m, r1_weight=1.0, gp_weight=1.0
    )
    mix = jax.random.uniform(jax.random.key(3), (8,))
    _, d_metrics = jax.jit(
        functools.partial(
            step_lib.discriminator_update,
            discriminator=models.discriminator,
            optimizer=optimizers.discriminator,
            config=config,
        )
    )(state, real, forward.fake, None, mix)
    _, g_metrics = jax.jit(
        functools.partial(
            step_lib.generator_update,
            discriminator=models.discriminator,
            optimizer=optimizers.generator,
            config=config,
        )
    )(state, forward, None)

    real_packs, fake_packs = _hand_packed(real, m), _hand_packed(forward.fake, m)
    assert real_packs.shape == (8, *config.image_shape[:-1], m * config.image_shape[-1])
    real_logits = _d_logits(models, state, real_packs)
    fake_logits = _d_logits(models, state, fake_packs)

    def logit_fn(images):
        return _d_logits(models, state, images)

    want = {
        "d_loss": losses.classic_d_loss(real_logits, fake_logits),
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "r1_penalty": losses.r1_penalty(logit_fn, jnp.asarray(real_packs)),
        "gp_penalty": losses.gradient_penalty(
            logit_fn, jnp.asarray(real_packs), jnp.asarray(fake_packs), mix
        ),
    }
    for name, value in want.items():
        np.testing.assert_allclose(d_metrics[name], value, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(
        g_metrics["g_loss"], losses.non_saturating_g_loss(fake_logits), rtol=1e-5
    )
    # A pack of the wrong samples is judged differently: the check above can fail.
    shuffled = _hand_packed(np.asarray(real)[::-1], m)
    assert (
        abs(
            float(losses.classic_d_loss(_d_logits(models, state, shuffled), fake_logits))
            - float(d_metrics["d_loss"])
        )
        > 1e-4
    )


@pytest.mark.parametrize("model", ["seed_mlp", "dcgan", "unrolled_dcgan"])
def test_only_the_first_discriminator_layer_grows(model):
    def d_shapes(m):
        config = tiny_config(model, pack=m)
        state = jax.eval_shape(
            functools.partial(create_train_state, config=config), jax.random.key(0)
        )
        return config, {
            jax.tree_util.keystr(path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(state.d_params)
        }

    config, plain = d_shapes(1)
    _, packed = d_shapes(3)
    assert plain.keys() == packed.keys()
    grown = {name for name in plain if plain[name] != packed[name]}
    assert len(grown) == 1, grown
    (name,) = grown
    # A dense first layer takes the flattened pack, a convolution the stacked channels.
    axis = 0 if len(plain[name]) == 2 else 2
    assert packed[name][axis] == 3 * plain[name][axis]
    assert dummy_inputs(tiny_config(model, pack=3))[1].shape[-1] == 3 * config.image_shape[-1]


def test_pack_one_is_the_unpacked_step_op_for_op(monkeypatch):
    """m = 1 adds no operation to the step: its program is the one with packing taken out,
    and a config saved before `pack` existed reads as m = 1 and traces to the same program."""
    config = tiny_config("dcgan", r1_weight=1.0)
    assert config.pack == 1
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config)
    batch = {"image": jax.random.uniform(jax.random.key(1), (64, *config.image_shape))}

    def step_program(step_config):
        step = functools.partial(
            step_lib.train_step, models=models, optimizers=optimizers, config=step_config
        )
        return str(jax.make_jaxpr(step)(state, batch, jax.random.key(2)))

    with_packing = step_program(config)
    old_config = config.copy_and_resolve_references()
    del old_config["pack"]
    monkeypatch.setattr(step_lib, "pack", lambda samples, m: samples)
    assert step_program(old_config) == with_packing


def test_a_batch_that_does_not_split_into_packs_is_refused():
    config = tiny_config("seed_mlp", pack=2, batch_size=8)
    models = models_lib.build_models(config)
    step = functools.partial(
        step_lib.train_step,
        models=models,
        optimizers=optim.build_optimizers(config),
        config=config,
    )
    state = create_train_state(jax.random.key(0), config)
    with pytest.raises(ValueError, match="multiple of 2 images"):
        step(state, {"image": jnp.zeros((15, *config.image_shape))}, jax.random.key(1))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_pack_must_be_a_positive_integer(bad):
    # A ConfigDict keeps a key's type once set; a config built from a dict can hold any.
    config = ml_collections.ConfigDict({**tiny_config("seed_mlp").to_dict(), "pack": bad})
    with pytest.raises(config_lib.ConfigError, match="pack"):
        config_lib.validate_config(config)


def test_conditional_models_refuse_packs_with_a_message():
    config = tiny_config("dcgan", num_classes=10, pack=2)
    with pytest.raises(config_lib.ConfigError, match="unconditional"):
        config_lib.validate_config(config)


def test_images_per_step_count_every_member_of_every_pack():
    config = tiny_config("seed_mlp", pack=3, n_critic=2, batch_size=64)
    assert config_lib.real_images_per_step(config) == 64 * 3 * 2
