"""R3GAN's backbone (gan_jax.r3gan): its resampling is upfirdn2d's, its grouped convolution forms
are nn.Conv's function, fix-up makes every block the identity at initialisation, and
`model="r3gan"` builds, validates and trains through the project's step. Tiny widths, so each
test runs in a few seconds on 2 cores."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import config as config_lib
from gan_jax import models as models_lib
from gan_jax import optim, r3gan
from gan_jax import step as step_lib
from gan_jax.state import create_train_state
from tests.helpers import assert_trees_close, tiny_config

# Equal widths: every block has the same parameter shapes, and XLA:CPU compiles a random
# initialiser per distinct shape (about 0.3 s each), so equal shapes keep the tests fast.
# Expanded to 32 channels, each 3x3 conv has 2 groups of 16 (block-diagonal on CPU).
TINY_WIDTH = 16


def _config(image_shape=(28, 28, 1), **overrides):
    stages = {28: 3, 32: 4, 64: 5}.get(image_shape[0], 3)
    config = tiny_config("r3gan", image_shape=image_shape, r3gan_widths=(TINY_WIDTH,) * stages)
    config.update(overrides)
    return config


def _perturbed(variables, scale=0.05):
    """Variables with every leaf shifted by a leaf-dependent amount: nonzero last convolutions,
    so the residual branches compute something."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(123), len(leaves))
    return jax.tree.unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


def _upfirdn_reference(x: np.ndarray, *, up: bool) -> np.ndarray:
    """StyleGAN's upfirdn2d as R3GAN calls it, literally: zero-stuff (up), pad, correlate with
    the normalised [1, 3, 3, 1] x [1, 3, 3, 1] kernel (x4 when upsampling), stride (down)."""
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    kernel = np.outer(taps, taps) / 64.0 * (4.0 if up else 1.0)
    if up:
        stuffed = np.zeros((2 * x.shape[0], 2 * x.shape[1]))
        stuffed[::2, ::2] = x
        padded, stride = np.pad(stuffed, ((2, 1), (2, 1))), 1
    else:
        padded, stride = np.pad(x, ((1, 1), (1, 1))), 2
    rows, cols = padded.shape[0] - 3, padded.shape[1] - 3
    out = np.array(
        [[np.sum(padded[i : i + 4, j : j + 4] * kernel) for j in range(cols)] for i in range(rows)]
    )
    return out[::stride, ::stride]


def test_resampling_is_r3gans_upfirdn2d():
    x = np.random.default_rng(0).standard_normal((6, 8))
    batched = jnp.asarray(x, jnp.float32)[None, :, :, None]
    up = np.asarray(r3gan.upsample(batched))[0, :, :, 0]
    down = np.asarray(r3gan.downsample(batched))[0, :, :, 0]
    assert up.shape == (12, 16) and down.shape == (3, 4)
    np.testing.assert_allclose(up, _upfirdn_reference(x, up=True), atol=1e-6)
    np.testing.assert_allclose(down, _upfirdn_reference(x, up=False), atol=1e-6)


def test_grouped_conv_forms_are_flax_grouped_conv():
    """Every form: nn.Conv(feature_group_count)'s parameters, outputs, gradients and R1-style
    double-backward gradients."""
    groups = 4
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 8))
    reference = nn.Conv(16, (3, 3), feature_group_count=groups)
    variables = _perturbed(reference.init(jax.random.key(1), x))  # nonzero bias

    def losses(apply):
        def loss(v, x):
            return jnp.sum(jnp.sin(apply(v, x)))

        def r1(v, x):
            return jnp.sum(jax.grad(loss, argnums=1)(v, x) ** 2)

        return jax.jit(
            lambda v, x: (apply(v, x), jax.grad(loss, (0, 1))(v, x), jax.grad(r1)(v, x))
        )(variables, x)

    want = losses(reference.apply)
    for impl in ("xla", "block_diagonal", "patches"):
        ours = r3gan.GroupedConv(16, groups, impl=impl)
        layout = jax.eval_shape(ours.init, jax.random.key(1), x)
        assert jax.tree.structure(layout) == jax.tree.structure(variables)
        assert [v.shape for v in jax.tree.leaves(layout)] == [
            v.shape for v in jax.tree.leaves(variables)
        ]
        assert_trees_close(losses(ours.apply), want, rtol=1e-5)


