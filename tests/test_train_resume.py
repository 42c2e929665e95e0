"""Exact resume after SIGTERM and after SIGKILL, for both model families, through the real CLI.

Run A trains 32 steps without stopping. Run B is the same command, stopped part-way and then run
again (the documented way to resume): SIGTERM at step 20 (the run must save a checkpoint at 20
and exit 0), or SIGKILL once its checkpoint at 12 is committed (it must restart from 12). The
final checkpoints must hold bit-for-bit the same parameters, optimiser states, EMA and BatchNorm
statistics, and the metrics logs the same records.

A compiles for itself; B's processes share a compilation cache (so B's resumed process runs the
executable B's first process compiled, and A's is an independent compilation of the same
program).
"""

from __future__ import annotations

import json
import signal

import pytest

from tests import helpers
from tests import test_train_support as support

pytestmark = pytest.mark.slow

RUN = dict(num_steps=32, steps_per_dispatch=4, log_every=4, checkpoint_every=12)
CHECKPOINTS_OF_A = [12, 24, 32]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """Shared by every run B of this module (never by a run A)."""
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """model -> (workdir of run A, process) started on first request, finished on `get`."""
    support.ensure_mnist()
    started = {}

    class Reference:
        def start(self, model):
            if model not in started:
                workdir = tmp_path_factory.mktemp(f"a_{model}")
                proc = support.start(
                    support.cli_args(model, workdir / "run", **RUN),
                    support.env_for(4),
                    workdir / "log.txt",
                )
                started[model] = [workdir / "run", proc]

        def get(self, model):
            self.start(model)
            workdir, proc = started[model]
            if proc is not None:
                code = support.finish(proc)
                assert code == 0, support.tail(proc)
                started[model][1] = None
                assert support.committed_steps(workdir) == CHECKPOINTS_OF_A
            return workdir

    return Reference()


def _metric_records(workdir):
    """metrics.jsonl without the timing fields (which differ between any two runs)."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [helpers.without_timing(json.loads(line)) for line in lines]


def _assert_same_run(model, b_workdir, a_workdir, steps=(32,)):
    config = support.experiment_config(model, **RUN)
    for step in steps:
        support.assert_bitwise_equal(
            support.restore(b_workdir, config, step), support.restore(a_workdir, config, step)
        )
    b_records, a_records = _metric_records(b_workdir), _metric_records(a_workdir)
    assert [r["step"] for r in b_records] == list(range(4, 33, 4))  # each step once
    assert b_records == a_records


@pytest.mark.parametrize("model", ["seed_mlp", "dcgan"])
def test_sigterm_saves_and_resume_is_bitwise_exact(model, reference, compile_cache, tmp_path):
    reference.start(model)  # A runs while B's first part does
    workdir = tmp_path / "run"
    env = support.env_for(4, compile_cache=compile_cache)
    args = support.cli_args(model, workdir, **RUN)

    pause = tmp_path / "paused"
    first = support.start(
        args, {**env, "PAUSE_AT_STEP": "20", "PAUSE_FILE": str(pause)}, tmp_path / "b1.txt"
    )
    support.wait_until(pause.exists, first, "step 20")
    assert pause.read_text() == "20"
    support.send(first, signal.SIGTERM)
    code = support.finish(first)
    log = support.tail(first, 200)
    assert code == 0, log
    assert "SIGTERM: saved a checkpoint at step 20 and stopped" in log
    # The interval checkpoint and the one the signal saved; nothing half-written left behind.
    assert support.committed_steps(workdir) == [12, 20]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "20"]
    assert [r["step"] for r in _metric_records(workdir)] == [4, 8, 12, 16, 20]

    support.run(args, env, tmp_path / "b2.txt")  # the same command again resumes
    assert support.committed_steps(workdir) == [12, 20, 24, 32]
    _assert_same_run(model, workdir, reference.get(model), steps=(24, 32))


@pytest.mark.parametrize("model", ["seed_mlp", "dcgan"])
def test_sigkill_after_checkpoint_resumes_bitwise_exact(model, reference, compile_cache, tmp_path):
    reference.start(model)
    workdir = tmp_path / "run"
    env = support.env_for(4, compile_cache=compile_cache)
    args = support.cli_args(model, workdir, **RUN)

    support.kill_after_checkpoint(
        args, env, workdir, tmp_path / "b1.txt", pause_at=16, checkpoint=12
    )
    # It waited in the progress report of step 16, before logging it.
    assert [r["step"] for r in _metric_records(workdir)] == [4, 8, 12]

    support.run(args, env, tmp_path / "b2.txt")
    assert support.committed_steps(workdir) == CHECKPOINTS_OF_A
    _assert_same_run(model, workdir, reference.get(model), steps=(24, 32))


# Spectral normalisation (its vectors in d_state) with WGAN-GP's n_critic real batches a step,
# judged in PacGAN packs of 2 (the penalty on packs).
SN_WGAN_PACKS = dict(d_spectral_norm=True, loss="wasserstein", gp_weight=10.0, n_critic=2, pack=2)


def test_sigkill_resume_with_spectral_norm_critic_batches_and_packs_is_bitwise_exact(tmp_path):
    """As above for seed_mlp with spectral norm on, 2 critic batches a step and packs of 2: the
    resumed run's power-iteration vectors, parameters and metrics are the uninterrupted run's."""
    support.ensure_mnist()
    run = {**RUN, **SN_WGAN_PACKS}
    a_workdir, b_workdir = tmp_path / "a", tmp_path / "b"
    a = support.start(
        support.cli_args("seed_mlp", a_workdir, **run), support.env_for(4), tmp_path / "a.txt"
    )
    args = support.cli_args("seed_mlp", b_workdir, **run)
    env = support.env_for(4, compile_cache=tmp_path / "cache")
    support.kill_after_checkpoint(
        args, env, b_workdir, tmp_path / "b1.txt", pause_at=16, checkpoint=12
    )
    support.run(args, env, tmp_path / "b2.txt")
    assert support.finish(a) == 0, support.tail(a)

    config = support.experiment_config("seed_mlp", **run)
    for step in (24, 32):
        b_state = support.restore(b_workdir, config, step)
        support.assert_bitwise_equal(b_state, support.restore(a_workdir, config, step))
    assert "spectral_norm" in b_state.d_state
    b_records, a_records = _metric_records(b_workdir), _metric_records(a_workdir)
    assert [r["step"] for r in b_records] == list(range(4, 33, 4))
    assert b_records == a_records
