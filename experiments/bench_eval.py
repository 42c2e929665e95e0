"""Times the evaluation of 10,000 generated images (sampling included) and prints the real floors.

Launch:

    python experiments/bench_eval.py [--num_samples 10000] [--model dcgan] [--floors]

What it measures: `gan_jax.evaluate.evaluate_generator` on the default config's generator
(`dcgan`, 28x28x1, randomly initialised: the metric values are meaningless, the time is not),
10,000 samples, in batches of 1,000. The cold call compiles the sampler and the feature network and,
on a fresh cache, computes the MNIST test reference and the floor; the warm calls are what every
later evaluation costs. Then a breakdown: sampling alone, the feature network alone, the metrics
alone. Target: a warm evaluation under 30 s on 2 CPU cores.

With --floors it also prints the real-data floor of MNIST and Stacked MNIST (the values the README
lists): for each metric, training images scored against the test split.

Measured on the project's 2-core CPU (AMD EPYC, jax 0.10.2, load average about 2, nothing else
running), warm evaluation of 10,000 dcgan samples, best of 2:

    13.2 s in all; timed one by one: sampling 10.0 s, feature network 1.4 s, metrics 2.5 s
    (the cold call, compiling the sampler and the feature network: 14.5 s)

The generator's forward pass (~166 MFLOP per image, 1.7 TFLOP for 10,000) is most of it, at
about 170 GFLOP/s with the Eigen convolutions gan_jax.xla_options selects on CPU (XLA's default
YNNPACK convolutions took 30 s for the sampling alone, under load). The evaluation's own work
(features, FID, KID, precision/recall, scores) is about 4 s.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from gan_jax import config as config_lib
from gan_jax import evaluate, models
from gan_jax.evaluation import classifier, reference


def make_sampler(model: str):
    """A randomly initialised generator of the default config as sample_fn(key, n)."""
    cfg = config_lib.get_default_config()
    cfg.model = model
    built = models.build_models(cfg)
    z = np.zeros((1, cfg.latent_dim), np.float32)
    params, state = models.split_variables(built.generator.init(jax.random.key(0), z, train=False))

    def sample(key, n):
        z = jax.random.normal(key, (n, cfg.latent_dim))
        return models.apply_model(built.generator, params, state, z, train=False)[0]

    return jax.jit(sample, static_argnums=1), built.pixel_range


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_samples", type=int, default=10_000)
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--batch_size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--floors", action="store_true")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} device(s)")

    sample_fn, pixel_range = make_sampler(args.model)
    network = classifier.load_feature_network()

    def run():
        return evaluate.evaluate_generator(
            sample_fn,
            dataset="mnist",
            num_samples=args.num_samples,
            pixel_range=pixel_range,
            batch_size=args.batch_size,
            network=network,
        )

    _, cold = timed(run)
    print(f"cold evaluation (compiles; reference and floor if not cached): {cold:.1f} s")
    warm = []
    for _ in range(args.repeats):
        _, seconds = timed(run)
        warm.append(seconds)
    print(
        f"warm evaluation of {args.num_samples} {args.model} samples: "
        f"{min(warm):.1f} s (best of {len(warm)}; all: {', '.join(f'{s:.1f}' for s in warm)})"
    )

    # Breakdown of one warm evaluation.
    key = jax.random.key(0)
    n, b = args.num_samples, args.batch_size
    images, t_sample = timed(
        lambda: [sample_fn(jax.random.fold_in(key, i), b) for i in range(-(-n // b))]
    )
    images = np.concatenate([np.asarray(x) for x in images])[:n]
    embedding, t_embed = timed(lambda: classifier.embed(network, images, pixel_range=pixel_range))
    ref = reference.get_reference("mnist", network=network)
    _, t_score = timed(lambda: reference.score_embedding(embedding, ref))
    print(
        f"  sampling {t_sample:.1f} s, feature network {t_embed:.1f} s, "
        f"metrics (FID, KID 100x1000, P/R k=3, score, histogram) {t_score:.1f} s"
    )

    if args.floors:
        for dataset in ("mnist", "stacked_mnist"):
            floor, seconds = timed(lambda d=dataset: reference.get_floor(d, network=network))
            print(f"floor of {dataset} ({seconds:.1f} s):")
            print(json.dumps({k: v for k, v in floor.items() if k != "class_histogram"}, indent=1))


if __name__ == "__main__":
    main()
