"""Scores a generator with a feature network, from Python or the command line.

    python -m gan_jax.evaluate --workdir <run> [--step S] [--num_samples N] [--seed_index i]
        [--features classifier|inception] [--inception_weights FILE] [--reference_stats FILE]

loads the run's config, restores the checkpoint (the latest, or step S) read-only, samples N
images from the EMA generator when the run keeps one, computes every metric against the test
split's cached reference statistics, prints them beside the real-data floor, and writes
`<run>/eval/step_<S>.json` (`step_<S>_inception.json` with Inception features on MNIST).

The feature network (gan_jax.evaluation.feature_networks): the shipped MNIST classifier for
MNIST and Stacked MNIST, FID's Inception-v3 (pytorch-fid's weights) for every other image
dataset, or on MNIST with `--features inception`. `--reference_stats` scores against a published
`.npz` of `mu` and `sigma` instead of the cached test split (FID only).

A run of several seeds (config.num_seeds = S, gan_jax.seeds): every run is scored on N samples
and the table gives their mean ± standard error (`combine_runs`); `--seed_index i` scores run i
alone and writes `<run>/eval/step_<S>_seed_index_<i>.json`.

From Python, `evaluate_generator(sample_fn, dataset=...)` does the same for any sampler; the
training loop calls it every `eval_every` steps.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from gan_jax import paths, xla_options
from gan_jax.config import POINT_DATASETS
from gan_jax.evaluation import classifier, feature_networks, mixtures, reference
from gan_jax.evaluation import inception as inception_lib

SampleFn = Callable[[jax.Array, int], Any]  # (key, n) -> images [n, H, W, C]

# (result key, table label, which direction is better), in the order the table prints them.
_TABLE_ROWS = (
    ("fid", "FID", "lower"),
    ("kid", "KID", "lower"),
    ("precision", "precision", "higher"),
    ("recall", "recall", "higher"),
    ("classifier_score", "classifier score", "higher"),
    ("inception_score", "Inception score", "higher"),
    ("class_kl", "class KL", "lower"),
    ("modes", "modes (of 1000)", "higher"),
    ("kl_to_uniform", "KL to uniform", "lower"),
    # The 2-D mixtures (gan_jax.evaluation.mixtures).
    ("modes_covered", "modes covered", "higher"),
    ("high_quality", "high quality", "higher"),
    ("reverse_kl", "reverse KL", "lower"),
)


def _expected_channels(dataset: str) -> int:
    return 3 if dataset == "stacked_mnist" else 1


def _check_sample_shape(
    shape: tuple[int, ...], n: int, network: reference.FeatureNetwork, expected_channels: int
) -> None:
    """Raises ValueError saying what the network scores unless images [n, H, W, C] fit it."""
    if isinstance(network, classifier.FeatureNetwork):
        if len(shape) != 4 or shape[0] != n or shape[1:] != (28, 28, expected_channels):
            raise ValueError(
                f"The sampler returned images of shape {shape} for n={n}; the MNIST feature "
                f"network scores [n, 28, 28, {expected_channels}] for this dataset. Evaluate "
                "28x28 models of MNIST (1 channel) or Stacked MNIST (3 channels), or score "
                "with features='inception' (any size)."
            )
    elif len(shape) != 4 or shape[0] != n or shape[3] not in (1, 3):
        raise ValueError(
            f"The sampler returned images of shape {shape} for n={n}; Inception-v3 scores "
            "images [n, H, W, C] with C = 1 or 3."
        )


def sample_embedding(
    sample_fn: SampleFn,
    key: jax.Array,
    *,
    num_samples: int,
    network: reference.FeatureNetwork,
    pixel_range: tuple[float, float] | str,
    expected_channels: int,
    batch_size: int = 1000,
) -> reference.Embedding:
    """Draws num_samples images, batch_size at a time, and keeps only their features and logits.

    Batch i is `sample_fn(fold_in(key, i), batch_size)`, so the samples are a pure function of
    the key; no more than one batch of images is held at once. `expected_channels` is checked
    for the MNIST classifier (1 for MNIST, 3 for Stacked MNIST).
    """
    features, logits = [], []
    for i in range(math.ceil(num_samples / batch_size)):
        n = min(batch_size, num_samples - i * batch_size)
        images = sample_fn(jax.random.fold_in(key, i), n)
        _check_sample_shape(tuple(images.shape), n, network, expected_channels)
        batch = network.embed(images, pixel_range=pixel_range)
        features.append(batch.features)
        logits.append(batch.logits)
    return type(batch)(np.concatenate(features), np.concatenate(logits))


def evaluate_generator(
    sample_fn: SampleFn,
    *,
    dataset: str,
    num_samples: int | None = None,
    pixel_range: tuple[float, float] | str = "symmetric",
    seed: int = 0,
    batch_size: int = 1000,
    include_floor: bool = True,
    floor_num_samples: int | None = None,
    data_dir: str | None = None,
    data_seed: int = 0,
    image_shape: tuple[int, ...] | None = None,
    features: feature_networks.Features | None = None,
    network: reference.FeatureNetwork | None = None,
    reference_stats: reference.ReferenceStats | None = None,
    reference_num_examples: int = reference.DEFAULT_REFERENCE_EXAMPLES,
) -> dict[str, Any]:
    """Every metric of a generator's samples against the dataset's test split, and the floor.

    Args:
      sample_fn: (key, n) -> images [n, H, W, C] in `pixel_range`, called with n <= batch_size:
        [n, 28, 28, C] for the MNIST classifier (C = 1 for "mnist", 3 for "stacked_mnist"), any
        H, W and C in {1, 3} for Inception-v3.
      dataset: "mnist", "stacked_mnist", any image dataset of gan_jax.data, or a 2-D mixture.
      num_samples: default 10,000 for MNIST, 26,000 for Stacked MNIST (PacGAN's protocol).
      pixel_range: the generator's output range: "symmetric" ([-1, 1], dcgan), "unit" ([0, 1],
        seed_mlp) or (low, high).
      seed: the sampling key is jax.random.key(seed); KID's subsets use the same seed.
      include_floor: also report the real-data floor (cached after its first computation).
      floor_num_samples: training images in the floor; default as num_samples' default.
      data_dir, data_seed: passed to gan_jax.data for the reference and floor images.
      image_shape: (H, W, C) the real images are resized to (the run's config.image_shape);
        None keeps the dataset's own.
      features: "classifier" or "inception" (feature_networks.default_features(dataset) by
        default: the classifier for MNIST and Stacked MNIST, Inception otherwise).
      network: the feature network object (overrides `features`), e.g.
        `feature_networks.load_inception(path)`.
      reference_stats: the reference to compare with; by default the dataset's test split
        from the cache (`reference.get_reference`). A training loop may load it once and pass
        it; `reference.load_published_stats` reads a published `.npz` (then no floor).
      reference_num_examples: the reference is the first this many images of the test split
        (10,000: all of MNIST's; fewer makes a first Inception reference cheaper on a CPU).

    Returns:
      A JSON-friendly dict: the metrics (see `reference.score_embedding`), "dataset",
      "reference" (its description: split, size, data hash), "feature_network" (version tag,
      sha256, test accuracy), "floor" (the same metrics for real training images),
      "seconds" (wall time of sampling and scoring).

    The 2-D mixtures ("ring", "grid") have no feature network: `evaluate_points` scores them
    (sample_fn then returns points [n, 2]; pixel_range, batch_size, network and reference_stats
    are ignored).
    """
    if dataset in POINT_DATASETS:
        return evaluate_points(
            sample_fn,
            dataset=dataset,
            num_samples=num_samples,
            seed=seed,
            include_floor=include_floor,
            floor_num_samples=floor_num_samples,
            data_seed=data_seed,
        )
    start = time.perf_counter()
    if network is None:
        features = features or feature_networks.default_features(dataset)
        feature_networks.check_features(features, dataset)
        network = feature_networks.load_network(features)
    num_samples = num_samples or reference.default_num_samples(dataset)
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2; got {num_samples}.")
    ref = reference_stats or reference.get_reference(
        dataset,
        network=network,
        data_dir=data_dir,
        data_seed=data_seed,
        max_examples=reference_num_examples,
        image_shape=image_shape,
    )
    embedding = sample_embedding(
        sample_fn,
        jax.random.key(seed),
        num_samples=num_samples,
        network=network,
        pixel_range=pixel_range,
        expected_channels=_expected_channels(dataset),
        batch_size=batch_size,
    )
    result = reference.score_embedding(embedding, ref, seed=seed)
    result.update(
        dataset=dataset,
        seed=seed,
        reference={k: v for k, v in ref.info.items() if k != "feature_network"},
        feature_network=network.info,
    )
    if include_floor and "data_sha256" in ref.info:  # published statistics have no floor
        result["floor"] = reference.get_floor(
            dataset,
            reference=ref,
            network=network,
            num_samples=floor_num_samples,
            data_dir=data_dir,
            data_seed=data_seed,
            image_shape=image_shape,
        )
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def combine_runs(results: list[dict[str, Any]], *, run_seeds: list[int]) -> dict[str, Any]:
    """One result for S runs of one config (a stack, gan_jax.seeds) from each run's result.

    Each metric (the table's, and kid_std) is the mean over runs, with its standard error
    std / sqrt(S) (std with S - 1 degrees of freedom) under "sem"; "runs" holds each run's own
    result with its "run_seed", "run_seeds" the seeds; "seconds" is their sum. The rest
    (dataset, reference, floor, ...) is run 0's: the runs share them.
    """
    if len(results) != len(run_seeds) or len(results) < 2:
        raise ValueError(
            f"combine_runs needs the results of 2 or more runs and one seed each; got "
            f"{len(results)} results and {len(run_seeds)} seeds"
        )
    extra = ["kid_std", "inception_score_std"]
    metrics = [k for k in [key for key, _, _ in _TABLE_ROWS] + extra if k in results[0]]
    combined = {k: v for k, v in results[0].items() if k not in metrics}
    sem = {}
    for key in metrics:
        values = np.array([float(result[key]) for result in results])
        combined[key] = float(values.mean())
        sem[key] = float(values.std(ddof=1) / math.sqrt(len(values)))
    combined["sem"] = sem
    combined["num_seeds"] = len(results)
    combined["run_seeds"] = [int(seed) for seed in run_seeds]
    if all("seconds" in result for result in results):
        combined["seconds"] = round(sum(result["seconds"] for result in results), 2)
    combined["runs"] = [
        {"run_seed": int(seed), **result} for seed, result in zip(run_seeds, results, strict=True)
    ]
    return combined


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a result's metrics beside its floor; for the result of several runs
    (`combine_runs`), their mean ± its standard error."""
    floor = result.get("floor", {})
    sem = result.get("sem")
    if sem:
        heading = f"mean ± s.e. of {result['num_seeds']} runs"
        heading = f"{heading:>24}"
    else:
        heading = f"{'samples':>12}"
    lines = [f"{'metric':<18}{heading}{'real floor':>12}  better"]
    for key, name, better in _TABLE_ROWS:
        if key not in result:
            continue
        value, floor_value = result[key], floor.get(key)
        if sem:
            text = f"{value:14.4f} ± {sem[key]:<7.4f}"
        else:
            text = f"{value:12.4f}" if isinstance(value, float) else f"{value:12d}"
        if floor_value is None:
            floor_text = f"{'-':>12}"
        elif isinstance(floor_value, float):
            floor_text = f"{floor_value:12.4f}"
        else:
            floor_text = f"{floor_value:12d}"
        lines.append(f"{name:<18}{text}{floor_text}  {better}")
    per_run = f" per run (seeds {result['run_seeds']})" if sem else ""
    net = result.get("feature_network")
    if net is None:  # the 2-D mixtures
        ref = result["reference"]
        lines.append(
            f"{result['num_samples']} samples of {result['dataset']}{per_run} vs its "
            f"{ref['modes']} modes (std {ref['std']}); high quality: within "
            f"{ref['threshold_std']:g} std of the nearest mode"
        )
        return "\n".join(lines)
    ref = result["reference"]
    against = (
        f"the statistics in {ref['stats_file']}"
        if "stats_file" in ref
        else f"its {ref.get('split')} split"
    )
    resize = f", {net['resize']} resize" if "resize" in net else ""
    lines.append(
        f"{result['num_samples']} samples of {result['dataset']}{per_run} vs {against}; "
        f"feature network {net['version']} (sha256 {net['sha256'][:12]}...{resize})"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Runs on disk.
# ---------------------------------------------------------------------------------------------


def load_run_config(workdir: str | os.PathLike, step: int | None = None):
    """The config a checkpoint was saved with, else the run's `<workdir>/config.json`.

    The checkpoint's copy comes first: a resumed run rewrites config.json, and the checkpoint's
    config is the one that produced that step's parameters. `workdir` may be local or any URL
    epath understands (gs://bucket/run), like the training loop's.
    """
    import ml_collections  # noqa: PLC0415

    from gan_jax import checkpointing  # noqa: PLC0415

    workdir = paths.resolve(workdir)
    with checkpointing.Checkpointer(workdir, read_only=True) as reader:
        saved = reader.restore_config(step)
    path = epath.Path(workdir) / "config.json"
    if saved is None and path.exists():
        saved = json.loads(path.read_text())
    if saved is None:
        raise FileNotFoundError(
            f"No config for the run in {workdir}: neither a config saved with its checkpoint "
            f"nor {path}."
        )
    return ml_collections.ConfigDict(saved)


class RestoredSampler(NamedTuple):
    """A run's generator, ready to sample."""

    sample_fn: SampleFn  # (key, n) -> images [n, H, W, C] in pixel_range
    pixel_range: str  # "unit" ([0, 1]) or "symmetric" ([-1, 1])
    config: Any  # the run's ml_collections.ConfigDict
    step: int  # the restored checkpoint's step
    seed_index: int = 0  # which run of a stack of config.num_seeds (seed config.seed + index)
    num_seeds: int = 1  # the runs the checkpoint holds


def evaluate_points(
    sample_fn: SampleFn,
    *,
    dataset: str,
    num_samples: int | None = None,
    seed: int = 0,
    include_floor: bool = True,
    floor_num_samples: int | None = None,
    data_seed: int = 0,
) -> dict[str, Any]:
    """PacGAN's mode-collapse metrics of a 2-D generator (`gan_jax.evaluation.mixtures`).

    sample_fn(key, n) -> points [n, 2], called once with key jax.random.key(seed);
    num_samples defaults to PacGAN's 2,500. The floor scores the first floor_num_samples
    (default num_samples) points of the mixture's test split, built from `data_seed`.

    Returns a JSON-friendly dict: "modes_covered", "high_quality" (fraction), "reverse_kl"
    (nats), "dataset", "num_samples", "seed", "reference" (the mixture: modes, std,
    threshold), "floor" and "seconds".
    """
    from gan_jax.data import mixtures as mixture_data  # noqa: PLC0415

    start = time.perf_counter()
    num_samples = num_samples or mixtures.NUM_SAMPLES
    means, std = mixture_data.mixture(dataset)
    samples = np.asarray(sample_fn(jax.random.key(seed), num_samples))
    if samples.shape != (num_samples, means.shape[1]):
        raise ValueError(
            f"The sampler returned shape {samples.shape} for n={num_samples}; {dataset!r} "
            f"takes points [n, {means.shape[1]}]"
        )
    result: dict[str, Any] = mixtures.mixture_metrics(samples, means, std)
    result.update(
        dataset=dataset,
        num_samples=num_samples,
        seed=seed,
        reference={
            "split": "mixture",
            "modes": len(means),
            "std": std,
            "threshold_std": mixtures.HQ_THRESHOLD,
        },
    )
    if include_floor:
        real, _ = mixture_data.make_points(
            dataset,
            num_examples=mixture_data.NUM_TEST,
            seed=data_seed,
            split="test",
        )
        result["floor"] = mixtures.mixture_metrics(
            real[: floor_num_samples or num_samples], means, std
        )
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def sampler_from_state(train_state: Any, config: Any, *, models: Any = None) -> SampleFn:
    """sample_fn(key, n) -> images [n, H, W, C] from a TrainState's generator.

    Uses `state.sampling_variables`: the EMA params when the run keeps them, with BatchNorm
    statistics of their own, in inference mode. For the training loop:

        result = evaluate_generator(sampler_from_state(state, config), dataset=config.dataset,
                                    pixel_range=models.pixel_range)

    Pass an unreplicated state (one device's copy under pmap).
    """
    from gan_jax import models as models_lib  # noqa: PLC0415
    from gan_jax.state import sampling_variables  # noqa: PLC0415

    built = models or models_lib.build_models(config)
    g_params, g_state = sampling_variables(train_state, models=built, config=config)
    return generator_sampler(g_params, g_state, config, models=built)


def generator_sampler(g_params: Any, g_state: Any, config: Any, *, models: Any = None) -> SampleFn:
    """sample_fn(key, n) -> images [n, H, W, C] from generator params and collections.

    z ~ N(0, I) [n, latent_dim]; conditional models get labels drawn uniformly over
    `config.num_classes` (MNIST's classes are nearly balanced).
    """
    from gan_jax import models as models_lib  # noqa: PLC0415

    built = models or models_lib.build_models(config)
    sample = _jitted_sampler(built.generator, int(config.latent_dim), int(config.num_classes))

    def sample_fn(key: jax.Array, n: int) -> jax.Array:
        return sample(g_params, g_state, key, n)

    return sample_fn


@functools.lru_cache(maxsize=8)
def _jitted_sampler(generator: Any, latent_dim: int, num_classes: int):
    """The jitted (g_params, g_state, key, n) -> images of a generator module.

    Cached per module (Flax modules hash by their fields), so the training loop's evaluation
    every `eval_every` steps compiles its sampler once, not at every evaluation (about 5 s for
    the dcgan on 2 CPU cores).
    """
    from gan_jax import models as models_lib  # noqa: PLC0415

    # Params are arguments, not closed-over constants, which XLA would fold into the program.
    @functools.partial(xla_options.jit, static_argnums=3)
    def sample(g_params: Any, g_state: Any, key: jax.Array, n: int) -> jax.Array:
        z_key, label_key = jax.random.split(key)
        z = jax.random.normal(z_key, (n, latent_dim), jnp.float32)
        labels = jax.random.randint(label_key, (n,), 0, num_classes) if num_classes > 0 else None
        images, _ = models_lib.apply_model(generator, g_params, g_state, z, labels, train=False)
        return images

    return sample


def _restore_generator_state(reader: Any, workdir: str, step: int) -> tuple[Any, Any]:
    """(config, TrainState) of checkpoint `step`, on this process's first device.

    Raises checkpointing.DamagedCheckpointError when its config or arrays cannot be read.
    """
    from gan_jax import seeds, state  # noqa: PLC0415

    config = load_run_config(workdir, step)
    num_seeds = _num_seeds(config)

    def initial_state():
        if num_seeds > 1:  # a stack of runs (gan_jax.seeds)
            return seeds.create_stacked_train_state(config, num_seeds)
        return state.create_train_state(jax.random.key(0), config)

    # Restore onto this process's first device, whatever mesh the run saved from.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        jax.eval_shape(initial_state),
    )
    return config, reader.restore(target, step)


def _move_aside_unless_held(workdir: str, directory: Any, damaged: list, readable: int) -> None:
    """Moves damaged checkpoints (newer than `readable`) aside, as training would on its next
    start; leaves them where a live trainer holds the run (its checkpoint manager lists them)."""
    from gan_jax import checkpointing, workdir_lock  # noqa: PLC0415

    holder = workdir_lock.holder(workdir)
    for error in damaged:
        if holder is not None:
            print(
                f"warning: {error}; evaluating step {readable} instead (left in place: the run "
                "is in use by another process)",
                file=sys.stderr,
            )
            continue
        moved = checkpointing.move_aside(directory, error.step)
        print(
            f"warning: {error}; moved it aside to {moved} and evaluating step {readable}",
            file=sys.stderr,
        )


def _num_seeds(config: Any) -> int:
    """The runs a run's checkpoints hold (config.num_seeds; 1 for runs that predate it)."""
    from gan_jax import config as config_lib  # noqa: PLC0415

    return int(config_lib.setting(config, "num_seeds"))


def restore_sampler(
    workdir: str | os.PathLike, *, step: int | None = None, seed_index: int = 0
) -> RestoredSampler:
    """A sampler for a run's checkpoint (the latest when `step` is None), from the EMA generator
    params when the run keeps them, else the live ones; read-only, nothing in the run changes,
    except: when the latest checkpoint cannot be read and `step` is None, it is moved aside
    (`<step>.damaged-<time>`, as training does) and the newest readable one is used.

    `seed_index`: which run of a stack of config.num_seeds runs (gan_jax.seeds) to sample.

    Raises:
      checkpointing.NoCheckpointError: no checkpoints, or no checkpoint at `step` (the message
        lists the available steps).
      checkpointing.DamagedCheckpointError: checkpoint `step`, asked for by number, cannot be
        read (left in place; the message lists the readable steps), or none can
        (NoReadableCheckpointError).
      checkpointing.CheckpointMismatchError: the checkpoint does not fit the run's config.
      config.ConfigError: `seed_index` is not a run of the checkpoint.
    """
    from gan_jax import checkpointing, models, seeds  # noqa: PLC0415
    from gan_jax.config import ConfigError  # noqa: PLC0415

    workdir = paths.resolve(workdir)
    with checkpointing.Checkpointer(workdir, read_only=True) as reader:
        steps = reader.all_steps()
        if not steps:
            raise checkpointing.NoCheckpointError(
                f"No checkpoints in {reader.directory}: train first, or point --workdir at a "
                "run directory (the one holding checkpoints/)."
            )
        damaged: list = []
        if step is not None:
            try:
                config, restored = _restore_generator_state(reader, workdir, step)
            except checkpointing.DamagedCheckpointError as error:
                if step not in steps:
                    raise
                readable = []
                for other in steps:
                    if other != step:
                        try:
                            _restore_generator_state(reader, workdir, other)
                            readable.append(other)
                        except checkpointing.DamagedCheckpointError:
                            pass
                raise checkpointing.DamagedCheckpointError(
                    f"{error}. Readable steps: {readable or 'none'}.", step=step
                ) from error
        else:
            for candidate in reversed(steps):
                try:
                    config, restored = _restore_generator_state(reader, workdir, candidate)
                except checkpointing.DamagedCheckpointError as error:
                    damaged.append(error)
                    continue
                step = candidate
                break
            else:
                raise checkpointing.NoReadableCheckpointError(
                    checkpointing.no_readable_message(reader.directory, damaged)
                )
        directory = reader.directory
    if damaged:  # after the reader is closed
        _move_aside_unless_held(workdir, directory, damaged, step)
    num_seeds = _num_seeds(config)
    if isinstance(seed_index, bool) or not isinstance(seed_index, int):
        raise ConfigError(f"--seed_index must be a whole number, got {seed_index!r}")
    if not 0 <= seed_index < num_seeds:
        raise ConfigError(
            f"--seed_index {seed_index} is not a run of {workdir}: it holds {num_seeds} run(s) "
            f"(config.num_seeds), indices 0 to {num_seeds - 1}"
        )
    if num_seeds > 1:
        restored = seeds.unstack(restored, seed_index)
    built = models.build_models(config)
    return RestoredSampler(
        sampler_from_state(restored, config, models=built),
        built.pixel_range,
        config,
        step,
        seed_index,
        num_seeds,
    )


def reference_image_shape(config: Any) -> tuple[int, ...] | None:
    """The shape real images are scored at: the run's config.image_shape where it resizes the
    dataset, None (the dataset's own) for MNIST and Stacked MNIST, which are used as they are."""
    if str(config.dataset) in feature_networks.CLASSIFIER_DATASETS:
        return None
    shape = config.get("image_shape")
    return tuple(int(d) for d in shape) if shape else None


def summary_scalars(result: dict[str, Any], *, prefix: str = "eval/") -> dict[str, float]:
    """The scalar metrics of a result (and its floor, as `<prefix>floor_<name>`) for logging."""
    keys = [key for key, _, _ in _TABLE_ROWS] + ["kid_std", "inception_score_std"]
    scalars = {f"{prefix}{k}": float(result[k]) for k in keys if k in result}
    floor = result.get("floor", {})
    scalars.update({f"{prefix}floor_{k}": float(floor[k]) for k in keys if k in floor})
    return scalars


def evaluate_run(
    workdir: str | os.PathLike,
    *,
    step: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    include_floor: bool = True,
    write: bool = True,
    seed_index: int | None = None,
    features: feature_networks.Features | None = None,
    inception_weights: str | os.PathLike | None = None,
    reference_stats: str | os.PathLike | None = None,
    reference_num_examples: int = reference.DEFAULT_REFERENCE_EXAMPLES,
) -> tuple[dict[str, Any], epath.Path | None]:
    """Evaluates a run's checkpoint; writes `<workdir>/eval/step_<S>.json` when `write`.

    `workdir` may be relative or start with `~` (resolved against the current directory), or be
    a URL such as gs://bucket/run. A run of several seeds (config.num_seeds > 1): every run is
    scored on `num_samples` samples and combined (`combine_runs`: mean ± standard error), or,
    with `seed_index`, run `seed_index` alone (written to eval/step_<S>_seed_index_<i>.json).

    features: "classifier" or "inception"; the dataset's default when None. A network other
    than the default adds `_<features>` to the file name (step_<S>_inception.json), a
    `reference_stats` file (published mu and sigma, FID only) `_vs_<its stem>`, so no result
    overwrites another kind. `inception_weights`: a local pt_inception-2015-12-05-6726825d.pth.
    `reference_num_examples`: test images in the reference (see `evaluate_generator`).
    """
    workdir = paths.resolve(workdir)
    first = restore_sampler(workdir, step=step, seed_index=seed_index or 0)
    config, step = first.config, first.step
    dataset = str(config.dataset)
    network, suffix, published = None, "", None
    if dataset not in POINT_DATASETS:
        features = features or feature_networks.default_features(dataset)
        feature_networks.check_features(features, dataset)
        network = feature_networks.load_network(features, inception_weights=inception_weights)
        if features != feature_networks.default_features(dataset):
            suffix = f"_{features}"
        if reference_stats:
            published = reference.load_published_stats(reference_stats)
            suffix += f"_vs_{epath.Path(str(published.info['stats_file'])).stem}"
    if seed_index is None and first.num_seeds > 1:
        indices = list(range(first.num_seeds))
    else:
        indices = [first.seed_index]
    results = []
    for index in indices:
        sampler = first if index == first.seed_index else None
        sampler = sampler or restore_sampler(workdir, step=step, seed_index=index)
        results.append(
            evaluate_generator(
                sampler.sample_fn,
                dataset=dataset,
                num_samples=num_samples,
                pixel_range=sampler.pixel_range,
                seed=seed,
                include_floor=include_floor,
                data_dir=str(config.get("data_dir", "")) or None,
                data_seed=int(config.get("dataset_seed", 0)),
                image_shape=reference_image_shape(config),
                network=network,
                reference_stats=published,
                reference_num_examples=reference_num_examples,
            )
        )
    run_seeds = [int(config.seed) + index for index in indices]
    name = f"step_{step}{suffix}.json"
    if len(results) > 1:
        result = combine_runs(results, run_seeds=run_seeds)
    else:
        result = results[0]
        if first.num_seeds > 1:  # one run of a stack
            result.update(seed_index=indices[0], run_seed=run_seeds[0])
            name = f"step_{step}_seed_index_{indices[0]}{suffix}.json"
    result.update(step=step, workdir=str(workdir), model=str(config.model))
    path = None
    if write:
        path = epath.Path(workdir) / "eval" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    return result, path


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def _sample_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if count < 2:
        raise argparse.ArgumentTypeError(f"{count} samples: at least 2 are needed")
    return count


class _DropReadOnlyNotice(logging.Filter):
    """Drops Orbax's warning that the checkpoint directory is read-only: evaluation opens it
    read-only on purpose, and the line would stand before every message of the command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Given directory is read only")


_READ_ONLY_NOTICE_FILTER = _DropReadOnlyNotice()  # one instance: addFilter adds it once


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status. Errors a user can fix (bad arguments, a
    workdir without a run or without that step, a checkpoint of another shape) are one line on
    stderr, with status 2 for arguments and 1 for the run."""
    from gan_jax.errors import user_errors  # noqa: PLC0415

    parser = _OneLineParser(
        prog="python -m gan_jax.evaluate",
        description="Score a run's generator: FID, KID, precision / recall and a class score.",
    )
    parser.add_argument("--workdir", required=True, help="the run directory (holds checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument(
        "--num_samples",
        "--num-samples",
        type=_sample_count,
        default=None,
        help="samples to score (default 10,000; 26,000 for Stacked MNIST)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--no_floor", action="store_true", help="skip the real-data floor")
    parser.add_argument(
        "--seed_index",
        "--seed-index",
        type=int,
        default=None,
        help="a run of several seeds (config.num_seeds): score run i alone (default: every run, "
        "mean ± standard error)",
    )
    parser.add_argument(
        "--features",
        choices=feature_networks.FEATURES,
        default=None,
        help="feature network: the MNIST classifier (default for MNIST and Stacked MNIST) or "
        "FID's Inception-v3 (default for other image datasets)",
    )
    parser.add_argument(
        "--inception_weights",
        "--inception-weights",
        default=None,
        help=f"path of {inception_lib.WEIGHTS_FILENAME} (default: the cache, else downloaded)",
    )
    parser.add_argument(
        "--reference_stats",
        "--reference-stats",
        default=None,
        help="a .npz of published FID statistics (mu, sigma) to score against (FID only)",
    )
    parser.add_argument(
        "--reference_examples",
        "--reference-examples",
        type=_sample_count,
        default=reference.DEFAULT_REFERENCE_EXAMPLES,
        help="test images in the reference statistics (default 10,000)",
    )
    args = parser.parse_args(argv)

    logging.getLogger("absl").addFilter(_READ_ONLY_NOTICE_FILTER)  # Orbax logs through absl
    try:
        result, path = evaluate_run(
            args.workdir,
            step=args.step,
            num_samples=args.num_samples,
            seed=args.seed,
            include_floor=not args.no_floor,
            seed_index=args.seed_index,
            features=args.features,
            inception_weights=args.inception_weights,
            reference_stats=args.reference_stats,
            reference_num_examples=args.reference_examples,
        )
    except user_errors() as e:  # no run, no such step, damaged data: the message says it all
        print(f"error: {e}", file=sys.stderr)
        return 1
    which = (
        f", run {result['seed_index']} (seed {result['run_seed']})" if "run_seed" in result else ""
    )
    print(
        f"step {result['step']} of {args.workdir}{which} ({result['model']}, {result['seconds']} s)"
    )
    print(format_table(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
