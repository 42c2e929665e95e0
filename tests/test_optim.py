"""The players' optimisers: the discriminator's schedule counts its n_critic updates a step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import optim
from tests.helpers import tiny_config


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine", "linear"])
def test_discriminator_schedule_is_the_generators_in_train_steps(schedule):
    """With n_critic updates a step, D's learning rate at update n_critic * t is G's at step t:
    warmup and decay alike (the warmup was once left unscaled)."""
    n_critic, num_steps = 5, 40
    config = tiny_config("seed_mlp", n_critic=n_critic, num_steps=num_steps)
    for player in (config.g_optimizer, config.d_optimizer):
        player.schedule = schedule
        player.warmup_steps = 10
    g_lr = optim.learning_rate_schedule(config.g_optimizer, num_steps=num_steps)
    d_lr = optim.learning_rate_schedule(
        config.d_optimizer, num_steps=num_steps, updates_per_step=n_critic
    )
    steps = jnp.arange(num_steps + 1)
    np.testing.assert_allclose(d_lr(n_critic * steps), g_lr(steps), rtol=1e-5, atol=1e-12)
    if schedule == "warmup_cosine":
        peak = config.d_optimizer.learning_rate
        np.testing.assert_allclose(d_lr(n_critic * 10), peak, rtol=1e-6)  # warmup ends at step 10
        np.testing.assert_allclose(d_lr(10), peak / n_critic, rtol=1e-6)  # not at update 10


def test_built_discriminator_optimizer_warms_up_over_n_critic_updates_a_step():
    """The optimiser build_optimizers gives D takes steps of its scaled schedule's size (Adam on
    a constant gradient moves each parameter by the learning rate)."""
    n_critic, warmup = 3, 4
    config = tiny_config("seed_mlp", n_critic=n_critic, num_steps=100)
    config.d_optimizer.schedule = "warmup_cosine"
    config.d_optimizer.warmup_steps = warmup
    d_opt = optim.build_optimizers(config).discriminator
    params = {"w": jnp.zeros((3,))}
    grads = {"w": jnp.ones((3,))}
    opt_state = d_opt.init(params)
    sizes = []
    for _ in range(n_critic * warmup + 1):
        updates, opt_state = d_opt.update(grads, opt_state, params)
        sizes.append(-float(updates["w"][0]))
    lr = config.d_optimizer.learning_rate
    want = [lr * min(c / (n_critic * warmup), 1.0) for c in range(n_critic * warmup + 1)]
    np.testing.assert_allclose(sizes, want, rtol=1e-4, atol=1e-12)  # f32 Adam arithmetic
    assert jax.tree.leaves(opt_state)  # the state advanced alongside
