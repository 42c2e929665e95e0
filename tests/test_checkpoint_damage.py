"""A damaged latest checkpoint (truncated array file, missing metadata): training and evaluation
move it aside and continue from the newest readable one; nothing is deleted or lost."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from gan_jax import checkpointing, evaluate, train, writers
from tests import helpers
from tests import test_train_support as support

RUN = dict(num_steps=12, steps_per_dispatch=4, log_every=4, checkpoint_every=4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run to step 12 (checkpoints 4, 8, 12) and its final state."""
    support.ensure_mnist()
    workdir = tmp_path_factory.mktemp("reference") / "run"
    state = jax.device_get(
        train.train_and_evaluate(support.experiment_config("seed_mlp", **RUN), workdir)
    )
    return workdir, state


def _metric_records(workdir):
    records = writers.read_metrics(workdir / "metrics.jsonl")
    return [helpers.without_timing(r) for r in records]


def _truncate_largest_array_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    largest = max(files, key=lambda p: p.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)


def _delete_item_metadata(step_dir):
    os.remove(step_dir / "state" / "_METADATA")


def _delete_checkpoint_metadata(step_dir):
    os.remove(step_dir / "_CHECKPOINT_METADATA")


def _files(directory):
    return {
        str(p.relative_to(directory)): p.stat().st_size for p in directory.rglob("*") if p.is_file()
    }


def _copy_run(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("damage", [_truncate_largest_array_file, _delete_item_metadata])
def test_training_moves_a_damaged_latest_checkpoint_aside_and_ends_bitwise_equal(
    reference, damage, tmp_path, caplog
):
    ref_workdir, ref_state = reference
    workdir = _copy_run(ref_workdir, tmp_path / "run")  # the same run, then damaged
    damage(workdir / "checkpoints" / "12")
    damaged_files = _files(workdir / "checkpoints" / "12")

    state = train.train_and_evaluate(support.experiment_config("seed_mlp", **RUN), workdir)

    assert "checkpoint 12 cannot be read; moved it aside to" in caplog.text
    assert "continuing from step 8" in caplog.text
    support.assert_bitwise_equal(jax.device_get(state), ref_state)
    support.assert_bitwise_equal(
        support.restore(workdir, support.experiment_config("seed_mlp", **RUN), 12), ref_state
    )
    # Nothing deleted: the damaged checkpoint is kept byte for byte beside the new one.
    assert support.committed_steps(workdir) == [4, 8, 12]
    (moved,) = (workdir / "checkpoints").glob("12.damaged-*")
    assert _files(moved) == damaged_files
    # Every log step once, the lines after step 8 rewritten, not duplicated.
    assert _metric_records(workdir) == _metric_records(ref_workdir)
    assert [r["step"] for r in _metric_records(workdir)] == [4, 8, 12]


def test_missing_checkpoint_metadata_file_alone_is_still_readable(reference, tmp_path):
    # Orbax reads the arrays without _CHECKPOINT_METADATA: the checkpoint is used, not moved.
    ref_workdir, ref_state = reference
    workdir = _copy_run(ref_workdir, tmp_path / "run")
    _delete_checkpoint_metadata(workdir / "checkpoints" / "12")
    config = support.experiment_config("seed_mlp", **RUN)
    with checkpointing.Checkpointer(workdir) as checkpointer:
        restored = checkpointer.restore_newest_readable(support.abstract_state(config))
    support.assert_bitwise_equal(jax.device_get(restored), ref_state)
    assert support.committed_steps(workdir) == [4, 8, 12]
    assert not list((workdir / "checkpoints").glob("*.damaged-*"))


def test_no_readable_checkpoint_stops_with_one_message_and_moves_nothing(reference, tmp_path):
    ref_workdir, _ = reference
    workdir = _copy_run(ref_workdir, tmp_path / "run")
    for step in (4, 8, 12):
        _truncate_largest_array_file(workdir / "checkpoints" / str(step))
    before = _files(workdir)
    with pytest.raises(checkpointing.NoReadableCheckpointError) as error:
        train.train_and_evaluate(support.experiment_config("seed_mlp", **RUN), workdir)
    message = str(error.value)
    assert message.startswith(f"No checkpoint in {workdir / 'checkpoints'} can be read: ")
    for step in (4, 8, 12):
        assert f"{workdir / 'checkpoints' / str(step)} cannot be read" in message
    assert "Nothing was moved or deleted" in message and "use a new --workdir" in message
    assert _files(workdir) == before


def test_evaluation_of_latest_moves_damaged_aside_and_explicit_step_lists_readable(
    reference, tmp_path
):
    ref_workdir, _ = reference
    workdir = _copy_run(ref_workdir, tmp_path / "run")
    _truncate_largest_array_file(workdir / "checkpoints" / "12")
    _delete_item_metadata(workdir / "checkpoints" / "8")

    # An explicit damaged step: said so, with the readable steps, and left where it is.
    with pytest.raises(checkpointing.DamagedCheckpointError) as error:
        evaluate.restore_sampler(workdir, step=12)
    assert f"{workdir / 'checkpoints' / '12'} cannot be read" in str(error.value)
    assert str(error.value).endswith("Readable steps: [4].")
    assert support.committed_steps(workdir) == [4, 8, 12]

    # The latest: both damaged ones moved aside, the newest readable one evaluated.
    sampler = evaluate.restore_sampler(workdir)
    assert sampler.step == 4
    assert support.committed_steps(workdir) == [4]
    assert len(list((workdir / "checkpoints").glob("*.damaged-*"))) == 2


def test_evaluation_leaves_damaged_checkpoints_of_a_live_run_in_place(reference, tmp_path):
    from gan_jax import workdir_lock

    ref_workdir, _ = reference
    workdir = _copy_run(ref_workdir, tmp_path / "run")
    _truncate_largest_array_file(workdir / "checkpoints" / "12")
    with workdir_lock.acquire(workdir):  # a trainer (this process) holds the run
        assert evaluate.restore_sampler(workdir).step == 8
    assert support.committed_steps(workdir) == [4, 8, 12]


def test_cli_evaluate_of_an_unreadable_run_is_one_line(reference, tmp_path):
    ref_workdir, _ = reference
    workdir = _copy_run(ref_workdir, tmp_path / "run")
    for step in (4, 8, 12):
        _delete_item_metadata(workdir / "checkpoints" / str(step))
    result = subprocess.run(
        [sys.executable, "-m", "gan_jax.evaluate", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        env=support.env_for(1),
        cwd=support.REPO,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: No checkpoint in ")
