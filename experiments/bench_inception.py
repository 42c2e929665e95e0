"""Times Inception-v3 features (FID's network) on generator-sized images: seconds per 10,000.

Launch:

    python experiments/bench_inception.py [--num_images 10000] [--shape 28,28,1]
        [--batch_per_device 32] [--resize pytorch_fid] [--out FILE.json]

What it measures: `feature_networks.InceptionNetwork.embed`, the path every Inception
evaluation takes (batched, padded to one shape, split over this process's devices), on
`num_images` random uint8 images of `shape`. The weights are a seeded random set of the real
network's shapes (`inception.seeded_variables`): the cost of a forward pass does not depend on
the numbers, and the real file cannot be fetched on every machine. The first batch compiles and
is timed apart; the rest is the steady rate. Prints one JSON line (also written to --out) with
the machine, the devices and both times.

Every image is resized to 299 x 299 first, so the cost is about 5.7 G multiply-adds per image
whatever the input size: on a CPU it is the slow part of an evaluation, on an accelerator a
small one. The README quotes what this script printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from gan_jax.evaluation import feature_networks, inception


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--num_images", type=int, default=10_000)
    parser.add_argument("--shape", default="28,28,1", help="H,W,C of the images")
    parser.add_argument("--batch_per_device", type=int, default=32)
    parser.add_argument("--resize", default="pytorch_fid", choices=inception.RESIZE_MODES)
    parser.add_argument("--out", default=None, help="also write the JSON line here")
    args = parser.parse_args()

    shape = tuple(int(d) for d in args.shape.split(","))
    weights = inception.InceptionWeights(inception.seeded_variables(0), "0" * 64, "seeded")
    network = feature_networks.InceptionNetwork(
        weights, resize=args.resize, batch_per_device=args.batch_per_device
    )
    chunk = args.batch_per_device * jax.local_device_count()
    images = np.random.default_rng(0).integers(0, 256, (args.num_images, *shape), np.uint8)

    start = time.perf_counter()
    network.embed(images[:chunk])  # compiles, then runs one batch
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    embedding = network.embed(images)
    total_s = time.perf_counter() - start
    assert np.isfinite(embedding.features).all()
    record = {
        "num_images": args.num_images,
        "shape": list(shape),
        "resize": args.resize,
        "batch": chunk,
        "devices": f"{jax.local_device_count()} x {jax.devices()[0].device_kind}",
        "cpu": _cpu_model(),
        "jax": jax.__version__,
        "first_batch_s (compile + 1 batch)": round(first_s, 2),
        "seconds": round(total_s, 1),
        "seconds_per_10k": round(total_s * 10_000 / args.num_images, 1),
        "images_per_s": round(args.num_images / total_s, 2),
    }
    line = json.dumps(record)
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
