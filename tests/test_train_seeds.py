"""config.num_seeds: S runs trained together by the training loop (gan_jax.seeds), in this
process (4 forced CPU devices) and, for resume after SIGKILL, through the real command line.

Run i of a stack must be the run `config.seed + i` trains alone: bitwise for seed_mlp on CPU,
where the stacked fused step places the runs' solo steps side by side (seeds.fused_train_step,
vectorize=False).
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from gan_jax import checkpointing, seeds, train, writers
from gan_jax.checkpointing import CheckpointMismatchError
from gan_jax.config import ConfigError
from gan_jax.train import train_and_evaluate
from tests import helpers
from tests import test_train_support as support
from tests.test_train import _tensorboard_tags

FIRST_SEED = 5  # not 0: run i must follow config.seed + i
LOOP = dict(num_steps=12, steps_per_dispatch=4, log_every=4, checkpoint_every=8, seed=FIRST_SEED)
NAMES = ("d_loss", "g_loss", "d_real", "d_fake")


@pytest.fixture(scope="module", autouse=True)
def mnist():
    support.ensure_mnist()


def _config(**overrides):
    return support.experiment_config("seed_mlp", **{**LOOP, **overrides})


def _restore_stack(workdir, config, step=None):
    """Checkpoint `step` (default latest) of a stacked run, as NumPy arrays."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
        jax.eval_shape(lambda: seeds.create_stacked_train_state(config, config.num_seeds)),
    )
    with checkpointing.Checkpointer(workdir, read_only=True) as reader:
        return jax.device_get(reader.restore(target, step))


def _fake_evaluate_generator(monkeypatch):
    """A stand-in for the feature-network scores (tested elsewhere): its FID is the mean pixel
    of the run's samples, so each run scores differently; returns the list of its calls."""
    from gan_jax import evaluate

    calls = []

    def fake(sample_fn, *, dataset, num_samples, pixel_range, data_dir, data_seed, **kwargs):
        images = np.asarray(sample_fn(jax.random.key(0), 8))
        calls.append(num_samples)
        return {"fid": float(images.mean()), "modes": len(calls), "dataset": dataset}

    monkeypatch.setattr(evaluate, "evaluate_generator", fake)
    monkeypatch.setattr(evaluate, "format_table", lambda result: "table")
    return calls


STACK = dict(num_seeds=3, sample_every=12, eval_at_end=True, eval_num_samples=9)


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory):
    """(workdir, returned state, evaluate_generator's calls) of a 3-seed run."""
    workdir = tmp_path_factory.mktemp("stack") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = _fake_evaluate_generator(monkeypatch)
        state = jax.device_get(train_and_evaluate(_config(**STACK), workdir))
    return workdir, state, calls


@pytest.mark.slow
def test_three_seeds_equal_their_solo_runs(stack_run, tmp_path):
    workdir, stacked, _ = stack_run
    assert seeds.num_seeds_of(stacked) == 3 and stacked.step.tolist() == [12, 12, 12]
    records = writers.read_metrics(workdir / "metrics.jsonl")[:-1]
    for i in range(3):
        solo_config = _config(seed=FIRST_SEED + i, eval_at_end=False)
        solo = jax.device_get(train_and_evaluate(solo_config, tmp_path / f"solo_{i}"))
        support.assert_bitwise_equal(seeds.unstack(stacked, i), solo)
        # Its metrics under its seed are its solo run's (the mean of the same f32 values).
        solo_records = writers.read_metrics(tmp_path / f"solo_{i}" / "metrics.jsonl")
        for record, solo_record in zip(records, solo_records, strict=True):
            for name in NAMES:
                assert record[f"seed_{FIRST_SEED + i}/{name}"] == solo_record[name]


def test_a_stack_logs_each_run_and_the_mean(stack_run):
    workdir, stacked, _ = stack_run
    # The checkpoint holds the whole stack: the returned state.
    support.assert_bitwise_equal(_restore_stack(workdir, _config(**STACK)), stacked)
    train_records = writers.read_metrics(workdir / "metrics.jsonl")[:-1]
    assert [r["step"] for r in train_records] == [4, 8, 12]
    for record in train_records:
        for name in NAMES:
            per_run = [record[f"seed_{FIRST_SEED + i}/{name}"] for i in range(3)]
            assert record[name] == pytest.approx(np.mean(per_run), rel=1e-6)
            assert len(set(per_run)) == 3  # three different runs
    tags = _tensorboard_tags(workdir / "tensorboard")
    assert {"d_loss", "seed_5/d_loss", "seed_7/g_loss", "eval/fid", "eval/seed_6/fid"} <= tags
    with Image.open(workdir / "loss_curves.png") as plot:  # drawn from the plain names
        assert plot.size[0] > 100


