"""Command line: `python -m gan_jax.main --config experiments/<name>.py --workdir <dir>`.

Flags only; the work is `gan_jax.train.train_and_evaluate`. Any config key can be overridden as
`--config.key=value` (e.g. `--config.num_steps=200 --config.g_optimizer.learning_rate=1e-4`).

Multi-host (a TPU pod slice, or several GPU hosts): run the same command on every host. On
Cloud TPU, `jax.distributed.initialize()` finds its peers by itself (`--distributed=auto` detects
a multi-host slice); elsewhere pass --coordinator_address, --num_processes and --process_id.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' does when coordinator flags are given or on a "
    "multi-host Cloud TPU slice.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives", None, "CPU collectives for multi-process CPU runs, e.g. 'gloo'."
)


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
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required: the directory for this run's files")
    maybe_initialize_distributed()
    from gan_jax.train import train_and_evaluate  # after distributed init: it touches devices

    train_and_evaluate(config, _WORKDIR.value)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _run(_CONFIG.value)


def run_experiment(get_config: Callable[[], ml_collections.ConfigDict]) -> None:
    """Entry point of an experiment file run directly: `python experiments/<name>.py --workdir`.

    The file's own config is the default; `--config.key=value` overrides still apply.
    """
    config_flags.DEFINE_config_dict("config", get_config(), "The experiment's config.")

    def experiment_main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        _run(flags.FLAGS.config)

    app.run(experiment_main)


if __name__ == "__main__":
    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "Experiment config file, e.g. experiments/dcgan_mnist.py.", lock_config=True
    )
    flags.mark_flags_as_required(["config"])
    app.run(main)
