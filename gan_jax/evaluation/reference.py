"""Reference statistics of real data, cached on disk, and the scores of a sample set against them.

For each (dataset, split, feature network) the reference holds what every evaluation compares
with: the feature mean and covariance (FID), the feature matrix and its k-NN radii (KID,
precision/recall) and the predicted-class histogram. Computing it means reading the split and
running the classifier over it (seconds), so it is done once and cached as a `.npz` file
(`np.load(allow_pickle=False)`: plain arrays) in `cache_dir()`, under a name that holds the
dataset, split, data seed and the feature network's sha256, so new weights never meet old stats.

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
from gan_jax.evaluation import classifier, metrics

# Bump when the cached contents or their meaning change; old files are then ignored.
CACHE_FORMAT = 1
DEFAULT_REFERENCE_SPLIT = "test"
# Sample counts: 10,000 for MNIST (the test split's size), 26,000 for Stacked MNIST (PacGAN).
DEFAULT_NUM_SAMPLES = {"mnist": 10_000, "stacked_mnist": metrics.STACKED_MNIST_NUM_SAMPLES}
# KID's usual protocol (Binkowski et al.): 100 subsets of 1,000.
KID_NUM_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_K = 3


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

    mu: float64 [D]; cov: float64 [D, D] (D = 128 per image channel).
    features: float32 [M, D], the split's features (M = the split's size, at most max_examples).
    radii: float64 [M], squared distance of each feature row to its 3rd nearest neighbour.
    histogram: float64 [10^C], the frequencies of the classes the network predicts.
    info: JSON-friendly description: dataset, split, data seed, sizes, the data's sha256, the
      feature network's tag and hash.
    """

    mu: np.ndarray
    cov: np.ndarray
    features: np.ndarray
    radii: np.ndarray
    histogram: np.ndarray
    info: dict[str, Any]


def _cache_stem(
    dataset: str, split: str, *, data_seed: int, max_examples: int, network_sha256: str
) -> str:
    return (
        f"{dataset}-{split}-seed{data_seed}-max{max_examples}-"
        f"net{network_sha256[:16]}-v{CACHE_FORMAT}"
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
) -> np.ndarray:
    """uint8 [N, 28, 28, C] real images from gan_jax.data, the first max_examples of the split."""
    from gan_jax import data  # noqa: PLC0415 (the data stack loads TFDS; only needed here)

    if dataset not in DEFAULT_NUM_SAMPLES:
        raise ValueError(
            f"The MNIST feature network scores {sorted(DEFAULT_NUM_SAMPLES)}; got {dataset!r}."
        )
    images, _ = data.load_split(dataset, split, data_dir=data_dir or None, seed=data_seed)
    return images[:max_examples] if max_examples else images


def compute_reference(
    images: np.ndarray,
    network: classifier.FeatureNetwork,
    *,
    info: dict[str, Any] | None = None,
) -> ReferenceStats:
    """ReferenceStats of real images uint8 [N, 28, 28, C] (C = 1 or 3)."""
    embedding = classifier.embed(network, images)
    mu, cov = metrics.feature_statistics(embedding.features)
    num_classes = 10 ** embedding.logits.shape[1]
    return ReferenceStats(
        mu=mu,
        cov=cov,
        features=embedding.features,
        radii=metrics.knn_radii(embedding.features, k=PR_K),
        histogram=metrics.class_histogram(embedding.labels, num_classes),
        info={
            **(info or {}),
            "num_examples": int(images.shape[0]),
            "data_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
            "feature_network": network.info,
        },
    )