def test_auto_picks_the_measured_cpu_forms():
    assert r3gan.resolve_grouped_impl("auto", 8, backend="cpu") == "block_diagonal"
    assert r3gan.resolve_grouped_impl("auto", 16, backend="cpu") == "patches"
    assert r3gan.resolve_grouped_impl("auto", 16, backend="gpu") == "xla"
    assert r3gan.resolve_grouped_impl("auto", 1, backend="cpu") == "xla"
    with pytest.raises(ValueError, match="grouped_impl"):
        r3gan.resolve_grouped_impl("fast", 4)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_a_fixup_block_starts_as_the_identity_and_then_is_not(spectral_norm):
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 16))
    block = r3gan.ResidualBlock(group_size=16, num_blocks=6)  # 2 groups of 16
    normed = models_lib.SpectralNormed(spectral_norm, 1, train=False)
    variables = block.init(jax.random.key(1), x, normed)
    assert set(variables) == ({"params", "spectral_norm"} if spectral_norm else {"params"})
    params = variables["params"]
    np.testing.assert_array_equal(params["project"]["kernel"], 0.0)
    np.testing.assert_array_equal(block.apply(variables, x, normed), x)  # exactly

    if not spectral_norm:  # (Flax stores a normalised kernel's normalised initial value)
        # Fix-up: kernels ~ N(0, (gain * L^-1/4)^2 / fan_in), fan_in = 16 for "expand".
        want_std = r3gan.LRELU_GAIN * 6 ** (-0.25) / 4.0
        assert abs(float(jnp.std(params["expand"]["kernel"])) / want_std - 1.0) < 0.15

    # A nonzero last conv makes the block compute something: the identity test can fail.
    params = {**params, "project": {"kernel": 0.1 * jnp.ones_like(params["project"]["kernel"])}}
    moved = block.apply({**variables, "params": params}, x, normed)
    assert float(jnp.max(jnp.abs(moved - x))) > 1e-2


def _skeleton_generator(params, z):
    """The generator with every residual block removed, from its parameters."""
    x = params["basis"][None] * (z @ params["modulation"]["kernel"])[:, None, None, :]
    for stage in (1, 2):
        if f"transition_{stage}" in params:
            x = x @ params[f"transition_{stage}"]["kernel"]
        x = r3gan.upsample(x)
    return x @ params["to_image"]["kernel"]


def _skeleton_discriminator(params, images):
    x = images @ params["from_image"]["kernel"]
    for stage in (2, 1):
        x = r3gan.downsample(x)
        if f"transition_{stage}" in params:
            x = x @ params[f"transition_{stage}"]["kernel"]
    features = jnp.einsum("bhwc,hwc->bc", x, params["basis"]["kernel"][:, :, 0])
    return features @ params["logit"]["kernel"][:, 0] + params["logit"]["bias"][0]


def test_initial_models_are_their_residual_free_skeletons():
    """At initialisation, G and D equal the models with the residual branches removed (basis,
    transitions, resampling, the 1x1 convs at the ends), computed here from their parameters."""
    config = _config(r3gan_widths=(32, 16, 16))  # a transition at 7 -> 14, none at 14 -> 28
    models = models_lib.build_models(config)
    z = jax.random.normal(jax.random.key(0), (3, config.latent_dim))
    images = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1), minval=-1.0)
    g_params = models.generator.init(jax.random.key(2), z)["params"]
    d_params = models.discriminator.init(jax.random.key(3), images)["params"]
    assert "transition_1" in g_params and "transition_2" not in g_params
    assert "transition_1" in d_params and "transition_2" not in d_params
    fake = models.generator.apply({"params": g_params}, z)
    np.testing.assert_allclose(fake, _skeleton_generator(g_params, z), rtol=1e-5, atol=1e-6)
    logits = models.discriminator.apply({"params": d_params}, images)
    want = _skeleton_discriminator(d_params, images)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)
    # After training has moved the last convolutions, the blocks count.
    moved = models.generator.apply({"params": _perturbed(g_params)}, z)
    assert float(jnp.max(jnp.abs(moved - _skeleton_generator(_perturbed(g_params), z)))) > 1e-3


@pytest.mark.parametrize(
    "image_shape", [(28, 28, 1), (28, 28, 3), (32, 32, 3), (64, 64, 3)], ids=str
)
def test_shapes_dtypes_and_scale(image_shape):
    config = _config(image_shape)
    models = models_lib.build_models(config)
    assert models.pixel_range == "symmetric"
    z = jax.random.normal(jax.random.key(0), (2, config.latent_dim))
    g_vars = models.generator.init(jax.random.key(1), z, train=False)
    fake = models.generator.apply(_perturbed(g_vars), z)
    assert fake.shape == (2, *image_shape) and fake.dtype == jnp.float32
    # Unbounded (no tanh) but of unit-ish scale: the MSR / fix-up init neither explodes nor dies.
    assert 0.05 < float(jnp.std(fake)) < 5.0, float(jnp.std(fake))
    d_vars = models.discriminator.init(jax.random.key(2), fake, train=False)
    logits = models.discriminator.apply(_perturbed(d_vars), fake)
    assert logits.shape == (2,) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_conditional_players_use_their_labels():
    config = _config(num_classes=10)
    models = models_lib.build_models(config)
    z = jnp.tile(jax.random.normal(jax.random.key(0), (1, config.latent_dim)), (2, 1))
    labels = jnp.array([3, 7])
    g_vars = _perturbed(models.generator.init(jax.random.key(1), z, labels))
    assert g_vars["params"]["label_embedding"]["embedding"].shape == (10, config.latent_dim)
    fake = models.generator.apply(g_vars, z, labels)  # the same z, two labels
    assert float(jnp.max(jnp.abs(fake[0] - fake[1]))) > 1e-4
    images = jnp.tile(fake[:1], (2, 1, 1, 1))
    d_vars = _perturbed(models.discriminator.init(jax.random.key(2), images, labels))
    assert "label_projection" in d_vars["params"]
    logits = models.discriminator.apply(d_vars, images, labels)  # the same image, two labels
    assert abs(float(logits[0] - logits[1])) > 1e-4
    with pytest.raises(ValueError, match="needs labels"):
        models.generator.apply(g_vars, z)
    with pytest.raises(ValueError, match="needs labels"):
        models.discriminator.apply(d_vars, images)


