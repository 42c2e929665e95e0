"""The default configuration and its validation.

Every experiment in `experiments/` starts from `get_default_config()` and overrides what it needs;
any key can also be overridden on the command line as `--config.key=value`. Static configuration
only: nothing here is traced by JAX.
"""

from __future__ import annotations

import ml_collections

MODEL_NAMES = ("seed_mlp", "dcgan")
LOSS_NAMES = ("minimax", "non_saturating", "hinge", "wasserstein", "least_squares")
SCHEDULE_NAMES = ("constant", "cosine", "warmup_cosine", "linear")


def optimizer_config(*, learning_rate: float = 2e-4) -> ml_collections.ConfigDict:
    """One player's optimiser: Adam, a learning-rate schedule, optional gradient clipping."""
    return ml_collections.ConfigDict(
        {
            "learning_rate": learning_rate,  # peak learning rate
            "b1": 0.5,
            "b2": 0.999,
            "eps": 1e-8,
            "schedule": "constant",  # one of SCHEDULE_NAMES
            "warmup_steps": 0,  # for warmup_cosine
            "grad_clip_norm": 0.0,  # clip by global norm; 0 turns clipping off
        }
    )


def get_default_config() -> ml_collections.ConfigDict:
    """The DCGAN on MNIST, non-saturating loss: the project's default run."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Model: family, sizes, image shape (H, W, C). Widths are the family's base width:
    # hidden units for seed_mlp, base channels for dcgan (G uses 4w, 2w, w; D uses w, 2w).
    config.model = "dcgan"
    config.latent_dim = 100
    config.image_shape = (28, 28, 1)
    config.g_width = 64
    config.d_width = 64
    config.num_classes = 0  # > 0 makes both players class-conditional
    config.compute_dtype = "float32"  # "bfloat16": bf16 compute, f32 params and optimiser state

    # Objective.
    config.loss = "non_saturating"  # one of LOSS_NAMES
    config.n_critic = 1  # discriminator updates per generator update
    config.r1_weight = 0.0  # gamma of the R1 penalty on real data (0: off)
    config.gp_weight = 0.0  # lambda of the WGAN-GP penalty (0: off)

    # Optimisation.
    config.batch_size = 256  # global batch, split across all devices
    config.num_steps = 5000
    config.g_optimizer = optimizer_config()
    config.d_optimizer = optimizer_config()
    config.ema_decay = 0.999  # EMA of the generator params; 0 turns EMA off

    # Data.
    config.dataset = "mnist"
    config.data_dir = ""  # TFDS data dir; "" uses TFDS's default

    return config
