"""Sample-quality metrics as pure functions of classifier features and logits.

Everything here runs on the host in NumPy, in float64: the quantities are small (a 128-d feature
covariance, a few 10,000 x 10,000 distance blocks) and the answers must not depend on the device,
its matmul precision or the number of devices a run used. Inputs may be NumPy or JAX arrays of any
float dtype; they are converted once.

Shapes: features are [N, D] (penultimate activations of the feature network), logits are [N, K]
(unnormalised class scores), labels are int [N] (or [N, 3] for Stacked MNIST's channels).

Metrics:
- `frechet_distance` / `fid`: Frechet distance between Gaussians fitted to two feature sets
  (Heusel et al. 2017), with the trace of the matrix square root taken from a symmetric
  eigendecomposition, so it is real and finite for any pair of PSD covariances.
- `kid`: Kernel Inception Distance (Binkowski et al. 2018), the unbiased MMD^2 with the cubic
  polynomial kernel, averaged over random subsets.
- `classifier_score`: exp(E_x KL(p(y|x) || p(y))), the Inception score recipe on any classifier.
- `precision_recall`: improved precision and recall with k-NN manifolds (Kynkaanniemi et al. 2019).
- `class_histogram` / `kl_divergence`: predicted-class frequencies and their KL to the data's.
- `stacked_mnist_modes`: modes covered of 1,000 and KL(generated || uniform) (VEEGAN, PacGAN).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # np.ndarray or jax.Array

# The PacGAN protocol scores Stacked MNIST on this many samples; sampling noise alone then gives
# KL(empirical || uniform) of about (1000 - 1) / (2 * 26000) ~= 0.019.
STACKED_MNIST_NUM_SAMPLES = 26_000
STACKED_MNIST_NUM_MODES = 1_000


def _as_f64_matrix(x: ArrayLike, name: str) -> np.ndarray:
    """Converts to a float64 [N, D] array, with a clear error for any other rank."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D]; got shape {x.shape}.")
    return x


# ---------------------------------------------------------------------------------------------
# Frechet distance.
# ---------------------------------------------------------------------------------------------


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64 (N >= 2)."""
    features = _as_f64_matrix(features, "features")
    if features.shape[0] < 2:
        raise ValueError(f"Need at least 2 feature vectors for a covariance; got {len(features)}.")
    mu = features.mean(axis=0)
    centred = features - mu
    cov = centred.T @ centred / (features.shape[0] - 1)
    return mu, cov


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; rounding-negative eigenvalues become 0."""
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr((cov1 @ cov2)^(1/2)) for symmetric PSD matrices, real and finite by construction.

    cov1 @ cov2 is not symmetric, which is why general-purpose `sqrtm` can return complex parts or
    NaNs for near-singular covariances. But with S = cov1^(1/2), cov1 @ cov2 = S (S cov2) has the
    same eigenvalues as (S cov2) S = S cov2 S, which is symmetric PSD. The trace of the square root
    is the sum of the square roots of those eigenvalues, so two `eigh` calls give it exactly,
    with negative rounding noise clipped to 0.
    """
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eigvals, 0.0, None)).sum())


def frechet_distance(mu1: ArrayLike, cov1: ArrayLike, mu2: ArrayLike, cov2: ArrayLike) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2), in squared feature units.

    d^2 = |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2)), computed in float64 with
    `trace_sqrt_product`. Clipped at 0: for identical inputs rounding can make it a hair negative.

    Args:
      mu1, mu2: means [D].
      cov1, cov2: covariances [D, D], symmetric PSD.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(
            f"Mismatched moments: mu {mu1.shape} vs {mu2.shape}, cov {cov1.shape} vs {cov2.shape}."
        )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2)
    return float(max(value, 0.0))


def fid(features1: ArrayLike, features2: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to features1 [N1, D] and features2 [N2, D]."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# ---------------------------------------------------------------------------------------------
# Kernel distance.
# ---------------------------------------------------------------------------------------------


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / D + 1)^3 for rows of x [N, D] and y [M, D]: [N, M]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: ArrayLike, y: ArrayLike) -> float:
    """Unbiased MMD^2 estimate with the cubic polynomial kernel between x [M, D] and y [M, D].

    The diagonals of k(x, x) and k(y, y) are left out, so the estimate's expectation is exactly
    the population MMD^2 (0 for one distribution); a single estimate can be negative.
    """
    x, y = _as_f64_matrix(x, "x"), _as_f64_matrix(y, "y")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"Need at least 2 samples per set; got {m} and {n}.")
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kid(
    features1: ArrayLike,
    features2: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance: mean and std of `mmd2_unbiased` over random subsets.

    Each subset draws min(subset_size, N1, N2) rows without replacement from each set, with a
    NumPy generator seeded by `seed`, so the result is a pure function of its inputs.

    Returns:
      (mean, std) over the `num_subsets` estimates (kernel units; features are not rescaled).
    """
    features1 = _as_f64_matrix(features1, "features1")
    features2 = _as_f64_matrix(features2, "features2")
    size = min(subset_size, features1.shape[0], features2.shape[0])
    rng = np.random.default_rng(seed)
    estimates = np.array(
        [
            mmd2_unbiased(
                features1[rng.choice(features1.shape[0], size, replace=False)],
                features2[rng.choice(features2.shape[0], size, replace=False)],
            )
            for _ in range(num_subsets)
        ]
    )
    return float(estimates.mean()), float(estimates.std())


