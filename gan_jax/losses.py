"""GAN objectives as pure functions of discriminator logits, and the gradient regularisers.

Each objective is a pair of functions returning scalars to *minimise*:
`d_loss(real_logits [B], fake_logits [B])` for the discriminator and
`g_loss(fake_logits [B], real_logits [B] | None)` for the generator, each a mean over the batch.
Only objectives with `needs_real_in_g` (the relativistic pairing loss) read `real_logits` in
g_loss; the step scores real data in the generator's update for those alone and passes None to
the others, so they cost what they did. Probabilities never appear: log D(x) is written as
log_sigmoid(logit), which stays finite where log(sigmoid(logit)) underflows to -inf.

What the discriminator's output means depends on the objective, and so do the step's metrics
`d_real` and `d_fake`: the batch means of `d_output(logits)` on real and on fake images, where
`d_output` gives D(x) as the objective reads it:

- minimax, non_saturating: sigmoid(logit), the probability that x is real (in (0, 1); 0.5 where
  D cannot tell).
- hinge: the raw logit, a margin score; the loss pushes real scores above +1 and fake ones
  below -1.
- wasserstein: the raw logit, the critic's value; d_real - d_fake is the critic's estimate of the
  Wasserstein-1 distance (the negated d_loss).
- least_squares: the raw logit, a regression output with targets 1 (real) and 0 (fake).
- relativistic: the raw logit, a critic score; only differences of paired scores enter the loss,
  so d_real - d_fake (the mean paired difference) is what the loss reads.

Penalties on the input gradient of D's logit, each a mean over the batch (over packs with
PacGAN's packing): `r1_penalty` on real data, `r2_penalty` on generated data (the two that
R3GAN applies together, Huang et al., NeurIPS 2024), `gradient_penalty` (WGAN-GP) between them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


def _identity(logits: jax.Array) -> jax.Array:
    return logits


class GANLoss(NamedTuple):
    # (real_logits [B], fake_logits [B]) -> scalar
    d_loss: Callable[[jax.Array, jax.Array], jax.Array]
    # (fake_logits [B], real_logits [B] or None) -> scalar; real_logits is None unless
    # needs_real_in_g.
    g_loss: Callable[[jax.Array, jax.Array | None], jax.Array]
    # logits [B] -> D(x) [B] as this objective reads it (see the module docstring); the raw
    # logit unless the objective treats D as a probability.
    d_output: Callable[[jax.Array], jax.Array] = _identity
    # Whether g_loss reads D's logits on real data: the step then runs D on a real batch in the
    # generator's update too (one more forward pass), and only then.
    needs_real_in_g: bool = False


def _log_d(logits: jax.Array) -> jax.Array:
    """log D(x) = log sigmoid(logit)."""
    return jax.nn.log_sigmoid(logits)


def _log_one_minus_d(logits: jax.Array) -> jax.Array:
    """log(1 - D(x)) = log sigmoid(-logit)."""
    return jax.nn.log_sigmoid(-logits)


def classic_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """D maximises log D(x) + log(1 - D(G(z))); we minimise its negation."""
    return -jnp.mean(_log_d(real_logits)) - jnp.mean(_log_one_minus_d(fake_logits))


def minimax_g_loss(fake_logits: jax.Array, real_logits: jax.Array | None = None) -> jax.Array:
    """G minimises log(1 - D(G(z))): the original objective, which saturates early in training."""
    return jnp.mean(_log_one_minus_d(fake_logits))


def non_saturating_g_loss(
    fake_logits: jax.Array, real_logits: jax.Array | None = None
) -> jax.Array:
    """G maximises log D(G(z)): same fixed point, strong gradients where D rejects the fakes."""
    return -jnp.mean(_log_d(fake_logits))


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def critic_g_loss(fake_logits: jax.Array, real_logits: jax.Array | None = None) -> jax.Array:
    """G raises the critic's score of its samples (hinge and Wasserstein generators)."""
    return -jnp.mean(fake_logits)


def wasserstein_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The critic's negated Wasserstein-1 estimate; pair it with the gradient penalty."""
    return jnp.mean(fake_logits) - jnp.mean(real_logits)


def least_squares_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """LSGAN with targets 1 (real) and 0 (fake)."""
    return 0.5 * jnp.mean(jnp.square(real_logits - 1.0)) + 0.5 * jnp.mean(jnp.square(fake_logits))


def least_squares_g_loss(fake_logits: jax.Array, real_logits: jax.Array | None = None) -> jax.Array:
    return 0.5 * jnp.mean(jnp.square(fake_logits - 1.0))


