"""Fused k-step training (`gan_jax.fused`) is k calls of `train_step` on the same batches, and a
fused run resumed from a checkpoint is bitwise the run that never stopped.

Tolerances (per-leaf norm-wise relative error, tests/helpers.leaf_errors). The fused forms put
`train_step` inside a `lax.scan`, which XLA compiles as its own computation, so fusion and
summation order may differ from the standalone step. Measured on CPU (JAX 0.10.2, 3 steps):

- seed_mlp (also with spectral norm or packs, and penalties): bitwise equal (asserted, so a
  change is noticed).
- dcgan, scan unrolled (what `fused` does on CPU for models with convolutions): params, EMA and
  BatchNorm statistics within 1e-7, Adam's moments within 8e-7 (the second moment squares
  gradients whose last bits differ). Asserted: 1e-6 for params/EMA/statistics, 1e-5 for Adam.
- dcgan, scan rolled (the form GPU/TPU run; on CPU its convolutions use another kernel, see
  gan_jax/fused.py): params and EMA within 5e-6, Adam within 5e-6. Asserted: 1e-5 for all.
- 4 devices, fused against separate data-parallel steps: as the unrolled dcgan above.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import data, fused, optim, parallel, xla_options
from gan_jax import models as models_lib
from gan_jax.checkpointing import Checkpointer
from gan_jax.state import create_train_state
from gan_jax.step import step_noise, train_step
from tests.helpers import assert_trees_close, assert_trees_equal, leaf_errors, tiny_config

NUM_STEPS = 3
PARAM_RTOL = 1e-6  # params, EMA, BatchNorm statistics
OPT_RTOL = 1e-5  # Adam's moments
ROLLED_RTOL = 1e-5  # everything, for the rolled scan
METRIC_RTOL = 1e-5


def _split(num_examples: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, num_examples, dtype=np.int32)
    return images, labels


def _differs(a, b) -> bool:
    return any(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _on_mesh(mesh, *arrays):
    return data.to_device(
        *arrays, sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )


class Case:
    """A tiny model, its initial state, a uint8 split and `NUM_STEPS` reference steps."""

    def __init__(self, model: str, **overrides):
        self.model = model
        self.config = tiny_config(model, **overrides)
        self.models = models_lib.build_models(self.config)
        self.optimizers = optim.build_optimizers(self.config)
        init = functools.partial(
            create_train_state, config=self.config, models=self.models, optimizers=self.optimizers
        )
        self.state = jax.jit(init)(jax.random.key(0))
        self.images, self.labels = _split()
        self.key = jax.random.key(5)
        # Compiled with the options the library's own steps use, so that equal code can compile
        # to equal arithmetic.
        self.step = xla_options.jit(
            functools.partial(
                train_step, models=self.models, optimizers=self.optimizers, config=self.config
            )
        )
        self.want_state, self.want_metrics = self.reference(self.state, NUM_STEPS)
        self._fused = {}

    def reference(self, state, num_steps):
        """num_steps separate jitted train_step calls on data.sample_batch's batches."""
        all_metrics = []
        for s in range(int(state.step), int(state.step) + num_steps):
            batch = data.sample_batch(
                self.images,
                self.labels,
                s,
                seed=self.config.seed,
                batch_size=self.config.batch_size * self.config.pack,
                pixel_range=self.models.pixel_range,
                n_critic=self.config.n_critic,
            )
            state, metrics = self.step(state, batch, self.key)
            all_metrics.append(metrics)
        return state, jax.tree.map(lambda *m: np.stack(m), *all_metrics)

    def fused(self, mesh, num_steps):
        """fused_train_step on `mesh`, one per (devices, num_steps) for the whole module."""
        key = (tuple(mesh.devices.flat), num_steps)
        if key not in self._fused:
            self._fused[key] = fused.fused_train_step(
                models=self.models,
                optimizers=self.optimizers,
                config=self.config,
                mesh=mesh,
                num_steps=num_steps,
            )
        return self._fused[key]


_CASES: dict[str, Case] = {}


def _case(name: str) -> Case:
    """One Case per name for the whole module (compiling the reference costs the most)."""
    if name not in _CASES:
        if name == "seed_mlp_sn_wgan":
            # Spectral norm (its vectors in d_state) and n_critic real batches a step, drawn
            # on device inside the scan; conditional, so each critic batch carries its labels.
            _CASES[name] = Case(
                "seed_mlp",
                num_classes=10,
                d_spectral_norm=True,
                loss="wasserstein",
                gp_weight=10.0,
                n_critic=3,
            )
        elif name == "seed_mlp_pack":
            # Packs of 2 (128 images a critic batch, drawn on device) with both penalties on
            # packs and 2 critic batches a step.
            _CASES[name] = Case("seed_mlp", pack=2, r1_weight=1.0, gp_weight=1.0, n_critic=2)
        else:
            # The dcgan is conditional, so labels travel through the scan too.
            _CASES[name] = Case(name, num_classes=10 if name == "dcgan" else 0)
    return _CASES[name]


