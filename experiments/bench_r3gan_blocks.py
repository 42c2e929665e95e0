"""Speed of R3GAN's layers on XLA:CPU: which form of each to use (gan_jax/r3gan.py).

Launch (CPU; about 2 minutes of CPU on the project's 2 cores, a third of it in XLA's grouped
convolution's gradients and in compiling the whole models):

    python experiments/bench_r3gan_blocks.py
    python experiments/bench_r3gan_blocks.py --sections blocks  # one section

Every time is the median over `--runs` calls of one jitted function after a warm-up call, each
synchronised with `block_until_ready`, in ms. "fwd+bwd" is `value_and_grad` w.r.t. the
parameters and the input of <f(x), c> for a fixed random c (a training step's work); "R1" is
the gradient w.r.t. the parameters of ||d <f(x), c> / dx||², the double backward of the R1 / R2
penalties.

Sections:
- blocks: one residual block (width C, expansion 2, 3×3 convs of 16-channel groups: G groups)
  at MNIST stage shapes, batch 64, its grouped convolution in each of `r3gan.GroupedConv`'s
  forms: XLA's `feature_group_count` convolution ("xla"), a dense convolution with the
  block-diagonal kernel ("block_diagonal"), one batched matmul of gathered patches
  ("patches"); and a dense 3×3 convolution instead (group_size 0: another function, with G×
  the 3×3 parameters).
- basis: the discriminator's depthwise 7×7 VALID convolution over a 7×7 map (C = 256), as
  XLA's depthwise convolution and as one einsum.
- resample: ×2 up- and downsampling of a [64, 14, 14, 128] map, as separable slices
  (gan_jax.r3gan) and as a depthwise convolution with the [1, 3, 3, 1] kernel.
- models: the whole discriminator (fwd+bwd on a real and a fake batch, and R1 on the real one)
  and generator (fwd+bwd of the generator loss through D) of `model="r3gan"`, MNIST, batch 16,
  default implementation, for the default widths and half of them.

Result on the project's 2-core CPU ("AMD EPYC", jax 0.10.2; XLA:CPU), measured while other
jobs kept the load average near 3, so compare within one run (they led to the choices in
gan_jax/r3gan.py's docstring). ms, batch 64 for blocks:

    block          G   step     xla   block_diagonal   patches   dense 3x3 (another function)
    14x14 C64      8   fwd+bwd  3084       259           268        233
                       R1       3019       312           255        500
    7x7   C128    16   fwd+bwd  3100       254           106        224
                       R1       2760       328           176        262
    7x7   C256    32   fwd+bwd     -      1025           388        787
                       R1          -      1089           355        776

    basis [64, 7, 7, 256]       fwd+bwd: xla depthwise 255, einsum 3.4; R1: 438 vs 0.2
    resample [64, 14, 14, 128]  up: slices 44, depthwise conv 1002; down: 3.2 vs 222

    whole model, batch 16, MNIST   D fwd+bwd (16 real + 16 fake)   D R1   G fwd+bwd (via D)
    widths (256, 128, 64), 2.0M        1940                         824       970
    widths (128, 64, 32), 0.65M         459                         481       320

The xla cells at 7x7 C128 are from a run that timed xla at every shape (the script now times it
at 14x14 only). The whole-model rows use the "auto" forms; with every grouped conv
block-diagonal the wide one took 2937 / 1797 / 2233 ms in an earlier run.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from gan_jax import config as config_lib
from gan_jax import models as models_lib
from gan_jax import r3gan


def median_ms(fn: Callable, *args, runs: int) -> float:
    """Median wall time of `fn(*args)` in ms over `runs` calls after one warm-up call (which
    compiles)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _cotangent(apply: Callable, params, x) -> jax.Array:
    shape = jax.eval_shape(apply, params, x)
    return jax.random.normal(jax.random.key(99), shape.shape, shape.dtype)


