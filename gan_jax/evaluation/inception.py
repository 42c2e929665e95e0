"""FID's Inception-v3 in Flax (NHWC): pytorch-fid's network, both anchors' resizes, its weights.

The network is TensorFlow's Inception-v3 graph of 2015-12-05 as pytorch-fid ports it
(mseitzer/pytorch-fid, src/pytorch_fid/inception.py; torch-fidelity's
feature_extractor_inceptionv3.py builds the same layers), which differs from torchvision's
Inception-v3 in four places:
- Mixed_5b/c/d, Mixed_6b/c/d/e and Mixed_7b (FIDInceptionA / C / E_1) pool their pool branch with
  a 3x3 average, stride 1, padding 1, that averages only the pixels inside the image
  (count_include_pad=False), as TensorFlow's average pool does;
- Mixed_7c (FIDInceptionE_2) max-pools that branch instead (3x3, stride 1, padding 1);
- the classifier has 1,008 classes;
- every BatchNorm has eps 0.001 and is used with its running statistics (inference only).
Every convolution is "BasicConv2d": a conv without bias, BatchNorm, ReLU.

Outputs: `pool` [N, 2048], Mixed_7c's global average (pytorch-fid's FID features, block 3), and
`logits` [N, 1008] = pool @ fc.kernel (+ fc.bias with `logits_bias=True`). The Inception Score
takes the logits without the bias, as TensorFlow's reference (openai/improved-gan) and
torch-fidelity ("logits_unbiased") do, so that is the default.

Pre-processing, matching one anchor each (`resize=`):
- "pytorch_fid" (the default; the FID anchor): float pixels in [0, 1] (uint8 is read as k / 255),
  bilinear resize to 299 x 299 as `F.interpolate(mode="bilinear", align_corners=False)` without
  antialiasing (source = (dst + 0.5) * in / out - 0.5, clamped at 0), then 2x - 1.
- "torch_fidelity" (the Inception Score anchor): uint8 pixels (floats in [0, 1] are first
  rounded to uint8 as `torchvision.utils.save_image` does: floor(255 x + 0.5)), TF1's legacy
  bilinear resize (source = dst * in / out, no half-pixel offset, in float32, as
  torch_fidelity/interpolate_compat_tensorflow.py), then (x - 128) / 128.
`jax.image.resize` cannot stand in for either: it antialiases when downsampling and has no TF1
mode. Both resizes are separable, so each is two small matmuls with [299, H] and [299, W]
interpolation matrices built on the host at trace time.

Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (WEIGHTS_URL; torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth` has the same sha256). `load_weights` reads it without
torch (gan_jax.evaluation.torch_checkpoint), maps torch names onto the Flax tree, checks the
file's sha256 and caches the converted arrays as `.npz` in `reference.cache_dir()`.

Cost: about 5.7 G multiply-adds per image at 299 x 299 whatever the input size, since every
image is resized first. Measured with experiments/bench_inception.py on the project's 2-core
AMD EPYC (AVX-512, idle), 28x28x1 input in batches of 32 through
`feature_networks.InceptionNetwork.embed` (`xla_options.jit`, no YNNPACK): 743 s per 10,000
images (13.5 images/s), compiling 4 s. Earlier, under plain `jax.jit` (YNNPACK) and a shared
machine, it was 228 s per 1,000, and pytorch-fid's torch forward 80-110 s per 1,000 on the same
machine. On a CPU an Inception evaluation is minutes; an accelerator's job for routine use.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import paths
from gan_jax.evaluation import torch_checkpoint

IMAGE_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
BN_EPSILON = 1e-3

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILENAME
)
# pytorch-fid publishes only the prefix 6726825d (torch.hub checks the file's sha256 against it).
# The full digest and size are recorded by third-party model stores that pin the file, e.g.
# genforce/genforce (metrics/inception.py, the same URL), and agree with that prefix.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_BYTES = 95_628_359
# Bump when the converted cache's layout or meaning changes; old files are then ignored.
CACHE_FORMAT = 1

Resize = Literal["pytorch_fid", "torch_fidelity"]
RESIZE_MODES = ("pytorch_fid", "torch_fidelity")
# float32 products on every backend by default: TPUs otherwise multiply in one bf16 pass, and
# features would no longer match the float32 anchors to 1e-4.
DEFAULT_PRECISION = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# The network. Module names are torch's, so the torch name of a tensor is its Flax path joined
# by dots (see `_torch_name`).
# ---------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm (running statistics, eps 0.001) → ReLU, on NHWC input."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=[(p, p) for p in self.padding],
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    # TensorFlow's average pool divides by the pixels inside the image, not by 9 at the borders.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_same(x: jax.Array) -> jax.Array:
    # Padding is -inf for a max pool, as torch's max_pool2d pads.
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


def _stride_one_conv(precision: Any):
    """conv(features, kernel, padding, name): the blocks' stride-1 BasicConv2d at `precision`."""

    def conv(features: int, kernel: tuple[int, int], padding: tuple[int, int], name: str):
        return BasicConv2d(features, kernel, padding=padding, precision=precision, name=name)

    return conv