# ---------------------------------------------------------------------------------------------
# Classifier score and class histograms.
# ---------------------------------------------------------------------------------------------


def log_softmax(logits: ArrayLike) -> np.ndarray:
    """Log-probabilities over the last axis of logits [..., K], in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _joint_log_probs(channel_log_probs: np.ndarray) -> np.ndarray:
    """[B, C, K] independent per-channel log-probs → [B, K^C] joint, channel 0 most significant."""
    joint = channel_log_probs[:, 0]
    for c in range(1, channel_log_probs.shape[1]):
        joint = (joint[:, :, None] + channel_log_probs[:, c, None, :]).reshape(joint.shape[0], -1)
    return joint


def classifier_score(logits: ArrayLike, *, block_size: int = 4096) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean prediction; between 1 and the class count.

    Args:
      logits: [N, K] classifier logits, or [N, C, K] for images of C independently classified
        channels (Stacked MNIST: C = 3), scored over the K^C joint classes (1,000 for Stacked
        MNIST), with p(y|x) the product of the channels' predictions.
      block_size: rows whose joint distribution is formed at once (memory O(block_size * K^C)).

    Returns:
      The class count for confident predictions spread evenly over the classes; 1 for a single
      class or for predictions that are all alike. One split of all N samples (TF-GAN's MNIST
      score).
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim == 2:
        logits = logits[:, None, :]
    if logits.ndim != 3:
        raise ValueError(f"logits must be [N, K] or [N, C, K]; got shape {logits.shape}.")
    channel_log_probs = log_softmax(logits)
    n = logits.shape[0]

    def blocks():
        for start in range(0, n, block_size):
            yield _joint_log_probs(channel_log_probs[start : start + block_size])

    # Two passes over the blocks: the marginal p(y) first, then each row's KL to it.
    marginal = sum(np.exp(log_p).sum(axis=0) for log_p in blocks()) / n
    log_marginal = np.log(np.maximum(marginal, np.finfo(np.float64).tiny))
    total_kl = 0.0
    for log_p in blocks():
        p = np.exp(log_p)
        # 0 log 0 = 0: exp underflows to exactly 0 where log_p < -745.
        total_kl += np.where(p > 0, p * (log_p - log_marginal), 0.0).sum()
    return float(np.exp(total_kl / n))


def class_histogram(labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Frequencies [num_classes] (summing to 1) of int labels [N] in [0, num_classes)."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("class_histogram needs at least one label.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"Labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]."
        )
    return np.bincount(labels, minlength=num_classes).astype(np.float64) / labels.size


def kl_divergence(p: ArrayLike, q: ArrayLike, *, eps: float = 1e-12) -> float:
    """KL(p || q) in nats for distributions p, q [K]; 0 log 0 = 0, q floored at eps.

    The floor keeps the value finite when q misses a class that p has; it is then large
    (about p_k * log(p_k / eps)), which is the honest answer.
    """
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"Distributions differ in shape: {p.shape} vs {q.shape}.")
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(np.maximum(q[mask], eps)))))


# ---------------------------------------------------------------------------------------------
# Precision and recall on k-NN manifolds.
# ---------------------------------------------------------------------------------------------


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2 for a [N, D], b [M, D]: [N, M], clipped at 0 against rounding."""
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def knn_radii(features: ArrayLike, *, k: int = 3, block_size: int = 2048) -> np.ndarray:
    """Squared distance [N] from each row of features [N, D] to its k-th nearest other row.

    These are the radii of the balls whose union is the k-NN estimate of the set's manifold.
    Computed block by block (block_size rows at a time) so memory stays O(block_size * N).
    """
    features = _as_f64_matrix(features, "features")
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, N); got k={k} for N={n}.")
    radii = np.empty(n)
    for start in range(0, n, block_size):
        d = _squared_distances(features[start : start + block_size], features)
        # Index 0 of the sorted row is the point itself (distance 0), so the k-th neighbour is at k.
        radii[start : start + block_size] = np.partition(d, k, axis=1)[:, k]
    return radii


