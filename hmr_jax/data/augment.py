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
"""

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from hmr_jax import skeleton

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DECODE_RATIOS = (1, 2, 4, 8)  # libjpeg's DCT-domain scalings 1/r


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Crop size and augmentation ranges (SPIN's defaults). Angles in degrees here (config units)."""

    img_size: int = 224
    enabled: bool = True
    rot_std_deg: float = 30.0
    rot_max_deg: float = 60.0
    rot_prob_zero: float = 0.6
    scale_std: float = 0.25
    scale_min: float = 0.75
    scale_max: float = 1.25
    flip_prob: float = 0.5
    noise_min: float = 0.6
    noise_max: float = 1.4
    max_decode_ratio: int = 8  # JPEG DCT-domain downscaling up to 1/8 (1 = always full resolution)

    def __post_init__(self):
        checks = [
            (self.img_size >= 8, "img_size >= 8", self.img_size),
            (self.rot_std_deg >= 0, "rot_std_deg >= 0", self.rot_std_deg),
            (self.rot_max_deg >= 0, "rot_max_deg >= 0", self.rot_max_deg),
            (0 <= self.rot_prob_zero <= 1, "0 <= rot_prob_zero <= 1", self.rot_prob_zero),
            (self.scale_std >= 0, "scale_std >= 0", self.scale_std),
            (0 < self.scale_min <= self.scale_max, "0 < scale_min <= scale_max", (self.scale_min, self.scale_max)),
            (0 <= self.flip_prob <= 1, "0 <= flip_prob <= 1", self.flip_prob),
            (0 <= self.noise_min <= self.noise_max, "0 <= noise_min <= noise_max", (self.noise_min, self.noise_max)),
            (self.max_decode_ratio in DECODE_RATIOS, f"max_decode_ratio in {DECODE_RATIOS}", self.max_decode_ratio),
        ]
        for ok, expected, found in checks:
            if not ok:
                raise ValueError(f"AugmentConfig: expected {expected}, found {found!r}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | Any) -> "AugmentConfig":
        """From a dict / ml_collections ConfigDict with (a subset of) the field names; unknown keys fail."""
        if isinstance(cfg, cls):
            return cfg
        items = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items) - names)
        if unknown:
            raise ValueError(f"AugmentConfig: unknown keys {unknown}; expected a subset of {sorted(names)}")
        return cls(**items)

    def eval_config(self) -> "AugmentConfig":
        """Same crop size, augmentation off."""
        return dataclasses.replace(self, enabled=False)


def required_crop_factor(cfg: AugmentConfig) -> float:
    """How many box sides around the box centre an augmented crop can reach, along x or y: the
    largest augmentation scale times max |cos t| + |sin t| over the rotations (sqrt(2) from 45 deg).
    Records holding box crops (tfds_builder) must store at least this much."""
    if not cfg.enabled:
        return 1.0
    scale = cfg.scale_max if cfg.scale_std > 0 else min(max(1.0, cfg.scale_min), cfg.scale_max)
    rot = 0.0 if cfg.rot_std_deg == 0 or cfg.rot_prob_zero >= 1 else math.radians(cfg.rot_max_deg)
    extent = math.sqrt(2.0) if rot >= math.pi / 4 else math.cos(rot) + math.sin(rot)
    return scale * extent


# ----------------------------------------------------------------------------------------- params
def sample_params(rng: np.random.Generator, n: int, cfg: AugmentConfig) -> dict[str, np.ndarray]:
    """n samples' augmentation parameters (numpy, drawn up front per epoch so that tf.data does no
    random-op work): rot (n,) radians, scale (n,), flip (n,) bool, noise (n, 3)."""
    if not cfg.enabled:
        return identity_params(n)
    rot = np.clip(rng.normal(size=n) * cfg.rot_std_deg, -cfg.rot_max_deg, cfg.rot_max_deg)
    rot = np.where(rng.uniform(size=n) < cfg.rot_prob_zero, 0.0, rot)
    sc = np.clip(1.0 + rng.normal(size=n) * cfg.scale_std, cfg.scale_min, cfg.scale_max)
    flip = rng.uniform(size=n) < cfg.flip_prob
    noise = rng.uniform(cfg.noise_min, cfg.noise_max, size=(n, 3))
    return {
        "rot": np.deg2rad(rot).astype(np.float32),
        "scale": sc.astype(np.float32),
        "flip": flip,
        "noise": noise.astype(np.float32),
    }