class InceptionA(nn.Module):
    """pytorch-fid's FIDInceptionA (Mixed_5b/c/d): 64 + 64 + 96 + pool_features channels."""

    pool_features: int
    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _stride_one_conv(self.precision)
        b1 = conv(64, (1, 1), (0, 0), "branch1x1")(x)
        b5 = conv(48, (1, 1), (0, 0), "branch5x5_1")(x)
        b5 = conv(64, (5, 5), (2, 2), "branch5x5_2")(b5)
        b3 = conv(64, (1, 1), (0, 0), "branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), (1, 1), "branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), (1, 1), "branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), (0, 0), "branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: the grid reduction 35 → 17, 384 + 96 + input channels."""

    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.precision
        b3 = BasicConv2d(384, (3, 3), strides=(2, 2), precision=p, name="branch3x3")(x)
        bd = BasicConv2d(64, (1, 1), precision=p, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=(1, 1), precision=p, name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), strides=(2, 2), precision=p, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """pytorch-fid's FIDInceptionC (Mixed_6b/c/d/e): factorised 7x7 branches, 4 x 192 channels."""

    channels_7x7: int
    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        conv = _stride_one_conv(self.precision)
        b1 = conv(192, (1, 1), (0, 0), "branch1x1")(x)
        b7 = conv(c7, (1, 1), (0, 0), "branch7x7_1")(x)
        b7 = conv(c7, (1, 7), (0, 3), "branch7x7_2")(b7)
        b7 = conv(192, (7, 1), (3, 0), "branch7x7_3")(b7)
        bd = conv(c7, (1, 1), (0, 0), "branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), (3, 0), "branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), (0, 3), "branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), (3, 0), "branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), (0, 3), "branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), (0, 0), "branch_pool")(_avg_pool_3x3_same(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: the grid reduction 17 → 8, 320 + 192 + input channels."""

    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda f, k, s, p, name: BasicConv2d(  # noqa: E731
            f, k, strides=s, padding=p, precision=self.precision, name=name
        )
        b3 = conv(192, (1, 1), (1, 1), (0, 0), "branch3x3_1")(x)
        b3 = conv(320, (3, 3), (2, 2), (0, 0), "branch3x3_2")(b3)
        b7 = conv(192, (1, 1), (1, 1), (0, 0), "branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), (1, 1), (0, 3), "branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), (1, 1), (3, 0), "branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), (2, 2), (0, 0), "branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """pytorch-fid's FIDInceptionE_1 (Mixed_7b, pool="avg") and FIDInceptionE_2 (Mixed_7c,
    pool="max"): 320 + 768 + 768 + 192 = 2,048 channels."""

    pool: Literal["avg", "max"]
    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _stride_one_conv(self.precision)
        b1 = conv(320, (1, 1), (0, 0), "branch1x1")(x)
        b3 = conv(384, (1, 1), (0, 0), "branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), (0, 1), "branch3x3_2a")(b3),
                conv(384, (3, 1), (1, 0), "branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = conv(448, (1, 1), (0, 0), "branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), (1, 1), "branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                conv(384, (1, 3), (0, 1), "branch3x3dbl_3a")(bd),
                conv(384, (3, 1), (1, 0), "branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        pooled = _avg_pool_3x3_same(x) if self.pool == "avg" else _max_pool_3x3_same(x)
        bp = conv(192, (1, 1), (0, 0), "branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class Classifier(nn.Module):
    """The 2048 → 1008 linear layer, with or without its bias ("fc" in torch)."""

    num_classes: int = NUM_CLASSES
    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, pool: jax.Array, *, with_bias: bool) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (pool.shape[-1], self.num_classes)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        logits = jnp.dot(pool, kernel, precision=self.precision)
        return logits + bias if with_bias else logits


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3 up to its final average pool, plus the 1008-class classifier.

    Input: [N, 299, 299, 3] float32 already normalised to [-1, 1] (see `preprocess`); other
    sizes work too (the network is convolutional), but only 299 matches the anchors.
    Output: (pool [N, 2048] >= 0, logits [N, 1008]).
    """

    precision: Any = DEFAULT_PRECISION

    @nn.compact
    def __call__(self, x: jax.Array, *, logits_bias: bool = False) -> tuple[jax.Array, jax.Array]:
        p = self.precision
        x = BasicConv2d(32, (3, 3), strides=(2, 2), precision=p, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), precision=p, name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), precision=p, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)  # 147 → 73
        x = BasicConv2d(80, (1, 1), precision=p, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), precision=p, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)  # 71 → 35
        x = InceptionA(32, precision=p, name="Mixed_5b")(x)
        x = InceptionA(64, precision=p, name="Mixed_5c")(x)
        x = InceptionA(64, precision=p, name="Mixed_5d")(x)
        x = InceptionB(precision=p, name="Mixed_6a")(x)
        x = InceptionC(128, precision=p, name="Mixed_6b")(x)
        x = InceptionC(160, precision=p, name="Mixed_6c")(x)
        x = InceptionC(160, precision=p, name="Mixed_6d")(x)
        x = InceptionC(192, precision=p, name="Mixed_6e")(x)
        x = InceptionD(precision=p, name="Mixed_7a")(x)
        x = InceptionE("avg", precision=p, name="Mixed_7b")(x)
        x = InceptionE("max", precision=p, name="Mixed_7c")(x)
        pool = x.mean(axis=(1, 2))
        logits = Classifier(precision=p, name="fc")(pool, with_bias=logits_bias)
        return pool, logits


# ---------------------------------------------------------------------------------------------
# Pre-processing.
# ---------------------------------------------------------------------------------------------


def resize_matrix(in_size: int, out_size: int, resize: Resize) -> np.ndarray:
    """float32 [out_size, in_size]: row o holds the bilinear weights of output pixel o.

    Coordinates are computed in float32, as both anchors compute them, so the taps (floor of the
    source coordinate) are the anchors' own even where float64 would round across an integer.
    - "pytorch_fid": PyTorch's upsample_bilinear2d with align_corners=False (its CPU kernel's
      area_pixel_compute_source_index): src = (in / out) * (o + 0.5) - 0.5, clamped at 0;
      taps floor(src) and the next one (the same one at the last pixel); in == out copies.
    - "torch_fidelity": TF1's resize_bilinear with align_corners=False: src = o * (in / out),
      the scale rounded to float32 first; taps trunc(src) and min(trunc(src) + 1, in - 1).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}.")
    out_index = np.arange(out_size, dtype=np.float32)
    if resize == "pytorch_fid":
        if in_size == out_size:
            return np.eye(out_size, dtype=np.float32)
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.maximum(scale * (out_index + np.float32(0.5)) - np.float32(0.5), np.float32(0))
        lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        frac = np.clip(src - lo.astype(np.float32), np.float32(0), np.float32(1))
        hi = lo + (lo < in_size - 1)
    else:
        src = out_index * np.float32(in_size / out_size)
        lo = src.astype(np.int64)  # source coordinates are >= 0, so truncation is floor
        hi = np.minimum(lo + 1, in_size - 1)
        frac = src - lo.astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo), np.float32(1) - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def preprocess(
    images: jax.Array | np.ndarray, *, resize: Resize = "pytorch_fid", precision: Any = None
) -> jax.Array:
    """Images [N, H, W, C] (C in {1, 3}; any H, W) → the network's input [N, 299, 299, 3].

    Args:
      images: uint8 pixels 0..255, or floats with pixels in [0, 1].
      resize: which anchor's pre-processing (see the module docstring).
      precision: of the two interpolation matmuls; float32 products by default.

    Returns:
      float32 [N, 299, 299, 3], in [-1, 1] ("pytorch_fid") or [-1, 127/128] ("torch_fidelity").
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}.")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"Inception features need images [N, H, W, C] with C = 1 or 3; got {images.shape}."
        )
    precision = DEFAULT_PRECISION if precision is None else precision
    is_uint8 = images.dtype == jnp.uint8
    x = jnp.asarray(images).astype(jnp.float32)
    if resize == "pytorch_fid":
        x = x / 255.0 if is_uint8 else x  # pytorch-fid reads files as ToTensor(): k / 255
    elif not is_uint8:
        # torch-fidelity takes uint8 only; floats become uint8 as torchvision.utils.save_image
        # rounds them (x * 255 + 0.5, clamped, truncated).
        x = jnp.floor(jnp.clip(x * 255.0 + 0.5, 0.0, 255.0))
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)  # grayscale as RGB, as PIL's convert("RGB") does
    _, height, width, _ = x.shape
    # An identity matrix would only cost time (and each anchor copies equal sizes exactly).
    if height != IMAGE_SIZE:
        rows = jnp.asarray(resize_matrix(height, IMAGE_SIZE, resize))
        x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=precision)
    if width != IMAGE_SIZE:
        cols = jnp.asarray(resize_matrix(width, IMAGE_SIZE, resize))
        x = jnp.einsum("pw,nhwc->nhpc", cols, x, precision=precision)
    return 2.0 * x - 1.0 if resize == "pytorch_fid" else (x - 128.0) / 128.0


def apply_network(
    variables: Mapping[str, Any],
    x: jax.Array,
    *,
    logits_bias: bool = False,
    precision: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """The network on pre-processed input [N, 299, 299, 3] → (pool [N, 2048], logits [N, 1008])."""
    precision = DEFAULT_PRECISION if precision is None else precision
    return FIDInceptionV3(precision=precision).apply(variables, x, logits_bias=logits_bias)


def inception_features(
    variables: Mapping[str, Any],
    images: jax.Array | np.ndarray,
    *,
    resize: Resize = "pytorch_fid",
    logits_bias: bool = False,
    precision: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Inception-v3 pool features and logits of images of any size. Pure; jit it with
    `static_argnames=("resize", "logits_bias", "precision")`.

    Args:
      variables: {"params": ..., "batch_stats": ...}, e.g. `load_weights().variables`.
      images: [N, H, W, C], C in {1, 3} (1 is repeated to 3); uint8, or floats in [0, 1].
      resize: "pytorch_fid" (FID's anchor, the default) or "torch_fidelity" (the Inception
        Score's anchor); see the module docstring.
      logits_bias: add the classifier's bias (off: the Inception Score's "unbiased" logits).
      precision: of every matmul and convolution; float32 products by default.

    Returns:
      (pool float32 [N, 2048], the FID / KID / precision-recall features;
       logits float32 [N, 1008], unnormalised class scores over the 1,008 classes).
    """
    x = preprocess(images, resize=resize, precision=precision)
    return apply_network(variables, x, logits_bias=logits_bias, precision=precision)


