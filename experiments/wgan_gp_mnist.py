"""WGAN-GP on MNIST: Wasserstein critic with gradient penalty 10, 5 critic updates a step.

Launch:

    python -m gan_jax.main --config experiments/wgan_gp_mnist.py --workdir workdirs/wgan_gp

DCGAN architecture. The optimiser, Adam(1e-4, b1 0.5, b2 0.9) for both players, is the one of
the authors' released MNIST code (github.com/igul222/improved_wgan_training, gan_mnist.py, mode
"wgan-gp": tf.train.AdamOptimizer(learning_rate=1e-4, beta1=0.5, beta2=0.9), with
CRITIC_ITERS = 5 and LAMBDA = 10), not the defaults of the paper's Algorithm 1 (Gulrajani et al.,
2017: alpha = 1e-4, b1 = 0, b2 = 0.9). As in both, each of the 5 critic updates of a step trains
on a real batch of its own (gan_jax.step). Expected: digits of quality close to the
non-saturating DCGAN at the same number of generator steps, each step costing about 3x the
DCGAN's (5 critic updates, the penalty's double backward).
"""

from gan_jax.config import get_default_config


def get_config():
    config = get_default_config()
    config.model = "dcgan"
    config.dataset = "mnist"
    config.loss = "wasserstein"
    config.gp_weight = 10.0
    config.n_critic = 5
    config.batch_size = 64
    config.num_steps = 4000
    config.steps_per_dispatch = 5  # on CPU conv steps are unrolled (gan_jax/fused.py): keep k small
    for player in (config.g_optimizer, config.d_optimizer):
        player.learning_rate = 1e-4
        player.b1 = 0.5
        player.b2 = 0.9
    return config


if __name__ == "__main__":
    from gan_jax.main import run_experiment

    run_experiment(get_config)
