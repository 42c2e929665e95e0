"""One run per workdir: a live holder stops a second trainer before it writes anything; a dead
holder's lock is taken over; a holder on another host gets a message saying how to override."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from gan_jax import train, workdir_lock
from gan_jax.checkpointing import WorkdirError
from gan_jax.workdir_lock import WorkdirHeldError
from tests import test_train_support as support

# A live process holding a workdir's lock until its stdin closes.
_HOLDER = r"""
import sys
from gan_jax import workdir_lock
lock = workdir_lock.acquire(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture
def held_workdir(tmp_path):
    """A workdir held by a live process (another trainer, as far as the lock can tell)."""
    workdir = tmp_path / "run"
    env = support.env_for(1)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(workdir), "--config.some=flag"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=support.REPO,
    )
    assert holder.stdout.readline() == "held\n"
    yield workdir, holder
    holder.stdin.close()
    holder.wait(timeout=30)


def _config(**overrides):
    loop = dict(num_steps=4, steps_per_dispatch=4, log_every=4, checkpoint_every=4)
    return support.experiment_config("seed_mlp", **{**loop, **overrides})


def _files(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_second_trainer_on_a_held_workdir_stops_before_writing_and_names_the_holder(
    held_workdir, monkeypatch
):
    workdir, holder = held_workdir
    before = _files(workdir)
    monkeypatch.setattr(train, "_load_training_split", pytest.fail)
    with pytest.raises(WorkdirHeldError) as error:
        train.train_and_evaluate(_config(), workdir)
    message = str(error.value)
    assert f"{workdir} is in use by another run: pid {holder.pid} on host " in message
    assert socket.gethostname() in message and "started 20" in message
    assert "--config.some=flag" in message  # its command
    assert f"kill {holder.pid}" in message
    assert _files(workdir) == before == ["run.lock"]  # nothing written, the holder's lock kept


def test_cli_second_trainer_is_a_one_line_error(held_workdir, tmp_path):
    workdir, holder = held_workdir
    result = subprocess.run(
        [sys.executable, "-m", "gan_jax.main", *support.cli_args("seed_mlp", workdir)],
        capture_output=True,
        text=True,
        env=support.env_for(1),
        cwd=support.REPO,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"is in use by another run: pid {holder.pid}" in result.stderr.splitlines()[-1]
    assert _files(workdir) == ["run.lock"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_of_a_dead_run_is_taken_over_and_released_at_the_end(tmp_path, caplog):
    support.ensure_mnist()
    workdir = tmp_path / "run"
    workdir.mkdir()
    stale = {"host": socket.gethostname(), "pid": _dead_pid(), "started": "2020-01-01T00:00:00"}
    (workdir / "run.lock").write_text(json.dumps(stale))
    train.train_and_evaluate(_config(), workdir)
    assert support.committed_steps(workdir) == [4]
    assert f"taking over {workdir / 'run.lock'}: the run that held it (pid {stale['pid']}" in (
        caplog.text
    )
    assert not (workdir / "run.lock").exists()  # released
    assert not list(workdir.glob("run.lock*"))


def test_reused_pid_does_not_hold(tmp_path):
    # Our own pid, but recorded with another process start time: the holder is gone.
    record = workdir_lock.this_process()
    assert workdir_lock.is_alive(record) is True
    assert workdir_lock.is_alive({**record, "process_start": "1"}) is False
    assert workdir_lock.is_alive({**record, "host": "elsewhere"}) is None


def test_holder_on_another_host_says_how_to_override(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    record = {**workdir_lock.this_process(), "host": "tpu-vm-7", "pid": 4242}
    (workdir / "run.lock").write_text(json.dumps(record))
    with pytest.raises(WorkdirHeldError) as error:
        workdir_lock.acquire(workdir)
    message = str(error.value)
    assert "pid 4242 on host tpu-vm-7" in message
    assert f"if it has stopped, delete {workdir / 'run.lock'} and start again" in message
    os.remove(workdir / "run.lock")  # the documented override
    with workdir_lock.acquire(workdir) as lock:
        assert json.loads((workdir / "run.lock").read_text())["token"] == lock.record["token"]
    assert not (workdir / "run.lock").exists()


def test_unreadable_lock_file_blocks_and_says_how_to_override(tmp_path):
    (tmp_path / "run.lock").write_text("")
    with pytest.raises(WorkdirHeldError, match="whose content cannot be read.*delete"):
        workdir_lock.acquire(tmp_path)


def test_release_leaves_another_runs_lock(tmp_path):
    lock = workdir_lock.acquire(tmp_path)
    os.remove(tmp_path / "run.lock")  # overridden by hand, and another run started
    other = workdir_lock.acquire(tmp_path)
    lock.release()
    assert (tmp_path / "run.lock").exists()
    other.release()
    assert not (tmp_path / "run.lock").exists()


def test_lock_is_released_when_training_fails(tmp_path, monkeypatch):
    def broken(config):
        raise RuntimeError("data gone")

    monkeypatch.setattr(train, "_load_training_split", broken)
    with pytest.raises(RuntimeError, match="data gone"):
        train.train_and_evaluate(_config(), tmp_path / "run")
    assert not (tmp_path / "run" / "run.lock").exists()


def test_only_process_0_takes_the_lock(tmp_path, monkeypatch):
    # The other processes of a multi-process run share process 0's hold.
    monkeypatch.setattr(train.jax, "process_index", lambda: 1)
    with train._hold_workdir(str(tmp_path)):
        assert not (tmp_path / "run.lock").exists()
        with workdir_lock.acquire(tmp_path):  # e.g. this run's process 0
            pass


def test_unwritable_workdir_is_a_workdir_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkdirError, match="Cannot write to"):
        workdir_lock.acquire(blocker / "run")
