"""The command line: config overrides, unknown keys, clear errors instead of tracebacks."""

from __future__ import annotations

import subprocess
import sys

import ml_collections
import pytest

from gan_jax import main
from tests import test_train_support as support


def _cli(*args: str, module: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gan_jax.main"] if module else [sys.executable]
    return subprocess.run(
        [*command, *args],
        cwd=support.REPO,
        env=support.env_for(1),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


CONFIG = ml_collections.ConfigDict(
    {"num_steps": 1, "num_classes": 0, "g_optimizer": {"learning_rate": 1.0, "b1": 0.5}}
)


def test_config_keys_and_overrides():
    assert main.config_keys(CONFIG) == [
        "g_optimizer",
        "g_optimizer.b1",
        "g_optimizer.learning_rate",
        "num_classes",
        "num_steps",
    ]
    argv = ["prog", "--config=x.py", "--config.num_steps=3", "--noconfig.flag", "--workdir=w"]
    assert main.override_keys(argv) == [
        ("num_steps", "--config.num_steps=3"),
        ("flag", "--noconfig.flag"),
    ]


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("--config.num_step=5", "unknown config key 'num_step' (in --config.num_step=5); "
         "did you mean 'num_steps'?"),
        ("--config.g_optimiser.learning_rate=1", "did you mean 'g_optimizer.learning_rate'?"),
        ("--config.g_optimizer.learnin_rate=1", "did you mean 'g_optimizer.learning_rate'?"),
        ("--config.zzz=1", "valid keys: g_optimizer, num_classes, num_steps"),
    ],
)  # fmt: skip
def test_unknown_key_message_names_the_closest_keys(arg, expected):
    assert expected in main.unknown_key_message(CONFIG, ["prog", arg])
    assert main.unknown_key_message(CONFIG, ["prog", "--config.num_steps=5"]) is None


@pytest.mark.parametrize("module", [True, False], ids=["gan_jax.main", "experiment_file"])
def test_cli_unknown_key_fails_fast_without_traceback(tmp_path, module):
    workdir = tmp_path / "run"
    entry = ["--config", "experiments/dcgan_mnist.py"] if module else ["experiments/dcgan_mnist.py"]
    result = _cli(
        *entry,
        f"--workdir={workdir}",
        "--config.num_steps=3",
        "--config.batch_sise=32",
        "--config.d_optimizer.learning_rat=1e-3",
        module=module,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "unknown config key 'batch_sise' (in --config.batch_sise=32); did you mean " in (
        result.stderr
    )
    assert "'batch_size'" in result.stderr
    assert "did you mean 'd_optimizer.learning_rate'" in result.stderr
    assert not workdir.exists()


def test_cli_requires_workdir():
    result = _cli("--config", "experiments/dcgan_mnist.py")
    assert result.returncode == 1
    assert "--workdir is required" in result.stderr


def test_cli_unwritable_workdir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = _cli("--config", "experiments/seed_mlp_mnist.py", f"--workdir={blocker}/run")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # The workdir lock, taken before anything else is written, is the first to find out.
    assert f"error: Cannot write to {blocker}/run: Not a directory" in result.stderr
