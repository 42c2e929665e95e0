"""The per-backend compiler options: what they change on CPU, and the fallback when unknown."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import data, fused, optim, parallel, xla_options
from gan_jax import models as models_lib
from gan_jax.state import create_train_state
from tests.helpers import tiny_config


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


def _dot(x, w):
    return x.reshape(-1, x.shape[-1]) @ w[0, 0]  # [784, 32] @ [32, 16]


def _ops(hlo: str, op: str = "convolution") -> tuple[int, int]:
    """(`op`s in all, `op`s inside YNNPACK fusions) of compiled HLO text."""
    ynn_bodies = set(re.findall(r"fusion\(.*calls=%([\w.-]+).*__ynn_fusion", hlo))
    total = in_ynn = 0
    for computation in hlo.split("\n\n"):
        name = re.match(r"\s*(?:ENTRY )?%([\w.-]+)", computation)
        count = computation.count(f" {op}(")
        total += count
        if name and name.group(1) in ynn_bodies:
            in_ynn += count
    return total, in_ynn


@pytest.mark.parametrize("fn, op", [(_conv, "convolution"), (_dot, "dot")])
def test_cpu_convolutions_and_dots_leave_ynnpack_and_keep_their_values(fn, op):
    assert xla_options.compiler_options("cpu") == xla_options.CPU_OPTIONS
    x, w = _conv_args()
    default_hlo = jax.jit(fn).lower(x, w).compile().as_text()
    ours = xla_options.jit(fn, platform="cpu")
    ours_hlo = ours.lower(x, w).compile().as_text()
    # XLA's default wraps the op in a YNNPACK fusion; ours leaves it to Eigen.
    assert _ops(default_hlo, op) == (1, 1)
    assert _ops(ours_hlo, op) == (1, 0)
    np.testing.assert_allclose(ours(x, w), jax.jit(fn)(x, w), rtol=1e-5, atol=1e-4)


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


def test_an_option_this_xla_rejects_is_left_out(monkeypatch):
    region = "xla_cpu_copy_insertion_use_region_analysis"
    monkeypatch.setattr(
        xla_options,
        "CPU_OPTIONS",
        {"xla_cpu_experimental_ynn_fusion_type": "BOGUS", region: True},
    )
    assert xla_options.compiler_options("cpu") == {region: True}
    monkeypatch.setattr(xla_options, "CPU_OPTIONS", {"xla_cpu_no_such_option": True})
    assert xla_options.compiler_options("cpu") is None
    x, w = _conv_args()
    np.testing.assert_allclose(
        xla_options.jit(_conv, platform="cpu")(x, w), jax.jit(_conv)(x, w), rtol=1e-5, atol=1e-4
    )


def _loop_body_copies(hlo: str) -> list[str]:
    """The shapes of the `copy` ops in the compiled while loop's body (the computation with the
    most dots: the scanned train step)."""
    computations = re.split(r"\n(?=\S)", hlo)
    body = max(computations, key=lambda computation: computation.count(" dot("))
    return re.findall(r"= (f32\[[\d,]*\])\S* copy\(", body)


def test_scanned_steps_keep_the_optimiser_state_in_place():
    """Region-analysis copy insertion: the scanned seed_mlp step copies no f32 state per trip,
    and gives the same bits as XLA's default copy insertion, which copies the big Adam moments
    (the control)."""
    config = tiny_config("seed_mlp")
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config, models=models, optimizers=optimizers)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (100, 28, 28, 1), dtype=np.uint8))
    labels = jnp.zeros((100,), jnp.int32)
    key = jax.random.key(1)

    def run(state, images, labels, key):
        return fused.multi_step(
            state,
            images,
            labels,
            key,
            models=models,
            optimizers=optimizers,
            config=config,
            num_steps=3,
        )

    args = (state, images, labels, key)
    ours = jax.jit(run).lower(*args).compile(compiler_options=xla_options.compiler_options("cpu"))
    no_region = dict(xla_options.compiler_options("cpu"))
    no_region.pop("xla_cpu_copy_insertion_use_region_analysis")
    default = jax.jit(run).lower(*args).compile(compiler_options=no_region)
    assert _loop_body_copies(ours.as_text()) == []
    assert "f32[784,32]" in _loop_body_copies(default.as_text())
    jax.tree.map(np.testing.assert_array_equal, ours(*args), default(*args))


@pytest.fixture(scope="module")
def dcgan():
    config = tiny_config("dcgan")
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config, models=models, optimizers=optimizers)
    return config, models, optimizers, state


@pytest.mark.slow  # compiles the fused and the sharded DCGAN steps: about 18 s
def test_the_library_compiles_its_dcgan_jits_without_ynnpack(dcgan):
    """The wiring: the fused and the sharded steps are compiled with the options (the samplers
    use `xla_options.jit`, tested above)."""
    config, models, optimizers, state = dcgan
    mesh = parallel.data_mesh(jax.devices()[:1])
    state = parallel.replicate_on_mesh(state, mesh)
    rng = np.random.default_rng(0)
    images, labels = data.to_device(
        rng.integers(0, 256, (100, 28, 28, 1), dtype=np.uint8),
        rng.integers(0, 10, 100, dtype=np.int32),
        sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
    )
    key = jax.random.key(1)
    step_k = fused.fused_train_step(
        models=models, optimizers=optimizers, config=config, mesh=mesh, num_steps=1
    )
    sharded = parallel.sharded_train_step(
        models=models, optimizers=optimizers, config=config, mesh=mesh
    )
    batch = data.sample_batch(
        images, labels, 0, seed=0, batch_size=config.batch_size, pixel_range=models.pixel_range
    )
    hlos = {
        "fused": step_k.lower(state, images, labels, key).compile().as_text(),
        "sharded": sharded.lower(state, parallel.shard_on_mesh(batch, mesh), key)
        .compile()
        .as_text(),
    }
    for name, hlo in hlos.items():
        for op in ("convolution", "dot"):
            total, in_ynn = _ops(hlo, op)
            assert total > 0 and in_ynn == 0, f"{name}: {in_ynn} of {total} {op}s in YNNPACK"
    # Control: the same step with XLA's default options puts its convolutions and dots in YNNPACK.
    default = jax.jit(
        jax.shard_map(
            lambda *args: fused.multi_step(
                *args,
                models=models,
                optimizers=optimizers,
                config=config,
                num_steps=1,
                axis_name=parallel.DATA_AXIS,
            ),
            mesh=mesh,
            in_specs=(jax.sharding.PartitionSpec(),) * 4,
            out_specs=(jax.sharding.PartitionSpec(),) * 2,
            check_vma=False,
        )
    )
    default_hlo = default.lower(state, images, labels, key).compile().as_text()
    for op in ("convolution", "dot"):
        total, in_ynn = _ops(default_hlo, op)
        assert total > 0 and in_ynn > 0, (op, total, in_ynn)
