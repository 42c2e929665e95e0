"""The MNIST feature network: a small CNN whose 128-d penultimate features and logits feed metrics.

Input contract: float images [N, 28, 28, 1] with pixels in [0, 1] (uint8 / 255, ink bright on a
dark background, as in MNIST). `to_unit_range` converts uint8 images or a generator's [-1, 1] or
[0, 1] output. Stacked-MNIST images [N, 28, 28, 3] are scored one channel at a time, each channel
an MNIST digit (`embed`).

The weights ship inside the package (`weights/mnist_cnn.msgpack`, flax.serialization msgpack: plain
arrays, no pickle) with a JSON sidecar holding the version tag, the file's sha256, the test accuracy
and the command that trained them (`experiments/train_mnist_classifier.py`). `load_feature_network`
checks the hash before use, and every metric result records the tag and hash.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import xla_options

IMAGE_SIZE = 28
NUM_CLASSES = 10
FEATURE_DIM = 128
WEIGHTS_DIR = pathlib.Path(__file__).parent / "weights"
WEIGHTS_NAME = "mnist_cnn.msgpack"
SIDECAR_NAME = "mnist_cnn.json"

# MNIST's pixel mean and standard deviation on [0, 1]: standardising inside the network keeps the
# input contract a plain [0, 1] image while the first layer sees zero-mean, unit-variance input.
_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, of x [N, H, W, C] with even H and W, as a reshape and a max.

    Same values as `nn.max_pool(x, (2, 2), strides=(2, 2))`, but its gradient is a cheap
    elementwise mask instead of XLA's select-and-scatter, which is about 8x slower on CPU.
    """
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class MnistCNN(nn.Module):
    """Conv 32 5x5 → ReLU → max-pool 2 → Conv 64 5x5 → ReLU → max-pool 2 → Dense 128 → ReLU
    (the features) → dropout → Dense 10 (the logits). 'VALID' convolutions: 28 → 24 → 12 → 8 → 4.

    About 3.9 M multiply-adds per image, so 10,000 images take about a second on 2 CPU cores.
    """

    feature_dim: int = FEATURE_DIM
    num_classes: int = NUM_CLASSES
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """images [N, 28, 28, 1] in [0, 1] → (features [N, 128] >= 0, logits [N, 10])."""
        x = (images - _MNIST_MEAN) / _MNIST_STD
        x = _max_pool_2x2(nn.relu(nn.Conv(32, (5, 5), padding="VALID", name="conv1")(x)))
        x = _max_pool_2x2(nn.relu(nn.Conv(64, (5, 5), padding="VALID", name="conv2")(x)))
        x = x.reshape(x.shape[0], -1)
        features = nn.relu(nn.Dense(self.feature_dim, name="fc")(x))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
        logits = nn.Dense(self.num_classes, name="logits")(h)
        return features, logits


# ---------------------------------------------------------------------------------------------
# Pixel ranges and input checks.
# ---------------------------------------------------------------------------------------------


def to_unit_range(images: Any, *, pixel_range: tuple[float, float] | str = (0.0, 1.0)) -> Any:
    """Maps images to float32 in [0, 1], the feature network's input range.

    Args:
      images: uint8 images (always read as 0..255, `pixel_range` ignored) or float images whose
        pixels lie in `pixel_range`.
      pixel_range: (low, high) of float inputs, or "unit" for (0, 1) / "symmetric" for (-1, 1),
        the names gan_jax.models uses. Values outside are clipped, since a generator's output can
        overshoot by rounding (sigmoid/tanh saturate) and the classifier never saw such pixels.

    Returns:
      float32 array (NumPy in, NumPy out; JAX in, JAX out) of the same shape.
    """
    xp = jnp if isinstance(images, jax.Array) else np
    if images.dtype == np.uint8:
        return images.astype(xp.float32) / 255.0
    if isinstance(pixel_range, str):
        named = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}
        if pixel_range not in named:
            raise ValueError(f"pixel_range must be one of {sorted(named)} or (low, high).")
        pixel_range = named[pixel_range]
    low, high = pixel_range
    return xp.clip((images.astype(xp.float32) - low) / (high - low), 0.0, 1.0)


def check_images(images: Any) -> None:
    """Raises a ValueError that says what the feature network needs unless images fit it."""
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE) or shape[3] not in (1, 3):
        raise ValueError(
            "The MNIST feature network needs images of shape [N, 28, 28, 1] (MNIST) or "
            f"[N, 28, 28, 3] (Stacked MNIST, one digit per channel); got {shape}."
        )


# ---------------------------------------------------------------------------------------------
# The shipped weights.
# ---------------------------------------------------------------------------------------------


