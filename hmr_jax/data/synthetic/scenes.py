"""Scenes: people (shape, skin, clothing), sequences (poses, camera, light) and backgrounds.

Subjects (one body shape, skin and clothing each) perform sequences of consecutive frames; within
a sequence the camera, scene and lighting are fixed and the pose moves smoothly (per-joint slerp,
eased) from one sampled pose to another while the body turns a little. The body turns
+-`yaw_range_deg` about the vertical, tilts a little, and the camera (elevation -8..25 deg, field
of view 35..65 deg) frames the whole sequence at a random size and position.

Every random draw comes from `seeded_rng(seed, kind, id)`, kind one of KIND_*.
"""

import colorsys
import dataclasses

import numpy as np
from jaxtyping import UInt8
from scipy.spatial.transform import Rotation

from hmr_jax.data.synthetic import body as body_lib
from hmr_jax.data.synthetic import poses

BETA_CLIP = 2.5
KIND_SUBJECT, KIND_SEQUENCE, KIND_SAMPLE, KIND_BACKGROUND = 1, 2, 3, 4


def seeded_rng(seed: int, kind: int, ident: int) -> np.random.Generator:
    """The generator of draw `ident` of `kind` (KIND_*): independent of worker count and order."""
    return np.random.default_rng([int(seed), kind, int(ident)])


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


# Skin tones (RGB 0..1), light to dark; a subject's skin is a random mix of two neighbours.
_SKIN = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.72, 0.58],
        [0.80, 0.58, 0.44],
        [0.62, 0.42, 0.30],
        [0.45, 0.30, 0.21],
        [0.30, 0.20, 0.14],
    ]
)


@dataclasses.dataclass(frozen=True)
class Subject:
    """One person: body shape and clothing colours."""

    betas: np.ndarray
    colors: np.ndarray  # (24, 3) albedo per skinning joint
    hair: np.ndarray | None  # (3,) hair colour, or None (bald / cap of skin colour)


def subject(seed: int, sid: int) -> Subject:
    rng = seeded_rng(seed, KIND_SUBJECT, sid)
    betas = np.clip(rng.standard_normal(body_lib.NUM_BETAS), -BETA_CLIP, BETA_CLIP)
    k = rng.uniform(0, len(_SKIN) - 1)
    skin = _SKIN[int(k)] * (1 - k % 1) + _SKIN[min(int(k) + 1, len(_SKIN) - 1)] * (k % 1)
    shirt = _hsv(rng.random(), rng.uniform(0.1, 0.8), rng.uniform(0.25, 0.95))
    pants = _hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.12, 0.7))
    shoes = _hsv(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.05, 0.4))
    hair = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.45))
    colors = np.empty((24, 3))
    colors[[12, 15]] = skin
    colors[[20, 21, 22, 23]] = skin
    colors[[3, 6, 9, 13, 14, 16, 17]] = shirt
    colors[[18, 19]] = shirt if rng.random() < 0.6 else skin  # long / short sleeves
    colors[[0, 1, 2]] = pants
    colors[[4, 5]] = pants if rng.random() < 0.8 else skin  # trousers / shorts
    colors[[7, 8, 10, 11]] = shoes
    return Subject(betas=betas, colors=colors, hair=hair if rng.random() < 0.85 else None)


@dataclasses.dataclass(frozen=True)
class SequenceSetup:
    """One sequence: its start and end poses, body turn, camera, light and image noise."""

    pose_a: np.ndarray  # (24, 3) body frame (joint 0: small root tilt of the key pose)
    pose_b: np.ndarray
    yaw: float
    yaw_drift: float
    tilt: np.ndarray  # (3,) small rotation of the whole body (world frame)
    elevation: float
    focal: float
    distance: float
    root_xy: np.ndarray  # (2,) camera-frame x, y of the root
    light_dir: np.ndarray
    ambient: float
    jpeg_quality: int
    noise_sigma: float


def _yaw(rng: np.random.Generator, yaw_range_deg: float) -> float:
    """Start yaw (rad) uniform in +-yaw_range_deg; 180 draws exactly uniform(-pi, pi)."""
    r = np.pi if yaw_range_deg == 180.0 else np.deg2rad(yaw_range_deg)
    return float(rng.uniform(-r, r))


def _global_rotation(seq: SequenceSetup, t: float, root_local: np.ndarray) -> np.ndarray:
    """Camera-frame global orientation (3, 3) at sequence time t in [0, 1]."""
    world = _rot_y(seq.yaw + seq.yaw_drift * t) @ Rotation.from_rotvec(seq.tilt).as_matrix()
    return _rot_x(seq.elevation) @ _rot_x(np.pi) @ world @ Rotation.from_rotvec(root_local).as_matrix()


