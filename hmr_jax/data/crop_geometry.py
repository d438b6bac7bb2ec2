"""Geometry of a crop: the similarity ``A`` (3x3) from source-image pixels to crop pixels, the
JPEG decode scale it allows and the window of decoded pixels it reads (conventions: augment's
docstring). Every function takes any leading batch dims (...): per sample, per batch or per
epoch. Imports no jax."""

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from hmr_jax.data.augment_config import DECODE_RATIOS, AugmentConfig


def crop_matrix(center: tf.Tensor, side: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor, img_size: int) -> tf.Tensor:
    """A (..., 3, 3) float32: source px -> crop px (module docstring). center (..., 2); side, rot,
    flip (...)."""
    center = tf.cast(center, tf.float32)
    f = img_size / tf.cast(side, tf.float32)
    c, s = tf.cos(rot), tf.sin(rot)
    mx = tf.where(flip, -1.0, 1.0)
    m = tf.stack([tf.stack([mx * f * c, -mx * f * s], -1), tf.stack([f * s, f * c], -1)], -2)
    o = (img_size - 1) / 2.0
    t = o - tf.linalg.matvec(m, center)  # (..., 2)
    top = tf.concat([m, t[..., None]], axis=-1)  # (..., 2, 3)
    bottom = tf.broadcast_to(tf.constant([[0.0, 0.0, 1.0]]), tf.concat([tf.shape(t)[:-1], [1, 3]], 0))
    return tf.concat([top, bottom], axis=-2)


def apply_affine(A: tf.Tensor, points: tf.Tensor) -> tf.Tensor:
    """A (..., 3, 3), points (..., N, 2) -> (..., N, 2)."""
    return tf.einsum("...ij,...nj->...ni", A[..., :2, :2], points) + A[..., None, :2, 2]


def decode_ratio(A: tf.Tensor, img_size: int, max_ratio: int = 8) -> tf.Tensor:
    """Index into DECODE_RATIOS (int32) of the largest r <= min(side / img_size, max_ratio), where
    side / img_size = 1 / F is read off A (source px per crop px)."""
    zoom = 1.0 / tf.norm(A[..., 1, :2], axis=-1)  # side / img_size
    n = DECODE_RATIOS.index(max_ratio)
    return tf.add_n([tf.cast(zoom >= r, tf.int32) for r in DECODE_RATIOS[1 : n + 1]] + [tf.zeros_like(zoom, tf.int32)])


def scaled_decode_matrix(r: int | tf.Tensor) -> tf.Tensor:
    """(..., 3, 3) map of 1/r-decoded px -> source px: x = r * x_dec + (r - 1) / 2; r int or (...)."""
    r = tf.cast(r, tf.float32)
    o, z, one = (r - 1.0) / 2.0, tf.zeros_like(r), tf.ones_like(r)
    return tf.stack([tf.stack([r, z, o], -1), tf.stack([z, r, o], -1), tf.stack([z, z, one], -1)], -2)


def jpeg_ratios(max_ratio: int) -> tuple[int, ...]:
    """DECODE_RATIOS up to max_ratio."""
    return DECODE_RATIOS[: DECODE_RATIOS.index(max_ratio) + 1]


def crop_geometry(
    center: tf.Tensor, scale: tf.Tensor, params: Mapping[str, tf.Tensor], cfg: AugmentConfig
) -> dict[str, tf.Tensor]:
    """Everything a crop needs except the pixels, for any leading dims (the pipeline runs it once
    per epoch or per group of samples, not once per image: in tf.data a handful of small TF ops
    costs as much as decoding a 64 px JPEG).

    center (..., 2), scale (...), params rot / scale / flip (...). Returns crop_matrix A (..., 3, 3)
    (source px -> crop px); branch (...) int32: the JPEG decode scale, an index into
    DECODE_RATIOS (r = the largest power of two <= side / img_size, at most max_decode_ratio);
    inverse (..., 3, 3): crop px -> px of the JPEG decoded at 1/r; window (..., 4) float32 x0, y0,
    x1, y1: the decoded pixels the bilinear taps can reach (clipped to the image by `decode_crop`,
    once its header is read).
    """
    side = 200.0 * tf.cast(scale, tf.float32) * tf.cast(params["scale"], tf.float32)
    A = crop_matrix(center, side, tf.cast(params["rot"], tf.float32), params["flip"], cfg.img_size)
    if cfg.max_decode_ratio > 1:
        idx = decode_ratio(A, cfg.img_size, cfg.max_decode_ratio)
    else:
        idx = tf.zeros_like(side, tf.int32)
    r = tf.gather(tf.constant(DECODE_RATIOS, tf.float32), idx)
    inverse = tf.linalg.inv(A @ scaled_decode_matrix(r))  # crop px -> decoded px
    e = cfg.img_size - 0.5
    corners = tf.constant([[-0.5, -0.5], [-0.5, e], [e, -0.5], [e, e]], tf.float32)
    src = tf.matmul(corners, inverse[..., :2, :2], transpose_b=True) + inverse[..., None, :2, 2]
    lo = tf.floor(tf.reduce_min(src, axis=-2)) - 1.0
    hi = tf.math.ceil(tf.reduce_max(src, axis=-2)) + 2.0
    return {"crop_matrix": A, "branch": idx, "inverse": inverse, "window": tf.concat([lo, hi], axis=-1)}


def decode_ratios_needed(scale: np.ndarray, cfg: AugmentConfig) -> tuple[int, ...]:
    """The JPEG decode ratios crop_geometry can pick for boxes of these `scale`s (box side = 200
    scale px) under cfg's augmentation (its largest scale factor): DECODE_RATIOS up to the largest."""
    zoom = 200.0 * float(np.max(scale, initial=0.0)) * (cfg.scale_max if cfg.enabled else 1.0)
    zoom = zoom / cfg.img_size * (1 + 1e-5)  # float32 rounding in decode_ratio
    return jpeg_ratios(max(r for r in jpeg_ratios(cfg.max_decode_ratio) if r == 1 or r <= zoom))
