"""Tests for gan_jax.checkpointing: exact round trips, retention, atomicity and clear errors."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
from collections import namedtuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax import checkpointing
from gan_jax.checkpointing import (
    Checkpointer,
    CheckpointMismatchError,
    NoCheckpointError,
    WorkdirError,
    restore_for_eval,
)


class State(struct.PyTreeNode):
    """Shaped like gan_jax.state.TrainState: arrays only."""

    step: jax.Array
    g_params: dict
    d_params: dict
    g_state: dict
    d_state: dict
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    g_ema_params: dict | None


class Gen(nn.Module):
    width: int

    @nn.compact
    def __call__(self, z, train: bool = True):
        h = nn.Dense(self.width)(z)
        h = nn.BatchNorm(use_running_average=not train)(h)
        return nn.Dense(6)(nn.relu(h))


class Disc(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(5)(x)
        return nn.Dense(1)(h)


def _fill(abstract, rng: np.random.Generator):
    """Random host values for an abstract pytree, put on device without compiling anything."""
    return jax.tree.map(
        lambda a: (
            jnp.asarray(rng.standard_normal(a.shape).astype(a.dtype) + 0.5)
            if jnp.issubdtype(a.dtype, jnp.floating)
            else jnp.asarray(rng.integers(1, 100, a.shape).astype(a.dtype))
        ),
        abstract,
    )


def make_state(*, width: int = 8, ema: bool = True, seed: int = 0) -> State:
    """A state shaped by a Flax model and Adam, with random values in every leaf.

    Built from `jax.eval_shape` plus NumPy values: eager init and update would compile dozens of
    tiny XLA programs, which costs seconds on the 2-core CI machine.
    """
    rng = np.random.default_rng(seed)
    key = jax.random.key(0)
    g_vars = jax.eval_shape(lambda: Gen(width).init(key, jnp.ones((2, 4))))
    d_vars = jax.eval_shape(lambda: Disc().init(key, jnp.ones((2, 6))))
    tx = optax.adam(1e-3)
    g_params, d_params = _fill(g_vars["params"], rng), _fill(d_vars["params"], rng)
    return State(
        step=jnp.asarray(7 + seed, jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_state={"batch_stats": _fill(g_vars["batch_stats"], rng)},
        d_state={},
        g_opt_state=_fill(jax.eval_shape(tx.init, g_params), rng),
        d_opt_state=_fill(jax.eval_shape(tx.init, d_params), rng),
        g_ema_params=_fill(g_vars["params"], rng) if ema else None,
    )


def zeros_like_state(state: State) -> State:
    return jax.tree.map(jnp.zeros_like, state)


def assert_bitwise_equal(a, b) -> None:
    leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        # Compare bytes, not values: NaN payloads and -0.0 must survive too.
        assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def state() -> State:
    return make_state()


# ----------------------------------------------------------------------------------------------
# Pure helpers.


def test_shapes_by_path_matches_orbax_naming():
    Pair = namedtuple("Pair", ["mu", "nu"])
    tree = {"a": (Pair(np.zeros((2, 3), np.float32), None), np.int32(1))}
    assert checkpointing.shapes_by_path(tree) == {
        "a/0/mu": ((2, 3), np.dtype("float32")),
        "a/1": ((), np.dtype("int32")),
    }


def test_describe_mismatches_lists_each_kind():
    f32, i32 = np.dtype("float32"), np.dtype("int32")
    saved = {"k": ((4, 8), f32), "old": ((1,), f32), "same": ((), i32), "dt": ((2,), f32)}
    expected = {"k": ((4, 16), f32), "new": ((3,), f32), "same": ((), i32), "dt": ((2,), i32)}
    lines = checkpointing.describe_mismatches(saved, expected)
    # Target order first, then what only the checkpoint has.
    assert lines == [
        "k: saved (4, 8) float32, expected (4, 16) float32",
        "new: in the model (3,) float32, not in the checkpoint",
        "dt: saved (2,) float32, expected (2,) int32",
        "old: in the checkpoint (1,) float32, not in the model",
    ]


def test_required_free_bytes():
    mib = 2**20
    # Three to keep, none yet: four checkpoints at peak (the new one before the oldest goes).
    assert checkpointing.required_free_bytes(
        10 * mib, max_to_keep=3, num_existing=0, margin=1.0, slack_bytes=0
    ) == (40 * mib)
    # Already full: only the next one is new.
    assert checkpointing.required_free_bytes(
        10 * mib, max_to_keep=3, num_existing=3, margin=1.0, slack_bytes=0
    ) == (10 * mib)
    assert checkpointing.required_free_bytes(
        10, max_to_keep=None, num_existing=5, margin=2.0, slack_bytes=1
    ) == (21)


def test_tree_nbytes_counts_abstract_leaves(state):
    abstract = jax.eval_shape(lambda: state)
    assert checkpointing.tree_nbytes(abstract) == checkpointing.tree_nbytes(state)
    assert checkpointing.tree_nbytes({"a": jnp.zeros((3, 5), jnp.bfloat16)}) == 30


# ----------------------------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize("ema", [True, False])
def test_async_save_then_restore_is_bitwise(tmp_path, ema):
    state = make_state(ema=ema)
    # Awkward bit patterns in a params leaf: NaN payloads and a negative zero.
    kernel = np.array(state.d_params["Dense_0"]["kernel"])
    kernel[0, :3] = [np.nan, -0.0, np.inf]
    kernel.view(np.uint32)[1, 0] = 0x7FC01234  # a NaN with a payload
    d_params = {**state.d_params, "Dense_0": {**state.d_params["Dense_0"], "kernel": kernel}}
    state = state.replace(d_params=jax.tree.map(jnp.asarray, d_params))
    expected = jax.tree.map(np.array, state)

    config = ml_collections.ConfigDict({"model": "dcgan", "image_shape": (28, 28, 1), "lr": 2e-4})
    with Checkpointer(tmp_path, async_save=True) as ckpt:
        assert ckpt.save(7, state, config=config, force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [7]
        restored = ckpt.restore(zeros_like_state(state))
        saved_config = ckpt.restore_config()

    assert isinstance(restored, State)
    assert restored.step.dtype == jnp.int32 and int(restored.step) == 7
    assert (restored.g_ema_params is None) == (not ema)
    assert_bitwise_equal(restored, expected)
    assert saved_config == {"model": "dcgan", "image_shape": [28, 28, 1], "lr": 2e-4}


def test_save_returns_before_commit_and_arrays_may_be_donated(tmp_path, state):
    mine = jax.tree.map(jnp.copy, state)
    expected = jax.tree.map(np.array, state)
    ckpt = Checkpointer(tmp_path, async_save=True)
    assert ckpt.save(3, mine, force=True)
    # The device buffers are no longer needed once save() returns (a donating train step would
    # overwrite them); deleting them must not corrupt the checkpoint being written.
    for leaf in jax.tree.leaves(mine):
        leaf.delete()
    # Restoring right away waits for the in-flight save instead of reading a partial one.
    assert_bitwise_equal(ckpt.restore(zeros_like_state(state)), expected)
    assert ckpt.latest_step() == 3
    ckpt.close()


def test_restore_takes_target_sharding_and_abstract_targets(tmp_path, state):
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    replicated = NamedSharding(mesh, P())
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, force=True)
        ckpt.wait()
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
        )
        restored = ckpt.restore(abstract)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == replicated
    assert_bitwise_equal(restored, jax.tree.map(np.array, state))


def test_keep_last_n(tmp_path, state):
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in (1, 2, 3, 4):
            assert ckpt.save(step, state, force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [3, 4]
    on_disk = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert on_disk == ["3", "4"]


def test_save_interval_and_no_overwrite(tmp_path, state):
    with Checkpointer(tmp_path, max_to_keep=None, save_interval_steps=5) as ckpt:
        saved = [step for step in range(1, 13) if ckpt.save(step, state)]
        assert saved == [5, 10]
        assert ckpt.should_save(15) and not ckpt.should_save(16)
        # A forced save (e.g. on SIGTERM) off the interval saves; repeating a step does not.
        assert ckpt.save(12, state, force=True)
        assert not ckpt.save(12, state, force=True)
        ckpt.wait()
        assert not ckpt.save(10, state, force=True)
        assert ckpt.all_steps() == [5, 10, 12]


def test_interval_zero_saves_only_when_forced(tmp_path, state):
    with Checkpointer(tmp_path, save_interval_steps=0) as ckpt:
        assert not any(ckpt.save(step, state) for step in (0, 1, 100))
        assert ckpt.save(100, state, force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [100]


# ----------------------------------------------------------------------------------------------
# Half-written checkpoints.


def test_tmp_directory_of_unfinished_save_is_ignored(tmp_path, state):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(2, state, force=True)
    root = tmp_path / "checkpoints"
    # Exactly what Orbax leaves when killed before its final rename: a full-looking step under
    # the tmp name, without the commit marker.
    tmp_dir = root / "9.orbax-checkpoint-tmp"
    shutil.copytree(root / "2", tmp_dir)
    (tmp_dir / "commit_success.txt").unlink()

    ckpt = Checkpointer(tmp_path)
    assert ckpt.latest_step() == 2 and ckpt.all_steps() == [2]
    restored = ckpt.restore(zeros_like_state(state))
    assert_bitwise_equal(restored, jax.tree.map(np.array, state))
    with pytest.raises(NoCheckpointError, match="step 9 does not exist"):
        ckpt.restore(zeros_like_state(state), step=9)
    ckpt.save(3, state, force=True)  # a save first waits for the clean-up of leftovers
    ckpt.close()
    assert not tmp_dir.exists()
    assert ckpt.all_steps() == [2, 3]


_KILL_MID_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from gan_jax.checkpointing import Checkpointer

    state = {"w": jnp.arange(1000, dtype=jnp.float32), "step": jnp.int32(1)}
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, state, force=True)
    ckpt.wait()

    # Die by SIGKILL after every array of step 2 is written, just before Orbax commits it.
    async def finalize_then_die(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize_then_die
    ckpt.save(2, {"w": state["w"] * 2, "step": jnp.int32(2)}, force=True)
    ckpt.wait()
    print("not killed")
    """
)