# ---------------------------------------------------------------------------------------------
# Inception Score.
# ---------------------------------------------------------------------------------------------


def inception_score(
    logits: Any, *, splits: int = 10, shuffle: bool = True, seed: int = 2020
) -> tuple[float, float]:
    """Inception Score as torch-fidelity computes it: (mean, std) of exp(E_x KL(p(y|x) || p(y)))
    over `splits` consecutive chunks of the (shuffled) samples.

    torch-fidelity's recipe (metric_isc.py, defaults isc_splits=10, samples_shuffle=True,
    rng_seed=2020): rows permuted by np.random.RandomState(seed).permutation(N), softmax in
    float64, chunk i = rows [i N // splits, (i + 1) N // splits), p(y) = the chunk's mean, the
    std over chunks with ddof 0.

    Args:
      logits: [N, K] unnormalised class scores (for the standard number, the unbiased logits of
        `inception_features(..., resize="torch_fidelity")`).
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[0] < splits:
        raise ValueError(f"Need logits [N, K] with N >= splits={splits}; got {logits.shape}.")
    n = logits.shape[0]
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n)]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        chunk = slice(i * n // splits, (i + 1) * n // splits)
        log_marginal = np.log(p[chunk].mean(axis=0))
        kl = (p[chunk] * (log_p[chunk] - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------------------------------------
# torch state dicts ↔ Flax variables.
# ---------------------------------------------------------------------------------------------

# Flax leaf name → torch leaf name, by the module that holds it.
_BN_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_FC_NAMES = {"kernel": "weight", "bias": "bias"}


def _torch_name(path: tuple[str, ...]) -> str:
    """(collection, *modules, leaf) of a Flax variable → its torch state-dict name."""
    _, *modules, leaf = path
    if modules[-1] == "conv":
        torch_leaf = {"kernel": "weight"}[leaf]
    elif modules[-1] == "bn":
        torch_leaf = _BN_NAMES[leaf]
    else:
        torch_leaf = _FC_NAMES[leaf]
    return ".".join([*modules, torch_leaf])


def _to_torch_layout(array: np.ndarray, torch_name: str) -> np.ndarray:
    """A Flax array in torch's layout: conv HWIO → OIHW, linear [in, out] → [out, in]."""
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2:
        return array.T
    return array


