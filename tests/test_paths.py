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
