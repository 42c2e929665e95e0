"""experiments/benchmark.py's FLOP accounting, checked against the dots the steps really run."""

import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchmark
from gan_jax import models as models_lib
from gan_jax import optim, step
from gan_jax.state import create_train_state
from tests.helpers import tiny_config


def _matmul_flops(jaxpr: jax.extend.core.Jaxpr) -> int:
    """2 x multiply-adds of every matrix product in `jaxpr` and the jaxprs nested in it.
    Products with a scalar result (the gradient norms' sums of squares) are not model work."""
    flops = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out_shape = eqn.outvars[0].aval.shape
            if out_shape:
                (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
                lhs_shape = eqn.invars[0].aval.shape
                depth = math.prod(lhs_shape[d] for d in lhs_contracting)
                flops += 2 * math.prod(out_shape) * depth
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                sub = getattr(sub, "jaxpr", sub)
                if isinstance(sub, jax.extend.core.Jaxpr):
                    flops += _matmul_flops(sub)
    return flops


def test_seed_mlp_flop_count_is_the_matmuls_train_step_runs():
    config = tiny_config("seed_mlp")
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config, models=models, optimizers=optimizers)
    batch = {"image": jnp.zeros((config.batch_size, *config.image_shape), jnp.float32)}

    def one_step(state, batch):
        return step.train_step(
            state, batch, jax.random.key(1), models=models, optimizers=optimizers, config=config
        )

    counted = _matmul_flops(jax.make_jaxpr(one_step)(state, batch).jaxpr)
    assert counted > 0
    assert counted == config.batch_size * sum(benchmark.flops_per_image(config).values())


def test_matmul_ceiling_step_runs_the_same_matmuls_as_the_train_step():
    config = tiny_config("seed_mlp")
    ceiling_step, weights = benchmark.mlp_matmul_step(config)
    z = jnp.ones((config.batch_size, config.latent_dim))
    real = jnp.ones((config.batch_size, math.prod(config.image_shape)))
    counted = _matmul_flops(jax.make_jaxpr(ceiling_step)(weights, (z, real)).jaxpr)
    assert counted == config.batch_size * sum(benchmark.flops_per_image(config).values())
    # It depends on its inputs (nothing XLA could drop as dead code) and moves the weights.
    new_weights = ceiling_step(weights, (z, real))
    assert all(np.isfinite(np.asarray(w)).all() for w in new_weights)
    assert any(not np.array_equal(new, old) for new, old in zip(new_weights, weights, strict=True))


def test_seed_workload_names():
    """NAME_xS trains S seeds of NAME; +vmap forces the vmapped form; the solo name is NAME."""
    assert benchmark.split_seeds("seed_mlp_x10") == ("seed_mlp", 10, None)
    assert benchmark.split_seeds("seed_mlp_x10+vmap+ynnpack") == ("seed_mlp+ynnpack", 10, True)
    assert benchmark.split_seeds("dcgan_flax") == ("dcgan_flax", 1, None)
    wl = benchmark.workload("seed_mlp_x10")
    assert (wl.num_seeds, wl.solo_name, wl.steps_per_dispatch) == (10, "seed_mlp", 50)
    with pytest.raises(ValueError, match="needs S seeds"):
        benchmark.split_seeds("seed_mlp+vmap")
    with pytest.raises(ValueError, match="must be >= 1"):
        benchmark.workload("seed_mlp_x0")