def _from_torch_layout(array: np.ndarray) -> np.ndarray:
    """Inverse of `_to_torch_layout`: OIHW → HWIO, [out, in] → [in, out]."""
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
        return array.T
    return array


@functools.cache
def _variable_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
    """(collection, *modules, leaf) → shape of every variable of FIDInceptionV3 (no compute)."""
    shapes = jax.eval_shape(
        lambda: FIDInceptionV3().init(
            jax.random.key(0), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32)
        )
    )
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """torch name → torch shape of every tensor the network needs (BatchNorm's
    num_batches_tracked, which inference never reads, is not among them)."""
    out = {}
    for path, shape in _variable_shapes().items():
        name = _torch_name(path)
        out[name] = _to_torch_layout(np.empty(shape, np.uint8), name).shape
    return out


class WeightsError(ValueError):
    """A weights file that is not pytorch-fid's Inception: wrong checksum, or missing / extra /
    misshapen tensors."""


class WeightsUnavailableError(FileNotFoundError):
    """No weights file where one was asked for, none cached, and no download: the message names
    the file, its URL, its checksum and how to pass a path."""


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """pytorch-fid's state dict {torch name: array} → Flax variables {"params", "batch_stats"}.

    Every tensor of `state_dict_shapes()` must be there with its shape; `num_batches_tracked`
    entries are ignored; any other entry is an error too (it would mean another network, e.g.
    torchvision's Inception with its auxiliary classifier). One WeightsError lists all problems.
    """
    expected = state_dict_shapes()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(
        k for k in set(state_dict) - set(expected) if not k.endswith(".num_batches_tracked")
    )
    misshapen = sorted(
        f"{k} {tuple(np.shape(state_dict[k]))} (want {expected[k]})"
        for k in set(expected) & set(state_dict)
        if tuple(np.shape(state_dict[k])) != tuple(expected[k])
    )
    problems = []
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("misshapen", misshapen),
    ):
        if names:
            shown = ", ".join(names[:8]) + (
                f", ... ({len(names)} in all)" if len(names) > 8 else ""
            )
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsError(
            "Not pytorch-fid's Inception-v3 state dict (" + "; ".join(problems) + ")."
        )
    variables: dict[str, Any] = {}
    for path in _variable_shapes():
        node = variables
        for key in path[:-1]:
            node = node.setdefault(key, {})
        array = np.asarray(state_dict[_torch_name(path)], np.float32)
        node[path[-1]] = np.ascontiguousarray(_from_torch_layout(array))
    return variables


