"""Relative and `~` paths work from any working directory; bucket URLs are left alone."""

from __future__ import annotations

import os

import pytest

from gan_jax import checkpointing, evaluate, paths, train
from tests import test_train_support as support


@pytest.fixture(scope="module")
def mnist():
    support.ensure_mnist()


def _config(**overrides):
    loop = dict(num_steps=8, steps_per_dispatch=4, log_every=4, checkpoint_every=4)
    return support.experiment_config("seed_mlp", **{**loop, **overrides})


def test_resolve_expands_home_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.resolve("runs/a") == str(tmp_path / "runs" / "a")
    assert paths.resolve("~/runs/a") == str(tmp_path / "home" / "runs" / "a")
    assert paths.resolve(tmp_path / "x" / ".." / "y") == str(tmp_path / "y")
    assert paths.resolve("gs://bucket/runs/a") == "gs://bucket/runs/a"
    assert paths.resolve("") == ""
    assert paths.resolve(None) is None


def test_relative_workdir_trains_and_checkpoints(mnist, tmp_path, monkeypatch):
    # The README's command shape: a relative --workdir from the directory the user is in.
    monkeypatch.chdir(tmp_path)
    train.train_and_evaluate(_config(), "workdirs/run")
    workdir = tmp_path / "workdirs" / "run"
    assert support.committed_steps(workdir) == [4, 8]
    assert (workdir / "metrics.jsonl").exists()


def test_home_workdir_trains_and_evaluate_reads_it(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    config = _config()
    train.train_and_evaluate(config, "~/run")
    workdir = tmp_path / "home" / "run"
    assert support.committed_steps(workdir) == [4, 8]
    assert not (tmp_path / "~").exists()
    # From another directory, the same ~ path and a relative one reach the run.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert evaluate.restore_sampler("~/run").step == 8
    assert evaluate.restore_sampler(os.path.join("..", "home", "run"), step=4).step == 4
    assert evaluate.load_run_config("../home/run").num_steps == 8


def test_checkpointer_accepts_relative_and_home_paths(tmp_path, monkeypatch):
    import jax.numpy as jnp

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    state = {"w": jnp.arange(4.0)}
    for workdir, where in (
        ("rel/run", tmp_path / "rel" / "run"),
        ("~/run", tmp_path / "home" / "run"),
    ):
        with checkpointing.Checkpointer(workdir) as writer:
            assert writer.directory == where / "checkpoints"
            writer.save(3, state, force=True)
        assert support.committed_steps(where) == [3]
        restored = checkpointing.restore_for_eval(workdir, state)
        assert restored["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_relative_and_home_data_dirs_prepare_and_read_in_one_place(tmp_path, monkeypatch):
    from gan_jax import data
    from gan_jax.data import mnist_sources
    from tests import helpers

    found = helpers.tiny_mnist_files(tmp_path / "idx")
    monkeypatch.setattr(mnist_sources, "find_mnist_files", lambda **kwargs: found)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    images, _ = data.load_split("mnist", "train", data_dir="rel_tfds")
    assert (tmp_path / "rel_tfds" / "gan_jax_mnist" / "1.0.0").is_dir()
    home_images, _ = data.load_split("mnist", "train", data_dir="~/tfds")
    assert (tmp_path / "home" / "tfds" / "gan_jax_mnist" / "1.0.0").is_dir()
    assert not (tmp_path / "~").exists()
    assert home_images.tobytes() == images.tobytes()
    # From another directory the relative name means another place; the absolute one is reused.
    monkeypatch.setattr(mnist_sources, "find_mnist_files", _must_not_prepare)
    monkeypatch.chdir(tmp_path / "home")
    assert data.load_split("mnist", "test", data_dir="tfds")[0].shape == (100, 28, 28, 1)


def _must_not_prepare(**kwargs):
    raise AssertionError("the prepared copy must be found")


def test_mnist_dir_and_env_paths_are_resolved(tmp_path, monkeypatch):
    from gan_jax.data import files, mnist_sources
    from gan_jax.evaluation import reference

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GAN_JAX_CACHE_DIR", "cache")
    assert files.cache_dir() == tmp_path / "cache"
    assert reference.cache_dir() == tmp_path / "cache" / "eval"
    monkeypatch.setenv("GAN_JAX_CACHE_DIR", "~/c")
    assert files.cache_dir() == tmp_path / "home" / "c"
    assert reference.cache_dir() == tmp_path / "home" / "c" / "eval"
    monkeypatch.delenv("GAN_JAX_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert files.cache_dir() == tmp_path / "home" / ".cache" / "gan_jax"

    # $GAN_JAX_MNIST_DIR and mnist_dir with ~ and relative names: the files there are used.
    def offline(dest, *, timeout_s):
        raise OSError("simulated: no network")

    monkeypatch.setattr(mnist_sources, "download_canonical", offline)
    monkeypatch.setattr(
        mnist_sources, "_verified_set", lambda d: {"dir": d} if d.is_dir() else None
    )
    (tmp_path / "home" / "idx").mkdir(parents=True)
    monkeypatch.setenv("GAN_JAX_MNIST_DIR", "~/idx")
    assert mnist_sources.find_mnist_files().paths == {"dir": tmp_path / "home" / "idx"}
    monkeypatch.delenv("GAN_JAX_MNIST_DIR")
    monkeypatch.chdir(tmp_path / "home")
    assert mnist_sources.find_mnist_files(mnist_dir="idx").paths == {
        "dir": tmp_path / "home" / "idx"
    }
