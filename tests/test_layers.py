"""gan_jax.layers.ConvTranspose computes exactly the function of flax.linen.ConvTranspose.

Criterion (`_assert_close`): for every output array, max|got - want| <= 1e-5 * max|want|.
A relative error measured against the largest reference entry, not entry by entry, because
the two implementations sum the same products in different orders: entries that cancel to
near zero carry absolute rounding of the size of the large ones, and an entrywise relative
test would flag them although both results are equally correct.

Every comparison runs forward and backward: `jax.vjp` of `apply` w.r.t. the parameters
(kernel and bias) and the input, pulled back with a random cotangent.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gan_jax import layers

RTOL = 1e-5

# These tests compile many tiny programs and run each once: without LLVM optimisation XLA:CPU
# compiles about twice as fast. The convolutions themselves run in library kernels either way.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _assert_close(got, want, rtol: float = RTOL) -> None:
    """Max-abs error over max-abs reference, leaf by leaf; trees, shapes and dtypes must match."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        # In NumPy: eager jnp ops would compile once per shape, which dominates these tests.
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        scale = np.max(np.abs(w))
        err = np.max(np.abs(g - w))
        assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} * {scale:.3g}"


def _normal_like(rng: np.random.Generator, tree):
    """A tree of N(0, 1) float32 arrays with the shapes of `tree` (arrays or shape structs)."""
    return jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), tree)


def _forward_and_vjp(module: nn.Module, params, x: jax.Array, cotangent: jax.Array):
    """Output, and the pull-back of `cotangent` to (params, input)."""
    y, pullback = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
    return y, pullback(cotangent.astype(y.dtype))


PHASE_LAYOUTS = (dict(impl="phase", fuse_phases=True), dict(impl="phase", fuse_phases=False))


def _check_against_flax(x_shape, *, rtol: float = RTOL, impls=PHASE_LAYOUTS, **fields) -> None:
    """Ours (each of `impls`: extra module fields) equals nn.ConvTranspose on random params
    (bias too) and input."""
    if set(np.atleast_1d(fields.get("strides") or 1)) == {1}:
        # One phase: both layouts are the same convolution; save the compile.
        impls = impls[:1]
    rng = np.random.default_rng(sum(x_shape) + 7 * len(fields))
    x = _normal_like(rng, jax.ShapeDtypeStruct(x_shape, jnp.float32))
    reference = nn.ConvTranspose(**fields)
    # Shapes by tracing only; values from NumPy (eager JAX init would compile per shape).
    params = _normal_like(rng, jax.eval_shape(reference.init, jax.random.key(0), x)["params"])
    cotangent = _normal_like(rng, jax.eval_shape(reference.apply, {"params": params}, x))
    modules = [reference] + [layers.ConvTranspose(**fields, **impl) for impl in impls]

    # One jit for all: a single compilation per case keeps the grid fast.
    @_jit
    def run(params, x, cotangent):
        return [_forward_and_vjp(m, params, x, cotangent) for m in modules]

    want, *gots = run(params, x, cotangent)
    for got in gots:
        _assert_close(got, want, rtol)


# The grid the issue asks for: strides 1 and 2, kernels 3, 4, 5, SAME and VALID, each with two
# non-square inputs that have an odd and an even side and two channel pairs, batch 2. Each
# input runs one phase layout (both would double the compile time): split with 5 output
# channels, fused with a single one, as in the generator's last layer.
@pytest.mark.parametrize(
    "hw, channels, fuse_phases",
    [((5, 6), (3, 5), False), ((4, 7), (8, 1), True)],
    ids=["5x6-c3to5-split", "4x7-c8to1-fused"],
)
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel", [3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_matches_flax_grid(stride, kernel, padding, hw, channels, fuse_phases):
    c_in, c_out = channels
    _check_against_flax(
        (2, *hw, c_in),
        impls=[dict(impl="phase", fuse_phases=fuse_phases)],
        features=c_out,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=padding,
    )


