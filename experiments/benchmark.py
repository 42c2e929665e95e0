"""Training throughput of the fixed benchmark workloads, against this machine's matmul rate.

Launch (CPU, 2 cores: about 4 minutes for the default workloads, 10 for all of them):

    python experiments/benchmark.py
    python experiments/benchmark.py --workloads=seed_mlp,dcgan,dcgan+ynnpack,dcgan_flax,wgan_gp
    python experiments/benchmark.py --json /tmp/bench.json --windows 9

Workloads (definitions in DESIGN.md, "Benchmark workloads"; Adam 2e-4, b1 0.5, EMA on as in the
default config, non-saturating loss unless stated):

    seed_mlp    batch 128, G z(100) -> 128 ReLU -> 784 sigmoid, D 784 -> 128 ReLU -> 1; k = 50
    dcgan       batch 256, the MNIST DCGAN (gan_jax.models.DCGANGenerator / Discriminator); k = 5
    dcgan_bf16  dcgan with config.compute_dtype = "bfloat16" (f32 params and Adam, bf16 compute)
    dcgan_flax  dcgan with Flax's nn.ConvTranspose and nn.Conv: the plain Flax baseline
    wgan_gp     dcgan, batch 64, Wasserstein loss, gradient penalty 10, 5 critic updates a step
    NAME+ynnpack  NAME compiled with XLA:CPU's default options: YNNPACK dots and convolutions
    NAME_xS     S seeds of NAME trained together (gan_jax.seeds: vmap over a stacked state, one
                device), e.g. seed_mlp_x10; images/s counts all S runs' images, and the script
                also times NAME alone and prints the total against S x its rate (the ratio)

What is timed is the training step exactly as `gan_jax.train` runs it: `fused.fused_train_step`
(k steps per dispatch, batches gathered on device from a device-resident uint8 split; on CPU a
step with convolutions is unrolled rather than scanned, see gan_jax/fused.py) under `jax.jit` +
`jax.shard_map` on a one-device mesh, the state donated. The split is synthetic uint8 noise of
MNIST's size (60,000 x 28 x 28 x 1), so no download is needed; the model does the same work on
any pixels. After compiling (ahead of time, so that compiler options can be passed) and one warm
dispatch, the script times `--windows` windows of every workload and of the matmul, taking turns
window by window so that load from other processes falls on all alike; each window is enough
dispatches to last `--min_window_s` and ends with `block_until_ready` on the state. It reports
the median. Images/s counts real images consumed: batch_size x steps / seconds.

FLOPs per image per step: the analytic count of the model's multiply-adds (x2), per layer, in the
standard formulation (see `Layer`; padding taps count, as in any convolution's count), for the
passes the step actually runs:

    G forward                                  once (its VJP is kept and reused)
    D forward on real and fake                 2 x D
    D backward for its params, real and fake   weight grads of every layer; input grads of
                                               every layer but the first (images are data)
    D forward on the fake, for the G update    1 x D (the discriminator has just moved)
    D backward to its input, for the G update  input grads of every layer (no weight grads)
    G backward                                 weight grads of every layer; input grads of
                                               every layer but the first (z is data)

A weight gradient and an input gradient each cost what the forward pass costs. This gives 1.86
MFLOP per image for seed_mlp and 0.472 GFLOP for dcgan, DESIGN's "about 1.9 MFLOP" and "about
0.5 GFLOP". The rule of thumb "backward = 2 x forward, G + 2 D, per image" gives 1.88 MFLOP and
0.435 GFLOP: it ignores the generator update's extra D pass and counts the input gradients of
the first layers that nobody needs; the two errors nearly cancel for seed_mlp but not for dcgan.
Elementwise work (activations, BatchNorm, Adam, the EMA) is not counted; nor are the zeros that
XLA's dilated transposed convolution multiplies, or the zero taps of the phase layout: GFLOP/s
is useful work per second. For wgan_gp the count adds n_critic - 1 further D updates and, for
the gradient penalty, an estimate of 4 x D per critic update (forward and input-gradient on the
interpolates, then their gradient w.r.t. the params, about twice that again): an estimate only.

The reference rate is a 2048 x 2048 `jnp.matmul` of f32 (and of bf16) operands with an f32
result, default precision, XLA's default options, timed in the same round-robin; `vs f32 matmul`
is achieved GFLOP/s over the f32 matmul's. Everything here runs unchanged on GPU and TPU (first
device of the default backend; `+ynnpack` is CPU-only and ignored elsewhere).

CPU notes (2-core AMD EPYC, JAX 0.10.2, measured with the compiled step, same process, turns):
- XLA:CPU hands dots and convolutions to YNNPACK by default. Its Eigen kernels are 1.3-1.8x
  faster for all the dcgan's large convolutions (the dcgan step 1.35-1.45x), and seed_mlp runs
  about 3% faster with its dots in Eigen as well (two A/B pairs: 62,208 -> 64,648 and
  62,735 -> 64,370 images/s). So gan_jax compiles its steps and samplers without YNNPACK
  (gan_jax/xla_options.py); `+ynnpack` compiles with XLA's default to show the difference.
  YNNPACK's wider fusion types (DOT, ELTWISE) cost seed_mlp 10-20%.
- bf16 pays off on GPU and TPU, not here. XLA:CPU computes bf16 convolutions at the f32 rate
  whatever the options (Eigen or YNNPACK; 184-197 GFLOP/s for the dcgan's big convolutions in
  f32, bf16, and bf16 -> f32), so dcgan_bf16 is no faster than dcgan. Only dots of bf16
  operands with an f32 result, in YNNPACK, run faster (about 380 GFLOP/s, the bf16 matmul
  rate printed). Writing the convolutions as such dots (im2col) does not help: the 12,544 x
  6,400 patch matrix of the generator's 5x5 stride-1 layer takes XLA:CPU 150-270 ms to gather
  (a concatenate of 25 slices, about 1.6 GB/s) against 54 ms for the dot, so that layer's
  forward and backward passes took 0.78-0.95 s against 0.30 s for the f32 convolution.
- `--xla_cpu_multi_thread_eigen=false` and the number of steps per dispatch (10-200 for
  seed_mlp) change throughput by less than the run-to-run noise (about 3%).
- seed_mlp is a serial chain of small ops (see the README's throughput section). For it the
  script also times the step's matmuls alone (`mlp_matmul_step`: the same shapes, order and
  dependencies, one axpy per weight in place of Adam, k per dispatch in a `lax.scan`, gan_jax's
  compiler options) and prints what fraction of that ceiling the real step reaches. Eigen runs
  these shapes (batch 128, widths 100-784) at 105-150 GFLOP/s, not the 2048^2 rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_jax import config as config_lib
from gan_jax import data, fused, optim, parallel, seeds, xla_options
from gan_jax import models as models_lib
from gan_jax.state import create_train_state

MNIST_SHAPE = (60_000, 28, 28, 1)
DEFAULT_WORKLOADS = ("seed_mlp", "dcgan", "dcgan+ynnpack", "dcgan_bf16")


# ------------------------------------------------------------------------------------------------
# Workloads


# XLA:CPU's default (JAX 0.10): YNNPACK for dots and convolutions. gan_jax turns it off on CPU
# (gan_jax/xla_options.py); "+ynnpack" workloads compile with this instead, for comparison.
YNNPACK_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    )
}
YNNPACK_SUFFIX = "+ynnpack"
# gan_jax's portable CPU mode (gan_jax/cpu_mode.py): XLA capped at AVX2. The mode itself sets it
# in XLA_FLAGS for the whole process; as a per-program option it can be timed in turns with the
# default in one process.
PORTABLE_SUFFIX = "+portable"
PORTABLE_OPTIONS = {"xla_cpu_max_isa": "AVX2"}
SEEDS_MARK = "_x"  # NAME_xS: S seeds of NAME
VMAP_OPTION = "vmap"  # NAME_xS+vmap: the S seeds vmapped whatever the backend
CEILING_SUFFIX = " matmuls"  # the timing entry of an MLP workload's matmuls alone


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    config: ml_collections.ConfigDict
    steps_per_dispatch: int
    description: str
    flax_layers: bool = False  # nn.ConvTranspose in G and nn.Conv in D: plain Flax
    compiler_options: dict | None = None  # overrides gan_jax.xla_options for the fused step
    num_seeds: int = 1  # runs trained together (gan_jax.seeds); 1: the solo fused step
    vectorize: bool | None = None  # gan_jax.seeds.fused_train_step's choice; None: its default

    @property
    def solo_name(self) -> str:
        """The name of one seed of this workload (itself when num_seeds == 1)."""
        return split_seeds(self.name)[0]


def _base_config(model: str, batch_size: int, width: int) -> ml_collections.ConfigDict:
    config = config_lib.get_default_config()
    config.model = model
    config.batch_size = batch_size
    config.latent_dim = 100
    config.image_shape = (28, 28, 1)
    config.g_width = config.d_width = width
    config.num_steps = 10**6  # only schedules read it; the benchmark's are constant
    return config


def split_seeds(name: str) -> tuple[str, int, bool | None]:
    """(solo name, S, vectorize) of a workload name: ("seed_mlp+ynnpack", 10, True) for
    "seed_mlp_x10+vmap+ynnpack"; (name, 1, None) without an _xS mark."""
    stem, *options = name.split("+")
    vectorize = True if VMAP_OPTION in options else None
    rest = "".join(f"+{option}" for option in options if option != VMAP_OPTION)
    head, mark, count = stem.rpartition(SEEDS_MARK)
    if not mark or not count.isdigit():
        if vectorize:
            raise ValueError(f"workload {name!r}: +{VMAP_OPTION} needs S seeds ({SEEDS_MARK}S)")
        return name, 1, None
    if int(count) < 1:
        raise ValueError(
            f"workload {name!r}: the number of seeds after {SEEDS_MARK!r} must be >= 1"
        )
    return head + rest, int(count), vectorize


def workload(name: str, *, steps_per_dispatch: int | None = None) -> Workload:
    """The named benchmark workload; `steps_per_dispatch` overrides its default k.

    A name ending in "+ynnpack" compiles the step with YNNPACK_OPTIONS (CPU only), "+portable"
    with gan_jax's options and PORTABLE_OPTIONS (the portable CPU mode); "NAME_xS" trains S seeds
    of NAME together.
    """
    solo, num_seeds, vectorize = split_seeds(name)
    base = solo.removesuffix(YNNPACK_SUFFIX).removesuffix(PORTABLE_SUFFIX)
    if base == "seed_mlp":
        config, k, text = _base_config("seed_mlp", 128, 128), 50, "MLP GAN, batch 128"
    elif base in ("dcgan", "dcgan_bf16", "dcgan_flax"):
        config, k, text = _base_config("dcgan", 256, 64), 5, "DCGAN, batch 256"
        if base == "dcgan_bf16":
            config.compute_dtype = "bfloat16"
            text += ", bf16 compute"
        if base == "dcgan_flax":
            text += ", Flax's ConvTranspose and Conv"
    elif base == "wgan_gp":
        config, k = _base_config("dcgan", 64, 64), 5
        config.loss, config.gp_weight, config.n_critic = "wasserstein", 10.0, 5
        text = "DCGAN WGAN-GP, batch 64, 5 critic updates"
    else:
        raise ValueError(f"unknown workload {name!r}")
    config_lib.validate_config(config)
    ynnpack = solo.endswith(YNNPACK_SUFFIX) and jax.default_backend() == "cpu"
    portable = solo.endswith(PORTABLE_SUFFIX) and jax.default_backend() == "cpu"
    options = dict(YNNPACK_OPTIONS) if ynnpack else None
    if portable:
        options = {**(xla_options.compiler_options() or {}), **PORTABLE_OPTIONS}
        text += ", portable CPU mode (AVX2)"
    if num_seeds > 1:
        text += f", {num_seeds} seeds together" + (" (vmap)" if vectorize else "")
    return Workload(
        name=name,
        config=config,
        steps_per_dispatch=steps_per_dispatch or k,
        description=text + (", YNNPACK dots and convolutions" if ynnpack else ""),
        flax_layers=base == "dcgan_flax",
        compiler_options=options,
        num_seeds=num_seeds,
        vectorize=vectorize,
    )


def build_models(wl: Workload) -> models_lib.Models:
    models = models_lib.build_models(wl.config)
    if wl.flax_layers:
        models = models_lib.Models(
            generator=models.generator.clone(conv_transpose=nn.ConvTranspose),
            discriminator=models.discriminator.clone(conv=nn.Conv),
            pixel_range=models.pixel_range,
        )
    return models


# ------------------------------------------------------------------------------------------------
# FLOP count


@dataclasses.dataclass(frozen=True)
class Layer:
    """One linear layer of a network, by its multiply-adds per image in the standard form.

    dense:          in * out
    conv:           H_out * W_out * k * k * C_in * C_out
    conv_transpose: H_in * W_in * k * k * C_in * C_out (every input pixel meets every tap once;
                    equal to the conv it is the transpose of)
    """

    name: str
    macs: int


def dense(name: str, n_in: int, n_out: int) -> Layer:
    return Layer(name, n_in * n_out)


def conv(name: str, out_side: int, k: int, c_in: int, c_out: int) -> Layer:
    return Layer(name, out_side * out_side * k * k * c_in * c_out)


def conv_transpose(name: str, in_side: int, k: int, c_in: int, c_out: int) -> Layer:
    return Layer(name, in_side * in_side * k * k * c_in * c_out)


def network_layers(config: ml_collections.ConfigDict) -> tuple[list[Layer], list[Layer]]:
    """(generator layers, discriminator layers) of the config's model, in forward order."""
    latent, (h, w, c) = config.latent_dim, tuple(config.image_shape)
    if h != w:
        raise ValueError("the FLOP count assumes square images")
    pixels = h * w * c
    if config.model == "seed_mlp":
        g = [dense("G dense 1", latent, config.g_width), dense("G dense 2", config.g_width, pixels)]
        d = [dense("D dense 1", pixels, config.d_width), dense("D logit", config.d_width, 1)]
        return g, d
    if config.model == "dcgan":
        gw, dw, base = config.g_width, config.d_width, h // 4
        g = [
            dense("G dense", latent, base * base * 4 * gw),
            conv_transpose("G convT 1 (s1)", base, 5, 4 * gw, 2 * gw),
            conv_transpose("G convT 2 (s2)", base, 5, 2 * gw, gw),
            conv_transpose("G convT 3 (s2)", 2 * base, 5, gw, c),
        ]
        d = [
            conv("D conv 1 (s2)", h // 2, 5, c, dw),
            conv("D conv 2 (s2)", h // 4, 5, dw, 2 * dw),
            dense("D logit", (h // 4) * (h // 4) * 2 * dw, 1),
        ]
        return g, d
    raise ValueError(f"no FLOP count for model {config.model!r}")


def flops_per_image(config: ml_collections.ConfigDict) -> dict[str, float]:
    """FLOPs per real image per training step, by pass (see the module docstring)."""
    g, d = network_layers(config)
    g_fwd, d_fwd = sum(x.macs for x in g), sum(x.macs for x in d)
    d_in_grads_wo_first = sum(x.macs for x in d[1:])
    g_in_grads_wo_first = sum(x.macs for x in g[1:])
    passes = {
        "G forward": g_fwd,
        "D forward, real + fake": 2 * d_fwd,
        "D backward for params, real + fake": 2 * (d_fwd + d_in_grads_wo_first),
        "D forward on fake (G update)": d_fwd,
        "D backward to input (G update)": d_fwd,
        "G backward": g_fwd + g_in_grads_wo_first,
    }
    extra_critic = config.n_critic - 1
    if extra_critic:  # each further critic update: a G forward and a D update
        passes["further critic updates"] = extra_critic * (
            g_fwd + 2 * d_fwd + 2 * (d_fwd + d_in_grads_wo_first)
        )
    if config.gp_weight > 0:
        passes["gradient penalty (estimate)"] = config.n_critic * 4 * d_fwd
    if config.r1_weight > 0:
        passes["R1 penalty (estimate)"] = config.n_critic * 4 * d_fwd
    if float(config_lib.setting(config, "r2_weight")) > 0:
        passes["R2 penalty (estimate)"] = config.n_critic * 4 * d_fwd
    if config.loss == "relativistic":  # G's update scores the real batch too
        passes["D forward on real (G update)"] = d_fwd
    return {name: 2.0 * macs for name, macs in passes.items()}


def rule_of_thumb_flops(config: ml_collections.ConfigDict) -> float:
    """3 x (G + 2 D) forward FLOPs: the common 'backward = 2 x forward' estimate."""
    g, d = network_layers(config)
    return 2.0 * 3 * (sum(x.macs for x in g) + 2 * sum(x.macs for x in d))


# ------------------------------------------------------------------------------------------------
# Timing


class Timed:
    """Something to time: `run()` does one unit of work and blocks until it is done."""

    def __init__(self, run: Callable[[], object], min_window_s: float, max_calls: int = 10_000):
        self.run = run
        start = time.perf_counter()
        run()
        one = max(time.perf_counter() - start, 1e-6)
        # Calls per window: enough for one window to last min_window_s, judged from one call.
        self.calls = max(1, min(max_calls, math.ceil(min_window_s / one)))
        self.seconds: list[float] = []  # per call, one entry per window

    def window(self) -> None:
        start = time.perf_counter()
        for _ in range(self.calls):
            self.run()
        self.seconds.append((time.perf_counter() - start) / self.calls)


def time_round_robin(timed: dict[str, Timed], windows: int) -> None:
    """Times `windows` windows of each entry, taking turns window by window, so that load from
    other processes on a shared machine falls on all of them alike."""
    for _ in range(windows):
        for entry in timed.values():
            entry.window()


def matmul_timed(dtype: str, *, device: jax.Device, min_window_s: float, n: int = 2048) -> Timed:
    """An n x n jnp.matmul of `dtype` operands (default precision, f32 accumulation and result)
    on `device`, under XLA's default options, compiled and warm."""
    rng = np.random.default_rng(0)
    a = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
    b = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
    # bf16 x bf16 -> f32 is the form the hardware accelerates; with a bf16 result XLA:CPU
    # converts the operands to f32 and runs at the f32 rate or below.
    matmul = jax.jit(functools.partial(jnp.matmul, preferred_element_type=jnp.float32))
    jax.block_until_ready(matmul(a, b))  # compile
    return Timed(lambda: jax.block_until_ready(matmul(a, b)), min_window_s)


def mlp_matmul_step(config: ml_collections.ConfigDict) -> tuple[Callable, tuple[jax.Array, ...]]:
    """The matmuls of one train step of an MLP workload, and nothing else: (step, weights).

    The same shapes, operand orders and dependencies as the real step (the passes counted in
    `flops_per_image`), with activations, losses and the EMA left out and Adam replaced by one
    axpy per weight. `step(weights, (z, real))` returns the next weights. Its rate is a ceiling
    for the workload on this backend: the real step does all of this work and more.
    """
    if config.model != "seed_mlp":
        raise ValueError(f"the matmul ceiling is defined for seed_mlp, not {config.model!r}")
    pixels = math.prod(config.image_shape)
    g_dims = (config.latent_dim, config.g_width, pixels)
    d_dims = (pixels, config.d_width, 1)

    def forward(weights, x):
        activations = [x]
        for w in weights:
            activations.append(activations[-1] @ w)
        return activations

    def backward(weights, activations, delta, *, weight_grads, first_input_grad):
        grads = []
        for i in reversed(range(len(weights))):
            if weight_grads:
                grads.insert(0, activations[i].T @ delta)
            if i > 0 or first_input_grad:
                delta = delta @ weights[i].T
        return grads, delta

    def axpy(weights, grads):
        return [w - 1e-9 * g for w, g in zip(weights, grads, strict=True)]

    def step(weights, inputs):
        z, real = inputs
        g_weights, d_weights = weights[:2], weights[2:]
        g_acts = forward(g_weights, z)
        fake = g_acts[-1]
        d_acts = forward(d_weights, jnp.concatenate([real, fake]))
        d_grads, _ = backward(
            d_weights, d_acts, d_acts[-1], weight_grads=True, first_input_grad=False
        )
        d_weights = axpy(d_weights, d_grads)
        f_acts = forward(d_weights, fake)
        _, fake_grad = backward(
            d_weights, f_acts, f_acts[-1], weight_grads=False, first_input_grad=True
        )
        g_grads, _ = backward(
            g_weights, g_acts, fake_grad, weight_grads=True, first_input_grad=False
        )
        return (*axpy(g_weights, g_grads), *d_weights)

    rng = np.random.default_rng(0)
    weights = tuple(
        jnp.asarray(0.05 * rng.standard_normal((n_in, n_out)), jnp.float32)
        for dims in (g_dims, d_dims)
        for n_in, n_out in zip(dims[:-1], dims[1:], strict=True)
    )
    return step, weights


def mlp_matmul_timed(wl: Workload, *, device: jax.Device, min_window_s: float) -> Timed:
    """`mlp_matmul_step` for k steps per dispatch in a `lax.scan`, compiled with gan_jax's
    options on `device`: the same dispatch structure as the workload's fused step."""
    config, k = wl.config, wl.steps_per_dispatch
    step, weights = mlp_matmul_step(config)
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.standard_normal((config.batch_size, config.latent_dim)), jnp.float32)
    real = jnp.asarray(rng.random((config.batch_size, math.prod(config.image_shape))), jnp.float32)
    z, real, weights = jax.device_put((z, real, weights), device)

    def k_steps(weights):
        return jax.lax.scan(lambda w, _: (step(w, (z, real)), None), weights, length=k)[0]

    compiled = (
        jax.jit(k_steps, donate_argnums=0)
        .lower(weights)
        .compile(compiler_options=wl.compiler_options or xla_options.compiler_options())
    )
    box = [compiled(weights)]

    def run():
        box[0] = compiled(box[0])
        jax.block_until_ready(box[0])

    run()
    return Timed(run, min_window_s)


def synthetic_split(device_mesh: jax.sharding.Mesh) -> tuple[jax.Array, jax.Array]:
    """Uniform uint8 noise of MNIST's size and random labels, replicated on the mesh."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, MNIST_SHAPE, dtype=np.uint8)
    labels = rng.integers(0, 10, MNIST_SHAPE[0], dtype=np.int32)
    sharding = jax.sharding.NamedSharding(device_mesh, jax.sharding.PartitionSpec())
    return data.to_device(images, labels, sharding=sharding)


class WorkloadRun:
    """The fused training step of one workload on `device`, compiled and warm, with its state."""

    def __init__(self, wl: Workload, *, device: jax.Device, min_window_s: float):
        self.workload = wl
        config, k = wl.config, wl.steps_per_dispatch
        models = build_models(wl)
        optimizers = optim.build_optimizers(config)
        if wl.num_seeds == 1:
            mesh = parallel.data_mesh([device])
            init_key, train_key = jax.random.split(jax.random.key(config.seed))
            state = create_train_state(init_key, config, models=models, optimizers=optimizers)
            self.state = parallel.replicate_on_mesh(state, mesh)
            step_k = fused.fused_train_step(
                models=models, optimizers=optimizers, config=config, mesh=mesh, num_steps=k
            )
            self.run_args: tuple = (train_key,)
        else:  # S runs of seeds config.seed + i, stacked, on one device
            mesh = seeds.seed_mesh(wl.num_seeds, devices=[device])
            state = seeds.create_stacked_train_state(
                config, wl.num_seeds, models=models, optimizers=optimizers
            )
            self.state = seeds.shard_stacked(state, mesh)
            step_k = seeds.fused_train_step(
                models=models,
                optimizers=optimizers,
                config=config,
                mesh=mesh,
                num_steps=k,
                num_seeds=wl.num_seeds,
                vectorize=wl.vectorize,
            )
            run_inputs = (
                seeds.seed_keys(config, wl.num_seeds).train,
                seeds.run_seeds(config, wl.num_seeds),
            )
            self.run_args = seeds.shard_stacked(run_inputs, mesh)
        self.images, self.labels = synthetic_split(mesh)
        self.metrics = None
        start = time.perf_counter()
        # What the loop's first call does (with gan_jax.xla_options), ahead of time so that
        # other options can be passed.
        self.step_k = step_k.lower(self.state, self.images, self.labels, *self.run_args).compile(
            compiler_options=wl.compiler_options
        )
        self.run()
        self.compile_s = time.perf_counter() - start
        self.run()  # warm caches and thread pools
        self.timed = Timed(self.run, min_window_s)

    def run(self) -> None:
        self.state, self.metrics = self.step_k(self.state, self.images, self.labels, *self.run_args)
        jax.block_until_ready(self.state)

    def result(self) -> dict[str, object]:
        wl, config, k = self.workload, self.workload.config, self.workload.steps_per_dispatch
        times = self.timed.seconds
        finite = all(bool(np.all(np.isfinite(np.asarray(v)))) for v in self.metrics.values())
        seconds_per_step = statistics.median(times) / k
        images_per_step = config.batch_size * wl.num_seeds  # every run's real images
        images_per_s = images_per_step / seconds_per_step
        by_pass = flops_per_image(config)
        flops = sum(by_pass.values())
        return {
            "workload": wl.name,
            "description": wl.description,
            "batch_size": config.batch_size,
            "num_seeds": wl.num_seeds,
            "compute_dtype": config.compute_dtype,
            "compiler_options": wl.compiler_options
            or xla_options.compiler_options(jax.default_backend())
            or {},
            "steps_per_dispatch": k,
            "dispatches_per_window": self.timed.calls,
            "windows": len(times),
            "compile_s": self.compile_s,
            "ms_per_step": seconds_per_step * 1e3,
            "ms_per_step_windows": [t / k * 1e3 for t in times],
            "images_per_s": images_per_s,
            "images_per_s_min": images_per_step * k / max(times),
            "images_per_s_max": images_per_step * k / min(times),
            "flops_per_image": flops,
            "flops_per_image_by_pass": by_pass,
            "flops_per_image_rule_of_thumb": rule_of_thumb_flops(config),
            "gflops": flops * images_per_s / 1e9,
            "metrics_finite": finite,
        }


# ------------------------------------------------------------------------------------------------
# Report


def _format_flops(flops: float) -> str:
    if flops >= 1e9:
        return f"{flops / 1e9:.3f} G"
    return f"{flops / 1e6:.2f} M"


def markdown_table(rows: Sequence[dict[str, object]], matmul_f32: float) -> str:
    lines = [
        "| workload | batch | k | images/s (median) | min–max | FLOP/image | GFLOP/s "
        "| vs f32 matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = r["workload"]
        if "vs_solo_runs" in r:
            name += f" ({r['vs_solo_runs']:.2f}x one seed's rate)"
        lines.append(
            f"| {name} | {r['batch_size']} | {r['steps_per_dispatch']} "
            f"| {r['images_per_s']:,.0f} "
            f"| {r['images_per_s_min']:,.0f}–{r['images_per_s_max']:,.0f} "
            f"| {_format_flops(r['flops_per_image'])} | {r['gflops']:.1f} "
            f"| {r['gflops'] / matmul_f32:.1%} |"
        )
        if "matmul_ceiling_images_per_s" in r:
            lines.append(
                f"| {r['workload']}: its matmuls alone | {r['batch_size']} "
                f"| {r['steps_per_dispatch']} | {r['matmul_ceiling_images_per_s']:,.0f} "
                f"| {r['matmul_ceiling_images_per_s_min']:,.0f}–"
                f"{r['matmul_ceiling_images_per_s_max']:,.0f} "
                f"| {_format_flops(r['flops_per_image'])} | {r['matmul_ceiling_gflops']:.1f} "
                f"| {r['matmul_ceiling_gflops'] / matmul_f32:.1%} |"
            )
    return "\n".join(lines)


def machine_description(device: jax.Device) -> dict[str, object]:
    """The device, the CPU (model, instruction-set level), the XLA flags, versions, load."""
    from gan_jax import cpu_mode  # noqa: PLC0415

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "backend": jax.default_backend(),
        "device": str(device),
        "device_kind": device.device_kind,
        **cpu_mode.describe(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "load_average": load,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help="comma-separated: seed_mlp, dcgan, dcgan_bf16, dcgan_flax, wgan_gp; append "
        f"{SEEDS_MARK}S (e.g. seed_mlp_x10) to train S seeds together, {YNNPACK_SUFFIX} to "
        f"compile with {YNNPACK_OPTIONS}",
    )
    parser.add_argument(
        "--steps_per_dispatch", type=int, default=0, help="k for every workload (0: its default)"
    )
    parser.add_argument("--windows", type=int, default=7, help="timed windows (>= 5; median)")
    parser.add_argument("--min_window_s", type=float, default=2.0, help="seconds per window")
    parser.add_argument("--json", default=None, help="also write the results to this path")
    args = parser.parse_args(argv)
    if args.windows < 5:
        parser.error("--windows must be at least 5")

    device = jax.devices()[0]
    machine = machine_description(device)
    print(
        f"jax {machine['jax']} | backend {machine['backend']} | device {machine['device_kind']} "
        f"({device}) | cpu {machine['cpu']} x{machine['cpu_count']} "
        f"| load {machine['load_average']}",
        flush=True,
    )
    n = 2048
    timed = {
        f"matmul_{dtype}": matmul_timed(dtype, device=device, min_window_s=args.min_window_s, n=n)
        for dtype in ("float32", "bfloat16")
    }
    names = [name.strip() for name in args.workloads.split(",")]
    for name in list(names):  # a workload of S seeds is compared with one seed, timed alongside
        solo, num_seeds, _ = split_seeds(name)
        if num_seeds > 1 and solo not in names:
            names.insert(names.index(name), solo)
    runs = {}
    for name in names:
        wl = workload(name, steps_per_dispatch=args.steps_per_dispatch or None)
        runs[wl.name] = WorkloadRun(wl, device=device, min_window_s=args.min_window_s)
        timed[wl.name] = runs[wl.name].timed
        print(f"compiled {wl.name} in {runs[wl.name].compile_s:.1f} s", flush=True)
        if wl.config.model == "seed_mlp" and wl.num_seeds == 1:
            timed[wl.name + CEILING_SUFFIX] = mlp_matmul_timed(
                wl, device=device, min_window_s=args.min_window_s
            )
    time_round_robin(timed, args.windows)

    matmul = {
        dtype: 2 * n**3 / statistics.median(timed[f"matmul_{dtype}"].seconds) / 1e9
        for dtype in ("float32", "bfloat16")
    }
    print(
        f"{n}^2 matmul: f32 {matmul['float32']:.1f} GFLOP/s, bf16 {matmul['bfloat16']:.1f} GFLOP/s",
        flush=True,
    )
    rows = []
    for name, run in runs.items():
        row = run.result()
        row["vs_matmul_f32"] = row["gflops"] / matmul["float32"]
        rows.append(row)
        print(
            f"{name:11s} {row['images_per_s']:>10,.0f} images/s  {row['ms_per_step']:8.2f} ms/step"
            f"  {row['gflops']:7.1f} GFLOP/s  {row['vs_matmul_f32']:6.1%} of f32 matmul"
            f"  (k={row['steps_per_dispatch']}, {row['compute_dtype']})",
            flush=True,
        )
        if not row["metrics_finite"]:
            print(f"warning: {name} produced non-finite metrics", flush=True)
        if row["num_seeds"] > 1:
            solo = next(r for r in rows if r["workload"] == run.workload.solo_name)
            # S solo runs one after another process images at one seed's rate; on one device
            # S seeds together cost no more than that when the ratio is >= 1 (ideal: S).
            row["solo_images_per_s"] = solo["images_per_s"]
            row["vs_solo_runs"] = row["images_per_s"] / solo["images_per_s"]
            print(
                f"{'':11s} {row['num_seeds']} seeds together: {row['vs_solo_runs']:.3f}x one "
                f"seed's {solo['images_per_s']:,.0f} images/s ({solo['workload']}), i.e. the S "
                f"runs take {1 / row['vs_solo_runs']:.3f}x the time of {row['num_seeds']} solo "
                f"runs; {row['num_seeds']} x one seed's rate would be "
                f"{row['num_seeds'] * solo['images_per_s']:,.0f} images/s",
                flush=True,
            )
        if name + CEILING_SUFFIX in timed:
            seconds = timed[name + CEILING_SUFFIX].seconds
            images_per_dispatch = row["batch_size"] * row["steps_per_dispatch"]
            ceiling = images_per_dispatch / statistics.median(seconds)
            row["matmul_ceiling_images_per_s"] = ceiling
            row["matmul_ceiling_images_per_s_min"] = images_per_dispatch / max(seconds)
            row["matmul_ceiling_images_per_s_max"] = images_per_dispatch / min(seconds)
            row["matmul_ceiling_gflops"] = ceiling * row["flops_per_image"] / 1e9
            row["of_matmul_ceiling"] = row["images_per_s"] / ceiling
            print(
                f"{'':11s} {ceiling:>10,.0f} images/s with its matmuls alone "
                f"({row['matmul_ceiling_gflops']:.1f} GFLOP/s); the step reaches "
                f"{row['of_matmul_ceiling']:.1%} of that",
                flush=True,
            )
    table = markdown_table(rows, matmul["float32"])
    print()
    print(table)
    machine["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "machine": machine,
        "matmul_gflops": matmul,
        "windows": args.windows,
        "min_window_s": args.min_window_s,
        "rows": rows,
        "table": table,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
