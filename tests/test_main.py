"""The command lines (`python -m gan_jax.main`, `python experiments/X.py`, `python -m
gan_jax.evaluate`): config overrides, unknown keys, and one clear line instead of a traceback for
every configuration or command-line error."""

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


def _assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    """Failed, with exactly one line on stderr that holds every `expected` and no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]


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
    _assert_one_line_error(
        result,
        "unknown config key 'batch_sise' (in --config.batch_sise=32); did you mean ",
        "'batch_size'",
        "did you mean 'd_optimizer.learning_rate'",
    )
    assert not workdir.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        # The case the issue names: validation's message, without its traceback.
        (
            ["--config.num_steps=-5"],
            ["error: config.num_steps: must be a positive integer, got -5"],
        ),
        # A value ml_collections cannot convert to the key's type.
        (["--config.num_steps=abc"], ["--config.num_steps=abc", "invalid literal for int()"]),
        (["--not_a_flag=1"], ["Unknown command line flag 'not_a_flag'"]),
        (["--config.dataset=mnits"], ["error: config.dataset: unknown dataset 'mnits'"]),
        # Found before training, not by the evaluation at the end of it.
        (
            ["--config.image_shape=(32, 32, 1)"],
            ["error: config.image_shape is (32, 32, 1)", "scores 28x28 images"],
        ),
    ],
    ids=["invalid_value", "wrong_type", "unknown_flag", "unknown_dataset", "unscorable_shape"],
)
def test_cli_config_errors_are_one_line(tmp_path, args, expected):
    workdir = tmp_path / "run"
    result = _cli("--config", "experiments/seed_mlp_mnist.py", f"--workdir={workdir}", *args)
    _assert_one_line_error(result, *expected)
    assert not workdir.exists()


def test_experiment_file_config_errors_are_one_line(tmp_path):
    # `python experiments/X.py` parses with the file's own config: the same checks apply.
    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", "--config.d_optimizer.learning_rate=0"]
    result = _cli("experiments/seed_mlp_mnist.py", *args, module=False)
    _assert_one_line_error(result, "error: config.d_optimizer.learning_rate: must be positive")
    assert not workdir.exists()


def test_cli_requires_workdir_and_config(tmp_path):
    _assert_one_line_error(
        _cli("experiments/dcgan_mnist.py", module=False), "error: --workdir is required"
    )
    _assert_one_line_error(
        _cli(f"--workdir={tmp_path}/run"), "error: --config is required", "experiments/"
    )


def test_cli_config_file_that_does_not_load(tmp_path):
    missing = tmp_path / "no_such_experiment.py"
    _assert_one_line_error(
        _cli("--config", str(missing), f"--workdir={tmp_path}/run"),
        f"error: --config {missing}: no such file",
    )
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    _assert_one_line_error(
        _cli(f"--config={broken}", f"--workdir={tmp_path}/run"),
        f"error: --config {broken} does not load: SyntaxError",
    )
    assert not (tmp_path / "run").exists()


def test_cli_unwritable_workdir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = _cli("--config", "experiments/seed_mlp_mnist.py", f"--workdir={blocker}/run")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # The workdir lock, taken before anything else is written, is the first to find out.
    assert f"error: Cannot write to {blocker}/run: Not a directory" in result.stderr


def test_evaluate_without_a_run_is_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir()  # a directory, but no run in it
    result = subprocess.run(
        [sys.executable, "-m", "gan_jax.evaluate", f"--workdir={tmp_path}"],
        cwd=support.REPO,
        env=support.env_for(1),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    _assert_one_line_error(result, f"error: No checkpoints in {tmp_path}/checkpoints")


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "the following arguments are required: --workdir"),
        (["--workdir=w", "--num_samples=1"], "--num_samples/--num-samples: 1 samples: at least 2"),
        (["--workdir=w", "--step=last"], "argument --step: invalid int value: 'last'"),
        (["--workdir=w", "--steps=3"], "unrecognized arguments: --steps=3"),
    ],
    ids=["no_workdir", "too_few_samples", "step_not_a_number", "unknown_option"],
)
def test_evaluate_argument_errors_are_one_line(capsys, args, expected):
    from gan_jax import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m gan_jax.evaluate: error: ")
    assert expected in err
