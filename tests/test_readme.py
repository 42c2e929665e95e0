"""The README's own commands and code, run as written: a README command that does not run fails CI.

The shell commands are the training and evaluation commands of every ```bash block of README.md
(`python -m gan_jax.main ...`, `python experiments/<config>.py ...`, `python -m gan_jax.evaluate
...`); installation (venv, pip) is what CI itself does, and is skipped. Each runs in order, as
written, from the root of a copy of the repository, so relative paths (`--workdir workdirs/...`)
mean what they mean to a user in a fresh clone; the only change is config overrides appended to
shorten the run (fewer steps, fewer evaluation samples). Nothing here names an experiment: the
commands are whatever the README says.

Data: the commands use the default TFDS data directory and download cache, as a user's would
(`~/tensorflow_datasets`, `~/.cache/gan_jax`; other tests prepare MNIST there too), so MNIST is
prepared at most once per machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

NUM_STEPS = 10
# Appended to each training command: the same run, shortened. Every experiment config has these
# keys (gan_jax.config.add_loop_defaults). A checkpoint and a sample grid fall on the way, where
# the README's first run crashed once (a relative workdir reached Orbax unresolved).
TRAIN_SHORTENING = (
    f"--config.num_steps={NUM_STEPS}",
    "--config.steps_per_dispatch=5",
    "--config.log_every=5",
    "--config.sample_every=5",
    "--config.checkpoint_every=5",
    "--config.eval_num_samples=500",
)
EVALUATE_SHORTENING = ("--num_samples", "500")
# Appended to the PacGAN table command: two rows of the ring, two trials, two short budgets.
# A clone holds the committed 10-trial rows in experiments/results/pacgan; a short table of its
# own goes elsewhere (pacgan_tables refuses to mix trial counts in one row).
TABLES_SHORTENING = (
    "--mixtures=ring",
    "--packs=1,2",
    "--trials=2",
    "--budgets=5,10",
    "--out=workdirs/short_tables",
    "--workdirs=workdirs/short_tables",
)
# Table 3 (Stacked MNIST): one row of one trial to 5 iterations, still scored on 25,600 samples.
TABLE3_SHORTENING = (
    "--variants=half",
    "--packs=2",
    "--trials=1",
    "--budgets=5",
    "--out=workdirs/short_tables3",
    "--workdirs=workdirs/short_tables3",
)


# ----------------------------------------------------------------------------------------------
# Reading the README.


def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the README's ```<language> blocks, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def shell_commands(block: str) -> list[list[str]]:
    """The simple commands of a bash block, as argument lists: `\\`-continued lines joined,
    comments dropped, `&&` and `;` lists split."""
    joined = re.sub(r"\\\n", " ", block)
    commands = []
    for line in joined.splitlines():
        for part in re.split(r"&&|;", line):
            words = shlex.split(part, comments=True)
            if words:
                commands.append(words)
    return commands


def _is_experiment_config(path: str) -> bool:
    return (REPO / path).is_file() and "def get_config(" in (REPO / path).read_text()


def classify(words: list[str]) -> str:
    """'train', 'evaluate', 'tables' (experiments/pacgan_tables.py) or 'skip' (installation and
    other tools); fails on a python command this test does not know how to shorten, so no
    README command goes untested by accident."""
    if words[0] not in ("python", "python3"):
        return "skip"  # `. .venv/bin/activate`, `pip install ...`, `BUCKET=... tpu_vm.sh all`
    args = words[1:]
    if args[:2] in (["-m", "venv"], ["-m", "pip"], ["-m", "pytest"]):
        return "skip"  # installation, and CI's own test command
    if args[:2] == ["-m", "gan_jax.main"]:
        return "train"
    if args[:2] == ["-m", "gan_jax.evaluate"]:
        return "evaluate"
    if args and args[0].startswith("experiments/") and _is_experiment_config(args[0]):
        return "train"
    if args and args[0] == "experiments/pacgan_tables.py":
        return "tables"
    raise AssertionError(f"README runs `{shlex.join(words)}`: teach tests/test_readme.py to run it")


def flag_value(words: list[str], name: str) -> str:
    for i, word in enumerate(words):
        if word == name:
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"`{shlex.join(words)}` has no {name}")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(kind, words) of every training and evaluation command of the README, in order."""
    found = []
    for block in fenced_blocks(README.read_text(), "bash"):
        for words in shell_commands(block):
            kind = classify(words)
            if kind != "skip":
                found.append((kind, words))
    return found


