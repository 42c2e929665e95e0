"""PacGAN's 2-D mode-collapse benchmarks (Lin et al., NeurIPS 2018, Table 1): ring and grid.

Launch (the ring; `:grid` for the grid; `--config.pack=m` packs m samples per discriminator
input; `--config.num_seeds=10` trains PacGAN's 10 trials together in one process):

    python -m gan_jax.main --config experiments/pacgan_2d.py:ring --workdir workdirs/pacgan_ring

Data: 100,000 points fixed by config.dataset_seed, from 8 Gaussians on the unit circle (std
0.01) or 25 at {-4, -2, 0, 2, 4}^2 (std 0.05) (gan_jax.data.mixtures). Models, from PacGAN's
code (fjxmlzn/PacGAN, synthetic_data_experiments): G is z (2, N(0, I)) -> 4 x [Dense 400, BN,
ReLU] -> Dense 2; D is 3 maxout layers of 200 units x 5 pieces -> Dense 1, its first layer
taking 2m inputs with packs of m; every kernel from N(0, 0.02^2), biases 0. Non-saturating loss,
Adam lr 1e-4, b1 0.8 (b2 0.999) for both players, batch 100 packs, 400,000 iterations (400
epochs of 1,000), no EMA. Evaluation on 2,500 samples: high quality within 3 std of the
nearest mode, modes covered, reverse KL of the high-quality histogram to uniform
(gan_jax.evaluation.mixtures). The sample scatter plot goes to images/samples_<step>.png.

Differences from PacGAN's code. Its players update simultaneously (both gradients from one
forward pass of the same parameters, applied together); gan_jax alternates (G trains through
the D its update just made), and Table 1's committed rows alternate:
`--config.simultaneous_updates=True` is PacGAN's order (gan_jax.step), not used for them.
The fake packs come from one generator call over m * B latents (G's BatchNorm sees 100 m
samples; PacGAN calls G m times with batch 100), and every trial shares one 100,000-point
dataset (config.dataset_seed) where PacGAN draws one per trial.

The reproduced table (all four rows, both mixtures, 10 trials each, at the budgets that fit
a CPU) comes from `python experiments/pacgan_tables.py`; see its docstring and the README.
"""

from gan_jax.config import get_default_config

# The results table of experiments/results.py is for the image experiments; this one's table
# is PacGAN's Table 1, made by:
RESULTS_ELSEWHERE = "python experiments/pacgan_tables.py"


def get_config(mixture: str = "ring"):
    if mixture not in ("ring", "grid"):
        raise ValueError(f"pacgan_2d takes ':ring' or ':grid', got {mixture!r}")
    config = get_default_config()
    config.model = "pacgan_mlp"
    config.dataset = mixture
    config.image_shape = (2,)
    config.latent_dim = 2
    config.g_width = 400
    config.d_width = 200
    config.loss = "non_saturating"
    config.pack = 1
    for player in (config.g_optimizer, config.d_optimizer):
        player.learning_rate = 1e-4
        player.b1 = 0.8
        player.b2 = 0.999
    config.batch_size = 100
    config.num_steps = 400_000
    config.ema_decay = 0.0
    config.eval_num_samples = 2500
    config.num_grid_samples = 2500  # the scatter plot's points (per run)
    config.steps_per_dispatch = 500
    config.log_every = 1000
    config.sample_every = 50_000
    config.checkpoint_every = 10_000
    return config


if __name__ == "__main__":
    from gan_jax.main import run_experiment

    run_experiment(get_config)