@pytest.mark.parametrize(
    "fields",
    [
        # Stride larger than the kernel: some output phases meet no tap at all.
        dict(kernel_size=(1, 2), strides=(3, 2), padding="SAME"),
        dict(kernel_size=(2, 3), strides=(3, 4), padding="VALID"),
        # Stride 3, and mixed strides per axis.
        dict(kernel_size=(5, 4), strides=(3, 1), padding="SAME"),
        dict(kernel_size=(3, 3), strides=(2, 3), padding="VALID"),
        # Explicit padding, Flax's meaning (padding of the dilated input), crops included.
        dict(kernel_size=(4, 4), strides=(2, 2), padding=((1, 2), (3, 0))),
        dict(kernel_size=(5, 3), strides=(2, 2), padding=((-1, 2), (2, -1))),
        dict(kernel_size=(3, 3), strides=(2, 2), padding=1),
        dict(kernel_size=(3, 3), strides=(2, 2), padding=(0, (2, 1))),
        # Keras-style kernels, no bias, rectangular kernels.
        dict(kernel_size=(4, 3), strides=(2, 2), padding="SAME", transpose_kernel=True),
        dict(kernel_size=(5, 5), strides=(2, 2), padding="SAME", use_bias=False),
        dict(kernel_size=(2, 5), strides=2, padding="VALID"),
    ],
    ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()).replace(" ", ""),
)
def test_matches_flax_edge_cases(fields):
    _check_against_flax((2, 5, 6, 3), features=4, **fields)


@pytest.mark.parametrize(
    "x_shape, kernel_size, strides",
    [
        ((2, 9, 3), 4, 2),  # 1-D, int kernel_size as in Flax
        ((2, 3, 4, 5, 2), (3, 2, 3), (2, 1, 2)),  # 3-D
        ((2, 3, 5, 4, 3), (3, 3), 2),  # two batch axes, flattened and restored
        ((5, 4, 3), (3, 3), 2),  # no batch axis
    ],
)
def test_matches_flax_other_ranks(x_shape, kernel_size, strides):
    _check_against_flax(x_shape, features=3, kernel_size=kernel_size, strides=strides)


@pytest.mark.parametrize("strides", [1, 2])
def test_every_impl_matches_flax(strides):
    fields = dict(features=3, kernel_size=(5, 5), strides=strides)
    impls = [*PHASE_LAYOUTS, dict(impl="xla"), dict(impl="auto")]
    _check_against_flax((2, 5, 4, 2), impls=impls, **fields)


def test_params_interchangeable_with_flax():
    """Same tree, shapes, dtypes and init values; a param dict of one applies to the other."""
    x = jnp.ones((2, 7, 7, 16))
    fields = dict(features=8, kernel_size=(5, 5), strides=(2, 2), param_dtype=jnp.float32)

    class Parent(nn.Module):
        conv: type[nn.Module]

        @nn.compact
        def __call__(self, x):
            return self.conv(**fields)(x)

    ours_model, theirs_model = Parent(conv=layers.ConvTranspose), Parent(conv=nn.ConvTranspose)
    # Both in one jit, and an "rbg" key: compiling the default threefry initialisers takes
    # seconds on CPU. Equality holds for any key: both draw from the same derived streams.
    ours, theirs = _jit(lambda key: (ours_model.init(key, x), theirs_model.init(key, x)))(
        jax.random.key(3, impl="rbg")
    )
    # Same auto-generated submodule name ("ConvTranspose_0"), hence the same init RNG stream.
    assert list(ours["params"]) == list(theirs["params"]) == ["ConvTranspose_0"]
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, theirs)
    assert jax.tree.map(lambda a: a.dtype, ours) == jax.tree.map(lambda a: a.dtype, theirs)
    _assert_close(ours, theirs, rtol=0.0)
    # Their parameters drive our module: same output.
    _assert_close(*_jit(lambda v: (ours_model.apply(v, x), theirs_model.apply(v, x)))(theirs))


def test_half_precision_matches_flax():
    """dtype/param_dtype promotion as in Flax; bf16 compute, so a bf16-sized tolerance."""
    fields = dict(
        features=4,
        kernel_size=(5, 5),
        strides=(2, 2),
        dtype=jnp.bfloat16,
        param_dtype=jnp.float32,
    )
    _check_against_flax((2, 6, 5, 3), rtol=2e-2, **fields)