def test_readme_parsing():
    block = (
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && \\\n"
        "  python -m gan_jax.main --config a.py --workdir w  # comment\n"
    )
    commands = shell_commands(block)
    assert commands[0] == ["python3", "-m", "venv", ".venv"]
    assert commands[-1] == ["python", "-m", "gan_jax.main", "--config", "a.py", "--workdir", "w"]
    assert [classify(words) for words in commands] == ["skip", "skip", "skip", "train"]
    assert flag_value(commands[-1], "--workdir") == "w"
    assert flag_value(["x", "--workdir=v"], "--workdir") == "v"
    with pytest.raises(AssertionError, match="teach tests/test_readme.py"):
        classify(["python", "experiments/benchmark.py"])
    # The README itself: a training command first, and an evaluation of a run it trained.
    kinds = [kind for kind, _ in readme_commands()]
    assert kinds[0] == "train" and "evaluate" in kinds


# ----------------------------------------------------------------------------------------------
# Running them.


def copy_of_repository(destination: Path) -> Path:
    """The repository's files (tracked, and untracked but not ignored), without build outputs,
    virtual environments or runs: what a fresh clone holds."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        for name in listed.stdout.decode().split("\0"):
            source = REPO / name
            if name and source.is_file():  # a tracked file deleted in the work tree is skipped
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / name)
    else:  # not a git checkout (e.g. an unpacked archive)
        ignore = shutil.ignore_patterns(".git", ".venv", "workdirs", "__pycache__", "*.egg-info")
        shutil.copytree(REPO, destination, ignore=ignore, dirs_exist_ok=True)
    return destination


def run_as_written(words: list[str], cwd: Path, extra: tuple[str, ...]) -> str:
    """Runs a README command in `cwd` with `extra` appended; returns its stdout and stderr."""
    command = [sys.executable, *words[1:], *extra]
    env = dict(os.environ)
    # The copy's gan_jax, as an editable install in a fresh clone would give
    # (`python experiments/X.py` puts experiments/, not the root, first on the path).
    env["PYTHONPATH"] = str(cwd)
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"README command `{shlex.join(words)}` (+ {' '.join(extra)}) failed with status "
        f"{result.returncode}:\n{output[-4000:]}"
    )
    return output


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    clone = copy_of_repository(tmp_path / "clone")
    for kind, words in readme_commands():
        if kind == "tables":
            table3 = "--table" in words and flag_value(words, "--table") == "3"
            output = run_as_written(
                words, clone, TABLE3_SHORTENING if table3 else TABLES_SHORTENING
            )
            row = "| PacGAN2, gan_jax | 5 |" if table3 else "| PacGAN2, gan_jax | 10 |"
            assert row in output
            if "--update-readme" in words:
                assert row in (clone / "README.md").read_text()
            continue
        workdir = clone / flag_value(words, "--workdir")
        if kind == "train":
            output = run_as_written(words, clone, TRAIN_SHORTENING)
            assert (workdir / "checkpoints" / str(NUM_STEPS)).is_dir()
            assert (workdir / "images" / f"samples_{NUM_STEPS:08d}.png").is_file()
            # The evaluation table at the end of the run (the 2-D mixtures' has no FID).
            assert "FID" in output or "modes covered" in output
        else:
            written = workdir / "eval" / f"step_{NUM_STEPS}.json"
            written.unlink(missing_ok=True)  # the training run's final evaluation wrote one
            output = run_as_written(words, clone, EVALUATE_SHORTENING)
            assert "FID" in output
            assert written.is_file()


# ----------------------------------------------------------------------------------------------
# The "Use train_step in your own loop" snippet.


def own_loop_snippet() -> str:
    section = README.read_text().split("## Use `train_step` in your own loop", 1)[1]
    return fenced_blocks(section, "python")[0]


@pytest.mark.slow  # compiles the DCGAN step twice (jit and pmap): about 25 s of CPU
def test_readme_own_loop_snippet_runs_as_written(capsys):
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(own_loop_snippet(), "README.md (own loop)", "exec"), namespace)
    # Two jitted steps, then the same two batches again on every device under pmap.
    assert int(namespace["state"].step) == 2
    p_steps = np.asarray(namespace["p_state"].step)
    assert p_steps.shape == (jax.local_device_count(),) and (p_steps == 4).all()
    metrics = {name: np.asarray(value) for name, value in namespace["metrics"].items()}
    assert all(np.isfinite(value).all() for value in metrics.values())
    printed = capsys.readouterr().out
    assert "'d_loss':" in printed and "'g_loss':" in printed