def test_sigkill_mid_save_restarts_from_last_complete_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_MID_SAVE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert "2.orbax-checkpoint-tmp" in leftovers, leftovers  # the kill did hit mid-save

    target = {"w": jnp.zeros(1000, jnp.float32), "step": jnp.int32(0)}
    ckpt = Checkpointer(tmp_path)
    assert ckpt.all_steps() == [1]
    restored = ckpt.restore(target)
    np.testing.assert_array_equal(restored["w"], np.arange(1000, dtype=np.float32))
    assert int(restored["step"]) == 1
    # The run goes on and writes step 2 properly over the leftover.
    assert ckpt.save(2, restored, force=True)
    ckpt.close()
    assert ckpt.all_steps() == [1, 2]
    assert not (tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp").exists()


# ----------------------------------------------------------------------------------------------
# Errors.


def test_different_model_shape_is_a_clear_error(tmp_path, state):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, state, force=True)
    wider = make_state(width=16)
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(CheckpointMismatchError) as info:
        ckpt.restore(wider)
    message = str(info.value)
    # The params come first (the target's order), then optimiser states.
    assert message.splitlines()[1].strip().startswith("g_params/")
    assert "g_params/Dense_0/kernel: saved (4, 8) float32, expected (4, 16) float32" in message
    assert "(22 differing arrays)" in message and "... and 14 more" in message
    assert str(tmp_path / "checkpoints" / "5") in message
    # Nothing was changed: the right model still restores.
    assert_bitwise_equal(ckpt.restore(zeros_like_state(state)), jax.tree.map(np.array, state))
    ckpt.close()