def sha256_of(path: str | pathlib.Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
    """The classifier's params with the tag and hash every metric result records."""

    params: Any
    version: str
    sha256: str
    test_accuracy: float

    @property
    def info(self) -> dict[str, Any]:
        """What results record about the network: {"name", "version", "sha256",
        "test_accuracy"}."""
        return {
            "name": "classifier",
            "version": self.version,
            "sha256": self.sha256,
            "test_accuracy": self.test_accuracy,
        }

    @property
    def cache_key(self) -> str:
        """The part of a reference cache's name that changes with the network."""
        return f"net{self.sha256[:16]}"

    def embed(
        self, images: Any, *, pixel_range: tuple[float, float] | str = (0.0, 1.0)
    ) -> Embedding:
        """`embed(self, images, pixel_range=...)`: features and per-channel logits."""
        return embed(self, images, pixel_range=pixel_range)


def save_weights(params: Any, directory: str | pathlib.Path, metadata: dict[str, Any]) -> str:
    """Writes params (msgpack) and a JSON sidecar of metadata and sha256; returns the hash."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params))
    (directory / WEIGHTS_NAME).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    sidecar = {**metadata, "weights_file": WEIGHTS_NAME, "sha256": digest}
    (directory / SIDECAR_NAME).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return digest


@functools.cache
def _load_cached(directory: str) -> FeatureNetwork:
    directory_path = pathlib.Path(directory)
    weights, sidecar = directory_path / WEIGHTS_NAME, directory_path / SIDECAR_NAME
    if not weights.exists() or not sidecar.exists():
        raise FileNotFoundError(
            f"No feature network in {directory_path} (need {WEIGHTS_NAME} and {SIDECAR_NAME}); "
            "train one with `python experiments/train_mnist_classifier.py`."
        )
    metadata = json.loads(sidecar.read_text())
    data = weights.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != metadata["sha256"]:
        raise ValueError(
            f"{weights} has sha256 {digest} but {sidecar} records {metadata['sha256']}: "
            "the weights were changed or corrupted; reinstall gan_jax or retrain."
        )
    # msgpack_restore builds plain dicts of NumPy arrays: no code runs, unlike pickle.
    params = flax.serialization.msgpack_restore(data)
    return FeatureNetwork(
        params=params,
        version=metadata["version"],
        sha256=digest,
        test_accuracy=float(metadata["test_accuracy"]),
    )


def load_feature_network(directory: str | pathlib.Path | None = None) -> FeatureNetwork:
    """Loads and hash-checks the shipped weights (or those in `directory`); cached per process."""
    return _load_cached(str(pathlib.Path(directory or WEIGHTS_DIR).resolve()))


# ---------------------------------------------------------------------------------------------
# Batched inference.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _apply_fn(platform: str):
    """The jitted classifier for `platform`, built on first use (compiler options depend on it)."""

    @xla_options.jit(platform=platform)
    def apply(params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        return MnistCNN().apply({"params": params}, images, train=False)

    return apply


def _apply(params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _apply_fn(jax.default_backend())(params, images)


def _padded_size(n: int, batch_size: int) -> int:
    """The batch shape n examples run at: batch_size, or the next power of two below it.

    Padding to a few fixed shapes means a handful of compilations serve every N, instead of
    one per distinct sample count (each costs seconds on CPU).
    """
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


def features_and_logits(
    params: Any, images: Any, *, batch_size: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Runs the classifier over images [N, 28, 28, 1] in [0, 1], batch by batch.

    Batches are padded to `_padded_size`, so one compiled program serves many N.

    Returns:
      (features float32 [N, 128], logits float32 [N, 10]) as NumPy arrays.
    """
    check_images(images)
    if images.shape[3] != 1:
        raise ValueError(f"features_and_logits takes one channel; got shape {images.shape}.")
    features, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = jnp.asarray(images[start : start + batch_size], jnp.float32)
        size = batch.shape[0]
        padded = _padded_size(size, batch_size)
        batch = jnp.pad(batch, ((0, padded - size), (0, 0), (0, 0), (0, 0)))
        f, lg = _apply(params, batch)
        features.append(np.asarray(f[:size]))
        logits.append(np.asarray(lg[:size]))
    return np.concatenate(features), np.concatenate(logits)


@dataclasses.dataclass(frozen=True)
class Embedding:
    """What the metrics consume for one image set.

    features: float32 [N, 128 * C], each channel's features side by side.
    logits: float32 [N, C, 10], each channel's class logits.
    """

    features: np.ndarray
    logits: np.ndarray

    @property
    def channel_labels(self) -> np.ndarray:
        """int [N, C]: each channel's predicted digit."""
        return self.logits.argmax(axis=-1)

    @property
    def labels(self) -> np.ndarray:
        """int [N]: the predicted class, digits of the channels read in base 10 (0..10^C - 1)."""
        weights = 10 ** np.arange(self.logits.shape[1] - 1, -1, -1)
        return self.channel_labels @ weights


def embed(
    network: FeatureNetwork,
    images: Any,
    *,
    pixel_range: tuple[float, float] | str = (0.0, 1.0),
    batch_size: int = 2000,
) -> Embedding:
    """Features and per-channel logits of images [N, 28, 28, C], C in {1, 3}, in `pixel_range`.

    Channels are classified separately (Stacked MNIST holds one MNIST digit per channel), so
    channel 0 gives the hundreds digit of a Stacked-MNIST label.
    """
    check_images(images)
    images = to_unit_range(images, pixel_range=pixel_range)
    n, channels = images.shape[0], images.shape[3]
    xp = jnp if isinstance(images, jax.Array) else np
    # [N, H, W, C] → [N * C, H, W, 1], example-major so a reshape restores [N, C, ...].
    per_channel = xp.moveaxis(images, 3, 1).reshape(n * channels, IMAGE_SIZE, IMAGE_SIZE, 1)
    features, logits = features_and_logits(network.params, per_channel, batch_size=batch_size)
    return Embedding(
        features=features.reshape(n, channels * features.shape[1]),
        logits=logits.reshape(n, channels, logits.shape[1]),
    )
