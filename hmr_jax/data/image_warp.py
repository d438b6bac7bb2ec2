"""Bilinear warps of a decoded image with TensorFlow's image ops (crop_and_resize,
ImageProjectiveTransformV3): the fallback of augment's fused XLA warp for TF builds without an XLA
JIT, and a reference for it in tests. Imports no jax."""

import tensorflow as tf


def warp_inverse(
    image: tf.Tensor, inverse: tf.Tensor, img_size: int, axis_aligned: tf.Tensor | bool = False
) -> tf.Tensor:
    """image (h, w, 3) uint8 -> (img_size, img_size, 3) float32, bilinear, outside = 0 (black, as
    SPIN); `inverse` (3, 3) maps crop px -> image px. (TF ops: warp_normalize's fallback.)

    One resampling either way: `axis_aligned` (no rotation; flip and scale allowed) uses
    crop_and_resize (about 2.5x faster on CPU), otherwise ImageProjectiveTransformV3 on uint8
    (output rounded to integers, as an OpenCV uint8 warp). Both sample the same source points.
    """
    # crop_and_resize: output pixel u samples source x = inv[0,0] * u + inv[0,2]; same for y (no
    # rotation). Both branches hold only the resampling op (small ops outside: cheaper in tf.data).
    inv = inverse
    last = float(img_size - 1)
    hw = tf.cast(tf.maximum(tf.shape(image)[:2] - 1, 1), tf.float32)
    box = tf.stack(
        [
            inv[1, 2] / hw[0],
            inv[0, 2] / hw[1],
            (inv[1, 1] * last + inv[1, 2]) / hw[0],
            (inv[0, 0] * last + inv[0, 2]) / hw[1],
        ]
    )[None]
    transform = tf.reshape(inv, [9])[:8][None]
    size = tf.constant([img_size, img_size], tf.int32)

    def projective():
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=image[None],
            transforms=transform,
            output_shape=size,
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        return tf.cast(out[0], tf.float32)

    def crop_resize():
        return tf.image.crop_and_resize(
            image[None], box, tf.zeros([1], tf.int32), [img_size, img_size], extrapolation_value=0.0
        )[0]

    if isinstance(axis_aligned, bool):
        return crop_resize() if axis_aligned else projective()
    return tf.cond(axis_aligned, crop_resize, projective)


def warp(image: tf.Tensor, A: tf.Tensor, img_size: int, axis_aligned: tf.Tensor | bool = False) -> tf.Tensor:
    """warp_inverse with A (3, 3) image px -> crop px."""
    return warp_inverse(image, tf.linalg.inv(A), img_size, axis_aligned)
