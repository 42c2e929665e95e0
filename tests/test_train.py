"""The training loop in this process (4 forced CPU devices): what a run writes, and bad input.

Slow paths (signals, resume bitwise, several processes) are in test_train_resume.py and
test_multiprocess.py; the command line in test_main.py.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import signal
import struct
import time

import jax
import numpy as np
import pytest
from PIL import Image

from gan_jax import checkpointing, data, fused, optim, parallel, plots, train, writers
from gan_jax import models as models_lib
from gan_jax.checkpointing import Checkpointer, CheckpointMismatchError, WorkdirError
from gan_jax.state import create_train_state
from gan_jax.train import NonFiniteMetricError, train_and_evaluate
from tests import test_train_support as support

METRIC_KEYS = {
    "step",
    "d_loss",
    "g_loss",
    "d_real",
    "d_fake",
    "images_per_s",
    "wall_time_s",
    "train_time_s",
}


@pytest.fixture(scope="module", autouse=True)
def mnist():
    support.ensure_mnist()


def _config(**overrides):
    loop = dict(num_steps=12, steps_per_dispatch=4, log_every=4, checkpoint_every=8)
    return support.experiment_config("seed_mlp", **{**loop, **overrides})


def _tensorboard_tags(directory) -> set[str]:
    """Scalar and image tags in the TensorBoard event files under `directory`."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        payload, offset = path.read_bytes(), 0
        while offset < len(payload):
            (length,) = struct.unpack_from("<Q", payload, offset)
            event = event_pb2.Event.FromString(payload[offset + 12 : offset + 12 + length])
            tags.update(value.tag for value in event.summary.value)
            offset += 12 + length + 4
    return tags


