"""Decode only what a crop needs: the window of a JPEG at the DCT scale 1/r that crop_geometry
picked (other formats whole), or the row of images decoded once into memory (the pipeline's
decoded-image cache). Imports no jax."""

from collections.abc import Sequence

import tensorflow as tf

from hmr_jax.data.crop_geometry import jpeg_ratios


def _clip_window(win: tf.Tensor, hw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """crop_geometry's window (x0, y0, x1, y1) clipped to an image of (h, w) -> [y0, x0, h, w]
    int32 (an empty window becomes a valid 1x1 one; its sample is dropped) and whether it overlaps
    the image at all."""
    size = tf.cast(tf.stack([hw[1], hw[0]]), tf.float32)
    lo = tf.clip_by_value(win[:2], 0.0, size)
    hi = tf.clip_by_value(win[2:], 0.0, size)
    nonempty = tf.reduce_all(hi - lo >= 1.0)
    lo = tf.where(nonempty, lo, 0.0)
    hi = tf.where(nonempty, hi, 1.0)
    lo_i = tf.cast(lo, tf.int32)
    wh = tf.maximum(tf.cast(hi - lo, tf.int32), 1)
    return tf.stack([lo_i[1], lo_i[0], wh[1], wh[0]]), nonempty


def cached_crop(
    images: Sequence[tf.Variable | tf.Tensor], branch: tf.Tensor, row: tf.Tensor, window: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """decode_crop's counterpart for images decoded once and held in memory: images[k] (n, h_k, w_k,
    3) uint8 all n images decoded at 1 / DECODE_RATIOS[k] (JPEG) or the full images (one entry;
    geometry from max_decode_ratio=1). Returns the row's pixels at the crop's `branch`, the full
    image's (h, w) and nonempty (the window overlaps the pixels); crop_geometry's `inverse` maps to
    these pixels as is."""
    if len(images) == 1:
        pixels = tf.gather(images[0], row)
    else:
        pixels = tf.switch_case(branch, [lambda v=v: tf.gather(v, row) for v in images])
    full_hw = tf.constant(images[0].shape[1:3].as_list(), tf.int32)  # static (tf.shape reads it all)
    return pixels, full_hw, _clip_window(window, tf.shape(pixels)[:2])[1]


def decode_crop(
    image_bytes: tf.Tensor, branch: tf.Tensor, window: tf.Tensor, inverse: tf.Tensor, max_ratio: int = 8
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode one encoded image, or only the part of it a crop needs (crop_geometry's outputs).

    JPEGs: decode_and_crop_jpeg of the window at 1/r, r = DECODE_RATIOS[branch] (libjpeg's DCT
    scaling). Other formats (PNG, BMP, GIF): decoded whole at full size (inverse rescaled to it).
    Returns pixels (h, w, 3) uint8, inverse (3, 3) crop px -> px of `pixels`, image_hw (2,) int32
    (the full-resolution image's height, width) and nonempty (whether the crop overlaps the image;
    if not, pixels may be a 1x1 dummy). Corrupt bytes raise (the pipeline counts them).
    """
    ratios = jpeg_ratios(max_ratio)

    def jpeg():
        hw = tf.io.extract_jpeg_shape(image_bytes)[:2]
        if len(ratios) == 1:
            win, nonempty = _clip_window(window, hw)
            pixels = tf.io.decode_and_crop_jpeg(image_bytes, win, channels=3)
        else:
            r = tf.gather(tf.constant(ratios, tf.int32), branch)
            # libjpeg's size at 1/r: ceil(size / r)
            win, nonempty = _clip_window(window, (hw + r - 1) // r)
            # The ratio is an op attribute: one branch per ratio, each holding nothing but the decode
            # (control flow in tf.data functions costs per op of every branch, taken or not).
            pixels = tf.switch_case(
                branch, [lambda k=k: tf.io.decode_and_crop_jpeg(image_bytes, win, channels=3, ratio=k) for k in ratios]
            )
        offset = tf.cast(tf.stack([win[1], win[0], 0]), tf.float32)[:, None]
        return pixels, tf.concat([inverse[:, :2], inverse[:, 2:] - offset], 1), hw, nonempty

    def other():
        pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        hw = tf.shape(pixels)[:2]
        r = tf.gather(tf.constant(ratios, tf.float32), branch)
        full = tf.concat(
            [inverse[:2] * r + tf.constant([[0.0, 0.0, 1.0]]) * ((r - 1.0) / 2.0), inverse[2:]], 0
        )  # crop px -> full-resolution px
        _, nonempty = _clip_window(window * r + tf.stack([-r, -r, r, r]), hw)
        return pixels, full, hw, nonempty

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
