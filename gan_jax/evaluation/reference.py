"""Reference statistics of real data, cached on disk, and the scores of a sample set against them.

For each (dataset, split, feature network) the reference holds what every evaluation compares
with: the feature mean and covariance (FID), the feature matrix and its k-NN radii (KID,
precision/recall) and, for the MNIST classifier, the predicted-class histogram. Computing it
means reading the split and running the network over it (seconds for the classifier, minutes
for Inception-v3 on a CPU), so it is done once and cached as a `.npz` file
(`np.load(allow_pickle=False)`: plain arrays) in `cache_dir()`, under a name that holds the
dataset, split, data seed, image shape and the feature network's key (its weights' sha256, and
for Inception its resize), so new weights never meet old stats.

`load_published_stats` reads the `.npz` of `mu` and `sigma` that pytorch-fid writes
(`--save-stats`) and papers publish: a reference with FID only.

The real-data floor is what a perfect generator would score: the same metrics for held-out real
images (training images, scored against the test reference). It is cached beside the reference
as JSON and reported beside every result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any

import numpy as np

from gan_jax import paths
from gan_jax.evaluation import classifier, feature_networks, metrics

# Bump when the cached contents or their meaning change; old files are then ignored.
CACHE_FORMAT = 1
DEFAULT_REFERENCE_SPLIT = "test"
DEFAULT_REFERENCE_EXAMPLES = 10_000  # the first this many images of the split
# Sample counts: 10,000 for MNIST (the test split's size), 26,000 for Stacked MNIST (PacGAN).
DEFAULT_NUM_SAMPLES = {"mnist": 10_000, "stacked_mnist": metrics.STACKED_MNIST_NUM_SAMPLES}
# KID's usual protocol (Binkowski et al.): 100 subsets of 1,000.
KID_NUM_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_K = 3
# torch-fidelity's Inception Score protocol: 10 splits of the samples.
INCEPTION_SCORE_SPLITS = 10


def cache_dir() -> pathlib.Path:
    """$GAN_JAX_CACHE_DIR/eval if set (`~` and relative paths allowed), else
    ~/.cache/gan_jax/eval; absolute."""
    root = os.environ.get("GAN_JAX_CACHE_DIR") or os.path.join("~", ".cache", "gan_jax")
    return pathlib.Path(paths.resolve(root)) / "eval"


def default_num_samples(dataset: str) -> int:
    """How many samples a dataset's evaluation uses unless told otherwise."""
    return DEFAULT_NUM_SAMPLES.get(dataset, 10_000)


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Statistics of one real split as seen by one feature network.

    mu: float64 [D]; cov: float64 [D, D] (D = 128 per image channel for the MNIST classifier,
      2,048 for Inception-v3).
    features: float32 [M, D], the split's features (M = the split's size, at most
      max_examples); None for published statistics (then KID and precision / recall are not
      computed).
    radii: float64 [M], squared distance of each feature row to its 3rd nearest neighbour (None
      with features).
    histogram: float64 [10^C], the frequencies of the classes the MNIST classifier predicts;
      None for Inception-v3.
    info: JSON-friendly description: dataset, split, data seed, sizes, the data's sha256, the
      feature network's tag and hash.
    """

    mu: np.ndarray
    cov: np.ndarray
    info: dict[str, Any]
    features: np.ndarray | None = None
    radii: np.ndarray | None = None
    histogram: np.ndarray | None = None


def _shape_tag(image_shape: tuple[int, ...] | None) -> str:
    """'' for a dataset's own image shape, else '-32x32x3' (old cache names stay valid)."""
    return "-" + "x".join(str(int(d)) for d in image_shape) if image_shape else ""


def _cache_stem(
    dataset: str,
    split: str,
    *,
    data_seed: int,
    max_examples: int,
    network_key: str,
    image_shape: tuple[int, ...] | None = None,
) -> str:
    return (
        f"{dataset}-{split}-seed{data_seed}-max{max_examples}{_shape_tag(image_shape)}-"
        f"{network_key}-v{CACHE_FORMAT}"
    )


