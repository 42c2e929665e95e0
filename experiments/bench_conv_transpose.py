"""Forward+backward speed of the DCGAN generator's transposed convolutions: XLA vs phases.

Launch (CPU; a few minutes on 2 cores, most of it in XLA's slow stride-2 gradient):

    python experiments/bench_conv_transpose.py
    python experiments/bench_conv_transpose.py --variants --parts  # layouts; per-part times

For each layer of the `dcgan` workload's generator (batch 256, MNIST, SAME padding, 5x5):

    ConvT 256->128 stride 1 on  7x7 ->  7x7
    ConvT 128->64  stride 2 on  7x7 -> 14x14
    ConvT  64->1   stride 2 on 14x14 -> 28x28

it times one jitted `value_and_grad` w.r.t. input and kernel of `<y, cotangent>` (the work of
a training step: forward, input gradient, kernel gradient), as the median over timed windows
after a warm-up, each window synchronised with `block_until_ready`.

FLOPs are counted for the standard formulation, 2 per multiply-add: every input pixel meets
every kernel tap once, so forward = 2 * N * H_in * W_in * kh * kw * C_in * C_out. This equals
the count of the strided convolution it is the transpose of, and for SAME padding equals the
2 * N * H_out * W_out * C_out * kh * kw * C_in / (s_h * s_w) of the output-side view. Taps
that fall outside the output near the border are counted, as padded taps are in a
convolution's count. The input and kernel gradients each have the forward's multiply-adds,
so a step is 3x forward. Neither the multiplications by the zeros that XLA's dilated input
inserts nor the zero taps of the fused phase layout count: GFLOP/s is useful work per second.

Result on the project's 2-core CPU (jax 0.10.2), measured while other jobs kept the load
average near 9, so absolute rates are a fraction of a quiet machine's; the implementations
take turns window by window, so the ratios are fair. ms per training step (forward + both
gradients), batch 256, median of 5-7 windows:

    layer                     xla      phase    speed-up
    convT1 256->128 s1       ~1630     ~1650    1.0x   (the same HLO: stride 1 is one conv)
    convT2 128->64  s2        5127       516    9.9x   (kernel gradient alone: 4685 vs 232, 20x)
    convT3  64->1   s2          56     51-66    ~1x    (two runs of the same program)
    all three                 7266      2256    3.2x

XLA's slow part is the kernel gradient of the dilated convolution, and it is slowest with many
output channels; with one output channel (convT3) both paths are about equal.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import layers

# (name, C_in, C_out, input side, stride); kernel 5x5, SAME, batch from --batch.
DCGAN_LAYERS = (
    ("convT1 256->128 s1 7->7", 256, 128, 7, 1),
    ("convT2 128->64 s2 7->14", 128, 64, 7, 2),
    ("convT3 64->1 s2 14->28", 64, 1, 14, 2),
)
KERNEL = 5


def forward_flops(*, batch: int, side: int, c_in: int, c_out: int, kernel: int) -> int:
    """Standard-formulation FLOPs of one forward pass (see the module docstring)."""
    return 2 * batch * side * side * kernel * kernel * c_in * c_out


def implementations(variants: bool) -> dict[str, Callable]:
    """Name -> ``fn(x, kernel, *, strides, padding)``."""
    impls = {
        "xla": layers.conv_transpose_xla,
        "phase": layers.conv_transpose_phase,
    }
    if variants:
        impls["phase-fused"] = functools.partial(layers.conv_transpose_phase, fuse_phases=True)
        impls["phase-split"] = functools.partial(layers.conv_transpose_phase, fuse_phases=False)
    return impls


def time_round_robin(steps: dict[str, Callable], *args, windows: int, iters: int):
    """Median seconds per call of each ``steps[name](*args)``, over ``windows`` windows of
    ``iters`` calls. The implementations take turns window by window, so that load from
    other processes on a shared machine falls on all of them alike."""
    for step in steps.values():
        jax.block_until_ready(step(*args))  # compile
        jax.block_until_ready(step(*args))  # warm caches and thread pools
    times = {name: [] for name in steps}
    for _ in range(windows):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(iters):
                out = step(*args)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / iters)
    return {name: statistics.median(t) for name, t in times.items()}


def make_fn(conv: Callable, part: str, stride: int) -> Callable:
    """``fn(x, kernel, cotangent)`` computing ``part`` of a training step through ``conv``."""

    def forward(x, kernel):
        return conv(x, kernel, strides=(stride, stride), padding="SAME")

    def step(x, kernel, cotangent):
        # <y, cotangent> is linear in y: its gradient is exactly the VJP with `cotangent`.
        objective = lambda x, k: jnp.vdot(forward(x, k), cotangent)  # noqa: E731
        return jax.value_and_grad(objective, argnums=(0, 1))(x, kernel)

    parts = {
        "step": step,
        "forward": lambda x, kernel, cotangent: forward(x, kernel),
        "input-grad": lambda x, kernel, ct: jax.vjp(lambda x: forward(x, kernel), x)[1](ct),
        "kernel-grad": lambda x, kernel, ct: jax.vjp(lambda k: forward(x, k), kernel)[1](ct),
    }
    return parts[part]


def bench_layer(name, c_in, c_out, side, stride, *, impls, parts, batch, windows, iters):
    """Times every impl on one layer; checks they agree; returns rows for the table."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, side, side, c_in)), jnp.float32)
    fan_in = KERNEL * KERNEL * c_in
    kernel = jnp.asarray(
        rng.standard_normal((KERNEL, KERNEL, c_in, c_out)) / math.sqrt(fan_in), jnp.float32
    )
    out_side = side * stride
    cotangent = jnp.asarray(rng.standard_normal((batch, out_side, out_side, c_out)), jnp.float32)
    flops = forward_flops(batch=batch, side=side, c_in=c_in, c_out=c_out, kernel=KERNEL)

    rows = []
    for part in parts:
        fns = {impl: jax.jit(make_fn(conv, part, stride)) for impl, conv in impls.items()}
        seconds = time_round_robin(fns, x, kernel, cotangent, windows=windows, iters=iters)
        part_flops = 3 * flops if part == "step" else flops
        rows += [
            dict(
                layer=name,
                part=part,
                impl=impl,
                ms=t * 1e3,
                gflops=part_flops / t / 1e9,
                speedup=seconds["xla"] / t,
            )
            for impl, t in seconds.items()
        ]
        # The timed functions must be the same function: compare with xla.
        results = {impl: jax.tree.leaves(fn(x, kernel, cotangent)) for impl, fn in fns.items()}
        for impl, got in results.items():
            for g, w in zip(got, results["xla"], strict=True):
                err = float(jnp.max(jnp.abs(g - w))) / float(jnp.max(jnp.abs(w)))
                assert err < 1e-5, f"{name} {part}: {impl} differs from xla by {err:.2g}"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--windows", type=int, default=7, help="timed windows (median)")
    parser.add_argument("--iters", type=int, default=3, help="calls per window")
    parser.add_argument("--variants", action="store_true", help="also fused/split phases")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also time forward, input gradient and kernel gradient separately",
    )
    parser.add_argument("--json", type=str, default=None, help="write rows to this path")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(
        f"jax {jax.__version__} | backend {jax.default_backend()} | device {device.device_kind}"
        f" | {platform.machine()} | load average {os.getloadavg()[0]:.1f}"
    )
    print(f"batch {args.batch}, median of {args.windows} windows x {args.iters} calls")
    header = f"{'layer':25s} {'part':11s} {'impl':11s} {'ms':>9s} {'GFLOP/s':>8s} {'speed-up':>8s}"
    print(header)
    impls = implementations(args.variants)
    parts = ["step", "forward", "input-grad", "kernel-grad"] if args.parts else ["step"]
    all_rows = []
    for spec in DCGAN_LAYERS:
        rows = bench_layer(
            *spec,
            impls=impls,
            parts=parts,
            batch=args.batch,
            windows=args.windows,
            iters=args.iters,
        )
        for r in rows:
            print(
                f"{r['layer']:25s} {r['part']:11s} {r['impl']:11s} {r['ms']:9.2f}"
                f" {r['gflops']:8.1f} {r['speedup']:7.2f}x",
                flush=True,
            )
        all_rows += rows
    steps = [r for r in all_rows if r["part"] == "step"]
    totals = {impl: sum(r["ms"] for r in steps if r["impl"] == impl) for impl in impls}
    for impl, ms in totals.items():
        print(
            f"{'all three layers':25s} {'step':11s} {impl:11s} {ms:9.2f} {'':8s}"
            f" {totals['xla'] / ms:7.2f}x"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), batch=args.batch, rows=all_rows), f, indent=1)


if __name__ == "__main__":
    main()
