"""Layers: a transposed convolution that is exactly ``flax.linen.ConvTranspose``, computed fast.

XLA lowers a strided transposed convolution to one convolution of the *stride-dilated* input
(``lhs_dilation``). Its forward pass is tolerable, but its gradient w.r.t. the kernel runs at
about 9 GFLOP/s on CPU against about 130 for ordinary convolutions (jax-ml/jax issue 23783
reports the same on CUDA): most of the dilated input is zeros, and XLA's kernels do not skip
them.

The phase (sub-pixel) decomposition skips them by construction. Along a spatial axis with
stride ``s``, output position ``o = s*q + r`` meets only the kernel taps ``k`` with
``k = pad_low - r (mod s)``, i.e. the strided slice ``kernel[k0_r::s]``, and those taps meet the
*undilated* input at consecutive positions. So each of the ``prod(strides)`` output phases is an
ordinary stride-1 convolution of the input with a sub-kernel, and the output is the phases
interleaved (depth-to-space). ``conv_transpose_phase`` runs the phases either as separate
convolutions or, for layers with few output channels, as one convolution (see there).

Everything is N-d (1 to 3 spatial axes) and channels-last (NHWC for images); kernels are
``(*kernel_size, in, out)`` (HWIO), the layout of ``nn.ConvTranspose`` with its default
``transpose_kernel=False``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.dtypes import promote_dtype
from jax import lax

Array = jax.Array
PaddingLike = str | int | Sequence[int | tuple[int, int]]
Impl = Literal["auto", "xla", "phase"]
Pads = tuple[tuple[int, int], ...]

__all__ = [
    "ConvTranspose",
    "conv_transpose",
    "conv_transpose_phase",
    "conv_transpose_xla",
    "resolve_impl",
    "transpose_padding",
]

# Backends on which `impl="auto"` picks the phase decomposition (for any stride > 1); see
# `resolve_impl` for the evidence behind each entry.
_PHASE_BACKENDS = frozenset({"cpu", "gpu", "cuda", "rocm"})

# Below this many output channels the phase path runs all phases as one convolution; see
# `conv_transpose_phase` for the measurements behind the number.
FUSE_BELOW_FEATURES = 16


def _ntuple(value: int | Sequence[int] | None, n: int, *, name: str) -> tuple[int, ...]:
    """Broadcasts an int (``None`` means 1, as in Flax) to ``n`` ints; checks a sequence."""
    if value is None:
        value = 1
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} must have {n} entries (one per spatial axis), got {value}")
    return value


def transpose_padding(
    kernel_size: Sequence[int], strides: Sequence[int], padding: PaddingLike
) -> Pads:
    """The (low, high) padding that ``lax.conv_transpose`` applies to the stride-dilated input.

    This is the definition of the transposed convolution computed here and by Flax:
    ``y = conv(dilate(x, s), kernel, stride 1, padding=transpose_padding(...))`` with an
    unflipped kernel. ``"SAME"`` and ``"VALID"`` name the padding of the *forward* convolution
    whose transpose this is (output size ``in*s``, resp. ``in*s + max(k - s, 0)``); explicit
    ``(low, high)`` pairs (or ints, meaning ``(p, p)``) are taken as the padding of the dilated
    input itself, as Flax passes them (``use_consistent_padding=False``). Pairs may be negative
    (cropping).

    Args:
      kernel_size: ``n`` kernel extents.
      strides: ``n`` strides.
      padding: ``"SAME"``, ``"VALID"``, an int, or ``n`` ints / ``(low, high)`` pairs.

    Returns:
      ``n`` pairs ``(low, high)``.
    """
    n = len(kernel_size)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"padding {padding!r} is not supported (use SAME, VALID or pairs)")
        pads = []
        for k, s in zip(kernel_size, strides, strict=True):
            if mode == "SAME":
                total = k + s - 2
                # Flax/lax convention: the low side gets the larger half, or all of k - 1 when
                # the stride exceeds the kernel.
                low = k - 1 if s > k - 1 else -(-total // 2)
            else:
                total = k + s - 2 + max(k - s, 0)
                low = k - 1
            pads.append((low, total - low))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding),) * n
    pads = []
    for p in padding:
        if isinstance(p, int):
            pads.append((p, p))
        else:
            low, high = p
            pads.append((int(low), int(high)))
    if len(pads) != n:
        raise ValueError(f"padding needs {n} entries (one per spatial axis), got {padding!r}")
    return tuple(pads)


def _phase_plan(
    in_size: int, k: int, s: int, pad: tuple[int, int]
) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Splits one spatial axis of a transposed convolution into its ``s`` output phases.

    Output ``o = s*q + r`` of the dilated-input formulation is
    ``sum_m x[q + c_r + m] * kernel[k0_r + s*m]`` over ``m < taps_r`` (``x`` is zero outside
    ``[0, in_size)``), i.e. a stride-1 correlation of ``x`` with the sub-kernel
    ``kernel[k0_r::s]`` starting at input offset ``c_r``.

    Returns:
      ``(out_size, q_size, phases)``: output length, ``ceil(out_size / s)`` (the common
      per-phase length before cropping), and for each phase ``r`` the triple
      ``(k0_r, taps_r, c_r)``. ``taps_r`` is 0 for phases that no tap reaches (``s > k``).
    """
    low, high = pad
    out_size = (in_size - 1) * s + low + high - k + 2
    phases = []
    for r in range(s):
        k0 = (low - r) % s
        taps = len(range(k0, k, s))
        offset = (r + k0 - low) // s  # exact: r + k0 - low is a multiple of s
        phases.append((k0, taps, offset))
    return out_size, -(-out_size // s), phases


def _depth_to_space(y: Array, strides: tuple[int, ...], out_sizes: tuple[int, ...]) -> Array:
    """Interleaves phases: ``(N, *Q, *strides, C)`` -> ``(N, *out_sizes, C)``.

    Phase ``(r_1, ..., r_n)`` at position ``(q_1, ..., q_n)`` lands at ``(s_i*q_i + r_i)_i``;
    positions past ``out_sizes`` (only when ``out % s != 0``) are cropped.
    """
    n = len(strides)
    batch, *q_sizes = y.shape[: n + 1]
    perm = [0, *itertools.chain.from_iterable((1 + i, 1 + n + i) for i in range(n)), 2 * n + 1]
    y = jnp.transpose(y, perm)
    y = y.reshape(batch, *(q * s for q, s in zip(q_sizes, strides, strict=True)), y.shape[-1])
    if tuple(y.shape[1:-1]) != tuple(out_sizes):
        y = y[(slice(None), *(slice(0, o) for o in out_sizes))]
    return y


def conv_transpose_phase(
    x: Array,
    kernel: Array,
    *,
    strides: int | Sequence[int],
    padding: PaddingLike = "SAME",
    transpose_kernel: bool = False,
    precision: lax.PrecisionLike = None,
    preferred_element_type: Any = None,
    fuse_phases: bool | None = None,
) -> Array:
    """``lax.conv_transpose`` (Flax's semantics) as stride-1 convolutions plus depth-to-space.

    Computes exactly the function of
    ``lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO",
    "NHWC"), transpose_kernel=...)`` (N-d), up to float summation order.

    Two layouts of the same sums (``fuse_phases``):

    - split (``False``): one convolution per phase with its sub-kernel: exactly the useful
      multiply-adds, in ``prod(strides)`` convolutions of ``C_out`` outputs each.
    - fused (``True``): every sub-kernel zero-padded into the union window of all phases, the
      phases stacked as output channels of *one* convolution with ``prod(strides) * C_out``
      outputs. The zero taps cost FLOPs: for kernel 5, stride 2, SAME, the sub-kernels have 2
      and 3 taps in a 3-tap window, so a 2-D layer does 9 instead of 6.25 multiply-adds per
      output (1.44x); for kernel 4, 9 instead of 4 (2.25x).

    Thin convolutions use a CPU badly, so ``None`` fuses when ``C_out <
    FUSE_BELOW_FEATURES`` (16): measured on 2 CPU cores, batch 256, 5x5, stride 2,
    forward+backward, the fused layout is 3-4x faster than split for 1 output channel and
    split 1.3-2x faster for 32-64; they tie near 16 (experiments/bench_conv_transpose.py
    ``--variants``).

    Args:
      x: ``(N, *spatial, C_in)``.
      kernel: ``(*kernel_size, C_in, C_out)``; ``(*kernel_size, C_out, C_in)`` when
        ``transpose_kernel`` (spatially flipped and channel-swapped, as in ``lax``).
      strides: int or one per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, or pairs; see ``transpose_padding``.
      transpose_kernel: as in ``lax.conv_transpose``.
      precision: passed to ``lax.conv_general_dilated``.
      preferred_element_type: passed to ``lax.conv_general_dilated``.
      fuse_phases: layout (see above); ``None`` picks by ``C_out``.

    Returns:
      ``(N, *out_spatial, C_out)`` with ``out = (in - 1)*s + low + high - k + 2`` per axis
      (``in*s`` for SAME).
    """
    n = x.ndim - 2
    if kernel.ndim != n + 2:
        raise ValueError(f"kernel rank {kernel.ndim} does not match input rank {x.ndim}")
    if transpose_kernel:
        kernel = jnp.flip(kernel, axis=tuple(range(n))).swapaxes(-1, -2)
    kernel_size = tuple(kernel.shape[:n])
    strides = _ntuple(strides, n, name="strides")
    pads = transpose_padding(kernel_size, strides, padding)
    plans = [_phase_plan(x.shape[1 + i], kernel_size[i], strides[i], pads[i]) for i in range(n)]
    out_sizes = tuple(p[0] for p in plans)
    q_sizes = tuple(p[1] for p in plans)
    if min(out_sizes) <= 0:
        # Degenerate (empty or negative-size) output: lax defines (or rejects) these cases.
        return conv_transpose_xla(
            x,
            kernel,
            strides=strides,
            padding=padding,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

    conv = functools.partial(
        lax.conv_general_dilated,
        window_strides=(1,) * n,
        dimension_numbers=_channels_last_spec(n),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    phases = [p[2] for p in plans]
    if fuse_phases is None:
        fuse_phases = kernel.shape[-1] < FUSE_BELOW_FEATURES
    split = _phases_fused if fuse_phases else _phases_separate
    out_dtype = x.dtype if preferred_element_type is None else preferred_element_type
    y = split(
        x,
        kernel,
        strides=strides,
        phases=phases,
        q_sizes=q_sizes,
        conv=conv,
        out_dtype=out_dtype,
    )
    y = y.reshape(*y.shape[:-2], *strides, kernel.shape[-1])
    return _depth_to_space(y, strides, out_sizes)


def _conv_with_pads(conv, x: Array, kernel: Array, pads: list[tuple[int, int]]) -> Array:
    """``conv(x, kernel, padding=pads)`` where negative pads crop ``x`` by slicing first.

    XLA:CPU (jax 0.10.2) computes wrong values for a convolution whose padding on one axis
    is negative on one side and positive on the other (e.g. ``(-1, 1)``) when there are at
    least two input channels, so we never hand it negative padding.
    """
    crop = tuple(
        slice(max(-low, 0), size - max(-high, 0))
        for (low, high), size in zip(pads, x.shape[1:-1], strict=True)
    )
    if any(low < 0 or high < 0 for low, high in pads):
        x = x[(slice(None), *crop)]
    return conv(x, kernel, padding=[(max(low, 0), max(high, 0)) for low, high in pads])


def _phases_separate(x, kernel, *, strides, phases, q_sizes, conv, out_dtype) -> Array:
    """One stride-1 convolution per output phase: ``(N, *Q, prod(strides), C_out)``.

    Exactly the useful multiply-adds, but ``prod(strides)`` convolutions with ``C_out`` outputs
    each.
    """
    ys = []
    for combo in itertools.product(*phases):
        out_shape = (x.shape[0], *q_sizes, kernel.shape[-1])
        if any(taps == 0 for _, taps, _ in combo):
            # No kernel tap reaches this phase (stride > kernel): its outputs are zero.
            ys.append(jnp.zeros(out_shape, out_dtype))
            continue
        sub = kernel[
            tuple(slice(k0, None, s) for (k0, _, _), s in zip(combo, strides, strict=True))
        ]
        # Output q reads input q + c .. q + c + taps - 1: pad low by -c (negative = crop),
        # high so that there are exactly Q outputs.
        pads = [
            (-c, q - 1 + taps - size + c)
            for (_, taps, c), q, size in zip(combo, q_sizes, x.shape[1:-1], strict=True)
        ]
        ys.append(_conv_with_pads(conv, x, sub, pads))
    return jnp.stack(ys, axis=-2)


def _phases_fused(x, kernel, *, strides, phases, q_sizes, conv, out_dtype) -> Array:
    """All output phases as one stride-1 convolution: ``(N, *Q, prod(strides), C_out)``.

    Each phase's sub-kernel is zero-padded into the union window of all phases per axis, and
    the phases become output channels (``prod(strides) * C_out`` of them).
    """
    del out_dtype  # phases no tap reaches get all-zero kernels, hence zero outputs
    # Common window per axis: from the lowest phase offset to the highest last tap.
    windows = []
    for axis_phases in phases:
        live = [(c, taps) for _, taps, c in axis_phases if taps > 0]
        lo = min(c for c, _ in live)
        windows.append((lo, max(c + taps for c, taps in live) - lo))

    # One zero-padded sub-kernel per phase, phases in row-major order of (r_1, ..., r_n).
    sub_kernels = []
    for combo in itertools.product(*phases):
        if any(taps == 0 for _, taps, _ in combo):
            shape = (*(size for _, size in windows), *kernel.shape[-2:])
            sub_kernels.append(jnp.zeros(shape, kernel.dtype))
            continue
        sub = kernel[
            tuple(slice(k0, None, s) for (k0, _, _), s in zip(combo, strides, strict=True))
        ]
        widths = [
            (c - lo, size - (c - lo) - taps)
            for (_, taps, c), (lo, size) in zip(combo, windows, strict=True)
        ]
        sub_kernels.append(jnp.pad(sub, [*widths, (0, 0), (0, 0)]))
    fused = jnp.stack(sub_kernels, axis=-2)  # (*window, C_in, phases, C_out)
    fused = fused.reshape(*fused.shape[:-2], -1)

    pads = [
        (-lo, q - 1 + size - in_size + lo)
        for (lo, size), q, in_size in zip(windows, q_sizes, x.shape[1:-1], strict=True)
    ]
    y = _conv_with_pads(conv, x, fused, pads)
    return y.reshape(*y.shape[:-1], len(sub_kernels), kernel.shape[-1])


def _channels_last_spec(n: int) -> tuple[str, str, str]:
    """``("NHWC", "HWIO", "NHWC")`` for n = 2, and the like for other ranks."""
    space = "DHW"[-n:] if n <= 3 else None
    if space is None:
        raise ValueError(f"only 1-3 spatial dimensions are supported, got {n}")
    return f"N{space}C", f"{space}IO", f"N{space}C"


def conv_transpose_xla(
    x: Array,
    kernel: Array,
    *,
    strides: int | Sequence[int],
    padding: PaddingLike = "SAME",
    transpose_kernel: bool = False,
    precision: lax.PrecisionLike = None,
    preferred_element_type: Any = None,
) -> Array:
    """Flax's own path: ``lax.conv_transpose`` (a convolution of the stride-dilated input).

    Same arguments, shapes and result as ``conv_transpose_phase``.
    """
    n = x.ndim - 2
    lax_padding = padding.upper() if isinstance(padding, str) else None
    if lax_padding is None:
        lax_padding = transpose_padding(kernel.shape[:n], (1,) * n, padding)
    return lax.conv_transpose(
        x,
        kernel,
        _ntuple(strides, n, name="strides"),
        lax_padding,
        dimension_numbers=_channels_last_spec(n),
        transpose_kernel=transpose_kernel,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def resolve_impl(
    impl: Impl,
    strides: Sequence[int],
    *,
    padding: PaddingLike = "SAME",
    backend: str | None = None,
) -> str:
    """Turns ``impl`` into ``"xla"`` or ``"phase"``.

    ``"auto"`` picks ``"phase"`` when some stride exceeds 1 and the backend is CPU or GPU, or
    when an explicit padding entry is negative (any backend); otherwise ``"xla"``.

    - Stride 1: both paths are the same single stride-1 convolution, so Flax's path stays.
    - CPU: measured here (experiments/bench_conv_transpose.py): forward+backward of the DCGAN
      generator's 128->64 stride-2 layer is about 10x faster by phases (its kernel gradient
      20x), and the 64->1 layer about equal; XLA's kernel gradient of an ``lhs_dilation``
      convolution is the slow part, and slowest with many output channels.
    - GPU: not measured in this project. The slow path is XLA's lowering of the dilated
      convolution and its gradient, reported on CUDA too (jax-ml/jax issues 23783, 31662),
      while the phase path is plain stride-1 convolutions plus a transpose, which cuDNN runs
      well; so phase is the better bet. Pass ``impl="xla"`` to opt out, and re-run the
      benchmark on the GPU to confirm.
    - TPU: not measured; XLA:TPU has its own convolution emitter and the depth-to-space
      transpose costs layout changes there, so Flax's path stays.
    - Negative explicit padding: XLA:CPU (jax 0.10.2) computes garbage for a convolution
      padded ``(negative, positive)`` on an axis (kernel extent >= 2, >= 2 input channels),
      which is what ``lax.conv_transpose`` emits at stride 1 for such padding. The phase path
      crops by slicing instead, so it is right.

    Args:
      impl: ``"auto"``, ``"xla"`` or ``"phase"``.
      strides: the layer's strides.
      padding: the layer's padding (only explicit negative entries matter).
      backend: platform name; defaults to ``jax.default_backend()``.
    """
    if impl in ("xla", "phase"):
        return impl
    if impl != "auto":
        raise ValueError(f"impl must be 'auto', 'xla' or 'phase', got {impl!r}")
    if not isinstance(padding, str):
        pads = transpose_padding((1,) * len(strides), strides, padding)
        if any(p < 0 for pair in pads for p in pair):
            return "phase"
    if all(s == 1 for s in strides):
        return "xla"
    backend = jax.default_backend() if backend is None else backend
    return "phase" if backend in _PHASE_BACKENDS else "xla"


def conv_transpose(
    x: Array,
    kernel: Array,
    *,
    strides: int | Sequence[int],
    padding: PaddingLike = "SAME",
    impl: Impl = "auto",
    transpose_kernel: bool = False,
    precision: lax.PrecisionLike = None,
    preferred_element_type: Any = None,
    fuse_phases: bool | None = None,
) -> Array:
    """Transposed convolution with Flax's semantics, by ``impl`` (see ``resolve_impl``).

    Args and result as in ``conv_transpose_phase``: ``x`` ``(N, *spatial, C_in)``, ``kernel``
    ``(*kernel_size, C_in, C_out)``, result ``(N, *out_spatial, C_out)``.
    """
    n = x.ndim - 2
    strides_t = _ntuple(strides, n, name="strides")
    kwargs = dict(
        strides=strides_t,
        padding=padding,
        transpose_kernel=transpose_kernel,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    if resolve_impl(impl, strides_t, padding=padding) == "phase":
        return conv_transpose_phase(x, kernel, fuse_phases=fuse_phases, **kwargs)
    return conv_transpose_xla(x, kernel, **kwargs)


class ConvTranspose(nn.Module):
    """Drop-in for ``flax.linen.ConvTranspose`` (same function, params, names and init).

    Parameters are ``kernel`` ``(*kernel_size, in, features)`` (``(*kernel_size, features,
    in)`` when ``transpose_kernel``) and ``bias`` ``(features,)``, created in that order with
    the same initialisers, so a parameter dict of one applies to the other and ``init`` with
    the same key gives the same values. Inputs are ``(*batch, *spatial, in)``: several batch
    axes are flattened and restored, and a missing batch axis is allowed, as in Flax.

    Not supported (use ``nn.ConvTranspose``): ``kernel_dilation``, ``mask``, ``"CIRCULAR"``
    padding, a custom ``promote_dtype``.

    Attributes:
      features: output channels.
      kernel_size: int (1-D) or one extent per spatial axis.
      strides: int or one per spatial axis (default 1).
      padding: ``"SAME"``, ``"VALID"``, an int, or ints / ``(low, high)`` pairs per axis,
        with Flax's meaning (see ``transpose_padding``).
      use_bias: add a bias.
      dtype: computation dtype (default: inferred from input and params).
      param_dtype: parameter dtype.
      precision: ``lax`` precision of the convolution.
      kernel_init: kernel initialiser (Flax's default: LeCun normal).
      bias_init: bias initialiser (zeros).
      transpose_kernel: as in Flax.
      preferred_element_type: accumulation/result dtype of the convolution.
      impl: ``"auto"``, ``"xla"`` (Flax's path) or ``"phase"``; see ``resolve_impl``.
      fuse_phases: layout of the phase path (see ``conv_transpose_phase``); ``None`` picks by
        the number of features.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] | None = None
    padding: PaddingLike = "SAME"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: lax.PrecisionLike = None
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    transpose_kernel: bool = False
    preferred_element_type: Any = None
    impl: Impl = "auto"
    fuse_phases: bool | None = None

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        """``(*batch, *spatial, in)`` -> ``(*batch, *out_spatial, features)``."""
        if isinstance(self.kernel_size, int):
            kernel_size = (self.kernel_size,)
        else:
            kernel_size = tuple(self.kernel_size)
        n = len(kernel_size)
        if isinstance(self.padding, str) and self.padding.upper() == "CIRCULAR":
            raise ValueError("CIRCULAR padding is not supported; use flax.linen.ConvTranspose")
        strides = _ntuple(self.strides, n, name="strides")

        # Flax flattens all batch axes into one (and adds one when there is none).
        batch_shape = inputs.shape[: inputs.ndim - n - 1]
        if len(batch_shape) != 1:
            inputs = inputs.reshape(-1, *inputs.shape[len(batch_shape) :])

        in_features = inputs.shape[-1]
        if self.transpose_kernel:
            kernel_shape = (*kernel_size, self.features, in_features)
        else:
            kernel_shape = (*kernel_size, in_features, self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)

        y = conv_transpose(
            inputs,
            kernel,
            strides=strides,
            padding=self.padding,
            impl=self.impl,
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
            fuse_phases=self.fuse_phases,
        )
        if bias is not None:
            y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
        if len(batch_shape) != 1:
            y = y.reshape(*batch_shape, *y.shape[1:])
        return y