def _forbid_training(monkeypatch):
    """Makes loading the data or building a train step fail the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train, "_load_training_split", forbidden)
    monkeypatch.setattr(fused, "fused_train_step", forbidden)


def _digest(directory) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------------
# A whole run.


def test_tiny_run_writes_everything(tmp_path, capsys, monkeypatch):
    # The final evaluation with a stand-in for the feature-network scores (tested elsewhere).
    from gan_jax import evaluate

    evaluations = []

    def fake_evaluate(
        sample_fn, *, dataset, num_samples, pixel_range, data_dir, data_seed, image_shape, network
    ):
        images = np.asarray(sample_fn(jax.random.key(0), 5))
        evaluations.append((images.shape, float(images.min()), float(images.max())))
        assert (dataset, num_samples, pixel_range) == ("mnist", 7, "unit")
        # MNIST: the shipped classifier, on the dataset's own 28x28 images.
        assert image_shape is None and network.info["name"] == "classifier"
        return {"fid": 1.5, "dataset": dataset}

    monkeypatch.setattr(evaluate, "evaluate_generator", fake_evaluate)
    monkeypatch.setattr(evaluate, "format_table", lambda result: "table")

    config = _config(sample_every=8, keep_checkpoints=2, eval_at_end=True, eval_num_samples=7)
    workdir = tmp_path / "run"
    state = train_and_evaluate(config, workdir)
    assert int(state.step) == 12

    assert support.committed_steps(workdir) == [8, 12]
    # The returned state is the one saved last.
    support.assert_bitwise_equal(support.restore(workdir, config), jax.device_get(state))

    records = writers.read_metrics(workdir / "metrics.jsonl")
    assert records[-1] == {"step": 12, "eval/fid": 1.5}
    records = records[:-1]
    assert [r["step"] for r in records] == [4, 8, 12]
    for record in records:
        assert record.keys() >= METRIC_KEYS
        assert all(np.isfinite(v) for v in record.values())
        assert 0.0 < record["d_real"] < 1.0 and 0.0 < record["d_fake"] < 1.0  # probabilities
        assert record["images_per_s"] > 0
    assert records[0]["wall_time_s"] < records[-1]["wall_time_s"]

    assert json.loads((workdir / "config.json").read_text()) == json.loads(
        config.to_json_best_effort()
    )
    assert {"d_loss", "g_loss", "images_per_s", "samples"} <= _tensorboard_tags(
        workdir / "tensorboard"
    )
    grids = sorted(p.name for p in (workdir / "images").iterdir())
    assert grids == ["samples_00000008.png", "samples_00000012.png"]
    with Image.open(workdir / "images" / grids[-1]) as grid:
        # 16 samples of 28x28 in a 4x4 grid with 2-pixel padding, upscaled 3x.
        assert grid.size == ((4 * 30 + 2) * 3, (4 * 30 + 2) * 3)
        pixels = np.asarray(grid)
    assert pixels.std() > 10  # samples, not a blank image
    with Image.open(workdir / "loss_curves.png") as plot:
        assert plot.size[0] > 100
    assert f"samples: {workdir / 'images' / grids[-1]}" in capsys.readouterr().out
    (shape, low, high), *more = evaluations
    assert shape == (5, 28, 28, 1) and 0.0 <= low < high <= 1.0 and not more
    assert json.loads((workdir / "eval" / "step_12.json").read_text()) == {
        "fid": 1.5,
        "dataset": "mnist",
        "step": 12,
        "model": "seed_mlp",
    }

    # Rerunning the finished run trains nothing and keeps the log as it is.
    before = (workdir / "metrics.jsonl").read_text()
    again = train_and_evaluate(config, workdir)
    assert int(again.step) == 12
    assert (workdir / "metrics.jsonl").read_text() == before
    assert len(evaluations) == 1
    assert support.committed_steps(workdir) == [8, 12]


def _fake_quick_evaluations(monkeypatch, seconds: float):
    """Replaces evaluate_generator with a stand-in taking `seconds`; returns its calls' kwargs.

    Its FID is the mean of the sampled images (so it follows the generator), its classifier
    score counts the calls.
    """
    from gan_jax import evaluate

    calls = []

    def fake_evaluate(sample_fn, **kwargs):
        calls.append(kwargs)
        time.sleep(seconds)
        images = np.asarray(sample_fn(jax.random.key(0), 5))
        return {
            "num_samples": kwargs["num_samples"],
            "fid": float(images.mean()),
            "classifier_score": float(len(calls)),
            "floor": {"fid": 0.25, "classifier_score": 9.5},
            "seconds": seconds,
        }

    monkeypatch.setattr(evaluate, "evaluate_generator", fake_evaluate)
    return calls


def test_quick_evaluations_log_quality_records_and_draw_the_curves(tmp_path, monkeypatch):
    calls = _fake_quick_evaluations(monkeypatch, seconds=1.0)
    excluded = []  # what the progress line's ETA is told to leave out
    original_exclude = writers.Progress.exclude_time
    monkeypatch.setattr(
        writers.Progress,
        "exclude_time",
        lambda self, seconds: (excluded.append(seconds), original_exclude(self, seconds)),
    )
    config = _config(num_steps=10, eval_every=4, eval_every_num_samples=300, eval_at_end=False)
    workdir = tmp_path / "run"
    train_and_evaluate(config, workdir)

    # Every eval_every steps and at the last step, on the configured sample count, with the
    # floor on the same count; nothing else evaluated (no final evaluation in this config).
    assert [c["num_samples"] for c in calls] == [300, 300, 300]
    assert [c["floor_num_samples"] for c in calls] == [300, 300, 300]
    records = writers.read_metrics(workdir / "metrics.jsonl")
    quality = [r for r in records if "quality/fid" in r]
    assert [r["step"] for r in quality] == [4, 8, 10]
    assert [r["quality/classifier_score"] for r in quality] == [1.0, 2.0, 3.0]
    assert all(r["quality/floor_fid"] == 0.25 and r["quality/num_samples"] == 300 for r in quality)
    assert all(r["quality/eval_seconds"] == 1.0 for r in quality)
    assert len({r["quality/fid"] for r in quality}) == 3  # the generator changed between them
    assert not (workdir / "eval").exists()  # eval/step_<S>.json is the full evaluation's

    # Training minutes leave the evaluations out: by the log of step 8 the evaluation at step 4
    # (1 s) had run, and wall time and training time differ by it.
    minutes = [r["quality/train_minutes"] for r in quality]
    assert minutes == sorted(minutes) and minutes[0] > 0
    (log8,) = [r for r in records if r["step"] == 8 and "wall_time_s" in r]
    assert 1.0 <= log8["wall_time_s"] - log8["train_time_s"] < 4.0  # + sampler compile
    (log10,) = [r for r in records if r["step"] == 10 and "wall_time_s" in r]
    assert 2.0 <= log10["wall_time_s"] - log10["train_time_s"] < 5.0
    assert minutes[-1] * 60 == pytest.approx(log10["train_time_s"], abs=0.2)
    # The ETA leaves out each compilation and each evaluation (1 s each, plus their overhead).
    assert sum(1.0 <= s < 4.0 for s in excluded) >= 3

    # The curves: a PNG drawn from exactly these records.
    with Image.open(workdir / "quality_curves.png") as png:
        assert png.format == "PNG" and png.size == (1000, 650)
    fig = plots.quality_figure(records)
    fid_by_step, fid_by_minutes = fig.axes[0].lines[0], fig.axes[1].lines[0]
    np.testing.assert_array_equal(fid_by_step.get_xdata(), [4, 8, 10])
    np.testing.assert_array_equal(fid_by_step.get_ydata(), [r["quality/fid"] for r in quality])
    np.testing.assert_array_equal(fid_by_minutes.get_xdata(), minutes)
    assert (workdir / "loss_curves.png").exists()


def test_resumed_run_continues_the_training_clock(tmp_path, monkeypatch):
    _fake_quick_evaluations(monkeypatch, seconds=0.0)
    workdir = tmp_path / "run"
    train_and_evaluate(_config(num_steps=8, eval_every=4, eval_at_end=False), workdir)
    # As if the first 8 steps had taken 1,000 s of training.
    path = workdir / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for record in lines:
        if "train_time_s" in record:
            record["train_time_s"] += 1000.0
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))

    train_and_evaluate(_config(num_steps=12, eval_every=4, eval_at_end=False), workdir)
    quality = [r for r in writers.read_metrics(path) if "quality/fid" in r]
    assert [r["step"] for r in quality] == [4, 8, 12]
    assert quality[1]["quality/train_minutes"] < 1.0  # the first run's own record, untouched
    assert 1000.0 / 60 < quality[2]["quality/train_minutes"] < 1000.0 / 60 + 1.0


def test_remote_workdir_gets_logs_copied_and_resumes_its_log(tmp_path, monkeypatch):
    """A gs:// workdir: logs go to a local directory and are copied over (here: a local
    "bucket"); a resume on a fresh machine continues the bucket's metrics.jsonl."""
    bucket = tmp_path / "bucket"
    monkeypatch.setattr(train, "is_remote", lambda path: str(path) == str(bucket))
    monkeypatch.setenv("GAN_JAX_LOCAL_LOGDIR", str(tmp_path / "local_a"))
    train_and_evaluate(_config(num_steps=8, checkpoint_every=4), bucket)
    local = train.local_log_dir(str(bucket))
    assert local.is_relative_to(tmp_path / "local_a")
    copied = _digest(local)
    assert {"metrics.jsonl", "config.json", "loss_curves.png", "images/samples_00000008.png"} <= (
        copied.keys()
    )
    assert {k: v for k, v in _digest(bucket).items() if not k.startswith("checkpoints")} == copied

    monkeypatch.setenv("GAN_JAX_LOCAL_LOGDIR", str(tmp_path / "local_b"))  # another machine
    train_and_evaluate(_config(num_steps=12, checkpoint_every=4), bucket)
    assert [r["step"] for r in writers.read_metrics(bucket / "metrics.jsonl")] == [4, 8, 12]
    assert support.committed_steps(bucket) == [4, 8, 12]