def test_jit_and_pure_functions_agree():
    """The module under jit equals the pure functions, and the two pure paths agree."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 7, 6)).astype(np.float32)
    kernel = rng.standard_normal((5, 5, 6, 2)).astype(np.float32)
    module = layers.ConvTranspose(features=2, kernel_size=(5, 5), strides=(2, 2), use_bias=False)
    y = jax.jit(module.apply)({"params": {"kernel": kernel}}, x)
    assert y.shape == (3, 14, 14, 2)
    for fn in (layers.conv_transpose_phase, layers.conv_transpose_xla, layers.conv_transpose):
        _assert_close(fn(x, kernel, strides=2, padding="SAME"), y)


def _dilated_reference(x, kernel, *, strides, pads):
    """The definition written out: dilate and pad ``x`` with ``lax.pad`` (negative pads crop),
    then a stride-1 VALID convolution with the unflipped kernel."""
    config = [
        (0, 0, 0),
        *((lo, hi, s - 1) for (lo, hi), s in zip(pads, strides, strict=True)),
        (0, 0, 0),
    ]
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("pads", [((-1, 1), (0, 0)), ((-1, 2), (2, -1)), ((2, 0), (1, 3))])
def test_phase_layouts_match_definition(strides, pads):
    """Both phase layouts, against the definition (not against XLA's conv_transpose).

    Negative-then-positive padding is where XLA:CPU's convolution miscomputes (jax 0.10.2);
    ``nn.ConvTranspose`` returns garbage for it at stride 1, the phase path must not.
    """
    rng = np.random.default_rng(len(pads) + sum(strides))
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 4, 3, 2)).astype(np.float32)
    fns = [
        functools.partial(_dilated_reference, strides=strides, pads=pads),
        *(
            functools.partial(
                layers.conv_transpose_phase, strides=strides, padding=pads, fuse_phases=fuse
            )
            for fuse in (True, False)
        ),
    ]

    @_jit
    def run(x, kernel):
        results = []
        for fn in fns:
            y, pullback = jax.vjp(fn, x, kernel)
            cotangent = jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)
            results.append((y, pullback(cotangent)))
        return results

    want, *gots = run(x, kernel)
    for got in gots:
        _assert_close(got, want)


def test_resolve_impl():
    assert layers.resolve_impl("xla", (2, 2)) == "xla"
    assert layers.resolve_impl("phase", (1, 1)) == "phase"
    assert layers.resolve_impl("auto", (1, 1), backend="cpu") == "xla"
    assert layers.resolve_impl("auto", (2, 1), backend="cpu") == "phase"
    assert layers.resolve_impl("auto", (2, 2), backend="gpu") == "phase"
    assert layers.resolve_impl("auto", (2, 2), backend="tpu") == "xla"
    # Negative explicit padding sidesteps an XLA:CPU bug, on any backend.
    negative = ((-1, 1), (0, 0))
    assert layers.resolve_impl("auto", (1, 1), padding=negative, backend="tpu") == "phase"
    assert layers.resolve_impl("auto", (1, 1), padding=((1, 1), (0, 2))) == "xla"
    with pytest.raises(ValueError, match="impl"):
        layers.resolve_impl("fast", (2, 2))


@pytest.mark.parametrize(
    "kernel_size, strides, padding, in_size",
    list(itertools.product([1, 2, 3, 4, 5, 6], [1, 2, 3], ["SAME", "VALID"], [1, 4])),
)
def test_output_size_matches_lax(kernel_size, strides, padding, in_size):
    """Shapes (cheap to check exhaustively): SAME gives in*s, VALID in*s + max(k - s, 0)."""
    x = jax.ShapeDtypeStruct((1, in_size, 1), jnp.float32)
    kernel = jax.ShapeDtypeStruct((kernel_size, 1, 1), jnp.float32)
    got = jax.eval_shape(
        lambda x, k: layers.conv_transpose_phase(x, k, strides=strides, padding=padding),
        x,
        kernel,
    )
    want = in_size * strides + (padding == "VALID") * max(kernel_size - strides, 0)
    assert got.shape == (1, want, 1)