def test_a_stack_is_evaluated_run_by_run_with_mean_and_standard_error(stack_run):
    workdir, _, calls = stack_run
    # The final evaluation scores each run on eval_num_samples samples: mean ± s.e.
    assert calls == [9, 9, 9]
    result = json.loads((workdir / "eval" / "step_12.json").read_text())
    fids = [run["fid"] for run in result["runs"]]
    assert [run["run_seed"] for run in result["runs"]] == [5, 6, 7] == result["run_seeds"]
    assert len(set(fids)) == 3
    assert result["fid"] == pytest.approx(np.mean(fids))
    assert result["sem"]["fid"] == pytest.approx(np.std(fids, ddof=1) / np.sqrt(3))
    assert result["modes"] == 2.0 and result["sem"]["modes"] == pytest.approx(1 / np.sqrt(3))
    assert (result["num_seeds"], result["step"], result["model"]) == (3, 12, "seed_mlp")
    eval_record = writers.read_metrics(workdir / "metrics.jsonl")[-1]
    assert eval_record["eval/fid"] == pytest.approx(np.mean(fids))
    assert eval_record["eval/fid_sem"] == pytest.approx(result["sem"]["fid"])
    assert [eval_record[f"eval/seed_{s}/fid"] for s in (5, 6, 7)] == fids


def test_a_stack_draws_one_grid_with_a_row_per_run(stack_run):
    workdir, _, _ = stack_run
    # 16 grid samples: rows of 4, one per run; 28x28 tiles, 2-pixel padding, upscaled 3x.
    with Image.open(workdir / "images" / "samples_00000012.png") as grid:
        assert grid.size == ((4 * 30 + 2) * 3, (3 * 30 + 2) * 3)
        pixels = np.asarray(grid.convert("L"))
    rows = [pixels[(2 + 30 * r) * 3 : 30 * (r + 1) * 3] for r in range(3)]
    assert all(row.std() > 10 for row in rows)  # samples, not blank
    assert not np.array_equal(rows[0], rows[1])  # different runs, different samples


@pytest.mark.slow  # a stack trained with quick evaluations; the stack is evaluated in the fast step
def test_quick_evaluations_of_a_stack_score_run_zero(tmp_path, monkeypatch):
    from gan_jax import evaluate

    scored = []

    def fake(sample_fn, **kwargs):
        scored.append(np.asarray(sample_fn(jax.random.key(1), 4)))
        return {"fid": 1.0, "classifier_score": 2.0, "num_samples": 4, "seconds": 0.0}

    monkeypatch.setattr(evaluate, "evaluate_generator", fake)
    config = _config(num_seeds=2, num_steps=4, eval_every=4, eval_every_num_samples=4)
    stacked = train_and_evaluate(config, tmp_path / "run")
    assert len(scored) == 1
    run_zero = evaluate.sampler_from_state(jax.device_get(seeds.unstack(stacked, 0)), config)
    np.testing.assert_array_equal(scored[0], np.asarray(run_zero(jax.random.key(1), 4)))
    records = writers.read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert any("quality/fid" in r for r in records)


def test_num_seeds_below_one_is_a_one_line_cli_error(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "gan_jax.main", *support.cli_args("seed_mlp", workdir)]
        + ["--config.num_seeds=0"],
        cwd=support.REPO,
        env=support.env_for(1),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "config.num_seeds" in lines[0] and ">= 1" in lines[0] and "got 0" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (workdir / "checkpoints").exists()
    with pytest.raises(ConfigError, match=r"config\.num_seeds.*got -2"):
        train_and_evaluate(_config(num_seeds=-2), tmp_path / "other")


@pytest.mark.parametrize("saved, asked", [(2, 3), (2, 1), (1, 3)])
def test_checkpoint_of_another_num_seeds_stops_and_is_kept(tmp_path, saved, asked):
    workdir = tmp_path / "run"
    train_and_evaluate(_config(num_seeds=saved, num_steps=4, eval_at_end=False), workdir)
    before = {
        p: p.read_bytes() for p in sorted((workdir / "checkpoints").rglob("*")) if p.is_file()
    }
    with pytest.raises(CheckpointMismatchError) as error:
        train_and_evaluate(_config(num_seeds=asked, num_steps=8), workdir)
    assert f"holds a run of S={saved} seeds; config.num_seeds is {asked}" in str(error.value)
    assert f"--config.num_seeds={saved}" in str(error.value)
    after = {p: p.read_bytes() for p in sorted((workdir / "checkpoints").rglob("*")) if p.is_file()}
    assert after == before


