"""Offline evaluation: a shipped MNIST feature network and metrics computed on its outputs.

- `metrics`: FID, KID, classifier score, precision/recall, class histograms, Stacked-MNIST modes.
"""
