"""The TPU launch pieces: requirements-tpu.txt in sync with pyproject, experiments/tpu_vm.sh."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.test_train_support import REPO

SCRIPT = REPO / "experiments" / "tpu_vm.sh"


def _requirements(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def test_requirements_tpu_has_every_project_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _requirements(project["dependencies"])
    tpu = _requirements((REPO / "requirements-tpu.txt").read_text().splitlines())
    for name, requirement in wanted.items():
        assert name in tpu, f"requirements-tpu.txt lacks {requirement}"
        assert tpu[name].specifier == requirement.specifier, (tpu[name], requirement)
    assert "tpu" in tpu["jax"].extras
    assert "gcsfs" in tpu  # gs:// workdirs


def test_tpu_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _run_script(tmp_path, *args, **env):
    """Runs tpu_vm.sh with a fake gcloud on PATH that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gcloud"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "$GCLOUD_CALLS"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    environment = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GCLOUD_CALLS": str(calls),
        **env,
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment
    )
    return result, (calls.read_text().splitlines() if calls.exists() else [])


def test_tpu_script_creates_installs_and_launches_on_all_workers(tmp_path):
    result, calls = _run_script(
        tmp_path,
        "all",
        BUCKET="my-bucket",
        RUN="run-1",
        SPOT="1",
        ACCELERATOR_TYPE="v4-32",
        SOURCE="https://example.com/gan_jax.git",
        EXTRA_FLAGS="--config.num_steps=20000",
    )
    assert result.returncode == 0, result.stderr
    create = calls[0]
    assert create.startswith("compute tpus tpu-vm create gan-jax --zone=us-central2-b")
    assert "--accelerator-type=v4-32" in create and "--spot" in create
    assert "--version=tpu-ubuntu2204-base" in create
    remote = [c for c in calls if c.startswith("compute tpus tpu-vm ssh")]
    assert all("--worker=all" in c for c in remote)
    install = "\n".join(remote[:-1])
    assert "git clone --quiet https://example.com/gan_jax.git" in install
    assert "pip install --quiet -r $HOME/gan_jax/requirements-tpu.txt" in install
    assert "pip install --quiet --no-deps -e $HOME/gan_jax" in install
    launch = remote[-1]
    assert (
        "python -m gan_jax.main --config experiments/dcgan_mnist.py "
        "--workdir gs://my-bucket/run-1 --distributed=on --config.num_steps=20000"
        in " ".join(launch.split())
    )


def test_tpu_script_needs_a_bucket_to_launch(tmp_path):
    result, calls = _run_script(tmp_path, "launch")
    assert result.returncode == 1 and "set BUCKET" in result.stderr
    assert calls == []
    result, _ = _run_script(tmp_path)
    assert result.returncode == 2 and "Resuming:" in result.stdout