def identity_params(n: int) -> dict[str, np.ndarray]:
    return {
        "rot": np.zeros(n, np.float32),
        "scale": np.ones(n, np.float32),
        "flip": np.zeros(n, bool),
        "noise": np.ones((n, 3), np.float32),
    }


# --------------------------------------------------------------------------------------- geometry
# Every function below takes any leading batch dims (...): per sample or per batch.
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


def rot_z(rot: tf.Tensor) -> tf.Tensor:
    """(...) -> (..., 3, 3) rotation about the camera z axis."""
    c, s = tf.cos(rot), tf.sin(rot)
    z, o = tf.zeros_like(c), tf.ones_like(c)
    return tf.stack([tf.stack([c, -s, z], -1), tf.stack([s, c, z], -1), tf.stack([z, z, o], -1)], -2)


def _permute_if(x: tf.Tensor, flip: tf.Tensor, perm: tf.Tensor) -> tf.Tensor:
    """x (..., J, D): joints permuted where flip (...)."""
    return tf.where(flip[..., None, None], tf.gather(x, perm, axis=-2), x)


def transform_keypoints_2d(part: tf.Tensor, A: tf.Tensor, flip: tf.Tensor, flip_perm: tf.Tensor) -> tf.Tensor:
    """part (..., J, 3) source px + vis -> (..., J, 3) crop px + vis (permuted when flipped)."""
    part = tf.cast(part, tf.float32)
    out = tf.concat([apply_affine(A, part[..., :2]), part[..., 2:]], axis=-1)
    return _permute_if(out, flip, flip_perm)


