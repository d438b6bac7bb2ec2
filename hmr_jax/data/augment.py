"""Crop and augmentation as TensorFlow ops (runs inside tf.data; imports no jax).

One sample is cropped and augmented through a single image-plane similarity ``A`` (3x3) that maps
source-image pixels (x, y; pixel centres at integer coordinates, OpenCV convention) to crop pixels:

    u = F * Mf * R(theta) @ (x - c) + o,   F = img_size / side,  o = (img_size - 1) / 2,

where ``c`` is the box centre, ``side = 200 * scale * s_aug`` the box side in source pixels,
``R(theta)`` a 2D rotation in image coordinates (x right, y down; theta > 0 turns the content
clockwise on screen) and ``Mf = diag(-1, 1)`` when the sample is flipped, identity otherwise.

Geometry kept consistent with the image (tests prove it):
- 2D keypoints: ``A`` applied in float (no rounding; SPIN rounds, a known flaw), then the joint
  set's left/right permutation when flipped. Keypoints that leave the crop KEEP their visibility
  (as SPIN); nothing is clamped. Losses may mask them if they wish.
- 3D joints: a rotation in the image plane is a rotation about the camera z axis:
  ``X' = M3 R3(theta) X`` with ``R3 = [[c, -s, 0], [s, c, 0], [0, 0, 1]]`` and ``M3 = diag(-1, 1, 1)``
  when flipped (then permuted). Root-centred joints stay root-centred.
- SMPL pose: global orientation ``R_go' = M3 R3 R_go M3``; body joints: when flipped, left/right
  swap of the 24 SMPL joints and each axis-angle (x, y, z) -> (x, -y, -z) (= M R M).
- Optional pinhole camera (focal (2,), principal point (2,), translation t (3,)) with
  camera-frame point = root-relative joint + t: focal' = F * focal, centre' = A(centre),
  t' = M3 R3 t. Exact for square pixels (fx == fy).

Image: one bilinear resampling of the decoded uint8 pixels, each of the four taps outside the
source = 0 (black, as SPIN), then channel-wise multiplicative noise U[noise_min, noise_max]
clipped to [0, 255], then ImageNet normalisation, all fused into one XLA-compiled loop
(`warp_normalize`; on CPU about 3x cheaper than TF's ImageProjectiveTransformV3 + normalisation
and cheaper than crop_and_resize alone; TF builds without an XLA JIT fall back to those ops).
JPEGs are decoded only inside the window the crop needs (``decode_and_crop_jpeg``),
and downscaled in the DCT domain by libjpeg (``ratio`` r in {1, 2, 4, 8}: the largest power of two
<= side / img_size, at most ``max_decode_ratio``), so the decoded box still has >= img_size px
across (no resolution lost; libjpeg's block averaging also anti-aliases). Decoded pixel i
at 1/r covers source pixels r*i .. r*i + r - 1 (centre r*i + (r - 1) / 2), i.e.
``x_dec = (x + 0.5) / r - 0.5``; ``A`` is composed with that map, so keypoints and pixels stay
consistent (tests: a bright dot lands on its keypoint at r = 1, 2, 4, 8).
Parameters are drawn in numpy (`sample_params`; the pipeline draws them per epoch from
(seed, epoch)), so they do not depend on tf.data's parallelism. The geometry functions take any
leading batch dims; the pipeline runs them once per epoch or per group of samples, and per batch
for the annotations (`crop_geometry`, `augment_annotations`): in tf.data each small TF op costs
microseconds, as much as the pixel work of a small crop, so per image only the decode, the fused
warp and a few window ops remain.
`box_crop` makes the stored squares of pre-cropped TFDS records (tfds_builder) with the same
decode and resampling.

This module holds the pixel work (the fused warp + noise + normalisation) and the per-example entry
points; the rest lives in: `augment_config` (AugmentConfig, sample_params), `crop_geometry` (A,
decode ratio, window), `image_decode` (windowed / cached decode), `image_warp` (the TF-op warps)
and `annotation_transforms` (keypoints, joints, pose, camera).
"""

import functools
from typing import Any

import numpy as np
import tensorflow as tf

