"""Real data through the shipped feature network: scores, Stacked MNIST, the cache, the floor."""

import numpy as np
import pytest

from gan_jax.evaluation import classifier, metrics, reference


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory):
    # One cache per test session, shared by the evaluation test modules: the MNIST test
    # reference and floor are computed once, never read from the user's cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAN_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "eval_cache"))
        yield


@pytest.fixture(scope="module")
def network():
    return classifier.load_feature_network()


@pytest.fixture(scope="module")
def mnist_test():
    from gan_jax import data

    return data.load_split("mnist", "test")


class TestRealMnist:
    def test_test_set_score_is_near_ten(self, network, mnist_test):
        embedding = classifier.embed(network, mnist_test[0])
        assert metrics.classifier_score(embedding.logits) >= 9.8

    def test_single_class_score_is_near_one(self, network, mnist_test):
        images, labels = mnist_test
        embedding = classifier.embed(network, images[labels == 7])
        assert metrics.classifier_score(embedding.logits) < 1.1


class TestRealStackedMnist:
    def test_one_triple_covers_one_mode(self, network):
        from gan_jax import data

        images, labels = data.load_split("stacked_mnist", "test")
        # The first image whose three digits the network reads right (misreads are ~1.5%).
        first = int(np.argmax(classifier.embed(network, images[:20]).labels == labels[:20]))
        embedding = classifier.embed(network, np.repeat(images[first : first + 1], 500, axis=0))
        result = metrics.stacked_mnist_modes(embedding.channel_labels)
        assert result["modes"] == 1
        assert embedding.labels[0] == labels[first]
        assert metrics.classifier_score(embedding.logits) < 1.01

    @pytest.mark.slow
    def test_real_data_covers_all_modes(self, network):
        from gan_jax import data

        images, labels = data.load_split("stacked_mnist", "train")
        images = images[: metrics.STACKED_MNIST_NUM_SAMPLES]
        embedding = classifier.embed(network, images)
        result = metrics.stacked_mnist_modes(embedding.channel_labels)
        assert result["modes"] == 1000
        assert result["kl_to_uniform"] < 0.05
        assert (embedding.labels == labels[: len(images)]).mean() > 0.97


class TestCache:
    def test_computed_once_then_read(self, network, monkeypatch):
        calls = []
        load = reference.load_real_images

        def counting_load(*args, **kwargs):
            calls.append(args)
            return load(*args, **kwargs)

        monkeypatch.setattr(reference, "load_real_images", counting_load)
        first = reference.get_reference("mnist", network=network, max_examples=600)
        second = reference.get_reference("mnist", network=network, max_examples=600)
        assert len(calls) == 1
        for name in ("mu", "cov", "features", "radii", "histogram"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
        assert second.info == first.info
        assert second.info["feature_network"]["sha256"] == network.sha256
        assert second.info["num_examples"] == 600
        assert len(second.info["data_sha256"]) == 64
        assert second.features.shape == (600, 128) and second.radii.shape == (600,)
        np.testing.assert_allclose(second.histogram.sum(), 1.0)

    def test_key_includes_the_network_hash(self, network, monkeypatch, tmp_path):
        monkeypatch.setenv("GAN_JAX_CACHE_DIR", str(tmp_path))
        reference.get_reference("mnist", network=network, max_examples=300)
        other = classifier.FeatureNetwork(network.params, "other", "0" * 64, 0.0)
        reference.get_reference("mnist", network=other, max_examples=300)
        names = sorted(p.name for p in (tmp_path / "eval").iterdir())
        assert len(names) == 2 and any("net0000000000000000" in n for n in names)

    def test_corrupt_cache_file_is_recomputed(self, network, monkeypatch, tmp_path):
        monkeypatch.setenv("GAN_JAX_CACHE_DIR", str(tmp_path))
        good = reference.get_reference("mnist", network=network, max_examples=300)
        (path,) = (tmp_path / "eval").glob("*.npz")
        path.write_bytes(b"not an npz")
        again = reference.get_reference("mnist", network=network, max_examples=300)
        np.testing.assert_array_equal(good.mu, again.mu)


class TestScoring:
    def test_reference_against_itself(self, network, mnist_test):
        images = mnist_test[0][:1000]
        ref = reference.compute_reference(images, network, info={"dataset": "mnist"})
        result = reference.score_embedding(classifier.embed(network, images), ref, kid_subsets=5)
        assert result["fid"] < 1e-6 * np.trace(ref.cov)
        assert result["precision"] == 1.0 and result["recall"] == 1.0
        assert result["class_kl"] == 0.0
        # A set against itself: the unbiased MMD leaves out k(x, x) within a set but not across,
        # so it is slightly negative (by about 2 mean(diag - off-diagonal) / M).
        assert result["kid"] < 0
        assert len(result["class_histogram"]) == 10

    def test_channel_mismatch_is_explained(self, network, mnist_test):
        images = mnist_test[0][:50]
        ref = reference.compute_reference(images, network, info={"dataset": "mnist"})
        stacked = classifier.embed(network, np.concatenate([images] * 3, axis=-1))
        with pytest.raises(ValueError, match="3 channel"):
            reference.score_embedding(stacked, ref, kid_subsets=2)

    def test_floor_is_small_and_cached(self, network, monkeypatch):
        floor = reference.get_floor("mnist", network=network, num_samples=2000)
        ref = reference.get_reference("mnist", network=network)
        # Real against real: FID a small fraction of the features' total variance (~850).
        assert floor["fid"] < 0.02 * np.trace(ref.cov)
        assert floor["precision"] > 0.6 and floor["recall"] > 0.6
        assert floor["classifier_score"] > 9.5 and floor["class_kl"] < 0.01
        monkeypatch.setattr(reference, "load_real_images", None)  # a second call must not load
        assert reference.get_floor("mnist", network=network, num_samples=2000) == floor
