"""Device-resident sampling: batches as a pure function of (seed, step)."""

import functools
import hashlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax import data


def _indices(steps, *, seed, num_examples, batch_size):
    """Indices of `steps` consecutive batches from step 0, via lax.map: int32 [steps, B]."""
    fn = functools.partial(
        data.batch_indices, seed=seed, num_examples=num_examples, batch_size=batch_size
    )
    return np.asarray(jax.jit(lambda s: lax.map(fn, s))(jnp.arange(steps, dtype=jnp.int32)))


@pytest.mark.parametrize(
    "num_examples, batch_size",
    [(1, 1), (7, 3), (10, 10), (37, 8), (64, 16), (100, 256), (1000, 96)],
)
def test_every_example_once_per_epoch(num_examples, batch_size):
    epochs = 3
    steps = -(-epochs * num_examples // batch_size)
    flat = _indices(steps, seed=5, num_examples=num_examples, batch_size=batch_size).reshape(-1)
    assert flat.dtype == np.int32
    for epoch in range(epochs):
        visited = flat[epoch * num_examples : (epoch + 1) * num_examples]
        np.testing.assert_array_equal(np.sort(visited), np.arange(num_examples))


def test_every_mnist_example_once_in_first_two_epochs():
    num_examples, batch_size = 60_000, 256
    steps = -(-2 * num_examples // batch_size)
    flat = _indices(steps, seed=0, num_examples=num_examples, batch_size=batch_size).reshape(-1)
    first, second = flat[:num_examples], flat[num_examples : 2 * num_examples]
    np.testing.assert_array_equal(np.sort(first), np.arange(num_examples))
    np.testing.assert_array_equal(np.sort(second), np.arange(num_examples))
    # Epochs are shuffled differently, and neither is close to the identity order.
    assert np.mean(first == second) < 0.01
    assert abs(np.corrcoef(first, np.arange(num_examples))[0, 1]) < 0.05


def test_different_seeds_differ():
    a = _indices(4, seed=0, num_examples=1000, batch_size=64)
    b = _indices(4, seed=1, num_examples=1000, batch_size=64)
    assert np.mean(a == b) < 0.05


def test_resume_at_any_step_gives_the_same_batches():
    """A run restarted at step k (fresh trace, step as a traced scalar inside lax.scan) sees the
    batches an uninterrupted run sees."""
    kwargs = dict(seed=3, num_examples=250, batch_size=32)
    total, window = 40, 10
    uninterrupted = _indices(total + window, **kwargs)

    @jax.jit
    def resumed_from(start):
        def body(step, _):
            return step + 1, data.batch_indices(step, **kwargs)

        return lax.scan(body, start, None, length=window)[1]

    for start in (1, 7, 8, 23, total - 1):
        got = np.asarray(resumed_from(jnp.int32(start)))
        np.testing.assert_array_equal(got, uninterrupted[start : start + window])
    # Python-int steps (eager) agree with traced ones too.
    np.testing.assert_array_equal(np.asarray(data.batch_indices(17, **kwargs)), uninterrupted[17])


_CHILD = textwrap.dedent(
    """
    import hashlib, sys
    import jax, jax.numpy as jnp, numpy as np
    from gan_jax.data import batch_indices
    f = jax.jit(lambda s: batch_indices(s, seed=int(sys.argv[1]), num_examples=1000,
                                        batch_size=64))
    rows = np.stack([np.asarray(f(jnp.int32(s))) for s in range(0, 200, 7)])
    print(hashlib.sha256(rows.tobytes()).hexdigest())
    """
)


def test_batch_sequence_identical_across_processes():
    """Same sequence in a fresh process, even one whose JAX random configuration differs."""
    f = jax.jit(lambda s: data.batch_indices(s, seed=11, num_examples=1000, batch_size=64))
    rows = np.stack([np.asarray(f(jnp.int32(s))) for s in range(0, 200, 7)])
    expected = hashlib.sha256(rows.tobytes()).hexdigest()
    flipped = "0" if jax.config.jax_threefry_partitionable else "1"
    for env in ({}, {"JAX_THREEFRY_PARTITIONABLE": flipped, "JAX_DEFAULT_PRNG_IMPL": "rbg"}):
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, "11"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        )
        assert child.stdout.strip().splitlines()[-1] == expected, env


def test_rejects_sizes_that_overflow_int32():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        data.batch_indices(0, seed=0, num_examples=2**20, batch_size=2**11)


def _toy_split(num=50, shape=(4, 4, 3)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, (num,)).astype(np.int32)
    return images, labels


@pytest.mark.parametrize(
    "pixel_range, expected", [("unit", lambda x: x / 255.0), ("symmetric", lambda x: x / 127.5 - 1)]
)
def test_gather_batch_scales_and_keeps_labels(pixel_range, expected):
    images, labels = _toy_split()
    indices = jnp.array([3, 0, 49, 3], jnp.int32)
    batch = jax.jit(functools.partial(data.gather_batch, pixel_range=pixel_range))(
        images, labels, indices
    )
    assert batch["image"].dtype == jnp.float32 and batch["label"].dtype == jnp.int32
    want = expected(images[np.asarray(indices)].astype(np.float64))
    np.testing.assert_allclose(np.asarray(batch["image"]), want, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(batch["label"]), labels[np.asarray(indices)])
    low, high = (0.0, 1.0) if pixel_range == "unit" else (-1.0, 1.0)
    full = data.gather_batch(images, labels, jnp.arange(50), pixel_range=pixel_range)["image"]
    assert float(full.min()) >= low and float(full.max()) <= high


def test_gather_batch_rejects_unknown_pixel_range():
    images, labels = _toy_split()
    with pytest.raises(ValueError, match="unit"):
        data.gather_batch(images, labels, jnp.array([0]), pixel_range="0_255")


def test_sample_batch_is_indices_then_gather():
    images, labels = _toy_split()
    step = jnp.int32(9)
    batch = data.sample_batch(images, labels, step, seed=2, batch_size=8, pixel_range="unit")
    indices = data.batch_indices(step, seed=2, num_examples=50, batch_size=8)
    rows = images[np.asarray(indices)].astype(np.float32)
    # The documented formula, bit for bit, and within float32 rounding of x / 255.
    np.testing.assert_array_equal(np.asarray(batch["image"]), rows * np.float32(1 / 255))
    np.testing.assert_allclose(np.asarray(batch["image"]), rows / 255.0, rtol=1e-7)


def test_shard_map_devices_compute_their_rows_of_the_global_batch():
    devices = jax.devices()
    assert len(devices) == 4  # tests/conftest.py forces four CPU devices
    mesh = jax.make_mesh((4,), ("data",), devices=devices)
    images, labels = _toy_split()
    images, labels = data.to_device(images, labels)
    batch_size, local = 16, 4

    def per_device(images, labels, step):
        offset = lax.axis_index("data") * local
        return data.sample_batch(
            images,
            labels,
            step,
            seed=7,
            batch_size=batch_size,
            pixel_range="symmetric",
            offset=offset,
            size=local,
        )

    sharded = jax.jit(
        jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P()), out_specs=P("data"))
    )
    for step in (0, 3, 12):  # 12: the batch straddles an epoch boundary (12 * 16 = 192 < 200)
        got = sharded(images, labels, jnp.int32(step))
        want = data.sample_batch(
            images, labels, step, seed=7, batch_size=batch_size, pixel_range="symmetric"
        )
        np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(want["image"]))
        np.testing.assert_array_equal(np.asarray(got["label"]), np.asarray(want["label"]))


