"""The training loop: `train_and_evaluate(config, workdir)`.

One run = one workdir. On start it restores the latest checkpoint in `<workdir>/checkpoints` when
there is one and continues from that step; otherwise it initialises from `config.seed`. Each
dispatch runs `config.steps_per_dispatch` fused steps on the device-resident dataset (see
`gan_jax.fused`); logs, sample grids, checkpoints and evaluations happen between dispatches, on
multiples of their intervals.

Exact resume: the state holds every array that changes during training, the batch of step s and
the noise of step s are pure functions of (config.seed, s), so a run killed and resumed from the
checkpoint at step N ends bitwise identical to one that never stopped.

SIGTERM (TPU VM preemption) and SIGINT (Ctrl-C) finish the dispatch in flight, save a checkpoint
at that step and return. A NaN or Inf metric stops the run before anything of that dispatch is
saved and names the metric and step: the last good checkpoint stays the latest.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from gan_jax import checkpointing, data, fused, optim, parallel, writers
from gan_jax import config as config_lib
from gan_jax import models as models_lib
from gan_jax.state import TrainState, create_train_state

GRID_FILE = "samples"  # images/<GRID_FILE>_<step>.png


class NonFiniteMetricError(FloatingPointError):
    """A loss or other metric became NaN or Inf; the run stopped at that step."""


class _StopRequest:
    """Set by SIGTERM / SIGINT; the loop checks it between dispatches."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: Any) -> None:
        del frame
        self.signal_name = signal.Signals(signum).name


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


def _first_non_finite(metrics: dict[str, np.ndarray], first_step: int) -> tuple[str, int] | None:
    """(metric name, step) of the earliest NaN/Inf in per-step metrics [k], or None."""
    worst = None
    for name, values in metrics.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size and (worst is None or bad[0] < worst[1]):
            worst = (name, int(bad[0]))
    return None if worst is None else (worst[0], first_step + worst[1] + 1)


def _dispatch_length(step: int, config: ml_collections.ConfigDict) -> int:
    """Steps until the next log/sample/checkpoint/eval boundary, capped at steps_per_dispatch."""
    length = min(config.steps_per_dispatch, config.num_steps - step)
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


