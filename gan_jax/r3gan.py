"""R3GAN's residual backbone (Huang, Gokaslan, Kuleshov, Tompkin, "The GAN is dead; long live the
GAN! A Modern GAN Baseline", NeurIPS 2024; code: github.com/brownvc/R3GAN, R3GAN/Networks.py).

Both players are stages of residual blocks at resolutions that double, no normalisation layers:

- Block (width C, expansion e): 1×1 conv C → eC, bias, LeakyReLU(0.2) → 3×3 grouped conv eC →
  eC (`group_size` channels per group), bias, LeakyReLU(0.2) → 1×1 conv eC → C without bias, added
  to the input. R3GAN puts the biases in its activation layers (bias then lrelu), which is the
  same function as a biased conv followed by lrelu; its lrelu has no output gain in the forward
  pass: the gain sqrt(2 / (1 + 0.2²)) enters only the initialisation.
- Fix-up initialisation (Zhang et al. 2019, as R3GAN): every kernel is drawn from
  N(0, gain² / fan_in) ("MSR" init, untruncated), the first two convolutions of a block with
  gain sqrt(2 / 1.04) · L^(-1/4), L the network's number of blocks (R3GAN: L^(-1 / (2m - 2)) for
  m = 3 linear layers per branch), and the last one zero: every block starts as the identity.
  Biases start at zero.
- Generator: a learned basis [b_h, b_w, C0] ~ N(0, 1), modulated per channel by Linear(z) (no
  bias), then the blocks of stage 0; each later stage is a transition (a 1×1 conv to the next
  width when the width changes, no bias, then a ×2 bilinear upsampling) and its blocks; a final
  1×1 conv (no bias) to the image channels. No output nonlinearity: the images are unbounded,
  as R3GAN's (see `R3GANGenerator`).
- Discriminator: the mirror image. A 1×1 conv (no bias) from the image channels; each stage is
  its blocks then a transition (×2 bilinear downsampling, then a 1×1 conv to the next width
  when it changes); at the base resolution the blocks, a depthwise b_h × b_w convolution over
  the whole map (the "basis", no bias) giving features [B, C0], and the logit.
- Resampling: R3GAN's `InterpolativeUp/Downsampler` with filter [1, 2, 1], i.e. StyleGAN's
  upfirdn2d with the kernel [1, 2, 1] * [1, 1] = [1, 3, 3, 1] (outer product, normalised; ×4
  for upsampling): bilinear interpolation by 2 with half-pixel centres and zero padding at the
  border (see `upsample` and `downsample`).

Widths are listed per stage from the base resolution upward (the generator's order; the
discriminator uses them reversed, as R3GAN does). Resolutions: image side = base · 2^(stages-1)
with base >= 4: 32 = 4·8 with 4 stages (4 → 8 → 16 → 32), 64 = 4·16 with 5, and 28 = 7·4 with 3
stages (7 → 14 → 28). 28 is not a power of two: a 4×4 start would need a 4 → 7 resampling that
is not R3GAN's exact ×2 filter, so MNIST-sized images start from a 7×7 basis (as the project's
dcgan starts from 7×7) and every resampling stays the same ×2 operator.

The 3×3 grouped convolution on XLA:CPU (experiments/bench_r3gan_blocks.py, batch 64): XLA's
`feature_group_count` convolution makes a block's fwd+bwd, and its R1 double backward, 8-30x
slower than either alternative below (its kernel gradient is the slow part), though those do
the work of a dense convolution or run matmuls of 16 columns. `GroupedConv` computes the same
function with nn.Conv's grouped parameters as a dense convolution with the block-diagonal
kernel (`groups`x the multiply-adds at dense speed) up to 8 groups, and as one batched matmul of
gathered patches (1x the multiply-adds, slower per FLOP, 9 copies of the input held) from 9
groups up: with 4 groups the block-diagonal form is 1.5-2.6x faster, at 8 they are even, at 16
and 32 the patches 2-3x faster. That is `impl="auto"` on CPU; elsewhere it is XLA's grouped
convolution (unmeasured here). The discriminator's depthwise basis runs as one einsum (XLA's
depthwise convolution: 75x slower) and the resampling as slices (a depthwise convolution with
the filter: 20-70x slower).

Cost: at the default MNIST widths (256, 128, 64) each player has about 1.0M parameters, and on
the project's 2-core CPU one discriminator fwd+bwd on 16 real + 16 fake images takes about 2 s
(R1 on the 16 real 0.8 s, the generator's fwd+bwd through D 1 s); (128, 64, 32) is about 4x
cheaper (0.33M parameters a player).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from gan_jax import models as models_lib

# LeakyReLU(0.2)'s gain, sqrt(2 / (1 + slope²)): R3GAN's `BiasedActivation.Gain`, used only in
# the initialisation of the layers that feed an activation.
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0 / (1.0 + LRELU_SLOPE**2))
MIN_BASE = 4  # R3GAN's basis is 4×4; a smaller one leaves the 3×3 convolutions mostly padding

_SN_OFF = models_lib.SpectralNormed(enabled=False, power_iterations=1, train=False)


def msr_init(gain: float = 1.0) -> nn.initializers.Initializer:
    """R3GAN's `MSRInitializer`: N(0, gain² / fan_in), fan_in = kh·kw·(inputs per group)."""
    return nn.initializers.variance_scaling(gain**2, "fan_in", "normal")


