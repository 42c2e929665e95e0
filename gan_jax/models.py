"""Generator and discriminator families, used as pure functions through `Module.apply`.

Every generator maps a latent batch `z` [B, latent_dim] (and, when conditional, integer labels [B])
to images [B, H, W, C] in its `pixel_range`; every discriminator maps images [B, H, W, C] (and
labels) to one real-valued logit per image, [B]. Both take a field `axis_name`: when set, layers
that depend on the batch (BatchNorm) reduce over that device axis, so a data-parallel step sees
the statistics of the global batch.

One discriminator has a batch-dependent layer: `UnrolledGANDiscriminator` (BatchNorm). The
train step scores real and fake images in one concatenated call when the discriminator has no
"batch_stats" collection and in two calls, each batch normalised by its own statistics, when it
has (gan_jax.step).

Spectral normalisation (`spectral_norm=True`, Miyato et al. 2018): every discriminator layer
with a kernel (convolutions, dense layers, the logit and, when conditional, the projection
embedding) computes with kernel / sigma, where sigma estimates the largest singular value of
the kernel reshaped to [kh*kw*cin, cout] (the matrix SNGAN normalises) by power iteration.
`flax.linen.SpectralNorm` does the work; its vectors u (and the last sigma) live in the mutable
collection "spectral_norm" (`TrainState.d_state`), advance only in training mode, and depend on
the (replicated) weights alone, so data-parallel copies stay identical without a collective.
The parameters keep their names and shapes. Their initial values are the plain layers' up to a
scale per kernel (Flax stores the normalised view at initialisation), which the normalised
layers cannot see: kernel / sigma(kernel) does not depend on the kernel's scale.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.linen.dtypes import promote_dtype
from jax import lax

from gan_jax import config as config_lib
from gan_jax import layers

PIXEL_RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}
# Samples that are not images (the 2-D mixtures' points) are in the data's own units: "identity".
IDENTITY = "identity"
SPECTRAL_NORM = "spectral_norm"  # the collection holding the power-iteration vectors


class Models(NamedTuple):
    """The two players of a GAN and the pixel range the generator produces."""

    generator: nn.Module
    discriminator: nn.Module
    pixel_range: str  # "unit" for [0, 1] images, "symmetric" for [-1, 1], "identity" for points


def _leaky_relu(x: jax.Array) -> jax.Array:
    # 0.3 is the slope of the well-known TensorFlow MNIST DCGAN, which these models reproduce.
    return nn.leaky_relu(x, negative_slope=0.3)


def _condition_latent(z: jax.Array, labels: jax.Array | None, num_classes: int) -> jax.Array:
    """Concatenates a learned label embedding to the latent when the model is conditional."""
    if num_classes <= 0:
        return z
    if labels is None:
        raise ValueError("a conditional generator (config.num_classes > 0) needs labels")
    embedding = nn.Embed(num_classes, z.shape[-1], name="label_embedding")(labels)
    return jnp.concatenate([z, embedding.astype(z.dtype)], axis=-1)


class SpectralNormed(NamedTuple):
    """How a discriminator applies its layers: as they are, or spectrally normalised."""

    enabled: bool
    power_iterations: int
    train: bool

    def __call__(self, layer: nn.Module) -> Callable[..., jax.Array]:
        """`layer`, or `layer` computing with its kernel divided by the kernel's spectral norm.

        Power iteration runs on every call (from the stored u); the new u is stored only in
        training mode, i.e. in the discriminator's update (other calls discard it).
        """
        if not self.enabled:
            return layer
        wrapped = nn.SpectralNorm(
            layer, n_steps=self.power_iterations, collection_name=SPECTRAL_NORM
        )
        return functools.partial(wrapped, update_stats=self.train)


def _projection_logit(
    features: jax.Array,
    labels: jax.Array | None,
    num_classes: int,
    normed: SpectralNormed | None = None,
    kernel_init: Callable[..., jax.Array] | None = None,
) -> jax.Array:
    """Logit = linear(features) [+ <embed(label), features>] (projection discriminator).

    Always in float32, whatever the compute dtype: one output per image costs nothing, and a
    bf16 logit (8 bits of mantissa) would round the losses and their gradients coarsely.
    """
    normed = normed or SpectralNormed(enabled=False, power_iterations=1, train=False)
    features = features.astype(jnp.float32)
    dense = nn.Dense(
        1,
        dtype=jnp.float32,
        kernel_init=kernel_init or nn.initializers.lecun_normal(),
        name="logit",
    )
    logit = normed(dense)(features)[:, 0]
    if num_classes > 0:
        if labels is None:
            raise ValueError("a conditional discriminator (config.num_classes > 0) needs labels")
        embed = nn.Embed(num_classes, features.shape[-1], name="label_projection")
        embedding = normed(embed)(labels)
        logit = logit + jnp.sum(embedding.astype(jnp.float32) * features, axis=-1)
    return logit


def _conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], pads: Any) -> jax.Array:
    n = x.ndim - 2
    space = "DHW"[-n:]
    return lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=(f"N{space}C", f"{space}IO", f"N{space}C")
    )


def _input_grad_pads(size: int, k: int, s: int, pad: tuple[int, int]) -> tuple[int, int]:
    """Padding of the stride-dilated cotangent in the transposed convolution that is the input
    gradient of a convolution (input `size`, kernel `k`, stride `s`, padding `pad`): the
    padding `jax.vjp` gives its lhs-dilated convolution."""
    out = (size + pad[0] + pad[1] - k) // s + 1
    before = k - pad[0] - 1
    return before, size + k - 1 - ((out - 1) * s + 1) - before


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_phase_input_grad(x, kernel, strides, pads):
    return _conv_nhwc(x, kernel, strides, pads)


def _conv_phase_fwd(x, kernel, strides, pads):
    return _conv_nhwc(x, kernel, strides, pads), (x, kernel)


def _conv_phase_bwd(strides, pads, residuals, cotangent):
    x, kernel = residuals
    grad_pads = tuple(
        _input_grad_pads(size, k, s, p)
        for size, k, s, p in zip(x.shape[1:-1], kernel.shape[:-2], strides, pads, strict=True)
    )
    x_grad = layers.conv_transpose_phase(
        cotangent, kernel, strides=strides, padding=grad_pads, transpose_kernel=True
    )
    _, kernel_pullback = jax.vjp(lambda k: _conv_nhwc(x, k, strides, pads), kernel)
    (kernel_grad,) = kernel_pullback(cotangent)
    return x_grad.astype(x.dtype), kernel_grad


_conv_phase_input_grad.defvjp(_conv_phase_fwd, _conv_phase_bwd)


class Conv(nn.Module):
    """``nn.Conv`` (channels-last, no dilation or groups) whose input gradient is fast.

    The input gradient of a strided convolution is a strided transposed convolution, which XLA
    computes as a convolution of the stride-dilated cotangent: on CPU about 64 GFLOP/s for the
    dcgan discriminator's second layer against about 160 as a phase decomposition
    (`layers.conv_transpose_phase`), which is what this layer's VJP uses where
    `layers.resolve_impl` picks it (strides > 1 on CPU and GPU). The kernel gradient and the
    forward pass are XLA's own. Parameters, their names, shapes and initialisers are those of
    ``nn.Conv``, so checkpoints are interchangeable. Differentiable twice (the R1 and WGAN-GP
    penalties differentiate the input gradient), not forward-mode differentiable.
    """

    features: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_size = tuple(self.kernel_size)
        strides = tuple(self.strides or (1,) * len(kernel_size))
        kernel = self.param(
            "kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        pads = lax.padtype_to_pads(x.shape[1:-1], kernel_size, strides, self.padding)
        pads = tuple(tuple(p) for p in pads)
        if layers.resolve_impl("auto", strides) == "phase":
            y = _conv_phase_input_grad(x, kernel, strides, pads)
        else:
            y = _conv_nhwc(x, kernel, strides, pads)
        return y if bias is None else y + bias


class MLPGenerator(nn.Module):
    """The seed article's generator: z → Dense(width) ReLU → Dense(H·W·C) sigmoid, in [0, 1]."""

    image_shape: tuple[int, ...]
    width: int = 128
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None  # no batch-dependent layers; kept for a uniform interface

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        del train
        h = _condition_latent(z, labels, self.num_classes)
        h = nn.relu(nn.Dense(self.width, dtype=self.dtype)(h))
        h = nn.Dense(math.prod(self.image_shape), dtype=self.dtype)(h)
        return nn.sigmoid(h.astype(jnp.float32)).reshape((z.shape[0], *self.image_shape))


