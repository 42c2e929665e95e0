"""Metrics against closed forms, float64 reference formulas and synthetic labels."""

import numpy as np
import pytest
import scipy.linalg

from gan_jax.evaluation import metrics


def _random_features(seed: int, n: int = 2000, d: int = 16, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian features [n, d], optionally shifted by `shift` in every coordinate."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def _reference_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root, in float64."""
    mu1, mu2 = x.mean(0), y.mean(0)
    cov1, cov2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov1 @ cov2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * covmean))


class TestFrechet:
    def test_self_distance_is_zero(self):
        x = _random_features(0, d=64)
        _, cov = metrics.feature_statistics(x)
        assert abs(metrics.fid(x, x)) <= 1e-6 * np.trace(cov)

    def test_self_distance_rank_deficient(self):
        # ReLU features have dead units: a singular covariance must still give 0, not NaN.
        x = np.maximum(_random_features(1, d=32), 0.0)
        x[:, :5] = 0.0
        _, cov = metrics.feature_statistics(x)
        assert abs(metrics.fid(x, x)) <= 1e-6 * np.trace(cov)

    def test_matches_scipy_reference(self):
        x, y = _random_features(2, d=32), _random_features(3, d=32, shift=0.3)
        np.testing.assert_allclose(metrics.fid(x, y), _reference_fid(x, y), rtol=1e-6)

    def test_accepts_float32_and_jax_arrays(self):
        import jax.numpy as jnp

        x, y = _random_features(4), _random_features(5, shift=0.1)
        np.testing.assert_allclose(
            metrics.fid(jnp.asarray(x, jnp.float32), y.astype(np.float32)),
            metrics.fid(x, y),
            rtol=1e-4,
        )

    def test_exact_moments_match_closed_form(self):
        # Diagonal covariances commute: tr(C1 + C2 - 2 sqrt(C1 C2)) = sum (sqrt a - sqrt b)^2.
        rng = np.random.default_rng(6)
        a, b = rng.uniform(0.1, 3.0, 20), rng.uniform(0.1, 3.0, 20)
        mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
        closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
        value = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
        np.testing.assert_allclose(value, closed, rtol=1e-12)

    def test_exact_moments_rotated(self):
        # The distance is invariant under a common rotation of both Gaussians.
        rng = np.random.default_rng(7)
        a, b = rng.uniform(0.1, 3.0, 12), rng.uniform(0.1, 3.0, 12)
        q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
        closed = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
        value = metrics.frechet_distance(
            np.zeros(12), q @ np.diag(a) @ q.T, np.zeros(12), q @ np.diag(b) @ q.T
        )
        np.testing.assert_allclose(value, closed, rtol=1e-9)

    def test_large_samples_approach_closed_form(self):
        rng = np.random.default_rng(8)
        d, n = 8, 200_000
        a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
        mu1, mu2 = np.zeros(d), np.full(d, 0.5)
        x = mu1 + rng.normal(size=(n, d)) * np.sqrt(a)
        y = mu2 + rng.normal(size=(n, d)) * np.sqrt(b)
        closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
        np.testing.assert_allclose(metrics.fid(x, y), closed, rtol=0.02)

    def test_rejects_mismatched_shapes(self):
        with pytest.raises(ValueError, match="Mismatched"):
            metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
        with pytest.raises(ValueError, match="2-D"):
            metrics.fid(np.zeros(10), np.zeros(10))


class TestKernelDistance:
    def test_same_distribution_within_noise_of_zero(self):
        # Two halves of one sample: the same distribution, independent draws.
        both = _random_features(10, n=4000)
        mean, std = metrics.kid(both[:2000], both[2000:], num_subsets=20, subset_size=500)
        assert abs(mean) < 2 * std

    def test_shifted_distribution_is_larger(self):
        x = _random_features(12, n=2000)
        same = _random_features(12, n=4000)[2000:]
        shifted = same + 0.5
        same_mean, same_std = metrics.kid(x, same, num_subsets=20, subset_size=500)
        shift_mean, _ = metrics.kid(x, shifted, num_subsets=20, subset_size=500)
        assert shift_mean > 10 * same_std
        assert shift_mean > 10 * abs(same_mean)

    def test_unbiased_estimator_by_hand(self):
        rng = np.random.default_rng(13)
        x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))

        def k(u, v):
            return (u @ v / 3 + 1) ** 3

        xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
        yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
        xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
        # float32 dot products: agreement to float32 rounding of the kernel values (~1e-7 * k).
        np.testing.assert_allclose(metrics.mmd2_unbiased(x, y), xx + yy - 2 * xy, atol=1e-5)

    def test_deterministic_in_seed(self):
        x, y = _random_features(14, n=600), _random_features(15, n=600)
        assert metrics.kid(x, y, num_subsets=5, subset_size=100, seed=3) == metrics.kid(
            x, y, num_subsets=5, subset_size=100, seed=3
        )


class TestClassifierScore:
    def test_confident_balanced_is_num_classes(self):
        logits = 50.0 * np.eye(10)[np.arange(1000) % 10]
        np.testing.assert_allclose(metrics.classifier_score(logits), 10.0, rtol=1e-6)

    def test_single_class_is_one(self):
        logits = 50.0 * np.eye(10)[np.full(1000, 3)]
        np.testing.assert_allclose(metrics.classifier_score(logits), 1.0, rtol=1e-6)

    def test_uniform_predictions_are_one(self):
        np.testing.assert_allclose(metrics.classifier_score(np.zeros((100, 10))), 1.0, atol=1e-12)

    def test_extreme_logits_stay_finite(self):
        logits = 1e4 * np.eye(10)[np.arange(100) % 10]
        np.testing.assert_allclose(metrics.classifier_score(logits), 10.0, rtol=1e-9)


