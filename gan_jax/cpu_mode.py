"""The portable CPU mode, and what CPU this is (for results that say where they were measured).

XLA:CPU compiles for the CPU it runs on: it picks vector widths and instructions from the CPU's
features (AVX2, AVX-512, ...), and YNNPACK, when it computes dots and convolutions, picks its
kernels at run time the same way. A wider vector sums a reduction in another order, and GAN
training turns a last-bit difference into another trajectory, so the same command gives other
bits on another CPU kind (the same bits on the same machine and versions).

Portable mode, `GAN_JAX_PORTABLE_CPU=1` in the environment, adds to XLA_FLAGS:
- `--xla_cpu_max_isa=AVX2`: XLA emits no instruction past AVX2, whatever the CPU has;
- `--xla_cpu_experimental_ynn_fusion_type=`: no YNNPACK anywhere (gan_jax's own jits already
  keep it off, gan_jax.xla_options; this covers every other computation too).
XLA reads XLA_FLAGS once, when JAX starts its first backend, so `import gan_jax` applies them
(this module imports no JAX); set the variable before the process starts, as
`GAN_JAX_PORTABLE_CPU=1 python -m gan_jax.main ...`. What it buys and costs is measured by
`python -m gan_jax.fingerprint` and experiments/benchmark.py (README, Randomness).
"""

from __future__ import annotations

import os
import platform

PORTABLE_ENV = "GAN_JAX_PORTABLE_CPU"
PORTABLE_XLA_FLAGS = ("--xla_cpu_max_isa=AVX2", "--xla_cpu_experimental_ynn_fusion_type=")

# Instruction-set levels, lowest first, and the /proc/cpuinfo flags each needs.
_ISA_LEVELS = (
    ("AVX512_BF16", ("avx512f", "avx512bw", "avx512vl", "avx512_bf16")),
    ("AVX512_VNNI", ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")),
    ("AVX512", ("avx512f", "avx512bw", "avx512vl")),
    ("AVX2", ("avx2", "fma")),
    ("AVX", ("avx",)),
    ("SSE4_2", ("sse4_2",)),
)


def portable_requested() -> bool:
    """Whether GAN_JAX_PORTABLE_CPU asks for the portable mode ("1", "true", "yes")."""
    return os.environ.get(PORTABLE_ENV, "").strip().lower() in ("1", "true", "yes")


def apply_portable_flags() -> None:
    """Appends PORTABLE_XLA_FLAGS to XLA_FLAGS (once) when the portable mode is requested."""
    if not portable_requested():
        return
    flags = os.environ.get("XLA_FLAGS", "").split()
    missing = [flag for flag in PORTABLE_XLA_FLAGS if flag not in flags]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join(flags + missing)


def portable_cpu() -> bool:
    """Whether this process's XLA_FLAGS hold every flag of the portable mode."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return all(flag in flags for flag in PORTABLE_XLA_FLAGS)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13", "Intel(R) Xeon(R) ..."), with its family and model
    numbers where the name alone does not say which generation it is."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    if "cpu family" in info and "model" in info:
        name = f"{name} (family {info['cpu family']}, model {info['model']})"
    return name


def cpu_isa_level() -> str:
    """The highest instruction-set level of _ISA_LEVELS this CPU has ("AVX2", "AVX512", ...), as
    XLA's --xla_cpu_max_isa names them; the machine's arch where /proc/cpuinfo has no flags."""
    flags = set(_cpuinfo().get("flags", "").split())
    if not flags:
        return platform.machine() or "unknown"
    for level, needs in _ISA_LEVELS:
        if all(flag in flags for flag in needs):
            return level
    return "x86-64"


def describe() -> dict[str, object]:
    """What a results file records about the CPU and the mode: {"cpu", "isa", "xla_flags",
    "portable"}."""
    return {
        "cpu": cpu_model(),
        "isa": cpu_isa_level(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "portable": portable_cpu(),
    }
