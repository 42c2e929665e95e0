"""Test set-up: four forced CPU devices, so data-parallel code runs on any machine, and a
compilation cache, so a program compiled once is not compiled again."""

import os

import jax

from gan_jax.data import files

# Must happen before JAX initialises its backends, i.e. before any test module touches a device.
jax.config.update("jax_num_cpu_devices", 4)

# Most of the suite's time is XLA compiling small train steps, and many tests build the same
# step (the same tiny config through new Python callables: the same HLO). JAX's persistent
# cache keys an executable by its HLO, compile options, backend and JAX / jaxlib versions, so a
# hit is the program that compiling would give. Measured (tests/test_train.py, 2 cores): 86 s
# of CPU cold, 64 s with the cache filling within the run, 31 s with it warm from a run before.
# GAN_JAX_TEST_COMPILATION_CACHE names another directory; "off" turns the cache off.
_cache = os.environ.get("GAN_JAX_TEST_COMPILATION_CACHE") or str(
    files.cache_dir() / "test_compilation_cache"
)
if _cache != "off":
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The fast step compiles with XLA's backend (LLVM) optimisation level 0: its programs are small
# and run for milliseconds, so compiling is most of its time. Measured on 2 cores (AMD EPYC,
# AVX-512): tests/test_step.py alone 102 s at the default level, 65 s at 1, 45 s at 0 (one run of
# each beside the same background job); the whole fast step in a fresh clone, idle, 404 s at the
# default level, 377 s at 1, 346 s at 0 (Inception's tests run slower at 0, their programs
# being large). The bits change with the level (gan_jax.fingerprint gives other hashes), so what the
# fast step checks is what holds at any level: bitwise equality of two programs compiled alike,
# and tolerances. A run that selects slow tests (`-m slow`, `-m ""`) keeps the default level,
# the one users train with, and so do the tests whose tolerance was measured only there (marked
# slow). GAN_JAX_TEST_XLA_OPT=default keeps the default level in the fast step too, and a
# level already in XLA_FLAGS is kept.
FAST_STEP_XLA_FLAGS = ("--xla_backend_optimization_level=0",)


def pytest_configure(config):
    """Adds FAST_STEP_XLA_FLAGS to XLA_FLAGS in the fast step, before any test starts a backend
    (test modules are collected after this hook); subprocesses inherit them."""
    fast_step = (config.getoption("markexpr", "") or "").strip() == "not slow"
    if not fast_step or os.environ.get("GAN_JAX_TEST_XLA_OPT", "").strip() == "default":
        return
    flags = os.environ.get("XLA_FLAGS", "").split()
    # A level the user set in XLA_FLAGS is theirs to keep.
    chosen = {f.split("=", 1)[0] for f in flags}
    os.environ["XLA_FLAGS"] = " ".join(
        flags + [f for f in FAST_STEP_XLA_FLAGS if f.split("=", 1)[0] not in chosen]
    )


def pytest_sessionstart(session):
    """Under pytest-xdist, prepares MNIST once in the controller before the workers start, so no
    two workers prepare the same TFDS dataset at once (each worker reads it as it is)."""
    is_worker = hasattr(session.config, "workerinput")
    distributed = int(getattr(session.config.option, "numprocesses", 0) or 0) > 0
    if distributed and not is_worker:
        from gan_jax import data

        data.load_split("mnist", "test")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """No test reaches the network: a download attempt fails as it would offline (the Inception
    weights' loader then raises its message naming the file, the URL and the flag)."""
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("tests run offline (tests/conftest.py)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
