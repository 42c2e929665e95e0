"""The default configuration and its validation.

Every experiment in `experiments/` starts from `get_default_config()` and overrides what it needs;
any key can also be overridden on the command line as `--config.key=value`. Static configuration
only: nothing here is traced by JAX.
"""

from __future__ import annotations

import ml_collections

MODEL_NAMES = ("seed_mlp", "dcgan", "dcgan_compact", "pacgan_mlp", "unrolled_dcgan", "r3gan")
# Datasets of 2-D points (gan_jax.data.mixtures), which only the pacgan_mlp family models.
POINT_DATASETS = ("ring", "grid")
LOSS_NAMES = ("minimax", "non_saturating", "hinge", "wasserstein", "least_squares", "relativistic")
SCHEDULE_NAMES = ("constant", "cosine", "warmup_cosine", "linear")


def optimizer_config(*, learning_rate: float = 2e-4) -> ml_collections.ConfigDict:
    """One player's optimiser: Adam, a learning-rate schedule, optional gradient clipping."""
    return ml_collections.ConfigDict(
        {
            "learning_rate": learning_rate,  # peak learning rate
            "b1": 0.5,
            "b2": 0.999,
            # With config.burn_in_steps > 0: Adam's b2 starts here and rises to b2 along the
            # burn-in's cosine (R3GAN: 0.9 -> 0.99). None (the default): b2 throughout, and the
            # optimiser state keeps the structure of plain Adam's.
            "b2_start": ml_collections.config_dict.placeholder(float),
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
    # dcgan_compact (G 2w, w; D w, 2w), hidden units for pacgan_mlp (G: 4 layers of w; D: 3
    # maxout layers of w units, 5 pieces each), base channels for unrolled_dcgan (G 8w, 4w, 2w,
    # w; D w, 2w, 4w: Unrolled GAN's Stacked MNIST models have G w = 8 and D w = 2 or 4).
    # image_shape is a point's shape, (2,), for pacgan_mlp.
    config.model = "dcgan"
    config.latent_dim = 100
    config.image_shape = (28, 28, 1)
    config.g_width = 64
    config.d_width = 64
    config.g_batch_norm = True  # dcgan_compact only: BatchNorm in the generator
    # r3gan only (gan_jax.r3gan; g_width and d_width unused): channels per stage from the base
    # resolution upward (the discriminator mirrors them); the image side is base * 2^(stages-1),
    # base >= 4: 3 widths for 28x28 (7 -> 14 -> 28), 4 for 32x32 (4 -> 8 -> 16 -> 32).
    config.r3gan_widths = (256, 128, 64)
    config.r3gan_blocks_per_stage = 2  # residual blocks per stage, in each player
    config.r3gan_group_size = 16  # channels per group of the blocks' 3x3 convs; 0: dense
    config.r3gan_expansion = 2  # a block's inner width / its width (inverted bottleneck)
    config.num_classes = 0  # > 0 makes both players class-conditional
    # What the conditional players' labels are: "dataset", the dataset's own labels; "kmeans",
    # num_classes balanced k-means clusters of the training images in pixel space
    # (gan_jax.data.clusters), drawn uniformly at sampling: an unconditional model of the images
    # that reads no label (self-conditioning, Liu et al., CVPR 2020).
    config.label_source = "dataset"
    config.compute_dtype = "float32"  # "bfloat16": bf16 compute, f32 params and optimiser state

    # Objective.
    # One of LOSS_NAMES. "relativistic": R3GAN's pairing loss (gan_jax.losses), which scores
    # the real batch of the last critic update in the generator's update too.
    config.loss = "non_saturating"
    config.n_critic = 1  # discriminator updates per generator update
    # True: simultaneous updates, as PacGAN's 2-D code does: G's gradient comes from D as it was
    # before this step's D update (both players' gradients from the same parameters), and both
    # are applied together; needs n_critic = 1. False: alternating updates, G's gradient through
    # the D its update just made.
    config.simultaneous_updates = False
    # PacGAN packing: D judges packs of this many samples, concatenated on the last axis
    # (gan_jax.packing); batch_size counts packs. 1: no packing.
    config.pack = 1
    config.r1_weight = 0.0  # gamma of the R1 penalty on real data (0: off)
    config.r2_weight = 0.0  # gamma of the R2 penalty on generated data (0: off)
    config.gp_weight = 0.0  # lambda of the WGAN-GP penalty (0: off)
    # R3GAN's burn-in (Huang et al., NeurIPS 2024; train.py in brownvc/R3GAN): over its first
    # burn_in_steps steps the R1 / R2 weights, Adam's b2 (g_optimizer / d_optimizer.b2_start)
    # and the EMA's half-life (ema_half_life_images) move from their start to their final
    # values along a half cosine (gan_jax.schedules), then stay there. 0: no burn-in, every
    # one of them at its final value from the first step.
    config.burn_in_steps = 0
    # The R1 / R2 weights start at this multiple of r1_weight / r2_weight (their final values).
    # R3GAN: 10 (its gamma goes from 10x to 1x its final value in every preset).
    config.penalty_burn_in_factor = 1.0
    # Spectral normalisation (Miyato et al., 2018) of every discriminator layer's kernel; its
    # power-iteration vectors live in d_state["spectral_norm"].
    config.d_spectral_norm = False
    config.sn_power_iterations = 1  # power iterations per discriminator call (SNGAN: 1)

    # Optimisation.
    config.batch_size = 256  # global batch, split across all devices
    config.num_steps = 5000
    config.g_optimizer = optimizer_config()
    config.d_optimizer = optimizer_config()
    config.ema_decay = 0.999  # EMA of the generator params; 0 turns EMA off
    # Ramp the EMA decay up as TF's ExponentialMovingAverage(num_updates) does: the decay of
    # update t (0-based) is min(ema_decay, (1 + t) / (10 + t)), so the random initialisation's
    # weight after N updates is at most 9! N! / (N + 9)! (1e-7 after 20). False: ema_decay from
    # the first update.
    config.ema_rampup = True
    # R3GAN's EMA: a half-life in images seen (real_images_per_step a step), the decay of the
    # update after step t being 0.5 ** (real_images_per_step / half_life(t)), half_life rising
    # from 0 (the EMA follows the live params) to this over burn_in_steps (R3GAN, FFHQ and
    # CIFAR-10 presets: 0.5M and 5M images over a 20M-image burn-in). Keeps an EMA whatever
    # ema_decay says, and replaces ema_decay and ema_rampup. 0: ema_decay as above.
    config.ema_half_life_images = 0.0
    # The EMA generator's BatchNorm statistics at sampling time: "standing statistics" (BigGAN)
    # recomputed from the EMA params over this many training-mode batches of batch_size
    # latents. 0 samples the EMA params with the live generator's running averages.
    config.ema_standing_stats_batches = 8

    # Data.
    config.dataset = "mnist"
    config.data_dir = ""  # TFDS data dir; "" uses TFDS's default
    config.mnist_dir = ""  # a directory of the four MNIST IDX files; "" reads $GAN_JAX_MNIST_DIR
    # Builds Stacked MNIST and the 2-D mixtures' points; fixed, so runs of any seed share the data.
    config.dataset_seed = 0
    # stacked_mnist only: make each real image at each step from 3 MNIST training digits drawn
    # then (the Unrolled-GAN setup of PacGAN's Table 3) instead of reading the fixed 128,000
    # stacked images. The digits are a pure function of (seed, step) like any batch.
    config.stack_on_the_fly = False

    return add_loop_defaults(config)


LABEL_SOURCES = ("dataset", "kmeans")  # config.label_source

# Keys added after runs were saved with configs that lack them, and the value that reproduces
# what those runs did. `setting` reads a key through this table, so an old run's config.json
# still builds its models and sampler.
LATER_KEYS = {
    "d_spectral_norm": False,
    "sn_power_iterations": 1,
    "ema_rampup": False,
    "ema_standing_stats_batches": 8,  # sampling only: old EMA runs get statistics of their own too
    "num_seeds": 1,  # runs saved before stacks existed hold one run
    "pack": 1,
    "stack_on_the_fly": False,
    "r2_weight": 0.0,
    "burn_in_steps": 0,
    "penalty_burn_in_factor": 1.0,
    "ema_half_life_images": 0.0,
    "g_optimizer.b2_start": None,
    "d_optimizer.b2_start": None,
    "simultaneous_updates": False,
    "label_source": "dataset",
    "eval_features": "",
    "inception_weights": "",
}


def setting(config: ml_collections.ConfigDict, key: str):
    """`config[key]`, or for a key in LATER_KEYS that `config` predates, its value there.

    `key` may be dotted ("g_optimizer.b2_start") for a key inside a block."""
    node = config
    for part in key.split("."):
        if part not in node:
            return LATER_KEYS[key]
        node = node[part]
    return node


def digits_per_image(config: ml_collections.ConfigDict) -> int:
    """MNIST digits the loop draws per real image: 3 with stack_on_the_fly (each image is
    stacked at its step), else 1 (the dataset's images are read as they are)."""
    return 3 if setting(config, "stack_on_the_fly") else 1


def real_images_per_step(config: ml_collections.ConfigDict) -> int:
    """Real training images one train step reads (all devices): batch_size packs of `pack`
    images per critic update, n_critic updates. What images/s and images seen count."""
    return int(config.batch_size) * int(setting(config, "pack")) * int(config.n_critic)


class ConfigError(ValueError):
    """A config that cannot describe a run; the message names the key and what it accepts.

    A ValueError, so callers that catch that keep working; the command lines catch this class
    alone and print its message, so genuine bugs (other ValueErrors) keep their tracebacks.
    """


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key}: {message}")


def check_simultaneous_updates(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError unless config.simultaneous_updates is a bool, and n_critic is 1 when
    it is True (one D update, whose parameters before it G's gradient reads)."""
    simultaneous = setting(config, "simultaneous_updates")
    _check(
        isinstance(simultaneous, bool),
        "simultaneous_updates",
        f"must be True or False, got {simultaneous!r}",
    )
    _check(
        not simultaneous or int(config.n_critic) == 1,
        "simultaneous_updates",
        "updates both players together from the same parameters, one discriminator update a "
        f"step: it needs n_critic = 1, got n_critic = {config.n_critic!r}",
    )


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _validate_r3gan(config: ml_collections.ConfigDict, shape: tuple) -> None:
    """The r3gan_* keys, and image sides that its x2 stages reach (gan_jax.r3gan)."""
    widths = tuple(config.r3gan_widths)
    _check(
        len(widths) >= 1 and all(_positive_int(w) for w in widths),
        "r3gan_widths",
        f"must be positive channel counts, one per stage from the base resolution up, got "
        f"{widths!r}",
    )
    for key in ("r3gan_blocks_per_stage", "r3gan_expansion"):
        _check(_positive_int(config[key]), key, f"must be a positive integer, got {config[key]!r}")
    group_size = config.r3gan_group_size
    _check(
        isinstance(group_size, int) and not isinstance(group_size, bool) and group_size >= 0,
        "r3gan_group_size",
        f"must be an integer >= 0 (channels per group; 0: dense), got {group_size!r}",
    )
    inner = [w * config.r3gan_expansion for w in widths]
    _check(
        group_size == 0 or all(c % group_size == 0 for c in inner),
        "r3gan_group_size",
        f"must divide every block's inner width (r3gan_widths x r3gan_expansion = {inner}), "
        f"got {group_size}",
    )
    factor = 2 ** (len(widths) - 1)
    _check(
        all(side % factor == 0 and side // factor >= 4 for side in shape[:2]),
        "image_shape",
        f"r3gan doubles the resolution at each of its {len(widths)} stages (one per entry of "
        f"r3gan_widths) from a base of at least 4x4, so height and width must be base * "
        f"{factor} with base >= 4; got {shape}. E.g. 28 = 7 * 4 with 3 widths, 32 = 4 * 8 "
        f"with 4, 64 = 4 * 16 with 5",
    )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (a ValueError) naming the offending key when `config` cannot describe a
    run."""
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
        len(shape) == 3 or (config.model in ("seed_mlp", "pacgan_mlp") and len(shape) >= 1),
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
    points = config.get("dataset") in POINT_DATASETS
    _check(
        points == (config.model == "pacgan_mlp"),
        "model",
        f"the 2-D point datasets {list(POINT_DATASETS)} need model 'pacgan_mlp', and "
        f"pacgan_mlp models those alone; got model {config.model!r} with dataset "
        f"{config.get('dataset')!r}",
    )
    on_the_fly = setting(config, "stack_on_the_fly")
    _check(
        isinstance(on_the_fly, bool),
        "stack_on_the_fly",
        f"must be True or False, got {on_the_fly!r}",
    )
    _check(
        not on_the_fly or config.get("dataset") == "stacked_mnist",
        "stack_on_the_fly",
        "stacks MNIST digits into Stacked MNIST images; it needs dataset 'stacked_mnist', got "
        f"{config.get('dataset')!r}",
    )
    _check(
        not on_the_fly or int(config.num_classes) == 0,
        "stack_on_the_fly",
        "stacked on the fly, the images have no class labels for a conditional model; set "
        f"num_classes=0 (it is {config.num_classes})",
    )
    _check(
        not on_the_fly or shape == (28, 28, 3),
        "image_shape",
        f"stack_on_the_fly makes 28x28 images of 3 digits: image_shape (28, 28, 3), got {shape}",
    )
    if config.model == "unrolled_dcgan":
        _check(
            shape[:2] == (28, 28),
            "image_shape",
            f"unrolled_dcgan makes 28x28 images (4 -> 7 -> 14 -> 28), got {shape}",
        )
    if config.model == "r3gan":
        _validate_r3gan(config, shape)
    for key in ("latent_dim", "g_width", "d_width", "batch_size", "num_steps"):
        _check(int(config[key]) > 0, key, f"must be a positive integer, got {config[key]!r}")
    _check(int(config.n_critic) >= 1, "n_critic", f"must be at least 1, got {config.n_critic!r}")
    check_simultaneous_updates(config)
    pack = setting(config, "pack")
    _check(
        isinstance(pack, int) and not isinstance(pack, bool) and pack >= 1,
        "pack",
        f"must be an integer >= 1 (samples per discriminator pack; 1: no packing), got {pack!r}",
    )
    _check(
        pack == 1 or int(config.num_classes) == 0,
        "pack",
        f"packing (pack={pack}) is for unconditional models: a pack of samples with m labels "
        f"has no single label for the projection discriminator; set pack=1 or num_classes=0 "
        f"(num_classes is {config.num_classes})",
    )
    _check(int(config.num_classes) >= 0, "num_classes", "must be 0 (unconditional) or positive")
    label_source = setting(config, "label_source")
    _check(
        label_source in LABEL_SOURCES,
        "label_source",
        f"must be one of {', '.join(map(repr, LABEL_SOURCES))}, got {label_source!r}",
    )
    _check(
        label_source != "kmeans" or int(config.num_classes) > 0,
        "label_source",
        "'kmeans' conditions the players on num_classes clusters of the training images; set "
        "config.num_classes to the number of clusters (e.g. 50)",
    )
    _check(
        0.0 <= float(config.ema_decay) < 1.0,
        "ema_decay",
        f"must be in [0, 1) (0 turns EMA off), got {config.ema_decay!r}",
    )
    _check(float(config.r1_weight) >= 0.0, "r1_weight", "must be non-negative")
    _check(float(setting(config, "r2_weight")) >= 0.0, "r2_weight", "must be non-negative")
    _check(float(config.gp_weight) >= 0.0, "gp_weight", "must be non-negative")
    burn_in = setting(config, "burn_in_steps")
    _check(
        isinstance(burn_in, int) and not isinstance(burn_in, bool) and burn_in >= 0,
        "burn_in_steps",
        f"must be an integer >= 0 (0: no burn-in), got {burn_in!r}",
    )
    _check(
        float(setting(config, "penalty_burn_in_factor")) >= 0.0,
        "penalty_burn_in_factor",
        "must be non-negative (the R1 / R2 weights start at this multiple of their final values)",
    )
    _check(
        float(setting(config, "ema_half_life_images")) >= 0.0,
        "ema_half_life_images",
        "must be non-negative (0: the EMA decays by ema_decay)",
    )
    spectral_norm, power_iterations = (
        setting(config, "d_spectral_norm"),
        setting(config, "sn_power_iterations"),
    )
    _check(
        isinstance(spectral_norm, bool),
        "d_spectral_norm",
        f"must be True or False, got {spectral_norm!r}",
    )
    _check(
        int(power_iterations) >= 1,
        "sn_power_iterations",
        f"must be at least 1, got {power_iterations!r}",
    )
    rampup = setting(config, "ema_rampup")
    _check(isinstance(rampup, bool), "ema_rampup", f"must be True or False, got {rampup!r}")
    _check(
        int(setting(config, "ema_standing_stats_batches")) >= 0,
        "ema_standing_stats_batches",
        "must be non-negative (0 samples with the live generator's running statistics)",
    )
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
        b2_start = setting(config, f"{player}.b2_start")
        _check(
            b2_start is None or 0.0 <= float(b2_start) < 1.0,
            f"{player}.b2_start",
            f"must be None (no b2 schedule) or in [0, 1), got {b2_start!r}",
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
    # Independent runs trained together in one process (gan_jax.seeds): run i is the run of
    # seed + i alone. 1: the one run of config.seed.
    config.num_seeds = 1
    config.log_every = 100
    config.sample_every = 500
    config.num_grid_samples = 64  # fixed latents of the sample grid
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    # Quick evaluations every eval_every steps (and at the last step): FID, classifier score,
    # ... of eval_every_num_samples samples against the same cached reference as the final
    # evaluation, logged as quality/* and drawn in quality_curves.png (gan_jax.plots).
    config.eval_every = 0  # 0 turns them off
    config.eval_every_num_samples = 2000
    config.eval_at_end = True  # the full evaluation of the final generator, logged as eval/*
    config.eval_num_samples = 10000  # 0: the dataset's default (26,000 for Stacked MNIST)
    # The feature network of both evaluations: "classifier" (the shipped MNIST CNN), "inception"
    # (FID's Inception-v3), or "" for the dataset's default (the classifier for MNIST and
    # Stacked MNIST, Inception for other image datasets; gan_jax.evaluation.feature_networks).
    # A comma-separated list scores the final evaluation with each: "classifier,inception" adds
    # eval/inception/* and eval/step_<S>_inception.json beside the classifier's.
    config.eval_features = ""
    # pytorch-fid's pt_inception-2015-12-05-6726825d.pth; "" reads it from the evaluation
    # cache, downloading it there once where the machine is online.
    config.inception_weights = ""
    return config


def validate_loop_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (a ValueError) naming the key when the loop's settings cannot run."""
    _check(int(config.steps_per_dispatch) >= 1, "steps_per_dispatch", "must be at least 1")
    num_seeds = config.get("num_seeds", 1)
    _check(
        isinstance(num_seeds, int) and not isinstance(num_seeds, bool) and num_seeds >= 1,
        "num_seeds",
        f"must be a whole number >= 1 (the runs to train together: seeds config.seed, "
        f"config.seed + 1, ...), got {num_seeds!r}",
    )
    for key in ("log_every", "sample_every", "checkpoint_every", "eval_every", "eval_num_samples"):
        _check(int(config[key]) >= 0, key, "must be non-negative (0 turns it off)")
    _check(int(config.keep_checkpoints) >= 1, "keep_checkpoints", "must be at least 1")
    _check(
        int(config.eval_every_num_samples) >= 2,
        "eval_every_num_samples",
        f"must be at least 2 (FID needs a covariance), got {config.eval_every_num_samples!r}",
    )
    _check(int(config.num_grid_samples) >= 1, "num_grid_samples", "must be at least 1")
