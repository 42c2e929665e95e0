"""Class-conditional DCGAN on MNIST: label embedding in G, projection discriminator.

Launch:

    python -m gan_jax.main --config experiments/cdcgan_mnist.py --workdir workdirs/cdcgan

The sample grid puts class i in column i (64 samples, labels cycling 0..9). Expected: each
column a recognisable digit of its class after the same budget as dcgan_mnist.
"""

from gan_jax.config import get_default_config


def get_config():
    config = get_default_config()
    config.model = "dcgan"
    config.dataset = "mnist"
    config.num_classes = 10
    config.batch_size = 128
    config.num_steps = 1200
    config.ema_decay = 0.995
    config.steps_per_dispatch = 5  # on CPU conv steps are unrolled (gan_jax/fused.py): keep k small
    config.log_every = 20
    config.sample_every = 200
    config.checkpoint_every = 200
    config.num_grid_samples = 100
    return config


if __name__ == "__main__":
    from gan_jax.main import run_experiment

    run_experiment(get_config)