def test_ema_on_versus_off_is_a_clear_error(tmp_path, state):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, state, force=True)
    with pytest.raises(
        CheckpointMismatchError, match=r"g_ema_params/Dense_0/bias: in the checkpoint"
    ):
        restore_for_eval(tmp_path, make_state(ema=False))


def test_dtype_difference_is_a_clear_error(tmp_path, state):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, state, force=True)
    half = state.replace(g_params=jax.tree.map(lambda x: x.astype(jnp.bfloat16), state.g_params))
    with pytest.raises(
        CheckpointMismatchError, match=r"saved \(8,\) float32, expected \(8,\) bfloat16"
    ):
        restore_for_eval(tmp_path, half)


def test_unwritable_workdir_fails_at_construction(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkdirError, match="Cannot write checkpoints to .*a_file/run/checkpoints"):
        Checkpointer(blocker / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_read_only_workdir_fails_at_construction(tmp_path):
    workdir = tmp_path / "ro"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "checkpoints").chmod(0o555)
    try:
        with pytest.raises(WorkdirError, match="Cannot write checkpoints"):
            Checkpointer(workdir)
    finally:
        (workdir / "checkpoints").chmod(0o755)


def test_full_disk_fails_before_training(tmp_path, state, monkeypatch):
    ckpt = Checkpointer(tmp_path, max_to_keep=2)
    ckpt.check_disk_space(state)  # the real disk has room for a few KiB
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        checkpointing.shutil, "disk_usage", lambda _: usage._replace(free=1024 * 1024)
    )
    with pytest.raises(WorkdirError, match=r"Not enough free disk space .* 1\.0 MiB free"):
        ckpt.check_disk_space(state)
    ckpt.close()


def test_no_checkpoint_and_bad_step_errors(tmp_path, state):
    with pytest.raises(NoCheckpointError, match="No checkpoints in .*checkpoints"):
        restore_for_eval(tmp_path, state)
    assert not (tmp_path / "checkpoints").exists()  # evaluation creates nothing

    ckpt = Checkpointer(tmp_path)
    assert ckpt.latest_step() is None
    with pytest.raises(NoCheckpointError, match="No checkpoints in"):
        ckpt.restore(state)
    ckpt.save(1, state, force=True)
    ckpt.save(2, state, force=True)
    ckpt.close()
    with pytest.raises(NoCheckpointError, match=r"step 7 does not exist .*; available: \[1, 2\]"):
        restore_for_eval(tmp_path, state, step=7)
    restored = restore_for_eval(tmp_path, zeros_like_state(state), step=1)
    assert_bitwise_equal(restored, jax.tree.map(np.array, state))


def test_read_only_cannot_save(tmp_path, state):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, force=True)
    reader = Checkpointer(tmp_path, read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        reader.save(2, state, force=True)
    assert reader.restore_config() is None  # saved without a config
    reader.close()