def seeded_variables(seed: int = 0) -> dict[str, Any]:
    """Random Flax variables from `torch_checkpoint.seeded_state_dict(state_dict_shapes(), seed)`:
    the same numbers the goldens script loads into pytorch-fid's and torch-fidelity's torch
    networks (experiments/make_inception_goldens.py)."""
    return variables_from_state_dict(torch_checkpoint.seeded_state_dict(state_dict_shapes(), seed))


# ---------------------------------------------------------------------------------------------
# Loading the real weights: checked, converted once, cached.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InceptionWeights:
    """Flax variables of the network and the sha256 of the file they came from."""

    variables: dict[str, Any]
    sha256: str
    source: str

    @property
    def info(self) -> dict[str, Any]:
        """What results record about the network: {"version", "sha256"}."""
        return {"version": "pt_inception-2015-12-05", "sha256": self.sha256}


def default_cache_dir() -> pathlib.Path:
    """Where the converted weights (and a downloaded .pth) live: gan_jax's evaluation cache,
    $GAN_JAX_CACHE_DIR/eval or ~/.cache/gan_jax/eval."""
    from gan_jax.evaluation import reference  # noqa: PLC0415 (reference imports the metrics stack)

    return reference.cache_dir()


def _sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: pathlib.Path, write) -> None:
    """reference's atomic cache write (temporary file, then rename): a crash, a failed check or
    a concurrent writer never leaves a half-written file under the final name."""
    from gan_jax.evaluation import reference  # noqa: PLC0415 (reference imports the metrics stack)

    reference._atomic_write(path, write)