def test_log_mirror_copies_changed_files_only(tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "images").mkdir(parents=True)
    (local / "metrics.jsonl").write_text("a\n")
    (local / "images" / "x.png").write_bytes(b"png")
    mirror = train.LogMirror(local, remote)
    assert mirror.sync() == ["images/x.png", "metrics.jsonl"]
    assert mirror.sync() == []
    with (local / "metrics.jsonl").open("a") as f:
        f.write("b\n")
    assert mirror.sync() == ["metrics.jsonl"]
    assert (remote / "metrics.jsonl").read_text() == "a\nb\n"

    fresh = train.LogMirror(tmp_path / "elsewhere", remote)
    assert fresh.fetch("metrics.jsonl") and not fresh.fetch("missing.txt")
    assert (tmp_path / "elsewhere" / "metrics.jsonl").read_text() == "a\nb\n"
    assert fresh.sync() == []  # what was fetched is not sent back


def test_is_remote_and_local_log_dir(monkeypatch, tmp_path):
    assert train.is_remote("gs://bucket/run") and train.is_remote("s3://b/r")
    assert not train.is_remote("/tmp/run") and not train.is_remote("runs/gs:x")
    monkeypatch.setenv("GAN_JAX_LOCAL_LOGDIR", str(tmp_path))
    a, b = train.local_log_dir("gs://bucket/run"), train.local_log_dir("gs://bucket/run2")
    assert a.parent == tmp_path and a != b and a.name.startswith("bucket_run_")


