"""Test set-up: four forced CPU devices, so data-parallel code runs on any machine."""

import jax

# Must happen before JAX initialises its backends, i.e. before any test module touches a device.
jax.config.update("jax_num_cpu_devices", 4)
