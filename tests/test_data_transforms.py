"""Host image conversion (uint8, resize, channels) and the TFDS-builder path's TensorFlow check."""

import importlib.util

import numpy as np
import pytest

from gan_jax import data
from gan_jax.data import tfds_images, transforms


def test_to_uint8_maps_each_dtype():
    floats = np.array([0.0, 0.5, 1.0, 1.5, -0.2, 0.999], np.float32)
    np.testing.assert_array_equal(transforms.to_uint8(floats), [0, 128, 255, 255, 0, 255])
    np.testing.assert_array_equal(transforms.to_uint8(np.array([True, False])), [255, 0])
    np.testing.assert_array_equal(transforms.to_uint8(np.array([0, 7, 255], np.int64)), [0, 7, 255])
    with pytest.raises(ValueError, match="0..255"):
        transforms.to_uint8(np.array([256], np.int32))
    same = np.arange(5, dtype=np.uint8)
    assert transforms.to_uint8(same) is same


def test_resize_keeps_constant_images_and_averages_when_shrinking():
    constant = np.full((2, 28, 28, 3), 77, np.uint8)
    resized = transforms.resize_images(constant, height=32, width=20)
    assert resized.shape == (2, 32, 20, 3) and resized.dtype == np.uint8
    assert np.all(resized == 77)
    # 2x shrink of 2x2 blocks holding 0 and 200 in a checkerboard of blocks: the filter's
    # support covers whole blocks, so each output pixel is near a block value and the mean
    # intensity is preserved.
    blocks = (np.indices((4, 4)).sum(axis=0) % 2 * 200).astype(np.uint8)
    image = np.kron(blocks, np.ones((2, 2), np.uint8))[None, :, :, None]
    small = transforms.resize_images(image, height=4, width=4)
    assert abs(float(small.mean()) - float(image.mean())) < 3
    np.testing.assert_array_equal(small[0, 1:3, 1:3, 0] > 100, blocks[1:3, 1:3] > 100)


def test_resize_is_identity_at_the_same_size():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    assert transforms.resize_images(images, height=8, width=8) is images


def test_to_image_shape_converts_channels():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (2, 6, 6), dtype=np.uint8)
    rgb = transforms.to_image_shape(grey, (6, 6, 3))
    assert rgb.shape == (2, 6, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], grey)
    colour = rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    luma = transforms.to_image_shape(colour, (6, 6, 1))
    want = (colour.astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]
    assert luma.shape == (2, 6, 6, 1) and np.max(np.abs(luma - want)) <= 0.5 + 1e-9
    floats = transforms.to_image_shape(np.ones((1, 4, 4, 1), np.float32), None)
    assert floats.dtype == np.uint8 and np.all(floats == 255)
    with pytest.raises(ValueError, match="channels"):
        transforms.to_image_shape(colour, (6, 6, 2))


def test_tfds_datasets_without_tensorflow_say_how_to_install(monkeypatch):
    monkeypatch.setattr(tfds_images, "tensorflow_available", lambda: False)
    for name in ("cifar10", "celeb_a", "tfds:lsun/bedroom"):
        with pytest.raises(data.MissingTensorFlowError, match=r"pip install 'gan_jax\[tf\]'"):
            data.load_split(name, "train")


def test_tensorflow_check_matches_the_environment():
    assert tfds_images.tensorflow_available() == (
        importlib.util.find_spec("tensorflow") is not None
    )


def test_dataset_names():
    assert data.DATASET_NAMES[:2] == ("mnist", "stacked_mnist")
    assert {"fashion_mnist", "cifar10", "celeb_a"} <= set(data.DATASET_NAMES)
    data.check_name("tfds:lsun/bedroom")
    for bad in ("tfds:", "MNIST", "cifar"):
        with pytest.raises(ValueError, match="available"):
            data.check_name(bad)