# ----------------------------------------------------------------------------------------------
# Dispatches: where a run splits its steps does not change what it computes.


def test_dispatch_boundaries_lie_on_a_grid_fixed_by_the_config():
    config = _config(num_steps=103, steps_per_dispatch=7, log_every=10, checkpoint_every=25)

    def boundaries(start, num_steps=103):
        config.num_steps = num_steps
        steps = [start]
        while steps[-1] < num_steps:
            steps.append(steps[-1] + train._dispatch_length(steps[-1], config))
        return steps

    full = boundaries(0)
    grid = {s for s in range(1, 104) if s % 7 == 0 or s % 10 == 0 or s % 25 == 0} | {103}
    assert full == [0, *sorted(grid)]
    # A run resumed at any step, even one that is no boundary (a checkpoint written by a run with
    # another num_steps), rejoins the same dispatches at the next boundary...
    for start in range(103):
        assert boundaries(start) == [start, *(b for b in full if b > start)]
    # ...and a shorter run's dispatches are the longer run's, up to its own end.
    assert boundaries(0, num_steps=64) == [b for b in full if b < 64] + [64]


@pytest.mark.slow  # four scan lengths compiled; the fast step resumes on the fixed grid
def test_chunking_gives_bitwise_identical_states():
    """Scanned steps (seed_mlp): k steps in one `lax.scan` dispatch compute bit for bit what the
    same steps split differently do. (The dcgan's steps, unrolled on CPU by gan_jax.fused, differ
    in the last bit across splits; that is why the loop's dispatches lie on a fixed grid, and
    test_train_resume shows the dcgan resumes exactly.)"""
    config = support.experiment_config("seed_mlp", batch_size=32)
    models, optimizers = models_lib.build_models(config), optim.build_optimizers(config)
    mesh = parallel.data_mesh()
    images, labels = data.to_device(*data.load_split("mnist", "test"))
    key = jax.random.key(1)
    initial = create_train_state(jax.random.key(0), config, models=models, optimizers=optimizers)
    compiled = {}

    def run(lengths):
        state = parallel.replicate_on_mesh(initial, mesh)
        for n in lengths:
            if n not in compiled:
                compiled[n] = fused.fused_train_step(
                    models=models, optimizers=optimizers, config=config, mesh=mesh, num_steps=n
                )
            state, _ = compiled[n](state, images, labels, key)
        return jax.device_get(state)

    reference = run([6])
    assert int(reference.step) == 6
    for lengths in ([1] * 6, [2, 4], [4, 1, 1]):
        support.assert_bitwise_equal(run(lengths), reference)


# ----------------------------------------------------------------------------------------------
# Small pieces.


def test_first_non_finite_names_the_earliest_metric_and_step():
    metrics = {
        "g_loss": np.array([1.0, 2.0, np.inf, np.nan]),
        "d_loss": np.array([1.0, 2.0, 3.0, np.nan]),
    }
    assert train._first_non_finite(metrics, first_step=40) == ("g_loss", 43)
    metrics["d_loss"][2] = np.nan  # a tie: the first name in sorted order
    assert train._first_non_finite(metrics, first_step=40) == ("d_loss", 43)
    assert train._first_non_finite({"a": np.ones(3)}, first_step=0) is None


