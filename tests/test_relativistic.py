"""R3GAN's objective in the train step (Huang et al., NeurIPS 2024; code: brownvc/R3GAN): the
relativistic pairing loss with R1 and R2, and the burn-in schedules of the penalty weights,
Adam's b2 and the EMA half-life, against per-example and closed-form references; the
data-parallel step and a resumed run against the single-device, uninterrupted one.

Tiny models throughout (seed_mlp on 4x4 images, 8 pairs a batch). Most of each test's time is
XLA compiling one step: with the tests' compilation cache warm every test here takes under 2 s;
cold, those that compile a step take 2-4 s on the project's 2-core machine (a test that draws
with jax.random or initialises eagerly pays seconds more, hence `_init` and `_images`).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import config as config_lib
from gan_jax import losses, optim, parallel, schedules
from gan_jax import models as models_lib
from gan_jax import step as step_lib
from gan_jax.checkpointing import Checkpointer
from gan_jax.state import create_train_state
from tests.helpers import assert_trees_close, assert_trees_equal, tiny_config

BATCH = 8
BURN_IN = 8
LR = 0.1  # of the recording optimiser


def _config(**overrides):
    """seed_mlp on 4x4 images, BATCH pairs a batch, R3GAN's loss and both penalties."""
    settings = dict(
        image_shape=(4, 4, 1),
        g_width=8,
        d_width=8,
        latent_dim=4,
        batch_size=BATCH,
        loss="relativistic",
        r1_weight=0.5,
        r2_weight=2.0,
        ema_decay=0.0,
    )
    settings.update(overrides)
    return tiny_config("seed_mlp", **settings)


def _r3gan_cosine(start, final, step, steps):
    """R3GAN's `cosine_decay_with_warmup` (training/training_loop.py) without warm-up or hold,
    in float64: start at 0, final at `steps` and after."""
    if step > steps:
        return final
    decay = 0.5 * (1 + math.cos(math.pi * step / steps))
    return start + (1 - decay) * (final - start)


def _recording_sgd():
    """SGD(LR) whose state is the gradient of its last update: a test reads the step's
    gradients, bitwise, from d_opt_state / g_opt_state."""

    def init(params):
        return jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, params=None):
        del state, params
        return jax.tree.map(lambda g: -LR * g, grads), grads

    return optax.GradientTransformation(init, update)


def _init(config, models=None, optimizers=None, seed=0):
    """create_train_state, jitted: one compile instead of one per initialiser op (seconds
    here). Under jit a few initial values may differ in the last bit from the eager ones
    (gan_jax/seeds.py); these tests compare runs that start from the same state."""
    init = functools.partial(
        create_train_state, config=config, models=models, optimizers=optimizers
    )
    return jax.jit(init)(jax.random.key(seed))


def _jit_step(config, models, optimizers):
    return jax.jit(
        functools.partial(step_lib.train_step, models=models, optimizers=optimizers, config=config)
    )


def _normal(seed, shape):
    """Host-drawn noise: a first jax.random draw compiles threefry (a second here)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _images(seed, count=BATCH):
    """Real images in seed_mlp's pixel range [0, 1), [count, 4, 4, 1]."""
    return jnp.asarray(np.random.default_rng(seed).random((count, 4, 4, 1)), jnp.float32)


