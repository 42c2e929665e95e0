"""Device-resident datasets: batches that are a pure function of (seed, step), drawn on device.

The split lives on device as uint8; each step gathers its batch there, so the hot loop never waits
on the host and a resumed run sees exactly the batches an uninterrupted run would.

Order of examples. Example positions run on across steps: the i-th example of step s is at
position p = s * batch_size + i, in epoch e = p // N at offset o = p % N (batches straddle epoch
boundaries; nothing is dropped). Epoch e visits the examples in the order of a permutation keyed by
`fold_in(key(seed), e)`, so every example appears exactly once per epoch. The permutation is never
materialised: it is a keyed bijection of [0, N) evaluated only at the batch's positions (a Feistel
network on the smallest power-of-two domain >= N, with cycle-walking back into [0, N)), which
costs O(batch) per step where `jax.random.permutation` would cost O(N log N).

Several real batches a step (WGAN-GP's critic updates). A train step with n_critic > 1
discriminator updates draws one batch per update: update i of step s takes the batch at draw
number s * n_critic + i (`step_batch_indices`), so examples still run on in order, each epoch
visits every example once, and n_critic = 1 is exactly the one batch a step above.

Stacked MNIST on the fly (`config.stack_on_the_fly`). Each real image is k = 3 MNIST digits
drawn at its step: the batch of B images reads the k * B digits of `batch_indices` with batch
size k * B, image i taking digits k*i .. k*i + k - 1 (`stack_digits` stacks them as channels).
So every epoch still visits each digit once, and the draw is a pure function of (seed, step).

Data parallelism. Under `jax.jit` with a sharded batch, call these as they are. Inside
`jax.shard_map` / `jax.pmap`, where each device builds only its part of the global batch, pass
`offset=lax.axis_index(axis) * local` and `size=local` (local = batch_size // num_devices): the
device computes exactly rows [offset, offset + local) of the global batch, so the concatenation over
devices equals the single-device batch. That needs the split replicated on every device (the
default of `to_device`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PIXEL_RANGES = ("unit", "symmetric", "identity")

_ROUNDS = 6  # Feistel rounds; 4 suffice for a pseudo-random permutation, 2 more are cheap
_INT32_LIMIT = 2**31


def _mix32(x: jax.Array) -> jax.Array:
    """A 32-bit avalanche mix (murmur3's finaliser): each output bit depends on every input bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _feistel(x: jax.Array, round_keys: jax.Array, *, bits: int) -> jax.Array:
    """A keyed bijection of [0, 2**bits) applied elementwise to uint32 `x`.

    round_keys: uint32 [..., _ROUNDS], broadcast against x. Unbalanced Feistel: the value is split
    into a high part of `hi` bits and a low part of `lo` bits; a round maps (H, L) to
    (L, H xor F(L)), which swaps the widths each round and is invertible for any F.
    """
    hi, lo = bits // 2, bits - bits // 2
    for r in range(_ROUNDS):
        high, low = x >> lo, x & jnp.uint32((1 << lo) - 1)
        f = _mix32(low * jnp.uint32(0x9E3779B1) ^ round_keys[..., r])
        x = (low << hi) | ((high ^ f) & jnp.uint32((1 << hi) - 1))
        hi, lo = lo, hi
    return x


def _round_keys(seed: int | jax.Array, epoch: jax.Array) -> jax.Array:
    """The Feistel round keys of one epoch: uint32 [_ROUNDS], from fold_in(key(seed), epoch).

    The key implementation is pinned (threefry) and the round keys are mixed from the folded key's
    two words here rather than drawn with jax.random.bits, whose output depends on the
    jax_threefry_partitionable flag: the batch order must not change with JAX configuration.
    """
    key = jax.random.fold_in(jax.random.key(seed, impl="threefry2x32"), epoch)
    words = jax.random.key_data(key)
    rounds = jnp.arange(1, _ROUNDS + 1, dtype=jnp.uint32)
    return _mix32(words[0] ^ _mix32(words[1] + rounds * jnp.uint32(0x9E3779B9)))


def _permute(offsets: jax.Array, round_keys: jax.Array, *, num_examples: int) -> jax.Array:
    """offsets int32 in [0, N) -> int32 in [0, N): a bijection of [0, N) per key (cycle-walking).

    The Feistel domain 2**bits is < 2N, so each walk step lands in range with probability > 1/2;
    the loop runs until every element has, a handful of steps for a batch.
    """
    bits = max(2, (num_examples - 1).bit_length())
    x = offsets.astype(jnp.uint32)
    if 2**bits == num_examples:
        return _feistel(x, round_keys, bits=bits).astype(jnp.int32)
    n = jnp.uint32(num_examples)

    def walk(y: jax.Array) -> jax.Array:
        return jnp.where(y >= n, _feistel(y, round_keys, bits=bits), y)

    y = _feistel(x, round_keys, bits=bits)
    y = lax.while_loop(lambda y: jnp.any(y >= n), walk, y)
    return y.astype(jnp.int32)


def _position(step: jax.Array, offset: jax.Array, *, num_examples: int, batch_size: int):
    """(epoch, offset-in-epoch) of position step * batch_size + offset, in int32 without overflow.

    With step = a N + b: step B = (a B) N + b B, so the epoch is a B + (b B) // N and the offset
    (b B) % N; b B < N B < 2**31 is checked by the caller.
    """
    n, b = num_examples, batch_size
    a, rem = step // n, step % n
    epoch = a * b + (rem * b) // n
    within = (rem * b) % n + offset
    return epoch + within // n, within % n


def batch_indices(
    step: int | jax.Array,
    *,
    seed: int | jax.Array,
    num_examples: int,
    batch_size: int,
    offset: int | jax.Array = 0,
    size: int | None = None,
) -> jax.Array:
    """The example indices of the batch at `step`: int32 [size] in [0, num_examples).

    Args:
      step: the training step (Python int or traced int32 scalar), >= 0.
      seed: the data seed (Python int or traced integer scalar).
      num_examples: N, the size of the split (static).
      batch_size: B, the global batch size (static); num_examples * batch_size must be < 2**31.
      offset: first row of the global batch to compute (may be traced, e.g.
        `lax.axis_index("data") * size` inside shard_map); default 0.
      size: how many rows to compute (static); default batch_size.

    Returns rows [offset, offset + size) of the global batch: a pure function of
    (seed, step, N, B); each epoch of N consecutive positions visits every example exactly once.
    Jittable, and usable inside lax.scan, vmap and shard_map.
    """
    if num_examples < 1 or batch_size < 1:
        raise ValueError(f"need num_examples, batch_size >= 1; got {num_examples}, {batch_size}")
    if num_examples * batch_size >= _INT32_LIMIT:
        raise ValueError(
            f"num_examples * batch_size = {num_examples * batch_size} must be < 2**31 for exact "
            "int32 position arithmetic"
        )
    size = batch_size if size is None else size
    step = jnp.asarray(step, jnp.int32)
    first_epoch, first = _position(
        step, jnp.asarray(offset, jnp.int32), num_examples=num_examples, batch_size=batch_size
    )
    within = first + jnp.arange(size, dtype=jnp.int32)  # < N + size: no overflow
    epochs_spanned = (size - 1) // num_examples + 2  # static bound on distinct epochs in a batch
    epochs = first_epoch + jnp.arange(epochs_spanned, dtype=jnp.int32)
    round_keys = jax.vmap(functools.partial(_round_keys, seed))(epochs)  # [epochs, _ROUNDS]
    round_keys = round_keys[within // num_examples]  # [size, _ROUNDS]: each row's epoch
    return _permute(within % num_examples, round_keys, num_examples=num_examples)


def step_batch_indices(
    step: int | jax.Array,
    *,
    n_critic: int,
    seed: int | jax.Array,
    num_examples: int,
    batch_size: int,
    offset: int | jax.Array = 0,
    size: int | None = None,
) -> jax.Array:
    """The example indices of train step `step`'s real batches: int32 [size] when n_critic is 1
    (`batch_indices(step, ...)` itself), else int32 [size, n_critic], whose column i is
    `batch_indices(step * n_critic + i, ...)`: the batch of critic update i, a pure function of
    (seed, step, i). Other arguments as in `batch_indices` (offset / size select rows of each
    global batch)."""
    kwargs = dict(
        seed=seed, num_examples=num_examples, batch_size=batch_size, offset=offset, size=size
    )
    if n_critic < 1:
        raise ValueError(f"n_critic must be at least 1, got {n_critic}")
    if n_critic == 1:
        return batch_indices(step, **kwargs)
    draws = jnp.asarray(step, jnp.int32) * n_critic + jnp.arange(n_critic, dtype=jnp.int32)
    return jax.vmap(functools.partial(batch_indices, **kwargs), out_axes=1)(draws)


def _rows(x: jax.Array, indices: jax.Array) -> jax.Array:
    """x[indices] along the leading axis. Indices come from batch_indices, in range by
    construction, so bounds handling is skipped. When x is split across devices on an explicit
    mesh axis, JAX asks where the rows should live: replicated, like an unsharded split's."""
    sharding = jax.typeof(x).sharding
    if len(sharding.spec) and sharding.spec[0] is not None:
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        return x.at[indices].get(mode="promise_in_bounds", out_sharding=replicated)
    return x.at[indices].get(mode="promise_in_bounds")


def gather_batch(
    images: jax.Array, labels: jax.Array, indices: jax.Array, *, pixel_range: str
) -> dict[str, jax.Array]:
    """Gathers and scales a batch on device.

    Args:
      images: uint8 [N, H, W, C] (float32 [N, D] points for "identity"); labels: int32 [N];
        indices: int32 [B] in [0, N), or any shape [*I] (e.g. [B, n_critic] from
        `step_batch_indices`).
      pixel_range: "unit" -> x / 255 in [0, 1]; "symmetric" -> x / 127.5 - 1 in [-1, 1];
        "identity" -> the float32 values as they are (the 2-D mixtures' points).

    Returns {"image": float32 [*I, H, W, C] (or [*I, D]), "label": int32 [*I]}.
    """
    if pixel_range not in PIXEL_RANGES:
        raise ValueError(f"pixel_range must be one of {PIXEL_RANGES}, got {pixel_range!r}")
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if (pixel_range == "identity") != jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"pixel_range {pixel_range!r} does not fit data of dtype {images.dtype}: uint8 "
            "images take 'unit' or 'symmetric', float points (the 2-D mixtures) 'identity'"
        )
    pixels = _rows(images, indices).astype(jnp.float32)
    if pixel_range == "identity":
        return {"image": pixels, "label": _rows(labels, indices).astype(jnp.int32)}
    # One rounding per pixel, written as a product so that eager, jit and every backend give the
    # same bits (XLA turns division by a constant into a product; numpy does not). The end points
    # come out exactly: 255 * (1/255) == 1 and (0 - 127.5) * (1/127.5) == -1 in float32.
    if pixel_range == "unit":
        pixels = pixels * jnp.float32(1 / 255)
    else:
        pixels = (pixels - jnp.float32(127.5)) * jnp.float32(1 / 127.5)
    label = _rows(labels, indices).astype(jnp.int32)
    return {"image": pixels, "label": label}


def sample_batch(
    images: jax.Array,
    labels: jax.Array,
    step: int | jax.Array,
    *,
    seed: int | jax.Array,
    batch_size: int,
    pixel_range: str,
    offset: int | jax.Array = 0,
    size: int | None = None,
    n_critic: int = 1,
) -> dict[str, jax.Array]:
    """`gather_batch(images, labels, step_batch_indices(step, ...))`: train step `step`'s batch.

    images uint8 [N, H, W, C], labels int32 [N] (on device); returns {"image": float32
    [size, H, W, C], "label": int32 [size]}, or with n_critic > 1 one batch per critic update,
    {"image": [size, n_critic, H, W, C], "label": [size, n_critic]} (the layout `train_step`
    takes). offset/size select rows of the global batch as in `batch_indices` (for shard_map /
    pmap).
    """
    indices = step_batch_indices(
        step,
        n_critic=n_critic,
        seed=seed,
        num_examples=images.shape[0],
        batch_size=batch_size,
        offset=offset,
        size=size,
    )
    return gather_batch(images, labels, indices, pixel_range=pixel_range)


def stack_digits(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Stacked MNIST made on the fly: k digits per image become its k channels.

    batch: {"image": f32 [*I, k, H, W, 1], "label": int32 [*I, k]}, e.g. `gather_batch` of
    indices [*I, k] into MNIST. Returns {"image": [*I, H, W, k], "label": [*I]}: digit j fills
    channel j and the label is sum_j digit_j * 10**(k - 1 - j) (100 a + 10 b + c for k = 3, as
    `stacked_mnist.make_stacked_mnist` labels its images).
    """
    images, labels = batch["image"], batch["label"]
    k = labels.shape[-1]
    weights = jnp.asarray([10 ** (k - 1 - j) for j in range(k)], jnp.int32)
    return {
        "image": jnp.moveaxis(images[..., 0], -3, -1),
        "label": jnp.sum(labels * weights, axis=-1, dtype=jnp.int32),
    }


def replicated_sharding() -> jax.sharding.NamedSharding:
    """A sharding that keeps a full copy on every device (of every process)."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def to_device(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Puts a split on device: images uint8 [N, H, W, C] (float points stay float32 [N, D]),
    labels int32 [N].

    sharding: None replicates both on every device (what sampling inside shard_map / pmap needs);
    otherwise the images' sharding, e.g. NamedSharding(mesh, P("data")) to split the examples
    across devices when a replica would not fit (use it under jit, not inside shard_map). Labels
    follow the sharding of the leading axis: replicated unless that sharding splits it.
    Multi-process: every process passes the same arrays; each uploads only its devices' parts.
    """
    images = np.asarray(images)
    images = np.asarray(
        images, np.float32 if np.issubdtype(images.dtype, np.floating) else np.uint8
    )
    labels = np.asarray(labels, np.int32)
    image_sharding = replicated_sharding() if sharding is None else sharding
    label_sharding = image_sharding
    if isinstance(image_sharding, jax.sharding.NamedSharding):
        spec = image_sharding.spec
        label_sharding = jax.sharding.NamedSharding(
            image_sharding.mesh, jax.sharding.PartitionSpec(*spec[:1])
        )

    def put(array: np.ndarray, where: jax.sharding.Sharding) -> jax.Array:
        return jax.make_array_from_callback(array.shape, where, lambda index: array[index])

    return put(images, image_sharding), put(labels, label_sharding)
