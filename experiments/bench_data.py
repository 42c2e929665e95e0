"""Benchmark: the device cost of drawing one batch from a device-resident split.

    python experiments/bench_data.py                 # MNIST and Stacked MNIST, batch 256
    python experiments/bench_data.py --synthetic     # random uint8 splits of the same shapes

For each dataset it times, jitted and on the default device, with block_until_ready:
  - sample_batch:   indices + gather + scaling of one batch, one dispatch per batch;
  - batch_indices:  the index computation alone;
  - in lax.scan:    sample_batch for `--scan` steps inside one dispatch (as a fused training loop
                    draws them), reported per batch: the marginal cost without dispatch overhead;
  - permutation:    for reference, jax.random.permutation of N (what a per-epoch shuffle costs
                    if materialised).
Each number is the median over `--windows` windows of `--per-window` calls. The target is < 1 ms
per batch of 256 on CPU.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gan_jax import data


def _median_us(fn, *, windows: int, per_window: int) -> float:
    """Median over windows of the mean time per call, in microseconds (after one warm-up)."""
    jax.block_until_ready(fn(0))
    times = []
    for w in range(windows):
        start = time.perf_counter()
        out = None
        for i in range(per_window):
            out = fn(w * per_window + i)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / per_window)
    return float(np.median(times)) * 1e6


def bench(name, images, labels, *, batch_size, windows, per_window, scan_steps):
    images, labels = data.to_device(images, labels)
    num = images.shape[0]
    sample = jax.jit(
        functools.partial(data.sample_batch, seed=0, batch_size=batch_size, pixel_range="symmetric")
    )
    indices = jax.jit(
        functools.partial(data.batch_indices, seed=0, num_examples=num, batch_size=batch_size)
    )

    @jax.jit
    def scanned(images, labels, first_step):
        def body(carry, step):
            batch = data.sample_batch(
                images, labels, step, seed=0, batch_size=batch_size, pixel_range="symmetric"
            )
            # The barrier makes XLA produce the whole batch; reading two pixels of it then costs
            # nothing (a reduction over the batch would cost more than the sampling on CPU).
            batch = lax.optimization_barrier(batch)
            return carry + batch["image"][0, 0, 0, 0] + batch["image"][-1, -1, -1, -1], None

        steps = first_step + jnp.arange(scan_steps, dtype=jnp.int32)
        return lax.scan(body, jnp.float32(0), steps)[0]

    permutation = jax.jit(lambda e: jax.random.permutation(jax.random.key(e), num))
    row = {
        "dataset": name,
        "N": num,
        "image": "x".join(map(str, images.shape[1:])),
        "sample_batch": _median_us(
            lambda s: sample(images, labels, jnp.int32(s)), windows=windows, per_window=per_window
        ),
        "batch_indices": _median_us(
            lambda s: indices(jnp.int32(s)), windows=windows, per_window=per_window
        ),
        "in lax.scan": _median_us(
            lambda s: scanned(images, labels, jnp.int32(s * scan_steps)),
            windows=windows,
            per_window=max(1, per_window // scan_steps),
        )
        / scan_steps,
        "permutation": _median_us(
            lambda s: permutation(jnp.int32(s)), windows=max(3, windows // 4), per_window=3
        ),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="random splits, no preparation")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--windows", type=int, default=15)
    parser.add_argument("--per_window", type=int, default=100)
    parser.add_argument("--scan", type=int, default=50, help="steps per dispatch in the scan row")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows = []
    for name, shape, count in (
        ("mnist", (28, 28, 1), 60_000),
        ("stacked_mnist", (28, 28, 3), 128_000),
    ):
        if args.synthetic:
            images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
            labels = rng.integers(0, 10, (count,)).astype(np.int32)
        else:
            images, labels = data.load_split(name, "train", data_dir=args.data_dir)
        rows.append(
            bench(
                name,
                images,
                labels,
                batch_size=args.batch_size,
                windows=args.windows,
                per_window=args.per_window,
                scan_steps=args.scan,
            )
        )
        del images, labels

    device = jax.devices()[0]
    print(
        f"\nbatch {args.batch_size}, {device.platform} ({device.device_kind}), "
        f"JAX {jax.__version__}; median of {args.windows} windows, microseconds per batch"
    )
    header = [
        "dataset",
        "N",
        "image",
        "sample_batch",
        "batch_indices",
        "in lax.scan",
        "permutation",
    ]
    print(" | ".join(f"{h:>13}" for h in header))
    print(" | ".join("-" * 13 for _ in header))
    for row in rows:
        print(
            " | ".join(
                f"{row[h]:>13.1f}" if isinstance(row[h], float) else f"{row[h]!s:>13}"
                for h in header
            )
        )


if __name__ == "__main__":
    main()
