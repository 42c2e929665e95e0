"""Offline evaluation: feature networks and metrics computed on their outputs.

- `classifier`: the MNIST CNN (128-d features, 10 logits), its shipped hash-checked weights,
  pixel-range conversion and batched inference (`embed`).
- `inception`, `torch_checkpoint`: FID's Inception-v3 in Flax (2,048-d pool features, 1,008
  logits), both anchors' pre-processing, the Inception Score, and pytorch-fid's weights read
  from their torch file without torch.
- `feature_networks`: which network scores a dataset, and Inception batched over the devices.
- `metrics`: FID, KID, classifier score, precision/recall, class histograms, Stacked-MNIST modes.
- `reference`: cached reference statistics of real splits, published FID statistics, the
  real-data floor, and `score_embedding`, which computes every metric of a sample set against
  a reference.

`gan_jax.evaluate` puts them together for generators and run directories.
"""
