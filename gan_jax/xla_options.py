"""XLA compiler options per backend, for every `jax.jit` that runs the models.

Two options on CPU, each measured on the 2-core AMD EPYC machines this project runs on (same
process, taking turns; experiments/benchmark.py):

- No YNNPACK. XLA:CPU (JAX 0.10) hands dots and convolutions to YNNPACK by default; its own
  (Eigen) kernels are faster for both here: convolutions 1.3-1.8x for every large convolution of
  the DCGAN, so the DCGAN step runs about 1.4x faster (241 against 345 images/s, `dcgan+ynnpack`
  against `dcgan`), and the seed_mlp step about 3% faster with its dots in Eigen too. The one
  thing YNNPACK does better here is a bf16 x bf16 -> f32 dot (about 380 GFLOP/s against 190);
  gan_jax's bf16 models compute at the f32 rate either way (experiments/benchmark.py, "CPU
  notes").
- Copy insertion with region analysis. In a `lax.scan` of train steps, Adam's new second moment
  overwrites the old one in the loop-carried buffer, while the fusion that updates the params
  recomputes the moment from the old one. XLA's default copy insertion then copies each big
  moment and param buffer every trip (about 55 us of a 1.9 ms seed_mlp step); region analysis
  proves the reads come first and drops the copies: seed_mlp +2-3%. Values are unchanged: it
  only decides which buffers alias.

    jax.jit(fn, compiler_options=xla_options.compiler_options("cpu"))

The options are experimental in XLA. A JAX that no longer knows one (or rejects its value)
compiles without it rather than failing: `compiler_options` tries each once per process on a
tiny function and remembers the answer. Other backends get None (XLA's defaults).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

CPU_OPTIONS: dict[str, str | bool] = {
    # No YNNPACK fusion types: dots and convolutions take XLA:CPU's Eigen path.
    "xla_cpu_experimental_ynn_fusion_type": "",
    # No per-trip copies of loop-carried optimiser state in scanned steps (see above).
    "xla_cpu_copy_insertion_use_region_analysis": True,
}


@functools.cache
def _accepted(platform: str, name: str, value: str | bool) -> bool:
    """Whether this JAX's XLA compiles a trivial function with `name=value` on `platform`."""
    device = jax.devices(platform)[0]
    arg = jax.ShapeDtypeStruct((), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(device))
    try:
        jax.jit(lambda x: x + 1).lower(arg).compile(compiler_options={name: value})
    except jax.errors.JaxRuntimeError:
        return False
    return True


def compiler_options(platform: str | None = None) -> dict[str, str | bool] | None:
    """The options for jitting model code on `platform` (default: JAX's default backend).

    Returns a fresh dict of the options this XLA accepts (callers may extend it), or None for
    XLA's defaults.
    """
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return None
    options = {
        name: value for name, value in CPU_OPTIONS.items() if _accepted(platform, name, value)
    }
    return options or None


def jit(fn: Callable | None = None, /, *, platform: str | None = None, **jit_kwargs: Any) -> Any:
    """`jax.jit` with `compiler_options(platform)`; usable as a decorator, with or without args.

    The platform is resolved when the jit is built, so build it after choosing devices.
    """
    if fn is None:
        return functools.partial(jit, platform=platform, **jit_kwargs)
    return jax.jit(fn, compiler_options=compiler_options(platform), **jit_kwargs)
