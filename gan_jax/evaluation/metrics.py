"""Sample-quality metrics as pure functions of classifier features and logits.

Everything runs on the host in NumPy except KID's kernel matrices (one jitted XLA call per ten
subsets), so the answers do not depend on the number of devices a run used. Moments, the matrix
square root and all final sums are float64; the big matrix products (KID's kernels, the
10,000 x 10,000 distances of precision/recall) are float32, with rounding far below each metric's
own sampling noise (see the functions). Inputs may be NumPy or JAX arrays of any float dtype.

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

import jax
import jax.numpy as jnp
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


def _as_f32_matrix(x: ArrayLike, name: str) -> np.ndarray:
    """Converts to a float32 [N, D] array, for the big products that run in float32."""
    x = np.asarray(x, dtype=np.float32)
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


# Subsets whose kernels one dispatch computes: [10, 1000, 1000] float32 is 40 MB per kernel.
_KID_CHUNK = 10


@jax.jit
def _kernel_row_sums(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Row sums of the cubic kernels k(a, b) = (a . b / D + 1)^3 within and across subsets.

    Args:
      x: float32 [S, M, D], S subsets of M rows; y: float32 [S, N, D].

    Returns:
      float32 row sums of k(x, x) [S, M], k(y, y) [S, N] and k(x, y) [S, M], diagonals included.
    """

    def row_sums(a, b):
        # HIGHEST: full float32 products on GPU/TPU too (their default is TF32/bfloat16 passes).
        dots = jnp.einsum("smd,snd->smn", a, b, precision=jax.lax.Precision.HIGHEST)
        base = dots / a.shape[-1] + 1.0
        return jnp.sum(base * base * base, axis=-1)

    return row_sums(x, x), row_sums(y, y), row_sums(x, y)


def _cubic_kernel_diagonal_sum(x: np.ndarray) -> np.ndarray:
    """sum_i k(x_i, x_i) per subset of x [S, M, D], in float64: [S]."""
    x = x.astype(np.float64)
    base = (x * x).sum(axis=-1) / x.shape[-1] + 1.0
    return (base**3).sum(axis=-1)