def _atomic_write(path: pathlib.Path, write) -> None:
    """Writes through a temporary file in the same directory and renames it into place, so a
    crash or a concurrent writer never leaves a half-written cache file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _num_channels(dataset: str) -> int:
    return 3 if dataset == "stacked_mnist" else 1


def load_real_images(
    dataset: str,
    split: str,
    *,
    data_dir: str | None = None,
    data_seed: int = 0,
    max_examples: int | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """uint8 [N, H, W, C] real images from gan_jax.data, the first max_examples of the split,
    at `image_shape` (None: the dataset's own; gan_jax.data.load_split resizes otherwise)."""
    from gan_jax import data  # noqa: PLC0415 (the data stack loads TFDS; only needed here)
    from gan_jax.config import POINT_DATASETS  # noqa: PLC0415

    if dataset in POINT_DATASETS:
        raise ValueError(
            f"{dataset!r} holds 2-D points, not images: gan_jax.evaluate.evaluate_points scores it."
        )
    images, _ = data.load_split(
        dataset,
        split,
        data_dir=data_dir or None,
        seed=data_seed,
        image_shape=tuple(image_shape) if image_shape else None,
    )
    return images[:max_examples] if max_examples else images


FeatureNetwork = classifier.FeatureNetwork | feature_networks.InceptionNetwork
Embedding = classifier.Embedding | feature_networks.InceptionEmbedding


def compute_reference(
    images: np.ndarray,
    network: FeatureNetwork,
    *,
    info: dict[str, Any] | None = None,
) -> ReferenceStats:
    """ReferenceStats of real images uint8 [N, H, W, C] (C = 1 or 3; 28 x 28 for the MNIST
    classifier)."""
    embedding = network.embed(images)
    mu, cov = metrics.feature_statistics(embedding.features)
    histogram = None
    if isinstance(embedding, classifier.Embedding):
        histogram = metrics.class_histogram(embedding.labels, 10 ** embedding.logits.shape[1])
    return ReferenceStats(
        mu=mu,
        cov=cov,
        features=embedding.features,
        radii=metrics.knn_radii(embedding.features, k=PR_K),
        histogram=histogram,
        info={
            **(info or {}),
            "num_examples": int(images.shape[0]),
            "image_shape": [int(d) for d in images.shape[1:]],
            "data_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
            "feature_network": network.info,
        },
    )


def _save_reference(path: pathlib.Path, stats: ReferenceStats) -> None:
    arrays = {
        f.name: getattr(stats, f.name)
        for f in dataclasses.fields(stats)
        if f.name != "info" and getattr(stats, f.name) is not None
    }
    info = np.array(json.dumps(stats.info))
    _atomic_write(path, lambda f: np.savez(f, info=info, **arrays))


def _load_reference(path: pathlib.Path) -> ReferenceStats:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return ReferenceStats(info=json.loads(str(arrays.pop("info"))), **arrays)


def get_reference(
    dataset: str,
    *,
    split: str = DEFAULT_REFERENCE_SPLIT,
    network: FeatureNetwork | None = None,
    data_dir: str | None = None,
    data_seed: int = 0,
    max_examples: int = DEFAULT_REFERENCE_EXAMPLES,
    image_shape: tuple[int, ...] | None = None,
    use_cache: bool = True,
) -> ReferenceStats:
    """The reference statistics of a split: from the cache, else computed and cached.

    Args:
      dataset: "mnist" or "stacked_mnist" for the MNIST classifier; any image dataset of
        gan_jax.data for Inception-v3.
      split: "test" (the default reference) or "train".
      network: the feature network; the shipped MNIST classifier by default.
      data_dir: TFDS data dir for gan_jax.data.
      data_seed: Stacked MNIST's construction seed.
      max_examples: use the first this many images of the split.
      image_shape: (H, W, C) to resize the real images to, as training does
        (config.image_shape); None keeps the dataset's own.
      use_cache: False recomputes and overwrites the cache file.
    """
    network = network or classifier.load_feature_network()
    path = cache_dir() / (
        _cache_stem(
            dataset,
            split,
            data_seed=data_seed,
            max_examples=max_examples,
            network_key=network.cache_key,
            image_shape=image_shape,
        )
        + ".npz"
    )
    if use_cache and path.exists():
        try:
            return _load_reference(path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable (e.g. written by another version): recompute below
    images = load_real_images(
        dataset,
        split,
        data_dir=data_dir,
        data_seed=data_seed,
        max_examples=max_examples,
        image_shape=image_shape,
    )
    stats = compute_reference(
        images,
        network,
        info={"dataset": dataset, "split": split, "data_seed": data_seed, "cache_file": path.name},
    )
    _save_reference(path, stats)
    return stats


class StatsFileError(ValueError):
    """A published-statistics file that cannot be read or is not mu [D] and sigma [D, D]."""


def load_published_stats(path: str | os.PathLike) -> ReferenceStats:
    """A reference from a `.npz` of `mu` [D] and `sigma` [D, D], as pytorch-fid's
    `--save-stats` writes them and papers publish them (Inception pool features, D = 2,048).

    Such a reference gives FID only: KID and precision / recall need the real features, which the
    file does not hold. Raises StatsFileError naming what is wrong with the file; the file is only
    read.
    """
    path = pathlib.Path(paths.resolve(path))
    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as error:
        raise StatsFileError(f"Cannot read FID statistics from {path}: {error}") from error
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise StatsFileError(
            f"{path} is one array, not a .npz of 'mu' [D] and 'sigma' [D, D] (pytorch-fid "
            "--save-stats)."
        )
    with stored:
        if not {"mu", "sigma"} <= set(stored.files):
            raise StatsFileError(
                f"{path} holds {sorted(stored.files)}; published FID statistics are a .npz with "
                "'mu' [D] and 'sigma' [D, D] (pytorch-fid --save-stats)."
            )
        try:
            mu, sigma = stored["mu"].astype(np.float64), stored["sigma"].astype(np.float64)
        except (OSError, ValueError) as error:  # truncated, or object arrays (no pickles)
            raise StatsFileError(f"Cannot read mu and sigma from {path}: {error}") from error
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise StatsFileError(
            f"{path}: mu must be [D] and sigma [D, D]; got {mu.shape} and {sigma.shape}."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsFileError(f"{path}: mu or sigma holds NaN or infinite values.")
    return ReferenceStats(
        mu=mu,
        cov=sigma,
        info={"split": "published", "stats_file": str(path), "feature_dim": int(mu.shape[0])},
    )


# ---------------------------------------------------------------------------------------------
# Scoring a sample set against a reference.
# ---------------------------------------------------------------------------------------------


def score_embedding(
    embedding: Embedding,
    reference: ReferenceStats,
    *,
    kid_subsets: int = KID_NUM_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of one sample set (as features and logits) against a reference.

    Precision and recall use the first min(N, M) samples, since k-NN radii shrink as a set grows
    and the two sets must be of one size for the two numbers to be comparable.

    Returns a JSON-friendly dict: num_samples, fid; with the reference's features (all but
    published statistics) kid (mean) and kid_std, precision, recall. Then, for the MNIST
    classifier's embedding: classifier_score, class_kl (KL(sample classes || reference
    classes), nats), and for three-channel images modes and kl_to_uniform (Stacked MNIST),
    class_histogram for one-channel images; for Inception-v3's: inception_score and
    inception_score_std (torch-fidelity's 10 splits).
    """
    features = embedding.features
    if features.shape[1] != reference.mu.shape[0]:
        what = (
            f"images with {embedding.logits.shape[1]} channel(s)"
            if isinstance(embedding, classifier.Embedding)
            else "features of another network"
        )
        raise ValueError(
            f"Samples have {features.shape[1]}-d features, the reference "
            f"{reference.mu.shape[0]}-d: {what} cannot be scored against "
            f"{reference.info.get('dataset', reference.info.get('stats_file'))!r}."
        )
    mu, cov = metrics.feature_statistics(features)
    result: dict[str, Any] = {
        "num_samples": int(features.shape[0]),
        "fid": metrics.frechet_distance(mu, cov, reference.mu, reference.cov),
    }
    if reference.features is not None:
        result.update(
            _kid_and_precision_recall(features, reference, kid_subsets, kid_subset_size, seed)
        )
    if isinstance(embedding, feature_networks.InceptionEmbedding):
        from gan_jax.evaluation import inception  # noqa: PLC0415

        if features.shape[0] >= INCEPTION_SCORE_SPLITS:
            score, score_std = inception.inception_score(
                embedding.logits, splits=INCEPTION_SCORE_SPLITS
            )
            result.update(inception_score=score, inception_score_std=score_std)
        return result
    result["classifier_score"] = metrics.classifier_score(embedding.logits)
    if reference.histogram is not None:
        histogram = metrics.class_histogram(embedding.labels, reference.histogram.shape[0])
        result["class_kl"] = metrics.kl_divergence(histogram, reference.histogram)
        if embedding.logits.shape[1] != 3:
            result["class_histogram"] = [round(float(h), 6) for h in histogram]
    if embedding.logits.shape[1] == 3:
        modes = metrics.stacked_mnist_modes(embedding.channel_labels)
        result.update(modes=modes["modes"], kl_to_uniform=modes["kl_to_uniform"])
    return result


def _kid_and_precision_recall(
    features: np.ndarray,
    reference: ReferenceStats,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
) -> dict[str, float]:
    """KID (mean, std over subsets) and precision / recall of features [N, D] against the
    reference's features."""
    kid_mean, kid_std = metrics.kid(
        features,
        reference.features,
        num_subsets=kid_subsets,
        subset_size=kid_subset_size,
        seed=seed,
    )
    pr_size = min(features.shape[0], reference.features.shape[0])
    precision, recall = metrics.precision_recall(
        reference.features[:pr_size],
        features[:pr_size],
        k=PR_K,
        real_radii=reference.radii if pr_size == reference.features.shape[0] else None,
    )
    return {"kid": kid_mean, "kid_std": kid_std, "precision": precision, "recall": recall}


def get_floor(
    dataset: str,
    *,
    reference: ReferenceStats | None = None,
    network: FeatureNetwork | None = None,
    num_samples: int | None = None,
    data_dir: str | None = None,
    data_seed: int = 0,
    image_shape: tuple[int, ...] | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """The real-data floor: the first num_samples training images scored like generated ones.

    Against the default reference (the test split), this is FID of 10,000 training images
    against the 10,000 test images for MNIST; for Stacked MNIST, 26,000 training images, so the
    mode count is on the PacGAN protocol's sample size. Cached as JSON beside the reference.
    A reference without the real data's hash (published statistics) has no floor: ValueError.
    """
    network = network or classifier.load_feature_network()
    reference = reference or get_reference(
        dataset,
        network=network,
        data_dir=data_dir,
        data_seed=data_seed,
        image_shape=image_shape,
        use_cache=use_cache,
    )
    if "data_sha256" not in reference.info:
        raise ValueError(
            "The reference has no real images to draw a floor from (published statistics); "
            "evaluate without the floor (include_floor=False, --no_floor)."
        )
    num_samples = num_samples or default_num_samples(dataset)
    # Keyed by what the floor depends on: the reference's data and network, the floor's images.
    path = cache_dir() / (
        f"floor-{dataset}-seed{data_seed}-train{num_samples}{_shape_tag(image_shape)}-"
        f"ref{reference.info['data_sha256'][:16]}-{network.cache_key}-v{CACHE_FORMAT}.json"
    )
    if use_cache and path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    images = load_real_images(
        dataset,
        "train",
        data_dir=data_dir,
        data_seed=data_seed,
        max_examples=num_samples,
        image_shape=image_shape,
    )
    floor = score_embedding(network.embed(images), reference)
    floor["source"] = f"{dataset} train[:{images.shape[0]}] against the reference"
    _atomic_write(path, lambda f: f.write(json.dumps(floor, indent=1).encode()))
    return floor
