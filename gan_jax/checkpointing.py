"""Checkpoints of the whole training state, with Orbax behind one small interface.

Layout: `<workdir>/checkpoints/<step>/` holds two Orbax items, `state` (every array of the
TrainState pytree: params, mutable collections, optimiser states, EMA, step) and `config` (the run's
config as JSON, so a checkpoint says what produced it).

Guarantees the training loop relies on:

- Saves are asynchronous: `save` returns once the arrays have been copied off the devices (so the
  caller may donate or overwrite them), and the files are written in a background thread.
- A half-written checkpoint is never taken. On a local or FUSE file system Orbax writes a step
  into `<step>.orbax-checkpoint-tmp/` and renames it to `<step>/` only once every file (and a
  `commit_success.txt` marker) is written; a directory whose name carries the tmp suffix is not a
  step. On GCS, where there is no atomic rename, a step directory counts only once it holds
  `commit_success.txt`. Leftover tmp directories of a killed save are removed when a
  `Checkpointer` is opened.
- Restoring checks the saved shapes and dtypes against the target first and raises
  `CheckpointMismatchError` naming the differing paths, instead of reshaping or failing deep
  inside TensorStore.
- The workdir is checked for writability at construction, and free space can be checked against
  the state's size before training starts (`check_disk_space`).

Every method must be called by all processes of a multi-process run (Orbax synchronises them and
writes shared files from the primary process only).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocp_managers
from orbax.checkpoint.checkpoint_manager import StepAlreadyExistsError

from gan_jax import paths

PyTree = Any
StateT = TypeVar("StateT")

CHECKPOINT_SUBDIR = "checkpoints"
STATE_ITEM = "state"
CONFIG_ITEM = "config"
# How many mismatching leaves an error message lists before summarising the rest.
_MAX_LISTED_MISMATCHES = 8


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
    # Registered up front so a fresh manager can read metadata before any save or restore.
    return {
        STATE_ITEM: ocp.StandardCheckpointHandler(),
        CONFIG_ITEM: ocp.JsonCheckpointHandler(),
    }


class CheckpointMismatchError(ValueError):
    """A checkpoint's saved arrays do not match the state it is restored into."""


class DamagedCheckpointError(CheckpointMismatchError):
    """A checkpoint's files cannot be read (truncated or missing): damaged, not another model.

    A CheckpointMismatchError too, so callers that stop on an unusable checkpoint stop on this.
    """

    def __init__(self, message: str, *, step: int | None = None):
        super().__init__(message)
        self.step = step


class NoReadableCheckpointError(DamagedCheckpointError):
    """Every checkpoint of a run is damaged; nothing was moved, the message says what to do."""


class NoCheckpointError(FileNotFoundError):
    """The requested checkpoint (any, or a given step) does not exist."""


class WorkdirError(OSError):
    """The workdir cannot hold checkpoints: not writable, or not enough free space."""


# ----------------------------------------------------------------------------------------------
# Pure helpers.


def _key_name(entry: Any) -> str:
    """One key-path entry as a plain string, whatever node type produced it.

    Orbax saves dataclass fields and namedtuple fields as dict keys and tuples as lists, so the
    target's `GetAttrKey('g_params')` and the metadata's `DictKey('g_params')` must compare equal.
    """
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_path(path: Sequence[Any]) -> str:
    """A jax key path as a slash-separated string, e.g. `g_opt_state/0/mu/Dense_0/kernel`."""
    return "/".join(_key_name(entry) for entry in path)


def _leaf_shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype | None]:
    shape = tuple(int(d) for d in getattr(leaf, "shape", np.shape(leaf)))
    dtype = getattr(leaf, "dtype", None)
    if dtype is None and not hasattr(leaf, "shape"):
        dtype = np.asarray(leaf).dtype
    return shape, (None if dtype is None else np.dtype(dtype))


