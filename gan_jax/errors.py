"""The errors a user can fix, as opposed to bugs: the command lines print these as one line.

Each is raised with a message that names what was wrong and how to fix it; anything else keeps
its traceback, since it is a bug to report.
"""

from __future__ import annotations


def user_errors() -> tuple[type[Exception], ...]:
    """The exception classes `gan_jax.main` and `gan_jax.evaluate` print as one line.

    Imported here rather than at the top: the command lines call this after JAX has been set up
    (distributed initialisation must come first).
    """
    from gan_jax import checkpointing, data  # noqa: PLC0415
    from gan_jax.config import ConfigError  # noqa: PLC0415
    from gan_jax.evaluation import inception, reference, torch_checkpoint  # noqa: PLC0415
    from gan_jax.train import NonFiniteMetricError  # noqa: PLC0415

    return (
        ConfigError,  # a config value, or what only the devices or the data can tell
        checkpointing.WorkdirError,  # not writable, too full, or held by another run
        checkpointing.CheckpointMismatchError,  # another model's checkpoint, or none readable
        checkpointing.NoCheckpointError,  # evaluate: no checkpoints, or not that step
        NonFiniteMetricError,  # a diverged run: names the metric and the step
        # Data that cannot be had or read: each message names the directory and the fix.
        data.DamagedDatasetError,
        data.ChecksumError,
        data.MnistUnavailableError,
        data.MissingTensorFlowError,
        # Evaluation's files: Inception weights absent or not pytorch-fid's, a stats file.
        inception.WeightsUnavailableError,
        inception.WeightsError,
        torch_checkpoint.TorchCheckpointError,
        reference.StatsFileError,
    )
