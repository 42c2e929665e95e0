"""Inception-v3 as the evaluator's feature network: batched over devices, wired into
evaluate_generator, the reference cache, published statistics, the CLI and the training loop.

The network runs on the goldens' seeded weights (tests/test_inception.py checks them against
pytorch-fid and torch-fidelity); the real file is never needed or downloaded. A forward pass
costs about 0.13 s per image on a CPU whatever the input size (every image is resized to 299),
so these tests score a few dozen images. The fast step runs the network against pytorch-fid's
outputs and the command line end to end; the comparisons of real against collapsed samples,
with the floor, run with -m slow.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import config as config_lib
from gan_jax import evaluate, train
from gan_jax.evaluation import feature_networks, inception, reference
from tests.helpers import tiny_checkpointed_run

DATA = pathlib.Path(__file__).parent / "data"
NUM = 12  # samples per evaluation: the Inception Score's 10 splits need at least 10


@functools.cache
def _goldens() -> dict[str, np.ndarray]:
    with np.load(DATA / "inception_goldens.npz", allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


@functools.cache
def _seeded_weights() -> inception.InceptionWeights:
    seed = json.loads(str(_goldens()["meta"]))["seed"]
    return inception.InceptionWeights(inception.seeded_variables(seed), "0" * 64, "seeded")


def _network(resize: str = "pytorch_fid") -> feature_networks.InceptionNetwork:
    # 1 image per device: the 4 forced CPU devices make batches of 4 (cheap on 2 cores).
    return feature_networks.InceptionNetwork(_seeded_weights(), resize=resize, batch_per_device=1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAN_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "eval_cache"))


@pytest.fixture(autouse=True)
def seeded_weights_everywhere(monkeypatch):
    """Whatever asks for pytorch-fid's file gets the seeded weights (batches of 4), so the CLI
    and the training loop run offline; `load_inception` itself is tested below."""

    def load(weights_path=None, *, resize="pytorch_fid", download=True):
        return _network(resize)

    monkeypatch.setattr(feature_networks, "load_inception", load)


@functools.cache
def _mnist_test() -> np.ndarray:
    from gan_jax import data

    return data.load_split("mnist", "test")[0]


def _real_sampler(images: np.ndarray):
    """A 'generator' of real images in [-1, 1]: batch i of a key is a fixed slice."""

    def sample_fn(key, n):
        start = int(jax.random.randint(key, (), 0, images.shape[0] - n))
        return jnp.asarray(images[start : start + n], jnp.float32) / 127.5 - 1.0

    return sample_fn


def test_embed_matches_pytorch_fid_across_batches_padding_and_devices():
    """6 images in batches of 4 over 4 devices (the second batch half padding): each row equals
    pytorch-fid's output for that image, so batching, padding and sharding change nothing."""
    goldens = _goldens()
    images = goldens["images_mnist28"]
    images = np.concatenate([images, images[:2]])  # uint8, 6 rows
    embedding = _network().embed(images)
    expected_pool = np.concatenate([goldens["pool_pytorch_fid_mnist28"]] * 2)[:6]
    bias = np.asarray(_seeded_weights().variables["params"]["fc"]["bias"])
    expected_logits = np.concatenate([goldens["logits_pytorch_fid_mnist28"]] * 2)[:6] - bias
    assert embedding.features.shape == (6, inception.FEATURE_DIM)
    scale = np.abs(expected_pool).max()
    assert np.abs(embedding.features - expected_pool).max() / scale < 1e-4
    assert np.abs(embedding.logits - expected_logits).max() / np.abs(expected_logits).max() < 1e-4
    # (uint8 and float input meet the network as one input: tests/test_inception.py.)


@functools.cache
def _scored() -> dict[str, dict]:
    """evaluate_generator with Inception on real MNIST test images against a reference of
    other test images, and on one image repeated (a collapsed generator)."""
    images = _mnist_test()
    real = evaluate.evaluate_generator(
        _real_sampler(images[1000:2000]),
        dataset="mnist",
        network=_network(),
        num_samples=NUM,
        batch_size=NUM,
        reference_num_examples=NUM,
        floor_num_samples=NUM,
    )
    collapsed = evaluate.evaluate_generator(
        lambda key, n: jnp.broadcast_to(
            jnp.asarray(images[5000], jnp.float32) / 255.0, (n,) + images.shape[1:]
        ),
        dataset="mnist",
        network=_network(),
        num_samples=NUM,
        batch_size=NUM,
        pixel_range="unit",
        reference_num_examples=NUM,
        include_floor=False,
    )
    return {"real": real, "collapsed": collapsed}


