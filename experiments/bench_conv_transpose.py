"""Forward+backward speed of the DCGAN generator's transposed convolutions: XLA vs phases.

Launch (CPU; ~1-2 minutes on 2 cores):

    python experiments/bench_conv_transpose.py
    python experiments/bench_conv_transpose.py --variants   # also both phase layouts

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

Expected on the project's 2-core CPU (see the issue note for the measured table): the phase
path is several times faster on the stride-2 layers; stride 1 is the same convolution.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
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


def bench_layer(name, c_in, c_out, side, stride, *, impls, batch, windows, iters, seed=0):
    """Times every impl on one layer; checks they agree; returns rows for the table."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, side, side, c_in)), jnp.float32)
    fan_in = KERNEL * KERNEL * c_in
    kernel = jnp.asarray(
        rng.standard_normal((KERNEL, KERNEL, c_in, c_out)) / math.sqrt(fan_in), jnp.float32
    )
    out_side = side * stride
    cotangent = jnp.asarray(rng.standard_normal((batch, out_side, out_side, c_out)), jnp.float32)
    flops = 3 * forward_flops(batch=batch, side=side, c_in=c_in, c_out=c_out, kernel=KERNEL)

    steps = {}
    for impl, conv in impls.items():

        def objective(x, kernel, cotangent, conv=conv):
            # Linear in y, so its gradient is exactly the VJP with `cotangent`.
            y = conv(x, kernel, strides=(stride, stride), padding="SAME")
            return jnp.vdot(y, cotangent)

        steps[impl] = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))
    results = {impl: step(x, kernel, cotangent) for impl, step in steps.items()}
    seconds = time_round_robin(steps, x, kernel, cotangent, windows=windows, iters=iters)
    rows = [
        dict(layer=name, impl=impl, ms=s * 1e3, gflops=flops / s / 1e9)
        for impl, s in seconds.items()
    ]

    # The timed functions must be the same function: compare value and grads with xla.
    want = jax.tree.leaves(results["xla"])
    for impl, got in results.items():
        for g, w in zip(jax.tree.leaves(got), want, strict=True):
            err = float(jnp.max(jnp.abs(g - w))) / float(jnp.max(jnp.abs(w)))
            assert err < 1e-5, f"{name}: {impl} differs from xla by {err:.2g} (relative)"
    base = rows[0]["ms"]
    for row in rows:
        row["speedup"] = base / row["ms"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--windows", type=int, default=7, help="timed windows (median)")
    parser.add_argument("--iters", type=int, default=3, help="calls per window")
    parser.add_argument("--variants", action="store_true", help="also fused/split phases")
    parser.add_argument("--json", type=str, default=None, help="write rows to this path")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(
        f"jax {jax.__version__} | backend {jax.default_backend()} | device {device.device_kind}"
        f" x{jax.device_count()} | {platform.processor() or platform.machine()}"
    )
    print(f"batch {args.batch}, median of {args.windows} windows x {args.iters} steps")
    print(f"{'layer':26s} {'impl':12s} {'ms/step':>9s} {'GFLOP/s':>8s} {'speed-up':>8s}")
    impls = implementations(args.variants)
    all_rows = []
    for spec in DCGAN_LAYERS:
        rows = bench_layer(
            *spec, impls=impls, batch=args.batch, windows=args.windows, iters=args.iters
        )
        for r in rows:
            print(
                f"{r['layer']:26s} {r['impl']:12s} {r['ms']:9.2f} {r['gflops']:8.1f}"
                f" {r['speedup']:7.2f}x",
                flush=True,
            )
        all_rows += rows
    totals = {impl: sum(r["ms"] for r in all_rows if r["impl"] == impl) for impl in impls}
    for impl, ms in totals.items():
        print(f"{'all three layers':26s} {impl:12s} {ms:9.2f} {'':8s} {totals['xla'] / ms:7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), batch=args.batch, rows=all_rows), f, indent=1)


if __name__ == "__main__":
    main()