def _differs(a, b) -> bool:
    return any(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _assert_grads_close(actual, expected):
    """Norm-wise 1e-6 per leaf (tests/helpers.py; measured 2e-7), except D's logit bias: the
    pairing loss reads only differences of scores and the penalties only input gradients, so
    its gradient is 0 exactly, and the step's is rounding of the size of the other leaves'
    float32 error."""
    actual, expected = dict(actual), dict(expected)
    if "logit" in expected:
        actual["logit"], expected["logit"] = dict(actual["logit"]), dict(expected["logit"])
        scale = float(optax.tree.norm(expected))
        for tree in (actual, expected):
            assert abs(float(tree["logit"].pop("bias")[0])) <= 1e-6 * scale
    assert_trees_close(actual, expected, rtol=1e-6)


def test_step_gradients_match_per_example_reference():
    """Step 3 of an 8-step burn-in, relativistic + R1 + R2, EMA by half-life. D's gradient is
    that of mean_i [softplus(-(D(x_i) - D(G(z_i)))) + γ1/2 ||∇D(x_i)||² + γ2/2 ||∇D(G(z_i))||²]
    with γ1, γ2 R3GAN's cosine at step 3; G's that of mean_i softplus(-(D'(G(z_i)) - D'(x_i)))
    with D' the discriminator after its update and x the same real batch; every term from one
    example alone. The EMA decays by 0.5 ** (images a step / half-life at step 3)."""
    step_index, factor, half_life = 3, 10.0, 100.0
    config = _config(
        burn_in_steps=BURN_IN, penalty_burn_in_factor=factor, ema_half_life_images=half_life
    )
    models = models_lib.build_models(config)
    optimizers = optim.Optimizers(_recording_sgd(), _recording_sgd())
    state = _init(config, models, optimizers).replace(step=jnp.asarray(step_index, jnp.int32))
    real, key = _images(1), jax.random.key(2)
    new_state, metrics = _jit_step(config, models, optimizers)(state, {"image": real}, key)
    gamma1 = _r3gan_cosine(factor * 0.5, 0.5, step_index, BURN_IN)
    gamma2 = _r3gan_cosine(factor * 2.0, 2.0, step_index, BURN_IN)

    def logit(d_params, x):  # one example [4, 4, 1] -> its logit
        return models.discriminator.apply({"params": d_params}, x[None])[0]

    def sq_input_grad(d_params, x):
        return jnp.sum(jnp.square(jax.grad(lambda x: logit(d_params, x))(x)))

    # Per example, vmapped: each example's terms come from its own logit alone. One compiled
    # program for the whole reference: op by op (or a Python loop over the examples) it took
    # seconds to compile.
    @jax.jit
    def reference(state, d_after, real):
        z = step_lib.step_noise(key, step_index, local_batch=BATCH, config=config).z[0]

        def generate(g_params):
            return models.generator.apply({"params": g_params}, z)

        fake = generate(state.g_params)

        def d_terms_of_pair(d_params, x, fake_x):
            return {
                "adv": jax.nn.softplus(-(logit(d_params, x) - logit(d_params, fake_x))),
                "r1": sq_input_grad(d_params, x),
                "r2": sq_input_grad(d_params, fake_x),
                "real": logit(d_params, x),
                "fake": logit(d_params, fake_x),
            }

        def d_loss(d_params):
            per_pair = jax.vmap(d_terms_of_pair, (None, 0, 0))(d_params, real, fake)
            terms = jax.tree.map(jnp.mean, per_pair)
            return terms["adv"] + gamma1 / 2 * terms["r1"] + gamma2 / 2 * terms["r2"], terms

        def g_loss(g_params):
            pair = jax.vmap(lambda f, x: logit(d_after, f) - logit(d_after, x))
            return jnp.mean(jax.nn.softplus(-pair(generate(g_params), real)))

        d_grads, d_terms = jax.grad(d_loss, has_aux=True)(state.d_params)
        g_value, g_grads = jax.value_and_grad(g_loss)(state.g_params)
        return d_grads, d_terms, g_value, g_grads

    # new_state.d_params = d_params - LR * the recorded gradients: D' of G's update.
    d_grads, d_terms, g_loss, g_grads = reference(state, new_state.d_params, real)
    _assert_grads_close(new_state.d_opt_state, d_grads)
    _assert_grads_close(new_state.g_opt_state, g_grads)
    np.testing.assert_allclose(metrics["d_loss"], d_terms["adv"], rtol=1e-6)
    np.testing.assert_allclose(metrics["r1_penalty"], d_terms["r1"], rtol=1e-6)
    np.testing.assert_allclose(metrics["r2_penalty"], d_terms["r2"], rtol=1e-6)
    np.testing.assert_allclose(metrics["g_loss"], g_loss, rtol=1e-6)
    # d_real / d_fake: the mean raw scores D (before its update) gave each side.
    np.testing.assert_allclose(metrics["d_real"], d_terms["real"], rtol=1e-6)
    np.testing.assert_allclose(metrics["d_fake"], d_terms["fake"], rtol=1e-6)

    h = _r3gan_cosine(0.0, half_life, step_index, BURN_IN)
    decay = 0.5 ** (config_lib.real_images_per_step(config) / h)
    assert 0.5 < decay < 0.95  # a live ramp, neither end
    want_ema = jax.tree.map(
        lambda e, p: decay * e + (1 - decay) * p, state.g_ema_params, new_state.g_params
    )
    assert_trees_close(new_state.g_ema_params, want_ema, rtol=1e-6)


@pytest.mark.parametrize("loss", ["relativistic", "non_saturating"])
def test_generator_update_reads_the_real_batch_only_for_the_pairing_loss(loss):
    """Another real batch changes G's gradient under the relativistic loss; under
    non_saturating G's update never touches it: the same result bitwise, the same program."""
    config = _config(loss=loss)
    models = models_lib.build_models(config)
    optimizers = optim.Optimizers(_recording_sgd(), _recording_sgd())
    state = _init(config, models, optimizers)
    z = _normal(3, (BATCH, config.latent_dim))
    forward = step_lib.generator_forward(state, z, None, generator=models.generator)
    update = functools.partial(
        step_lib.generator_update,
        discriminator=models.discriminator,
        optimizer=optimizers.generator,
        config=config,
    )
    first, _ = jax.jit(update)(state, forward, None, _images(4))
    second, _ = jax.jit(update)(state, forward, None, _images(5))
    if loss == "relativistic":
        assert _differs(first.g_opt_state, second.g_opt_state)
        with pytest.raises(ValueError, match="pass generator_update the real batch"):
            update(state, forward, None)
    else:
        assert_trees_equal(second, first)
        # No discriminator pass on reals: the traced program is that without a real batch.
        with_real = jax.make_jaxpr(update)(state, forward, None, _images(4))
        without = jax.make_jaxpr(update)(state, forward, None)
        assert len(with_real.eqns) == len(without.eqns)


class _BatchNormMLP(nn.Module):
    """A tiny D with train-mode BatchNorm, the case of unrolled_dcgan's D (whose convolutions
    took 15 s to compile here): images [B, ...] -> logits [B]."""

    axis_name: str | None = None

    @nn.compact
    def __call__(self, images, labels=None, *, train=True):
        h = nn.Dense(8)(images.reshape((images.shape[0], -1)))
        h = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name)(h)
        return nn.Dense(1)(nn.relu(h))[:, 0]