def test_pmap_devices_compute_their_rows_of_the_global_batch():
    images, labels = _toy_split()
    local = 3

    def per_device(step):
        offset = lax.axis_index("data") * local
        return data.batch_indices(
            step, seed=1, num_examples=50, batch_size=4 * local, offset=offset, size=local
        )

    got = jax.pmap(per_device, axis_name="data")(jnp.full((4,), 5, jnp.int32))
    want = data.batch_indices(5, seed=1, num_examples=50, batch_size=4 * local)
    np.testing.assert_array_equal(np.asarray(got).reshape(-1), np.asarray(want))


def test_to_device_replicates_by_default_and_shards_on_request():
    images, labels = _toy_split(num=8)
    rep_images, rep_labels = data.to_device(images, labels)
    assert rep_images.dtype == jnp.uint8 and rep_labels.dtype == jnp.int32
    assert rep_images.sharding.is_fully_replicated and rep_labels.sharding.is_fully_replicated
    assert len(rep_images.sharding.device_set) == 4
    np.testing.assert_array_equal(np.asarray(rep_images), images)

    mesh = jax.make_mesh((4,), ("data",))
    sh_images, sh_labels = data.to_device(images, labels, sharding=NamedSharding(mesh, P("data")))
    assert not sh_images.sharding.is_fully_replicated
    assert sh_images.addressable_shards[0].data.shape == (2, 4, 4, 3)
    assert sh_labels.addressable_shards[0].data.shape == (2,)
    np.testing.assert_array_equal(np.asarray(sh_images), images)
    np.testing.assert_array_equal(np.asarray(sh_labels), labels)
    # Sampling under jit works on the sharded split too (XLA gathers across devices).
    batch = jax.jit(functools.partial(data.sample_batch, seed=0, batch_size=4, pixel_range="unit"))(
        sh_images, sh_labels, jnp.int32(1)
    )
    indices = np.asarray(data.batch_indices(1, seed=0, num_examples=8, batch_size=4))
    np.testing.assert_array_equal(np.asarray(batch["label"]), labels[indices])
