"""Balanced k-means pseudo-labels (gan_jax.data.clusters) and `config.label_source = "kmeans"`."""

import numpy as np
import pytest

from gan_jax import config as config_lib
from gan_jax import train
from gan_jax.data import clusters
from tests.helpers import tiny_config


def _blobs(sizes, *, spread=0.05, seed=0):
    """Points [sum(sizes), 8] around far-apart centres, and each point's blob index."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(8)[: len(sizes)]
    points = np.concatenate(
        [c + spread * rng.normal(size=(n, 8)) for c, n in zip(centres, sizes, strict=True)]
    )
    return points.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def test_separated_blobs_of_equal_size_are_recovered_exactly():
    points, blob = _blobs([30, 30, 30, 30])
    labels = clusters.balanced_kmeans(points, 4, seed=3)
    assert labels.dtype == np.int32
    # A one-to-one map between clusters and blobs.
    pairs = set(zip(labels.tolist(), blob.tolist(), strict=True))
    assert len(pairs) == 4 and len({c for c, _ in pairs}) == 4


@pytest.mark.parametrize("num_clusters", [2, 3, 7])
def test_every_cluster_holds_floor_or_ceil_of_n_over_k(num_clusters):
    # Blobs of 70 and 30 points: plain k-means would give unequal clusters.
    points, _ = _blobs([70, 30])
    counts = np.bincount(clusters.balanced_kmeans(points, num_clusters), minlength=num_clusters)
    assert counts.sum() == 100
    assert set(counts.tolist()) <= {100 // num_clusters, -(-100 // num_clusters)}


def test_a_full_cluster_keeps_its_nearest_and_sends_the_others_to_their_next_choice():
    # Every row prefers column 0, which has room for one: the nearest row (1) keeps it; rows 0
    # and 2 both want column 2 next, which keeps row 0 (nearer), and row 2 takes column 1.
    distances = np.array([[1.0, 9.0, 2.0], [0.5, 8.0, 7.0], [2.0, 6.0, 5.0]])
    np.testing.assert_array_equal(clusters._balanced_assignment(distances), [2, 0, 1])


def test_an_assignment_that_fits_is_the_nearest_centre():
    rng = np.random.default_rng(0)
    distances = rng.uniform(size=(12, 4))
    distances[np.arange(12), np.arange(12) % 4] = 0.0  # three rows nearest to each column
    np.testing.assert_array_equal(clusters._balanced_assignment(distances), np.arange(12) % 4)


def test_the_labels_are_a_pure_function_of_images_and_seed():
    points, _ = _blobs([40, 25, 35], spread=2.0)
    first = clusters.balanced_kmeans(points, 5, seed=1)
    np.testing.assert_array_equal(first, clusters.balanced_kmeans(points.copy(), 5, seed=1))


def test_more_clusters_than_images_is_refused():
    with pytest.raises(ValueError, match="num_clusters must be in"):
        clusters.balanced_kmeans(np.zeros((3, 2), np.float32), 4)


def test_uint8_images_are_clustered_in_unit_pixels():
    points, _ = _blobs([20, 20])
    images = np.clip(points * 20, 0, 255).astype(np.uint8).reshape(40, 2, 4, 1)
    as_floats = clusters.balanced_kmeans(images.astype(np.float32) / 255.0, 2, seed=0)
    np.testing.assert_array_equal(clusters.balanced_kmeans(images, 2, seed=0), as_floats)


def test_kmeans_labels_need_a_cluster_count():
    config = tiny_config(label_source="kmeans")
    with pytest.raises(config_lib.ConfigError, match="num_classes to the number of clusters"):
        config_lib.validate_config(config)
    config = tiny_config(label_source="k-means", num_classes=10)
    with pytest.raises(config_lib.ConfigError, match="label_source.*'dataset', 'kmeans'"):
        config_lib.validate_config(config)


def test_the_training_split_is_labelled_by_clusters_not_digits():
    config = tiny_config("dcgan_compact", dataset="mnist", image_shape=(28, 28, 1))
    images, digits = train._load_training_split(config)
    config.num_classes, config.label_source = 10, "kmeans"
    config_lib.validate_config(config)
    _, labels = train._load_training_split(config)
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, len(images) // 10))
    assert not np.array_equal(labels, digits)
    # Pixel clusters of MNIST follow the digits far better than chance (0.11): measured 0.58 for
    # 10 clusters (0.80 for 50).
    purity = sum(np.bincount(digits[labels == c]).max() for c in range(10)) / len(labels)
    assert purity > 0.5