def _save_reference(path: pathlib.Path, stats: ReferenceStats) -> None:
    arrays = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats) if f.name != "info"}
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
    network: classifier.FeatureNetwork | None = None,
    data_dir: str | None = None,
    data_seed: int = 0,
    max_examples: int = 10_000,
    use_cache: bool = True,
) -> ReferenceStats:
    """The reference statistics of a split: from the cache, else computed and cached.

    Args:
      dataset: "mnist" or "stacked_mnist".
      split: "test" (the default reference) or "train".
      network: the feature network; the shipped one by default.
      data_dir: TFDS data dir for gan_jax.data.
      data_seed: Stacked MNIST's construction seed.
      max_examples: use the first this many images of the split.
      use_cache: False recomputes and overwrites the cache file.
    """
    network = network or classifier.load_feature_network()
    path = cache_dir() / (
        _cache_stem(
            dataset,
            split,
            data_seed=data_seed,
            max_examples=max_examples,
            network_sha256=network.sha256,
        )
        + ".npz"
    )
    if use_cache and path.exists():
        try:
            return _load_reference(path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable (e.g. written by another version): recompute below
    images = load_real_images(
        dataset, split, data_dir=data_dir, data_seed=data_seed, max_examples=max_examples
    )
    stats = compute_reference(
        images,
        network,
        info={"dataset": dataset, "split": split, "data_seed": data_seed, "cache_file": path.name},
    )
    _save_reference(path, stats)
    return stats


# ---------------------------------------------------------------------------------------------
# Scoring a sample set against a reference.
# ---------------------------------------------------------------------------------------------


def score_embedding(
    embedding: classifier.Embedding,
    reference: ReferenceStats,
    *,
    kid_subsets: int = KID_NUM_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of one sample set (as features and logits) against a reference.

    Precision and recall use the first min(N, M) samples, since k-NN radii shrink as a set grows
    and the two sets must be of one size for the two numbers to be comparable.

    Returns a JSON-friendly dict: fid, kid (mean) and kid_std, precision, recall,
    classifier_score, class_kl (KL(sample classes || reference classes), nats), num_samples;
    for three-channel images also modes and kl_to_uniform (Stacked MNIST); class_histogram for
    one-channel images.
    """
    features = embedding.features
    if features.shape[1] != reference.features.shape[1]:
        raise ValueError(
            f"Samples have {features.shape[1]}-d features, the reference "
            f"{reference.features.shape[1]}-d: images with {embedding.logits.shape[1]} channel(s) "
            f"cannot be scored against {reference.info.get('dataset')!r}."
        )
    mu, cov = metrics.feature_statistics(features)
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
    histogram = metrics.class_histogram(embedding.labels, reference.histogram.shape[0])
    result: dict[str, Any] = {
        "num_samples": int(features.shape[0]),
        "fid": metrics.frechet_distance(mu, cov, reference.mu, reference.cov),
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "classifier_score": metrics.classifier_score(embedding.logits),
        "class_kl": metrics.kl_divergence(histogram, reference.histogram),
    }
    if embedding.logits.shape[1] == 3:
        modes = metrics.stacked_mnist_modes(embedding.channel_labels)
        result.update(modes=modes["modes"], kl_to_uniform=modes["kl_to_uniform"])
    else:
        result["class_histogram"] = [round(float(h), 6) for h in histogram]
    return result


def get_floor(
    dataset: str,
    *,
    reference: ReferenceStats | None = None,
    network: classifier.FeatureNetwork | None = None,
    num_samples: int | None = None,
    data_dir: str | None = None,
    data_seed: int = 0,
    use_cache: bool = True,
) -> dict[str, Any]:
    """The real-data floor: the first num_samples training images scored like generated ones.

    Against the default reference (the test split), this is FID of 10,000 training images
    against the 10,000 test images for MNIST; for Stacked MNIST, 26,000 training images, so the
    mode count is on the PacGAN protocol's sample size. Cached as JSON beside the reference.
    """
    network = network or classifier.load_feature_network()
    reference = reference or get_reference(
        dataset, network=network, data_dir=data_dir, data_seed=data_seed, use_cache=use_cache
    )
    num_samples = num_samples or default_num_samples(dataset)
    # Keyed by what the floor depends on: the reference's data and network, the floor's images.
    path = cache_dir() / (
        f"floor-{dataset}-seed{data_seed}-train{num_samples}-"
        f"ref{reference.info['data_sha256'][:16]}-net{network.sha256[:16]}-v{CACHE_FORMAT}.json"
    )
    if use_cache and path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    images = load_real_images(
        dataset, "train", data_dir=data_dir, data_seed=data_seed, max_examples=num_samples
    )
    floor = score_embedding(classifier.embed(network, images), reference)
    floor["source"] = f"{dataset} train[:{images.shape[0]}] against the reference"
    _atomic_write(path, lambda f: f.write(json.dumps(floor, indent=1).encode()))
    return floor