from hmr_jax.data.annotation_transforms import augment_annotations
from hmr_jax.data.augment_config import AugmentConfig
from hmr_jax.data.crop_geometry import crop_geometry
from hmr_jax.data.image_decode import decode_crop
from hmr_jax.data.image_warp import warp_inverse

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalize(image: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
    # min(x * n, 255) * a + b = min(x * (n * a), 255 * a) + b with a = 1 / (255 std) > 0.
    a = 1.0 / (255.0 * tf.constant(IMAGENET_STD))
    b = -tf.constant(IMAGENET_MEAN) / tf.constant(IMAGENET_STD)
    noise = tf.cast(noise, tf.float32)[..., None, None, :]
    return tf.minimum(image * (noise * a), 255.0 * a) + b


def _bilinear(flat: tf.Tensor, width: tf.Tensor, height: tf.Tensor, inverse: tf.Tensor, img_size: int) -> tf.Tensor:
    """flat (L, 3) uint8 holding a height x width image row by row (L >= h * w; the rest unused)
    -> (img_size, img_size, 3) float32 bilinear samples at inverse @ (u, v, 1); each of the four
    taps outside the image reads 0 (ImageProjectiveTransform's CONSTANT fill)."""
    grid = np.mgrid[0:img_size, 0:img_size].astype(np.float32).reshape(2, -1)
    u, v = tf.constant(grid[1]), tf.constant(grid[0])  # (S*S,) crop px x, y
    x = inverse[0, 0] * u + inverse[0, 1] * v + inverse[0, 2]
    y = inverse[1, 0] * u + inverse[1, 1] * v + inverse[1, 2]
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = x - x0, y - y0
    xi, yi = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    out = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xx, yy = xi + dx, yi + dy
            inside = (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
            idx = tf.clip_by_value(yy, 0, height - 1) * width + tf.clip_by_value(xx, 0, width - 1)
            w = tf.where(inside, wx * wy, 0.0)
            out = out + tf.cast(tf.gather(flat, idx), tf.float32) * w[:, None]
    return tf.reshape(out, [img_size, img_size, 3])


def _warp_normalize(flat, width, height, inverse, noise, img_size, normalise=True):
    image = _bilinear(flat, width, height, inverse, img_size)
    return _normalize(image, noise) if normalise else image


# XLA fuses these elementwise passes and gathers into one loop: on CPU the fused warp + noise +
# normalisation costs less than TF's crop_and_resize alone and a third of
# ImageProjectiveTransformV3 + normalisation (TF's broadcasting multiply alone costs more than the
# whole fused normalisation). XLA compiles one program per input shape, so the warp's input is
# flattened and zero-padded to one of a few lengths (_FLAT_BUCKETS).
_normalize_xla = tf.function(_normalize, jit_compile=True, autograph=False, reduce_retracing=True)
_warp_normalize_xla = tf.function(_warp_normalize, jit_compile=True, autograph=False, reduce_retracing=True)
_FLAT_BUCKETS = np.unique(np.ceil(64 * 2.0 ** (np.arange(49) / 2))).astype(np.int32)  # x sqrt(2)


@functools.cache
def _xla_works() -> bool:
    try:
        with tf.init_scope():
            _normalize_xla(tf.zeros([2, 2, 3]), tf.ones([3]))
        return True
    except Exception:  # pylint: disable=broad-except  # no XLA JIT in this TensorFlow build
        return False


def normalize(image: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
    """float 0..255 (..., H, W, 3) -> channel noise (..., 3) (>= 0), clip to 255, ImageNet
    normalisation: ((min(image * noise, 255) / 255) - mean) / std."""
    image = tf.convert_to_tensor(image, tf.float32)
    return (_normalize_xla if _xla_works() else _normalize)(image, noise)


def warp_normalize(
    pixels: tf.Tensor,
    inverse: tf.Tensor,
    noise: tf.Tensor | None,
    img_size: int,
    axis_aligned: tf.Tensor | bool = False,
) -> tf.Tensor:
    """normalize(warp_inverse(pixels, inverse, img_size), noise), fused by XLA: one bilinear
    resampling of the uint8 pixels (h, w, 3), each tap outside the image = 0, no rounding in
    between. noise=None: the warped float 0..255 pixels, not normalised. Without an XLA JIT (some
    TensorFlow builds) the separate TF ops run instead (`axis_aligned` picks crop_and_resize)."""
    if not _xla_works():
        image = warp_inverse(pixels, inverse, img_size, axis_aligned)
        image = image if noise is None else normalize(image, noise)
        return tf.ensure_shape(image, [img_size, img_size, 3])
    shape = tf.shape(pixels)
    n = shape[0] * shape[1]
    buckets = tf.constant(_FLAT_BUCKETS)
    padded = tf.gather(buckets, tf.minimum(tf.searchsorted(buckets, n[None])[0], len(_FLAT_BUCKETS) - 1))
    flat = tf.pad(tf.reshape(pixels, [-1, 3]), [[0, tf.maximum(padded - n, 0)], [0, 0]])
    out = _warp_normalize_xla(
        flat,
        shape[1],
        shape[0],
        tf.cast(inverse, tf.float32),
        tf.ones([3]) if noise is None else tf.cast(noise, tf.float32),
        img_size,
        noise is not None,
    )
    return tf.ensure_shape(out, [img_size, img_size, 3])


def crop_image(
    image_bytes: tf.Tensor, center: tf.Tensor, scale: tf.Tensor, params: dict[str, tf.Tensor], cfg: AugmentConfig
) -> dict[str, tf.Tensor]:
    """One encoded image -> image (S, S, 3) float32 normalised, crop_matrix A (3, 3), valid (crop
    overlaps the image), image_hw (2,). params: rot, scale, flip, noise (3,) of this sample.
    (The pipeline runs the same steps with crop_geometry batched.)"""
    geo = crop_geometry(center, scale, params, cfg)
    pixels, inverse, hw, nonempty = decode_crop(
        image_bytes, geo["branch"], geo["window"], geo["inverse"], cfg.max_decode_ratio
    )
    image = warp_normalize(
        pixels, inverse, params["noise"], cfg.img_size, tf.equal(tf.cast(params["rot"], tf.float32), 0.0)
    )
    return {"image": image, "crop_matrix": geo["crop_matrix"], "valid": nonempty, "image_hw": tf.cast(hw, tf.int32)}


def box_crop(
    image_bytes: tf.Tensor,
    center: tf.Tensor,
    scale: tf.Tensor,
    crop_px: int,
    crop_factor: float,
    max_decode_ratio: int = 8,
) -> dict[str, tf.Tensor]:
    """The stored crop of pre-cropped records (tfds_builder): the axis-aligned square of side
    crop_factor * 200 * scale around center, resampled to crop_px x crop_px uint8 (rounded) with
    the same decode + bilinear resampling as a training crop (warp_normalize without the
    normalisation: each tap outside the image = 0, as there).
    Returns image (crop_px, crop_px, 3) uint8, crop_matrix A (3, 3) source px -> stored px, valid."""
    cfg = AugmentConfig(img_size=crop_px, enabled=False, max_decode_ratio=max_decode_ratio)
    params = {
        "rot": tf.constant(0.0),
        "scale": tf.constant(float(crop_factor)),
        "flip": tf.constant(False),
        "noise": tf.ones([3]),
    }
    geo = crop_geometry(center, scale, params, cfg)
    pixels, inverse, _, nonempty = decode_crop(
        image_bytes, geo["branch"], geo["window"], geo["inverse"], max_decode_ratio
    )
    image = warp_normalize(pixels, inverse, None, crop_px, True)
    image = tf.ensure_shape(tf.saturate_cast(tf.round(image), tf.uint8), [crop_px, crop_px, 3])
    return {"image": image, "crop_matrix": geo["crop_matrix"], "valid": nonempty}


def augment_example(
    image_bytes: tf.Tensor, ex: dict[str, tf.Tensor], params: dict[str, Any], cfg: AugmentConfig, flip_perm: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Crop + augment one encoded image and its annotations (crop_image + augment_annotations).

    ex: center (2,), scale (), part (J,3), S (J,4), pose (72,), optional cam_focal (2,),
    cam_center (2,), cam_t (3,). Returns image, crop_matrix, valid, image_hw, keypoints_2d,
    joints_3d, pose (+ cam_focal, cam_center, cam_t).
    """
    params = {k: tf.convert_to_tensor(v) for k, v in params.items()}
    out = crop_image(image_bytes, ex["center"], ex["scale"], params, cfg)
    out.update(
        augment_annotations(ex, out["crop_matrix"], tf.cast(params["rot"], tf.float32), params["flip"], flip_perm)
    )
    return out