def test_a_stack_refuses_several_processes(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    config = _config(num_seeds=2)
    with pytest.raises(ConfigError, match="one process"):
        train._Runs(config, None, None)


@pytest.mark.slow
def test_stacked_run_resumes_bitwise_after_sigkill(tmp_path):
    """As tests/test_train_resume.py for one run: B is killed once its checkpoint at 12 is
    committed and run again; its checkpoints and log equal A's, which never stopped."""
    run = dict(num_steps=32, steps_per_dispatch=4, log_every=4, checkpoint_every=12, num_seeds=3)
    a_workdir, b_workdir = tmp_path / "a", tmp_path / "b"
    a = support.start(
        support.cli_args("seed_mlp", a_workdir, **run), support.env_for(4), tmp_path / "a.txt"
    )
    args = support.cli_args("seed_mlp", b_workdir, **run)
    env = support.env_for(4, compile_cache=tmp_path / "cache")
    support.kill_after_checkpoint(
        args, env, b_workdir, tmp_path / "b1.txt", pause_at=16, checkpoint=12
    )
    support.run(args, env, tmp_path / "b2.txt")
    assert support.finish(a) == 0, support.tail(a)

    config = support.experiment_config("seed_mlp", **run)
    for step in (24, 32):
        b_state = _restore_stack(b_workdir, config, step)
        support.assert_bitwise_equal(b_state, _restore_stack(a_workdir, config, step))
    assert b_state.step.tolist() == [32, 32, 32]

    def records(workdir):
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return [helpers.without_timing(json.loads(line)) for line in lines]

    assert [r["step"] for r in records(b_workdir)] == list(range(4, 33, 4))
    assert records(b_workdir) == records(a_workdir)
    assert "seed_2/d_loss" in records(b_workdir)[-1]


# ----------------------------------------------------------------------------------------------
# python -m gan_jax.evaluate on a stack.


@pytest.fixture(scope="module")
def stack_checkpoint(tmp_path_factory):
    """(workdir, state): a 3-seed seed_mlp stack saved at step 3 (each run's initialisation)."""
    import jax.numpy as jnp

    from gan_jax import config as config_lib

    workdir = tmp_path_factory.mktemp("stack_ckpt")
    config = config_lib.get_default_config()
    config.update(model="seed_mlp", g_width=16, d_width=16, num_seeds=3, seed=FIRST_SEED)
    state = seeds.create_stacked_train_state(config, 3)
    state = state.replace(step=jnp.full((3,), 3, jnp.int32))
    with checkpointing.Checkpointer(workdir) as checkpointer:
        checkpointer.save(3, state, config=config, force=True)
    return workdir, jax.device_get(state)


def test_evaluate_scores_every_run_of_a_stack_or_one(stack_checkpoint, capsys):
    from gan_jax import evaluate

    workdir, state = stack_checkpoint
    sampler = evaluate.restore_sampler(workdir, seed_index=2)
    assert (sampler.seed_index, sampler.num_seeds, sampler.step) == (2, 3, 3)
    key = jax.random.key(4)
    np.testing.assert_array_equal(
        sampler.sample_fn(key, 4),
        evaluate.sampler_from_state(seeds.unstack(state, 2), sampler.config)(key, 4),
    )

    args = ["--workdir", str(workdir), "--num_samples", "200", "--no_floor"]
    assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    assert "mean ± s.e. of 3 runs" in out and "per run (seeds [5, 6, 7])" in out
    result = json.loads((workdir / "eval" / "step_3.json").read_text())
    fids = [run["fid"] for run in result["runs"]]
    assert [run["run_seed"] for run in result["runs"]] == [5, 6, 7]
    assert len(set(fids)) == 3  # three differently initialised generators
    assert result["fid"] == pytest.approx(np.mean(fids))
    assert result["sem"]["fid"] == pytest.approx(np.std(fids, ddof=1) / np.sqrt(3))
    assert f"{result['fid']:14.4f} ± {result['sem']['fid']:<7.4f}" in out

    assert evaluate.main([*args, "--seed_index", "1"]) == 0
    assert "run 1 (seed 6)" in capsys.readouterr().out
    one = json.loads((workdir / "eval" / "step_3_seed_index_1.json").read_text())
    assert (one["seed_index"], one["run_seed"]) == (1, 6)
    assert one["fid"] == pytest.approx(fids[1], rel=1e-6)

    assert evaluate.main([*args, "--seed_index", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed_index 3 is not a run" in err[0] and "0 to 2" in err[0]
