"""FID's Inception-v3 in Flax against pytorch-fid and torch-fidelity, with no torch and no download.

The goldens (tests/data/inception_goldens.npz) were produced by
experiments/make_inception_goldens.py
with torch, pytorch-fid and torch-fidelity on one seeded random state dict, which the test rebuilds
from the same seed in NumPy (its digest is checked first). The .pth reader is checked on tiny files
that torch.save wrote in both layouts.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pathlib
import pickle
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest

from gan_jax import xla_options
from gan_jax.evaluation import inception, metrics, torch_checkpoint

DATA = pathlib.Path(__file__).parent / "data"
GROUPS = ("mnist28", "photo32", "photo64", "photo37x50", "photo299")
# Features and logits: max |flax - torch| / max |torch| per array.
FEATURE_RTOL = 1e-4


@functools.cache
def _goldens() -> dict[str, np.ndarray]:
    with np.load(DATA / "inception_goldens.npz", allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


@functools.cache
def _variables():
    return inception.seeded_variables(json.loads(str(_goldens()["meta"]))["seed"])


@functools.cache
def _all_flax_outputs() -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{resize: {group: (pool, logits)}} of every golden group under both anchors'
    pre-processing, the network run once on all of them (one compiled program of about 10 s);
    biased logits for pytorch-fid (its fc: the bias added here), unbiased for torch-fidelity
    (its logits_unbiased)."""
    goldens = _goldens()
    keys = [(resize, name) for resize in inception.RESIZE_MODES for name in GROUPS]
    prepped = [inception.preprocess(goldens[f"images_{name}"], resize=r) for r, name in keys]
    # gan_jax's CPU options (no YNNPACK), as every evaluation runs it: 80 images in about half
    # the time of plain jax.jit on 2 cores.
    apply = xla_options.jit(inception.apply_network, static_argnames=("logits_bias", "precision"))
    pool, logits = apply(_variables(), jax.numpy.concatenate(prepped), logits_bias=False)
    pool, logits = np.asarray(pool), np.asarray(logits)
    bias = np.asarray(_variables()["params"]["fc"]["bias"])
    out, start = {resize: {} for resize in inception.RESIZE_MODES}, 0
    for (resize, name), x in zip(keys, prepped, strict=True):
        group_logits = logits[start : start + len(x)]
        if resize == "pytorch_fid":
            group_logits = group_logits + bias
        out[resize][name] = (pool[start : start + len(x)], group_logits)
        start += len(x)
    return out