def shapes_by_path(tree: PyTree) -> dict[str, tuple[tuple[int, ...], np.dtype | None]]:
    """`{leaf path: (shape, dtype)}` of a pytree of arrays, abstract arrays or array metadata.

    `None` subtrees (e.g. `g_ema_params` with EMA off, optax's `EmptyState`) have no leaves and so
    no entries.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {leaf_path(path): _leaf_shape_dtype(leaf) for path, leaf in flat}


def _describe(shape: tuple[int, ...], dtype: np.dtype | None) -> str:
    return f"{shape} {dtype.name if dtype is not None else '?'}"


def describe_mismatches(
    saved: Mapping[str, tuple[tuple[int, ...], np.dtype | None]],
    expected: Mapping[str, tuple[tuple[int, ...], np.dtype | None]],
) -> list[str]:
    """One human-readable line per leaf that differs between a checkpoint and a target.

    Args:
      saved, expected: `shapes_by_path` of the checkpoint's metadata and of the target state.

    Returns:
      Lines in the target's leaf order (so the first lines name the params, not optimiser
      moments), then the checkpoint-only leaves; empty when every path, shape and dtype agrees.
      A dtype of `None` (unknown) matches any dtype.
    """
    lines = []
    for path in [*expected, *(p for p in saved if p not in expected)]:
        if path not in expected:
            lines.append(f"{path}: in the checkpoint {_describe(*saved[path])}, not in the model")
        elif path not in saved:
            lines.append(
                f"{path}: in the model {_describe(*expected[path])}, not in the checkpoint"
            )
        else:
            (s_shape, s_dtype), (e_shape, e_dtype) = saved[path], expected[path]
            dtype_differs = s_dtype is not None and e_dtype is not None and s_dtype != e_dtype
            if s_shape != e_shape or dtype_differs:
                lines.append(
                    f"{path}: saved {_describe(s_shape, s_dtype)}, "
                    f"expected {_describe(e_shape, e_dtype)}"
                )
    return lines


def tree_nbytes(tree: PyTree) -> int:
    """Total size in bytes of all (global, unsharded) arrays of a pytree; abstract leaves count."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape, dtype = _leaf_shape_dtype(leaf)
        total += math.prod(shape) * (dtype.itemsize if dtype is not None else 4)
    return total


def required_free_bytes(
    checkpoint_bytes: int,
    *,
    max_to_keep: int | None,
    num_existing: int,
    margin: float = 1.5,
    slack_bytes: int = 16 * 2**20,
) -> int:
    """Free bytes a run needs before its first save.

    Orbax deletes old checkpoints only after the new one is committed, so at peak a run holds
    `max_to_keep + 1` checkpoints; those already on disk are paid for. With `max_to_keep=None`
    (keep everything) the total cannot be known, so only the next checkpoint is required.

    Args:
      checkpoint_bytes: size of one checkpoint's arrays (`tree_nbytes(state)`), bytes.
      max_to_keep: checkpoints kept, or None for all.
      num_existing: checkpoints already in the directory.
      margin: factor for metadata, chunking and estimation error; Orbax compresses with zstd, so
        real checkpoints are usually smaller than the raw arrays.
      slack_bytes: fixed room for the small JSON/metadata files, logs and images.
    """
    count = 1 if max_to_keep is None else max(1, max_to_keep + 1 - num_existing)
    return int(math.ceil(checkpoint_bytes * count * margin)) + slack_bytes


def config_to_json(config: Any) -> dict[str, Any]:
    """A JSON-safe dict of a `ml_collections.ConfigDict` or a mapping (non-JSON values as repr)."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config), default=repr))
    raise TypeError(f"config must be a ConfigDict or a mapping, got {type(config).__name__}")


def _format_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _is_local(path: epath.Path) -> bool:
    return "://" not in str(path)


def _short_reason(error: BaseException) -> str:
    """The first line of an exception, short enough for a one-line message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]


def move_aside(directory: epath.PathLike, step: int) -> epath.Path:
    """Renames checkpoint `<directory>/<step>` to `<step>.damaged-<UTC time>`; never deletes.

    Orbax takes neither that name for a step nor for a leftover tmp directory, so it is kept as
    it is, out of the way.
    """
    source = epath.Path(directory) / str(step)
    target = source.parent / f"{step}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    source.rename(target)
    return target


def check_writable(directory: epath.PathLike) -> epath.Path:
    """Creates `directory` if needed and proves it writable by writing and deleting a file.

    Raises:
      WorkdirError: naming the directory and the operating system's reason.
    """
    directory = epath.Path(directory)
    # A unique name: every process of a multi-process run may probe the same shared directory.
    probe = directory / f".write_probe_{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(
            f"Cannot write checkpoints to {directory}: {e.strerror or e}. "
            "Choose a --workdir this user can create and write."
        ) from e
    return directory