def relativistic_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The relativistic pairing loss (RpGAN; Jolicoeur-Martineau, ICLR 2019) as R3GAN trains D
    (Huang et al., NeurIPS 2024; R3GAN/Trainer.py in brownvc/R3GAN):
    mean_i softplus(-(D(x_i) - D(G(z_i)))).

    Real example i is paired with fake example i (packs with PacGAN's packing), so both
    arguments are [B] in pair order. softplus(-t) = -log sigmoid(t): D raises each real score
    above its paired fake's.
    """
    return jnp.mean(jax.nn.softplus(-(real_logits - fake_logits)))


def relativistic_g_loss(fake_logits: jax.Array, real_logits: jax.Array | None) -> jax.Array:
    """The generator's side of the pairing loss: mean_i softplus(-(D(G(z_i)) - D(x_i))), both
    [B] in pair order. R3GAN scores the real batch with the discriminator as it is after its
    update and takes no gradient through the real scores (they do not depend on G)."""
    if real_logits is None:
        raise ValueError("the relativistic generator loss pairs each fake with a real logit")
    return jnp.mean(jax.nn.softplus(-(fake_logits - real_logits)))


LOSSES: dict[str, GANLoss] = {
    "minimax": GANLoss(classic_d_loss, minimax_g_loss, jax.nn.sigmoid),
    "non_saturating": GANLoss(classic_d_loss, non_saturating_g_loss, jax.nn.sigmoid),
    "hinge": GANLoss(hinge_d_loss, critic_g_loss),
    "wasserstein": GANLoss(wasserstein_d_loss, critic_g_loss),
    "least_squares": GANLoss(least_squares_d_loss, least_squares_g_loss),
    "relativistic": GANLoss(relativistic_d_loss, relativistic_g_loss, needs_real_in_g=True),
}


def get_loss(name: str) -> GANLoss:
    """The objective named `name` (config.loss)."""
    if name not in LOSSES:
        raise ValueError(f"config.loss: unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def _per_example_sq_grad_norm(
    logit_fn: Callable[[jax.Array], jax.Array], images: jax.Array
) -> jax.Array:
    """||∇_x logit(x)||² for each example, [B]. Examples are independent, so the gradient of the
    summed logits gives every example's own input gradient in one backward pass."""
    grads = jax.grad(lambda x: jnp.sum(logit_fn(x)))(images)
    return jnp.sum(jnp.square(grads.reshape((grads.shape[0], -1))), axis=-1)


def r1_penalty(logit_fn: Callable[[jax.Array], jax.Array], real_images: jax.Array) -> jax.Array:
    """R1 (Mescheder et al., 2018): E_x ||∇_x D(x)||² on real data. The loss adds γ/2 times this.

    `logit_fn`: images [B, ...] -> logits [B]; `real_images` [B, ...]. The squared norm sums
    over every non-batch axis. Examples must not interact in `logit_fn` (no train-mode
    BatchNorm), or the summed-logit gradient mixes them.
    """
    return jnp.mean(_per_example_sq_grad_norm(logit_fn, real_images))


def r2_penalty(logit_fn: Callable[[jax.Array], jax.Array], fake_images: jax.Array) -> jax.Array:
    """R2: E_z ||∇_x D(x)||² at generated x = G(z) [B, ...], detached from G (only D's params
    receive its gradient). R3GAN (Huang et al., NeurIPS 2024) adds γ/2 (R1 + R2) to D's loss:
    the zero-centred penalty on both distributions, which their analysis needs for the pairing
    loss to converge locally (R3GAN/Trainer.py: `(Gamma / 2) * (R1Penalty + R2Penalty)`, one
    γ for both; here each has its own weight). Shapes and caveats as `r1_penalty`.
    """
    return jnp.mean(_per_example_sq_grad_norm(logit_fn, fake_images))


def gradient_penalty(
    logit_fn: Callable[[jax.Array], jax.Array],
    real_images: jax.Array,
    fake_images: jax.Array,
    mix: jax.Array,
) -> jax.Array:
    """WGAN-GP (Gulrajani et al., 2017): E (||∇ D(x̂)|| - 1)² at x̂ = mix·x + (1 - mix)·G(z).

    `mix` [B] holds one uniform [0, 1) draw per example.
    """
    mix = mix.reshape((-1,) + (1,) * (real_images.ndim - 1))
    interpolates = mix * real_images + (1.0 - mix) * fake_images
    # The epsilon keeps the gradient of the norm finite where the input gradient is exactly 0.
    norms = jnp.sqrt(_per_example_sq_grad_norm(logit_fn, interpolates) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))
