"""Shared pieces of the training-run tests (test_train*, test_main*, test_multiprocess*).

No tests here. Runs go through the real command line (`python -m gan_jax.main --config
experiments/<name>.py --workdir ... --config.key=value`) in subprocesses with their own forced CPU
devices; checkpoints are compared in this process by restoring them with `Checkpointer.restore`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from gan_jax import checkpointing, data, optim
from gan_jax import models as models_lib
from gan_jax.state import create_train_state

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = {
    "seed_mlp": REPO / "experiments" / "seed_mlp_mnist.py",
    "dcgan": REPO / "experiments" / "dcgan_tutorial_mnist.py",  # the tutorial DCGAN family
}
# The experiments shrunk to test size (the model families and losses are the real ones).
TINY = {
    "seed_mlp": dict(g_width=32, d_width=32, latent_dim=16, batch_size=32, ema_decay=0.9),
    "dcgan": dict(g_width=8, d_width=8, latent_dim=16, batch_size=32),
}
LOOP = dict(eval_at_end=False, num_grid_samples=16, sample_every=0, keep_checkpoints=10)

# Runs `python -m gan_jax.main` after patching the progress reporter: once the run reaches
# $PAUSE_AT_STEP it writes $PAUSE_FILE and waits (up to 10 minutes) until a SIGTERM/SIGINT has
# been received (the loop's own handler records it), so the test can send signals, or SIGKILL,
# at a known step. Without $PAUSE_AT_STEP it is exactly `python -m gan_jax.main`.
DRIVER = r"""
import os, runpy, signal, sys, time
from gan_jax import writers

pause_at = os.environ.get("PAUSE_AT_STEP")
if pause_at:
    update = writers.Progress.update

    def paused_update(self, step, *args, **kwargs):
        update(self, step, *args, **kwargs)
        if step >= int(pause_at) and not getattr(paused_update, "done", False):
            paused_update.done = True
            with open(os.environ["PAUSE_FILE"], "w") as f:
                f.write(str(step))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                request = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
                if request:
                    break
                time.sleep(0.02)

    writers.Progress.update = paused_update

sys.argv = ["gan_jax.main", *sys.argv[1:]]
runpy.run_module("gan_jax.main", run_name="__main__", alter_sys=True)
"""


def ensure_mnist() -> None:
    """Prepares MNIST in the default TFDS directory (once), before subprocesses read it."""
    data.load_split("mnist", "test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def experiment_config(model: str, **overrides) -> ml_collections.ConfigDict:
    """The experiment file's config with the tiny sizes, loop settings and `overrides`."""
    config = runpy.run_path(str(EXPERIMENT[model]))["get_config"]()
    config.update({**TINY[model], **LOOP, **overrides})
    return config


def cli_args(model: str, workdir: Path, **overrides) -> list[str]:
    """`--config <experiment> --workdir <dir> --config.key=value ...` for the tiny run."""
    args = ["--config", str(EXPERIMENT[model]), "--workdir", str(workdir)]
    for key, value in {**TINY[model], **LOOP, **overrides}.items():
        args.append(f"--config.{key}={value}")
    return args


