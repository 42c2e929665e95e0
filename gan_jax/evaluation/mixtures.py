"""Mode-collapse metrics of 2-D samples against a Gaussian mixture (PacGAN's Table 1).

A sample is *high quality* when it lies within `threshold` standard deviations (3 in PacGAN) of
its nearest mode, the distance measured in units of the mode's std; a mode is *covered* when at
least one high-quality sample is nearest to it; the *reverse KL* is KL(p || uniform) of the
high-quality samples' histogram p over the K modes, sum_k p_k log(K p_k) (0 when the
high-quality samples spread evenly, log K when they all sit on one mode). This follows PacGAN's
code (synthetic_data_experiments/PacGAN/pacgan/extensions.py, MetricLogger): nearest mode by
the std-scaled distance, strict `<` at the threshold.

For real data, a 2-D Gaussian sample is within 3 std of its own mean with probability
1 - exp(-9/2) = 0.9889, so the real-data floor of "high quality" is about 98.9%.
"""

from __future__ import annotations

import math

import numpy as np

HQ_THRESHOLD = 3.0  # standard deviations
NUM_SAMPLES = 2500  # PacGAN's evaluation sample count


def mode_histogram(
    samples: np.ndarray, means: np.ndarray, std: float, *, threshold: float = HQ_THRESHOLD
) -> np.ndarray:
    """High-quality samples per mode: int64 [K].

    samples: float [n, 2]; means: float [K, 2]; std: the modes' (isotropic) standard deviation.
    """
    samples = np.asarray(samples, np.float64)
    means = np.asarray(means, np.float64)
    if samples.ndim != 2 or samples.shape[1] != means.shape[1]:
        raise ValueError(
            f"samples must be [n, {means.shape[1]}] points of the mixture, got {samples.shape}"
        )
    # [n, K] squared distances; n * K is at most a few hundred thousand here.
    distances = np.sqrt(((samples[:, None, :] - means[None, :, :]) ** 2).sum(-1)) / std
    nearest = distances.argmin(axis=1)
    high_quality = distances[np.arange(len(samples)), nearest] < threshold
    return np.bincount(nearest[high_quality], minlength=len(means))


def mixture_metrics(
    samples: np.ndarray, means: np.ndarray, std: float, *, threshold: float = HQ_THRESHOLD
) -> dict[str, float | int]:
    """{"modes_covered", "high_quality", "reverse_kl"} of `samples` against the mixture.

    high_quality is a fraction in [0, 1]; reverse_kl is in nats, NaN when no sample is of high
    quality: there is no histogram to compare, so the KL is undefined (neither 0 nor log K).
    The mean of several trials with such a one is NaN too (evaluate.combine_runs); the PacGAN
    tables (experiments/pacgan_tables.py) show the mean ± s.e. over the trials where it is
    defined, with how many it is not, and say so in their legend.
    """
    counts = mode_histogram(samples, means, std, threshold=threshold)
    total = int(counts.sum())
    reverse_kl = math.nan
    if total:
        p = counts[counts > 0] / total
        # max: rounding can put an exactly uniform histogram a hair below 0.
        reverse_kl = max(float(np.sum(p * np.log(p * len(means)))), 0.0)
    return {
        "modes_covered": int(np.count_nonzero(counts)),
        "high_quality": total / len(samples),
        "reverse_kl": reverse_kl,
    }
