"""R3GAN's burn-in: values that move from a start to a final value along a half cosine.

R3GAN (Huang et al., NeurIPS 2024) anneals its R1 / R2 weight γ, Adam's β2, its EMA half-life
(and its learning rate and augmentation probability, not modelled here) over a burn-in of
`total_nimg` images with one function (`cosine_decay_with_warmup` in
training/training_loop.py of brownvc/R3GAN, without its warm-up and hold):

    value(t) = final + (start - final) * (1 + cos(pi t / T)) / 2   for t <= T, final after.

Here t and T count train steps (`config.burn_in_steps`); R3GAN counts images, a fixed number a
step, so the curve is the same. Each value is a pure function of the step, so a resumed run
reads the values the run that never stopped read, bitwise. `config.burn_in_steps = 0` turns
every ramp off: each value is its final one from the first step, computed as before schedules
existed (Python floats), so old runs keep their arithmetic.

Which config keys ramp, and from where: R1 / R2 weights from `penalty_burn_in_factor` times
`r1_weight` / `r2_weight` (`penalty_weight`, read by gan_jax.step); Adam's b2 from
`g_optimizer / d_optimizer.b2_start` (gan_jax.optim.build_optimizer); the EMA half-life from 0
(gan_jax.optim.ema_decay_of).
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from gan_jax import config as config_lib


def cosine_ramp(start: float, end: float, steps: int) -> optax.Schedule:
    """count -> `start` at 0, `end` at `steps` and after, along a half cosine (`steps` > 0).

    Either direction (β2 rises, γ falls) and from 0 (the EMA half-life): optax's cosine decay
    of (start - end) to 0, shifted by `end`, where its multiplicative `alpha` form would need
    start != 0 and end <= start. Accepts int or traced int counts; returns f32.
    """
    decay = optax.cosine_decay_schedule(float(start) - float(end), decay_steps=int(steps))
    end = float(end)

    def schedule(count):
        return end + decay(count)

    return schedule


def burn_in_steps(config: ml_collections.ConfigDict) -> int:
    """config.burn_in_steps (0 for configs saved before it existed: no burn-in)."""
    return int(config_lib.setting(config, "burn_in_steps"))


def penalty_weight(
    final: float, step: jax.Array | int, *, config: ml_collections.ConfigDict
) -> float | jax.Array:
    """The weight (γ) of R1 or R2 at train step `step`, whose final value is `final`.

    Falls from `penalty_burn_in_factor * final` to `final` over the burn-in (R3GAN: 10x to 1x).
    Without a ramp (no burn-in, factor 1, or `final` 0) the Python float `final` itself, so the
    step's arithmetic is that of runs made before the schedule existed.
    """
    final = float(final)
    factor = float(config_lib.setting(config, "penalty_burn_in_factor"))
    steps = burn_in_steps(config)
    if steps == 0 or factor == 1.0 or final == 0.0:
        return final
    return cosine_ramp(factor * final, final, steps)(step)
