"""The 2-D mode-collapse benchmarks: the ring and grid data, PacGAN's models, the metrics, the
training loop's 2-D path (evaluation, scatter plot, resume with packs) and the Table 1 command."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from gan_jax import config as config_lib
from gan_jax import data, evaluate, models, train
from gan_jax.data import mixtures as mixture_data
from gan_jax.evaluation import mixtures
from tests import test_train_support as support

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "pacgan_2d.py"


def _experiment(mixture: str = "ring", **overrides):
    config = runpy.run_path(str(EXPERIMENT))["get_config"](mixture)
    config.update(overrides)
    return config


# ----------------------------------------------------------------------------------------------
# Data.


def test_the_mixtures_have_pacgans_modes():
    ring, grid = mixture_data.mixture("ring"), mixture_data.mixture("grid")
    assert ring.std == 0.01 and grid.std == 0.05
    np.testing.assert_allclose(np.linalg.norm(ring.means, axis=1), 1.0, atol=1e-12)
    angles = np.sort(np.mod(np.arctan2(ring.means[:, 1], ring.means[:, 0]), 2 * np.pi))
    np.testing.assert_allclose(angles, 2 * np.pi * np.arange(8) / 8, atol=1e-12)
    want = {(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)}
    assert {tuple(m) for m in grid.means.tolist()} == want and len(grid.means) == 25
    assert tuple(mixture_data.MIXTURES) == config_lib.POINT_DATASETS


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_points_are_fixed_by_the_seed_and_drawn_from_their_modes(name):
    means, std = mixture_data.mixture(name)
    points, modes = mixture_data.make_points(name, num_examples=50_000, seed=3)
    again, _ = mixture_data.make_points(name, num_examples=50_000, seed=3)
    other, _ = mixture_data.make_points(name, num_examples=50_000, seed=4)
    test, _ = mixture_data.make_points(name, num_examples=50_000, seed=3, split="test")
    assert points.dtype == np.float32 and points.shape == (50_000, 2) and modes.dtype == np.int32
    np.testing.assert_array_equal(points, again)
    assert not np.array_equal(points, other) and not np.array_equal(points, test)
    # Each mode's points: mean on the mode, per-coordinate std as documented (to 3%), and the
    # modes equally likely (within 5 binomial standard deviations).
    counts = np.bincount(modes, minlength=len(means))
    expected = len(points) / len(means)
    sd = math.sqrt(expected * (1 - 1 / len(means)))
    assert np.all(np.abs(counts - expected) < 5 * sd), counts
    offsets = (points - means[modes]) / std
    np.testing.assert_allclose(offsets.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(offsets.std(axis=0), 1.0, rtol=0.03)
    assert abs(np.corrcoef(offsets.T)[0, 1]) < 0.03  # the two coordinates independent
    # The modes are far apart in std units: each point's nearest mode is its own.
    nearest = np.linalg.norm(points[:, None] - means[None], axis=-1).argmin(axis=1)
    np.testing.assert_array_equal(nearest, modes)


def test_load_split_serves_the_mixtures_and_refuses_an_image_shape():
    points, modes = data.load_split("grid", "train", seed=0)
    assert points.shape == (mixture_data.NUM_TRAIN, 2) and points.dtype == np.float32
    want, _ = mixture_data.make_points("grid", num_examples=mixture_data.NUM_TRAIN, seed=0)
    np.testing.assert_array_equal(points, want)
    assert len(data.load_split("ring", "test")[0]) == mixture_data.NUM_TEST
    with pytest.raises(config_lib.ConfigError, match=r"image_shape to \(2,\)"):
        data.load_split("ring", "train", image_shape=(28, 28, 1))


def test_float_points_are_gathered_as_they_are_and_pixel_ranges_must_fit_the_dtype():
    points, modes = mixture_data.make_points("ring", num_examples=64, seed=0)
    device_points, device_modes = data.to_device(points, modes)
    assert device_points.dtype == jnp.float32
    indices = jnp.array([5, 0, 63, 5], jnp.int32)
    batch = data.gather_batch(device_points, device_modes, indices, pixel_range="identity")
    np.testing.assert_array_equal(np.asarray(batch["image"]), points[[5, 0, 63, 5]])
    np.testing.assert_array_equal(np.asarray(batch["label"]), modes[[5, 0, 63, 5]])
    with pytest.raises(ValueError, match="'identity'"):
        data.gather_batch(device_points, device_modes, indices, pixel_range="symmetric")
    images = jnp.zeros((4, 28, 28, 1), jnp.uint8)
    with pytest.raises(ValueError, match="uint8 images take"):
        data.gather_batch(images, device_modes[:4], indices[:2], pixel_range="identity")


def test_the_point_datasets_and_the_pacgan_family_go_together():
    with pytest.raises(config_lib.ConfigError, match="config.model: the 2-D point datasets"):
        config_lib.validate_config(_experiment(model="seed_mlp"))
    config = config_lib.get_default_config()
    config.model = "pacgan_mlp"
    with pytest.raises(config_lib.ConfigError, match="pacgan_mlp models those alone"):
        config_lib.validate_config(config)
    config_lib.validate_config(_experiment("grid", pack=4))


# ----------------------------------------------------------------------------------------------
# Models.


def test_maxout_discriminator_is_pacgans_network_and_packs_widen_only_its_first_layer():
    disc = models.MaxoutDiscriminator(width=6, pieces=3, depth=2)
    x = jax.random.normal(jax.random.key(0), (5, 4))  # packs of 2 points
    params = disc.init(jax.random.key(1), x)["params"]
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes["Dense_0"]["kernel"] == (4, 18) and shapes["Dense_1"]["kernel"] == (6, 18)
    assert shapes["logit"]["kernel"] == (6, 1)
    wider = disc.init(jax.random.key(1), jnp.zeros((5, 8)))["params"]
    assert jax.tree.map(jnp.shape, wider)["Dense_0"]["kernel"] == (8, 18)
    assert jax.tree.map(jnp.shape, wider)["Dense_1"] == shapes["Dense_1"]

    h = np.asarray(x, np.float64)
    for name in ("Dense_0", "Dense_1"):
        layer = {k: np.asarray(v, np.float64) for k, v in params[name].items()}
        h = (h @ layer["kernel"] + layer["bias"]).reshape(len(h), 6, 3).max(axis=-1)
    logit = h @ np.asarray(params["logit"]["kernel"]) + np.asarray(params["logit"]["bias"])
    np.testing.assert_allclose(disc.apply({"params": params}, x), logit[:, 0], rtol=1e-5)

    # PacGAN's init: kernels from N(0, 0.02^2), biases at zero.
    big = models.MaxoutDiscriminator().init(jax.random.key(2), jnp.zeros((1, 2)))["params"]
    kernel = np.asarray(big["Dense_1"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.001 and not np.any(np.asarray(big["Dense_1"]["bias"]))


def test_mixture_generator_outputs_unsquashed_points_with_batchnorm_statistics():
    config = _experiment("grid", g_width=16, d_width=8)
    built = models.build_models(config)
    assert built.pixel_range == "identity"
    variables = built.generator.init(jax.random.key(0), jnp.zeros((4, 2)))
    assert len(variables["batch_stats"]) == 4  # one BatchNorm per hidden layer
    params, state = models.split_variables(variables)
    kernel = jax.tree.map(jnp.shape, params)
    assert kernel["Dense_4"]["kernel"] == (16, 2) and "bias" not in kernel["Dense_0"]
    # Scaling the output layer scales the points: no tanh or sigmoid bounds them.
    z = jax.random.normal(jax.random.key(1), (64, 2))
    out, _ = models.apply_model(built.generator, params, state, z, train=False)
    big = jax.tree.map(lambda a: a, params)
    big["Dense_4"] = {k: 100 * v for k, v in params["Dense_4"].items()}
    scaled, _ = models.apply_model(built.generator, big, state, z, train=False)
    np.testing.assert_allclose(scaled, 100 * out, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Metrics.


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_samples_on_every_mean_cover_all_modes_at_full_quality(name):
    means, std = mixture_data.mixture(name)
    samples = np.repeat(means, 7, axis=0)
    result = mixtures.mixture_metrics(samples, means, std)
    assert result == {"modes_covered": len(means), "high_quality": 1.0, "reverse_kl": 0.0}


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_samples_on_one_mode_cover_one_with_kl_log_k(name):
    means, std = mixture_data.mixture(name)
    rng = np.random.default_rng(0)
    samples = means[3] + std * rng.uniform(-1, 1, (500, 2))  # all within sqrt(2) std
    result = mixtures.mixture_metrics(samples, means, std)
    assert result["modes_covered"] == 1 and result["high_quality"] == 1.0
    assert result["reverse_kl"] == pytest.approx(math.log(len(means)), abs=1e-12)


def test_points_far_from_every_mode_are_not_high_quality():
    means, std = mixture_data.mixture("grid")
    samples = np.array([[1.0, 1.0], [3.0, -1.0], [10.0, 10.0], [-5.0, 0.0]])
    result = mixtures.mixture_metrics(samples, means, std)
    assert result["modes_covered"] == 0 and result["high_quality"] == 0.0
    assert math.isnan(result["reverse_kl"])


def test_the_three_standard_deviation_boundary_on_both_sides():
    means, std = mixture_data.mixture("ring")
    direction = np.array([0.6, 0.8])  # a unit vector, not along an axis
    inside = means[2] + 2.999 * std * direction
    outside = means[2] + 3.001 * std * direction
    assert mixtures.mode_histogram(inside[None], means, std)[2] == 1
    assert mixtures.mode_histogram(outside[None], means, std).sum() == 0
    result = mixtures.mixture_metrics(np.stack([inside, outside]), means, std)
    assert result["high_quality"] == 0.5 and result["modes_covered"] == 1


def test_reverse_kl_of_an_uneven_histogram_and_a_fifth_of_samples_missed():
    means, std = mixture_data.mixture("ring")
    samples = np.concatenate(
        [np.repeat(means[[0]], 6, 0), np.repeat(means[[1]], 2, 0), [[0.0, 0.0], [0.5, 0.5]]]
    )
    result = mixtures.mixture_metrics(samples, means, std)
    p = np.array([0.75, 0.25])
    assert result["modes_covered"] == 2 and result["high_quality"] == pytest.approx(0.8)
    assert result["reverse_kl"] == pytest.approx(float(np.sum(p * np.log(8 * p))), abs=1e-12)


def test_evaluate_points_scores_a_sampler_beside_the_real_floor():
    means, std = mixture_data.mixture("grid")

    def on_two_modes(key, n):  # half the samples on mode 0, half on mode 24, all exact
        return np.where((np.arange(n) % 2 == 0)[:, None], means[0], means[24])

    result = evaluate.evaluate_generator(on_two_modes, dataset="grid")
    assert result["num_samples"] == mixtures.NUM_SAMPLES == 2500
    assert result["modes_covered"] == 2 and result["high_quality"] == 1.0
    assert result["reverse_kl"] == pytest.approx(math.log(25 / 2))
    floor = result["floor"]
    assert floor["modes_covered"] == 25 and floor["reverse_kl"] < 0.02
    # A real 2-D Gaussian point is within 3 std with probability 1 - exp(-4.5) = 0.9889.
    assert abs(floor["high_quality"] - (1 - math.exp(-4.5))) < 4 * math.sqrt(0.011 * 0.989 / 2500)
    table = evaluate.format_table(result)
    assert "modes covered" in table and "of grid vs its 25 modes" in table
    with pytest.raises(ValueError, match=r"takes points \[n, 2\]"):
        evaluate.evaluate_generator(lambda key, n: np.zeros((n, 3)), dataset="grid")


# ----------------------------------------------------------------------------------------------
# The training loop.


def _tiny_run(**overrides):
    loop = dict(
        g_width=32,
        d_width=16,
        batch_size=8,
        num_steps=40,
        steps_per_dispatch=10,
        log_every=10,
        sample_every=20,
        checkpoint_every=20,
        num_grid_samples=200,
        eval_num_samples=500,
    )
    return _experiment("ring", **{**loop, **overrides})


@pytest.mark.slow
def test_a_stacked_packed_run_evaluates_each_trial_and_draws_the_scatter(tmp_path):
    config = _tiny_run(pack=2, num_seeds=2)
    train.train_and_evaluate(config, tmp_path)
    result = json.loads((tmp_path / "eval" / "step_40.json").read_text())
    assert result["num_seeds"] == 2 and result["run_seeds"] == [0, 1]
    for key in ("modes_covered", "high_quality", "reverse_kl"):
        runs = [run[key] for run in result["runs"]]
        # 40 steps may leave a trial without high-quality samples: its KL is NaN, and so is the
        # mean's (never a mean over the trials that happen to have one).
        assert result[key] == pytest.approx(np.mean(runs), nan_ok=True)
        sem = np.std(runs, ddof=1) / math.sqrt(2)
        assert result["sem"][key] == pytest.approx(sem, nan_ok=True)
    assert result["num_samples"] == 500 and result["floor"]["modes_covered"] == 8
    picture = Image.open(tmp_path / "images" / "samples_00000040.png")
    assert picture.mode == "RGB" and picture.size[0] > 1.5 * picture.size[1]  # two panels


@pytest.mark.slow
def test_a_packed_2d_run_resumed_midway_is_bitwise_the_uninterrupted_run(tmp_path):
    config = _tiny_run(pack=3, eval_at_end=False)
    whole = jax.device_get(train.train_and_evaluate(config, tmp_path / "whole"))
    train.train_and_evaluate(_tiny_run(pack=3, eval_at_end=False, num_steps=20), tmp_path / "cut")
    resumed = jax.device_get(train.train_and_evaluate(config, tmp_path / "cut"))
    support.assert_bitwise_equal(resumed, whole)
    assert int(whole.step) == 40


def test_results_leaves_the_2d_benchmarks_to_their_own_table():
    results = runpy.run_path(str(REPO / "experiments" / "results.py"))
    found = results["discover"](REPO / "experiments")
    assert "pacgan_2d" not in found and "pacgan_stacked_mnist" not in found
    assert "dcgan_mnist" in found


@pytest.mark.slow
def test_table1_command_trains_rows_through_budgets_and_skips_what_is_done(tmp_path, capsys):
    tables = runpy.run_path(str(REPO / "experiments" / "pacgan_tables.py"))
    args = [
        "--mixtures=ring",
        "--packs=2",
        "--trials=2",
        "--budgets=10,20",
        f"--out={tmp_path / 'out'}",
        f"--workdirs={tmp_path / 'runs'}",
    ]
    assert tables["main"](args) == 0
    record = json.loads((tmp_path / "out" / "ring_pack2.json").read_text())
    assert sorted(record["budgets"], key=int) == ["10", "20"] and record["trials"] == 2
    # The 20-iteration numbers are the evaluation of the same runs continued from 10.
    saved = json.loads((tmp_path / "runs" / "ring_pack2" / "eval" / "step_20.json").read_text())
    entry = record["budgets"]["20"]
    assert entry["metrics"]["high_quality"] == saved["high_quality"]
    assert [run["modes_covered"] for run in entry["runs"]] == [
        run["modes_covered"] for run in saved["runs"]
    ]
    table = (tmp_path / "out" / "table1.md").read_text()
    assert "| PacGAN2, paper | 400,000 | 7.9 ± 0.1 | 95.6 ± 2.0 | 0.07 ± 0.03 |" in table
    assert "| PacGAN2, gan_jax | 20 |" in table and "| ring, pack 2 | 10 |" in table
    capsys.readouterr()
    assert tables["main"](args) == 0
    assert "20 iterations done before" in capsys.readouterr().out
    # Another trial count for the same row stops before training and leaves the record as it was.
    before = (tmp_path / "out" / "ring_pack2.json").read_bytes()
    with pytest.raises(SystemExit, match="holds 2 trials of ring_pack2, not the 3"):
        tables["main"]([*args[:2], "--trials=3", *args[3:]])
    assert (tmp_path / "out" / "ring_pack2.json").read_bytes() == before
    # A row beyond the paper: PacGAN's setup plus an override, stored and labelled apart.
    assert tables["main"]([*args[:3], "--budgets=10", *args[4:], "--set", "r1_weight=0.5"]) == 0
    extra = json.loads((tmp_path / "out" / "ring_pack2_r1_weight-0.5.json").read_text())
    assert extra["settings"] == {"r1_weight": 0.5} and extra["config"]["r1_weight"] == 0.5
    assert extra["trials"] == 2
    table = (tmp_path / "out" / "table1.md").read_text()
    assert "| PacGAN2, gan_jax | 20 |" in table
    assert "| PacGAN2, gan_jax + r1_weight=0.5 | 10 |" in table
    assert "| ring, pack 2, r1_weight=0.5 | 10 |" in table
    assert table.count("| PacGAN2, paper |") == 1
    for typo in ("r1_wieght=0.5", "d_optimiser.learning_rate=1e-3", "r1_weight.x=1"):
        with pytest.raises(SystemExit, match="no such key"):
            tables["main"]([*args, "--set", typo])
    with pytest.raises(SystemExit, match="--set d_spectral_norm=.yes."):
        tables["main"]([*args, "--set", "d_spectral_norm=yes"])
    with pytest.raises(SystemExit, match="each row sets pack"):  # not a pack-3 row as pack 2
        tables["main"]([*args, "--set", "pack=3"])


def test_table_command_stopped_by_a_signal_says_so_and_records_nothing(tmp_path, monkeypatch):
    tables = runpy.run_path(str(REPO / "experiments" / "pacgan_tables.py"))
    support.stop_as_if_signalled(monkeypatch)
    args = ["--mixtures=ring", "--packs=2", "--trials=2", "--budgets=10"]
    args += [f"--out={tmp_path / 'out'}", f"--workdirs={tmp_path / 'runs'}"]
    with pytest.raises(SystemExit, match="stopped at iteration 0 of 10 by a signal.*rerun the s"):
        tables["main"](args)
    assert not (tmp_path / "out" / "ring_pack2.json").exists()  # no budget without its numbers
    assert support.committed_steps(tmp_path / "runs" / "ring_pack2") == [0]  # what resumes


def _table1_record(reverse_kls, *, pack=2):
    """A ring row of len(reverse_kls) trials at one budget, as train_row writes it (NaN: a
    trial with no high-quality sample)."""
    runs = [  # no high-quality sample: no mode covered, HQ 0 and no KL
        {"run_seed": i, "modes_covered": 0, "high_quality": 0.0, "reverse_kl": kl}
        if math.isnan(kl)
        else {"run_seed": i, "modes_covered": 8, "high_quality": 0.6, "reverse_kl": kl}
        for i, kl in enumerate(reverse_kls)
    ]
    keys = ("modes_covered", "high_quality", "reverse_kl")
    values = {key: np.array([run[key] for run in runs], float) for key in keys}
    entry = {
        "metrics": {key: float(values[key].mean()) for key in keys},
        "sem": {key: float(values[key].std(ddof=1) / math.sqrt(len(runs))) for key in keys},
        "runs": runs,
        "floor": {"modes_covered": 8, "high_quality": 0.9896, "reverse_kl": 0.0014},
        "segment_wall_time_s": 60.0,
    }
    return {
        "variant": "ring",
        "pack": pack,
        "trials": len(runs),
        "num_samples": 2500,
        "machine": {"cpu": "a CPU", "cores": 2},
        "budgets": {"100": entry},
    }


def test_table1_shows_an_undefined_reverse_kl_as_the_mean_of_the_other_trials(tmp_path):
    tables = runpy.run_path(str(REPO / "experiments" / "pacgan_tables.py"))
    table = tables["TABLE1"]
    (tmp_path / "ring_pack2.json").write_text(json.dumps(_table1_record([0.2, math.nan, 0.4])))
    records = tables["load_records"](table, tmp_path)  # NaN through the JSON, as stored
    assert math.isnan(records[("ring", 2, "")]["budgets"]["100"]["metrics"]["reverse_kl"])
    markdown = tables["format_table"](table, records)
    # Over the two trials with a KL: 0.3 ± std([0.2, 0.4]) / sqrt(2) = 0.10; no "nan" cell.
    row = "| PacGAN2, gan_jax | 100 | 5.3 ± 2.7 | 40.0 ± 20.0 | 0.30 ± 0.10 (1 of 3 undefined) |"
    assert row in markdown and "nan" not in markdown.lower()
    legend = "A cell marked (k of n undefined) is the mean ± standard error over the trials"
    assert legend in markdown
    assert (
        "Real data (2,500 points of the mixture's test split, scored as the samples are): "
        "ring: modes (of 8) 8.00, HQ % 98.96, rev. KL 0.001." in markdown
    )
    # The README's part: the headline rows, the floor and the machine, without the sweep.
    headline = tables["format_table"](table, records, sweep=False)
    assert row in headline and "Machine: a CPU, 2 cores." in headline
    assert "| row | iterations" in markdown and "| row | iterations" not in headline
    # No trial with a KL: said as such; a table without undefined trials has no such legend.
    (tmp_path / "ring_pack2.json").write_text(json.dumps(_table1_record([math.nan] * 2)))
    markdown = tables["format_table"](table, tables["load_records"](table, tmp_path))
    assert "| 0.0 ± 0.0 | 0.0 ± 0.0 | undefined (2 of 2) |" in markdown
    (tmp_path / "ring_pack2.json").write_text(json.dumps(_table1_record([0.2, 0.4])))
    markdown = tables["format_table"](table, tables["load_records"](table, tmp_path))
    assert "0.30 ± 0.10 |" in markdown and "undefined" not in markdown


@pytest.mark.parametrize(
    "key",
    [
        "g_optimizer.schedule=cosine",
        "d_optimizer.schedule='linear'",
        "g_optimizer.warmup_steps=100",
        "d_optimizer.warmup_steps=100",
    ],
)
def test_table_rows_refuse_learning_rate_schedules(key, tmp_path):
    """A schedule decays over num_steps: the run to an early budget would not be the first
    steps of the run to the last, so a row's budgets would not be one trajectory."""
    tables = runpy.run_path(str(REPO / "experiments" / "pacgan_tables.py"))
    args = ["--mixtures=ring", "--packs=2", "--trials=2", "--budgets=10"]
    args += [f"--out={tmp_path / 'out'}", f"--workdirs={tmp_path / 'runs'}", "--set", key]
    with pytest.raises(SystemExit, match=f"--set {key.split('=')[0]}: a learning-rate schedule"):
        tables["main"](args)
    # train_row, called directly, refuses a schedule in the config it would train.
    with pytest.raises(SystemExit, match=r"g_optimizer\.schedule is 'cosine'.*constant"):
        tables["train_row"](
            tables["TABLE1"],
            "ring",
            2,
            trials=2,
            budgets=[10],
            workdirs=tmp_path / "runs",
            out=tmp_path / "out",
            settings={"g_optimizer.schedule": "cosine"},
        )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()