def transform_points_3d(points: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """points (..., N, 3) camera frame -> M3 R3 points (no permutation)."""
    out = tf.einsum("...ij,...nj->...ni", rot_z(rot), tf.cast(points, tf.float32))
    return out * tf.where(flip[..., None, None], tf.constant([-1.0, 1.0, 1.0]), 1.0)


def transform_joints_3d(S: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor, flip_perm: tf.Tensor) -> tf.Tensor:
    """S (..., J, 4) root-centred metres + conf -> rotated about camera z, mirrored + permuted if
    flipped."""
    S = tf.cast(S, tf.float32)
    out = tf.concat([transform_points_3d(S[..., :3], rot, flip), S[..., 3:]], axis=-1)
    return _permute_if(out, flip, flip_perm)


def _aa_to_quat(aa: tf.Tensor) -> tf.Tensor:
    """(..., 3) -> (..., 4) quaternion (w, x, y, z); safe at 0."""
    angle = tf.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    k = tf.where(angle > 1e-6, tf.sin(half) / tf.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return tf.concat([tf.cos(half), aa * k], axis=-1)


def _quat_to_aa(q: tf.Tensor) -> tf.Tensor:
    """(..., 4) -> (..., 3), angle in [0, pi]; robust at 0 and pi (no matrix round trip)."""
    q = tf.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    sin_half = tf.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * tf.atan2(sin_half, q[..., :1])
    k = tf.where(sin_half > 1e-7, angle / tf.maximum(sin_half, 1e-12), 2.0 / q[..., :1])
    return v * k


def _quat_mul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    aw, ax, ay, az = tf.unstack(a, axis=-1)
    bw, bx, by, bz = tf.unstack(b, axis=-1)
    return tf.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def rotate_global_orient(aa: tf.Tensor, rot: tf.Tensor) -> tf.Tensor:
    """aa (..., 3), rot (...) -> axis-angle of R3(rot) @ R(aa); untouched where rot == 0."""
    aa = tf.cast(aa, tf.float32)
    rot = tf.cast(rot, tf.float32)
    z = tf.zeros_like(rot)
    qz = tf.stack([tf.cos(rot / 2), z, z, tf.sin(rot / 2)], -1)
    rotated = _quat_to_aa(_quat_mul(qz, _aa_to_quat(aa)))  # angle canonicalised to [0, pi]
    return tf.where(tf.equal(rot, 0.0)[..., None], aa, rotated)


def flip_pose(pose: tf.Tensor) -> tf.Tensor:
    """pose (..., 72) axis-angle -> mirrored body: swap left/right SMPL joints, (x,y,z) -> (x,-y,-z)."""
    pose = tf.cast(pose, tf.float32)
    lead = tf.shape(pose)[:-1]
    p = tf.reshape(pose, tf.concat([lead, [24, 3]], 0))
    p = tf.gather(p, skeleton.SMPL24_FLIP_PERM, axis=-2) * tf.constant([1.0, -1.0, -1.0])
    return tf.reshape(p, tf.shape(pose))


def transform_pose(pose: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """pose (..., 72): global orientation rotated about camera z; mirrored where flip (...)."""
    pose = tf.cast(pose, tf.float32)
    out = tf.concat([rotate_global_orient(pose[..., :3], rot), pose[..., 3:]], axis=-1)
    return tf.where(flip[..., None], flip_pose(out), out)


def transform_camera(
    focal: tf.Tensor, cam_center: tf.Tensor, cam_t: tf.Tensor, A: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Pinhole camera in crop space for the augmented (rotated/mirrored) 3D joints.
    focal (..., 2), cam_center (..., 2), cam_t (..., 3)."""
    scale = tf.norm(A[..., 1, :2], axis=-1)[..., None]  # F
    center = apply_affine(A, tf.cast(cam_center, tf.float32)[..., None, :])[..., 0, :]
    t = transform_points_3d(tf.cast(cam_t, tf.float32)[..., None, :], rot, flip)[..., 0, :]
    return tf.cast(focal, tf.float32) * scale, center, t


def augment_annotations(
    ex: dict[str, tf.Tensor], A: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor, flip_perm: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Geometry of a sample or a batch: keypoints_2d, joints_3d, pose (+ cam_* if in `ex`)."""
    out = {
        "keypoints_2d": transform_keypoints_2d(ex["part"], A, flip, flip_perm),
        "joints_3d": transform_joints_3d(ex["S"], rot, flip, flip_perm),
        "pose": transform_pose(ex["pose"], rot, flip),
    }
    if "cam_focal" in ex:
        out["cam_focal"], out["cam_center"], out["cam_t"] = transform_camera(
            ex["cam_focal"], ex["cam_center"], ex["cam_t"], A, rot, flip
        )
    return out


# ------------------------------------------------------------------------------------------ image
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


def _jpeg_ratios(max_ratio: int) -> tuple[int, ...]:
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


def decode_ratios_needed(scale: np.ndarray, cfg: AugmentConfig) -> tuple[int, ...]:
    """The JPEG decode ratios crop_geometry can pick for boxes of these `scale`s (box side = 200
    scale px) under cfg's augmentation (its largest scale factor): DECODE_RATIOS up to the largest."""
    zoom = 200.0 * float(np.max(scale, initial=0.0)) * (cfg.scale_max if cfg.enabled else 1.0)
    zoom = zoom / cfg.img_size * (1 + 1e-5)  # float32 rounding in decode_ratio
    return _jpeg_ratios(max(r for r in _jpeg_ratios(cfg.max_decode_ratio) if r == 1 or r <= zoom))


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
    ratios = _jpeg_ratios(max_ratio)

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