def _flatten(variables: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in variables.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value)
    return out


def _unflatten(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, array in arrays.items():
        *parents, leaf = name.split("/")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = array
    return out


def _cache_path(cache_dir: pathlib.Path, sha256: str) -> pathlib.Path:
    return cache_dir / f"inception-2015-12-05-{sha256[:16]}-flax-v{CACHE_FORMAT}.npz"


def _load_cached(path: pathlib.Path, sha256: str) -> dict[str, Any] | None:
    """The cached variables, or None if the file is absent, unreadable or not what it claims."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (OSError, ValueError, KeyError):
        return None
    if meta.get("source_sha256") != sha256 or meta.get("cache_format") != CACHE_FORMAT:
        return None
    variables = _unflatten(arrays)
    shapes = {
        path: tuple(arrays["/".join(path)].shape)
        for path in _variable_shapes()
        if "/".join(path) in arrays
    }
    return variables if shapes == _variable_shapes() else None


def _missing_weights_message(cache_dir: pathlib.Path, reason: str) -> str:
    return (
        f"FID's Inception-v3 weights are not available ({reason}). Get {WEIGHTS_FILENAME} "
        f"({WEIGHTS_BYTES:,} bytes, sha256 {WEIGHTS_SHA256}) from {WEIGHTS_URL} on a machine "
        "that reaches it, then either pass its path (--inception_weights FILE, "
        "--config.inception_weights=FILE, or gan_jax.evaluation.inception.load_weights("
        "path=...)) or copy it to "
        f"{cache_dir / WEIGHTS_FILENAME}."
    )


def _download(url: str, destination: pathlib.Path, sha256: str, timeout_s: float) -> None:
    """Downloads url to destination through a temporary file, renamed into place only once its
    sha256 matches."""

    def write(f) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
        if digest.hexdigest() != sha256:
            raise WeightsError(
                f"{url} sent a file with sha256 {digest.hexdigest()}, not {sha256}; kept nothing."
            )

    _atomic_write(destination, write)


def load_weights(
    path: str | os.PathLike | None = None,
    *,
    expected_sha256: str = WEIGHTS_SHA256,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    timeout_s: float = 60.0,
) -> InceptionWeights:
    """pytorch-fid's Inception-v3 weights as Flax variables, converted once and cached.

    Order of sources: the converted cache (`<cache_dir>/inception-2015-12-05-<sha>-flax-v1.npz`,
    keyed by the source file's sha256); else the `.pth` at `path`; else
    `<cache_dir>/pt_inception-2015-12-05-6726825d.pth`; else, with `download`, WEIGHTS_URL
    fetched into that place. No torch is imported: the file is read by `torch_checkpoint`.

    Args:
      path: a local copy of pt_inception-2015-12-05-6726825d.pth (`~` allowed).
      expected_sha256: the file's sha256 (WEIGHTS_SHA256; another value loads other weights of
        the same architecture, cached under their own hash).
      cache_dir: default `default_cache_dir()`.
      download: try WEIGHTS_URL when no file is found (never in tests).
      timeout_s: of the download's connection.

    Raises:
      WeightsUnavailableError (a FileNotFoundError): no file and no download; the message names
        the file, its URL, its checksum and how to pass a path.
      WeightsError: the file's sha256 is not `expected_sha256`, or it lacks (or has extra or
        misshapen) tensors. Nothing in the cache is written or changed then.
      torch_checkpoint.TorchCheckpointError: the file is not a readable torch state dict.
    """
    cache = pathlib.Path(paths.resolve(cache_dir) if cache_dir else default_cache_dir())
    cached = _cache_path(cache, expected_sha256)
    if path is None and (variables := _load_cached(cached, expected_sha256)) is not None:
        return InceptionWeights(variables, expected_sha256, str(cached))
    if path is not None:
        source = pathlib.Path(paths.resolve(path))
        if not source.is_file():
            raise WeightsUnavailableError(_missing_weights_message(cache, f"no file at {source}"))
    else:
        source = cache / WEIGHTS_FILENAME
        if not source.is_file():
            if not download:
                raise WeightsUnavailableError(
                    _missing_weights_message(cache, "not in the cache, and download is off")
                )
            try:
                _download(WEIGHTS_URL, source, expected_sha256, timeout_s)
            except (urllib.error.URLError, OSError) as error:
                raise WeightsUnavailableError(
                    _missing_weights_message(cache, f"download failed: {error}")
                ) from error
    digest = _sha256_of(source)
    if digest != expected_sha256:
        raise WeightsError(
            f"{source} has sha256 {digest}, not {expected_sha256} ({WEIGHTS_FILENAME} from "
            f"{WEIGHTS_URL}): a different or damaged file; the cache was left as it was."
        )
    if (variables := _load_cached(cached, expected_sha256)) is not None:
        return InceptionWeights(variables, expected_sha256, str(cached))
    variables = variables_from_state_dict(torch_checkpoint.read_state_dict(source))
    meta = json.dumps(
        {"source_sha256": digest, "source": WEIGHTS_FILENAME, "cache_format": CACHE_FORMAT}
    )
    arrays = _flatten(variables)
    _atomic_write(cached, lambda f: np.savez(f, __meta__=np.array(meta), **arrays))
    return InceptionWeights(variables, digest, str(source))
