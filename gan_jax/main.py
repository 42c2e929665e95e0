"""Command line: `python -m gan_jax.main --config experiments/<name>.py --workdir <dir>`.

Flags only; the work is `gan_jax.train.train_and_evaluate`. Any config key can be overridden as
`--config.key=value` (e.g. `--config.num_steps=200 --config.g_optimizer.learning_rate=1e-4`).
Rerunning the same command resumes from the workdir's latest checkpoint.

A mistake on the command line stops before anything runs, with one line `error: ...` on stderr
and exit status 1, never a traceback: an unknown flag or config key (naming the closest valid
keys), a value of the wrong type, a config file that is missing or does not load, a missing
--config or --workdir, a config that does not validate (gan_jax.config.ConfigError). So do the
faults of input found later that the user can fix (see `_run`); anything else is a bug and keeps
its traceback.

`--workdir` may be a bucket (`gs://bucket/run`): checkpoints are written there directly, logs and
images are copied there (see gan_jax.train).

Multi-host (a TPU pod slice, or several GPU hosts): run the same command on every host. On
Cloud TPU, `jax.distributed.initialize()` finds its peers by itself: pass `--distributed=on` on
TPU VMs (what experiments/tpu_vm.sh does; `auto` only detects slices that list their workers in
$TPU_WORKER_HOSTNAMES, as on GKE). Elsewhere pass --coordinator_address, --num_processes and
--process_id (and `--cpu_collectives=gloo` for CPU processes); `auto` then initialises.
"""

from __future__ import annotations

import difflib
import logging as std_logging
import os
import re
import runpy
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from gan_jax import config as config_lib

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (or gs:// URL) for checkpoints, logs and samples."
)
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' does when --coordinator_address is given or "
    "$TPU_WORKER_HOSTNAMES lists several workers (GKE); pass 'on' on Cloud TPU VM slices.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives", None, "CPU collectives for multi-process CPU runs, e.g. 'gloo'."
)

CONFIG_FLAG = "config"


# ----------------------------------------------------------------------------------------------
# Unknown config keys.


def config_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) config, e.g. `num_steps`, `g_optimizer.learning_rate`."""
    keys = []
    for name, value in config.items():
        keys.append(prefix + name)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(config_keys(value, f"{prefix}{name}."))
    return keys


def override_keys(argv: Sequence[str], flag: str = CONFIG_FLAG) -> list[tuple[str, str]]:
    """(key, argument) of each `--config.key=value` (or `--noconfig.key`) argument."""
    found = []
    for arg in argv:
        match = re.match(rf"^-{{1,2}}(?:no)?{flag}\.([^=]+)", arg)
        if match:
            found.append((match.group(1), arg))
    return found


def closest_keys(key: str, keys: Sequence[str], n: int = 3) -> list[str]:
    """Up to n valid keys most like `key`: by the whole dotted key, then by its last part."""
    close = difflib.get_close_matches(key, keys, n=n, cutoff=0.75)
    if not close:  # e.g. a misspelt leaf under a misspelt parent
        by_leaf: dict[str, list[str]] = {}
        for k in keys:
            by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
        for leaf in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_leaf), n, 0.75):
            close.extend(by_leaf[leaf])
    return close[:n]


def unknown_key_message(config: ml_collections.ConfigDict, argv: Sequence[str]) -> str | None:
    """What is wrong with the `--config.<key>` overrides naming no key of `config`, or None."""
    keys = config_keys(config)
    problems = []
    for key, arg in override_keys(argv):
        if key in keys:
            continue
        close = closest_keys(key, keys)
        hint = (
            f"did you mean {' or '.join(repr(k) for k in close)}?"
            if close
            else f"valid keys: {', '.join(k for k in keys if '.' not in k)}"
        )
        problems.append(f"unknown config key {key!r} (in {arg}); {hint}")
    return "\n".join(problems) or None


def fail(message: str) -> NoReturn:
    """Ends the program with status 1 and `error: <message>` as the one line on stderr."""
    sys.stderr.write(f"error: {message}\n")
    sys.exit(1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def config_file_spec(argv: Sequence[str], flag: str = CONFIG_FLAG) -> str | None:
    """The `<file>[:arg]` of `--config <file>[:arg]` (or `--config=...`) in argv; None if absent."""
    for i, arg in enumerate(argv):
        match = re.match(rf"^-{{1,2}}{flag}(=(.*))?$", arg)
        if match:
            return match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else "")
    return None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """The config `--config <file>[:arg]` names, loaded as ml_collections does (the file's
    `get_config(arg)`); exits with one line naming the file when it cannot be loaded."""
    path, *args = spec.split(":", 1)
    if not path:
        fail("--config needs a file, e.g. --config experiments/dcgan_mnist.py")
    if not os.path.isfile(path):
        fail(f"--config {path}: no such file (relative paths start at {os.getcwd()})")
    try:
        get_config = runpy.run_path(path).get("get_config")
        if get_config is None:
            fail(f"--config {path} defines no get_config(): an experiment file must")
        config = get_config(*args)
    except Exception as e:  # the user's file: any failure is theirs to see, on one line
        fail(f"--config {path} does not load: {type(e).__name__}: {_one_line(str(e))}")
    if not isinstance(config, ml_collections.ConfigDict):
        fail(f"--config {path}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def exit_on_unknown_keys(config: ml_collections.ConfigDict | None, argv: Sequence[str]) -> None:
    """Exits with one line naming every unknown `--config.<key>` and the closest valid keys,
    before absl parses the flags (ml_collections would raise from deep inside its parser)."""
    message = None if config is None else unknown_key_message(config, argv)
    if message:
        fail(message.replace("\n", "; "))


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, then the checks flags cannot make alone; every failure is one line
    on stderr and exit status 1 (absl's own parser adds a hint line, and app.run a usage screen
    for a missing flag).

    Checks, in order: the flags parse (known names, values of the right type); no positional
    arguments; --workdir given; the config validates (gan_jax.config.ConfigError).
    """
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{_one_line(str(e))} (--helpfull lists every flag)")
    if len(rest) > 1:
        fail(f"unexpected arguments {rest[1:]}: flags are written --name=value")
    config = flags.FLAGS[CONFIG_FLAG].value
    if config is None:
        fail("--config is required: an experiment file, e.g. --config experiments/dcgan_mnist.py")
    if not _WORKDIR.value:
        fail("--workdir is required: the directory (or gs:// URL) for this run's files")
    try:
        config_lib.validate_config(config)
        config_lib.validate_loop_config(config)
    except config_lib.ConfigError as e:
        fail(str(e))
    return rest