@pytest.mark.slow
def test_evaluate_generator_reports_inception_metrics_beside_the_floor():
    real, collapsed = _scored()["real"], _scored()["collapsed"]
    for key in ("fid", "kid", "precision", "recall", "inception_score", "inception_score_std"):
        assert np.isfinite(real[key]), key
    assert "classifier_score" not in real and "class_kl" not in real
    assert real["feature_network"]["name"] == "inception"
    assert real["feature_network"]["resize"] == "pytorch_fid"
    assert real["reference"]["image_shape"] == [28, 28, 1]
    assert real["floor"]["num_samples"] == NUM and "inception_score" in real["floor"]
    # One image repeated: no spread, so its Inception Score is exactly 1 and its FID worse
    # than real images'.
    assert collapsed["inception_score"] == pytest.approx(1.0, abs=1e-9)
    assert collapsed["fid"] > real["fid"]
    table = evaluate.format_table(real)
    assert "Inception score" in table and "pytorch_fid resize" in table


@pytest.mark.slow
def test_the_reference_is_cached_per_resize():
    """A second evaluation reads the reference the first wrote, named by its network and size."""
    _scored()
    cache = reference.cache_dir()
    names = sorted(p.name for p in cache.glob("mnist-test-*inception-pytorch_fid*.npz"))
    assert len(names) == 1 and f"max{NUM}" in names[0]
    cached = reference.get_reference("mnist", network=_network(), max_examples=NUM, use_cache=True)
    assert cached.features.shape == (NUM, inception.FEATURE_DIM) and cached.histogram is None
    assert cached.info["data_sha256"] == _scored()["real"]["reference"]["data_sha256"]
    # The resize changes every feature, so it is part of the cache's key, as the weights are.
    keys = {_network(r).cache_key for r in inception.RESIZE_MODES}
    assert len(keys) == 2 and all(_seeded_weights().sha256[:16] in key for key in keys)


def test_published_statistics_give_fid_against_them(tiny_run, tmp_path):
    """A pytorch-fid style .npz (mu, sigma) is a reference: written from the test split's own
    reference, it gives the same FID as that reference; no KID, precision / recall or floor,
    since the file holds no images; its result goes to a file of its own."""
    cli_result = _cli_inception_result(tiny_run)
    ref = reference.get_reference("mnist", network=_network(), max_examples=NUM)
    stats = tmp_path / "published.npz"
    np.savez(stats, mu=ref.mu, sigma=ref.cov)
    result, path = evaluate.evaluate_run(
        tiny_run, num_samples=NUM, features="inception", reference_stats=stats
    )
    assert path.name == "step_3_inception_vs_published.json"
    assert result["fid"] == pytest.approx(cli_result["fid"], rel=1e-9)
    assert "kid" not in result and "precision" not in result and "floor" not in result
    assert np.isfinite(result["inception_score"])
    assert result["reference"]["stats_file"] == str(stats)
    assert "the statistics in" in evaluate.format_table(result)


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ({"mu": np.zeros(3)}, r"holds \['mu'\]"),
        ({"mu": np.zeros(3), "sigma": np.zeros((3, 2))}, "mu must be"),
        ({"mu": np.full(2, np.nan), "sigma": np.eye(2)}, "NaN"),
        (None, "one array"),
        (b"not a zip", "Cannot read"),
    ],
)
def test_bad_statistics_files_are_refused_and_left_as_they_were(tmp_path, contents, message):
    path = tmp_path / "stats.npz"
    if contents is None:
        with path.open("wb") as f:
            np.save(f, np.zeros(3))
    elif isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        np.savez(path, **contents)
    before = path.read_bytes()
    with pytest.raises(reference.StatsFileError, match=message):
        reference.load_published_stats(path)
    assert path.read_bytes() == before


def test_features_that_cannot_score_a_dataset_are_config_errors():
    with pytest.raises(config_lib.ConfigError, match=r"\['mnist', 'stacked_mnist'\]"):
        feature_networks.check_features("classifier", "cifar10")
    with pytest.raises(config_lib.ConfigError, match="one of"):
        feature_networks.check_features("vgg", "mnist")
    assert feature_networks.default_features("mnist") == "classifier"
    assert feature_networks.default_features("stacked_mnist") == "classifier"
    assert feature_networks.default_features("cifar10") == "inception"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_checkpointed_run(tmp_path_factory.mktemp("run"))


@functools.cache
def _cli_run(workdir: pathlib.Path) -> tuple[int, str]:
    """`python -m gan_jax.evaluate --features inception` on the tiny run, once: (status, out)."""
    import contextlib
    import io

    out = io.StringIO()
    args = ["--workdir", str(workdir), "--num_samples", str(NUM), "--no_floor"]
    args += ["--features", "inception", "--reference_examples", str(NUM)]
    with contextlib.redirect_stdout(out):
        code = evaluate.main(args)
    return code, out.getvalue()


def _cli_inception_result(workdir: pathlib.Path) -> dict:
    code, _ = _cli_run(workdir)
    assert code == 0
    return json.loads((workdir / "eval" / "step_3_inception.json").read_text())


def test_cli_scores_an_mnist_run_with_inception_beside_its_classifier_result(tiny_run):
    code, out = _cli_run(tiny_run)
    assert code == 0
    assert "Inception score" in out and "FID" in out and "pytorch_fid resize" in out
    result = _cli_inception_result(tiny_run)
    assert result["feature_network"]["name"] == "inception" and result["num_samples"] == NUM
    for key in ("fid", "kid", "precision", "recall", "inception_score", "inception_score_std"):
        assert np.isfinite(result[key]), key
    assert "classifier_score" not in result  # the classifier's metrics are its own file's
    assert result["reference"]["image_shape"] == [28, 28, 1]
    assert result["reference"]["num_examples"] == NUM
    assert not (tiny_run / "eval" / "step_3.json").exists()  # the classifier's name is free