def _lrelu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, negative_slope=LRELU_SLOPE)


def _upsample_axis(x: jax.Array, axis: int) -> jax.Array:
    # out[2i] = x[i-1]/4 + 3x[i]/4, out[2i+1] = 3x[i]/4 + x[i+1]/4, zero beyond the border.
    n = x.shape[axis]
    padded = jnp.pad(x, [(1, 1) if a == axis else (0, 0) for a in range(x.ndim)])
    before = lax.slice_in_dim(padded, 0, n, axis=axis)
    after = lax.slice_in_dim(padded, 2, n + 2, axis=axis)
    even, odd = 0.25 * before + 0.75 * x, 0.75 * x + 0.25 * after
    out_shape = (*x.shape[:axis], 2 * n, *x.shape[axis + 1 :])
    return jnp.stack([even, odd], axis=axis + 1).reshape(out_shape)


def _downsample_axis(x: jax.Array, axis: int) -> jax.Array:
    # out[i] = (x[2i-1] + 3x[2i] + 3x[2i+1] + x[2i+2]) / 8, zero beyond the border; n even.
    n = x.shape[axis]
    padded = jnp.pad(x, [(1, 1) if a == axis else (0, 0) for a in range(x.ndim)])
    pairs = padded.reshape((*x.shape[:axis], n // 2 + 1, 2, *x.shape[axis + 1 :]))
    first = lax.index_in_dim(pairs, 0, axis=axis + 1, keepdims=False)  # padded[2j]
    second = lax.index_in_dim(pairs, 1, axis=axis + 1, keepdims=False)  # padded[2j + 1]
    u, v = first + 3.0 * second, 3.0 * first + second
    return (lax.slice_in_dim(u, 0, n // 2, axis=axis) + lax.slice_in_dim(v, 1, None, axis=axis)) / 8


# The resamplers and grouped-conv forms are jitted: under a jit they inline, and eagerly (Flax's
# init in `create_train_state`) each is one compiled call instead of a dozen small ones.
@jax.jit
def upsample(x: jax.Array) -> jax.Array:
    """[B, H, W, C] → [B, 2H, 2W, C]: R3GAN's `InterpolativeUpsampler([1, 2, 1])`.

    upfirdn2d.upsample2d with the separable kernel [1, 3, 3, 1] / 4 per axis (gain ×2 per axis)
    on the zero-stuffed input padded (2, 1): bilinear ×2 with zero padding. Written with slices
    (separable, per axis) rather than a depthwise convolution, which XLA:CPU runs slowly."""
    return _upsample_axis(_upsample_axis(x, 1), 2)


@jax.jit
def downsample(x: jax.Array) -> jax.Array:
    """[B, H, W, C] → [B, H/2, W/2, C], H and W even: R3GAN's `InterpolativeDownsampler`.

    upfirdn2d.downsample2d with the separable kernel [1, 3, 3, 1] / 8 per axis on the input
    padded (1, 1), stride 2."""
    return _downsample_axis(_downsample_axis(x, 1), 2)


@functools.partial(jax.jit, static_argnames="groups")
def block_diagonal(kernel: jax.Array, groups: int) -> jax.Array:
    """A grouped kernel [kh, kw, cin/groups, cout] as the dense [kh, kw, cin, cout] kernel whose
    convolution is the grouped convolution (zero between groups; nn.Conv's group layout:
    output channel o belongs to group o // (cout / groups))."""
    kh, kw, per_group_in, cout = kernel.shape
    per_group_out = cout // groups
    split = kernel.reshape(kh, kw, per_group_in, groups, per_group_out)
    dense = jnp.einsum("hwigo,gG->hwgiGo", split, jnp.eye(groups, dtype=kernel.dtype))
    return dense.reshape(kh, kw, groups * per_group_in, cout)


@functools.partial(jax.jit, static_argnames="groups")
def grouped_conv_patches(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    """The stride-1 SAME grouped convolution of x [B, H, W, cin] with kernel [kh, kw, cin/groups,
    cout] as one batched matmul over the groups: the kh·kw shifted copies of each group's
    channels gathered group-major, [groups, B, H, W, kh·kw·cin/groups], times the group's
    [kh·kw·cin/groups, cout/groups] kernel. Plain slices and a dot: its gradients and their
    gradients (R1) are matmuls and slices too. Holds kh·kw copies of x for the backward pass."""
    batch, height, width, cin = x.shape
    kh, kw, per_group_in, cout = kernel.shape
    per_group_out = cout // groups
    grouped = x.reshape(batch, height, width, groups, per_group_in).transpose(3, 0, 1, 2, 4)
    low_h, low_w = (kh - 1) // 2, (kw - 1) // 2  # SAME: the larger half of k - 1 goes high
    padded = jnp.pad(
        grouped, ((0, 0), (0, 0), (low_h, kh - 1 - low_h), (low_w, kw - 1 - low_w), (0, 0))
    )
    patches = jnp.concatenate(
        [padded[:, :, i : i + height, j : j + width] for i in range(kh) for j in range(kw)],
        axis=-1,
    )  # [groups, B, H, W, kh·kw·cin/groups], taps major, channels minor: the kernel's order
    weights = kernel.reshape(kh, kw, per_group_in, groups, per_group_out)
    weights = weights.transpose(3, 0, 1, 2, 4).reshape(groups, kh * kw * per_group_in, -1)
    y = jnp.einsum("gbhwk,gko->bhwgo", patches, weights)
    return y.reshape(batch, height, width, cout)


# On CPU, "auto" gathers patches from this many groups up and runs block-diagonally below
# (measured at batch 64: block-diagonal 1.5-2.6x faster at 4 groups, even at 8, patches 2-3x
# faster at 16 and 32).
PATCHES_FROM_GROUPS = 9
GROUPED_IMPLS = ("auto", "xla", "block_diagonal", "patches")


def resolve_grouped_impl(impl: str, groups: int, backend: str | None = None) -> str:
    """Turns "auto" into the form that runs a `groups`-group convolution fastest here.

    CPU: "block_diagonal" up to 8 groups, "patches" from 9 (measured, see the module docstring;
    XLA's own grouped convolution is 8-30x slower than either). Other backends: "xla", whose
    grouped forward skips the zero blocks (unmeasured here; jax-ml/jax issue 13800 reports its
    CUDA backward about as slow as a dense convolution's, i.e. the block-diagonal cost).
    """
    if impl not in GROUPED_IMPLS:
        raise ValueError(f"grouped_impl must be one of {GROUPED_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    if groups == 1:
        return "xla"
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return "xla"
    return "patches" if groups >= PATCHES_FROM_GROUPS else "block_diagonal"


class GroupedConv(nn.Module):
    """A stride-1 SAME convolution with `groups` groups: nn.Conv(feature_group_count=groups)'s
    function and parameters ("kernel" [kh, kw, cin/groups, features], "bias" [features]).

    impl: "xla" (XLA's grouped convolution), "block_diagonal" (a dense convolution with the
    block-diagonal kernel), "patches" (`grouped_conv_patches`), or "auto" (the fastest measured
    for this backend and group count, see `resolve_grouped_impl`). All compute the same function
    (to float rounding) with the same parameters, so checkpoints move between them."""

    features: int
    groups: int
    kernel_size: tuple[int, int] = (3, 3)
    use_bias: bool = True
    impl: str = "auto"
    dtype: Any = None
    kernel_init: nn.initializers.Initializer = msr_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        if cin % self.groups or self.features % self.groups:
            raise ValueError(f"{cin} -> {self.features} channels do not split in {self.groups}")
        shape = (*self.kernel_size, cin // self.groups, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        impl = resolve_grouped_impl(self.impl, self.groups)
        if impl == "patches":
            y = grouped_conv_patches(x, kernel, self.groups)
        else:
            groups = self.groups
            if impl == "block_diagonal":
                kernel, groups = block_diagonal(kernel, groups), 1
            y = lax.conv_general_dilated(
                x,
                kernel,
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=groups,
            )
        return y if bias is None else y + bias


class ResidualBlock(nn.Module):
    """x [B, H, W, C] → x + 1×1(eC→C, no bias) ∘ lrelu ∘ 3×3 grouped(eC) ∘ lrelu ∘ 1×1(C→eC)(x).

    `num_blocks`: L, the blocks in the whole network, which scales the fix-up initialisation;
    the last convolution starts at zero, so the block starts as the identity."""

    expansion: int = 2
    group_size: int = 16  # channels per group of the 3×3 conv; 0: one group (a dense conv)
    num_blocks: int = 1
    grouped_impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, normed: models_lib.SpectralNormed = _SN_OFF) -> jax.Array:
        width = x.shape[-1]
        expanded = self.expansion * width
        groups = 1 if self.group_size == 0 else expanded // self.group_size
        init = msr_init(LRELU_GAIN * self.num_blocks ** (-1.0 / 4.0))
        expand = nn.Dense(expanded, dtype=self.dtype, kernel_init=init, name="expand")
        grouped = GroupedConv(
            expanded,
            groups,
            impl=self.grouped_impl,
            dtype=self.dtype,
            kernel_init=init,
            name="grouped",
        )
        project = nn.Dense(
            width,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=nn.initializers.zeros_init(),
            name="project",
        )
        y = _lrelu(normed(expand)(x))
        y = _lrelu(normed(grouped)(y))
        return x + normed(project)(y)


def check_image_shape(image_shape: tuple[int, ...], num_stages: int) -> str | None:
    """Why `image_shape` cannot be built with `num_stages` stages, or None when it can."""
    if len(image_shape) != 3:
        return f"r3gan makes images (height, width, channels), got {tuple(image_shape)}"
    factor = 2 ** (num_stages - 1)
    for side in image_shape[:2]:
        if side % factor or side // factor < MIN_BASE:
            return (
                f"r3gan doubles the resolution at each of its {num_stages} stages (one per "
                f"width in r3gan_widths) from a base of at least {MIN_BASE}x{MIN_BASE}, so "
                f"height and width must be base * {factor} with base >= {MIN_BASE}; got "
                f"{tuple(image_shape)}. E.g. 28 = 7*4 with 3 widths, 32 = 4*8 with 4, "
                f"64 = 4*16 with 5"
            )
    return None


def _base_size(image_shape: tuple[int, ...], num_stages: int) -> tuple[int, int]:
    problem = check_image_shape(image_shape, num_stages)
    if problem:
        raise ValueError(problem)
    factor = 2 ** (num_stages - 1)
    return image_shape[0] // factor, image_shape[1] // factor


def _block_factory(module: nn.Module) -> Any:
    """ResidualBlock with `module`'s settings; L counts every block of `module`."""
    return functools.partial(
        ResidualBlock,
        expansion=module.expansion,
        group_size=module.group_size,
        num_blocks=module.blocks_per_stage * len(module.widths),
        grouped_impl=module.grouped_impl,
        dtype=module.dtype,
    )


class R3GANGenerator(nn.Module):
    """z [B, latent] (labels [B] when conditional) → images [B, H, W, C], unbounded.

    No tanh and no clamp, as R3GAN: real images lie in [-1, 1] ("symmetric") and D learns to
    punish pixels outside; a tanh would change R3GAN's architecture and saturate its gradients,
    and a clamp would zero the gradient of every pixel beyond the range. Grids and the
    evaluator clip to the range (`writers.to_uint8`, `classifier.to_unit_range`).

    Conditional (num_classes > 0): a learned embedding of the label, of the latent's size,
    concatenated to z before the Linear that modulates the basis (R3GAN: a bias-free Linear of
    the one-hot label to NoiseDimension units, initialised N(0, 1 / num_classes)).
    """

    image_shape: tuple[int, int, int]
    widths: tuple[int, ...] = (256, 128, 64)  # per stage, from the base resolution upward
    blocks_per_stage: int = 2
    expansion: int = 2
    group_size: int = 16  # channels per group of the 3×3 convs; 0: dense
    grouped_impl: str = "auto"  # see GroupedConv
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None  # no batch-dependent layers; kept for a uniform interface

    @nn.compact
    def __call__(
        self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        del train
        base_h, base_w = _base_size(tuple(self.image_shape), len(self.widths))
        block = _block_factory(self)
        h = z
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("a conditional generator (config.num_classes > 0) needs labels")
            embed = nn.Embed(
                self.num_classes,
                z.shape[-1],
                embedding_init=nn.initializers.normal(1.0 / math.sqrt(self.num_classes)),
                name="label_embedding",
            )
            h = jnp.concatenate([z, embed(labels).astype(z.dtype)], axis=-1)
        basis = self.param(
            "basis", nn.initializers.normal(1.0), (base_h, base_w, self.widths[0]), jnp.float32
        )
        modulation = nn.Dense(
            self.widths[0],
            use_bias=False,
            dtype=self.dtype,
            kernel_init=msr_init(),
            name="modulation",
        )(h)
        basis, modulation = promote_dtype(basis, modulation, dtype=self.dtype)
        x = basis[None] * modulation[:, None, None, :]  # [B, base_h, base_w, widths[0]]
        for stage, width in enumerate(self.widths):
            if stage > 0:
                # R3GAN's UpsampleLayer: change the width at the lower resolution, then upsample.
                if width != x.shape[-1]:
                    x = nn.Dense(
                        width,
                        use_bias=False,
                        dtype=self.dtype,
                        kernel_init=msr_init(),
                        name=f"transition_{stage}",
                    )(x)
                x = upsample(x)
            for j in range(self.blocks_per_stage):
                x = block(name=f"stage_{stage}_block_{j}")(x)
        images = nn.Dense(
            self.image_shape[-1],
            use_bias=False,
            dtype=self.dtype,
            kernel_init=msr_init(),
            name="to_image",
        )(x)
        return images.astype(jnp.float32)


class DepthwiseBasis(nn.Module):
    """x [B, h, w, C] → [B, C]: a depthwise VALID h × w convolution over the whole map (R3GAN's
    `DiscriminativeBasis` conv), no bias. Parameter "kernel" [h, w, 1, C], nn.Conv's depthwise
    layout; computed as one contraction, since XLA:CPU's depthwise convolution is slow."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, w, channels = x.shape[1:]
        kernel = self.param("kernel", msr_init(), (h, w, 1, channels), jnp.float32)
        x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
        return jnp.einsum("bhwc,hwc->bc", x, kernel[:, :, 0, :])


class R3GANDiscriminator(nn.Module):
    """images [B, H, W, C] (labels [B] when conditional) → one logit per image, [B] float32.

    The logit is `models._projection_logit` of the basis features f [B, widths[0]]: a linear
    logit w·f + b, plus <embed(label), f> when conditional (projection discriminator). R3GAN's
    unconditional logit is w·f without the bias (which relativistic losses cancel anyway); its
    conditional one, <e_y, W f> = <W^T e_y, f>, is the projection term alone; the shared helper
    keeps the class-independent term of Miyato & Koyama (2018), as every family here does.

    `spectral_norm`: spectrally normalise every kernel (1×1 convs, grouped 3×3 convs as their
    [9·cin/groups, cout] matrices, the depthwise basis as [b_h·b_w, C], the logit and the label
    projection). Flax leaves a zero kernel zero (it divides by 1 when sigma is 0), so the blocks
    still start as the identity; from the first update on, normalisation rescales each block's
    last convolution to spectral norm 1, which undoes the fix-up scaling.
    """

    widths: tuple[int, ...] = (256, 128, 64)  # per stage, from the base resolution upward
    blocks_per_stage: int = 2
    expansion: int = 2
    group_size: int = 16  # channels per group of the 3×3 convs; 0: dense
    grouped_impl: str = "auto"  # see GroupedConv
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None  # no batch-dependent layers
    spectral_norm: bool = False
    sn_power_iterations: int = 1

    @nn.compact
    def __call__(
        self, images: jax.Array, labels: jax.Array | None = None, *, train: bool = True
    ) -> jax.Array:
        normed = models_lib.SpectralNormed(self.spectral_norm, self.sn_power_iterations, train)
        _base_size(tuple(images.shape[1:]), len(self.widths))
        block = _block_factory(self)
        widths = self.widths[::-1]  # from the image resolution down to the base
        x = normed(
            nn.Dense(
                widths[0],
                use_bias=False,
                dtype=self.dtype,
                kernel_init=msr_init(),
                name="from_image",
            )
        )(images.astype(self.dtype))
        num_stages = len(widths)
        for index, width in enumerate(widths):
            stage = num_stages - 1 - index  # the generator's stage number at this resolution
            for j in range(self.blocks_per_stage):
                x = block(name=f"stage_{stage}_block_{j}")(x, normed)
            if index + 1 < num_stages:
                # R3GAN's DownsampleLayer: downsample, then change the width at the lower one.
                x = downsample(x)
                if widths[index + 1] != width:
                    x = normed(
                        nn.Dense(
                            widths[index + 1],
                            use_bias=False,
                            dtype=self.dtype,
                            kernel_init=msr_init(),
                            name=f"transition_{stage}",
                        )
                    )(x)
        features = normed(DepthwiseBasis(dtype=self.dtype, name="basis"))(x)
        return models_lib._projection_logit(
            features, labels, self.num_classes, normed, kernel_init=msr_init()
        )


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree."""
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