# ----------------------------------------------------------------------------------------------
# Running.


class _QuietOrbax(std_logging.Filter):
    """Drops Orbax's INFO chatter (dozens of lines per checkpoint); its warnings stay."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        chatty = f"{os.sep}orbax{os.sep}" in record.pathname
        return not chatty or record.levelno >= std_logging.WARNING


def _configure_logging() -> None:
    if logging.get_verbosity() <= logging.INFO:  # -v 1 or more keeps everything
        logging.get_absl_handler().addFilter(_QuietOrbax())


def _multihost_tpu() -> bool:
    # Cloud TPU VMs list every worker of the slice here; one name means a single host.
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def maybe_initialize_distributed() -> None:
    """Joins the multi-process run, before anything touches a device."""
    if _CPU_COLLECTIVES.value:
        jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
    wanted = _DISTRIBUTED.value == "on" or (
        _DISTRIBUTED.value == "auto" and (_COORDINATOR.value is not None or _multihost_tpu())
    )
    if not wanted:
        return
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
    logging.info(
        "process %d of %d; %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _run(config: ml_collections.ConfigDict) -> None:
    _configure_logging()
    maybe_initialize_distributed()
    # After distributed init: these touch devices.
    from gan_jax.errors import user_errors
    from gan_jax.train import train_and_evaluate

    try:
        train_and_evaluate(config, _WORKDIR.value)
    except user_errors() as e:
        # Bad input or a diverged run, not a bug: the message says it all.
        fail(str(e))


def main(argv: list[str]) -> None:
    del argv  # parse_flags admits no positional arguments
    _run(flags.FLAGS[CONFIG_FLAG].value)


def run_experiment(get_config: Callable[[], ml_collections.ConfigDict]) -> None:
    """Entry point of an experiment file run directly: `python experiments/<name>.py --workdir`.

    The file's own config is the default; `--config.key=value` overrides still apply.
    """
    config = get_config()
    exit_on_unknown_keys(config, sys.argv)  # DEFINE_config_dict applies the overrides at once
    config_flags.DEFINE_config_dict(CONFIG_FLAG, config, "The experiment's config.")
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    config_flags.DEFINE_config_file(
        CONFIG_FLAG,
        None,
        "Experiment config file, e.g. experiments/dcgan_mnist.py.",
        lock_config=True,
    )
    # Loaded here first, so a file that does not load is one clear line, and so unknown keys are
    # named before absl parses the overrides.
    _spec = config_file_spec(sys.argv)
    exit_on_unknown_keys(None if _spec is None else load_config_file(_spec), sys.argv)
    app.run(main, flags_parser=parse_flags)
