"""The training loop: `train_and_evaluate(config, workdir)`.

One run = one workdir, held by a lock file while the run lives (gan_jax.workdir_lock): a second
trainer on the same workdir stops before writing anything and names the first. On start it
restores the latest checkpoint in `<workdir>/checkpoints` when there is one and continues from
that step; otherwise it initialises from `config.seed`. Each dispatch runs up to
`config.steps_per_dispatch` fused steps on the device-resident dataset (see `gan_jax.fused`);
logs, sample grids, checkpoints and evaluations happen between dispatches, on multiples of their
intervals.

Quality during training: with `eval_every` > 0, every eval_every steps and at the last step a
quick evaluation scores `eval_every_num_samples` samples (FID, KID, precision, recall,
classifier score, against the same cached reference as the final evaluation) and logs them as
`quality/*` records in metrics.jsonl and TensorBoard, with `quality/train_minutes`: the training
wall time up to that step, the evaluations' own time excluded, so the curves show quality per
minute of training. The run's end draws them into quality_curves.png (gan_jax.plots) beside
loss_curves.png. The full evaluation of the final generator (`eval_num_samples`, `eval/*` and
eval/step_<S>.json) is a separate thing: fewer samples bias FID upwards, so the two are not mixed
under one tag.

Several seeds: with `config.num_seeds` = S > 1 the loop trains S independent runs in this one
process, run i exactly the run of `config.seed + i` alone (gan_jax.seeds; `_Runs` holds what
differs from one run). The checkpoints hold the stacked state (every leaf with a leading axis of
S; a workdir of another S is refused), metrics.jsonl and TensorBoard each run's metrics as
`seed_<s>/<name>` and their mean as `<name>`, the sample grid a row per run; quick evaluations
score run 0, the final evaluation every run (mean ± standard error, `evaluate.combine_runs`).

Exact resume: the state holds every array that changes during training, the batch of step s and
the noise of step s are pure functions of (config.seed, s), so a run killed and resumed from the
checkpoint at step N ends bitwise identical to one that never stopped (tests/test_train_resume.py
checks this for both model families, after SIGTERM and after SIGKILL, through the CLI). It also
needs the same dispatches: how XLA compiles a k-step dispatch may change the last bit of a result
(when gan_jax.fused unrolls the steps, as it does for convolutions on CPU, the dcgan's 8 steps as
one dispatch and as 4 + 4 differ by one ulp; scanned steps agree), so dispatch boundaries lie on
a grid fixed by the config
(`_dispatch_length`), never on where a run happened to start. Keep `steps_per_dispatch` and the
intervals when resuming; a resume logs every config key that differs from the checkpoint's
(`num_steps` also changes learning-rate schedules other than "constant").

SIGTERM (TPU VM preemption) and SIGINT (Ctrl-C) finish the dispatch in flight, save a checkpoint
at that step and return normally; a second SIGINT raises KeyboardInterrupt at once. In a
multi-process run the processes agree after every dispatch whether any of them was signalled, so
all stop and save at the same step. A NaN or Inf metric stops the run before anything of that
dispatch is saved and names the metric and step: the last good checkpoint stays the latest.

Workdirs on a bucket (`gs://...`): checkpoints go there directly (Orbax); the logs, sample grids
and plots are written to a local directory (`local_log_dir`) and copied to the workdir after every
checkpoint and when the run ends (this needs epath's GCS support: `gcsfs`, see
requirements-tpu.txt). On resume, metrics.jsonl is fetched back first so the log continues.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax import (
    checkpointing,
    data,
    fused,
    optim,
    parallel,
    paths,
    plots,
    seeds,
    workdir_lock,
    writers,
    xla_options,
)
from gan_jax import config as config_lib
from gan_jax import models as models_lib
from gan_jax.data import clusters
from gan_jax.state import TrainState, create_train_state, sampling_variables

GRID_FILE = "samples"  # images/<GRID_FILE>_<step>.png
CONFIG_FILE = "config.json"
LOSS_PLOT_FILE = "loss_curves.png"
QUALITY_PLOT_FILE = "quality_curves.png"
EVAL_DIR = "eval"  # eval/step_<S>.json


class NonFiniteMetricError(FloatingPointError):
    """A loss or other metric became NaN or Inf; the run stopped at that step."""


# ----------------------------------------------------------------------------------------------
# Signals.


class _StopRequest:
    """Set by SIGTERM / SIGINT; the loop checks it between dispatches."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: Any) -> None:
        del frame
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            # Ctrl-C twice: stop now, without waiting for the dispatch and the checkpoint.
            raise KeyboardInterrupt
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            logging.warning(
                "%s received: stopping after the current dispatch and saving a checkpoint%s",
                self.signal_name,
                " (press Ctrl-C again to stop at once)" if signum == signal.SIGINT else "",
            )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    request = _StopRequest()
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request.handle)
    except ValueError:  # not the main thread: signals cannot be caught here
        logging.warning("not in the main thread: SIGTERM/SIGINT will not save a checkpoint")
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process; every process must call this at the same point."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils  # local: only multi-process runs need it

    return bool(np.any(multihost_utils.process_allgather(np.array(flag, np.int32))))


