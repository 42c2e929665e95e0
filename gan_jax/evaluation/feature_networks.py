"""The evaluator's feature networks: which one scores a dataset, and Inception-v3 as one of them.

Two networks turn images into the features and logits the metrics read:
- "classifier": the shipped MNIST CNN (gan_jax.evaluation.classifier), 28x28 MNIST and Stacked
  MNIST only, seconds per 10,000 images on a CPU. The default for those two datasets.
- "inception": FID's Inception-v3 (gan_jax.evaluation.inception), any image size and 1 or 3
  channels, the network papers report FID, KID, precision / recall and the Inception Score with.
  The default for every other image dataset. Its weights are pytorch-fid's file, loaded (and
  converted once) by `inception.load_weights`.

Both network objects offer the same three things: `info` (what a result records about the
network), `cache_key` (the part of a cache file's name that changes with the network) and
`embed(images, pixel_range=...)` (features and logits as host arrays).

`InceptionNetwork.embed` runs the network in fixed-size batches spread over this process's
devices (a 1-D mesh, the batch split along it), so one compiled program serves every sample count
and a GPU or TPU host uses all its chips.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Literal

import jax
import numpy as np

from gan_jax import xla_options
from gan_jax.evaluation import classifier, inception

Features = Literal["classifier", "inception"]
FEATURES = ("classifier", "inception")
# The datasets the shipped MNIST classifier scores; Inception scores any image dataset.
CLASSIFIER_DATASETS = ("mnist", "stacked_mnist")
# Images per device per dispatch. The activations of one 299x299 image peak near 30 MB in
# float32, so 32 per device is about 1 GB: fits any accelerator and a CPU host.
DEFAULT_BATCH_PER_DEVICE = 32


def default_features(dataset: str) -> Features:
    """The feature network a dataset is scored with unless asked otherwise."""
    return "classifier" if dataset in CLASSIFIER_DATASETS else "inception"


def check_features(features: str, dataset: str) -> None:
    """Raises ConfigError (a ValueError) unless `features` names a network that can score
    `dataset`."""
    from gan_jax.config import ConfigError  # noqa: PLC0415

    if features not in FEATURES:
        raise ConfigError(f"features must be one of {FEATURES}; got {features!r}.")
    if features == "classifier" and dataset not in CLASSIFIER_DATASETS:
        raise ConfigError(
            f"The MNIST classifier scores {list(CLASSIFIER_DATASETS)} only; score {dataset!r} "
            "with features='inception' (--features inception)."
        )


@dataclasses.dataclass(frozen=True)
class InceptionEmbedding:
    """What the metrics consume for one image set under Inception-v3.

    features: float32 [N, 2048], the pool features (FID, KID, precision / recall).
    logits: float32 [N, 1008], the unbiased logits (the Inception Score).
    """

    features: np.ndarray
    logits: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class InceptionNetwork:
    """Inception-v3 with its weights and the anchor whose pre-processing it follows.

    resize: "pytorch_fid" (the default; FID equal to pytorch-fid's) or "torch_fidelity" (every
      metric as torch-fidelity computes it, the Inception Score included). One resize serves all
      metrics of an evaluation, so each image is run through the network once.
    batch_per_device: images per device per dispatch (the last batch is padded to it).
    """

    weights: inception.InceptionWeights
    resize: inception.Resize = "pytorch_fid"
    batch_per_device: int = DEFAULT_BATCH_PER_DEVICE

    @property
    def info(self) -> dict[str, Any]:
        """{"name", "version", "sha256", "resize"}: what results record about the network."""
        return {"name": "inception", **self.weights.info, "resize": self.resize}

    @property
    def cache_key(self) -> str:
        """Reference caches depend on the weights and the resize (it changes every feature)."""
        return f"inception-{self.resize}-{self.weights.sha256[:16]}"

    def embed(
        self, images: Any, *, pixel_range: tuple[float, float] | str = (0.0, 1.0)
    ) -> InceptionEmbedding:
        """Pool features and unbiased logits of images [N, H, W, C], C in {1, 3}, any H and W.

        uint8 images are read as 0..255 (the anchors' own input); float images have pixels in
        `pixel_range` ("symmetric" [-1, 1], "unit" [0, 1] or (low, high)) and are mapped to
        [0, 1] and clipped first.
        """
        return embed_inception(self, images, pixel_range=pixel_range)


def load_inception(
    weights_path: str | os.PathLike | None = None,
    *,
    resize: inception.Resize = "pytorch_fid",
    download: bool = True,
) -> InceptionNetwork:
    """The Inception network on pytorch-fid's weights (`inception.load_weights`, which says
    where to get the file when it is missing), loaded once per process per path."""
    if resize not in inception.RESIZE_MODES:
        raise ValueError(f"resize must be one of {inception.RESIZE_MODES}; got {resize!r}.")
    weights = _cached_weights(str(weights_path) if weights_path else None, download)
    return InceptionNetwork(weights, resize=resize)


@functools.cache
def _cached_weights(path: str | None, download: bool) -> inception.InceptionWeights:
    return inception.load_weights(path, download=download)


def load_network(
    features: Features,
    *,
    inception_weights: str | os.PathLike | None = None,
    resize: inception.Resize = "pytorch_fid",
) -> classifier.FeatureNetwork | InceptionNetwork:
    """The feature network `features` names ("classifier" or "inception")."""
    if features == "classifier":
        return classifier.load_feature_network()
    if features == "inception":
        return load_inception(inception_weights, resize=resize)
    raise ValueError(f"features must be one of {FEATURES}; got {features!r}.")


@functools.cache
def _sharded_forward(resize: str, platform: str, num_devices: int):
    """The jitted (variables, images [B, H, W, C]) -> (pool, logits) with the batch split over
    the first `num_devices` local devices and the variables replicated; one per resize."""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:num_devices]), ("batch",))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def forward(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        return inception.inception_features(variables, images, resize=resize)

    jitted = xla_options.jit(
        forward, platform=platform, in_shardings=(replicated, batch), out_shardings=batch
    )
    return jitted, batch, replicated


# The last weights put on the devices: (weights, sharding, device arrays). evaluate_generator
# embeds 1,000 samples per call, and 95 MB per device each time would be copied again for
# nothing; one entry bounds the device memory held to one copy of the network.
_placed: list[tuple[inception.InceptionWeights, Any, Any]] = []


def _placed_variables(weights: inception.InceptionWeights, sharding: Any) -> Any:
    """`weights.variables` replicated with `sharding`, put there once per weights object."""
    if not _placed or _placed[0][0] is not weights or _placed[0][1] != sharding:
        _placed[:] = [(weights, sharding, jax.device_put(weights.variables, sharding))]
    return _placed[0][2]


def embed_inception(
    network: InceptionNetwork,
    images: Any,
    *,
    pixel_range: tuple[float, float] | str = (0.0, 1.0),
) -> InceptionEmbedding:
    """`InceptionNetwork.embed`: see there."""
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] not in (1, 3) or shape[0] < 1:
        raise ValueError(
            f"Inception features need images [N, H, W, C] with N >= 1 and C = 1 or 3; got {shape}."
        )
    # uint8 becomes k / 255 in float32 on the host, as pytorch-fid's ToTensor divides, and
    # torch-fidelity's rounding turns it back into k exactly; so one compiled program per image
    # shape serves real and generated images alike.
    images = classifier.to_unit_range(np.asarray(images), pixel_range=pixel_range)
    num_devices = jax.local_device_count()
    chunk = network.batch_per_device * num_devices
    forward, batch_sharding, replicated = _sharded_forward(
        network.resize, jax.default_backend(), num_devices
    )
    variables = _placed_variables(network.weights, replicated)
    features, logits = [], []
    for start in range(0, shape[0], chunk):
        batch = images[start : start + chunk]
        size = batch.shape[0]
        # Padded to one shape, so one compiled program serves every N.
        batch = np.pad(batch, ((0, chunk - size), (0, 0), (0, 0), (0, 0)))
        pool, batch_logits = forward(variables, jax.device_put(batch, batch_sharding))
        features.append(np.asarray(pool)[:size])
        logits.append(np.asarray(batch_logits)[:size])
    return InceptionEmbedding(np.concatenate(features), np.concatenate(logits))
