"""The TensorFlow tutorial's DCGAN on MNIST, non-saturating loss (the project's first default).

Launch:

    python -m gan_jax.main --config experiments/dcgan_tutorial_mnist.py \
        --workdir workdirs/dcgan_tutorial_mnist

or `python experiments/dcgan_tutorial_mnist.py --workdir workdirs/dcgan_tutorial_mnist`. Trains
the TensorFlow tutorial's DCGAN (`model="dcgan"`, see gan_jax.models; its discriminator leaves
out the tutorial's Dropout(0.3), see models.DCGANDiscriminator for why) for 1,200 steps of 128
images (2.6 epochs of a model the tutorial trains for 50) with Adam (2e-4, b1 0.5) and an EMA of
the generator. The model is too costly per image for a 10-minute CPU budget;
experiments/cdcgan_mnist.py is the default.

Measured (python experiments/results.py --only dcgan_tutorial_mnist; 3 seeds, 2-core AMD EPYC
shared with other runs, jax 0.10.2; mean ± std): FID 330.56 ± 12.28, KID 101.8 ± 0.3,
precision 0.689 ± 0.001, recall 0.526 ± 0.047, classifier score 5.52 ± 0.29 (floor 2.16 /
0.12 / 0.86 / 0.87 / 9.86), 4.9 ± 1.3 minutes per seed, and grids of malformed digits.
"""

from gan_jax.config import get_default_config


def get_config():
    config = get_default_config()
    config.model = "dcgan"
    config.dataset = "mnist"
    config.image_shape = (28, 28, 1)
    config.batch_size = 128
    config.num_steps = 1200
    config.ema_decay = 0.995
    config.steps_per_dispatch = 5  # on CPU conv steps are unrolled (gan_jax/fused.py): keep k small
    config.log_every = 20
    config.sample_every = 200
    config.checkpoint_every = 200
    return config


if __name__ == "__main__":
    from gan_jax.main import run_experiment

    run_experiment(get_config)
