"""Small shared test utilities."""

from __future__ import annotations

import jax
import numpy as np

# The fields of a metrics.jsonl record that measure time, which differ between any two runs.
TIMING_KEYS = ("images_per_s", "wall_time_s", "train_time_s")


def without_timing(record: dict) -> dict:
    """A metrics.jsonl record without its TIMING_KEYS: what equal runs must log identically."""
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def leaf_errors(actual, expected) -> dict[str, float]:
    """Per-leaf relative error ||actual - expected|| / ||expected|| (float64, Frobenius norms).

    A norm-wise criterion: an element-wise one would flag Adam's first update of parameters whose
    gradient is near zero, where g / (|g| + eps) amplifies summation-order noise.
    """
    errors = {}
    expected_leaves = jax.tree_util.tree_leaves_with_path(expected)
    actual_leaves = jax.tree.leaves(actual)
    assert len(expected_leaves) == len(actual_leaves), "trees differ in structure"
    for (path, want), got in zip(expected_leaves, actual_leaves, strict=True):
        want = np.asarray(want, np.float64)
        got = np.asarray(got, np.float64)
        assert want.shape == got.shape, (jax.tree_util.keystr(path), want.shape, got.shape)
        scale = max(np.linalg.norm(want), 1e-30)
        errors[jax.tree_util.keystr(path)] = float(np.linalg.norm(got - want) / scale)
    return errors


def assert_trees_close(actual, expected, *, rtol: float) -> None:
    errors = leaf_errors(actual, expected)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rtol, f"{worst}: relative error {errors[worst]:.3g} > {rtol}"


def assert_trees_equal(actual, expected) -> None:
    for (path, want), got in zip(
        jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(actual), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=str(path))


def tiny_config(model: str = "seed_mlp", **overrides):
    """A fast config of the named family for tests."""
    from gan_jax import config as config_lib

    config = config_lib.get_default_config()
    config.model = model
    config.batch_size = 64
    if model in ("dcgan", "dcgan_compact"):
        config.g_width = config.d_width = 8
        config.latent_dim = 16
    elif model == "unrolled_dcgan":
        config.g_width, config.d_width = 4, 2
        config.latent_dim = 16
    else:
        config.g_width = config.d_width = 32
        config.latent_dim = 16
    config.update(overrides)
    return config


def tiny_mnist_files(directory, *, num_train: int = 200, num_test: int = 100):
    """Four small IDX files shaped like MNIST's (random pixels, labels i % 10) in `directory`.

    Returns a `mnist_sources.MnistFiles` for them; patch `mnist_sources.find_mnist_files` to
    return it and `GanJaxMnist` prepares a small MNIST offline in a fraction of a second.
    """
    from pathlib import Path

    from gan_jax.data import idx, mnist_sources

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        mnist_sources.TRAIN_IMAGES: rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        mnist_sources.TRAIN_LABELS: (np.arange(num_train) % 10).astype(np.uint8),
        mnist_sources.TEST_IMAGES: rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        mnist_sources.TEST_LABELS: (np.arange(num_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        with open(directory / name, "wb") as stream:
            idx.write(stream, array)
    return mnist_sources.MnistFiles(
        "user_dir", f"small test files in {directory}", {n: directory / n for n in arrays}
    )


def tiny_checkpointed_run(workdir):
    """A seed_mlp run directory holding one checkpoint at step 3 (untrained weights): what
    the evaluation command-line tests score. Returns `workdir`."""
    import jax
    import jax.numpy as jnp

    from gan_jax import checkpointing, config, state

    cfg = config.get_default_config()
    cfg.model = "seed_mlp"
    cfg.g_width = 16
    cfg.d_width = 16
    train_state = state.create_train_state(jax.random.key(0), cfg).replace(step=jnp.int32(3))
    with checkpointing.Checkpointer(workdir) as ckpt:
        ckpt.save(3, train_state, config=cfg, force=True)
    return workdir