def _load_training_split(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    images, labels = data.load_split(
        config.dataset,
        "train",
        data_dir=config.data_dir or None,
        image_shape=tuple(config.image_shape),
        seed=config.dataset_seed,
        mnist_dir=config.mnist_dir or None,
    )
    if tuple(images.shape[1:]) != tuple(config.image_shape):
        raise ValueError(
            f"config.image_shape is {tuple(config.image_shape)} but config.dataset="
            f"{config.dataset!r} holds images of shape {tuple(images.shape[1:])}"
        )
    if config.num_classes > 0 and int(labels.max()) >= config.num_classes:
        raise ValueError(
            f"config.num_classes={config.num_classes} but {config.dataset!r} has labels up to "
            f"{int(labels.max())}; set config.num_classes to {int(labels.max()) + 1}"
        )
    return images, labels


def _grid_sampler(models: models_lib.Models, config: ml_collections.ConfigDict, key: jax.Array):
    """A jitted function of the state giving the fixed-latent sample grid, [n, H, W, C]."""
    z = jax.random.normal(key, (config.num_grid_samples, config.latent_dim))
    labels = None
    if config.num_classes > 0:  # one row per class where the grid allows
        labels = np.arange(config.num_grid_samples, dtype=np.int32) % config.num_classes

    @jax.jit
    def sample(state: TrainState) -> jax.Array:
        images, _ = models_lib.apply_model(
            models.generator, state.sampling_params, state.g_state, z, labels, train=False
        )
        return images

    return sample


def _evaluate(state, models, config, workdir: Path, step: int, writer) -> dict[str, Any] | None:
    """Scores the sampling generator with the shipped feature network (MNIST-like data only)."""
    from gan_jax import evaluate  # local: loads the feature network only when evaluating

    if config.dataset not in ("mnist", "stacked_mnist"):
        logging.info("no feature network for %s; skipping evaluation", config.dataset)
        return None
    params, g_state = state.sampling_params, state.g_state

    @functools.partial(jax.jit, static_argnums=1)
    def sample_fn(key, n):
        z_key, label_key = jax.random.split(key)
        z = jax.random.normal(z_key, (n, config.latent_dim))
        labels = None
        if config.num_classes > 0:
            labels = jax.random.randint(label_key, (n,), 0, config.num_classes)
        return models_lib.apply_model(models.generator, params, g_state, z, labels, train=False)[0]

    result = evaluate.evaluate_generator(
        sample_fn,
        dataset=config.dataset,
        num_samples=config.eval_num_samples or None,
        pixel_range=models.pixel_range,
        data_dir=config.data_dir or None,
        data_seed=config.dataset_seed,
    )
    result.update(step=step, model=config.model)
    scalars = {f"eval/{k}": v for k, v in result.items() if isinstance(v, int | float)}
    writer.write(step, scalars)
    if writer.active:
        path = workdir / "eval" / f"step_{step}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        logging.info("evaluation at step %d:\n%s", step, evaluate.format_table(result))
    return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """Trains (or resumes) the run `config` describes in `workdir`; returns the final state.

    Writes to workdir: checkpoints/, config.json, metrics.jsonl, tensorboard/, images/ (sample
    grids), loss_curves.png, eval/step_<S>.json. Only process 0 writes anything but checkpoints.
    """
    config_lib.validate_config(config)
    config_lib.validate_loop_config(config)
    workdir = Path(workdir)
    mesh = parallel.data_mesh()
    parallel.check_divisible(config.batch_size, mesh.size)
    models = models_lib.build_models(config)
    optimizers = optim.build_optimizers(config)
    init_key, train_key, grid_key = jax.random.split(jax.random.key(config.seed), 3)

    # Everything that can fail on bad input fails here, before any training.
    checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    state = create_train_state(init_key, config, models=models, optimizers=optimizers)
    checkpointer.check_disk_space(state)
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state)
        logging.info("resumed from %s at step %d", checkpointer.directory, int(state.step))
    images, labels = _load_training_split(config)
    images, labels = data.to_device(images, labels)
    state = parallel.replicate_on_mesh(state, mesh)
    step = int(state.step)

    writer = writers.MetricWriter(workdir, resume_step=step)
    if writer.active:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1) + "\n")
    progress = writers.Progress(config.num_steps, step)
    sample_grid = _grid_sampler(models, config, grid_key)
    compiled: dict[int, Any] = {}  # one fused function per dispatch length
    start = time.perf_counter()

    def save_grid(state: TrainState, step: int) -> Path | None:
        grid = writers.image_grid(np.asarray(sample_grid(state)), pixel_range=models.pixel_range)
        return writer.write_images(
            step, GRID_FILE, grid, scale=writers.default_scale(grid.shape[0] // 8)
        )

    try:
        with _stop_on_signals() as stop:
            while step < config.num_steps and not stop:
                length = _dispatch_length(step, config)
                if length not in compiled:
                    compiled[length] = fused.fused_train_step(
                        models=models,
                        optimizers=optimizers,
                        config=config,
                        mesh=mesh,
                        num_steps=length,
                    )
                dispatch_start = time.perf_counter()
                state, metrics = compiled[length](state, images, labels, train_key)
                metrics = jax.device_get(metrics)  # the one host sync per dispatch
                elapsed = time.perf_counter() - dispatch_start
                bad = _first_non_finite(metrics, step)
                if bad is not None:
                    raise NonFiniteMetricError(
                        f"{bad[0]} became {metrics[bad[0]][bad[1] - step - 1]} at step {bad[1]}; "
                        f"stopping. The last good checkpoint is step "
                        f"{checkpointer.latest_step()} in {checkpointer.directory}."
                    )
                step += length
                images_per_s = length * config.batch_size / elapsed
                last = {name: float(values[-1]) for name, values in metrics.items()}
                progress.update(step, images_per_s, last)
                if _due(step, config.log_every) or step == config.num_steps:
                    means = {name: float(np.mean(values)) for name, values in metrics.items()}
                    wall = time.perf_counter() - start
                    writer.write(step, {**means, "images_per_s": images_per_s, "wall_time_s": wall})
                if _due(step, config.sample_every):
                    save_grid(state, step)
                if _due(step, config.checkpoint_every):
                    checkpointer.save(step, state, config=config, force=True)
                if _due(step, config.eval_every) and step < config.num_steps:
                    _evaluate(state, models, config, workdir, step, writer)

            checkpointer.save(step, state, config=config, force=True)
            if stop:
                logging.warning(
                    "%s: saved a checkpoint at step %d and stopped", stop.signal_name, step
                )
                return state
        grid_path = save_grid(state, step)
        if config.eval_at_end:
            _evaluate(state, models, config, workdir, step, writer)
        if writer.active:
            writers.plot_losses(writer.metrics_path, workdir / "loss_curves.png")
            logging.info("finished at step %d; samples: %s", step, grid_path)
            print(f"samples: {grid_path}", flush=True)
        return state
    finally:
        progress.close()
        writer.close()
        checkpointer.close()