# The DCGAN case (about 20 s of compiling) runs with -m slow; the fast step keeps a convolutional
# fused step in test_multi_step_under_jit_matches_separate_steps.
@pytest.fixture(
    params=[
        "seed_mlp",
        pytest.param("dcgan", marks=pytest.mark.slow),
        "seed_mlp_sn_wgan",
        "seed_mlp_pack",
    ]
)
def case(request):
    return _case(request.param)


@pytest.fixture
def dcgan_case():
    return _case("dcgan")


def _assert_state_close(actual, expected, *, param_rtol, opt_rtol):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    assert int(actual.step) == int(expected.step)
    for field in ("g_params", "d_params", "g_ema_params", "g_state", "d_state"):
        if jax.tree.leaves(getattr(expected, field)):  # seed_mlp has no BatchNorm statistics
            assert_trees_close(getattr(actual, field), getattr(expected, field), rtol=param_rtol)
    for field in ("g_opt_state", "d_opt_state"):
        assert_trees_close(getattr(actual, field), getattr(expected, field), rtol=opt_rtol)


def _assert_metrics_close(actual, expected, rtol=METRIC_RTOL):
    assert set(actual) == set(expected)
    for name, want in expected.items():
        assert np.shape(actual[name]) == (NUM_STEPS,), name
        np.testing.assert_allclose(actual[name], want, rtol=rtol, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(actual[name], want, rtol=rtol, atol=1e-7, err_msg=name)


def test_fused_on_a_mesh_matches_separate_steps(case):
    mesh = parallel.data_mesh(jax.devices()[:1])
    images, labels = _on_mesh(mesh, case.images, case.labels)
    state = parallel.replicate_on_mesh(case.state, mesh)
    got_state, got_metrics = case.fused(mesh, NUM_STEPS)(state, images, labels, case.key)

    _assert_state_close(got_state, case.want_state, param_rtol=PARAM_RTOL, opt_rtol=OPT_RTOL)
    _assert_metrics_close(got_metrics, case.want_metrics)
    # The state moved: a fused call that skipped steps could not match the reference.
    assert max(leaf_errors(got_state.g_params, case.state.g_params).values()) > 1e-4
    if case.model == "seed_mlp":
        # Plain matmuls and no BatchNorm: XLA compiles the scan body to the same arithmetic.
        assert_trees_equal(got_state, case.want_state)
        assert_trees_equal(got_metrics, case.want_metrics)


CANONICAL = "b01f_01io->b01f"  # NHWC input, HWIO kernel, NHWC output: XLA:CPU's Eigen form


def _compiled_multi_step(case, num_steps, unroll):
    """multi_step under jit (with the library's compiler options, as the reference), compiled
    ahead of time; and the dim_labels of its convolutions."""
    step_k = xla_options.jit(
        functools.partial(
            fused.multi_step,
            models=case.models,
            optimizers=case.optimizers,
            config=case.config,
            num_steps=num_steps,
            unroll=unroll,
        )
    )
    compiled = step_k.lower(
        case.state, jnp.asarray(case.images), jnp.asarray(case.labels), case.key
    ).compile()
    convolutions = [line for line in compiled.as_text().splitlines() if " convolution(" in line]
    forms = {line.split("dim_labels=")[1].split(",")[0].split()[0] for line in convolutions}
    return compiled, forms


def test_noise_drawn_in_each_step_when_too_big_to_draw_ahead(monkeypatch):
    """Over fused.NOISE_AHEAD_MAX_BYTES the steps draw their own noise: the same bits."""
    case = _case("seed_mlp")
    mesh = parallel.data_mesh(jax.devices()[:1])
    images, labels = _on_mesh(mesh, case.images, case.labels)
    state = parallel.replicate_on_mesh(case.state, mesh)
    drawn_ahead = []

    def counting_step_noise(*args, **kwargs):
        drawn_ahead.append(1)
        return step_noise(*args, **kwargs)

    monkeypatch.setattr(fused, "step_noise", counting_step_noise)
    for budget, want_ahead in ((0, False), (fused.NOISE_AHEAD_MAX_BYTES, True)):
        monkeypatch.setattr(fused, "NOISE_AHEAD_MAX_BYTES", budget)
        drawn_ahead.clear()
        step_k = fused.fused_train_step(
            models=case.models,
            optimizers=case.optimizers,
            config=case.config,
            mesh=mesh,
            num_steps=NUM_STEPS,
        )
        got = step_k(jax.tree.map(jnp.copy, state), images, labels, case.key)
        assert bool(drawn_ahead) == want_ahead, budget
        assert_trees_equal(got, (case.want_state, case.want_metrics))


def test_multi_step_under_jit_matches_separate_steps(dcgan_case):
    """The single-device form (no mesh, no axis name), as a researcher's own jit runs it. On CPU
    every convolution of the compiled step is in the form XLA:CPU runs with Eigen (fused.py
    unrolls the scan; a rolled scan body keeps its gradient convolutions in a slow form)."""
    case = dcgan_case
    compiled, forms = _compiled_multi_step(case, NUM_STEPS, unroll=None)
    got_state, got_metrics = compiled(
        case.state, jnp.asarray(case.images), jnp.asarray(case.labels), case.key
    )
    _assert_state_close(got_state, case.want_state, param_rtol=PARAM_RTOL, opt_rtol=OPT_RTOL)
    _assert_metrics_close(got_metrics, case.want_metrics)
    if jax.default_backend() == "cpu":
        assert forms == {CANONICAL}


@pytest.mark.slow
def test_rolled_multi_step_matches_separate_steps(dcgan_case):
    """The scan kept rolled (the form GPU and TPU run) computes the same steps."""
    case = dcgan_case
    compiled, forms = _compiled_multi_step(case, NUM_STEPS, unroll=False)
    got_state, got_metrics = compiled(
        case.state, jnp.asarray(case.images), jnp.asarray(case.labels), case.key
    )
    _assert_state_close(got_state, case.want_state, param_rtol=ROLLED_RTOL, opt_rtol=ROLLED_RTOL)
    _assert_metrics_close(got_metrics, case.want_metrics)
    if jax.default_backend() == "cpu":
        # The control for the test above: here XLA:CPU leaves gradients in other forms.
        assert forms - {CANONICAL}


@pytest.mark.slow
def test_fused_on_four_devices_matches_separate_steps(dcgan_case):
    """Data-parallel fused steps (each device gathers its rows; gradients and BatchNorm
    statistics averaged) compute what k calls of the data-parallel `sharded_train_step` compute
    on the same batches. (That form against one device: tests/test_parallel.py. Against this
    module's single-device reference the tiny conditional dcgan differs by up to 3e-3 in one
    generator BatchNorm bias, whose gradient is a sum that nearly cancels, so it shows the
    order of the sums rather than any difference in the function.)"""
    assert jax.device_count() >= 4, "tests/conftest.py forces 4 CPU devices"
    case = dcgan_case
    mesh = parallel.data_mesh(jax.devices()[:4])
    images, labels = _on_mesh(mesh, case.images, case.labels)
    got_state, got_metrics = case.fused(mesh, NUM_STEPS)(
        parallel.replicate_on_mesh(case.state, mesh), images, labels, case.key
    )

    step = parallel.sharded_train_step(
        models=case.models, optimizers=case.optimizers, config=case.config, mesh=mesh
    )
    want_state, want_metrics = parallel.replicate_on_mesh(case.state, mesh), []
    for s in range(NUM_STEPS):
        batch = data.sample_batch(
            case.images,
            case.labels,
            s,
            seed=case.config.seed,
            batch_size=case.config.batch_size,
            pixel_range=case.models.pixel_range,
        )
        want_state, metrics = step(want_state, parallel.shard_on_mesh(batch, mesh), case.key)
        want_metrics.append(metrics)
    want_metrics = jax.tree.map(lambda *m: np.stack(m), *want_metrics)

    _assert_state_close(got_state, want_state, param_rtol=PARAM_RTOL, opt_rtol=OPT_RTOL)
    _assert_metrics_close(got_metrics, want_metrics)
    assert max(leaf_errors(got_state.g_params, case.state.g_params).values()) > 1e-4


def test_resumed_fused_run_is_bitwise_the_uninterrupted_run(case, tmp_path):
    """2 dispatches of k steps == 1 dispatch, save, restore into a fresh state, 1 dispatch."""
    k = NUM_STEPS  # the function test_fused_on_a_mesh_matches_separate_steps compiled
    mesh = parallel.data_mesh(jax.devices()[:1])
    step_k = case.fused(mesh, k)
    images, labels = _on_mesh(mesh, case.images, case.labels)

    # Uninterrupted. replicate_on_mesh copies, so donating never deletes case.state.
    straight, _ = step_k(parallel.replicate_on_mesh(case.state, mesh), images, labels, case.key)
    straight, straight_metrics = step_k(straight, images, labels, case.key)

    # Interrupted after the first dispatch; the "next process" starts from another init.
    first, _ = step_k(parallel.replicate_on_mesh(case.state, mesh), images, labels, case.key)
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(int(first.step), first, config=case.config, force=True)
    del first
    fresh = jax.tree.map(lambda x: x + 1, case.state)  # another state of the same layout
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.latest_step() == k
        resumed = checkpointer.restore(parallel.replicate_on_mesh(fresh, mesh))
    resumed, resumed_metrics = step_k(resumed, images, labels, case.key)

    assert int(resumed.step) == 2 * k
    assert_trees_equal(resumed, straight)
    assert_trees_equal(resumed_metrics, straight_metrics)
    # Control: the fresh init differs, so the restore is what made the runs agree.
    assert _differs(fresh, case.state)