class MLPDiscriminator(nn.Module):
    """The seed article's discriminator: flatten → Dense(width) ReLU → Dense(1), a logit.

    `spectral_norm`: spectrally normalise both layers (see the module docstring)."""

    width: int = 128
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    spectral_norm: bool = False
    sn_power_iterations: int = 1

    @nn.compact
    def __call__(
        self, images: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        normed = SpectralNormed(self.spectral_norm, self.sn_power_iterations, train)
        h = images.reshape((images.shape[0], -1))
        h = nn.relu(normed(nn.Dense(self.width, dtype=self.dtype))(h))
        return _projection_logit(h, labels, self.num_classes, normed)


class DCGANGenerator(nn.Module):
    """The MNIST DCGAN generator, for any (H, W, C) with H and W divisible by 4.

    Dense(H/4·W/4·4w, no bias) → BN → LReLU(0.3) → ConvT(2w, 5×5, s1) → BN → LReLU →
    ConvT(w, 5×5, s2) → BN → LReLU → ConvT(C, 5×5, s2) → tanh, so images are in [-1, 1].
    Convolutions carry no bias: each is followed by BatchNorm (or tanh, as in the original).
    """

    image_shape: tuple[int, int, int]
    width: int = 64
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    # BatchNorm's running-average momentum; `standing_statistics` sets 0 to read batch moments.
    bn_momentum: float = 0.99
    # Same function, parameter names and shapes as nn.ConvTranspose; on CPU/GPU the stride-2
    # layers run as phase-decomposed convolutions, whose gradients XLA computes far faster.
    conv_transpose: Callable[..., nn.Module] = layers.ConvTranspose

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        height, width, channels = self.image_shape
        base_h, base_w = height // 4, width // 4

        def batch_norm(x: jax.Array) -> jax.Array:
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-3,
                dtype=self.dtype,
                axis_name=self.axis_name,
            )(x)

        def conv_t(features: int, stride: int) -> nn.Module:
            return self.conv_transpose(
                features,
                (5, 5),
                strides=(stride, stride),
                padding="SAME",
                use_bias=False,
                dtype=self.dtype,
            )

        h = _condition_latent(z, labels, self.num_classes)
        h = nn.Dense(base_h * base_w * 4 * self.width, use_bias=False, dtype=self.dtype)(h)
        h = _leaky_relu(batch_norm(h))
        h = h.reshape((z.shape[0], base_h, base_w, 4 * self.width))
        h = _leaky_relu(batch_norm(conv_t(2 * self.width, 1)(h)))
        h = _leaky_relu(batch_norm(conv_t(self.width, 2)(h)))
        h = conv_t(channels, 2)(h)
        return jnp.tanh(h.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
    """The MNIST DCGAN discriminator: Conv(w, 5×5, s2) → LReLU(0.3) → Conv(2w, 5×5, s2) → LReLU
    → Dense(1), a logit per image.

    The TensorFlow tutorial this reproduces puts Dropout(0.3) after each LeakyReLU; this one has
    none, on purpose. Dropout would need a PRNG key threaded into every discriminator call, the
    same mask in the WGAN-GP / R1 penalties' double backward, and masks drawn for the global
    batch and sliced per device (as the step does for its noise) to keep a data-parallel run
    equal to the one-device run; regularise the discriminator with `r1_weight`, `gp_weight` or
    `spectral_norm` instead.

    `spectral_norm`: spectrally normalise every layer, the convolutions as their
    [5*5*cin, cout] matrices (see the module docstring).
    """

    width: int = 64
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    # nn.Conv's function and parameters; its input gradient runs as phase convolutions.
    conv: Callable[..., nn.Module] = Conv
    spectral_norm: bool = False
    sn_power_iterations: int = 1

    @nn.compact
    def __call__(
        self, images: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        normed = SpectralNormed(self.spectral_norm, self.sn_power_iterations, train)

        def conv(features: int, h: jax.Array) -> jax.Array:
            layer = self.conv(features, (5, 5), strides=(2, 2), dtype=self.dtype)
            return _leaky_relu(normed(layer)(h))

        h = images.astype(self.dtype)
        h = conv(self.width, h)
        h = conv(2 * self.width, h)
        h = h.reshape((h.shape[0], -1))
        return _projection_logit(h, labels, self.num_classes, normed)


class CompactGenerator(nn.Module):
    """A small DCGAN generator for 28×28-like images, H and W divisible by 4, output in [-1, 1].

    Dense(H/4·W/4·2w) → [BN] → ReLU → ConvT(w, 4×4, s2) → [BN] → ReLU → ConvT(C, 4×4, s2) →
    tanh. Unlike `DCGANGenerator` it has no stride-1 layer at the lowest resolution (the
    tutorial's costliest) and 4×4 kernels, whose stride-2 phases are 2×2: about 7M
    multiply-adds per image at w = 64 against 80M. `batch_norm=False` drops both BatchNorms
    (convolutions and the dense layer then carry a bias), so the generator has no running
    statistics and its EMA is a complete model.
    """

    image_shape: tuple[int, int, int]
    width: int = 64
    batch_norm: bool = True
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    bn_momentum: float = 0.99  # 0 for standing statistics (see `standing_statistics`)

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        height, width, channels = self.image_shape

        def normalise(x: jax.Array) -> jax.Array:
            if not self.batch_norm:
                return x
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-3,
                dtype=self.dtype,
                axis_name=self.axis_name,
            )(x)

        def conv_t(features: int, *, use_bias: bool) -> nn.Module:
            return layers.ConvTranspose(
                features,
                (4, 4),
                strides=(2, 2),
                padding="SAME",
                use_bias=use_bias,
                dtype=self.dtype,
            )

        hidden_bias = not self.batch_norm  # a bias before BatchNorm is redundant
        h = _condition_latent(z, labels, self.num_classes)
        h = nn.Dense(
            (height // 4) * (width // 4) * 2 * self.width, use_bias=hidden_bias, dtype=self.dtype
        )(h)
        h = nn.relu(normalise(h))
        h = h.reshape((z.shape[0], height // 4, width // 4, 2 * self.width))
        h = nn.relu(normalise(conv_t(self.width, use_bias=hidden_bias)(h)))
        h = conv_t(channels, use_bias=True)(h)
        return jnp.tanh(h.astype(jnp.float32))


class CompactDiscriminator(nn.Module):
    """Conv(w, 4×4, s2) → LReLU(0.2) → Conv(2w, 4×4, s2) → LReLU(0.2) → Dense(1), a logit.

    `spectral_norm`: spectrally normalise every layer, the convolutions as their
    [4*4*cin, cout] matrices (see the module docstring).
    """

    width: int = 64
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    spectral_norm: bool = False
    sn_power_iterations: int = 1

    @nn.compact
    def __call__(
        self, images: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        normed = SpectralNormed(self.spectral_norm, self.sn_power_iterations, train)
        h = images.astype(self.dtype)
        for features in (self.width, 2 * self.width):
            h = normed(Conv(features, (4, 4), strides=(2, 2), dtype=self.dtype))(h)
            h = nn.leaky_relu(h, negative_slope=0.2)
        h = h.reshape((h.shape[0], -1))
        return _projection_logit(h, labels, self.num_classes, normed)


# PacGAN's 2-D models initialise every kernel from N(0, 0.02^2) and every bias at 0 (its code,
# synthetic_data_experiments/*/config.py: weights_init_std 0.02, biases_init 0, for both players).
_PACGAN_INIT = nn.initializers.normal(stddev=0.02)


class MixtureGenerator(nn.Module):
    """PacGAN's 2-D generator: z → [Dense(width, no bias) → BN → ReLU] × depth → Dense(D).

    Outputs [B, *sample_shape] in the data's units (no squashing). PacGAN: width 400, depth 4,
    z ~ N(0, I_2). BatchNorm as in its Blocks code: epsilon 1e-4, running averages updated as
    0.95 old + 0.05 new (momentum 0.95), read when sampling.
    """

    sample_shape: tuple[int, ...]
    width: int = 400
    depth: int = 4
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    bn_momentum: float = 0.95  # 0 for standing statistics (see `standing_statistics`)

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        h = _condition_latent(z, labels, self.num_classes)
        for _ in range(self.depth):
            h = nn.Dense(self.width, use_bias=False, dtype=self.dtype, kernel_init=_PACGAN_INIT)(h)
            h = nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-4,
                dtype=self.dtype,
                axis_name=self.axis_name,
            )(h)
            h = nn.relu(h)
        out = nn.Dense(math.prod(self.sample_shape), dtype=self.dtype, kernel_init=_PACGAN_INIT)(h)
        return out.astype(jnp.float32).reshape((z.shape[0], *self.sample_shape))


class MaxoutDiscriminator(nn.Module):
    """PacGAN's 2-D discriminator: [maxout(width, pieces)] × depth → Dense(1), a logit.

    A maxout layer is Dense(width * pieces) viewed as [B, width, pieces] and maxed over the
    pieces. PacGAN: width 200, 5 pieces, depth 3; packed inputs [B, m * D] only widen the first
    layer. No batch-dependent layers. `spectral_norm`: spectrally normalise every kernel.
    """

    width: int = 200
    pieces: int = 5
    depth: int = 3
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    spectral_norm: bool = False
    sn_power_iterations: int = 1

    @nn.compact
    def __call__(
        self, samples: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        normed = SpectralNormed(self.spectral_norm, self.sn_power_iterations, train)
        h = samples.reshape((samples.shape[0], -1)).astype(self.dtype)
        for _ in range(self.depth):
            layer = nn.Dense(self.width * self.pieces, dtype=self.dtype, kernel_init=_PACGAN_INIT)
            h = normed(layer)(h).reshape((h.shape[0], self.width, self.pieces)).max(axis=-1)
        return _projection_logit(h, labels, self.num_classes, normed, kernel_init=_PACGAN_INIT)


# Unrolled GAN's Stacked MNIST models as PacGAN's code builds them (fjxmlzn/PacGAN,
# stacked_MNIST_experiments/unrolled_GAN_experiment/*/model.py), with the DCGAN-tensorflow ops
# it imports: kernels from N(0, 0.02^2) (truncated for D's convolutions), biases 0, BatchNorm
# with epsilon 1e-5 and running averages of momentum 0.9.
_UNROLLED_INIT = nn.initializers.normal(stddev=0.02)
_UNROLLED_CONV_INIT = nn.initializers.truncated_normal(stddev=0.02)


class UnrolledGANGenerator(nn.Module):
    """Unrolled GAN's Stacked-MNIST generator (Metz et al. 2017, as in PacGAN's Table 3).

    z [B, latent] → Dense(4·4·8w) → BN → ReLU → [ConvT(c, 3×3, s2) → BN → ReLU] for c = 4w,
    2w, w (4 → 7 → 14 → 28) → Conv(C, 3×3, s1) → tanh: images [B, 28, 28, C] in [-1, 1].
    PacGAN: w = 8 (64, 32, 16, 8 channels), latent 256. The transposed convolutions are
    TensorFlow's deconv2d to output sizes 7, 14, 28 with "SAME" padding: the dilated input is
    padded (1, 1) for 4 → 7 and (2, 1) for the doublings (the adjoint of a SAME stride-2
    convolution of those sizes). Layers before a BatchNorm have no bias (it would cancel).
    """

    image_shape: tuple[int, int, int]
    width: int = 8
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    bn_momentum: float = 0.9  # 0 for standing statistics (see `standing_statistics`)

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        def normalise(x: jax.Array) -> jax.Array:
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                epsilon=1e-5,
                dtype=self.dtype,
                axis_name=self.axis_name,
            )(x)

        h = _condition_latent(z, labels, self.num_classes)
        h = nn.Dense(
            4 * 4 * 8 * self.width, use_bias=False, dtype=self.dtype, kernel_init=_UNROLLED_INIT
        )(h)
        h = nn.relu(normalise(h.reshape((z.shape[0], 4, 4, 8 * self.width))))
        for features, pads in (
            (4 * self.width, (1, 1)),
            (2 * self.width, (2, 1)),
            (self.width, (2, 1)),
        ):
            h = layers.ConvTranspose(
                features,
                (3, 3),
                strides=(2, 2),
                padding=(pads, pads),
                use_bias=False,
                dtype=self.dtype,
                kernel_init=_UNROLLED_INIT,
            )(h)
            h = nn.relu(normalise(h))
        h = nn.Conv(
            self.image_shape[-1],
            (3, 3),
            padding="SAME",
            dtype=self.dtype,
            kernel_init=_UNROLLED_CONV_INIT,
        )(h)
        return jnp.tanh(h.astype(jnp.float32))


class UnrolledGANDiscriminator(nn.Module):
    """Unrolled GAN's Stacked-MNIST discriminator (as in PacGAN's Table 3).

    [Conv(c, 3×3, s2) → BN → LReLU(0.3)] for c = w, 2w, 4w (28 → 14 → 7 → 4) → Dense(1), a
    logit. PacGAN: w = 2 ("D = 1/4 G") or 4 ("D = 1/2 G"); packs of m widen only the first
    convolution's input (3m channels). BatchNorm makes the logits depend on the batch: the
    train step normalises real and fake batches separately, as PacGAN's code does.
    `spectral_norm`: spectrally normalise every convolution and the logit layer.
    """

    width: int = 4
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None
    spectral_norm: bool = False
    sn_power_iterations: int = 1

    @nn.compact
    def __call__(
        self, images: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        normed = SpectralNormed(self.spectral_norm, self.sn_power_iterations, train)
        h = images.astype(self.dtype)
        for features in (self.width, 2 * self.width, 4 * self.width):
            conv = Conv(
                features,
                (3, 3),
                strides=(2, 2),
                use_bias=False,
                dtype=self.dtype,
                kernel_init=_UNROLLED_CONV_INIT,
            )
            h = normed(conv)(h)
            h = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                axis_name=self.axis_name,
            )(h)
            h = _leaky_relu(h)
        h = h.reshape((h.shape[0], -1))
        return _projection_logit(h, labels, self.num_classes, normed, kernel_init=_UNROLLED_INIT)


def build_models(config: ml_collections.ConfigDict) -> Models:
    """Builds the generator and discriminator that `config.model` names."""
    config_lib.validate_config(config)
    dtype = jnp.dtype(config.compute_dtype)
    image_shape = tuple(config.image_shape)
    common = {"num_classes": config.num_classes, "dtype": dtype}
    spectral = {
        "spectral_norm": config_lib.setting(config, "d_spectral_norm"),
        "sn_power_iterations": int(config_lib.setting(config, "sn_power_iterations")),
    }
    if config.model == "seed_mlp":
        return Models(
            generator=MLPGenerator(image_shape=image_shape, width=config.g_width, **common),
            discriminator=MLPDiscriminator(width=config.d_width, **common, **spectral),
            pixel_range="unit",
        )
    if config.model == "dcgan":
        return Models(
            generator=DCGANGenerator(image_shape=image_shape, width=config.g_width, **common),
            discriminator=DCGANDiscriminator(width=config.d_width, **common, **spectral),
            pixel_range="symmetric",
        )
    if config.model == "dcgan_compact":
        return Models(
            generator=CompactGenerator(
                image_shape=image_shape,
                width=config.g_width,
                batch_norm=config.g_batch_norm,
                **common,
            ),
            discriminator=CompactDiscriminator(width=config.d_width, **common, **spectral),
            pixel_range="symmetric",
        )
    if config.model == "pacgan_mlp":
        return Models(
            generator=MixtureGenerator(sample_shape=image_shape, width=config.g_width, **common),
            discriminator=MaxoutDiscriminator(width=config.d_width, **common, **spectral),
            pixel_range=IDENTITY,
        )
    if config.model == "unrolled_dcgan":
        return Models(
            generator=UnrolledGANGenerator(image_shape=image_shape, width=config.g_width, **common),
            discriminator=UnrolledGANDiscriminator(width=config.d_width, **common, **spectral),
            pixel_range="symmetric",
        )
    if config.model == "r3gan":
        from gan_jax import r3gan  # r3gan builds on this module's helpers

        architecture = {
            "widths": tuple(config.r3gan_widths),
            "blocks_per_stage": config.r3gan_blocks_per_stage,
            "expansion": config.r3gan_expansion,
            "group_size": config.r3gan_group_size,
        }
        return Models(
            generator=r3gan.R3GANGenerator(image_shape=image_shape, **architecture, **common),
            discriminator=r3gan.R3GANDiscriminator(**architecture, **common, **spectral),
            # Unbounded images, as R3GAN's, for data in [-1, 1] (see R3GANGenerator).
            pixel_range="symmetric",
        )
    raise AssertionError(f"validate_config admitted unknown model {config.model!r}")


def split_variables(variables: Any) -> tuple[Any, dict[str, Any]]:
    """Splits `Module.init` output into (params, mutable collections such as batch_stats)."""
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def apply_model(
    module: nn.Module, params: Any, state: dict[str, Any], *args: Any, train: bool
) -> tuple[jax.Array, dict[str, Any]]:
    """Runs `module` as a pure function; returns (output, updated mutable collections).

    In training mode the mutable collections in `state` (e.g. BatchNorm's running averages) are
    updated and returned; in evaluation mode they are read and returned unchanged.
    """
    variables = {"params": params, **state}
    if train and state:
        output, new_state = module.apply(variables, *args, train=True, mutable=list(state))
        return output, dict(new_state)
    return module.apply(variables, *args, train=train), state


@functools.partial(
    jax.jit,
    static_argnames=("generator", "num_batches", "batch_size", "latent_dim", "num_classes"),
)
def standing_statistics(
    generator: nn.Module,
    g_params: Any,
    g_state: dict[str, Any],
    key: jax.Array,
    *,
    num_batches: int,
    batch_size: int,
    latent_dim: int,
    num_classes: int = 0,
) -> dict[str, Any]:
    """BatchNorm statistics that belong to `g_params`: "standing statistics" (Brock et al., 2019).

    Runs the generator in training mode on `num_batches` batches of `batch_size` latents
    z ~ N(0, I) (labels uniform over `num_classes` when conditional) drawn from `key`, and
    averages each BatchNorm layer's batch means and (biased) batch variances over the batches:
    what its running averages estimate, for these params rather than for a trajectory of past
    ones. Returns `g_state` with "batch_stats" replaced; other collections unchanged, and
    `g_state` itself when there is no "batch_stats". Jitted (compiled once per generator and
    sizes); traced inline when called under another jit.

    The generator must have a `bn_momentum` field (the project's do): it is set to 0 so that a
    training-mode pass returns the batch moments themselves.
    """
    if "batch_stats" not in g_state:
        return g_state
    if "bn_momentum" not in {f.name for f in dataclasses.fields(generator)}:
        raise ValueError(
            f"{type(generator).__name__} has BatchNorm statistics but no `bn_momentum` field, "
            "which standing statistics need; add one, or set config.ema_standing_stats_batches=0"
        )
    moments_of = generator.clone(bn_momentum=0.0, axis_name=None)
    z_key, label_key = jax.random.split(key)
    z = jax.random.normal(z_key, (num_batches, batch_size, latent_dim), jnp.float32)
    labels = None
    if num_classes > 0:
        labels = jax.random.randint(label_key, (num_batches, batch_size), 0, num_classes)

    def batch_moments(i: int) -> Any:
        batch_labels = None if labels is None else labels[i]
        _, new_state = apply_model(moments_of, g_params, g_state, z[i], batch_labels, train=True)
        return new_state["batch_stats"]

    # A Python loop: num_batches is small, and XLA:CPU runs convolutions inside loops slowly
    # (see gan_jax/fused.py).
    total = batch_moments(0)
    for i in range(1, num_batches):
        total = jax.tree.map(jnp.add, total, batch_moments(i))
    averaged = jax.tree.map(lambda x: x / num_batches, total)
    return {**g_state, "batch_stats": averaged}
