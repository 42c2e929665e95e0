"""The 2-D mixtures without mode collapse: PacGAN's setup conditioned on k-means clusters.

Launch (the ring; `:grid` for the grid; `--config.num_seeds=10` trains 10 trials together):

    python -m gan_jax.main --config experiments/baseline_2d.py:ring --workdir workdirs/baseline_ring

PacGAN's 2-D benchmark as experiments/pacgan_2d.py sets it up (its generator, maxout
discriminator, Adam 1e-4 b1 0.8, batch 100, non-saturating loss, alternating updates), unpacked,
with both players conditioned on 50 balanced k-means clusters of the 100,000 training points
(`label_source = "kmeans"`, gan_jax.data.clusters) and the cluster drawn uniformly when
sampling: an unconditional model of the points (self-conditioning, Liu et al., CVPR 2020, who
report it on these mixtures). 50 is not the mode count of either mixture (8 and 25): the
clusters cut the modes into pieces and the pieces need not align with them. The generator is
scored through its EMA (decay 0.999, with its ramp; BatchNorm statistics recomputed for the EMA
weights, gan_jax.state), which PacGAN does not use. 20,000 iterations, 5% of PacGAN's 400,000.

Its rows of PacGAN's Table 1 (10 trials, evaluated at each budget on the way):

    python experiments/pacgan_tables.py --trials 10 --packs 1 --budgets 5000,10000,20000 \
        --set label_source=kmeans --set num_classes=50 --set ema_decay=0.999

Measured, 10 trials together (2-core AMD EPYC with AVX-512; the ring's wall time shared the
cores with test runs, so its 44 minutes are an upper bound), mean +- s.e. at 5,000 / 10,000 /
20,000 iterations:
- ring: modes 6.6 / 7.7 / 8.0 +- 0.0, high quality 26.7 / 65.5 / 97.2 +- 0.6 % (per trial 94.8 to
  99.9 %), reverse KL 0.55 / 0.13 / 0.01 +- 0.00: every mode in every trial, PacGAN's HQ (98.2 %
  unpacked, 95.6-97.7 % packed at 400,000) and a KL below any of its rows (0.07 at best).
  Without the EMA the same runs reach 62.8 % HQ and KL 0.06 at 20,000: the clusters fix the
  balance, the EMA the precision (the live generator's samples sit in clumps just outside the
  modes' 3-std discs, std 0.01, and move between steps).
- grid: modes 12.0 / 12.1 / 15.8 +- 0.8 (of 25; per trial 12 to 19), high quality 17.6 / 26.3 /
  45.7 +- 3.1 %, reverse KL 1.15 / 1.04 / 0.58 +- 0.05 (52 minutes cumulative, with the runs
  paused for test timings and sharing the cores: not a measurement of speed). Issue 24's goal
  (every mode, 95 % HQ, KL 0.05 by 20,000) is missed by far, but not by collapse: the scatter
  plot at 20,000 shows a tight clump of samples beside nearly every one of the 25 modes in every
  trial, many just outside its 3-std disc (0.15) and the outer ones pushed outwards, so a mode
  counts as covered only once its clump moves in. Not tried: a larger learning rate or a
  decaying one at the end, a longer EMA, R3GAN's loss with R1 + R2 on these players.
"""

import runpy
from pathlib import Path

# Its table is PacGAN's Table 1, made by the command above.
RESULTS_ELSEWHERE = "python experiments/pacgan_tables.py"


def get_config(mixture: str = "ring"):
    config = runpy.run_path(str(Path(__file__).with_name("pacgan_2d.py")))["get_config"](mixture)
    config.label_source = "kmeans"
    config.num_classes = 50  # clusters, not modes
    config.num_steps = 20_000
    config.ema_decay = 0.999
    return config


if __name__ == "__main__":
    from gan_jax.main import run_experiment

    run_experiment(get_config)