def _mmd2_unbiased_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 per subset of float32 x [S, M, D] and y [S, N, D]: float64 [S].

    The kernel matrices are formed and their rows summed in float32 by XLA (one fused
    dispatch, robust to a busy CPU where small BLAS calls from NumPy stall); the row sums are
    added and the diagonals subtracted in float64. Rows of 1,000 float32 terms carry a relative
    error of ~1e-6 at most, below 1e-3 of KID's subset-to-subset spread.
    """
    m, n = x.shape[1], y.shape[1]
    rows_xx, rows_yy, rows_xy = (np.asarray(r, np.float64) for r in _kernel_row_sums(x, y))
    sum_xx = rows_xx.sum(axis=1) - _cubic_kernel_diagonal_sum(x)
    sum_yy = rows_yy.sum(axis=1) - _cubic_kernel_diagonal_sum(y)
    return sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * rows_xy.sum(axis=1) / (m * n)


def mmd2_unbiased(x: ArrayLike, y: ArrayLike) -> float:
    """Unbiased MMD^2 estimate with the cubic polynomial kernel between x [M, D] and y [N, D].

    k(a, b) = (a . b / D + 1)^3. The diagonals of k(x, x) and k(y, y) are left out, so the
    estimate's expectation is exactly the population MMD^2 (0 for one distribution); a single
    estimate can be negative.
    """
    x, y = _as_f32_matrix(x, "x"), _as_f32_matrix(y, "y")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"Need at least 2 samples per set; got {x.shape[0]} and {y.shape[0]}.")
    return float(_mmd2_unbiased_batched(x[None], y[None])[0])


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
    features1 = _as_f32_matrix(features1, "features1")
    features2 = _as_f32_matrix(features2, "features2")
    size = min(subset_size, features1.shape[0], features2.shape[0])
    if size < 2:
        raise ValueError(f"Need at least 2 samples per set; got {size}.")
    rng = np.random.default_rng(seed)
    index1 = np.stack(
        [rng.choice(features1.shape[0], size, replace=False) for _ in range(num_subsets)]
    )
    index2 = np.stack(
        [rng.choice(features2.shape[0], size, replace=False) for _ in range(num_subsets)]
    )
    estimates = []
    for start in range(0, num_subsets, _KID_CHUNK):
        # The last chunk is padded by repeating subsets, so one compiled shape serves all.
        chunk = np.arange(start, start + _KID_CHUNK) % num_subsets
        batch = _mmd2_unbiased_batched(features1[index1[chunk]], features2[index2[chunk]])
        estimates.append(batch[: min(_KID_CHUNK, num_subsets - start)])
    estimates = np.concatenate(estimates)
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
    """|a_i - b_j|^2 for float32 a [N, D], b [M, D]: float32 [N, M], clipped at 0.

    float32 on purpose: these matrices are 10,000 x 10,000 and only compared with each other.
    With feature norms of ~30 the rounding error is ~1e-4 against k-NN radii^2 of ~10 to 500,
    so it can only flip exact ties, while float64 would triple the time of the matmul and the
    k-th-smallest search.
    """
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _kth_smallest(d: np.ndarray, k: int) -> np.ndarray:
    """The k-th smallest (0-based) entry of each row of d [N, M]; overwrites d.

    For the small k used here, removing the row minimum k times and taking the next one is
    about 6x faster than `np.partition` on 10,000-wide rows.
    """
    rows = np.arange(d.shape[0])
    for _ in range(k):
        d[rows, d.argmin(axis=1)] = np.inf
    return d.min(axis=1)


def knn_radii(features: ArrayLike, *, k: int = 3, block_size: int = 2048) -> np.ndarray:
    """Squared distance [N] from each row of features [N, D] to its k-th nearest other row.

    These are the radii of the balls whose union is the k-NN estimate of the set's manifold.
    Computed block by block (block_size rows at a time) so memory stays O(block_size * N).
    """
    features = _as_f32_matrix(features, "features")
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, N); got k={k} for N={n}.")
    radii = np.empty(n, dtype=np.float64)
    for start in range(0, n, block_size):
        d = _squared_distances(features[start : start + block_size], features)
        # Entry 0 of the sorted row is the point itself (distance 0): the k-th neighbour is k.
        radii[start : start + block_size] = _kth_smallest(d, k)
    return radii


def manifold_coverage(
    queries: ArrayLike,
    support: ArrayLike,
    support_radii: ArrayLike,
    *,
    block_size: int = 2048,
) -> float:
    """Fraction of queries [Nq, D] in some ball (support[j], squared radius support_radii[j])."""
    queries = _as_f32_matrix(queries, "queries")
    support = _as_f32_matrix(support, "support")
    support_radii = np.asarray(support_radii, np.float32)
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
    block_size: int = 2048,
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
      block_size: real rows whose distances to all fakes are held at once.
    """
    real = _as_f32_matrix(real_features, "real_features")
    fake = _as_f32_matrix(fake_features, "fake_features")
    real_radii = knn_radii(real, k=k) if real_radii is None else real_radii
    real_radii = np.asarray(real_radii, np.float32)
    fake_radii = knn_radii(fake, k=k).astype(np.float32)
    # One pass over the real-to-fake distances serves both directions: the same block answers
    # "is this real point in a fake ball" (recall) and "which fakes are in these real balls".
    real_inside = np.empty(real.shape[0], dtype=bool)
    fake_inside = np.zeros(fake.shape[0], dtype=bool)
    for start in range(0, real.shape[0], block_size):
        d = _squared_distances(real[start : start + block_size], fake)
        real_inside[start : start + block_size] = (d <= fake_radii[None, :]).any(axis=1)
        fake_inside |= (d <= real_radii[start : start + block_size, None]).any(axis=0)
    return float(fake_inside.mean()), float(real_inside.mean())


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