def _flax_outputs(resize: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return _all_flax_outputs()[resize]


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_seeded_weights_are_the_goldens_weights():
    meta = json.loads(str(_goldens()["meta"]))
    state_dict = torch_checkpoint.seeded_state_dict(inception.state_dict_shapes(), meta["seed"])
    assert torch_checkpoint.state_dict_digest(state_dict) == meta["state_dict_sha256"]


def test_param_count_and_names_match_the_torch_file():
    shapes = inception.state_dict_shapes()
    # 94 BasicConv2d (conv + 4 BN tensors) and fc's two: 472 tensors, 23,885,392 numbers, i.e.
    # 95.5 MB of float32 against the 95,628,359-byte file.
    assert len(shapes) == 94 * 5 + 2
    assert sum(int(np.prod(s)) for s in shapes.values()) == 23_885_392
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["fc.weight"] == (1008, 2048)


@pytest.mark.parametrize("resize", inception.RESIZE_MODES)
def test_features_and_logits_match_the_anchor(resize):
    goldens = _goldens()
    for name in GROUPS:
        pool, logits = _flax_outputs(resize)[name]
        n = len(goldens[f"pool_{resize}_{name}"])
        for label, actual, expected in (
            ("pool", pool[:n], goldens[f"pool_{resize}_{name}"]),
            ("logits", logits[:n], goldens[f"logits_{resize}_{name}"]),
        ):
            error = _relative_error(actual, expected)
            assert error < FEATURE_RTOL, f"{resize} {name} {label}: relative error {error:.2e}"


def test_the_biased_logits_add_the_classifier_bias():
    # The goldens are compared with the bias added outside the network (one compiled program for
    # both anchors); here the network's own `logits_bias=True` path, on the classifier alone.
    fc = inception.Classifier(num_classes=5)
    pool = jax.random.normal(jax.random.key(0), (3, 8))
    variables = fc.init(jax.random.key(1), pool, with_bias=False)
    variables = jax.tree.map(lambda v: v + 0.5, variables)  # a nonzero bias
    biased = fc.apply(variables, pool, with_bias=True)
    unbiased = fc.apply(variables, pool, with_bias=False)
    np.testing.assert_allclose(biased - unbiased, np.full((3, 5), 0.5), rtol=1e-6)


def test_the_two_resizes_differ():
    """Each anchor's own resize is needed: they differ by tens of times the tolerance."""
    ours = _flax_outputs("pytorch_fid")["photo32"][0][:4]
    theirs = _goldens()["pool_torch_fidelity_photo32"]
    assert _relative_error(ours, theirs) > 10 * FEATURE_RTOL


@pytest.mark.parametrize(
    # Each distance is two 2048 x 2048 eigendecompositions (about 15 s on the 2 shared cores), so
    # the fast step checks the FID anchor's own pre-processing and the slow step the other.
    "resize",
    ["pytorch_fid", pytest.param("torch_fidelity", marks=pytest.mark.slow)],
)
def test_fid_matches_pytorch_fid(resize):
    pool = _flax_outputs(resize)["photo32"][0]
    expected = float(_goldens()[f"fid_{resize}"])
    assert metrics.fid(pool[:16], pool[16:]) == pytest.approx(expected, rel=1e-3)


def test_inception_score_matches_torch_fidelity():
    goldens = _goldens()
    logits = _flax_outputs("torch_fidelity")["photo32"][1]
    mean, std = inception.inception_score(logits)
    assert mean == pytest.approx(float(goldens["isc_mean"]), rel=1e-3)
    assert std == pytest.approx(float(goldens["isc_std"]), rel=1e-2, abs=1e-4)
    # The arithmetic alone, on logits spread enough for a large score: equal to rounding.
    synthetic = np.random.RandomState(1).standard_normal((50, 1008)) * 3.0
    mean, std = inception.inception_score(synthetic)
    assert mean == pytest.approx(float(goldens["isc_synthetic_mean"]), rel=1e-12)
    assert std == pytest.approx(float(goldens["isc_synthetic_std"]), rel=1e-9)


def test_inception_score_needs_enough_samples():
    with pytest.raises(ValueError, match="N >= splits"):
        inception.inception_score(np.zeros((5, 1008)))


@pytest.mark.parametrize("resize", inception.RESIZE_MODES)
def test_uint8_and_unit_floats_are_the_same_input(resize):
    """uint8 pixels and the k / 255 floats of the same pixels pre-process to the same network
    input: bit for bit for torch-fidelity (its rounding of floats returns the same uint8), to
    float32 rounding for pytorch-fid (XLA divides by 255 as a multiply by 1 / 255), so the
    anchors' agreement on uint8 (above) holds for a generator's floats too. The network on
    float input, batched as evaluations run it, is checked against pytorch-fid in
    tests/test_eval_inception.py."""
    images = _goldens()["images_mnist28"]
    from_uint8 = np.asarray(inception.preprocess(images, resize=resize))
    from_floats = np.asarray(inception.preprocess(images.astype(np.float32) / 255.0, resize=resize))
    assert from_uint8.shape == (4, 299, 299, 3)
    if resize == "torch_fidelity":
        np.testing.assert_array_equal(from_floats, from_uint8)
    else:  # inputs in [-1, 1]: a few float32 ulps
        np.testing.assert_allclose(from_floats, from_uint8, rtol=0, atol=1e-6)


def test_preprocess_refuses_other_channel_counts_and_modes():
    with pytest.raises(ValueError, match="C = 1 or 3"):
        inception.preprocess(np.zeros((1, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="resize must be one of"):
        inception.preprocess(np.zeros((1, 8, 8, 3), np.uint8), resize="antialiased")


# ---------------------------------------------------------------------------------------------
# Resize matrices, by hand.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resize", "in_size", "out_size", "expected"),
    [
        # PyTorch, align_corners=False: src = (o + 0.5) * in / out - 0.5, clamped at 0.
        ("pytorch_fid", 2, 4, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]),
        # Downsampling without antialiasing: two taps, whatever the ratio.
        ("pytorch_fid", 4, 2, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]),
        ("pytorch_fid", 6, 2, [[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]]),
        # TF1 legacy: src = o * in / out, no half-pixel offset; the last tap clamped.
        ("torch_fidelity", 2, 4, [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]),
        ("torch_fidelity", 4, 2, [[1, 0, 0, 0], [0, 0, 1, 0]]),
        ("torch_fidelity", 3, 3, np.eye(3)),
    ],
)
def test_resize_matrix_by_hand(resize, in_size, out_size, expected):
    matrix = inception.resize_matrix(in_size, out_size, resize)
    np.testing.assert_allclose(matrix, np.asarray(expected, np.float32), atol=1e-7)


