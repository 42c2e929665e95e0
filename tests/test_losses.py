"""The loss zoo against hand-computed values; the minimax optimum D* = p_data / (p_data + p_g);
the relativistic pairing loss and the R1 / R2 penalties against per-example references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import losses
from tests.helpers import assert_trees_close

REAL = np.array([2.0, -1.0, 0.5], np.float32)
FAKE = np.array([-3.0, 0.0, 1.5], np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _softplus(x):
    return np.log1p(np.exp(np.asarray(x, np.float64)))


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
        # Pairs (REAL[i], FAKE[i]): softplus(-(r - f)) for D, softplus(-(f - r)) for G.
        "relativistic": (np.mean(_softplus(FAKE - REAL)), np.mean(_softplus(REAL - FAKE))),
    }[name]


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_loss_matches_hand_computed_values(name):
    loss = losses.get_loss(name)
    want_d, want_g = _expected(name)
    np.testing.assert_allclose(float(loss.d_loss(REAL, FAKE)), want_d, rtol=1e-6)
    np.testing.assert_allclose(float(loss.g_loss(FAKE, REAL)), want_g, rtol=1e-6)
    # Only the pairing loss reads real logits in G's loss; the others run without them.
    assert loss.needs_real_in_g == (name == "relativistic")
    if not loss.needs_real_in_g:
        np.testing.assert_allclose(float(loss.g_loss(FAKE, None)), want_g, rtol=1e-6)


def test_hinge_hand_value():
    # relu(1-2)+relu(1+1)+relu(1-0.5) = 0+2+0.5 -> 2.5/3; relu(1-3)+relu(1+0)+relu(1+1.5) = 3.5/3
    d = losses.get_loss("hinge").d_loss(REAL, FAKE)
    np.testing.assert_allclose(float(d), 2.5 / 3 + 3.5 / 3, rtol=1e-6)


def test_losses_are_finite_for_extreme_logits():
    big = jnp.array([-200.0, 200.0])
    for name in ("minimax", "non_saturating", "relativistic"):
        loss = losses.get_loss(name)
        values = [loss.d_loss(big, big[::-1]), loss.g_loss(big, big[::-1])]
        grads = jax.grad(lambda x, loss=loss: loss.g_loss(x, x[::-1]) + loss.d_loss(x, x[::-1]))(
            big
        )
        assert all(np.isfinite(float(v)) for v in values), name
        assert np.all(np.isfinite(np.asarray(grads))), name
    # log(sigmoid(-200)) in float32 would be -inf; log_sigmoid gives -200.
    np.testing.assert_allclose(float(losses.get_loss("non_saturating").g_loss(big[:1])), 200.0)
    # softplus(400) = 400 in float32, where log(1 + exp(400)) would overflow.
    relativistic = losses.get_loss("relativistic")
    np.testing.assert_allclose(float(relativistic.d_loss(big[:1], big[1:])), 400.0)


def test_relativistic_loss_and_gradient_match_per_example_reference():
    """Both players' pairing losses and their gradients w.r.t. both logit vectors equal a
    float64 loop over the pairs: loss_i = softplus(-(a_i - b_i)), d/da_i = -sigmoid(b_i - a_i),
    each over B."""
    rng = np.random.default_rng(0)
    real, fake = (3.0 * rng.standard_normal(7)).astype(np.float32), rng.standard_normal(7)
    fake = fake.astype(np.float32)
    loss = losses.get_loss("relativistic")
    batch = len(real)

    def reference(a, b):
        value = sum(_softplus(-(a[i] - b[i])) for i in range(batch)) / batch
        grad_a = np.array([-_sigmoid(b[i] - a[i]) for i in range(batch)]) / batch
        return value, grad_a, -grad_a

    # D: a = real, b = fake. G: a = fake, b = real.
    for fn, a, b in ((loss.d_loss, real, fake), (loss.g_loss, fake, real)):
        value, grads = jax.value_and_grad(fn, argnums=(0, 1))(a, b)
        want_value, want_a, want_b = reference(a.astype(np.float64), b.astype(np.float64))
        np.testing.assert_allclose(float(value), want_value, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(grads[0]), want_a, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.asarray(grads[1]), want_b, rtol=1e-6, atol=1e-9)
    # Pairs are index by index: other pairs of the same logits give another loss.
    assert abs(float(loss.d_loss(real, fake[::-1])) - float(loss.d_loss(real, fake))) > 1e-3
    # Only differences of paired scores enter: a shared shift changes nothing.
    np.testing.assert_allclose(
        float(loss.d_loss(real + 5, fake + 5)), float(loss.d_loss(real, fake)), rtol=1e-6
    )
    with pytest.raises(ValueError, match="pairs each fake with a real logit"):
        loss.g_loss(fake, None)


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


def _tiny_mlp_logits(params, images):
    """A 2-layer tanh MLP D: images [B, 2, 3] -> logits [B]. tanh, not ReLU, so the penalties'
    second derivatives are not zero."""
    h = jnp.tanh(images.reshape((images.shape[0], -1)) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _tiny_mlp():
    keys = jax.random.split(jax.random.key(5), 5)
    params = {
        "w1": jax.random.normal(keys[0], (6, 5)),
        "b1": 0.1 * jax.random.normal(keys[1], (5,)),
        "w2": jax.random.normal(keys[2], (5,)),
        "b2": jnp.float32(0.3),
    }
    real = jax.random.normal(keys[3], (4, 2, 3))
    fake = 2.0 * jax.random.normal(keys[4], (4, 2, 3))
    return params, real, fake


@pytest.mark.parametrize("penalty", ["r1", "r2"])
def test_penalty_and_its_param_gradient_match_per_example_reference(penalty):
    """R1 on reals and R2 on fakes: mean over examples of ||∇_x D(x_i)||² (summed over every
    non-batch axis), each example's input gradient from its own logit alone, and the gradient of
    that w.r.t. D's params, equal the batched one-backward-pass forms to 1e-6."""
    params, real, fake = _tiny_mlp()
    fn = {"r1": losses.r1_penalty, "r2": losses.r2_penalty}[penalty]
    images = {"r1": real, "r2": fake}[penalty]

    def batched(params):
        return fn(lambda x: _tiny_mlp_logits(params, x), images)

    def per_example(params):
        total = 0.0
        for x in images:
            grad_x = jax.grad(lambda x: _tiny_mlp_logits(params, x[None])[0])(x)
            total = total + jnp.sum(jnp.square(grad_x))
        return total / images.shape[0]

    # Jitted: op-by-op dispatch of the loop's double backward passes took seconds.
    value, grads = jax.jit(jax.value_and_grad(batched))(params)
    want_value, want_grads = jax.jit(jax.value_and_grad(per_example))(params)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6)
    assert float(value) > 0
    assert_trees_close(grads, want_grads, rtol=1e-6)


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