class TestHistograms:
    def test_histogram_and_kl(self):
        hist = metrics.class_histogram(np.array([0, 0, 1, 3]), 4)
        np.testing.assert_allclose(hist, [0.5, 0.25, 0.0, 0.25])
        assert metrics.kl_divergence(hist, hist) == 0.0
        uniform = np.full(4, 0.25)
        np.testing.assert_allclose(
            metrics.kl_divergence(hist, uniform), 0.5 * np.log(2), rtol=1e-12
        )

    def test_histogram_rejects_out_of_range(self):
        with pytest.raises(ValueError, match=r"\[0, 10\)"):
            metrics.class_histogram(np.array([0, 10]), 10)


class TestPrecisionRecall:
    def test_identical_sets_are_perfect(self):
        x = _random_features(20, n=500, d=8)
        assert metrics.precision_recall(x, x) == (1.0, 1.0)

    def test_same_distribution_is_high(self):
        x, y = _random_features(21, n=2000, d=8), _random_features(21, n=4000, d=8)[2000:]
        precision, recall = metrics.precision_recall(x, y)
        assert precision > 0.85 and recall > 0.85

    def test_collapsed_generator_has_precision_but_no_recall(self):
        real = _random_features(22, n=2000, d=8)
        # Mode collapse: every fake sits near one real point.
        fake = real[:1] + 1e-3 * np.random.default_rng(0).normal(size=(2000, 8))
        precision, recall = metrics.precision_recall(real, fake)
        assert precision == 1.0 and recall < 0.01

    def test_knn_radii_by_brute_force(self):
        x = _random_features(23, n=50, d=4)
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        expected = np.sort(d, axis=1)[:, 3]
        np.testing.assert_allclose(
            metrics.knn_radii(x, k=3, block_size=7), expected, rtol=1e-5, atol=1e-5
        )

    def test_matches_coverage_in_each_direction(self):
        real, fake = _random_features(26, n=700, d=4), _random_features(27, n=500, d=4, shift=0.3)
        precision, recall = metrics.precision_recall(real, fake, block_size=128)
        real_radii, fake_radii = metrics.knn_radii(real), metrics.knn_radii(fake)
        assert precision == metrics.manifold_coverage(fake, real, real_radii)
        assert recall == metrics.manifold_coverage(real, fake, fake_radii)
        assert 0.0 < precision < 1.0 and 0.0 < recall < 1.0  # a case with both kinds of point

    def test_precomputed_radii_agree(self):
        real, fake = _random_features(24, n=300, d=4), _random_features(25, n=300, d=4)
        radii = metrics.knn_radii(real, k=3)
        assert metrics.precision_recall(real, fake, real_radii=radii) == (
            metrics.precision_recall(real, fake)
        )


class TestStackedMnist:
    def test_uniform_draws_cover_all_modes(self):
        labels = np.random.default_rng(30).integers(0, 10, size=(26_000, 3))
        result = metrics.stacked_mnist_modes(labels)
        assert result["modes"] == 1000
        assert result["kl_to_uniform"] < 0.05
        assert result["num_samples"] == 26_000

    def test_one_triple_covers_one_mode(self):
        result = metrics.stacked_mnist_modes(np.tile([[4, 0, 7]], (26_000, 1)))
        assert result["modes"] == 1
        np.testing.assert_allclose(result["kl_to_uniform"], np.log(1000), rtol=1e-12)

    def test_collapsed_channel(self):
        # One channel stuck on a digit leaves 100 modes.
        labels = np.random.default_rng(31).integers(0, 10, size=(26_000, 3))
        labels[:, 1] = 5
        assert metrics.stacked_mnist_modes(labels)["modes"] == 100

    def test_rejects_wrong_shape(self):
        with pytest.raises(ValueError, match=r"\[N, 3\]"):
            metrics.stacked_mnist_modes(np.zeros((10,), int))


class TestFactorisedClassifierScore:
    def test_one_channel_equals_flat(self):
        logits = np.random.default_rng(40).normal(size=(300, 10)) * 3
        np.testing.assert_allclose(
            metrics.classifier_score(logits[:, None, :]), metrics.classifier_score(logits)
        )

    def test_channels_match_explicit_joint(self):
        rng = np.random.default_rng(41)
        logits = rng.normal(size=(200, 3, 4)) * 2
        log_p = metrics.log_softmax(logits)
        joint = log_p[:, 0, :, None, None] + log_p[:, 1, None, :, None] + log_p[:, 2, None, None]
        expected = metrics.classifier_score(joint.reshape(200, 64))
        np.testing.assert_allclose(
            metrics.classifier_score(logits, block_size=37), expected, rtol=1e-10
        )

    def test_confident_uniform_stacked_is_near_1000(self):
        labels = np.random.default_rng(42).integers(0, 10, size=(26_000, 3))
        logits = 50.0 * np.eye(10)[labels]
        # exp(entropy of the empirical mode histogram): a little under 1000 from sampling noise.
        assert 950 < metrics.classifier_score(logits) <= 1000
