"""The dcgan's layers are Flax's functions and parameters, computed faster: the generator's
`layers.ConvTranspose` (tested in tests/test_layers.py) and the discriminator's `models.Conv`,
whose input gradient runs as a phase-decomposed transposed convolution."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import models as models_lib
from tests.helpers import assert_trees_equal, leaf_errors, tiny_config


def _assert_close(actual, expected, rtol=1e-5):
    errors = leaf_errors(actual, expected)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rtol, f"{worst}: {errors[worst]:.3g}"


@pytest.mark.parametrize(
    ("size", "channels", "features", "kernel", "stride", "padding"),
    [
        (28, 1, 8, 5, 2, "SAME"),  # the dcgan's first layer, narrowed
        (14, 8, 16, 5, 2, "SAME"),  # its second
        (9, 3, 5, 4, 3, "SAME"),  # output size not a multiple of the stride
        (11, 2, 4, 3, 2, "VALID"),  # uncovered input rows get zero gradient
        (8, 4, 6, 3, 1, "SAME"),  # stride 1: plain XLA convolution
    ],
)
def test_conv_is_flax_conv_with_the_same_gradients(
    size, channels, features, kernel, stride, padding
):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, size, size, channels)))
    x = x.astype(jnp.float32)
    kwargs = dict(features=features, kernel_size=(kernel, kernel), strides=(stride, stride))
    ours, theirs = models_lib.Conv(padding=padding, **kwargs), nn.Conv(padding=padding, **kwargs)
    variables = theirs.init(jax.random.key(0), x)
    assert_trees_equal(ours.init(jax.random.key(0), x), variables)  # names, shapes, init
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # a nonzero bias

    def loss(module, variables, x):
        return jnp.sum(jnp.sin(module.apply(variables, x)))

    def penalty(module, variables, x):  # R1 / WGAN-GP differentiate the input gradient
        return jnp.sum(jax.grad(functools.partial(loss, module, variables))(x) ** 2)

    for fn in (loss, penalty):
        want = jax.jit(jax.value_and_grad(functools.partial(fn, theirs), argnums=(0, 1)))
        got = jax.jit(jax.value_and_grad(functools.partial(fn, ours), argnums=(0, 1)))
        _assert_close(got(variables, x), want(variables, x))


def test_dcgan_state_layout_is_flax_layers():
    """The dcgan's fast layers keep nn.ConvTranspose's and nn.Conv's parameter names, shapes and
    dtypes, so checkpoints of either load into the other."""
    config = tiny_config("dcgan")
    models = models_lib.build_models(config)
    assert models.generator.conv_transpose is not nn.ConvTranspose
    assert models.discriminator.conv is not nn.Conv
    z = jnp.zeros((2, config.latent_dim))
    images = jnp.zeros((2, *config.image_shape))
    for ours, theirs, inputs in [
        (models.generator, models.generator.clone(conv_transpose=nn.ConvTranspose), z),
        (models.discriminator, models.discriminator.clone(conv=nn.Conv), images),
    ]:
        layouts = [
            jax.eval_shape(functools.partial(m.init, train=False), jax.random.key(0), inputs)
            for m in (ours, theirs)
        ]
        assert jax.tree.structure(layouts[0]) == jax.tree.structure(layouts[1])
        assert jax.tree.leaves(layouts[0]) == jax.tree.leaves(layouts[1])  # shapes and dtypes
        names = set(layouts[0]["params"])
        assert names & {"ConvTranspose_0", "Conv_0"}, names


class _FlaxCompactGenerator(nn.Module):
    """models.CompactGenerator written with Flax's own layers: the reference it must equal."""

    width: int
    batch_norm: bool

    @nn.compact
    def __call__(self, z, *, train):
        def normalise(x):
            if not self.batch_norm:
                return x
            return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3)(x)

        bias = not self.batch_norm
        h = nn.relu(normalise(nn.Dense(7 * 7 * 2 * self.width, use_bias=bias)(z)))
        h = h.reshape((z.shape[0], 7, 7, 2 * self.width))
        conv_t = functools.partial(nn.ConvTranspose, kernel_size=(4, 4), strides=(2, 2))
        h = nn.relu(normalise(conv_t(self.width, use_bias=bias)(h)))
        return jnp.tanh(conv_t(1)(h))


class _FlaxCompactDiscriminator(nn.Module):
    width: int

    @nn.compact
    def __call__(self, images):
        h = images
        for features in (self.width, 2 * self.width):
            h = nn.leaky_relu(nn.Conv(features, (4, 4), strides=(2, 2))(h), negative_slope=0.2)
        return nn.Dense(1, name="logit")(h.reshape((h.shape[0], -1)))[:, 0]


@pytest.mark.parametrize("batch_norm", [True, False])
def test_dcgan_compact_is_its_flax_reference(batch_norm):
    """Same parameter tree as the Flax-layer reference, and with the same variables the same
    images, logits and gradients (training mode, BatchNorm on the batch)."""
    config = tiny_config("dcgan_compact", g_batch_norm=batch_norm)
    models = models_lib.build_models(config)
    width = config.g_width
    z = jax.random.normal(jax.random.key(1), (4, config.latent_dim))
    g_ref = _FlaxCompactGenerator(width=width, batch_norm=batch_norm)
    # Initialised under jax.jit (eagerly, every initialiser compiles on its own); the
    # references' layouts only traced.
    g_vars = jax.jit(functools.partial(models.generator.init, train=False))(jax.random.key(0), z)
    assert jax.tree.structure(g_vars) == jax.tree.structure(
        jax.eval_shape(functools.partial(g_ref.init, train=False), jax.random.key(0), z)
    )
    assert ("batch_stats" in g_vars) == batch_norm  # no BN: the EMA params are the whole model
    g_vars = jax.tree.map(lambda v: v + 0.05, g_vars)  # nonzero biases and BN shifts

    def g_loss(module, variables):
        images, _ = module.apply(variables, z, train=True, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(3.0 * images)), images

    got = jax.jit(jax.value_and_grad(functools.partial(g_loss, models.generator), has_aux=True))
    want = jax.jit(jax.value_and_grad(functools.partial(g_loss, g_ref), has_aux=True))
    (_, images), g_grads = got(g_vars)
    assert images.shape == (4, 28, 28, 1)
    _assert_close(got(g_vars), want(g_vars), rtol=1e-4)  # float32 sums in another order

    d_ref = _FlaxCompactDiscriminator(width=config.d_width)
    d_vars = jax.jit(models.discriminator.init)(jax.random.key(2), images)
    d_vars = jax.tree.map(lambda v: v + 0.05, d_vars)
    assert jax.tree.structure(d_vars) == jax.tree.structure(
        jax.eval_shape(d_ref.init, jax.random.key(2), images)
    )

    def d_loss(apply, variables, x):
        return jnp.sum(jnp.sin(apply(variables, x)))

    ours = functools.partial(d_loss, lambda v, x: models.discriminator.apply(v, x))
    theirs = functools.partial(d_loss, d_ref.apply)
    grad = functools.partial(jax.value_and_grad, argnums=(0, 1))
    _assert_close(jax.jit(grad(ours))(d_vars, images), jax.jit(grad(theirs))(d_vars, images))
