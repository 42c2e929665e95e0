"""Host-side image conversion shared by every dataset: to uint8, to a requested (H, W, C).

Done with numpy and Pillow on the host, never on an accelerator, so the stored bytes are the same
on every machine (an accelerator's resize may round differently).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images of any common dtype -> uint8 of the same shape.

    uint8 passes through; bool maps to {0, 255}; floats are taken to be in [0, 1] and map to
    round(255 x) after clipping; other integer types must already lie in 0..255.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(images.dtype, np.floating):
        return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"integer images outside 0..255 ({images.dtype})")
        return images.astype(np.uint8)
    raise TypeError(f"cannot convert images of dtype {images.dtype} to uint8")


def _resize_one(image: np.ndarray, height: int, width: int) -> np.ndarray:
    # Each channel as its own 8-bit grey image (any channel count works). Pillow's bilinear
    # filter widens its support when shrinking, i.e. it antialiases, and rounds back to uint8.
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def resize_images(images: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> uint8 [N, height, width, C], bilinear with antialiasing when
    shrinking, each channel resized alone (so C is unrestricted). Returns the input unchanged
    when it already has that size."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    if images.shape[1:3] == (height, width):
        return images
    out = np.empty((images.shape[0], height, width, images.shape[3]), np.uint8)
    for i, image in enumerate(images):
        out[i] = _resize_one(image, height, width)
    return out


def to_image_shape(images: np.ndarray, image_shape: tuple[int, int, int] | None) -> np.ndarray:
    """Any images [N, H, W, C] (or [N, H, W]) -> uint8 [N, *image_shape].

    Channels: equal counts pass; 1 -> 3 repeats the grey plane; 3 -> 1 takes ITU-R 601 luma
    (Pillow's "L" conversion). None keeps the size and channels.
    """
    images = to_uint8(images)
    if images.ndim == 3:
        images = images[..., None]
    if image_shape is None:
        return images
    height, width, channels = (int(d) for d in image_shape)
    images = resize_images(images, height=height, width=width)
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1:
        return np.repeat(images, channels, axis=-1)
    if have == 3 and channels == 1:
        weights = np.array([299, 587, 114], np.uint32)
        # Integer arithmetic with round-half-up, as Pillow's L conversion does.
        luma = (images.astype(np.uint32) @ weights + 500) // 1000
        return luma.astype(np.uint8)[..., None]
    raise ValueError(f"cannot convert {have} channels to {channels}")