def test_r1_differentiates_the_discriminator_twice():
    config = _config()
    models = models_lib.build_models(config)
    images = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1), minval=-1.0)
    d_vars = _perturbed(models.discriminator.init(jax.random.key(1), images))

    def r1(variables):
        grads = jax.grad(lambda x: jnp.sum(models.discriminator.apply(variables, x)))(images)
        return jnp.mean(jnp.sum(grads**2, axis=(1, 2, 3)))

    value, grads = jax.jit(jax.value_and_grad(r1))(d_vars)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert np.isfinite(float(value)) and float(value) > 0.0
    assert all(np.isfinite(n) for n in norms) and sum(norms) > 0.0


def test_spectral_norm_normalises_every_discriminator_kernel():
    plain = models_lib.build_models(_config()).discriminator
    normed = models_lib.build_models(_config(d_spectral_norm=True)).discriminator
    images = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1), minval=-1.0)
    plain_vars = plain.init(jax.random.key(1), images)
    variables = normed.init(jax.random.key(1), images)
    assert set(plain_vars) == {"params"}
    assert set(variables) == {"params", "spectral_norm"}
    # The same parameter names and shapes; one power-iteration vector per kernel.
    params, plain_params = variables["params"], plain_vars["params"]
    assert jax.tree.structure(params) == jax.tree.structure(plain_params)
    assert [p.shape for p in jax.tree.leaves(params)] == [
        p.shape for p in jax.tree.leaves(plain_params)
    ]
    kernels = [p for p in jax.tree.leaves(params) if p.ndim >= 2]
    vectors = [
        path
        for path, _ in jax.tree_util.tree_leaves_with_path(variables["spectral_norm"])
        if jax.tree_util.keystr(path).endswith("/u']")
    ]
    assert len(vectors) == len(kernels) > 0
    logits, updated = normed.apply(variables, images, train=True, mutable=["spectral_norm"])
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert jax.tree.structure(updated["spectral_norm"]) == jax.tree.structure(
        variables["spectral_norm"]
    )


@pytest.mark.parametrize(
    ("overrides", "key", "match"),
    [
        ({"image_shape": (30, 30, 1)}, "image_shape", "base \\* 4"),
        ({"image_shape": (28, 28, 1), "r3gan_widths": (8, 8, 8, 8)}, "image_shape", "base"),
        ({"image_shape": (16, 16, 1), "r3gan_widths": (8, 8, 8, 8)}, "image_shape", ">= 4"),
        ({"image_shape": (28, 28)}, "image_shape", "height, width, channels"),
        ({"r3gan_widths": ()}, "r3gan_widths", "positive"),
        ({"r3gan_widths": (16, 0, 8)}, "r3gan_widths", "positive"),
        ({"r3gan_widths": (24, 16, 8), "r3gan_group_size": 32}, "r3gan_group_size", "divide"),
        ({"r3gan_group_size": -1}, "r3gan_group_size", ">= 0"),
        ({"r3gan_blocks_per_stage": 0}, "r3gan_blocks_per_stage", "positive"),
        ({"r3gan_expansion": 0}, "r3gan_expansion", "positive"),
    ],
)
def test_config_validation_names_the_bad_key(overrides, key, match):
    with pytest.raises(config_lib.ConfigError, match=f"config.{key}:.*{match}"):
        config_lib.validate_config(_config(**overrides))


def test_valid_shapes_pass_validation():
    for image_shape, widths in [
        ((28, 28, 3), (16, 16, 8)),  # Stacked MNIST: 7 -> 14 -> 28
        ((32, 32, 3), (16, 16, 8, 8)),  # 4 -> 8 -> 16 -> 32
        ((64, 64, 3), (16, 16, 8, 8, 8)),
        ((28, 28, 1), (16, 8)),  # 14 -> 28 also works
    ]:
        config_lib.validate_config(_config(image_shape, r3gan_widths=widths))


def test_one_train_step():
    """create_train_state and one jitted train_step with R1 on a tiny r3gan config."""
    config = _config(batch_size=4, r1_weight=1.0, r3gan_blocks_per_stage=1)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config)
    batch = {
        "image": jax.random.uniform(jax.random.key(1), (4, 28, 28, 1), minval=-1.0),
        "label": jnp.arange(4) % 10,
    }
    step = jax.jit(
        functools.partial(step_lib.train_step, models=models, optimizers=optimizers, config=config)
    )
    new_state, metrics = step(state, batch, jax.random.key(2))
    assert int(new_state.step) == 1
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert float(metrics["r1_penalty"]) > 0.0
    for before, after in (
        (state.g_params, new_state.g_params),
        (state.d_params, new_state.d_params),
    ):
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
        )