def env_for(num_devices: int, *, compile_cache: Path | None = None, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    if compile_cache is not None:
        # Later processes reuse earlier compilations (a dcgan compile costs tens of seconds on 2
        # cores). The executable is then the same one, so such runs are compared with a run that
        # compiled for itself too (see the callers).
        env.update(
            JAX_COMPILATION_CACHE_DIR=str(compile_cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    env.update(extra)
    return env


def start(args: Sequence[str], env: dict, log: Path) -> subprocess.Popen:
    """Starts the driver (i.e. `python -m gan_jax.main`) with `args`; output goes to `log`."""
    out = open(log, "w")  # noqa: SIM115 (closed with the process by `finish`)
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    proc.log_file = out  # type: ignore[attr-defined]
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    """Waits for `proc` (killing it after `timeout`) and returns its exit code."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"timed out; log:\n{tail(proc)}") from None
    finally:
        proc.log_file.close()


def tail(proc: subprocess.Popen, lines: int = 40) -> str:
    if not proc.log_file.closed:
        proc.log_file.flush()
    text = Path(proc.log_path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run(args: Sequence[str], env: dict, log: Path, timeout: float = 300) -> None:
    """Runs the command to completion and asserts it succeeded."""
    proc = start(args, env, log)
    code = finish(proc, timeout)
    assert code == 0, f"exit code {code}; log:\n{tail(proc)}"


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 300
) -> None:
    """Polls `condition` until it holds; fails if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}; log:\n{tail(proc)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}; log:\n{tail(proc)}")
        time.sleep(0.05)


def send(proc: subprocess.Popen, signum: signal.Signals) -> None:
    os.kill(proc.pid, signum)


def kill_after_checkpoint(
    args: Sequence[str], env: dict, workdir: Path, log: Path, *, pause_at: int, checkpoint: int
) -> None:
    """Runs the CLI until training has gone past `checkpoint` (it waits in the progress report
    of step `pause_at`, before logging it) and that checkpoint is complete, then SIGKILLs it."""
    pause = log.with_suffix(".paused")
    proc = start(args, {**env, "PAUSE_AT_STEP": str(pause_at), "PAUSE_FILE": str(pause)}, log)
    wait_until(pause.exists, proc, f"step {pause_at}")
    wait_until(lambda: committed_steps(workdir) == [checkpoint], proc, f"checkpoint {checkpoint}")
    send(proc, signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL


def stop_as_if_signalled(monkeypatch) -> None:
    """Makes every in-process `train.train_and_evaluate` run as if SIGTERM had arrived before its
    first dispatch: it saves a checkpoint where it stands and returns, as after a preemption."""
    from gan_jax import train

    @contextlib.contextmanager
    def signalled():
        request = train._StopRequest()
        request.signal_name = "SIGTERM"
        yield request

    monkeypatch.setattr(train, "_stop_on_signals", signalled)


def committed_steps(workdir: Path) -> list[int]:
    """Checkpoint steps whose directory is complete (renamed from its tmp name)."""
    directory = workdir / checkpointing.CHECKPOINT_SUBDIR
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def abstract_state(config: ml_collections.ConfigDict):
    """The TrainState's shapes and dtypes for `config`, each on this process's first device."""
    init = functools.partial(
        create_train_state,
        config=config,
        models=models_lib.build_models(config),
        optimizers=optim.build_optimizers(config),
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
        jax.eval_shape(init, jax.random.key(0)),
    )


def restore(workdir: Path, config: ml_collections.ConfigDict, step: int | None = None):
    """Checkpoint `step` (default latest) of a run, as a TrainState of NumPy arrays."""
    with checkpointing.Checkpointer(workdir, read_only=True) as reader:
        return jax.device_get(reader.restore(abstract_state(config), step))


def leaves_with_paths(tree) -> list[tuple[str, np.ndarray]]:
    return [
        (jax.tree_util.keystr(path), np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def assert_bitwise_equal(actual, expected) -> None:
    """Same structure, and every leaf equal bit for bit (NaNs included)."""
    got, want = leaves_with_paths(actual), leaves_with_paths(expected)
    assert [p for p, _ in got] == [p for p, _ in want]
    differing = [
        path
        for (path, a), (_, b) in zip(got, want, strict=True)
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes()
    ]
    assert not differing, f"{len(differing)} of {len(got)} arrays differ, e.g. {differing[:5]}"


def max_relative_error(actual, expected) -> float:
    """max over leaves of ||a - b|| / ||b|| (float64, Frobenius; 0 for equal leaves)."""
    worst = 0.0
    for (_, a), (_, b) in zip(leaves_with_paths(actual), leaves_with_paths(expected), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        diff = np.linalg.norm(a - b)
        worst = max(worst, float(diff / max(np.linalg.norm(b), 1e-30)) if diff else 0.0)
    return worst