def fwd_bwd(apply: Callable, params, x) -> Callable:
    """() -> value and gradients w.r.t. (params, x) of <apply(params, x), c>, jitted, for a
    fixed random cotangent c: the forward pass and both gradients, nothing else (an elementwise
    loss such as sum(sin(y)) costs more than a small layer on this CPU)."""
    c = _cotangent(apply, params, x)
    step = jax.jit(jax.value_and_grad(lambda p, x: jnp.vdot(apply(p, x), c), argnums=(0, 1)))
    return functools.partial(step, params, x)


def r1(apply: Callable, params, x) -> Callable:
    """() -> gradient w.r.t. params of ||d <apply(params, x), c> / dx||², jitted."""
    c = _cotangent(apply, params, x)

    def penalty(p, x):
        grad_x = jax.grad(lambda x: jnp.vdot(apply(p, x), c))(x)
        return jnp.sum(grad_x**2)

    return functools.partial(jax.jit(jax.grad(penalty)), params, x)


def bench_blocks(runs: int) -> None:
    print("blocks: one residual block, batch 64, expansion 2, groups of 16 channels")
    variants = (
        ("xla", 16, "xla"),
        ("block_diagonal", 16, "block_diagonal"),
        ("patches", 16, "patches"),
        ("dense 3x3", 0, "xla"),
    )
    for side, width in ((14, 64), (7, 128), (7, 256)):
        x = jax.random.normal(jax.random.key(0), (64, side, side, width))
        row = {}
        for name, group_size, impl in variants:
            if impl == "xla" and group_size and side != 14:
                continue  # seconds a call (10x the others): one shape shows it
            block = r3gan.ResidualBlock(group_size=group_size, grouped_impl=impl, num_blocks=6)
            params = block.init(jax.random.key(1), x)
            # Fix-up zeroes the last conv; a nonzero one makes every gradient flow.
            params = jax.tree.map(lambda p: p + 0.01, params)
            n = 1 if impl == "xla" and group_size else runs
            row[name] = (
                median_ms(fwd_bwd(block.apply, params, x), runs=n),
                median_ms(r1(block.apply, params, x), runs=n),
            )
        groups = 2 * width // 16
        for i, what in enumerate(("fwd+bwd", "R1")):
            cells = "  ".join(f"{name} {times[i]:7.1f}" for name, times in row.items())
            print(
                f"  {side:2d}x{side:<2d} C{width:<4d} G{groups:<3d} {what:8s} {cells}", flush=True
            )


def bench_basis(runs: int) -> None:
    print("basis: depthwise 7x7 VALID conv on [64, 7, 7, 256]")
    x = jax.random.normal(jax.random.key(0), (64, 7, 7, 256))
    kernel = jax.random.normal(jax.random.key(1), (7, 7, 1, 256)) / 7.0

    def depthwise(k, x):
        spec = ("NHWC", "HWIO", "NHWC")
        y = lax.conv_general_dilated(
            x, k, (1, 1), "VALID", dimension_numbers=spec, feature_group_count=256
        )
        return y[:, 0, 0, :]

    def einsum(k, x):
        return jnp.einsum("bhwc,hwc->bc", x, k[:, :, 0, :])

    for name, fn in (("xla depthwise", depthwise), ("einsum", einsum)):
        print(
            f"  {name:14s} fwd+bwd {median_ms(fwd_bwd(fn, kernel, x), runs=runs):8.2f}"
            f"  R1 {median_ms(r1(fn, kernel, x), runs=runs):8.2f}",
            flush=True,
        )


def _filter_conv(x: jax.Array, up: bool) -> jax.Array:
    """The same resampling as a depthwise convolution with upfirdn2d's [1, 3, 3, 1] kernel."""
    taps = jnp.array([1.0, 3.0, 3.0, 1.0])
    kernel = jnp.outer(taps, taps) / 64.0 * (4.0 if up else 1.0)
    channels = x.shape[-1]
    kernel = jnp.broadcast_to(kernel[:, :, None, None], (4, 4, 1, channels))
    spec = ("NHWC", "HWIO", "NHWC")
    if up:
        return lax.conv_general_dilated(
            x,
            kernel,
            (1, 1),
            ((2, 2), (2, 2)),
            lhs_dilation=(2, 2),
            dimension_numbers=spec,
            feature_group_count=channels,
        )  # upfirdn2d's zero-stuffed 2n samples padded (2, 1) are these 2n - 1 padded (2, 2)
    return lax.conv_general_dilated(
        x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=spec, feature_group_count=channels
    )