def test_batch_norm_discriminator_scores_reals_without_moving_its_statistics():
    """A D with BatchNorm (as unrolled_dcgan's): G's update scores the reals in training mode
    (their own batch statistics, as D's update does) and leaves d_state as it found it."""
    config = _config()
    seed_mlp = models_lib.build_models(config)
    models = models_lib.Models(seed_mlp.generator, _BatchNormMLP(), seed_mlp.pixel_range)
    optimizers = optim.build_optimizers(config)
    state = _init(config, models)
    assert "batch_stats" in state.d_state
    real = _images(1)
    z = _normal(2, (BATCH, config.latent_dim))

    def update_and_reference(state, real, z):
        forward = step_lib.generator_forward(state, z, None, generator=models.generator)
        after, metrics = step_lib.generator_update(
            state,
            forward,
            None,
            real,
            discriminator=models.discriminator,
            optimizer=optimizers.generator,
            config=config,
        )

        def train_mode(images):
            return models_lib.apply_model(
                models.discriminator, state.d_params, state.d_state, images, train=True
            )

        (real_logits, moved), (fake_logits, _) = train_mode(real), train_mode(forward.fake)
        want = losses.relativistic_g_loss(fake_logits, real_logits)
        return after.d_state, metrics["g_loss"], want, moved

    d_state, g_loss, want, moved = jax.jit(update_and_reference)(state, real, z)
    assert_trees_equal(d_state, state.d_state)
    np.testing.assert_allclose(g_loss, want, rtol=1e-5)
    assert _differs(moved, state.d_state)  # what keeping the reals' statistics would do