def test_cli_bad_feature_and_stats_arguments_are_one_line(tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--workdir", str(tiny_run), "--features", "vgg"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    bad = tmp_path / "stats.npz"
    np.savez(bad, mean=np.zeros(2))
    code = evaluate.main(
        ["--workdir", str(tiny_run), "--features", "inception", "--reference_stats", str(bad)]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "'mu' [D] and 'sigma'" in err


def test_training_refuses_to_start_without_the_inception_weights(monkeypatch, tmp_path):
    """A run that would evaluate with Inception loads its weights before the first step: when
    the file is missing the ConfigError names the file and how to turn evaluation off."""
    monkeypatch.setattr(feature_networks, "load_inception", _real_load_inception)
    monkeypatch.setattr(feature_networks, "_cached_weights", _offline_weights)
    cfg = config_lib.get_default_config()
    cfg.dataset = "mnist"
    cfg.eval_features = "inception"
    with pytest.raises(config_lib.ConfigError, match="pt_inception-2015-12-05") as error:
        train._check_evaluable(cfg)
    assert "--config.eval_at_end=False" in str(error.value)
    cfg.eval_features = "classifier,classifier"
    with pytest.raises(config_lib.ConfigError, match="twice"):
        train._check_evaluable(cfg)
    cfg.eval_features = "classifier"
    cfg.dataset = "cifar10"
    cfg.image_shape = (32, 32, 3)
    with pytest.raises(config_lib.ConfigError, match="config.eval_features"):
        train._check_evaluable(cfg)


_real_load_inception = feature_networks.load_inception


def _offline_weights(path, download):
    return inception.load_weights(path, download=False)


@pytest.mark.slow  # a training run and two final evaluations: 25-45 s on 2 cores
def test_an_mnist_run_reports_inception_beside_its_classifier(tmp_path, monkeypatch):
    """config.eval_features = "classifier,inception": the final evaluation writes the
    classifier's step_<S>.json and eval/* as always, and Inception's beside them."""
    from gan_jax import writers

    original = evaluate.evaluate_generator

    def small_reference(sample_fn, **kwargs):
        # References of NUM test images and floors of 4 training images, for both networks.
        return original(sample_fn, **kwargs, reference_num_examples=NUM, floor_num_samples=4)

    monkeypatch.setattr(evaluate, "evaluate_generator", small_reference)
    cfg = config_lib.get_default_config()
    cfg.update(model="seed_mlp", g_width=16, d_width=16, batch_size=16, num_steps=2)
    cfg.update(steps_per_dispatch=2, log_every=1, sample_every=0, checkpoint_every=2)
    cfg.update(eval_num_samples=NUM, eval_features="classifier,inception")
    train.train_and_evaluate(cfg, tmp_path / "run")
    classifier_result = json.loads((tmp_path / "run" / "eval" / "step_2.json").read_text())
    inception_result = json.loads((tmp_path / "run" / "eval" / "step_2_inception.json").read_text())
    assert classifier_result["feature_network"]["name"] == "classifier"
    assert "classifier_score" in classifier_result
    assert inception_result["feature_network"]["name"] == "inception"
    assert np.isfinite(inception_result["inception_score"])
    records = writers.read_metrics(tmp_path / "run" / "metrics.jsonl")
    (classifier_record,) = [r for r in records if "eval/fid" in r]
    (inception_record,) = [r for r in records if "eval/inception/fid" in r]
    assert classifier_record["step"] == inception_record["step"] == 2
    assert classifier_record["eval/fid"] == pytest.approx(classifier_result["fid"])
    assert inception_record["eval/inception/fid"] == pytest.approx(inception_result["fid"])
    assert "eval/inception/inception_score" in inception_record


def test_the_weights_go_to_the_devices_once_per_weights(monkeypatch):
    """Embedding batch after batch reuses the variables already on the devices; other weights
    replace them (one copy held)."""
    calls = []
    real_put = jax.device_put

    def counting_put(x, *args, **kwargs):
        if isinstance(x, dict) and "params" in x:
            calls.append(1)
        return real_put(x, *args, **kwargs)

    monkeypatch.setattr(jax, "device_put", counting_put)
    monkeypatch.setattr(feature_networks, "_placed", [])
    images = _goldens()["images_mnist28"]
    network = _network()
    first = network.embed(images[:2])
    second = _network().embed(images[:2])  # another network object on the same weights
    assert len(calls) == 1
    np.testing.assert_array_equal(first.features, second.features)
    other = inception.InceptionWeights(_seeded_weights().variables, "1" * 64, "other")
    feature_networks.InceptionNetwork(other, batch_per_device=1).embed(images[:2])
    assert len(calls) == 2
