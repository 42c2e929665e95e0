"""Data-parallel forms on 4 forced CPU devices: pmap and shard_map against the single-device step.

Tolerance: per-leaf norm-wise relative error ||a - b|| / ||b|| (tests/helpers.py) of 1e-5 after
two steps, for both families. The forms differ from the single-device step only in summation
order: per-device partial means are averaged across devices instead of one mean over 64 examples;
for the DCGAN the BatchNorm statistics are pmean-ed over the device axis, which gives the global
batch's statistics. Measured: about 3e-7 (seed_mlp) and 2e-6 (dcgan).

shard_map against pmap: 1e-6. The shard_map form is compiled with `xla_options`, so the pmap
step it is compared with is too (`.lower(...).compile(compiler_options=...)`): with XLA:CPU's
default YNNPACK dots in one form and Eigen dots in the other, the discriminator's logit bias
gradient (a sum over the batch that nearly cancels at initialisation) differs by about 1e-5.
"""

import functools

import jax
import numpy as np
import pytest

from gan_jax import models as models_lib
from gan_jax import optim, parallel, xla_options
from gan_jax.state import create_train_state
from gan_jax.step import train_step
from tests.helpers import assert_trees_close, tiny_config

NUM_STEPS = 2


# Spectral normalisation with n_critic real batches a step ([64, 2, H, W, C]): the spectral-norm
# vectors are computed per device from the replicated weights, with no collective. Measured
# worst leaf: 2e-6 (the logit bias's Adam moments).
SN_CRITIC = dict(d_spectral_norm=True, n_critic=2)
# Packs of 3 with both penalties on packs and 2 critic batches a step: each device holds whole
# packs (64 packs of 3 images, 16 a device) and the GP weights of its own packs. Measured worst
# leaf: 1e-6. Not the Wasserstein loss: at initialisation its gradient for D's first-layer bias
# is a near-cancelling difference of two batch means, and Adam's first update turns that
# summation-order noise into a 5% difference of the bias (with or without packs).
PACK_GP = dict(pack=3, gp_weight=10.0, r1_weight=1.0, n_critic=2)
RUNS = {
    "seed_mlp": ("seed_mlp", {}),
    "dcgan": ("dcgan", {}),
    "dcgan_sn": ("dcgan", SN_CRITIC),
    "seed_mlp_pack_gp": ("seed_mlp", PACK_GP),
    # BatchNorm in D, real and fake normalised separately, with packs of 2: D's statistics too
    # must be those of the global batch.
    "unrolled_pack": ("unrolled_dcgan", dict(pack=2)),
}
# Per-run tolerance of the pmap / single-device comparison (1e-5 unless named). unrolled_pack,
# measured: parameters and statistics agree to 1.4e-6; the worst leaf, 2.8e-5, is the Adam first
# moment of D's first BatchNorm scale, whose gradient (7e-5 at initialisation, with weights from
# N(0, 0.02^2)) is a near-cancelling sum over the batch, and the next, 1.9e-5, that of G's last
# bias (a sum over every output pixel). With D's statistics left unsynced (16 examples a device)
# the same leaves miss by a relative 4-5.
RTOL = {"unrolled_pack": 5e-5}


def _setup(run):
    model, overrides = RUNS[run]
    config = tiny_config(model, batch_size=64, **overrides)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    state = create_train_state(jax.random.key(0), config)
    images = 64 * config.pack
    rows = (images,) if config.n_critic == 1 else (images, config.n_critic)
    batches = [
        {"image": jax.random.uniform(jax.random.key(10 + i), (*rows, *config.image_shape))}
        for i in range(NUM_STEPS)
    ]
    return config, models, optimizers, state, batches


def _single_device(config, models, optimizers, state, batches, key):
    step = jax.jit(
        functools.partial(train_step, models=models, optimizers=optimizers, config=config)
    )
    for batch in batches:
        state, metrics = step(state, batch, key)
    return state, metrics


