"""Trains the MNIST feature network that gan_jax's metrics use, and writes it into the package.

Launch (what produced the shipped weights: 11.5 and 21 minutes in two runs on 2 CPU cores shared
with other jobs, load average 6 to 10):

    python experiments/train_mnist_classifier.py --seed 0

Result it should reach: at least 99.3% test accuracy; the shipped weights reach 99.43%, recorded
with their sha256 in gan_jax/evaluation/weights/mnist_cnn.json. The network is
`gan_jax.evaluation.classifier.MnistCNN`; training uses random shifts of up to 2 pixels, dropout 0.5
and Adam (2e-3) with a cosine decay over 12 epochs of 128-image batches. The data are the canonical
60,000 / 10,000 MNIST splits from `gan_jax.data.load_split`. The final epoch's weights are saved (no
selection on the test set); the script refuses to write weights below --min_accuracy.

Reproducibility, measured: everything random derives from --seed through `jax.random.fold_in`,
and two runs on the same 2-core machine wrote bit-identical weights (same sha256), under different
machine load. XLA:CPU splits work by thread count, so float rounding differs across core counts:
the same command pinned to 1 core (`taskset -c 0`) reached 99.50% with different weights.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import shlex
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_jax.evaluation import classifier

VERSION = "mnist-cnn-v1"
MAX_SHIFT = 2  # pixels of random translation in each direction


def load_mnist(data_dir: str | None) -> tuple[np.ndarray, ...]:
    """(train images uint8 [60000,28,28,1], labels [60000], test images [10000,...], labels)."""
    from gan_jax import data  # noqa: PLC0415 (imported late: only the trainer needs the data)

    train_x, train_y = data.load_split("mnist", "train", data_dir=data_dir)
    test_x, test_y = data.load_split("mnist", "test", data_dir=data_dir)
    return train_x, train_y, test_x, test_y


def random_shift(key: jax.Array, images: jax.Array, *, max_shift: int) -> jax.Array:
    """Translates each image [B, H, W, C] by up to max_shift pixels, filling with black (0)."""
    b, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.partial(jax.jit, static_argnames=("optimizer",), donate_argnums=(0, 1))
def train_step(
    params: Any,
    opt_state: Any,
    images: jax.Array,
    labels: jax.Array,
    index: jax.Array,
    key: jax.Array,
    *,
    optimizer: optax.GradientTransformation,
) -> tuple[Any, Any, jax.Array]:
    """One Adam step on the examples `index` [B] of the device-resident images uint8 [N,28,28,1].

    A Python loop calls this once per batch rather than a `lax.scan` over the epoch: on XLA:CPU
    (JAX 0.10) a convolution's weight gradient inside a scan/while body runs about 20x slower
    than the same op at top level (measured: 600 ms against 31 ms for conv2's).
    Returns (params, opt_state, loss).
    """
    shift_key, dropout_key = jax.random.split(key)
    batch = classifier.to_unit_range(images[index])
    batch = random_shift(shift_key, batch, max_shift=MAX_SHIFT)

    def loss_fn(p):
        _, logits = classifier.MnistCNN().apply(
            {"params": p}, batch, train=True, rngs={"dropout": dropout_key}
        )
        return cross_entropy(logits, labels[index])

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """int32 [num_examples // batch_size, batch_size]: a fresh permutation, remainder dropped."""
    order = jax.random.permutation(key, num_examples)
    num_steps = num_examples // batch_size
    return order[: num_steps * batch_size].reshape(num_steps, batch_size)


def accuracy(params: Any, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images [N, 28, 28, 1] uint8 whose argmax logit equals the label."""
    _, logits = classifier.features_and_logits(params, classifier.to_unit_range(images))
    return float((logits.argmax(axis=1) == labels).mean())


def train(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    log=print,
) -> tuple[Any, float]:
    """Trains from scratch; returns (params, final test accuracy)."""
    key = jax.random.key(seed)
    params = classifier.MnistCNN().init(
        jax.random.fold_in(key, 0), jnp.zeros((1, 28, 28, 1)), train=False
    )["params"]
    steps = epochs * (train_x.shape[0] // batch_size)
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    opt_state = optimizer.init(params)
    images, labels = jnp.asarray(train_x), jnp.asarray(train_y, jnp.int32)
    test_accuracy = float("nan")
    for epoch in range(epochs):
        start = time.time()
        epoch_key = jax.random.fold_in(jax.random.fold_in(key, 1), epoch)
        batches = epoch_batches(jax.random.fold_in(epoch_key, 0), images.shape[0], batch_size)
        losses = []
        for step, index in enumerate(batches):
            params, opt_state, loss = train_step(
                params,
                opt_state,
                images,
                labels,
                index,
                jax.random.fold_in(epoch_key, step + 1),
                optimizer=optimizer,
            )
            losses.append(loss)
        loss = jnp.stack(losses).mean()
        test_accuracy = accuracy(params, test_x, test_y)
        log(
            f"epoch {epoch + 1}/{epochs}  loss {float(loss):.4f}  "
            f"test accuracy {100 * test_accuracy:.2f}%  ({time.time() - start:.1f} s)"
        )
    return params, test_accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's)")
    parser.add_argument(
        "--out", default=str(classifier.WEIGHTS_DIR), help="where to write the weights and sidecar"
    )
    parser.add_argument("--min_accuracy", type=float, default=0.993)
    args = parser.parse_args(argv)

    start = time.time()
    train_x, train_y, test_x, test_y = load_mnist(args.data_dir)
    params, test_accuracy = train(
        train_x,
        train_y,
        test_x,
        test_y,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    seconds = time.time() - start
    if test_accuracy < args.min_accuracy:
        sys.exit(
            f"Test accuracy {100 * test_accuracy:.2f}% is below --min_accuracy "
            f"{100 * args.min_accuracy:.2f}%; weights not written."
        )
    command = "python experiments/train_mnist_classifier.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    metadata = {
        "version": VERSION,
        "test_accuracy": test_accuracy,
        "seed": args.seed,
        "command": command.strip(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "train_seconds": round(seconds, 1),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "architecture": "conv32 5x5, pool, conv64 5x5, pool, dense128 (features), dense10",
        "input": "float32 [N, 28, 28, 1] in [0, 1]",
    }
    digest = classifier.save_weights(params, pathlib.Path(args.out), metadata)
    size = (pathlib.Path(args.out) / classifier.WEIGHTS_NAME).stat().st_size
    print(
        f"test accuracy {100 * test_accuracy:.2f}%; wrote {args.out}/{classifier.WEIGHTS_NAME} "
        f"({size / 1e6:.2f} MB, sha256 {digest}) in {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
