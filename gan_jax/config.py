"""The default configuration and its validation.

Every experiment in `experiments/` starts from `get_default_config()` and overrides what it needs;
any key can also be overridden on the command line as `--config.key=value`. Static configuration
only: nothing here is traced by JAX.
"""

from __future__ import annotations

import ml_collections

MODEL_NAMES = ("seed_mlp", "dcgan", "dcgan_compact")
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
    # hidden units for seed_mlp, base channels for dcgan (G uses 4w, 2w, w; D uses w, 2w) and
    # dcgan_compact (G 2w, w; D w, 2w).
    config.model = "dcgan"
    config.latent_dim = 100
    config.image_shape = (28, 28, 1)
    config.g_width = 64
    config.d_width = 64
    config.g_batch_norm = True  # dcgan_compact only: BatchNorm in the generator
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
    config.mnist_dir = ""  # a directory of the four MNIST IDX files; "" reads $GAN_JAX_MNIST_DIR
    config.dataset_seed = 0  # builds Stacked MNIST; fixed, so runs of any seed share the data

    return add_loop_defaults(config)


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"config.{key}: {message}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the offending key when `config` cannot describe a run."""
    _check(
        config.model in MODEL_NAMES,
        "model",
        f"unknown model {config.model!r}; choose one of {list(MODEL_NAMES)}",
    )
    _check(
        config.loss in LOSS_NAMES,
        "loss",
        f"unknown loss {config.loss!r}; choose one of {list(LOSS_NAMES)}",
    )
    shape = tuple(config.image_shape)
    _check(
        len(shape) == 3 or (config.model == "seed_mlp" and len(shape) >= 1),
        "image_shape",
        f"expected (height, width, channels), got {shape}",
    )
    _check(all(int(d) > 0 for d in shape), "image_shape", f"sizes must be positive, got {shape}")
    if config.model in ("dcgan", "dcgan_compact"):
        _check(
            shape[0] % 4 == 0 and shape[1] % 4 == 0,
            "image_shape",
            f"the dcgan upsamples by 4, so height and width must be divisible by 4; got {shape}",
        )
    for key in ("latent_dim", "g_width", "d_width", "batch_size", "num_steps"):
        _check(int(config[key]) > 0, key, f"must be a positive integer, got {config[key]!r}")
    _check(int(config.n_critic) >= 1, "n_critic", f"must be at least 1, got {config.n_critic!r}")
    _check(int(config.num_classes) >= 0, "num_classes", "must be 0 (unconditional) or positive")
    _check(
        0.0 <= float(config.ema_decay) < 1.0,
        "ema_decay",
        f"must be in [0, 1) (0 turns EMA off), got {config.ema_decay!r}",
    )
    _check(float(config.r1_weight) >= 0.0, "r1_weight", "must be non-negative")
    _check(float(config.gp_weight) >= 0.0, "gp_weight", "must be non-negative")
    _check(
        config.compute_dtype in ("float32", "bfloat16"),
        "compute_dtype",
        f"must be 'float32' or 'bfloat16', got {config.compute_dtype!r}",
    )
    for player in ("g_optimizer", "d_optimizer"):
        opt = config[player]
        _check(
            float(opt.learning_rate) > 0.0,
            f"{player}.learning_rate",
            f"must be positive, got {opt.learning_rate!r}",
        )
        _check(
            opt.schedule in SCHEDULE_NAMES,
            f"{player}.schedule",
            f"unknown schedule {opt.schedule!r}; choose one of {list(SCHEDULE_NAMES)}",
        )
        _check(
            0.0 <= float(opt.b1) < 1.0 and 0.0 <= float(opt.b2) < 1.0,
            f"{player}.b1",
            "Adam's b1 and b2 must be in [0, 1)",
        )
        _check(int(opt.warmup_steps) >= 0, f"{player}.warmup_steps", "must be non-negative")
        _check(
            float(opt.grad_clip_norm) >= 0.0,
            f"{player}.grad_clip_norm",
            "must be non-negative (0 turns clipping off)",
        )


def add_loop_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The training loop's keys: dispatch length, intervals (in steps; 0 turns one off)."""
    config.steps_per_dispatch = 50  # fused train steps per host dispatch (lax.scan)
    config.log_every = 100
    config.sample_every = 500
    config.num_grid_samples = 64  # fixed latents of the sample grid
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    config.eval_every = 0  # evaluate with the feature network during training
    config.eval_at_end = True
    config.eval_num_samples = 10000  # 0: the dataset's default (26,000 for Stacked MNIST)
    return config


def validate_loop_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the key when the loop's settings cannot run."""
    _check(int(config.steps_per_dispatch) >= 1, "steps_per_dispatch", "must be at least 1")
    for key in ("log_every", "sample_every", "checkpoint_every", "eval_every", "eval_num_samples"):
        _check(int(config[key]) >= 0, key, "must be non-negative (0 turns it off)")
    _check(int(config.keep_checkpoints) >= 1, "keep_checkpoints", "must be at least 1")
    _check(int(config.num_grid_samples) >= 1, "num_grid_samples", "must be at least 1")
