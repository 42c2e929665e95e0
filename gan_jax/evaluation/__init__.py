"""Offline evaluation: a shipped MNIST feature network and metrics computed on its outputs.

- `classifier`: the MNIST CNN (128-d features, 10 logits), its shipped hash-checked weights,
  pixel-range conversion and batched inference (`embed`).
- `metrics`: FID, KID, classifier score, precision/recall, class histograms, Stacked-MNIST modes.
- `reference`: cached reference statistics of real splits, the real-data floor, and
  `score_embedding`, which computes every metric of a sample set against a reference.

`gan_jax.evaluate` puts them together for generators and run directories.
"""
