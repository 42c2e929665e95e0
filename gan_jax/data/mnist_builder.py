"""A TFDS builder for MNIST that prepares and reads without TensorFlow.

TFDS's own `mnist` builder uses `Image` features, whose encoding needs TensorFlow. This one stores
`tfds.features.Tensor` features in array_record files, which TFDS writes and reads with numpy
only; read it with `builder.as_data_source()` or `tfds.data_source("gan_jax_mnist")`.

Examples are written in canonical order (shuffling disabled), so record i of a split is image i
of the canonical IDX file. The source that provided the files is recorded in the dataset's
metadata (`builder.info.metadata["source"]`).

TFDS prepares into a temporary `incomplete.*` directory and renames it into place only after
every split and the dataset info are written, so a failed or killed preparation never leaves a
directory that `is_prepared()` accepts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from gan_jax.data import idx, mnist_sources

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


class GanJaxMnist(tfds.core.GeneratorBasedBuilder):
    """MNIST, canonical train (60,000) and test (10,000) splits, TensorFlow-free.

    Features: image uint8 [28, 28, 1] (0 = background, 255 = ink), label int64 in 0..9.

    Args (keyword-only, besides TFDS's data_dir, config and version):
      mnist_dir: a directory of the four canonical IDX files (source (a)); None reads
        $GAN_JAX_MNIST_DIR. Only consulted while preparing.
      cache: where sources (b) and (c) keep downloads; None means the user cache directory.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Tensor features, array_record, canonical order."}

    def __init__(
        self,
        *,
        mnist_dir: str | os.PathLike | None = None,
        cache: str | os.PathLike | None = None,
        file_format: str = "array_record",
        **kwargs: Any,
    ) -> None:
        self._mnist_dir = mnist_dir
        self._cache = cache
        super().__init__(file_format=file_format, **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS derives this from the package's resources, which for an editable install goes
        # through `importlib_resources`, a module TFDS uses but does not require. The file's own
        # path is what TFDS wants (it looks for a checksums.tsv beside it; there is none).
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="The MNIST database of handwritten digits, canonical order.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        # Raw bytes: 784 B per image, where the default int64 list takes ~1.2 kB.
                        shape=IMAGE_SHAPE,
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.BYTES,
                    ),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="http://yann.lecun.com/exdb/mnist/",
            # Keep record i == canonical image i: reproducible indices across machines.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # sources are fetched and checked by mnist_sources, not TFDS
        found = mnist_sources.find_mnist_files(mnist_dir=self._mnist_dir, cache=self._cache)
        self.info.metadata["source"] = found.source
        self.info.metadata["source_description"] = found.description
        paths = found.paths
        return {
            "train": self._generate_examples(
                paths[mnist_sources.TRAIN_IMAGES], paths[mnist_sources.TRAIN_LABELS]
            ),
            "test": self._generate_examples(
                paths[mnist_sources.TEST_IMAGES], paths[mnist_sources.TEST_LABELS]
            ),
        }

    def _generate_examples(
        self, images_path: os.PathLike, labels_path: os.PathLike
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        # Stream the images block by block: only TFDS's own writer buffer holds the split.
        labels = idx.read(labels_path)
        position = 0
        for block in idx.iter_rows(images_path):
            for image in block:
                yield position, {"image": image[..., None], "label": np.int64(labels[position])}
                position += 1
        if position != len(labels):
            raise ValueError(f"{images_path} has {position} images, {labels_path} {len(labels)}")