# ----------------------------------------------------------------------------------------------
# The checkpointer.


def _step_list(steps: Sequence[int]) -> str:
    steps = sorted(steps)
    return (
        str(steps) if len(steps) <= 20 else f"[{steps[0]}, ..., {steps[-1]}] ({len(steps)} steps)"
    )


class Checkpointer:
    """Saves and restores a training-state pytree in `<workdir>/checkpoints`.

    Usage in a training loop::

        ckpt = Checkpointer(workdir, max_to_keep=3, save_interval_steps=1000)
        ckpt.check_disk_space(state)
        if ckpt.latest_step() is not None:
            state = ckpt.restore(state)
        for ...:
            state, metrics = train_step(state, ...)
            ckpt.save(step, state, config=config)  # saves only every 1000 steps
        ckpt.save(step, state, config=config, force=True)
        ckpt.close()

    Args:
      workdir: the run's directory; checkpoints go to `<workdir>/checkpoints`. Local paths
        (relative ones and `~` included) and URLs Orbax's `epath` understands (`gs://...`) work.
      max_to_keep: keep the newest this many checkpoints (None: keep all).
      save_interval_steps: `save` without `force` saves when `step % save_interval_steps == 0`
        (or when JAX's preemption sync point is reached); 0 saves only with `force=True`.
      async_save: write in a background thread (Orbax's async checkpointing).
      read_only: open existing checkpoints for restoring only; nothing is created, written or
        deleted (for evaluation while a run may still be writing).

    Raises:
      WorkdirError: the checkpoint directory cannot be created or written (not read-only).
      NoCheckpointError: read-only and the checkpoint directory does not exist.
    """

    def __init__(
        self,
        workdir: epath.PathLike,
        *,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 0,
        async_save: bool = True,
        read_only: bool = False,
    ):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
        if save_interval_steps < 0:
            raise ValueError(f"save_interval_steps must be >= 0, got {save_interval_steps}")
        self._max_to_keep = max_to_keep
        self._read_only = read_only
        # Orbax refuses relative paths; `~` and relative paths are the user's (gan_jax.paths).
        self._directory = epath.Path(paths.resolve(workdir)) / CHECKPOINT_SUBDIR
        if read_only:
            if not self._directory.exists():
                raise NoCheckpointError(
                    f"No checkpoints in {self._directory} (the directory does not exist)."
                )
            # save_interval_steps and create as Orbax sets them for a reader (else it warns).
            options = ocp.CheckpointManagerOptions(
                read_only=True, save_interval_steps=0, create=False
            )
            self._manager = ocp.CheckpointManager(
                self._directory, item_handlers=_item_handlers(), options=options
            )
            return
        check_writable(self._directory)
        policies: list[ocp_managers.SaveDecisionPolicy] = [
            ocp_managers.PreemptionCheckpointingPolicy()
        ]
        if save_interval_steps > 0:
            policies.append(ocp_managers.FixedIntervalPolicy(save_interval_steps))
        options = ocp.CheckpointManagerOptions(
            # No InitialSavePolicy: a save happens only on the interval or when forced.
            save_decision_policy=ocp_managers.AnySavePolicy(policies),
            preservation_policy=ocp_managers.LatestN(n=max_to_keep),
            enable_async_checkpointing=async_save,
            # Remove tmp directories a killed save left behind (they are never read anyway); this
            # runs in the background and the first save waits for it.
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self._directory, item_handlers=_item_handlers(), options=options
        )

    # -- queries -------------------------------------------------------------------------------

    @property
    def directory(self) -> epath.Path:
        """`<workdir>/checkpoints`."""
        return self._directory

    def all_steps(self) -> list[int]:
        """Checkpoint steps, ascending.

        Includes a save this process started that may still be in flight (Orbax lists a step
        from the moment it is started); `wait()` commits it. Restoring waits by itself.
        """
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest step (see `all_steps`), or None when there is none."""
        return self._manager.latest_step()

    def should_save(self, step: int) -> bool:
        """Whether `save(step, ...)` without `force` would write a checkpoint."""
        return self._manager.should_save(step)

    # -- saving --------------------------------------------------------------------------------

    def check_disk_space(self, state: PyTree, *, margin: float = 1.5) -> None:
        """Raises `WorkdirError` unless the disk can hold the checkpoints this run will write.

        Call before training starts. Skipped for non-local paths (`gs://...`), whose free space
        cannot be asked for.

        Args:
          state: the training state, concrete or abstract (only shapes and dtypes are read).
          margin: see `required_free_bytes`.
        """
        if not _is_local(self._directory):
            return
        need = required_free_bytes(
            tree_nbytes(state),
            max_to_keep=self._max_to_keep,
            num_existing=len(self.all_steps()),
            margin=margin,
        )
        free = shutil.disk_usage(os.fspath(self._directory)).free
        if free < need:
            raise WorkdirError(
                f"Not enough free disk space for checkpoints in {self._directory}: "
                f"{_format_bytes(free)} free, {_format_bytes(need)} needed "
                f"({_format_bytes(tree_nbytes(state))} per checkpoint, "
                f"max_to_keep={self._max_to_keep}). Free space or choose another --workdir."
            )

    def save(self, step: int, state: PyTree, *, config: Any = None, force: bool = False) -> bool:
        """Saves `state` (and `config` as JSON) as checkpoint `step`, asynchronously.

        Returns once the arrays are copied to host memory; the caller may then donate them.
        Without `force`, saves only when `should_save(step)`. A step that already has a
        committed checkpoint is never overwritten (e.g. a SIGTERM arriving just after an
        interval save): `save` then returns False.

        Args:
          step: the training step this state is at (usually `int(state.step)`).
          state: a pytree of arrays.
          config: a `ConfigDict` or mapping stored beside the state, or None.
          force: save regardless of the interval.

        Returns:
          Whether a save was started.
        """
        if self._read_only:
            raise ValueError(f"{self._directory} was opened read-only; it cannot save.")
        step = int(step)
        if not force and not self._manager.should_save(step):
            return False
        if step in self._manager.all_steps():
            return False
        items = {STATE_ITEM: ocp.args.StandardSave(state)}
        if config is not None:
            items[CONFIG_ITEM] = ocp.args.JsonSave(config_to_json(config))
        try:
            return self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        except StepAlreadyExistsError:
            # Raced with an async save of the same step that committed meanwhile.
            return False

    def wait(self) -> None:
        """Blocks until every started save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's threads."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- restoring -----------------------------------------------------------------------------

    def _resolve_step(self, step: int | None) -> int:
        # A save of this process may still be in flight; read only committed checkpoints.
        self._manager.wait_until_finished()
        steps = self.all_steps()
        if not steps:
            raise NoCheckpointError(f"No checkpoints in {self._directory}.")
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise NoCheckpointError(
                f"Checkpoint step {step} does not exist in {self._directory}; "
                f"available: {_step_list(steps)}."
            )
        return int(step)

    def check_compatible(self, target_state: PyTree, step: int | None = None) -> None:
        """Raises `CheckpointMismatchError` unless checkpoint `step` fits `target_state`.

        Reads only the saved metadata (paths, shapes, dtypes), not the arrays.
        """
        step = self._resolve_step(step)
        step_dir = self._directory / str(step)
        try:
            metadata = self._manager.item_metadata(step)[STATE_ITEM]
        except Exception as e:  # Orbax raises various types for unreadable or foreign dirs.
            raise DamagedCheckpointError(
                f"{step_dir} cannot be read (its '{STATE_ITEM}' metadata: {_short_reason(e)})",
                step=step,
            ) from e
        if metadata is None:
            raise DamagedCheckpointError(
                f"{step_dir} cannot be read (no '{STATE_ITEM}' metadata)", step=step
            )
        saved_tree = getattr(metadata, "tree", metadata)
        lines = describe_mismatches(shapes_by_path(saved_tree), shapes_by_path(target_state))
        if lines:
            listed = lines[:_MAX_LISTED_MISMATCHES]
            if len(lines) > len(listed):
                listed.append(f"... and {len(lines) - len(listed)} more")
            config_path = step_dir / CONFIG_ITEM
            see_config = f" (see {config_path})" if config_path.exists() else ""
            raise CheckpointMismatchError(
                f"The checkpoint at {step_dir} does not match the model being restored "
                f"({len(lines)} differing arrays):\n  "
                + "\n  ".join(listed)
                + f"\nIt was written by a different model or config{see_config}. "
                "Use a new --workdir, or the config that wrote it."
            )

    def restore(self, target_state: StateT, step: int | None = None) -> StateT:
        """Restores checkpoint `step` (default: the latest) into the structure of `target_state`.

        Args:
          target_state: a state of the same model: concrete arrays, or `jax.ShapeDtypeStruct`s
            (e.g. from `jax.eval_shape`). Restored arrays take each leaf's shape, dtype and,
            when it has one, sharding; abstract leaves without a sharding get the saved one.
          step: the step to restore; None for the latest.

        Returns:
          A pytree like `target_state`, holding the saved values bit for bit.

        Raises:
          NoCheckpointError: no checkpoint, or no checkpoint at `step`.
          CheckpointMismatchError: the saved arrays differ in paths, shapes or dtypes.
        """
        step = self._resolve_step(step)
        self.check_compatible(target_state, step)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target_state)}),
            )
        except Exception as e:  # TensorStore's errors for truncated or missing array files
            raise DamagedCheckpointError(
                f"{self._directory / str(step)} cannot be read ({_short_reason(e)})", step=step
            ) from e
        return restored[STATE_ITEM]

    def restore_newest_readable(self, target_state: StateT) -> StateT:
        """Restores the newest checkpoint that can be read, moving newer damaged ones aside.

        Tries the steps from the newest down. Damaged ones (truncated or missing files) newer
        than the first readable one are renamed to `<step>.damaged-<time>` (`move_aside`, never
        deleted) and logged with the reason; nothing is moved when none is readable.

        Raises:
          NoCheckpointError: there is no checkpoint.
          NoReadableCheckpointError: none can be read; names the directory and what to do.
          CheckpointMismatchError: a readable checkpoint of another model or shape.
        """
        if self._read_only:
            raise ValueError(f"{self._directory} was opened read-only; nothing can be moved.")
        self._resolve_step(None)  # waits for saves in flight; NoCheckpointError if none
        damaged: list[DamagedCheckpointError] = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(target_state, step)
            except DamagedCheckpointError as e:
                damaged.append(e)
                continue
            for error in damaged:
                if jax.process_index() != 0:  # one rename for the whole (multi-process) run
                    continue
                moved = move_aside(self._directory, error.step)
                logging.warning(
                    "checkpoint %d cannot be read; moved it aside to %s and continuing from step "
                    "%d. Reason: %s",
                    error.step,
                    moved,
                    step,
                    error,
                )
            if damaged:
                self._manager.reload()  # forget the moved steps
            return restored
        raise NoReadableCheckpointError(no_readable_message(self._directory, damaged))

    def restore_config(self, step: int | None = None) -> dict[str, Any] | None:
        """The config saved with checkpoint `step` (default: latest) as a dict, or None."""
        step = self._resolve_step(step)
        if not (self._directory / str(step) / CONFIG_ITEM).exists():
            return None
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()})
            )
        except Exception as e:
            raise DamagedCheckpointError(
                f"{self._directory / str(step)} cannot be read (its '{CONFIG_ITEM}' item: "
                f"{_short_reason(e)})",
                step=step,
            ) from e
        return restored[CONFIG_ITEM]


def no_readable_message(directory: epath.PathLike, damaged: Sequence[Exception]) -> str:
    """The one message for a run whose every checkpoint is damaged: which, why, what to do."""
    return (
        f"No checkpoint in {directory} can be read: "
        + "; ".join(str(e) for e in damaged)
        + ". Nothing was moved or deleted. Restore the checkpoints from a copy, or start the run "
        f"afresh: move {directory} aside (training then starts from step 0) or use a new "
        "--workdir."
    )


def restore_for_eval(
    workdir: epath.PathLike, target_state: StateT, step: int | None = None
) -> StateT:
    """Restores a run's checkpoint (default: the latest) without opening it for writing.

    For evaluation and sampling scripts; nothing in the workdir is created or deleted.

    Raises:
      NoCheckpointError: "No checkpoints in <dir>", or "step S does not exist; available: [...]".
      CheckpointMismatchError: see `Checkpointer.restore`.
    """
    with Checkpointer(workdir, read_only=True) as reader:
        return reader.restore(target_state, step)
