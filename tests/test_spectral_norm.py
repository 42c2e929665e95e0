"""Spectral normalisation of the discriminators (config.d_spectral_norm): every layer computes
with kernel / sigma, sigma -> the kernel's largest singular value (convolutions as the
[kh*kw*cin, cout] matrix SNGAN normalises), with the power-iteration state in d_state."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import models as models_lib
from gan_jax import optim
from gan_jax import step as step_lib
from gan_jax.models import SPECTRAL_NORM, apply_model
from gan_jax.state import create_train_state
from tests.helpers import assert_trees_equal, tiny_config


def _sn_config(model, **overrides):
    return tiny_config(model, d_spectral_norm=True, **overrides)


def _sigmas(d_state):
    """{layer name: the last sigma} from the spectral-norm collection."""
    sigmas = {}
    for wrapper in d_state[SPECTRAL_NORM].values():
        for name, value in wrapper.items():
            if name.endswith("/sigma"):
                sigmas[name.split("/")[0]] = float(value)
    return sigmas


@pytest.mark.parametrize(
    ("model", "conditional"), [("seed_mlp", False), ("dcgan", True), ("dcgan_compact", False)]
)
def test_normalised_kernels_have_spectral_norm_one(model, conditional):
    """After enough power iterations (40 training-mode calls of 10; the slowest layer here needs
    about 130 for 1e-4, its two top singular values being 2% apart), every kernel divided by its
    stored sigma has largest singular value 1 within 1e-3 of numpy's SVD, and the layer
    computes exactly with that kernel: the plain model given kernel / sigma gives the output."""
    num_classes = 10 if conditional else 0
    config = _sn_config(model, num_classes=num_classes, sn_power_iterations=10)
    discriminator = models_lib.build_models(config).discriminator
    state = create_train_state(jax.random.key(0), config)
    images = jax.random.uniform(jax.random.key(1), (4, *config.image_shape))
    labels = jnp.arange(4) if conditional else None
    call = jax.jit(functools.partial(apply_model, discriminator, train=True))
    d_state = state.d_state
    for _ in range(40):
        logits, d_state = call(state.d_params, d_state, images, labels)
    sigmas = _sigmas(d_state)
    expected_layers = {"Dense_0", "logit"} if model == "seed_mlp" else {"Conv_0", "Conv_1", "logit"}
    if conditional:
        expected_layers.add("label_projection")
    assert set(sigmas) == expected_layers

    normalised = {}
    for layer, sigma in sigmas.items():
        name = "embedding" if layer == "label_projection" else "kernel"
        kernel = np.asarray(state.d_params[layer][name], np.float64)
        matrix = kernel.reshape(-1, kernel.shape[-1])  # [kh*kw*cin, cout] for convolutions
        top = np.linalg.svd(matrix, compute_uv=False)[0]
        np.testing.assert_allclose(top / sigma, 1.0, atol=1e-3, err_msg=layer)
        normalised[layer] = {**state.d_params[layer], name: state.d_params[layer][name] / sigma}
    plain = discriminator.clone(spectral_norm=False)
    # The last call normalised with the sigma before its update; one more eval-mode call
    # normalises with the stored one (sigma has converged, so both agree closely).
    final, unchanged = apply_model(
        discriminator, state.d_params, d_state, images, labels, train=False
    )
    assert_trees_equal(unchanged, d_state)  # evaluation mode leaves the vectors alone
    want = plain.apply({"params": {**state.d_params, **normalised}}, images, labels)
    np.testing.assert_allclose(final, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model", ["seed_mlp", "dcgan"])
def test_spectral_norm_adds_state_and_keeps_the_parameters_layout(model):
    """Same parameter names and shapes; each initial kernel is the plain layer's up to a scale
    (flax.linen.SpectralNorm stores its normalised view at initialisation), which the
    normalised layer cannot see: kernel / sigma(kernel) is scale-free. Vectors are in d_state."""
    with_sn = create_train_state(jax.random.key(0), _sn_config(model))
    without = create_train_state(jax.random.key(0), tiny_config(model))
    assert jax.tree.structure(with_sn.d_params) == jax.tree.structure(without.d_params)
    for got, plain in zip(
        jax.tree.leaves(with_sn.d_params), jax.tree.leaves(without.d_params), strict=True
    ):
        got, plain = np.asarray(got, np.float64), np.asarray(plain, np.float64)
        if plain.ndim < 2 or not plain.any():  # biases are left as they are
            np.testing.assert_array_equal(got, plain)
            continue
        scale = np.vdot(plain, got) / np.vdot(plain, plain)
        assert scale > 0
        np.testing.assert_allclose(got, scale * plain, rtol=1e-5, atol=1e-8)
    assert not without.d_state
    assert set(with_sn.d_state) == {SPECTRAL_NORM}


@pytest.mark.parametrize("model", ["seed_mlp", "dcgan"])
def test_vectors_advance_in_the_discriminator_update_only(model):
    config = _sn_config(model)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config)
    batch = {"image": jax.random.uniform(jax.random.key(1), (64, *config.image_shape))}
    z = jax.random.normal(jax.random.key(2), (64, config.latent_dim))
    mix = jnp.zeros((64,))
    forward = jax.jit(functools.partial(step_lib.generator_forward, generator=models.generator))(
        state, z, None
    )
    update_d = functools.partial(
        step_lib.discriminator_update,
        discriminator=models.discriminator,
        optimizer=optimizers.discriminator,
        config=config,
    )
    after_d, _ = jax.jit(update_d)(state, batch["image"], forward.fake, None, mix)
    assert not np.array_equal(
        jax.tree.leaves(after_d.d_state)[1], jax.tree.leaves(state.d_state)[1]
    )
    update_g = functools.partial(
        step_lib.generator_update,
        discriminator=models.discriminator,
        optimizer=optimizers.generator,
        config=config,
    )
    after_g, _ = jax.jit(update_g)(after_d, forward, None)
    assert_trees_equal(after_g.d_state, after_d.d_state)


def test_bad_power_iterations_name_the_key():
    config = _sn_config("seed_mlp", sn_power_iterations=0)
    with pytest.raises(ValueError, match=r"config\.sn_power_iterations"):
        models_lib.build_models(config)