@pytest.mark.parametrize("resize", inception.RESIZE_MODES)
@pytest.mark.parametrize("in_size", [28, 32, 299, 512])
def test_resize_matrix_rows_are_interpolation_weights(resize, in_size):
    matrix = inception.resize_matrix(in_size, 299, resize)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
    assert (matrix >= 0).all() and ((matrix > 0).sum(axis=1) <= 2).all()
    if in_size == 299:
        np.testing.assert_array_equal(matrix, np.eye(299, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# The .pth reader.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reader_reads_torch_save_files(layout):
    read = torch_checkpoint.read_state_dict(DATA / f"torch_tiny.{layout}.pth")
    with np.load(DATA / "torch_tiny_expected.npz") as stored:
        expected = {name: stored[name] for name in stored.files}
    assert list(read) == list(expected)  # the OrderedDict's order survives
    for name, want in expected.items():
        got = read[name]
        if name == "bf16":
            assert got.dtype.name == "bfloat16"
            got = got.astype(np.float32)
        else:
            assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.owndata or got.base is None or got.flags.c_contiguous
    # Views of one storage (transposed, an offset window) come back as their own values.
    np.testing.assert_array_equal(read["transposed"], read["base"].T)
    np.testing.assert_array_equal(read["window"], read["base"][1:3, 2:5])
    assert read["bn.num_batches_tracked"].shape == () and int(read["bn.num_batches_tracked"]) == 7


def _legacy_stream(payload: bytes) -> bytes:
    header = [torch_checkpoint.LEGACY_MAGIC_NUMBER, torch_checkpoint.LEGACY_PROTOCOL_VERSION, {}]
    return b"".join(pickle.dumps(h, protocol=2) for h in header) + payload


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_reader_refuses_globals_a_state_dict_does_not_need(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_stream(pickle.dumps({"w": _Evil()}, protocol=2)))
    with pytest.raises(torch_checkpoint.TorchCheckpointError, match="refusing to unpickle"):
        torch_checkpoint.read_state_dict(path)


def test_reader_refuses_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(torch_checkpoint.TorchCheckpointError):
        torch_checkpoint.read_state_dict(junk)
    not_a_dict = tmp_path / "list.pth"
    not_a_dict.write_bytes(_legacy_stream(pickle.dumps([1, 2], protocol=2) + pickle.dumps([])))
    with pytest.raises(torch_checkpoint.TorchCheckpointError, match="state dict"):
        torch_checkpoint.read_state_dict(not_a_dict)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((DATA / "torch_tiny.legacy.pth").read_bytes()[:-10])
    with pytest.raises(torch_checkpoint.TorchCheckpointError, match="ends inside"):
        torch_checkpoint.read_state_dict(truncated)


# ---------------------------------------------------------------------------------------------
# The loader: checksum, keys, cache.
# ---------------------------------------------------------------------------------------------


def _snapshot(directory: pathlib.Path) -> dict[str, str]:
    """name → sha256 of every file under directory."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def cache(tmp_path):
    """A cache directory that already holds a file, to check that failures leave it alone."""
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / inception._cache_path(directory, inception.WEIGHTS_SHA256).name).write_bytes(
        b"an older cache entry"
    )
    return directory


def test_missing_file_offline_names_file_url_checksum_and_path(cache, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    before = _snapshot(cache)
    for kwargs in ({"download": True}, {"download": False}, {"path": cache / "absent.pth"}):
        with pytest.raises(FileNotFoundError) as raised:
            inception.load_weights(cache_dir=cache, **kwargs)
        message = str(raised.value)
        for needed in (
            inception.WEIGHTS_FILENAME,
            inception.WEIGHTS_URL,
            inception.WEIGHTS_SHA256,
            "path=",
        ):
            assert needed in message
    assert _snapshot(cache) == before


def test_wrong_checksum_is_refused_and_the_cache_untouched(cache):
    before = _snapshot(cache)
    with pytest.raises(inception.WeightsError, match="sha256") as raised:
        inception.load_weights(DATA / "torch_tiny.zip.pth", cache_dir=cache)
    assert inception.WEIGHTS_SHA256 in str(raised.value)
    assert _snapshot(cache) == before


def test_missing_keys_are_refused_and_the_cache_untouched(cache):
    """A readable state dict of the wrong network, with its own checksum accepted: the key check
    refuses it, listing the problems, and writes nothing."""
    path = DATA / "torch_tiny.zip.pth"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    before = _snapshot(cache)
    with pytest.raises(inception.WeightsError, match="missing: Conv2d_1a_3x3") as raised:
        inception.load_weights(path, expected_sha256=digest, cache_dir=cache)
    assert "unexpected: base" in str(raised.value) and "472 in all" in str(raised.value)
    assert _snapshot(cache) == before


def test_variables_from_state_dict_lists_every_problem():
    state_dict = torch_checkpoint.seeded_state_dict(inception.state_dict_shapes(), 0)
    del state_dict["Mixed_7c.branch_pool.bn.running_var"]
    state_dict["fc.bias"] = np.zeros(1000, np.float32)
    state_dict["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    state_dict["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.zeros((), np.int64)  # ignored
    with pytest.raises(inception.WeightsError) as raised:
        inception.variables_from_state_dict(state_dict)
    message = str(raised.value)
    assert "missing: Mixed_7c.branch_pool.bn.running_var" in message
    assert "unexpected: AuxLogits.fc.weight;" in message
    assert "misshapen: fc.bias (1000,) (want (1008,))" in message


def test_conversion_is_cached_and_reused(tmp_path, monkeypatch):
    """A file with the expected checksum is converted once; later loads read the cache alone."""
    source = tmp_path / inception.WEIGHTS_FILENAME
    source.write_bytes(b"stands in for the real file")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    state_dict = torch_checkpoint.seeded_state_dict(inception.state_dict_shapes(), 0)
    monkeypatch.setattr(torch_checkpoint, "read_state_dict", lambda path: state_dict)
    cache = tmp_path / "cache"
    first = inception.load_weights(source, expected_sha256=digest, cache_dir=cache)
    assert first.sha256 == digest
    assert [p.name for p in cache.iterdir()] == [inception._cache_path(cache, digest).name]

    def unreadable(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(torch_checkpoint, "read_state_dict", unreadable)
    second = inception.load_weights(expected_sha256=digest, cache_dir=cache, download=False)
    assert second.source == str(inception._cache_path(cache, digest))
    jax.tree.map(np.testing.assert_array_equal, first.variables, second.variables)
    expected = inception.variables_from_state_dict(state_dict)
    jax.tree.map(np.testing.assert_array_equal, second.variables, expected)


@pytest.mark.parametrize("good", [True, False])
def test_download_keeps_only_a_file_with_the_right_checksum(tmp_path, monkeypatch, good):
    payload = b"weights" * 1000
    digest = hashlib.sha256(payload if good else b"something else").hexdigest()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    destination = tmp_path / inception.WEIGHTS_FILENAME
    if good:
        inception._download(inception.WEIGHTS_URL, destination, digest, timeout_s=1)
        assert destination.read_bytes() == payload
    else:
        with pytest.raises(inception.WeightsError, match="kept nothing"):
            inception._download(inception.WEIGHTS_URL, destination, digest, timeout_s=1)
        assert list(tmp_path.iterdir()) == []
