"""XLA compiler options per backend, for every `jax.jit` that runs the models.

XLA:CPU (JAX 0.10) hands dots and convolutions to YNNPACK by default. On the 2-core AMD EPYC
machines this project is measured on, XLA's own (Eigen) kernels are faster for both:
convolutions 1.3-1.8x for every large convolution of the DCGAN, so the DCGAN train step runs
about 1.4x faster (247 against 349 images/s in experiments/benchmark.py, `dcgan+ynnpack`
against `dcgan`); and the seed_mlp step about 3% faster with its dots in Eigen too (measured
in the same process, taking turns). So on CPU the models' jits turn YNNPACK off:

    jax.jit(fn, compiler_options=xla_options.compiler_options("cpu"))

The one thing YNNPACK does better here is a bf16 x bf16 -> f32 dot (about 380 GFLOP/s against
190); gan_jax's bf16 models compute their dots and convolutions at the f32 rate either way (see
experiments/benchmark.py, "CPU notes").

The option is experimental in XLA. A JAX that no longer knows it (or rejects the value) gets no
options rather than a failing compile: `compiler_options` tries it once per process on a tiny
function and remembers the answer. Other backends get None (XLA's defaults).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# No YNNPACK fusion types: dots and convolutions take XLA:CPU's Eigen path.
CPU_WITHOUT_YNNPACK: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _accepted(platform: str, options: tuple[tuple[str, str], ...]) -> bool:
    """Whether this JAX's XLA compiles a trivial function with `options` on `platform`."""
    device = jax.devices(platform)[0]
    arg = jax.ShapeDtypeStruct((), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(device))
    try:
        jax.jit(lambda x: x + 1).lower(arg).compile(compiler_options=dict(options))
    except jax.errors.JaxRuntimeError:
        return False
    return True


def compiler_options(platform: str | None = None) -> dict[str, str] | None:
    """The options for jitting model code on `platform` (default: JAX's default backend).

    Returns a fresh dict (callers may extend it), or None for XLA's defaults.
    """
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return None
    if not _accepted(platform, tuple(sorted(CPU_WITHOUT_YNNPACK.items()))):
        return None
    return dict(CPU_WITHOUT_YNNPACK)


def jit(fn: Callable | None = None, /, *, platform: str | None = None, **jit_kwargs: Any) -> Any:
    """`jax.jit` with `compiler_options(platform)`; usable as a decorator, with or without args.

    The platform is resolved when the jit is built, so build it after choosing devices.
    """
    if fn is None:
        return functools.partial(jit, platform=platform, **jit_kwargs)
    return jax.jit(fn, compiler_options=compiler_options(platform), **jit_kwargs)
