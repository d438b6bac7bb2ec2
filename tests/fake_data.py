"""Small fake datasets with a known pinhole camera (test helper; not a test module)."""

import os

import numpy as np
from PIL import Image

from hmr_jax.data import annotations as ann_lib


def project(points, focal, center):
    """points (..., J, 3) camera frame -> (..., J, 2) px."""
    return points[..., :2] / points[..., 2:3] * np.asarray(focal)[..., None, :] + np.asarray(center)[..., None, :]


def make_arrays(n, rng, *, width=200, height=160, focal=300.0, joint_set="smpl24"):
    S = rng.uniform(-0.6, 0.6, size=(n, 24, 3)).astype(np.float32)
    S -= S[:, :1]  # root-centred (pelvis = joint 0)
    cam_t = np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-0.3, 0.3, n), rng.uniform(6.0, 8.0, n)], -1).astype(
        np.float32
    )
    cam_focal = np.full((n, 2), focal, np.float32)
    cam_center = np.tile(np.array([[width / 2, height / 2]], np.float32), (n, 1))
    xy = project(S + cam_t[:, None], cam_focal, cam_center)
    part = np.concatenate([xy, np.ones((n, 24, 1))], -1).astype(np.float32)
    lo, hi = xy.min(1), xy.max(1)
    center = ((lo + hi) / 2).astype(np.float32)
    scale = (1.2 * (hi - lo).max(1) / 200).astype(np.float32)
    pose = (rng.normal(size=(n, 72)) * 0.3).astype(np.float32)
    pose[:, :3] += np.array([np.pi, 0, 0], np.float32)
    return {
        "imgname": np.array([f"img_{i:04d}.jpg" for i in range(n)]),
        "center": center,
        "scale": scale,
        "part": part,
        "S": np.concatenate([S, np.ones((n, 24, 1), np.float32)], -1),
        "pose": pose,
        "shape": rng.normal(size=(n, 10)).astype(np.float32),
        "has_smpl": np.ones(n, np.float32),
        "joint_set": np.array(joint_set),
        "cam_focal": cam_focal,
        "cam_center": cam_center,
        "cam_t": cam_t,
    }


def write_images(root, imgnames, rng, *, width=200, height=160, fmt="JPEG"):
    os.makedirs(root, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for i, name in enumerate(imgnames):
        base = np.stack([(xx * (1 + i % 3)) % 256, (yy * 2) % 256, np.full_like(xx, (40 * i) % 256)], -1)
        img = np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, name), fmt, quality=90)


def make_fake_dataset(tmp, n=12, seed=0, **kw):
    """Writes tmp/images/*.jpg + tmp/ann.npz; returns (npz path, image root, arrays)."""
    rng = np.random.default_rng(seed)
    arrays = make_arrays(n, rng, **kw)
    root = os.path.join(tmp, "images")
    write_images(root, arrays["imgname"], rng, width=kw.get("width", 200), height=kw.get("height", 160))
    path = os.path.join(tmp, "ann.npz")
    ann_lib.save_spin(path, arrays)
    return path, root, arrays