# ----------------------------------------------------------------------------------------------
# Pure helpers.


def _first_non_finite(metrics: dict[str, np.ndarray], first_step: int) -> tuple[str, int] | None:
    """(metric name, step) of the earliest NaN/Inf in per-step metrics [k], or None.

    Index i of a dispatch that started at `first_step` is the update that produced step
    `first_step + i + 1`, the step its metrics are logged under.
    """
    worst = None
    for name in sorted(metrics):
        bad = np.flatnonzero(~np.isfinite(metrics[name]))
        if bad.size and (worst is None or bad[0] < worst[1]):
            worst = (name, int(bad[0]))
    return None if worst is None else (worst[0], first_step + worst[1] + 1)


def _dispatch_length(step: int, config: ml_collections.ConfigDict) -> int:
    """Steps from `step` to the next dispatch boundary.

    The boundaries are the multiples of steps_per_dispatch and of every interval (log, sample,
    checkpoint, eval), and num_steps: a grid fixed by the config, whatever step a run started
    from. So a run resumed from any checkpoint (or stopped by a signal, always on a boundary)
    makes the same dispatches as a run that never stopped, even one with another num_steps.
    """
    length = min(
        config.steps_per_dispatch - step % config.steps_per_dispatch, config.num_steps - step
    )
    for interval in (
        config.log_every,
        config.sample_every,
        config.checkpoint_every,
        config.eval_every,
    ):
        if interval > 0:
            length = min(length, interval - step % interval)
    return length