def test_schedules_follow_r3gans_cosine_at_start_middle_and_end():
    """γ from 10x to 1x its final value, b2 0.9 -> 0.99, EMA half-life 0 -> H: R3GAN's cosine
    at step 0, mid-burn-in and after it, eagerly and under jit with a traced step; and the
    values of a run without burn-in are the final ones, as Python floats."""
    config = _config(burn_in_steps=BURN_IN, penalty_burn_in_factor=10.0, ema_half_life_images=500.0)
    config.g_optimizer.b2, config.g_optimizer.b2_start = 0.99, 0.9
    b2 = optim.b2_schedule(config.g_optimizer, burn_in_steps=BURN_IN)
    images = config_lib.real_images_per_step(config)

    def values(step):
        return (
            schedules.penalty_weight(0.5, step, config=config),
            b2(step),
            optim.ema_decay_of(step, config=config),
        )

    jitted = jax.jit(values)
    for step in (0, BURN_IN // 2, BURN_IN, 3 * BURN_IN):
        half_life = _r3gan_cosine(0.0, 500.0, step, BURN_IN)
        want = (
            _r3gan_cosine(5.0, 0.5, step, BURN_IN),
            _r3gan_cosine(0.9, 0.99, step, BURN_IN),
            0.5 ** (images / half_life) if half_life else 0.0,
        )
        for got in (values(step), jitted(jnp.asarray(step, jnp.int32))):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-12)
    # The middle is the mean of the ends: (5 + 0.5) / 2, (0.9 + 0.99) / 2, half-life 250.
    np.testing.assert_allclose(
        np.asarray(values(BURN_IN // 2)), (2.75, 0.945, 0.5 ** (images / 250.0)), rtol=1e-6
    )
    # The discriminator's b2 counts its n_critic updates a step, as its learning rate does.
    d_b2 = optim.b2_schedule(config.g_optimizer, burn_in_steps=BURN_IN, updates_per_step=3)
    steps = jnp.arange(2 * BURN_IN)
    np.testing.assert_allclose(d_b2(3 * steps), b2(steps), rtol=1e-6)

    config.burn_in_steps = 0
    assert schedules.penalty_weight(0.5, 5, config=config) == 0.5
    assert optim.b2_schedule(config.g_optimizer, burn_in_steps=0) is None
    assert optim.ema_decay_of(5, config=config) == 0.5 ** (images / 500.0)


@pytest.mark.parametrize("grad_clip_norm", [0.0, 1.0])
def test_b2_schedule_gives_adams_moments_with_the_scheduled_b2(grad_clip_norm):
    """Update t of the scheduled optimiser is optax.adam's update with b2 = b2(t) on the same
    moments: updates, first and second moments and count agree at every t (burn-in and after)."""
    opt_config = config_lib.optimizer_config(learning_rate=1e-2)
    opt_config.b2, opt_config.b2_start, opt_config.grad_clip_norm = 0.99, 0.9, grad_clip_norm
    burn_in = 4
    scheduled = optim.build_optimizer(opt_config, num_steps=100, burn_in_steps=burn_in)
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((2,))}
    state = scheduled.init(params)
    reference_state = optax.adam(1e-2).init(params)  # plain Adam's moments, carried by hand
    for t in range(2 * burn_in):
        grads = jax.tree.map(lambda p, t=t: _normal(t, p.shape), params)
        b2_t = _r3gan_cosine(0.9, 0.99, t, burn_in)
        adam_t = optax.adam(1e-2, b1=0.5, b2=b2_t, eps=1e-8)
        adam_grads = grads
        if grad_clip_norm:  # clipping runs first, outside the scheduled Adam
            adam_grads = optax.clip_by_global_norm(grad_clip_norm).update(grads, None)[0]
        want_updates, reference_state = adam_t.update(adam_grads, reference_state)
        updates, state = scheduled.update(grads, state, params)
        injected = state[-1] if grad_clip_norm else state
        np.testing.assert_allclose(float(injected.hyperparams["b2"]), b2_t, rtol=1e-6)
        moments, want_moments = injected.inner_state[0], reference_state[0]
        assert int(moments.count) == int(want_moments.count) == t + 1
        assert_trees_close(moments.mu, want_moments.mu, rtol=1e-6)
        assert_trees_close(moments.nu, want_moments.nu, rtol=1e-6)
        assert_trees_close(updates, want_updates, rtol=1e-6)


def test_without_a_b2_schedule_the_optimizer_state_is_plain_adams():
    """No b2_start, or no burn-in: the state has plain Adam's structure, so existing runs'
    checkpoints restore; with both, Adam sits inside inject_hyperparams."""
    params = {"w": jnp.zeros((3,))}
    # build_optimizer always gives Adam a schedule (constant here), so its state holds a count.
    plain = jax.tree.structure(optax.adam(optax.constant_schedule(1e-3)).init(params))
    for b2_start, burn_in in ((None, 4), (0.9, 0)):
        opt_config = config_lib.optimizer_config()
        opt_config.b2_start = b2_start
        opt = optim.build_optimizer(opt_config, num_steps=10, burn_in_steps=burn_in)
        assert jax.tree.structure(opt.init(params)) == plain
    opt_config.b2_start = 0.9
    opt = optim.build_optimizer(opt_config, num_steps=10, burn_in_steps=4)
    assert jax.tree.structure(opt.init(params)) != plain


def test_config_saved_before_r3gan_keys_trains_as_before():
    """An old config.json lacks r2_weight, burn_in_steps, ..., b2_start: LATER_KEYS' values
    reproduce the run: the same state structure and the same traced step, equation for
    equation, as the explicit defaults (so the same numbers, without compiling either)."""
    config = tiny_config("seed_mlp", batch_size=BATCH, r1_weight=1.0, ema_decay=0.99)
    old = config.copy_and_resolve_references()
    for key in ("r2_weight", "burn_in_steps", "penalty_burn_in_factor", "ema_half_life_images"):
        del old[key]
    for player in ("g_optimizer", "d_optimizer"):
        del old[player]["b2_start"]
        assert config_lib.setting(old, f"{player}.b2_start") is None
    assert config_lib.setting(old, "r2_weight") == 0.0
    batch, key = {"image": jnp.zeros((BATCH, 28, 28, 1))}, jax.random.key(2)
    traced = []
    for cfg in (config, old):
        models, optimizers = models_lib.build_models(cfg), optim.build_optimizers(cfg)
        state = jax.eval_shape(functools.partial(create_train_state, config=cfg), key)
        step = functools.partial(
            step_lib.train_step, models=models, optimizers=optimizers, config=cfg
        )
        traced.append((jax.tree.structure(state), str(jax.make_jaxpr(step)(state, batch, key))))
    assert traced[1] == traced[0]


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("r2_weight", -1.0, r"config\.r2_weight: must be non-negative"),
        ("burn_in_steps", -1, r"config\.burn_in_steps"),
        ("penalty_burn_in_factor", -0.1, r"config\.penalty_burn_in_factor"),
        ("ema_half_life_images", -5.0, r"config\.ema_half_life_images"),
        ("g_optimizer.b2_start", 1.0, r"config\.g_optimizer\.b2_start"),
        ("d_optimizer.b2_start", -0.5, r"config\.d_optimizer\.b2_start"),
    ],
)
def test_bad_r3gan_settings_name_the_key(key, value, pattern):
    config = _config()
    if "." in key:
        group, name = key.split(".")
        config[group][name] = value
    else:
        config[key] = value
    with pytest.raises(ValueError, match=pattern):
        config_lib.validate_config(config)