def bench_resample(runs: int) -> None:
    print("resample: x2 up / down of [64, 14, 14, 128]")
    x = jax.random.normal(jax.random.key(0), (64, 14, 14, 128))
    for direction, ours, up in (("up", r3gan.upsample, True), ("down", r3gan.downsample, False)):
        theirs = functools.partial(_filter_conv, up=up)
        error = float(jnp.max(jnp.abs(ours(x) - theirs(x))))
        times = [
            median_ms(fwd_bwd(lambda p, x, f=f: f(x) * p, jnp.ones(()), x), runs=runs)
            for f in (ours, theirs)
        ]
        print(
            f"  {direction:4s} fwd+bwd: slices {times[0]:7.2f}  depthwise conv {times[1]:7.2f}"
            f"  (max difference {error:.1e})",
            flush=True,
        )


def _model_times(widths: tuple[int, ...], runs: int, batch: int = 16) -> str:
    config = config_lib.get_default_config()
    config.model, config.r3gan_widths, config.latent_dim = "r3gan", widths, 64
    models = models_lib.build_models(config)
    g, d = models.generator, models.discriminator
    z = jax.random.normal(jax.random.key(0), (batch, 64))
    real = jax.random.uniform(jax.random.key(1), (batch, 28, 28, 1), minval=-1.0)
    # Nonzero last convs, as after training starts (fix-up makes them zero).
    g_params = jax.tree.map(lambda p: p + 0.01, g.init(jax.random.key(2), z))
    d_params = jax.tree.map(lambda p: p + 0.01, d.init(jax.random.key(3), real))
    fake = g.apply(g_params, z)

    @jax.jit
    def d_step(d_params):  # relativistic pairing loss on a real and a fake batch
        def loss(p):
            logits = d.apply(p, jnp.concatenate([real, fake]))
            return jnp.mean(jax.nn.softplus(logits[batch:] - logits[:batch]))

        return jax.value_and_grad(loss)(d_params)

    @jax.jit
    def d_r1(d_params):
        def penalty(p):
            grad_x = jax.grad(lambda x: jnp.sum(d.apply(p, x)))(real)
            return jnp.mean(jnp.sum(grad_x**2, axis=(1, 2, 3)))

        return jax.value_and_grad(penalty)(d_params)

    @jax.jit
    def g_step(g_params):
        def loss(p):
            return jnp.mean(jax.nn.softplus(-d.apply(d_params, g.apply(p, z))))

        return jax.value_and_grad(loss)(g_params)

    counts = r3gan.count_params(g_params) / 1e6, r3gan.count_params(d_params) / 1e6
    return (
        f"  widths {widths} (G {counts[0]:.2f}M, D {counts[1]:.2f}M params):"
        f" D fwd+bwd {median_ms(d_step, d_params, runs=runs):6.0f}"
        f"  D R1 {median_ms(d_r1, d_params, runs=runs):6.0f}"
        f"  G fwd+bwd {median_ms(g_step, g_params, runs=runs):6.0f}"
    )


def bench_models(runs: int) -> None:
    print("models: model='r3gan', 28x28x1, batch 16 (real 16 + fake 16 for D), grouped 'auto'")
    for widths in ((256, 128, 64), (128, 64, 32)):
        print(_model_times(widths, runs), flush=True)


SECTIONS = {
    "blocks": bench_blocks,
    "basis": bench_basis,
    "resample": bench_resample,
    "models": bench_models,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}, {platform.processor() or 'cpu'}")
    start = time.perf_counter()
    for name in args.sections:
        SECTIONS[name](args.runs)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