def _pmapped(config, models, optimizers, state, batches, key, *, compiler_options=None):
    step = parallel.pmap_train_step(models=models, optimizers=optimizers, config=config)
    p_state = parallel.replicate(state)
    if compiler_options:
        lowered = step.lower(p_state, parallel.shard_batch(batches[0]), key)
        step = lowered.compile(compiler_options=compiler_options)
    for batch in batches:
        p_state, metrics = step(p_state, parallel.shard_batch(batch), key)
    return p_state, metrics


def _sharded(config, models, optimizers, state, batches, key):
    mesh = parallel.data_mesh()
    step = parallel.sharded_train_step(
        models=models, optimizers=optimizers, config=config, mesh=mesh
    )
    s_state = parallel.replicate_on_mesh(state, mesh)
    for batch in batches:
        s_state, metrics = step(s_state, parallel.shard_on_mesh(batch, mesh), key)
    return s_state, metrics


# In the fast step: dcgan_sn (convolutions, G's BatchNorm synced over devices, spectral norm,
# critic batches) and seed_mlp_pack_gp (packs, both penalties); the plain runs they extend, and
# D's BatchNorm (unrolled_pack, 25 s of compiling), run with -m slow.
SLOW_RUNS = ("seed_mlp", "dcgan", "unrolled_pack")


@pytest.fixture(
    scope="module",
    params=[pytest.param(run, marks=pytest.mark.slow) if run in SLOW_RUNS else run for run in RUNS],
)
def runs(request):
    assert jax.device_count() == 4
    config, models, optimizers, state, batches = _setup(request.param)
    key = jax.random.key(42)
    args = (config, models, optimizers, state, batches, key)
    return {
        "model": request.param,
        "single": _single_device(*args),
        "pmap": _pmapped(*args),
        "pmap_with_options": _pmapped(*args, compiler_options=xla_options.compiler_options()),
        "shard_map": _sharded(*args),
    }


def test_pmap_matches_single_device(runs):
    single_state, single_metrics = runs["single"]
    p_state, p_metrics = runs["pmap"]
    # For the DCGAN the state includes the BatchNorm running statistics: unsynced per-device
    # statistics of 16 examples would miss those of the 64 by far more than 1e-5.
    family, _ = RUNS[runs["model"]]
    assert bool(single_state.g_state) == (family != "seed_mlp")
    assert bool(single_state.d_state) == (runs["model"] in ("dcgan_sn", "unrolled_pack"))
    rtol = RTOL.get(runs["model"], 1e-5)
    assert_trees_close(parallel.unreplicate(p_state), single_state, rtol=rtol)
    assert_trees_close(parallel.unreplicate(p_metrics), single_metrics, rtol=rtol)


def test_pmap_replicas_stay_identical(runs):
    """Averaged gradients and synced BatchNorm statistics keep every device's copy equal."""
    p_state, _ = runs["pmap"]
    for leaf in jax.tree.leaves(p_state):
        leaf = np.asarray(leaf)
        for replica in leaf[1:]:
            np.testing.assert_array_equal(replica, leaf[0])


def test_shard_map_matches_pmap(runs):
    p_state, p_metrics = runs["pmap_with_options"]
    s_state, s_metrics = runs["shard_map"]
    assert_trees_close(s_state, parallel.unreplicate(p_state), rtol=1e-6)
    assert_trees_close(s_metrics, parallel.unreplicate(p_metrics), rtol=1e-6)


def test_indivisible_global_batch_names_the_key():
    config = tiny_config("seed_mlp", batch_size=62)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    with pytest.raises(ValueError, match=r"config\.batch_size=62 .* 4 devices"):
        parallel.sharded_train_step(
            models=models, optimizers=optimizers, config=config, mesh=parallel.data_mesh()
        )
    with pytest.raises(ValueError, match=r"config\.batch_size=62 .* 4 devices"):
        parallel.shard_batch({"image": np.zeros((62, 28, 28, 1), np.float32)})


def test_replicate_and_unreplicate_round_trip():
    tree = {"a": np.arange(6.0).reshape(2, 3), "b": np.int32(7)}
    replicated = parallel.replicate(tree)
    assert replicated["a"].shape == (4, 2, 3)
    assert len(replicated["a"].sharding.device_set) == 4
    back = parallel.unreplicate(replicated)
    np.testing.assert_array_equal(back["a"], tree["a"])
    assert int(back["b"]) == 7