def _r3gan_like(**overrides):
    """Relativistic + R1 + R2 on packs of 2, every ramp live: the config the data-parallel and
    resume checks run."""
    config = _config(
        pack=2,
        burn_in_steps=BURN_IN,
        penalty_burn_in_factor=10.0,
        ema_half_life_images=100.0,
        **overrides,
    )
    for player in (config.g_optimizer, config.d_optimizer):
        player.b1, player.b2, player.b2_start = 0.0, 0.99, 0.9  # R3GAN's Adam betas
        # Adam moves a parameter by about lr * g / (|g| + eps). The biases of D's ReLU units
        # that are on for every input get a gradient of 0 up to rounding under the pairing
        # loss (a shared shift of the scores), and eps = 1e-8 turns that rounding, different
        # with each summation order, into steps of +-lr (a relative 0.3 of D's first bias
        # after one step, pmap against one device); 1e-3 keeps it to 6e-6.
        player.eps = 1e-3
    return config


@pytest.fixture(scope="module")
def r3gan_run():
    """Two single-device steps of `_r3gan_like`, compiled once for the data-parallel and the
    resume checks."""
    config = _r3gan_like()
    models, optimizers = models_lib.build_models(config), optim.build_optimizers(config)
    state = _init(config)
    batches = [{"image": _images(10 + i, count=2 * BATCH)} for i in range(2)]
    key = jax.random.key(42)
    step = _jit_step(config, models, optimizers)
    final, metrics = state, None
    for batch in batches:
        final, metrics = step(final, batch, key)
    return dict(
        config=config,
        models=models,
        optimizers=optimizers,
        state=state,
        batches=batches,
        key=key,
        step=step,
        final=final,
        metrics=metrics,
    )


