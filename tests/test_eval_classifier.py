"""The feature network: shipped weights, pixel ranges, input checks, channel handling."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.evaluation import classifier


@pytest.fixture(scope="module")
def network():
    return classifier.load_feature_network()


@pytest.fixture(scope="module")
def mnist_test():
    from gan_jax import data

    return data.load_split("mnist", "test")


class TestShippedWeights:
    def test_sidecar_records_hash_accuracy_and_command(self, network):
        sidecar = json.loads((classifier.WEIGHTS_DIR / classifier.SIDECAR_NAME).read_text())
        assert sidecar["sha256"] == classifier.sha256_of(
            classifier.WEIGHTS_DIR / classifier.WEIGHTS_NAME
        )
        assert sidecar["test_accuracy"] >= 0.993
        assert sidecar["command"].startswith("python experiments/train_mnist_classifier.py")
        assert isinstance(sidecar["seed"], int)
        assert network.version == sidecar["version"]
        assert network.info == {
            "name": "classifier",
            "version": sidecar["version"],
            "sha256": sidecar["sha256"],
            "test_accuracy": sidecar["test_accuracy"],
        }

    def test_small_and_not_a_pickle(self):
        data = (classifier.WEIGHTS_DIR / classifier.WEIGHTS_NAME).read_bytes()
        assert len(data) < 5 * 2**20
        assert not data.startswith(b"\x80")  # pickle protocol 2+ header

    def test_tampered_weights_are_refused(self, network, tmp_path):
        classifier.save_weights(network.params, tmp_path, {"version": "t", "test_accuracy": 0.0})
        weights = tmp_path / classifier.WEIGHTS_NAME
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="sha256"):
            classifier.load_feature_network(tmp_path)

    def test_missing_weights_say_how_to_train(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="train_mnist_classifier"):
            classifier.load_feature_network(tmp_path)

    def test_test_accuracy_as_recorded(self, network, mnist_test):
        images, labels = mnist_test
        _, logits = classifier.features_and_logits(network.params, classifier.to_unit_range(images))
        accuracy = (logits.argmax(1) == labels).mean()
        assert accuracy >= 0.993
        # Same weights, same images: only XLA's summation order can move a borderline image.
        assert abs(accuracy - network.test_accuracy) <= 2e-4


class TestPixelRanges:
    def test_uint8(self):
        x = np.array([0, 255, 51], np.uint8)
        np.testing.assert_allclose(classifier.to_unit_range(x), [0.0, 1.0, 0.2])

    def test_symmetric_and_unit(self):
        x = np.array([-1.0, 0.0, 1.0, 1.2], np.float32)
        np.testing.assert_allclose(
            classifier.to_unit_range(x, pixel_range="symmetric"), [0.0, 0.5, 1.0, 1.0]
        )
        np.testing.assert_allclose(classifier.to_unit_range(x, pixel_range="unit"), [0, 0, 1, 1])
        np.testing.assert_allclose(
            classifier.to_unit_range(x, pixel_range=(-1.0, 3.0)), [0.0, 0.25, 0.5, 0.55]
        )

    def test_keeps_jax_arrays_on_device(self):
        assert isinstance(classifier.to_unit_range(jnp.zeros(3), pixel_range="unit"), jax.Array)

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="symmetric"):
            classifier.to_unit_range(np.zeros(3), pixel_range="signed")


class TestInputs:
    @pytest.mark.parametrize("shape", [(4, 28, 28), (4, 32, 32, 1), (4, 28, 28, 2), (4, 784)])
    def test_wrong_shapes_are_named(self, network, shape):
        with pytest.raises(ValueError, match=r"\[N, 28, 28, 1\].*" + str(shape[1])):
            classifier.embed(network, np.zeros(shape, np.float32))

    def test_embed_shapes_and_batching(self, network, mnist_test):
        images = mnist_test[0][:250]
        whole = classifier.embed(network, images, batch_size=1000)
        batched = classifier.embed(network, images, batch_size=64)
        assert whole.features.shape == (250, 128) and whole.logits.shape == (250, 1, 10)
        assert (whole.features >= 0).all()  # post-ReLU features
        np.testing.assert_allclose(batched.features, whole.features, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(whole.labels, whole.channel_labels[:, 0])

    def test_generator_range_gives_same_predictions(self, network, mnist_test):
        images, _ = mnist_test
        images = images[:200]
        symmetric = images.astype(np.float32) / 127.5 - 1.0
        a = classifier.embed(network, images)
        b = classifier.embed(network, symmetric, pixel_range="symmetric")
        np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-4)

    def test_stacked_channels_are_classified_separately(self, network, mnist_test):
        images, labels = mnist_test
        stacked = np.concatenate([images[0:100], images[100:200], images[200:300]], axis=-1)
        embedding = classifier.embed(network, stacked)
        assert embedding.features.shape == (100, 384)
        assert embedding.logits.shape == (100, 3, 10)
        expected = 100 * labels[0:100] + 10 * labels[100:200] + labels[200:300]
        assert (embedding.labels == expected).mean() >= 0.97
        # Channel 1's features are the features of the second digit alone.
        single = classifier.embed(network, images[100:200])
        np.testing.assert_allclose(
            embedding.features[:, 128:256], single.features, rtol=1e-4, atol=1e-4
        )