def _ease(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


def frame_pose(seq: SequenceSetup, frame: int, frames: int) -> tuple[np.ndarray, float]:
    """(24, 3) body-frame pose of `frame` (eased slerp from pose_a to pose_b) and its time in [0, 1]."""
    t = frame / max(frames - 1, 1)
    return poses.slerp_poses(seq.pose_a, seq.pose_b, _ease(t)), t


def camera_pose(seq: SequenceSetup, body_pose: np.ndarray, t: float) -> np.ndarray:
    """(72,) SMPL pose with the camera-frame global orientation."""
    pose = body_pose.copy()
    pose[0] = Rotation.from_matrix(_global_rotation(seq, t, body_pose[0])).as_rotvec()
    return pose.reshape(72)


def sequence_setup(
    seed: int, qid: int, rest_joints: np.ndarray, img_size: int, frames: int, yaw_range_deg: float = 180.0
) -> SequenceSetup:
    rng = seeded_rng(seed, KIND_SEQUENCE, qid)
    pose_a = poses.sample_key_blend(rng, rest_joints=rest_joints)
    pose_b = poses.sample_key_blend(rng, rest_joints=rest_joints)
    # The mid-way pose must not self-intersect either; else hold the first pose (a gentle sway).
    if poses.self_intersects(rest_joints, poses.slerp_poses(pose_a, pose_b, 0.5)):
        pose_b = poses.perturb(pose_a, rng, 0.2) if rng.random() < 0.5 else pose_a
        if not poses.within_limits(pose_b) or poses.self_intersects(rest_joints, pose_b):
            pose_b = pose_a
    fov = np.deg2rad(rng.uniform(35.0, 65.0))
    focal = 0.5 * img_size / np.tan(0.5 * fov)
    seq = SequenceSetup(
        pose_a=pose_a,
        pose_b=pose_b,
        yaw=_yaw(rng, yaw_range_deg),
        yaw_drift=rng.uniform(-0.5, 0.5),
        tilt=rng.normal(0.0, 0.06, 3) * np.array([1, 0.3, 1]),
        elevation=np.deg2rad(rng.uniform(-8.0, 25.0)),
        focal=float(focal),
        distance=0.0,
        root_xy=np.zeros(2),
        light_dir=np.zeros(3),
        ambient=0.0,
        jpeg_quality=0,
        noise_sigma=0.0,
    )
    # Frame the whole sequence: camera-frame extent of the joints over all frames (+ flesh).
    pts = []
    for f in range(frames):
        bp, t = frame_pose(seq, f, frames)
        j = body_lib.posed_joints(rest_joints, camera_pose(seq, bp, t).reshape(24, 3))
        pts.append(j - j[0])
    pts = np.concatenate(pts)
    pad = 0.14
    lo, hi = pts[:, :2].min(0) - pad, pts[:, :2].max(0) + pad
    extent = float(np.max(hi - lo))
    frac = rng.uniform(0.6, 0.85)  # larger side of the body's box / image size
    distance = focal * extent / (frac * img_size)
    slack = (1.0 - frac * (hi - lo) / extent) * 0.5 * img_size  # px free on each side (x, y)
    target = rng.uniform(-1, 1, 2) * np.maximum(slack, 0) * 0.7  # px offset of the box centre
    root_xy = target * distance / focal - 0.5 * (lo + hi)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-0.2, 1.0), rng.uniform(0.7, 1.5)])
    return dataclasses.replace(
        seq,
        distance=float(distance),
        root_xy=root_xy,
        light_dir=light / np.linalg.norm(light),
        ambient=float(rng.uniform(0.3, 0.6)),
        jpeg_quality=int(rng.integers(80, 96)),
        noise_sigma=float(rng.uniform(0.0, 3.0)),
    )


# --- backgrounds ----------------------------------------------------------------------------------


def _colour(rng):
    return _hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.15, 0.95))


def _upsample(low: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    chans = [
        np.asarray(Image.fromarray(low[..., c].astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
        for c in range(low.shape[-1])
    ]
    return np.stack(chans, -1)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: one procedural texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.integers(5)
    c0, c1 = _colour(rng), _colour(rng)
    a = rng.uniform(0, 2 * np.pi)
    u = xx * np.cos(a) + yy * np.sin(a)
    if kind == 0:  # gradient
        t = (u - u.min()) / max(np.ptp(u), 1e-6)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    elif kind == 1:  # smooth colour noise
        g = int(rng.integers(3, 12))
        low = rng.random((g, g, 3)).astype(np.float32)
        img = np.clip(_upsample(low, size), 0, 1) * rng.uniform(0.5, 1.0) + rng.uniform(0, 0.3)
    elif kind == 2:  # stripes
        f = rng.uniform(3, 20)
        s = np.sin(2 * np.pi * f * u + rng.uniform(0, 2 * np.pi))
        t = (s > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 * (s + 1)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    elif kind == 3:  # checker / tiles
        n = rng.uniform(3, 14)
        v = -xx * np.sin(a) + yy * np.cos(a)
        t = ((np.floor(u * n) + np.floor(v * n)) % 2).astype(np.float32)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    else:  # blurred blobs over a flat colour
        low_size = max(size // 8, 8)
        ly, lx = np.mgrid[0:low_size, 0:low_size].astype(np.float32) / low_size
        low = np.broadcast_to(c0, (low_size, low_size, 3)).astype(np.float32).copy()
        for _ in range(int(rng.integers(3, 9))):
            cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
            m = np.exp(-((lx - cx) ** 2 + (ly - cy) ** 2) / (2 * r * r))[..., None]
            low = low * (1 - m) + _colour(rng) * m
        img = _upsample(low, size)
    return np.clip(img, 0, 1).astype(np.float32)


def background(rng: np.random.Generator, size: int) -> UInt8[np.ndarray, "h w 3"]:
    """(size, size, 3) uint8 procedural background (textures, optional floor, shading, grain)."""
    img = _texture(rng, size)
    if rng.random() < 0.45:  # a "floor": a second texture below a horizon
        horizon = rng.uniform(0.45, 0.85) * size
        floor = _texture(rng, size)
        blend = np.clip((np.arange(size, dtype=np.float32) - horizon) / 2.0 + 0.5, 0, 1)[:, None, None]
        img = img * (1 - blend) + floor * blend
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + rng.uniform(0, 0.35) * ((xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a))
    img = img * shade[..., None]
    img = img * 255.0 + rng.normal(0, rng.uniform(0.5, 6.0), (size, size, 1)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