def test_config_differences():
    saved = {"num_steps": 10, "image_shape": [28, 28, 1], "g": {"lr": 1.0, "b1": 0.5}}
    current = {"num_steps": 20, "image_shape": (28, 28, 1), "g": {"lr": 1.0, "b1": 0.9}, "x": 1}
    assert train.config_differences(saved, current) == [
        "g.b1: 0.5 -> 0.9",
        "num_steps: 10 -> 20",
        "x: '<absent>' -> 1",
    ]
    assert train.config_differences(saved, saved) == []


def test_signals_stop_once_and_a_second_ctrl_c_interrupts():
    with train._stop_on_signals() as stop:
        assert not stop
        assert signal.getsignal(signal.SIGTERM) == stop.handle
        stop.handle(signal.SIGTERM, None)
        stop.handle(signal.SIGTERM, None)  # repeated notices change nothing
        assert stop and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) != stop.handle  # restored

    with train._stop_on_signals() as stop:
        stop.handle(signal.SIGINT, None)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            stop.handle(signal.SIGINT, None)
    assert train._any_process(True) and not train._any_process(False)


# ----------------------------------------------------------------------------------------------
# Bad input.


def test_unwritable_workdir_fails_before_training(tmp_path, monkeypatch):
    _forbid_training(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkdirError, match=re.escape(str(blocker / "run"))):
        train_and_evaluate(_config(), blocker / "run")
    assert blocker.read_text() == "not a directory"


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    _forbid_training(monkeypatch)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(
        checkpointing.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 4096, 4096)
    )
    with pytest.raises(WorkdirError, match="Not enough free disk space"):
        train_and_evaluate(_config(), tmp_path / "run")
    assert support.committed_steps(tmp_path / "run") == []
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "model, other, named",
    [
        ("seed_mlp", dict(g_width=16), "g_params/Dense_0/kernel: saved (16, 32) float32, "),
        ("dcgan", {}, "g_params/BatchNorm_0/bias: in the model (1568,) float32, not in the che"),
    ],
)
def test_checkpoint_of_another_model_stops_and_is_kept(tmp_path, monkeypatch, model, other, named):
    workdir = tmp_path / "run"
    old_config = _config()
    old_state = create_train_state(jax.random.key(3), old_config)
    with Checkpointer(workdir) as checkpointer:
        assert checkpointer.save(5, old_state, config=old_config, force=True)
    before = _digest(workdir)

    _forbid_training(monkeypatch)
    with pytest.raises(CheckpointMismatchError) as error:
        train_and_evaluate(support.experiment_config(model, **other), workdir)
    assert named in str(error.value)
    assert "Use a new --workdir, or the config that wrote it" in str(error.value)
    assert _digest(workdir) == before  # nothing written, nothing removed
    support.assert_bitwise_equal(support.restore(workdir, old_config), jax.device_get(old_state))


def test_non_finite_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path, caplog):
    workdir = tmp_path / "run"
    good_config = _config(num_steps=8, checkpoint_every=4)
    good = jax.device_get(train_and_evaluate(good_config, workdir))
    assert support.committed_steps(workdir) == [4, 8]

    # Resume with a learning rate that overflows the parameters at once.
    bad_config = _config(num_steps=16, checkpoint_every=4)
    bad_config.d_optimizer.learning_rate = 1e30
    with pytest.raises(NonFiniteMetricError) as error:
        train_and_evaluate(bad_config, workdir)
    message = str(error.value)
    match = re.match(r"(\w+) became (nan|inf|-inf) at step (\d+); stopping", message)
    assert match, message
    assert match.group(1) in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm")
    assert 8 < int(match.group(3)) <= 12  # in the first dispatch after the resume
    assert f"step 8 in {workdir / 'checkpoints'}" in message
    assert "d_optimizer.learning_rate: 0.0002 -> 1e+30" in caplog.text  # the resume warned

    assert support.committed_steps(workdir) == [4, 8]
    support.assert_bitwise_equal(support.restore(workdir, good_config), good)
    assert [r["step"] for r in writers.read_metrics(workdir / "metrics.jsonl")] == [4, 8]
