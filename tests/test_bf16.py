"""bf16 mixed precision (config.compute_dtype = "bfloat16"): parameters, optimiser states, EMA and
BatchNorm statistics stay float32, the convolutions and matmuls run in bfloat16, the gradients are
those of the f32 model up to bf16 rounding, and a GAN trained this way still learns.

(On CPU, XLA computes bf16 dots and convolutions in f32 and rounds the results, so bf16 buys no
speed there; these tests are about the numerics, which are those of GPU/TPU bf16 runs.)
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import models as models_lib
from gan_jax import optim
from gan_jax.models import Models
from gan_jax.state import create_train_state
from gan_jax.step import train_step
from tests.helpers import leaf_errors, tiny_config
from tests.test_learning import _modes_covered, ring_run

BF16 = jnp.dtype(jnp.bfloat16)


def _setup(model: str, compute_dtype: str, *, abstract: bool = False):
    """(config, models, state, batch, step); the state only as shapes when `abstract`."""
    config = tiny_config(model, compute_dtype=compute_dtype)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    init = functools.partial(
        create_train_state, config=config, models=models, optimizers=optimizers
    )
    state = (
        jax.eval_shape(init, jax.random.key(0)) if abstract else jax.jit(init)(jax.random.key(0))
    )
    images = jax.random.uniform(jax.random.key(1), (config.batch_size, *config.image_shape))
    if models.pixel_range == "symmetric":
        images = 2 * images - 1
    step = functools.partial(train_step, models=models, optimizers=optimizers, config=config)
    return config, models, state, {"image": images}, step


def _float_dtypes(tree) -> set:
    return {
        jnp.dtype(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
    }


def _subjaxprs(eqn):
    for param in eqn.params.values():
        for sub in param if isinstance(param, tuple | list) else (param,):
            sub = getattr(sub, "jaxpr", sub)
            if isinstance(sub, jax.extend.core.Jaxpr):
                yield sub


def _matmul_flops_by_dtype(jaxpr) -> dict:
    """FLOPs of every dot_general and conv_general_dilated in `jaxpr` (nested ones included),
    summed by the dtype of their operands ("mixed" when the two differ)."""
    flops: dict = {}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            lhs, rhs = (v.aval for v in eqn.invars[:2])
            out = eqn.outvars[0].aval
            if name == "dot_general":
                (contracting, _), _ = eqn.params["dimension_numbers"]
                depth = math.prod(lhs.shape[d] for d in contracting)
            else:
                out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
                depth = math.prod(rhs.shape) // rhs.shape[out_feature_dim]
            key = str(lhs.dtype) if lhs.dtype == rhs.dtype else "mixed"
            flops[key] = flops.get(key, 0) + 2 * math.prod(out.shape) * depth
        for sub in _subjaxprs(eqn):
            for key, value in _matmul_flops_by_dtype(sub).items():
                flops[key] = flops.get(key, 0) + value
    return flops


# The DCGAN's bf16 state (9 s of compiling) runs with -m slow.
@pytest.mark.parametrize("model", ["seed_mlp", pytest.param("dcgan", marks=pytest.mark.slow)])
def test_bf16_state_stays_float32_and_compute_is_bf16(model):
    config, models, state, batch, step = _setup(model, "bfloat16")
    assert _float_dtypes(state) == {jnp.dtype(jnp.float32)}

    new_state, metrics = jax.jit(step)(state, batch, jax.random.key(2))
    assert _float_dtypes(new_state) == {jnp.dtype(jnp.float32)}
    assert all(jnp.dtype(v.dtype) == jnp.float32 for v in metrics.values())
    assert all(np.isfinite(float(v)) for v in metrics.values())

    # Nearly all the work (all but the f32 logit layer) is bf16 x bf16.
    flops = _matmul_flops_by_dtype(jax.make_jaxpr(step)(state, batch, jax.random.key(2)).jaxpr)
    total = sum(flops.values())
    assert flops.get("bfloat16", 0) / total > 0.97, flops
    # Control: the f32 model has no bf16 work, so the check above can fail.
    _, _, state32, _, step32 = _setup(model, "float32", abstract=True)
    flops32 = _matmul_flops_by_dtype(
        jax.make_jaxpr(step32)(state32, batch, jax.random.key(2)).jaxpr
    )
    assert set(flops32) == {"float32"}

    # The activations between layers are bf16; the generator's images and the logits are f32.
    z = jnp.zeros((2, config.latent_dim))
    variables = {"params": state.g_params, **state.g_state}
    images, intermediates = jax.jit(
        functools.partial(models.generator.apply, train=False, capture_intermediates=True)
    )(variables, z)
    assert images.dtype == jnp.float32
    hidden = [
        v[0]
        for path, v in jax.tree_util.tree_leaves_with_path(intermediates)
        if "Dense_0" in str(path)
    ]
    assert hidden and all(h.dtype == BF16 for h in hidden)
    logits = jax.jit(models.discriminator.apply)({"params": state.d_params}, images)
    assert logits.dtype == jnp.float32


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.slow  # two DCGANs compiled; the fast step checks bf16 compute on the seed MLP
def test_bf16_gradients_are_the_f32_gradients_rounded():
    """At the same parameters and inputs, the bf16 model's gradients are the f32 model's up to
    bf16 rounding. Measured: 1.5% (D) and 3.8% (G) relative error of the whole gradient, and
    every parameter's gradient at cosine >= 0.97 to the f32 one (the worst, Conv_1's bias, sums
    cotangents that nearly cancel). A broken cast or a lost term would be O(1) off."""
    config, models, state, batch, _ = _setup("dcgan", "bfloat16")
    _, models32, _, _, _ = _setup("dcgan", "float32", abstract=True)
    z = jax.random.normal(jax.random.key(3), (config.batch_size, config.latent_dim))

    def grads(models):
        def losses(d_params, g_params):
            fake, _ = models_lib.apply_model(
                models.generator, g_params, state.g_state, z, None, train=True
            )
            both = jnp.concatenate([batch["image"], fake])
            logits = models.discriminator.apply({"params": d_params}, both)
            real, fake = logits[: len(z)], logits[len(z) :]
            d_loss = jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
            return d_loss, jnp.mean(jax.nn.softplus(-fake))

        d_grads = jax.grad(lambda d: losses(d, state.g_params)[0])(state.d_params)
        g_grads = jax.grad(lambda g: losses(state.d_params, g)[1])(state.g_params)
        return d_grads, g_grads

    ours, theirs = jax.jit(lambda: grads(models))(), jax.jit(lambda: grads(models32))()
    assert _float_dtypes(ours) == {jnp.dtype(jnp.float32)}
    for player in (0, 1):
        a, b = _flat(ours[player]), _flat(theirs[player])
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.1, player
        for x, y in zip(
            jax.tree.leaves(ours[player]), jax.tree.leaves(theirs[player]), strict=True
        ):
            assert _cosine(_flat(x), _flat(y)) > 0.95
    # Control: bf16 really rounds (the two computations are not the same).
    assert np.median(list(leaf_errors(ours, theirs).values())) > 1e-3


class _Bf16Generator(nn.Module):
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, labels=None, *, train=True):
        h = nn.relu(nn.Dense(128, dtype=jnp.bfloat16)(z))
        h = nn.relu(nn.Dense(128, dtype=jnp.bfloat16)(h))
        return nn.Dense(2, dtype=jnp.float32)(h)


class _Bf16Discriminator(nn.Module):
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, labels=None, *, train=True):
        h = nn.relu(nn.Dense(128, dtype=jnp.bfloat16)(x))
        h = nn.relu(nn.Dense(128, dtype=jnp.bfloat16)(h))
        return nn.Dense(1, dtype=jnp.float32)(h)[:, 0]


@pytest.mark.slow  # 2,000 training steps; the fast step checks bf16 compute and gradients
def test_bf16_gan_learns_the_ring():
    """tests/test_learning.py's 8-Gaussians run with bf16 compute: it still covers the modes."""
    state, train, sample = ring_run(
        Models(_Bf16Generator(), _Bf16Discriminator(), pixel_range="unit")
    )
    assert _float_dtypes(state) == {jnp.dtype(jnp.float32)}
    assert _modes_covered(sample(state)) <= 1, "control: untrained covers no more than one mode"
    state = train(state)
    assert _float_dtypes(state) == {jnp.dtype(jnp.float32)}
    covered = _modes_covered(sample(state))
    assert covered >= 6, f"the bf16-trained generator covers only {covered} of 8 modes"
