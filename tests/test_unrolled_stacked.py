"""Stacked MNIST in the Unrolled-GAN setup (PacGAN's Table 3): the models, the digits stacked on
the fly, the BatchNorm discriminator's separate real and fake passes, and a resumed run.

Packing with this family is checked in test_packing.py, its data-parallel step in
test_parallel.py, the Table 3 command in test_mixtures.py's neighbour below."""

from __future__ import annotations

import functools
import json
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import config as config_lib
from gan_jax import data, fused, losses, optim, train
from gan_jax import models as models_lib
from gan_jax import step as step_lib
from gan_jax.state import create_train_state
from tests import test_train_support as support
from tests.helpers import tiny_config

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "pacgan_stacked_mnist.py"


def _experiment(d_size: str = "half", **overrides):
    config = runpy.run_path(str(EXPERIMENT))["get_config"](d_size)
    config.update(overrides)
    return config


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    return {
        jax.tree_util.keystr(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


# ----------------------------------------------------------------------------------------------
# The models.


@pytest.mark.parametrize(
    ("d_size", "d_channels"),
    # One size in the fast step; the other, the same code with other widths, with -m slow.
    [pytest.param("quarter", (2, 4, 8), marks=pytest.mark.slow), ("half", (4, 8, 16))],
)
def test_the_models_are_the_unrolled_gan_networks_pacgan_trains(d_size, d_channels):
    config = _experiment(d_size, pack=2)
    state = jax.eval_shape(functools.partial(create_train_state, config=config), jax.random.key(0))
    g = _shapes(state.g_params)
    # z 256 -> 4x4x64 -> 7x7x32 -> 14x14x16 -> 28x28x8 -> 3 channels, 3x3 kernels.
    assert g["['Dense_0']['kernel']"] == (256, 4 * 4 * 64)
    assert [g[f"['ConvTranspose_{i}']['kernel']"] for i in range(3)] == [
        (3, 3, 64, 32),
        (3, 3, 32, 16),
        (3, 3, 16, 8),
    ]
    assert g["['Conv_0']['kernel']"] == (3, 3, 8, 3)
    d = _shapes(state.d_params)
    a, b, c = d_channels
    # A pack of 2 images has 6 channels: only the first convolution grows.
    assert [d[f"['Conv_{i}']['kernel']"] for i in range(3)] == [
        (3, 3, 6, a),
        (3, 3, a, b),
        (3, 3, b, c),
    ]
    assert d["['logit']['kernel']"] == (4 * 4 * c, 1)
    assert sorted(state.d_state) == ["batch_stats"]  # BatchNorm after every convolution

    models = models_lib.build_models(config)

    @jax.jit  # eagerly, XLA compiles every primitive of init and apply on its own
    def generate(key, z):
        # Only the generator's part of the state is computed (XLA drops the rest).
        params = create_train_state(key, config)
        return models_lib.apply_model(
            models.generator, params.g_params, params.g_state, z, train=True
        )

    z = jax.random.normal(jax.random.key(1), (5, 256))
    images, g_state = generate(jax.random.key(0), z)
    assert images.shape == (5, 28, 28, 3)
    assert float(jnp.max(jnp.abs(images))) < 1.0  # tanh
    # The intermediate sizes of TensorFlow's deconv2d to 7, 14 and 28 (BatchNorm means per
    # channel), and the running averages moved by momentum 0.9 from (0, 1).
    assert [g_state["batch_stats"][f"BatchNorm_{i}"]["mean"].shape for i in range(4)] == [
        (64,),
        (32,),
        (16,),
        (8,),
    ]
    var = g_state["batch_stats"]["BatchNorm_0"]["var"]
    assert float(jnp.max(jnp.abs(var - 1.0))) > 0.0 and float(jnp.min(var)) >= 0.9 - 1e-6


def test_transposed_convolutions_reach_7_14_28_from_4():
    generator = models_lib.UnrolledGANGenerator(image_shape=(28, 28, 3), width=2)
    z = jnp.ones((2, 16))
    # Shapes only: traced, not compiled.
    variables = jax.eval_shape(generator.init, jax.random.key(0), z)
    _, intermediates = jax.eval_shape(
        functools.partial(
            generator.apply, mutable=["batch_stats", "intermediates"], capture_intermediates=True
        ),
        variables,
        z,
    )
    sizes = [
        out[0].shape[1:3]
        for name, out in intermediates["intermediates"].items()
        if name.startswith("ConvTranspose")
        for out in [out["__call__"]]
    ]
    assert sizes == [(7, 7), (14, 14), (28, 28)]


def test_a_batchnorm_discriminator_normalises_real_and_fake_separately():
    """D's loss is that of two passes, one per batch; one pass over both would give other logits
    (the check below can fail)."""
    config = tiny_config("unrolled_dcgan", batch_size=8)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    # Everything jitted: eagerly, XLA compiles every primitive of the models on its own.
    state = jax.jit(functools.partial(create_train_state, config=config))(jax.random.key(0))
    real = jax.random.uniform(jax.random.key(1), (8, *config.image_shape), minval=-1.0)
    z = jax.random.normal(jax.random.key(2), (8, config.latent_dim))

    @jax.jit
    def update(state, real, z):
        forward = step_lib.generator_forward(state, z, None, generator=models.generator)
        new_state, metrics = step_lib.discriminator_update(
            state,
            real,
            forward.fake,
            None,
            jnp.zeros(8),
            discriminator=models.discriminator,
            optimizer=optimizers.discriminator,
            config=config,
        )
        return forward.fake, new_state, metrics

    fake, new_state, metrics = update(state, real, z)

    @jax.jit
    def reference(state, real, fake):
        def logits(images, d_state):
            return models_lib.apply_model(
                models.discriminator, state.d_params, d_state, images, train=True
            )

        real_logits, after_real = logits(real, state.d_state)
        fake_logits, after_fake = logits(fake, after_real)
        both, _ = logits(jnp.concatenate([real, fake]), state.d_state)
        return losses.classic_d_loss(real_logits, fake_logits), after_fake, both

    separate_loss, after_fake, both = reference(state, real, fake)
    np.testing.assert_allclose(metrics["d_loss"], separate_loss, rtol=1e-6)
    # The running averages saw the real batch, then the fake one.
    for got, want in zip(
        jax.tree.leaves(new_state.d_state), jax.tree.leaves(after_fake), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    joint_loss = losses.classic_d_loss(both[:8], both[8:])
    assert abs(float(joint_loss) - float(metrics["d_loss"])) > 1e-3


# ----------------------------------------------------------------------------------------------
# Digits stacked on the fly.


def test_stack_digits_puts_digit_j_in_channel_j_and_labels_the_triple():
    digits = jnp.arange(2 * 3 * 2 * 2, dtype=jnp.float32).reshape(2, 3, 2, 2, 1)
    labels = jnp.asarray([[7, 0, 3], [1, 9, 9]], jnp.int32)
    stacked = data.stack_digits({"image": digits, "label": labels})
    assert stacked["image"].shape == (2, 2, 2, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(stacked["image"][i, ..., j], digits[i, j, ..., 0])
    np.testing.assert_array_equal(stacked["label"], [703, 199])


@pytest.mark.parametrize("n_critic", [1, 2])
def test_each_image_reads_three_consecutive_digit_draws_of_its_step(n_critic):
    config = _experiment(batch_size=4, pack=2, n_critic=n_critic)
    steps = jnp.asarray([0, 7], jnp.int32)
    indices = jax.jit(
        functools.partial(
            fused.local_batch_indices, config=config, num_examples=1000, axis_name=None
        )
    )(steps)
    rows = (8, n_critic, 3) if n_critic > 1 else (8, 3)  # 4 packs of 2 images, 3 digits each
    assert indices.shape == (2, *rows)
    for s, step in enumerate([0, 7]):
        for critic in range(n_critic):
            draw = step * n_critic + critic
            want = data.batch_indices(draw, seed=config.seed, num_examples=1000, batch_size=24)
            got = indices[s, :, critic] if n_critic > 1 else indices[s]
            np.testing.assert_array_equal(got, np.asarray(want).reshape(8, 3))


def test_on_the_fly_digits_split_across_devices_as_one_batch():
    config = _experiment(batch_size=8)
    steps = jnp.arange(3, dtype=jnp.int32)
    whole = jax.jit(
        functools.partial(
            fused.local_batch_indices, config=config, num_examples=500, axis_name=None
        )
    )(steps)
    mesh = jax.make_mesh((4,), ("data",))
    per_device = jax.jit(
        jax.shard_map(
            functools.partial(
                fused.local_batch_indices, config=config, num_examples=500, axis_name="data"
            ),
            mesh=mesh,
            in_specs=jax.sharding.PartitionSpec(),
            out_specs=jax.sharding.PartitionSpec(None, "data"),
            check_vma=False,
        )
    )(steps)
    np.testing.assert_array_equal(per_device, whole)


def test_stack_on_the_fly_is_for_stacked_mnist_images_and_unconditional_models():
    config_lib.validate_config(_experiment())
    with pytest.raises(config_lib.ConfigError, match="needs dataset 'stacked_mnist'"):
        config_lib.validate_config(_experiment(dataset="mnist", image_shape=(28, 28, 3)))
    with pytest.raises(config_lib.ConfigError, match=r"image_shape \(28, 28, 3\)"):
        config_lib.validate_config(_experiment(image_shape=(28, 28, 1)))
    with pytest.raises(config_lib.ConfigError, match="no class labels"):
        config_lib.validate_config(_experiment(num_classes=10))
    with pytest.raises(config_lib.ConfigError, match="makes 28x28 images"):
        config_lib.validate_config(_experiment(stack_on_the_fly=False, image_shape=(32, 32, 3)))
    with pytest.raises(ValueError, match="takes ':half' or ':quarter'"):
        _experiment("third")


# ----------------------------------------------------------------------------------------------
# The training loop.


def _tiny_run(**overrides):
    loop = dict(
        g_width=4,
        d_width=2,
        latent_dim=16,
        batch_size=8,
        num_steps=20,
        steps_per_dispatch=5,
        log_every=5,
        sample_every=10,
        checkpoint_every=10,
        num_grid_samples=8,
        eval_num_samples=256,
    )
    return _experiment("half", **{**loop, **overrides})


@pytest.mark.slow
def test_a_packed_run_on_the_fly_resumed_midway_is_bitwise_and_scores_its_modes(tmp_path):
    support.ensure_mnist()
    config = _tiny_run(pack=2, num_seeds=2)
    whole = jax.device_get(train.train_and_evaluate(config, tmp_path / "whole"))
    train.train_and_evaluate(_tiny_run(pack=2, num_seeds=2, num_steps=10), tmp_path / "cut")
    resumed = jax.device_get(train.train_and_evaluate(config, tmp_path / "cut"))
    support.assert_bitwise_equal(resumed, whole)
    results = [
        json.loads((tmp_path / run / "eval" / "step_20.json").read_text())
        for run in ("whole", "cut")
    ]
    keys = ("modes", "kl_to_uniform", "fid", "classifier_score")
    for whole_run, resumed_run in zip(results[0]["runs"], results[1]["runs"], strict=True):
        assert {k: whole_run[k] for k in keys} == {k: resumed_run[k] for k in keys}
    assert all(run["modes"] >= 1 for run in results[0]["runs"])
    assert len({run["fid"] for run in results[0]["runs"]}) == 2  # two different trials
    assert results[0]["num_samples"] == 256 and results[0]["floor"]["modes"] > 900


def test_table3_sets_pacgans_rows_beside_ours_with_fid_and_score(tmp_path):
    tables = runpy.run_path(str(REPO / "experiments" / "pacgan_tables.py"))
    table = tables["TABLE3"]

    def entry(modes, kl, fid, score):
        metrics = {"modes": modes, "kl_to_uniform": kl, "fid": fid, "classifier_score": score}
        return {
            "metrics": metrics,
            "sem": {key: 0.5 for key in metrics},
            "floor": {  # 26,000 training images scored against the test set, as evaluate's
                "num_samples": 26000,
                "modes": 1000,
                "kl_to_uniform": 0.019,
                "fid": 10.2,
                "classifier_score": 947.2,
            },
            "segment_wall_time_s": 60.0,
        }

    record = {
        "variant": "half",
        "pack": 2,
        "trials": 3,
        "machine": {"cpu": "a CPU", "cores": 2},
        "budgets": {"100": entry(10, 6.0, 3000, 1.0), "200": entry(700, 1.5, 900.25, 200)},
    }
    (tmp_path / "half_pack2.json").write_text(json.dumps(record))
    # A Table 1 row in the same directory is not Table 3's.
    (tmp_path / "ring_pack1.json").write_text(json.dumps({**record, "variant": "ring"}))
    records = tables["load_records"](table, tmp_path)
    assert list(records) == [("half", 2, "")]
    markdown = tables["format_table"](table, records)
    assert "| PacGAN2, paper | 500,000 | 840.7 ± 15.9 | 1.00 ± 0.05 | – | – |" in markdown
    assert (
        "| PacGAN2, gan_jax | 200 | 700.0 ± 0.5 | 1.50 ± 0.50 | 900.2 ± 0.5 | 200.0 ± 0.5 |"
        in markdown
    )
    assert (
        "| D = ½ G, pack 2 | 100 | 10.0 ± 0.5 | 6.00 ± 0.50 | 3000.0 ± 0.5 | 1.0 ± 0.5 | 3 "
        "| 1.0 min |" in markdown
    )
    assert "| D = ½ G, pack 2 | 200 |" in markdown and "| 3 | 2.0 min |" in markdown
    assert "--table 3" in markdown
    # The floor says what it scores: training images of the fixed Stacked MNIST, not the test set.
    floor = (
        "Real data (26,000 training images of the fixed Stacked MNIST, scored as the samples are: "
        "their modes and KL, FID and score against the test set): D = ½ G: modes (of 1,000) "
        "1000.00, KL 0.019"
    )
    assert floor in markdown and "the test split)" not in markdown

    # Both columns score against one Stacked-MNIST test set: their floor is said once, for both.
    (tmp_path / "quarter_pack2.json").write_text(json.dumps({**record, "variant": "quarter"}))
    both = tables["format_table"](table, tables["load_records"](table, tmp_path))
    paper_row = "| PacGAN2, paper | 500,000 | 840.7 ± 15.9 | 1.00 ± 0.05 | – | – | 484.5 ± 33.0 |"
    assert paper_row in both
    assert both.count("modes (of 1,000) 1000.00") == 1
    assert "against the test set): D = ½ G and D = ¼ G: modes (of 1,000) 1000.00" in both


@pytest.mark.parametrize(
    "table, rows",
    [
        ("1", [(v, m) for v in ("ring", "grid") for m in (1, 2, 3, 4)]),
        ("3", [(v, m) for v in ("half", "quarter") for m in (1, 2)]),
    ],
)
def test_a_table_command_without_variants_trains_both_columns(table, rows, tmp_path, monkeypatch):
    tables = runpy.run_path(str(REPO / "experiments" / "pacgan_tables.py"))
    trained = []  # main() looks train_row up in the script's own globals, where this stands in
    monkeypatch.setitem(
        tables["main"].__globals__, "train_row", lambda t, v, m, **_: trained.append((v, m))
    )
    with pytest.raises(SystemExit, match="no rows of Table"):  # nothing was really trained
        tables["main"](["--table", table, f"--out={tmp_path}", f"--workdirs={tmp_path}"])
    assert trained == rows
