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
