"""The per-backend compiler options: what they change on CPU, and the fallback when unknown."""

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import xla_options


def _conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_args():
    key_x, key_w = jax.random.split(jax.random.key(0))
    return (
        jax.random.normal(key_x, (4, 14, 14, 32)),
        jax.random.normal(key_w, (3, 3, 32, 16)),
    )


def test_cpu_convolutions_leave_ynnpack_and_keep_their_values():
    assert xla_options.compiler_options("cpu") == xla_options.CPU_EIGEN_CONVOLUTIONS
    x, w = _conv_args()
    default_hlo = jax.jit(_conv).lower(x, w).compile().as_text()
    ours = xla_options.jit(_conv, platform="cpu")
    ours_hlo = ours.lower(x, w).compile().as_text()
    # XLA's default wraps the convolution in a YNNPACK fusion; ours leaves it to Eigen.
    assert "ynn_fusion" in default_hlo
    assert "ynn_fusion" not in ours_hlo and "convolution(" in ours_hlo
    np.testing.assert_allclose(ours(x, w), jax.jit(_conv)(x, w), rtol=1e-5, atol=1e-4)


def test_decorator_forms_and_jit_arguments():
    @xla_options.jit(static_argnums=1)
    def scale(x, factor):
        return x * factor

    @xla_options.jit
    def double(x):
        return 2 * x

    np.testing.assert_array_equal(scale(jnp.arange(3.0), 3), [0.0, 3.0, 6.0])
    np.testing.assert_array_equal(double(jnp.arange(3.0)), [0.0, 2.0, 4.0])


def test_other_backends_get_xla_defaults():
    assert xla_options.compiler_options("gpu") is None
    assert xla_options.compiler_options("tpu") is None


def test_an_option_this_xla_rejects_falls_back_to_none(monkeypatch):
    monkeypatch.setattr(
        xla_options, "CPU_EIGEN_CONVOLUTIONS", {"xla_cpu_experimental_ynn_fusion_type": "BOGUS"}
    )
    assert xla_options.compiler_options("cpu") is None
    x, w = _conv_args()
    np.testing.assert_allclose(
        xla_options.jit(_conv, platform="cpu")(x, w), jax.jit(_conv)(x, w), rtol=1e-5, atol=1e-4
    )