def _assert_close_but_the_logit_bias(actual, expected, *, rtol):
    """assert_trees_close without D's logit bias (its value and Adam moments). The pairing
    loss and the input-gradient penalties are blind to that bias: its gradient is 0 up to
    rounding, different for each order of summation (the data-parallel step sums over devices
    last), so the bias (0 at initialisation) is rounding noise and any relative error of it
    is large."""

    def kept(tree):
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        named = {jax.tree_util.keystr(path): leaf for path, leaf in leaves}
        return {name: leaf for name, leaf in named.items() if "['logit']['bias']" not in name}

    assert_trees_close(kept(actual), kept(expected), rtol=rtol)


def test_pmap_step_matches_single_device(r3gan_run):
    """Two steps on 4 forced CPU devices (2 pairs of packs each) equal the single-device steps
    to 1e-5 (but D's logit bias, see `_assert_close_but_the_logit_bias`): the pairing losses
    are means over pairs, which pmean to the global mean."""
    assert jax.device_count() == 4
    run = r3gan_run
    p_step = parallel.pmap_train_step(
        models=run["models"], optimizers=run["optimizers"], config=run["config"]
    )
    p_state = parallel.replicate(run["state"])
    for batch in run["batches"]:
        p_state, p_metrics = p_step(p_state, parallel.shard_batch(batch), run["key"])
    assert float(run["metrics"]["r2_penalty"]) > 0

    def first_device(tree):  # parallel.unreplicate on the host: no slicing op to compile
        return jax.tree.map(lambda leaf: np.asarray(leaf)[0], tree)

    _assert_close_but_the_logit_bias(first_device(p_state), run["final"], rtol=1e-5)
    _assert_close_but_the_logit_bias(first_device(p_metrics), run["metrics"], rtol=1e-5)


def test_resumed_run_is_bitwise_the_uninterrupted_one(r3gan_run, tmp_path):
    """One step, a checkpoint (Orbax, through gan_jax.checkpointing) restored into a fresh
    state, and one more: bitwise the two steps straight, schedules included (they read the
    step, and the injected b2 Adam's saved count)."""
    run = r3gan_run
    first, _ = run["step"](run["state"], run["batches"][0], run["key"])
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, first, force=True)
    with Checkpointer(tmp_path, read_only=True) as ckpt:
        # Restored into the state's shapes alone, as the loop restores into a fresh state.
        resumed = ckpt.restore(jax.eval_shape(lambda state: state, run["state"]))
    assert int(resumed.step) == 1
    resumed, _ = run["step"](resumed, run["batches"][1], run["key"])
    assert_trees_equal(resumed, run["final"])
