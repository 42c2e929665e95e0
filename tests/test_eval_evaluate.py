"""evaluate_generator on stand-in samplers, and the CLI on a tiny checkpointed run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import evaluate
from tests.helpers import tiny_checkpointed_run


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    # One cache per test session, shared by the evaluation test modules: the MNIST test
    # reference and floor are computed once, never read from the user's cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAN_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "eval_cache"))
        yield


@pytest.fixture(scope="module")
def mnist_train():
    from gan_jax import data

    return data.load_split("mnist", "train")


def _real_sampler(images: np.ndarray, pixel_range: str = "symmetric"):
    """A 'generator' that returns random real images, in the model range pixel_range."""

    def sample_fn(key, n):
        index = jax.random.choice(key, images.shape[0], (n,), replace=False)
        batch = jnp.asarray(images)[index].astype(jnp.float32) / 255.0
        return batch * 2.0 - 1.0 if pixel_range == "symmetric" else batch

    return sample_fn


class TestEvaluateGenerator:
    def test_real_images_score_like_the_floor(self, mnist_train):
        # 500 samples and a floor of 500 (the defaults are 10,000) to keep the test short: FID's
        # small-sample bias is the same on both sides. Measured: FID 11.1 against the floor's
        # 16.5, score 9.85, precision 0.85, recall 0.88 (at 2,000: 3.3 and 5.9, 9.85, 0.88, 0.86).
        result = evaluate.evaluate_generator(
            _real_sampler(mnist_train[0][-20_000:]),
            dataset="mnist",
            num_samples=500,
            floor_num_samples=500,
        )
        floor = result["floor"]
        assert result["num_samples"] == 500 and floor["num_samples"] == 500
        # Real images (others than the floor's): near the floor.
        assert result["fid"] < 1.5 * floor["fid"]
        assert result["classifier_score"] > 9.5
        assert result["precision"] > 0.6 and result["recall"] > 0.6
        assert result["feature_network"]["sha256"] and result["feature_network"]["version"]
        assert result["reference"]["split"] == "test"
        assert result["reference"]["num_examples"] == 10_000
        json.dumps(result)  # JSON-friendly throughout
        scalars = evaluate.summary_scalars(result)
        assert scalars["eval/fid"] == result["fid"]
        assert scalars["eval/floor_fid"] == floor["fid"]
        assert all(isinstance(v, float) for v in scalars.values())
        table = evaluate.format_table(result)
        assert "FID" in table and "real floor" in table

    def test_collapsed_generator_scores_badly(self, mnist_train):
        one = mnist_train[0][:1]
        result = evaluate.evaluate_generator(
            lambda key, n: jnp.repeat(jnp.asarray(one), n, axis=0),
            dataset="mnist",
            num_samples=500,
            include_floor=False,
        )
        assert result["classifier_score"] < 1.01
        assert result["recall"] < 0.01
        assert result["class_kl"] > 2.0
        assert "floor" not in result

    def test_same_seed_same_result(self, mnist_train):
        sampler = _real_sampler(mnist_train[0][:5000], "unit")
        kwargs = dict(dataset="mnist", num_samples=400, pixel_range="unit", include_floor=False)
        a = evaluate.evaluate_generator(sampler, seed=1, **kwargs)
        b = evaluate.evaluate_generator(sampler, seed=1, **kwargs)
        c = evaluate.evaluate_generator(sampler, seed=2, **kwargs)
        del a["seconds"], b["seconds"], c["seconds"]
        assert a == b and a["fid"] != c["fid"]

    @pytest.mark.parametrize("shape", [(32, 32, 1), (28, 28, 3), (784,)])
    def test_wrong_image_shape_is_explained(self, shape):
        with pytest.raises(ValueError, match=r"shape .* \[n, 28, 28, 1\]"):
            evaluate.evaluate_generator(
                lambda key, n: jnp.zeros((n, *shape)),
                dataset="mnist",
                num_samples=10,
                include_floor=False,
            )

    def test_unknown_dataset(self):
        with pytest.raises(ValueError, match="stacked_mnist"):
            evaluate.evaluate_generator(
                lambda key, n: jnp.zeros((n, 28, 28, 1)),
                dataset="cifar10",
                features="classifier",
                num_samples=10,
                include_floor=False,
            )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_checkpointed_run(tmp_path_factory.mktemp("run"))


class TestCommandLine:
    def test_evaluates_and_writes_json(self, tiny_run, capsys):
        code = evaluate.main(["--workdir", str(tiny_run), "--num_samples", "300", "--no_floor"])
        assert code == 0
        out = capsys.readouterr().out
        assert "FID" in out and "step 3" in out
        result = json.loads((tiny_run / "eval" / "step_3.json").read_text())
        assert result["step"] == 3 and result["model"] == "seed_mlp"
        assert result["num_samples"] == 300 and np.isfinite(result["fid"])
        assert len(result["feature_network"]["sha256"]) == 64

    def test_sampler_uses_ema_params(self, tiny_run):
        from gan_jax import state

        sampler = evaluate.restore_sampler(tiny_run)
        images = sampler.sample_fn(jax.random.key(0), 8)
        assert images.shape == (8, 28, 28, 1) and sampler.pixel_range == "unit"
        assert sampler.step == 3
        # EMA params differ from the live ones: sampling must follow the EMA.
        live = state.create_train_state(jax.random.key(0), sampler.config)
        ema = live.replace(g_ema_params=jax.tree.map(lambda p: p * 0.5, live.g_params))
        from_live = evaluate.sampler_from_state(live.replace(g_ema_params=None), sampler.config)
        from_ema = evaluate.sampler_from_state(ema, sampler.config)
        key = jax.random.key(1)
        assert not np.allclose(from_live(key, 4), from_ema(key, 4))
        np.testing.assert_allclose(
            evaluate.sampler_from_state(live, sampler.config)(key, 4), from_live(key, 4)
        )

    def test_missing_step_lists_available(self, tiny_run, capsys):
        assert evaluate.main(["--workdir", str(tiny_run), "--step", "7"]) == 1
        err = capsys.readouterr().err
        assert "step 7 does not exist" in err and "[3]" in err

    def test_run_without_checkpoints(self, tmp_path, capsys):
        assert evaluate.main(["--workdir", str(tmp_path)]) == 1
        assert "No checkpoints" in capsys.readouterr().err
        (tmp_path / "checkpoints").mkdir()
        assert evaluate.main(["--workdir", str(tmp_path)]) == 1
        assert "No checkpoints" in capsys.readouterr().err


def test_run_config_is_read_from_a_cloud_workdir(tmp_path, monkeypatch):
    """gs:// workdirs go through epath, as in the training loop (pathlib would turn
    gs://bucket/run into the local path gs:/bucket/run). epath's gs:// backend is mocked to
    a local directory, and the checkpoint holds no config, so config.json is what is read."""
    from etils.epath import testing as epath_testing

    from gan_jax import checkpointing
    from tests.helpers import tiny_config

    bucket = tmp_path / "bucket"
    (bucket / "run").mkdir(parents=True)
    config = tiny_config("seed_mlp")
    (bucket / "run" / "config.json").write_text(config.to_json())

    def local(path):
        return str(path).replace("gs://bucket", str(bucket))

    class NoCheckpointConfig:
        def __init__(self, workdir, *, read_only):
            assert str(workdir) == "gs://bucket/run" and read_only

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def restore_config(self, step):
            return None

    monkeypatch.setattr(checkpointing, "Checkpointer", NoCheckpointConfig)
    with epath_testing.mock_epath(
        open=lambda _, path, *args, **kwargs: open(local(path), *args, **kwargs),
        exists=lambda _, path: os.path.exists(local(path)),
    ):
        loaded = evaluate.load_run_config("gs://bucket/run")
    assert json.loads(loaded.to_json()) == json.loads(config.to_json())
