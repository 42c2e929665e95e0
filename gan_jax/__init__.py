"""gan_jax: functional GAN training in JAX."""
