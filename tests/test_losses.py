"""The loss zoo against hand-computed values; the minimax optimum D* = p_data / (p_data + p_g)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import losses

REAL = np.array([2.0, -1.0, 0.5], np.float32)
FAKE = np.array([-3.0, 0.0, 1.5], np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _expected(name):
    """Each objective written directly from its definition in float64 probabilities."""
    d_real, d_fake = _sigmoid(REAL), _sigmoid(FAKE)
    classic_d = -np.mean(np.log(d_real)) - np.mean(np.log(1 - d_fake))
    return {
        "minimax": (classic_d, np.mean(np.log(1 - d_fake))),
        "non_saturating": (classic_d, -np.mean(np.log(d_fake))),
        "hinge": (
            np.mean(np.maximum(0, 1 - REAL)) + np.mean(np.maximum(0, 1 + FAKE)),
            -np.mean(FAKE),
        ),
        "wasserstein": (np.mean(FAKE) - np.mean(REAL), -np.mean(FAKE)),
        "least_squares": (
            0.5 * np.mean((REAL - 1) ** 2) + 0.5 * np.mean(FAKE**2),
            0.5 * np.mean((FAKE - 1) ** 2),
        ),
    }[name]


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_loss_matches_hand_computed_values(name):
    loss = losses.get_loss(name)
    want_d, want_g = _expected(name)
    np.testing.assert_allclose(float(loss.d_loss(REAL, FAKE)), want_d, rtol=1e-6)
    np.testing.assert_allclose(float(loss.g_loss(FAKE)), want_g, rtol=1e-6)


def test_hinge_hand_value():
    # relu(1-2)+relu(1+1)+relu(1-0.5) = 0+2+0.5 -> 2.5/3; relu(1-3)+relu(1+0)+relu(1+1.5) = 3.5/3
    d = losses.get_loss("hinge").d_loss(REAL, FAKE)
    np.testing.assert_allclose(float(d), 2.5 / 3 + 3.5 / 3, rtol=1e-6)


def test_losses_are_finite_for_extreme_logits():
    big = jnp.array([-200.0, 200.0])
    for name in ("minimax", "non_saturating"):
        loss = losses.get_loss(name)
        values = [loss.d_loss(big, big), loss.g_loss(big)]
        grads = jax.grad(lambda x, loss=loss: loss.g_loss(x) + loss.d_loss(x, x))(big)
        assert all(np.isfinite(float(v)) for v in values), name
        assert np.all(np.isfinite(np.asarray(grads))), name
    # log(sigmoid(-200)) in float32 would be -inf; log_sigmoid gives -200.
    np.testing.assert_allclose(float(losses.get_loss("non_saturating").g_loss(big[:1])), 200.0)


def test_unknown_loss_names_config_key():
    with pytest.raises(ValueError, match=r"config\.loss.*'hinge'"):
        losses.get_loss("hinj")


def test_minimax_optimal_discriminator_is_density_ratio():
    """A tabular discriminator on a 1-D discrete toy, trained to convergence on the minimax D loss,
    outputs p_data / (p_data + p_g) at every support point."""
    support = 6
    p_data = np.array([0.30, 0.25, 0.20, 0.15, 0.07, 0.03])
    p_gen = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.25])
    # Samples in exact proportion, so the empirical loss has exactly this optimum.
    n = 200
    real_points = np.repeat(np.arange(support), (p_data * n).round().astype(int))
    fake_points = np.repeat(np.arange(support), (p_gen * n).round().astype(int))
    d_loss = losses.get_loss("minimax").d_loss

    def objective(logits):
        return d_loss(logits[real_points], logits[fake_points])

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    @jax.jit
    def solve(logits):
        def iteration(carry, _):
            logits, opt_state = carry
            value, grad = value_and_grad(logits, state=opt_state)
            updates, opt_state = solver.update(
                grad, opt_state, logits, value=value, grad=grad, value_fn=objective
            )
            return (optax.apply_updates(logits, updates), opt_state), None

        (logits, _), _ = jax.lax.scan(iteration, (logits, solver.init(logits)), length=100)
        return logits

    logits = solve(jnp.zeros(support))
    optimum = p_data / (p_data + p_gen)
    np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(logits)), optimum, atol=1e-4)


def test_r1_penalty_of_linear_discriminator():
    # D(x) = w·x has ∇D = w everywhere, so R1 = ||w||².
    w = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    images = jax.random.normal(jax.random.key(0), (5, 2, 2))

    def logit_fn(x):
        return jnp.sum(x * w, axis=(1, 2))

    np.testing.assert_allclose(float(losses.r1_penalty(logit_fn, images)), 1 + 4 + 0.25 + 9)


def test_gradient_penalty_of_linear_critic():
    # ||∇D|| = ||w|| = 3 at every interpolate, so the penalty is (3 - 1)² = 4.
    w = jnp.array([2.0, 1.0, 2.0])

    def logit_fn(x):
        return x @ w

    real = jax.random.normal(jax.random.key(1), (4, 3))
    fake = jax.random.normal(jax.random.key(2), (4, 3))
    mix = jax.random.uniform(jax.random.key(3), (4,))
    np.testing.assert_allclose(
        float(losses.gradient_penalty(logit_fn, real, fake, mix)), 4.0, rtol=1e-5
    )
