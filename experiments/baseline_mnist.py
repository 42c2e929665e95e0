"""Unconditional MNIST with R3GAN's objective on the compact DCGAN: a draft of issue 24's baseline.

Launch:

    python -m gan_jax.main --config experiments/baseline_mnist.py --workdir workdirs/baseline_mnist

Model `dcgan_compact` without BatchNorm in G (so the EMA is the whole generator), unconditional;
R3GAN's relativistic pairing loss (gan_jax.losses) with R1 and R2 (γ 1 each), Adam(5e-4, b1 0,
b2 0.99) for both players, batch 64, EMA 0.999 with its ramp.

Not yet a result: not run to its end, nor on several seeds. Probes to 8,000 steps on a shared
2-core AMD EPYC (experiments/results/baseline_recipe_search.md), 2,000-sample quick evaluations:
FID 353.7 / 236.2 / 197.1 / 149.4 / 112.7 and classifier score 5.31 / 6.70 / 7.08 / 7.60 / 7.82
at 1k / 2k / 3k / 5k / 8k steps (16.8 training minutes, shared cores), against the
non-saturating twin's 267.5 at 2k (experiments/dcgan_mnist.py): ahead per step, far from issue
24's target (FID <= 21.6, score >= 9.0 within 15 minutes).
R3GAN's own backbone (`model = "r3gan"`) runs 12x slower per image on this CPU.
"""

from gan_jax.config import get_default_config


def get_config():
    config = get_default_config()
    config.model = "dcgan_compact"
    config.dataset = "mnist"
    config.image_shape = (28, 28, 1)
    config.g_width = 64
    config.d_width = 32
    config.g_batch_norm = False
    config.batch_size = 64
    config.num_steps = 5000
    config.loss = "relativistic"
    config.r1_weight = 1.0
    config.r2_weight = 1.0
    for opt in (config.g_optimizer, config.d_optimizer):
        opt.learning_rate = 5e-4
        opt.b1 = 0.0
        opt.b2 = 0.99
    config.ema_decay = 0.999
    config.steps_per_dispatch = 5
    config.log_every = 100
    config.sample_every = 1000
    config.checkpoint_every = 1000
    config.num_grid_samples = 100
    config.eval_every = 1000
    return config


if __name__ == "__main__":
    from gan_jax.main import run_experiment

    run_experiment(get_config)
