"""PacGAN's Stacked-MNIST benchmark in the Unrolled-GAN setup (Lin et al., NeurIPS 2018, Table 3).

Launch (D = 1/2 G; `:quarter` for D = 1/4 G; `--config.pack=m` packs m images per
discriminator input; `--config.num_seeds=S` trains S trials together in one process):

    python -m gan_jax.main --config experiments/pacgan_stacked_mnist.py:half \
        --workdir workdirs/pacgan_stacked_half

The setup of Unrolled GAN's Stacked-MNIST experiment (Metz et al., 2017) as PacGAN's code runs
it (fjxmlzn/PacGAN, stacked_MNIST_experiments/unrolled_GAN_experiment/D=0.5G and D=0.25G):
G is z (256, N(0, I)) -> Dense 4x4x64 -> BN -> ReLU -> ConvT 3x3 s2 to 7x7x32, 14x14x16,
28x28x8, each BN + ReLU -> Conv 3x3 -> 3 channels, tanh (gan_jax.models.UnrolledGANGenerator,
g_width 8). D is Conv 3x3 s2 with BN and LeakyReLU(0.3), channels 2-4-8 ("D = 1/4 G",
d_width 2) or 4-8-16 ("D = 1/2 G", d_width 4), then Dense 1; packs widen its first layer to
3m channels. Non-saturating loss; Adam, D 2e-4, G 1e-4, b1 0.5, b2 0.99; batch 128 packs;
500,000 iterations; no EMA. Every real image is made at its step from 3 MNIST training digits
(config.stack_on_the_fly), in [-1, 1]. Evaluation on 25,600 samples: modes covered of 1,000
(each channel classified by the shipped MNIST network) and KL of the mode histogram to
uniform, beside FID and classifier score against the fixed Stacked-MNIST test set.

Where this differs from PacGAN's code, and why:
- Digits are drawn without replacement within an epoch of MNIST (gan_jax.data.sampling), theirs
  uniformly with replacement: the same distribution of images, a pure function of (seed, step).
- Samples for evaluation use the generator's BatchNorm running averages (momentum 0.9); their
  sampler normalises each batch of 128 by its own statistics.
- The m images of a fake pack come from one generator call over all m * 128 latents (one
  BatchNorm batch); their code calls the generator once per pack member.

The reproduced table (m = 1 and 2 at D = 1/2 G and D = 1/4 G, trials together in one process,
at the budgets a CPU allows) comes from `python experiments/pacgan_tables.py --table 3`; see its
docstring and the README.

Measured (D = 1/2 G, 3 trials each, 10,000 iterations, AMD EPYC 2 cores; mean ± s.e.):
m = 1 599.0 ± 149.8 modes, KL 2.07 ± 0.56, FID 1975 ± 187, score 21.3 ± 9.6 (25.5 min);
m = 2 727.7 ± 8.4 modes, KL 1.52 ± 0.01, FID 1996 ± 90, score 17.7 ± 3.8 (35.2 min).
m = 2 with the hinge loss: 726.3 ± 145.0 modes, KL 1.41 ± 0.38, FID 2058 ± 230, score 22.2 ±
10.7 (41.5 min, partly sharing the cores).
PacGAN's (500,000 iterations, 50 trials): 487.7 ± 34.6 / 2.24 ± 0.15 and 840.7 ± 15.9 / 1.00 ± 0.05.
D = 1/4 G, same budget: m = 1 14.3 ± 3.0 modes, KL 6.22 ± 0.28, FID 2928 ± 198, score 1.4 ± 0.2
(32.6 min); m = 2 170.0 ± 165.0 modes, KL 5.38 ± 1.51, FID 2806 ± 282, score 3.3 ± 2.2 (49.0
min; per trial 2, 500, 8). PacGAN's: 78.5 ± 17.6 / 5.21 ± 0.19 and 484.5 ± 33.0 / 2.61 ± 0.22.
"""

from gan_jax.config import get_default_config

# Not in experiments/results.py's table: this benchmark's table is PacGAN's Table 3, made by:
RESULTS_ELSEWHERE = "python experiments/pacgan_tables.py --table 3"

D_WIDTHS = {"quarter": 2, "half": 4}  # D's first-layer channels: D = 1/4 G, D = 1/2 G


def get_config(d_size: str = "half"):
    if d_size not in D_WIDTHS:
        raise ValueError(f"pacgan_stacked_mnist takes ':half' or ':quarter', got {d_size!r}")
    config = get_default_config()
    config.model = "unrolled_dcgan"
    config.dataset = "stacked_mnist"
    config.stack_on_the_fly = True
    config.image_shape = (28, 28, 3)
    config.latent_dim = 256
    config.g_width = 8
    config.d_width = D_WIDTHS[d_size]
    config.loss = "non_saturating"
    config.pack = 1
    config.d_optimizer.learning_rate = 2e-4
    config.g_optimizer.learning_rate = 1e-4
    for player in (config.g_optimizer, config.d_optimizer):
        player.b1 = 0.5
        player.b2 = 0.99
    config.batch_size = 128
    config.num_steps = 500_000
    config.ema_decay = 0.0
    config.eval_num_samples = 25_600
    # On CPU convolution steps are unrolled in a dispatch (gan_jax/fused.py): few per dispatch
    # keep compilation short.
    config.steps_per_dispatch = 10
    config.log_every = 500
    config.sample_every = 10_000
    config.checkpoint_every = 5_000
    return config


if __name__ == "__main__":
    from gan_jax.main import run_experiment

    run_experiment(get_config)
