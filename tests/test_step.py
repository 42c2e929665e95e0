"""The train step: which state each update touches, determinism, and its checks on input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import config as config_lib
from gan_jax import data, losses, optim
from gan_jax import models as models_lib
from gan_jax import step as step_lib
from gan_jax.state import create_train_state
from tests.helpers import assert_trees_equal, tiny_config


def _setup(config):
    """Models, optimisers, initial state and a random batch ([B, n_critic, ...] when
    n_critic > 1: one real batch per critic update)."""
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config)
    rows = (config.batch_size,) if config.n_critic == 1 else (config.batch_size, config.n_critic)
    batch = {
        "image": jax.random.uniform(jax.random.key(1), (*rows, *config.image_shape)),
        "label": jax.random.randint(jax.random.key(2), rows, 0, 10),
    }
    return models, optimizers, state, batch


def _jit_step(config, models, optimizers):
    return jax.jit(
        functools.partial(step_lib.train_step, models=models, optimizers=optimizers, config=config)
    )


def _differs(before, after) -> bool:
    return any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )


G_FIELDS = ("step", "g_params", "g_state", "g_opt_state", "g_ema_params")
D_FIELDS = ("d_params", "d_state", "d_opt_state")


# The DCGAN (its G BatchNorm moving with the forward pass) runs with -m slow.
@pytest.mark.parametrize("model", ["seed_mlp", pytest.param("dcgan", marks=pytest.mark.slow)])
def test_each_update_changes_only_its_player(model):
    config = tiny_config(model)
    models, optimizers, state, batch = _setup(config)
    z = jax.random.normal(jax.random.key(4), (config.batch_size, config.latent_dim))
    mix = jax.random.uniform(jax.random.key(5), (config.batch_size,))

    forward = jax.jit(functools.partial(step_lib.generator_forward, generator=models.generator))(
        state, z, None
    )
    after_d, _ = jax.jit(
        functools.partial(
            step_lib.discriminator_update,
            discriminator=models.discriminator,
            optimizer=optimizers.discriminator,
            config=config,
        )
    )(state, batch["image"], forward.fake, None, mix)
    for field in D_FIELDS[::2]:  # d_state is empty for these families
        assert _differs(getattr(state, field), getattr(after_d, field)), field
    for field in G_FIELDS:
        assert_trees_equal(getattr(after_d, field), getattr(state, field))

    after_g, _ = jax.jit(
        functools.partial(
            step_lib.generator_update,
            discriminator=models.discriminator,
            optimizer=optimizers.generator,
            config=config,
        )
    )(after_d, forward, None)
    for field in ("step", "g_params", "g_opt_state", "g_ema_params"):
        assert _differs(getattr(after_d, field), getattr(after_g, field)), field
    if model == "dcgan":  # BatchNorm running averages move with the generator's forward pass
        assert _differs(after_d.g_state, after_g.g_state)
    for field in D_FIELDS:
        assert_trees_equal(getattr(after_g, field), getattr(after_d, field))


@pytest.mark.parametrize("model", ["seed_mlp", pytest.param("dcgan", marks=pytest.mark.slow)])
def test_train_step_composes_the_two_updates(model):
    """train_step is exactly generator_forward -> discriminator_update -> generator_update with
    the noise it derives from (key, step)."""
    config = tiny_config(model)
    models, optimizers, state, batch = _setup(config)
    key = jax.random.key(7)
    new_state, metrics = _jit_step(config, models, optimizers)(state, batch, key)
    assert int(new_state.step) == 1
    assert _differs(state.d_params, new_state.d_params)
    assert _differs(state.g_params, new_state.g_params)
    expected_keys = {"d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"}
    assert expected_keys | {"r1_penalty", "r2_penalty", "gp_penalty"} == set(metrics)
    assert 0.0 < float(metrics["d_real"]) < 1.0 and 0.0 < float(metrics["d_fake"]) < 1.0
    assert float(metrics["d_grad_norm"]) > 0 and float(metrics["g_grad_norm"]) > 0


@pytest.mark.parametrize("model", ["seed_mlp", "dcgan"])
def test_same_inputs_give_bitwise_identical_results_other_key_differs(model):
    config = tiny_config(model)
    models, optimizers, state, batch = _setup(config)
    # Two independently compiled functions, so no caching can make them agree by construction.
    first = _jit_step(config, models, optimizers)(state, batch, jax.random.key(11))
    second_step = _jit_step(config, models, optimizers)
    second = second_step(state, batch, jax.random.key(11))
    assert_trees_equal(second, first)
    other = second_step(state, batch, jax.random.key(12))
    assert _differs(first[0].g_params, other[0].g_params)
    assert _differs(first[0].d_params, other[0].d_params)


def test_randomness_comes_from_the_step_counter():
    """The same key at another step gives other noise (fold_in(key, step)), so a loop may pass
    one fixed key forever."""
    config = tiny_config("seed_mlp")
    models, optimizers, state, batch = _setup(config)
    step = _jit_step(config, models, optimizers)
    key = jax.random.key(3)
    _, at_zero = step(state, batch, key)
    _, at_five = step(state.replace(step=state.step + 5), batch, key)
    assert float(at_zero["d_fake"]) != float(at_five["d_fake"])


def test_noise_drawn_ahead_is_the_noise_the_step_draws():
    """`step_noise` vmapped over steps (what gan_jax.fused does) gives the step's own noise, and
    passing it in gives the same result bitwise; other noise gives another result."""
    config = tiny_config("seed_mlp", gp_weight=1.0, loss="wasserstein", n_critic=2)
    models, optimizers, state, batch = _setup(config)
    key = jax.random.key(4)
    state = state.replace(step=state.step + 3)
    draw = functools.partial(step_lib.step_noise, key, local_batch=config.batch_size, config=config)
    ahead = jax.jit(jax.vmap(draw))(jnp.arange(2, 6, dtype=jnp.int32))
    at_three = jax.tree.map(lambda x: x[1], ahead)
    assert_trees_equal(at_three, draw(3))
    assert at_three.z.shape == (2, config.batch_size, config.latent_dim)
    assert _differs(at_three.z[0], at_three.z[1])  # each critic update has its own noise

    step = _jit_step(config, models, optimizers)
    assert_trees_equal(step(state, batch, key, noise=at_three), step(state, batch, key))
    other = jax.tree.map(lambda x: x[2], ahead)
    assert _differs(
        step(state, batch, key, noise=other)[0].g_params, step(state, batch, key)[0].g_params
    )


def test_noise_of_the_wrong_shape_is_refused():
    config = tiny_config("seed_mlp")
    models, optimizers, state, batch = _setup(config)
    noise = step_lib.step_noise(jax.random.key(0), 0, local_batch=16, config=config)
    with pytest.raises(ValueError, match=r"noise has z \(1, 16, 16\).*needs z \(1, 64, 16\)"):
        _jit_step(config, models, optimizers)(state, batch, jax.random.key(0), noise=noise)


@pytest.mark.parametrize(
    ("loss", "extra"),
    [
        ("minimax", {}),
        ("hinge", {"r1_weight": 10.0}),
        ("wasserstein", {"gp_weight": 10.0, "n_critic": 3}),
        ("least_squares", {"num_classes": 10}),
    ],
)
def test_every_objective_and_penalty_trains(loss, extra):
    config = tiny_config("dcgan", loss=loss, **extra)
    models, optimizers, state, batch = _setup(config)
    state, metrics = _jit_step(config, models, optimizers)(state, batch, jax.random.key(0))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    if extra.get("r1_weight"):
        assert float(metrics["r1_penalty"]) > 0
    if extra.get("gp_weight"):
        assert float(metrics["gp_penalty"]) > 0
        # n_critic discriminator updates per step: Adam's count says how many ran.
        assert int(state.d_opt_state[0].count) == 3
        assert int(state.g_opt_state[0].count) == 1


def test_conditional_models_use_labels():
    config = tiny_config("seed_mlp", num_classes=10)
    models, _, state, _ = _setup(config)
    z = jax.random.normal(jax.random.key(0), (4, config.latent_dim))
    images_a = models.generator.apply({"params": state.g_params}, z, np.zeros(4, np.int32))
    images_b = models.generator.apply({"params": state.g_params}, z, np.ones(4, np.int32))
    assert _differs(images_a, images_b)
    logits_a = models.discriminator.apply({"params": state.d_params}, images_a, np.zeros(4, int))
    logits_b = models.discriminator.apply({"params": state.d_params}, images_a, np.ones(4, int))
    assert _differs(logits_a, logits_b)


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("model", "resnet", r"config\.model: unknown model 'resnet'.*'dcgan'"),
        ("loss", "wgan", r"config\.loss: unknown loss 'wgan'.*'wasserstein'"),
        ("n_critic", 0, r"config\.n_critic"),
        ("g_optimizer.learning_rate", 0.0, r"config\.g_optimizer\.learning_rate"),
        ("d_optimizer.learning_rate", -1e-4, r"config\.d_optimizer\.learning_rate"),
        ("image_shape", (30, 30, 1), r"config\.image_shape.*divisible by 4"),
        ("ema_decay", 1.0, r"config\.ema_decay"),
    ],
)
def test_bad_config_names_the_key(key, value, pattern):
    config = config_lib.get_default_config()
    if "." in key:
        group, name = key.split(".")
        config[group][name] = value
    else:
        config[key] = value
    with pytest.raises(ValueError, match=pattern):
        create_train_state(jax.random.key(0), config)


def test_batch_of_wrong_image_shape_names_the_key():
    config = tiny_config("seed_mlp")
    models, optimizers, state, _ = _setup(config)
    bad_batch = {"image": np.zeros((config.batch_size, 32, 32, 1), np.float32)}
    with pytest.raises(ValueError, match=r"config\.image_shape is \(28, 28, 1\).*\(32, 32, 1\)"):
        _jit_step(config, models, optimizers)(state, bad_batch, jax.random.key(0))


def test_conditional_batch_without_labels_is_refused():
    config = tiny_config("seed_mlp", num_classes=10)
    models, optimizers, state, _ = _setup(config)
    batch = {"image": np.zeros((config.batch_size, 28, 28, 1), np.float32)}
    with pytest.raises(ValueError, match=r"config\.num_classes=10.*'label'"):
        _jit_step(config, models, optimizers)(state, batch, jax.random.key(0))


def test_global_norm_is_optax_tree_norm():
    keys = jax.random.split(jax.random.key(3), 3)
    tree = {
        "kernel": 3.0 * jax.random.normal(keys[0], (784, 128)),
        "bias": jax.random.normal(keys[1], (128,)),
        "nested": [jax.random.normal(keys[2], (5, 4, 3))],
    }
    np.testing.assert_allclose(step_lib.global_norm(tree), optax.tree.norm(tree), rtol=1e-6)
    assert float(step_lib.global_norm(jax.tree.map(jnp.zeros_like, tree))) == 0.0


def test_critic_updates_train_on_their_own_real_batches(monkeypatch):
    """WGAN-GP: update i of step s sees the real batch at draw s * n_critic + i, a pure function
    of (seed, step, i), and the n_critic batches differ; the step is those updates."""
    n_critic, step_index = 3, 5
    config = tiny_config("seed_mlp", loss="wasserstein", gp_weight=10.0, n_critic=n_critic)
    models, optimizers, state, _ = _setup(config)
    state = state.replace(step=jnp.asarray(step_index, jnp.int32))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (500, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 500, dtype=np.int32)
    sample = functools.partial(
        data.sample_batch, images, labels, seed=3, batch_size=config.batch_size, pixel_range="unit"
    )
    batch = sample(step_index, n_critic=n_critic)
    assert batch["image"].shape == (config.batch_size, n_critic, 28, 28, 1)

    update = step_lib.discriminator_update

    @jax.jit  # eagerly, every operation of the step compiles on its own
    def recorded_step(state, batch, key):
        """train_step, and the real batch each discriminator update was given."""
        seen = []

        def recording_update(state, real, *args, **kwargs):
            seen.append(real)
            return update(state, real, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(step_lib, "discriminator_update", recording_update)
            new_state, _ = step_lib.train_step(
                state, batch, key, models=models, optimizers=optimizers, config=config
            )
        return new_state, seen

    key = jax.random.key(9)
    new_state, seen = recorded_step(state, batch, key)
    seen = [np.asarray(real) for real in seen]
    assert len(seen) == n_critic
    for i, real in enumerate(seen):
        # The batch of draw step * n_critic + i, recomputed on its own.
        np.testing.assert_array_equal(real, sample(step_index * n_critic + i)["image"])
        for other in seen[:i]:
            assert not np.array_equal(real, other)
    # n_critic = 1 draws exactly the one batch of the step, as before.
    np.testing.assert_array_equal(
        np.asarray(data.step_batch_indices(7, n_critic=1, seed=3, num_examples=500, batch_size=8)),
        np.asarray(data.batch_indices(7, seed=3, num_examples=500, batch_size=8)),
    )
    # Reusing the first batch for every update trains to another state.
    reused = {k: jnp.repeat(v[:, :1], n_critic, axis=1) for k, v in batch.items()}
    reused_state, _ = recorded_step(state, reused, key)
    assert _differs(reused_state.d_params, new_state.d_params)


def test_one_batch_for_several_critic_updates_is_refused():
    config = tiny_config("seed_mlp", loss="wasserstein", gp_weight=10.0, n_critic=2)
    models, optimizers, state, _ = _setup(config)
    batch = {"image": np.zeros((config.batch_size, 28, 28, 1), np.float32)}
    with pytest.raises(ValueError, match=r"n_critic=2 needs one real batch per critic update"):
        _jit_step(config, models, optimizers)(state, batch, jax.random.key(0))


@pytest.mark.parametrize(
    ("loss", "output"),
    [
        ("minimax", jax.nn.sigmoid),
        ("non_saturating", jax.nn.sigmoid),
        ("hinge", None),
        ("wasserstein", None),
        ("least_squares", None),
    ],
)
def test_d_real_and_d_fake_are_what_each_loss_reads(loss, output):
    """Probabilities for the log-loss objectives, raw scores for the others."""
    config = tiny_config("seed_mlp", loss=loss)
    models, optimizers, state, batch = _setup(config)
    key = jax.random.key(4)
    _, metrics = _jit_step(config, models, optimizers)(state, batch, key)
    noise = step_lib.step_noise(key, 0, local_batch=config.batch_size, config=config)
    fake = models.generator.apply({"params": state.g_params}, noise.z[0])
    variables = {"params": state.d_params}
    real_logits = models.discriminator.apply(variables, batch["image"])
    fake_logits = models.discriminator.apply(variables, fake)
    output = output or (lambda x: x)
    assert losses.get_loss(loss).d_output is not None
    np.testing.assert_allclose(metrics["d_real"], jnp.mean(output(real_logits)), rtol=1e-5)
    np.testing.assert_allclose(metrics["d_fake"], jnp.mean(output(fake_logits)), rtol=1e-5)


def test_config_saved_before_the_newer_keys_still_builds():
    """An old run's config.json lacks d_spectral_norm etc.: it builds the models it trained."""
    config = tiny_config("dcgan")
    for key in config_lib.LATER_KEYS:
        del config[key]
    config_lib.validate_config(config)
    models = models_lib.build_models(config)
    assert models.discriminator.spectral_norm is False
    assert config_lib.setting(config, "ema_rampup") is False
