"""The decoded-image cache of folder sources: a host's images decoded once into memory (JPEGs at
each DCT scaling the crops can use), so that the per-sample read + decode becomes a gather.
Imports no jax."""

import dataclasses
import logging
import os
import warnings

import numpy as np
import tensorflow as tf

from hmr_jax.data import annotations as ann_lib
from hmr_jax.data.augment_config import DECODE_RATIOS, AugmentConfig
from hmr_jax.data.crop_geometry import decode_ratios_needed


@dataclasses.dataclass(frozen=True)
class ImageCache:
    images: tuple[tf.Variable, ...]  # this host's images decoded once: (n, h_k, w_k, 3) uint8 per
    # JPEG decode ratio DECODE_RATIOS[k], or one full-size entry
    rows: np.ndarray  # (max sample id + 1,) int32: each sample id's row (-1: none)

    @property
    def max_ratio(self) -> int:
        """The geometry's max_decode_ratio (1: the full-size entry only)."""
        return DECODE_RATIOS[len(self.images) - 1]


def decode_images(
    src, ann: ann_lib.Annotations, ids: np.ndarray, limit_mb: float, cfg: AugmentConfig
) -> ImageCache | None:
    """The images of samples `ids` of folder source `src` (annotations `ann`) decoded once into
    memory, exactly as decode_crop decodes them: JPEGs at each ratio 1/r the crops of cfg can ask
    for (1 + 1/4 + ... of the full size), other formats at full size. When the images all have one
    size and fit in `limit_mb` MB; otherwise None, with a warning saying why (then read and decoded
    per sample as usual)."""
    if len(ids) == 0:
        return None
    paths = [os.path.join(src.image_root, n) for n in ann.imgname[ids]]
    try:
        data = tf.io.read_file(paths[0])
        h, w = tf.io.decode_image(data, channels=3, expand_animations=False).shape[:2]
        jpeg = bool(tf.io.is_jpeg(data))  # the first file's format stands for all (checked below)
        ratios = decode_ratios_needed(ann.scale[ids], cfg) if jpeg else (1,)
        need_mb = len(ids) * sum(-(-h // r) * -(-w // r) for r in ratios) * 3 / 2**20
        if need_mb > limit_mb:
            warnings.warn(
                f"{src}: decoded-image cache: {len(ids)} images of {h} x {w} (JPEG decode "
                f"ratios {ratios}) need {need_mb:.0f} MB, above the limit of {limit_mb:g} MB; "
                "reading the files"
            )
            return None

        def decode(path):
            data = tf.io.read_file(path)
            tf.debugging.assert_equal(tf.io.is_jpeg(data), jpeg, ["not all of one format:", path])
            if not jpeg:
                return (tf.io.decode_image(data, channels=3, expand_animations=False),)
            return tuple(tf.io.decode_jpeg(data, channels=3, ratio=r) for r in ratios)

        ds = (
            tf.data.Dataset.from_tensor_slices(paths)
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(256)
        )
        arrays = [np.empty((len(ids), -(-h // r), -(-w // r), 3), np.uint8) for r in ratios]
        done = 0
        for b in ds:  # batch() raises unless all one size
            for a, x in zip(arrays, b):
                a[done : done + len(x)] = x.numpy()
            done += len(b[0])
    except (tf.errors.OpError, ValueError) as e:
        warnings.warn(
            f"{src}: decoded-image cache: not every image decodes, or not to one size and "
            f"format ({type(e).__name__}: {str(e)[:300]}); reading the files"
        )
        return None
    rows = np.full(int(ids.max()) + 1, -1, np.int32)
    rows[ids] = np.arange(len(ids), dtype=np.int32)
    images = tuple(tf.Variable(a, trainable=False) for a in arrays)
    logging.info(
        "decoded-image cache: %d images of %d x %d (decode ratios %s), %.0f MB", len(ids), h, w, ratios, need_mb
    )
    return ImageCache(images, rows)