def manifold_coverage(
    queries: ArrayLike,
    support: ArrayLike,
    support_radii: ArrayLike,
    *,
    block_size: int = 2048,
) -> float:
    """Fraction of queries [Nq, D] in some ball (support[j], squared radius support_radii[j])."""
    queries = _as_f64_matrix(queries, "queries")
    support = _as_f64_matrix(support, "support")
    support_radii = np.asarray(support_radii, np.float64)
    inside = np.empty(queries.shape[0], dtype=bool)
    for start in range(0, queries.shape[0], block_size):
        d = _squared_distances(queries[start : start + block_size], support)
        inside[start : start + block_size] = (d <= support_radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    *,
    k: int = 3,
    real_radii: ArrayLike | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds.

    Precision: the fraction of generated samples inside the real manifold (quality).
    Recall: the fraction of real samples inside the generated manifold (coverage).

    Args:
      real_features: [Nr, D].
      fake_features: [Nf, D]; use Nf == Nr, as the k-NN radii depend on the set size.
      k: neighbourhood size (3 in the paper).
      real_radii: optional precomputed `knn_radii(real_features, k=k)`, e.g. from the cached
        reference statistics.
    """
    real_features = _as_f64_matrix(real_features, "real_features")
    fake_features = _as_f64_matrix(fake_features, "fake_features")
    if real_radii is None:
        real_radii = knn_radii(real_features, k=k)
    fake_radii = knn_radii(fake_features, k=k)
    precision = manifold_coverage(fake_features, real_features, real_radii)
    recall = manifold_coverage(real_features, fake_features, fake_radii)
    return precision, recall


# ---------------------------------------------------------------------------------------------
# Stacked MNIST.
# ---------------------------------------------------------------------------------------------


def stacked_mnist_modes(channel_labels: ArrayLike) -> dict[str, float | int]:
    """Modes covered and KL to uniform from the digits predicted for each channel.

    Args:
      channel_labels: int [N, 3], the class predicted for each of the three channels of N
        Stacked-MNIST images (channel 0 is the hundreds digit: mode = 100 a + 10 b + c).

    Returns:
      {"modes": number of the 1,000 modes seen at least once,
       "kl_to_uniform": KL(generated mode histogram || uniform over 1,000) in nats,
       "num_samples": N}.
    """
    channel_labels = np.asarray(channel_labels)
    if channel_labels.ndim != 2 or channel_labels.shape[1] != 3:
        raise ValueError(f"channel_labels must be [N, 3]; got shape {channel_labels.shape}.")
    modes = channel_labels @ np.array([100, 10, 1])
    histogram = class_histogram(modes, STACKED_MNIST_NUM_MODES)
    uniform = np.full(STACKED_MNIST_NUM_MODES, 1.0 / STACKED_MNIST_NUM_MODES)
    return {
        "modes": int(np.count_nonzero(histogram)),
        "kl_to_uniform": kl_divergence(histogram, uniform),
        "num_samples": int(channel_labels.shape[0]),
    }