def _due(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: saved -> current` for every (dotted) key whose value differs, JSON-compared."""
    saved, current = _flatten(saved), _flatten(current)
    lines = []
    for key in sorted(saved.keys() | current.keys()):
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(old, list | tuple) and isinstance(new, list | tuple):
            old, new = list(old), list(new)
        if old != new:
            lines.append(f"{key}: {old!r} -> {new!r}")
    return lines


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL such as gs://bucket/run rather than a local path."""
    return paths.is_url(path)


def local_log_dir(workdir: str) -> Path:
    """Where the logs of a remote workdir are written before they are copied to it.

    $GAN_JAX_LOCAL_LOGDIR/<name> when set, else <tmp>/gan_jax_logs/<name>; the name is readable
    and unique per workdir.
    """
    root = os.environ.get("GAN_JAX_LOCAL_LOGDIR") or os.path.join(
        tempfile.gettempdir(), "gan_jax_logs"
    )
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", workdir.split("://", 1)[-1]).strip("_")[-80:]
    digest = hashlib.sha256(workdir.encode()).hexdigest()[:8]
    return Path(root) / f"{readable}_{digest}"


class LogMirror:
    """Copies the files under a local log directory to a (remote) workdir, changed files only.

    Args:
      local: the directory the writers write to.
      remote: the workdir (any `epath` path: gs://..., or local in tests).
    """

    def __init__(self, local: Path, remote: epath.PathLike):
        self.local = Path(local)
        self.remote = epath.Path(remote)
        self._copied: dict[Path, tuple[int, int]] = {}

    def fetch(self, name: str) -> bool:
        """Copies `remote/name` to `local/name` (e.g. metrics.jsonl on resume); whether it was."""
        source = self.remote / name
        if not source.exists():
            return False
        target = self.local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        stat = target.stat()
        self._copied[target] = (stat.st_size, stat.st_mtime_ns)
        return True

    def sync(self) -> list[str]:
        """Uploads every file new or changed since the last sync; returns their relative names."""
        copied = []
        if not self.local.exists():
            return copied
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime_ns)
            if self._copied.get(path) == signature:
                continue
            name = path.relative_to(self.local).as_posix()
            target = self.remote / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
            self._copied[path] = signature
            copied.append(name)
        return copied


# ----------------------------------------------------------------------------------------------
# Pieces of the loop.


def _load_training_split(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """The split the loop samples from: the dataset's training images, or with
    config.stack_on_the_fly the MNIST digits that each step stacks into its images."""
    image_shape = tuple(config.image_shape)
    dataset = config.dataset
    if config_lib.digits_per_image(config) > 1:
        dataset, image_shape = "mnist", (*image_shape[:2], 1)
    images, labels = data.load_split(
        dataset,
        "train",
        data_dir=config.data_dir or None,
        image_shape=image_shape,
        seed=config.dataset_seed,
        mnist_dir=config.mnist_dir or None,
        # Processes of one run may share the data directory: none rebuilds it behind another's
        # back (they stop with the message that says how to rebuild it).
        repair=jax.process_count() == 1,
    )
    if tuple(images.shape[1:]) != image_shape:
        raise config_lib.ConfigError(
            f"config.image_shape is {tuple(config.image_shape)} but config.dataset="
            f"{config.dataset!r} holds images of shape {tuple(images.shape[1:])}"
        )
    if config_lib.setting(config, "label_source") == "kmeans":
        started = time.perf_counter()
        labels = clusters.balanced_kmeans(images, int(config.num_classes), seed=config.dataset_seed)
        if jax.process_count() > 1:
            # Hosts on other CPUs may break a near tie differently: every process takes the
            # first process's clusters, so the global batch has one labelling.
            from jax.experimental import multihost_utils  # noqa: PLC0415

            labels = np.asarray(multihost_utils.broadcast_one_to_all(labels))
        logging.info(
            "labels: %d balanced k-means clusters of the training images (%.1f s)",
            config.num_classes,
            time.perf_counter() - started,
        )
    elif config.num_classes > 0 and int(labels.max()) >= config.num_classes:
        raise config_lib.ConfigError(
            f"config.num_classes={config.num_classes} but {config.dataset!r} has labels up to "
            f"{int(labels.max())}; set config.num_classes to {int(labels.max()) + 1}"
        )
    return images, labels


def _eval_features(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The feature networks of the run's evaluations: config.eval_features (comma-separated),
    or the dataset's default. The first scores every evaluation; the others score the final
    one beside it ("classifier,inception": Inception FID beside an MNIST run's classifier)."""
    from gan_jax.evaluation import feature_networks  # noqa: PLC0415 (evaluation stack)

    chosen = [f.strip() for f in str(config_lib.setting(config, "eval_features")).split(",")]
    chosen = [f for f in chosen if f]
    return tuple(chosen) or (feature_networks.default_features(config.dataset),)


def _check_evaluable(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError before training when the evaluations the config asks for cannot run:
    the shipped feature network scores 28x28 images only (1 channel, 3 for Stacked MNIST), and
    Inception-v3 needs its weights file (loaded here, so a run never trains for hours to find
    it missing at its first evaluation)."""
    evaluates = config.eval_at_end or config.eval_every > 0
    if not evaluates or config.dataset in config_lib.POINT_DATASETS:
        return
    from gan_jax.evaluation import feature_networks, inception  # noqa: PLC0415

    all_features = _eval_features(config)
    for features in all_features:
        try:
            feature_networks.check_features(features, config.dataset)
        except config_lib.ConfigError as error:
            raise config_lib.ConfigError(f"config.eval_features: {error}") from None
    if len(set(all_features)) != len(all_features):
        raise config_lib.ConfigError(
            f"config.eval_features names a network twice: {','.join(all_features)!r}"
        )
    if "inception" in all_features:
        try:
            feature_networks.load_inception(config_lib.setting(config, "inception_weights") or None)
        except (inception.WeightsUnavailableError, inception.WeightsError) as error:
            raise config_lib.ConfigError(
                f"{error} Or turn evaluation off: --config.eval_at_end=False --config.eval_every=0."
            ) from None
    if "classifier" not in all_features:
        return
    height, width = tuple(config.image_shape)[:2]
    if (height, width) != (28, 28):
        raise config_lib.ConfigError(
            f"config.image_shape is {tuple(config.image_shape)}, but the feature network that "
            "evaluates MNIST runs scores 28x28 images; keep (28, 28, C), or turn evaluation off "
            "with --config.eval_at_end=False --config.eval_every=0"
        )


def _grid_sampler(models: models_lib.Models, config: ml_collections.ConfigDict, key: jax.Array):
    """A jitted function of the state giving the fixed-latent sample grid, [n, H, W, C].

    For a stack of S runs `key` holds each run's grid key [S] and the function takes the stacked
    state: [S * r, H, W, C], run i's first r = ceil(sqrt(n)) samples (the first row of its own
    grid) at rows i * r to (i + 1) * r.
    """
    if key.ndim == 1:
        return _stacked_grid_sampler(models, config, key)
    z = jax.random.normal(key, (config.num_grid_samples, config.latent_dim))
    labels = None
    if config.num_classes > 0:  # one row per class where the grid allows
        labels = np.arange(config.num_grid_samples, dtype=np.int32) % config.num_classes

    @xla_options.jit
    def sample(state: TrainState) -> jax.Array:
        g_params, g_state = sampling_variables(state, models=models, config=config)
        images, _ = models_lib.apply_model(
            models.generator, g_params, g_state, z, labels, train=False
        )
        return images

    return sample


def _scatter_sampler(models: models_lib.Models, config: ml_collections.ConfigDict, key: jax.Array):
    """For the 2-D mixtures: a jitted function of the state giving every run's samples at the
    fixed latents of its grid, [S, num_grid_samples, 2] (S = 1 for one run)."""
    if key.ndim == 1:
        return _per_run_sampler(models, config, key, num_samples=config.num_grid_samples)
    one_run = _grid_sampler(models, config, key)
    return lambda state: one_run(state)[None]


def _grid_row_length(config: ml_collections.ConfigDict) -> int:
    """Samples in a row of the grid: ceil(sqrt(num_grid_samples)), as writers.image_grid tiles."""
    return math.ceil(math.sqrt(config.num_grid_samples))


def _stacked_grid_sampler(models, config, keys: jax.Array):
    """`_grid_sampler` for a stack: one row per run (see there)."""
    per_run = _per_run_sampler(models, config, keys, num_samples=_grid_row_length(config))

    def sample(state: TrainState) -> jax.Array:
        images = per_run(state)  # [S, row, H, W, C]
        return images.reshape((-1,) + images.shape[2:])

    return sample


def _per_run_sampler(models, config, keys: jax.Array, *, num_samples: int):
    """A jitted function of a stacked state giving each run's first `num_samples` grid samples,
    [S, num_samples, ...]: run i's generator at the latents its own grid key [i] gives."""
    z = jax.vmap(lambda key: jax.random.normal(key, (config.num_grid_samples, config.latent_dim)))
    z = z(keys)[:, :num_samples]  # [S, num_samples, latent_dim]
    labels = None
    if config.num_classes > 0:
        labels = np.arange(num_samples, dtype=np.int32) % config.num_classes

    def sample_run(state: TrainState, run_z: jax.Array) -> jax.Array:
        g_params, g_state = sampling_variables(state, models=models, config=config)
        samples, _ = models_lib.apply_model(
            models.generator, g_params, g_state, run_z, labels, train=False
        )
        return samples

    @xla_options.jit
    def sample(state: TrainState) -> jax.Array:
        return jax.vmap(sample_run)(state, z)

    return sample


def _evaluate(
    state, models, config, writer, *, features: str | None = None, **options
) -> dict[str, Any] | None:
    """Scores the sampling generator with a feature network (`features`, default the run's
    first, `_eval_features`: the MNIST classifier for MNIST and Stacked MNIST, Inception-v3 for
    other image datasets), or with the mode-collapse metrics of the 2-D mixtures
    (gan_jax.evaluation.mixtures).

    `options` go to `evaluate.evaluate_generator` (num_samples, ...). Runs on process 0 alone,
    on host copies of the generator (the other processes go on to the next dispatch and wait
    there), so processes sharing a machine never race on the caches. None elsewhere.
    """
    if not writer.active:
        return None
    from gan_jax import evaluate  # local: loads the feature network only when evaluating
    from gan_jax.evaluation import feature_networks  # noqa: PLC0415

    network = None
    if config.dataset not in config_lib.POINT_DATASETS:
        network = feature_networks.load_network(
            features or _eval_features(config)[0],
            inception_weights=config_lib.setting(config, "inception_weights") or None,
        )

    host = jax.device_get(
        state.replace(d_params=None, d_state=None, g_opt_state=None, d_opt_state=None)
    )
    g_params, g_state = sampling_variables(host, models=models, config=config)
    sample_fn = evaluate.generator_sampler(g_params, g_state, config, models=models)
    return evaluate.evaluate_generator(
        sample_fn,
        dataset=config.dataset,
        pixel_range=models.pixel_range,
        data_dir=config.data_dir or None,
        data_seed=config.dataset_seed,
        image_shape=evaluate.reference_image_shape(config),
        network=network,
        **options,
    )


def _evaluate_quality(state, models, config, writer, step: int, train_seconds: float) -> None:
    """The quick evaluation every `eval_every` steps: one `quality/*` record in metrics.jsonl.

    `config.eval_every_num_samples` samples against the same cached reference as the final
    evaluation, and the real-data floor at that sample count (cached after the first time).
    Besides the metrics the record holds `quality/train_minutes` (the training wall time so far,
    evaluations excluded: the curves show quality per minute of training) and
    `quality/eval_seconds` (what this evaluation cost). No eval/step_<S>.json: that is the full
    evaluation's.
    """
    num_samples = int(config.eval_every_num_samples)
    result = _evaluate(
        state, models, config, writer, num_samples=num_samples, floor_num_samples=num_samples
    )
    if result is None:
        return
    from gan_jax import evaluate  # local, as in _evaluate

    scalars = evaluate.summary_scalars(result, prefix=plots.QUALITY_PREFIX)
    scalars[plots.QUALITY_PREFIX + "num_samples"] = result["num_samples"]
    scalars[plots.TRAIN_MINUTES] = train_seconds / 60.0
    scalars[plots.QUALITY_PREFIX + "eval_seconds"] = result["seconds"]
    writer.write(step, scalars)
    shown = (
        "fid",
        "classifier_score",
        "inception_score",
        "modes_covered",
        "high_quality",
        "reverse_kl",
    )
    logging.info(
        "step %d: %s on %d samples (%.1f s)",
        step,
        ", ".join(f"{key} {result[key]:.4g}" for key in shown if key in result),
        num_samples,
        result["seconds"],
    )


def _evaluate_final(state, models, config, log_dir: Path, step: int, writer, runs: _Runs) -> None:
    """The full evaluation of the final generator: `eval/*` scalars and eval/step_<S>.json.

    A stack of S runs: each run is scored on its own `eval_num_samples` samples; `eval/<metric>`
    and the table give the mean over runs (± its standard error in the table, `eval/<metric>_sem`
    in the log), `eval/seed_<s>/<metric>` each run's score, and the json all of it
    (`evaluate.combine_runs`). Every further network of config.eval_features scores the same
    generator beside it: `eval/<network>/<metric>` and eval/step_<S>_<network>.json.
    """
    all_features = (None,)
    if config.dataset not in config_lib.POINT_DATASETS:
        all_features = _eval_features(config)
    for index, features in enumerate(all_features):
        _evaluate_final_with(
            state, models, config, log_dir, step, writer, runs, features, primary=index == 0
        )


def _evaluate_final_with(
    state, models, config, log_dir, step, writer, runs, features, *, primary: bool
) -> None:
    """`_evaluate_final` with one feature network: the primary one writes eval/<metric> and
    step_<S>.json, a further one eval/<network>/<metric> and step_<S>_<network>.json."""
    suffix = "" if primary else f"_{features}"
    prefix = "eval/" if primary else f"eval/{features}/"
    options = dict(num_samples=config.eval_num_samples or None, features=features)
    if runs.stacked:
        results = [
            _evaluate(seeds.unstack(state, i), models, config, writer, **options)
            for i in range(runs.num_seeds)
        ]
    else:
        results = [_evaluate(state, models, config, writer, **options)]
    if results[0] is None:
        return
    from gan_jax import evaluate  # local, as in _evaluate

    result = (
        evaluate.combine_runs(results, run_seeds=runs.seed_values) if runs.stacked else results[0]
    )
    result.update(step=step, model=config.model)
    scalars = {
        f"{prefix}{k}": v for k, v in result.items() if isinstance(v, int | float) and k != "step"
    }
    for name, sem in result.get("sem", {}).items():
        scalars[f"{prefix}{name}_sem"] = sem
        scalars.update({f"{prefix}seed_{r['run_seed']}/{name}": r[name] for r in result["runs"]})
    writer.write(step, scalars)
    path = log_dir / EVAL_DIR / f"step_{step}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    logging.info("evaluation at step %d:\n%s", step, evaluate.format_table(result))


def _logged_train_seconds(metrics_path: Path) -> float:
    """The last `train_time_s` a run's metrics.jsonl holds (0 if none): where a resumed run's
    training clock continues from. The time after that record, up to the checkpoint, is lost."""
    times = [r["train_time_s"] for r in writers.read_metrics(metrics_path) if "train_time_s" in r]
    return float(times[-1]) if times else 0.0


def _warn_on_config_change(checkpointer: checkpointing.Checkpointer, config) -> None:
    saved = checkpointer.restore_config()
    if saved is None:
        return
    changed = config_differences(saved, checkpointing.config_to_json(config))
    if changed:
        logging.warning(
            "resuming with config changes; the run continues exactly as one that never stopped "
            "only if none of them shapes training (num_steps does, for learning-rate schedules "
            "other than 'constant'):\n  %s",
            "\n  ".join(changed),
        )


@contextlib.contextmanager
def _hold_workdir(workdir: str) -> Iterator[None]:
    """Holds `workdir` for this run (see gan_jax.workdir_lock) until the block exits.

    Process 0 alone takes the lock, for the whole run; every process then learns whether it got
    it, so all of them stop together when another run holds the workdir.
    """
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = workdir_lock.acquire(workdir)
        except checkpointing.WorkdirError as e:
            error = e
    if _any_process(error is not None):
        if error is not None:
            raise error
        raise workdir_lock.WorkdirHeldError(
            f"process 0 could not take {workdir} for this run; its log says why."
        )
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


# ----------------------------------------------------------------------------------------------
# One run, or S runs trained together (config.num_seeds, gan_jax.seeds).


class _Runs:
    """What differs between one run and a stack of S = config.num_seeds runs: the mesh, the
    state's layout and initialisation, the fused step and its keys, and the metrics' names.

    One run (S = 1) takes exactly the path solo runs always took: a data-parallel mesh over all
    devices, the state replicated, `gan_jax.fused`. A stack: a ("seeds", "data") mesh over this
    process's devices (`seeds.seed_mesh`), the stacked state split over "seeds", run i trained
    as `config.seed + i` alone (`seeds.fused_train_step`). One process only: a multi-process
    stack would need every process to agree on the seed layout, which nothing needs yet.
    """

    def __init__(self, config: ml_collections.ConfigDict, models, optimizers):
        self.num_seeds = int(config.num_seeds)
        self.stacked = self.num_seeds > 1
        self._config, self._models, self._optimizers = config, models, optimizers
        if not self.stacked:
            self.mesh = parallel.data_mesh()
            parallel.check_divisible(config.batch_size, self.mesh.size)
            self._init_key, train_key, self.grid_key = jax.random.split(
                jax.random.key(config.seed), 3
            )
            self._step_keys = (train_key,)
            self._sharding = NamedSharding(self.mesh, P())
            self.seed_values = [int(config.seed)]
            return
        if jax.process_count() > 1:
            raise config_lib.ConfigError(
                f"config.num_seeds={self.num_seeds}: several runs train together in one process "
                f"only, and this run has {jax.process_count()} processes; start one process per "
                "host with --config.num_seeds=1, or one process with all the seeds"
            )
        self.mesh = seeds.seed_mesh(self.num_seeds, devices=jax.local_devices())
        parallel.check_divisible(config.batch_size, self.mesh.shape[parallel.DATA_AXIS])
        keys = seeds.seed_keys(config, self.num_seeds)
        self.grid_key = keys.grid
        run_seeds = seeds.run_seeds(config, self.num_seeds)
        self._step_keys = seeds.shard_stacked((keys.train, run_seeds), self.mesh)
        self._sharding = NamedSharding(self.mesh, P(seeds.SEED_AXIS))
        self.seed_values = [int(seed) for seed in run_seeds]

    def abstract_state(self) -> TrainState:
        """The state's shapes, dtypes and shardings: the target a checkpoint restores into."""
        return jax.tree.map(  # shapes only: a resumed run never pays for initialisation
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=self._sharding),
            jax.eval_shape(self._initial_state),
        )

    def initial_state(self) -> TrainState:
        """The state at step 0 on the mesh (run i of a stack from `config.seed + i`)."""
        if self.stacked:
            return seeds.shard_stacked(self._initial_state(), self.mesh)
        return parallel.replicate_on_mesh(self._initial_state(), self.mesh)

    def _initial_state(self) -> TrainState:
        config, models, optimizers = self._config, self._models, self._optimizers
        if self.stacked:
            return seeds.create_stacked_train_state(
                config, self.num_seeds, models=models, optimizers=optimizers
            )
        return create_train_state(
            self._init_key, config=config, models=models, optimizers=optimizers
        )

    def fused_step(self, length: int):
        """The jitted `length`-step dispatch: (state, images, labels, *step_keys) -> (state,
        metrics {name: [k]}, or [S, k] for a stack)."""
        options = dict(
            models=self._models,
            optimizers=self._optimizers,
            config=self._config,
            mesh=self.mesh,
            num_steps=length,
        )
        if self.stacked:
            return seeds.fused_train_step(**options, num_seeds=self.num_seeds)
        return fused.fused_train_step(**options)

    @property
    def step_keys(self) -> tuple:
        """The dispatch's arguments after the data: the train key; a stack's train keys and
        data seeds [S]."""
        return self._step_keys

    def per_run_metrics(self, metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{"seed_<s>/<name>": [k]}: run i's metrics under its seed s; {} for one run."""
        if not self.stacked:
            return {}
        return {
            f"seed_{seed}/{name}": values[i]
            for i, seed in enumerate(self.seed_values)
            for name, values in metrics.items()
        }

    def mean_over_runs(self, metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{name: [k]}: the runs' mean at each step (the metrics themselves for one run)."""
        if not self.stacked:
            return metrics
        return {name: np.mean(values, axis=0) for name, values in metrics.items()}

    def first_run(self, state: TrainState) -> TrainState:
        """Run 0 of a stack (the state itself for one run): the quick evaluations' generator."""
        return seeds.unstack(state, 0) if self.stacked else state


def _restore(checkpointer: checkpointing.Checkpointer, target: TrainState, config) -> TrainState:
    """The newest readable checkpoint into `target`; a checkpoint of another num_seeds stops
    with a message that says so (and is left as it is)."""
    try:
        return checkpointer.restore_newest_readable(target)
    except checkpointing.DamagedCheckpointError:
        raise
    except checkpointing.CheckpointMismatchError as error:
        try:
            saved = checkpointer.restore_config()
        except checkpointing.CheckpointMismatchError:
            raise error from None
        if saved is None:
            raise
        saved_seeds = saved.get("num_seeds", 1)
        if saved_seeds == config.num_seeds:
            raise
        raise checkpointing.CheckpointMismatchError(
            f"{checkpointer.directory.parent} holds a run of S={saved_seeds} seeds; "
            f"config.num_seeds is {config.num_seeds}. Resume it with "
            f"--config.num_seeds={saved_seeds}, or train {config.num_seeds} seeds in a new "
            "--workdir (the checkpoints are left as they are)."
        ) from error


# ----------------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> TrainState:
    """Trains (or resumes) the run `config` describes in `workdir`; returns the final state.

    Writes to workdir: checkpoints/, config.json, metrics.jsonl, tensorboard/, images/ (sample
    grids), loss_curves.png, quality_curves.png (with `eval_every`), eval/step_<S>.json. Only
    process 0 writes anything but checkpoints.
    `workdir` may be a local path (relative ones and `~` are resolved against the current
    directory and home) or a URL Orbax and epath understand (gs://bucket/run).

    Raises:
      ValueError: an invalid config (naming the key).
      checkpointing.WorkdirError: the workdir is not writable or its disk too full for the
        checkpoints; raised before anything is trained.
      workdir_lock.WorkdirHeldError (a WorkdirError): another live run holds the workdir;
        raised before anything is written.
      checkpointing.CheckpointMismatchError: the workdir holds a checkpoint of another model or
        shape; it is left as it is.
      checkpointing.NoReadableCheckpointError (a CheckpointMismatchError): every checkpoint is
        damaged; none is moved. Damaged checkpoints newer than a readable one are moved aside
        (`<step>.damaged-<time>`, logged) and the run continues from the readable one.
      NonFiniteMetricError: a metric became NaN or Inf; names the metric and the step.
    """
    config_lib.validate_config(config)
    config_lib.validate_loop_config(config)
    data.check_name(config.dataset)
    _check_evaluable(config)
    workdir = paths.resolve(workdir)
    remote = is_remote(workdir)
    log_dir = local_log_dir(workdir) if remote else Path(workdir)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    runs = _Runs(config, models, optimizers)  # one run, or a stack of config.num_seeds

    with contextlib.ExitStack() as stack:
        # First, so that it is released last: one run per workdir.
        stack.enter_context(_hold_workdir(workdir))
        # From the start: a signal during start-up (data preparation, compilation) ends the run
        # cleanly too.
        stop = stack.enter_context(_stop_on_signals())

        # Everything that can fail on bad input fails here, before any training.
        checkpointer = stack.enter_context(
            checkpointing.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
        )
        target = runs.abstract_state()
        checkpointer.check_disk_space(target)
        if checkpointer.latest_step() is not None:
            # Straight into the mesh's layout; a damaged latest checkpoint is moved aside.
            state = _restore(checkpointer, target, config)
            step = int(np.max(state.step))  # a stack's runs are all at one step
            logging.info("resumed from %s at step %d", checkpointer.directory, step)
            _warn_on_config_change(checkpointer, config)
        else:
            state = runs.initial_state()
            step = 0

        mirror = None
        if remote and jax.process_index() == 0:
            mirror = LogMirror(log_dir, workdir)
            if step > 0:
                mirror.fetch(writers.METRICS_FILE)
            stack.callback(mirror.sync)  # runs after the writers below are closed
        writer = stack.enter_context(writers.MetricWriter(log_dir, resume_step=step))
        if writer.active:
            (log_dir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=1) + "\n")

        images, labels = _load_training_split(config)
        images, labels = data.to_device(images, labels)
        progress = stack.enter_context(writers.Progress(config.num_steps, step))
        points = config.dataset in config_lib.POINT_DATASETS
        sample_grid = (_scatter_sampler if points else _grid_sampler)(models, config, runs.grid_key)
        compiled: dict[int, Any] = {}  # one compiled fused function per dispatch length
        # Training time, for the quality curves: this run's wall time less its evaluations,
        # after the training time of the run it resumes (as far as its log recorded it).
        eval_seconds = 0.0
        train_time_before = _logged_train_seconds(writer.metrics_path) if step > 0 else 0.0
        start = time.perf_counter()

        def train_seconds() -> float:
            return train_time_before + time.perf_counter() - start - eval_seconds

        def save_grid(state: TrainState, step: int) -> Path | None:
            if points:  # a scatter plot over the modes, one panel per run
                means, std = data.mixture(config.dataset)
                figure = plots.scatter_figure(
                    np.asarray(sample_grid(state)),
                    means,
                    std,
                    titles=[f"seed {seed}, step {step}" for seed in runs.seed_values],
                )
                return writer.write_images(step, GRID_FILE, plots.figure_to_rgb(figure))
            grid = writers.image_grid(
                np.asarray(sample_grid(state)),
                # A stack's grid: one row per run.
                nrow=_grid_row_length(config) if runs.stacked else None,
                pixel_range=models.pixel_range,
            )
            # Upscaled so that one sample is at least 64 pixels tall.
            scale = writers.default_scale(int(config.image_shape[0]))
            return writer.write_images(step, GRID_FILE, grid, scale=scale)

        stopping = _any_process(bool(stop))
        while step < config.num_steps and not stopping:
            length = _dispatch_length(step, config)
            if length not in compiled:
                compile_start = time.perf_counter()
                compiled[length] = (
                    runs.fused_step(length).lower(state, images, labels, *runs.step_keys).compile()
                )
                compile_seconds = time.perf_counter() - compile_start
                progress.exclude_time(compile_seconds)  # once per length: not in the ETA
                logging.info("compiled the %d-step dispatch in %.1f s", length, compile_seconds)
            dispatch_start = time.perf_counter()
            state, metrics = compiled[length](state, images, labels, *runs.step_keys)
            metrics = jax.device_get(metrics)  # the one host sync per dispatch
            elapsed = time.perf_counter() - dispatch_start
            # A stack's metrics: each run's under its seed, and their mean under the plain names.
            per_run, metrics = runs.per_run_metrics(metrics), runs.mean_over_runs(metrics)
            checked = per_run or metrics  # names the run whose metric went bad
            bad = _first_non_finite(checked, step)
            if bad is not None:
                name, bad_step = bad
                raise NonFiniteMetricError(
                    f"{name} became {checked[name][bad_step - step - 1]} at step {bad_step}; "
                    f"stopping. Nothing after the last good checkpoint was saved: step "
                    f"{checkpointer.latest_step()} in {checkpointer.directory}."
                )
            step += length
            images_per_s = length * config_lib.real_images_per_step(config) / elapsed
            last = {name: float(values[-1]) for name, values in metrics.items()}
            progress.update(step, images_per_s, last)
            if _due(step, config.log_every) or step == config.num_steps:
                means = {
                    name: float(np.mean(values)) for name, values in {**metrics, **per_run}.items()
                }
                times = {
                    "wall_time_s": time.perf_counter() - start,
                    "train_time_s": train_seconds(),
                }
                writer.write(step, {**means, "images_per_s": images_per_s, **times})
            if _due(step, config.sample_every):
                save_grid(state, step)
            if _due(step, config.checkpoint_every):
                checkpointer.save(step, state, config=config, force=True)
                if mirror is not None:
                    writer.flush()
                    mirror.sync()
            if _due(step, config.eval_every) or (config.eval_every and step == config.num_steps):
                eval_start = time.perf_counter()
                # A stack's quick evaluations score run 0 alone: S times cheaper, and the final
                # evaluation scores every run.
                _evaluate_quality(
                    runs.first_run(state), models, config, writer, step, train_seconds()
                )
                spent = time.perf_counter() - eval_start
                eval_seconds += spent
                progress.exclude_time(spent)  # not training: keep it out of the ETA's step rate
            stopping = _any_process(bool(stop))

        checkpointer.save(step, state, config=config, force=True)
        if stopping:
            logging.warning(
                "%s: saved a checkpoint at step %d and stopped; rerun the same command to resume",
                stop.signal_name or "a signal to another process",
                step,
            )
            return state
        grid_path = save_grid(state, step)
        if config.eval_at_end:
            done = epath.Path(workdir) / EVAL_DIR / f"step_{step}.json"
            if done.exists():
                logging.info("step %d was evaluated before: %s", step, done)
            else:
                _evaluate_final(state, models, config, log_dir, step, writer, runs)
        if writer.active:
            writer.flush()
            plots.plot_losses(writer.metrics_path, log_dir / LOSS_PLOT_FILE)
            plots.plot_quality(writer.metrics_path, log_dir / QUALITY_PLOT_FILE)
            shown = epath.Path(workdir) / grid_path.relative_to(log_dir) if remote else grid_path
            logging.info("finished at step %d; samples: %s", step, shown)
            print(f"samples: {shown}", flush=True)
        return state
