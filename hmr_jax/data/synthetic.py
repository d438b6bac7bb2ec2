"""Synthetic training data: the body model rendered in varied poses, shapes, cameras and scenes.

    python -m hmr_jax.data.synthetic --out DIR --num N --seed S [--img-size 256]
        [--body-model PATH] [--workers 2] [--val-fraction 0.1]

    from hmr_jax.data import synthetic
    summary = synthetic.generate(out_dir, num, seed, img_size=256)

Output (DIR):
  images/<name>.jpg    one JPEG per sample (img_size x img_size)
  annotations.npz      all samples in SPIN layout (annotations.save_spin): train rows first, then the
                       validation rows as the LAST round(num * val_fraction) rows, so
                       `annotations.split_indices(ann, split, val_fraction=...)` (no `subject` field in
                       this file, so it splits by position) gives the subject-disjoint split
  train.npz, validation.npz   the same rows split in two files, with `subject` (str) and `action`
                       (sequence id, str); validation subjects never appear in train
  meta.json            counts, seed, generator version, body model path + sha256, timing, layout
  preview.png          16 samples spread over the set, with box, 2D joints and skeleton drawn

Every npz also holds the optional annotation fields `sequence` (N,) int64 (sequence id) and
`frame` (N,) int64 (frame index inside its sequence), read by `annotations.load`; resampling
(`annotations.resample_keep`) thins frames within each sequence.

Annotation fields (joint_set 'smpl24': the 24 SMPL kinematic joints, `smpl.forward(...).joints`):
  pose (72,)   axis-angle; pose[:3] is the global orientation in the CAMERA frame (OpenCV: +x right,
               +y down, +z forward), so an upright body facing the camera has pose[:3] ~ [pi, 0, 0]
  shape (10,)  betas
  S (24, 4)    camera-frame joints minus the root (pelvis) joint, metres; column 3 = 1:
               S[:, :3] == smpl.forward(shape, pose).joints - joints[0]
  cam_t (3,)   camera-frame position of the root joint. Camera-frame joints = S[:, :3] + cam_t and
               camera-frame vertices = forward(shape, pose).vertices - joints[0] + cam_t
  cam_focal (2,) fx = fy, pixels; cam_center (2,) principal point, pixels
  part (24, 3) perspective projection of S[:, :3] + cam_t: x = fx X / Z + cx, y = fy Y / Z + cy
               (pixel centres at integer coordinates); visibility 1 inside the image
               ([-0.5, size - 0.5]), 0 outside (self-occlusion is not considered)
  center, scale  square box around the projected mesh (all vertices), side = 1.2 x the larger
               extent, scale = side / 200 (SPIN)
  has_smpl 1; subject 'sub00012'; action (sequence) 'seq00037'

Structure (Human3.6M-like temporal redundancy): subjects (one body shape, skin and clothing each)
perform `sequences_per_subject` sequences of `frames_per_sequence` consecutive frames; within a
sequence the camera, scene and lighting are fixed and the pose moves smoothly (per-joint slerp,
eased) from one sampled pose to another while the body turns a little, so keeping every k-th row
(`annotations.resample_mask`) thins out near-duplicate frames as with Human3.6M.

Poses: a hand-written library of key poses (standing, walking, running, sitting, crouching, arms up,
reaching, waving, T/A-pose, ...) blended pairwise, mirrored at random and perturbed per joint with
moderate noise; knees and elbows bend about their hinge axis only. A pose is kept when every joint
is within the `skeleton` joint limits (with a margin) and a coarse capsule test finds no gross
self-intersection (limbs through the torso or each other), otherwise it is redrawn.
The body turns +-180 deg about the vertical (option `yaw_range_deg`), tilts a little, and the
camera (elevation -8..25 deg, field of view 35..65 deg) frames it at a random size and position.

Determinism: every random draw comes from a generator seeded by (seed, kind, id) where kind is
subject / sequence / sample and id its number, so results do not depend on the worker count or
order; the same seed gives identical annotations and identical JPEG bytes.

Workers are separate processes ('spawn'; safe under a parent that already runs jax); they use only
numpy (a numpy port of `smpl.forward`) and the software rasteriser `hmr_jax.render`.
"""

import argparse
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time

import numpy as np
from jaxtyping import Float, UInt8
from scipy.spatial.transform import Rotation

from hmr_jax import render, skeleton

GENERATOR_VERSION = "synth-1"
FRAMES_PER_SEQUENCE = 8
SEQUENCES_PER_SUBJECT = 3
YAW_RANGE_DEG = 180.0
BOX_MARGIN = 1.2
NUM_BETAS = 10
BETA_CLIP = 2.5
_KIND_SUBJECT, _KIND_SEQUENCE, _KIND_SAMPLE, _KIND_BACKGROUND = 1, 2, 3, 4


# ----------------------------------------------------------------------------------- pose library
# Local joint rotations (axis-angle, SMPL body frame: y up, facing +z, subject's left at +x).
# Sign guide: hip flexion (thigh forward) = -x; knee flexion = +x; spine/head bend forward = +x;
# left arm down = -z, up = +z, forward = -y; right arm mirrored (down +z, up -z, forward +y);
# left elbow flexion = -y, right elbow = +y; left leg out (abduction) = +z, right = -z.
KEY_POSES = {
    "t_pose": {16: (0, 0, -0.1), 17: (0, 0, 0.1)},
    "a_pose": {16: (0, 0, -0.75), 17: (0, 0, 0.75), 18: (0, -0.1, 0), 19: (0, 0.1, 0)},
    "standing": {
        16: (0, -0.1, -1.25),
        17: (0, 0.1, 1.25),
        18: (0, -0.25, 0),
        19: (0, 0.25, 0),
        1: (0, 0, 0.06),
        2: (0, 0, -0.06),
        15: (0.1, 0, 0),
    },
    "walking": {
        16: (0, 0.35, -1.2),
        17: (0, 0.35, 1.2),
        18: (0, -0.45, 0),
        19: (0, 0.7, 0),
        1: (-0.5, 0, 0.05),
        2: (0.3, 0, -0.05),
        4: (0.2, 0, 0),
        5: (0.9, 0, 0),
        7: (0.1, 0, 0),
        8: (-0.15, 0, 0),
        3: (0, -0.08, 0),
        9: (0, -0.08, 0),
    },
    "running": {
        16: (0, 0.6, -1.2),
        17: (0, 0.6, 1.2),
        18: (0, -1.5, 0),
        19: (0, 1.5, 0),
        1: (-1.0, 0, 0.05),
        2: (0.45, 0, -0.05),
        4: (0.7, 0, 0),
        5: (1.6, 0, 0),
        8: (0.3, 0, 0),
        0: (0.2, 0, 0),
        3: (0.05, 0, 0),
    },
    "sitting": {
        1: (-1.5, 0, 0.12),
        2: (-1.5, 0, -0.12),
        4: (1.5, 0, 0),
        5: (1.5, 0, 0),
        16: (0, -0.45, -1.15),
        17: (0, 0.45, 1.15),
        18: (0, -1.1, 0),
        19: (0, 1.1, 0),
        3: (0.1, 0, 0),
        15: (0.15, 0, 0),
    },
    "crouching": {
        0: (0.5, 0, 0),
        1: (-1.75, 0, 0.2),
        2: (-1.75, 0, -0.2),
        4: (2.2, 0, 0),
        5: (2.2, 0, 0),
        7: (-0.5, 0, 0),
        8: (-0.5, 0, 0),
        3: (0.15, 0, 0),
        16: (0, -1.0, -0.45),
        17: (0, 1.0, 0.45),
        18: (0, -0.4, 0),
        19: (0, 0.4, 0),
        12: (-0.3, 0, 0),
        15: (-0.2, 0, 0),
    },
    "arms_up": {16: (0, 0, 1.15), 17: (0, 0, -1.15), 18: (0, -0.2, 0), 19: (0, 0.2, 0), 15: (-0.2, 0, 0)},
    "reaching_forward": {
        17: (0, 1.3, 0.25),
        19: (0, 0.2, 0),
        16: (0, 0, -1.2),
        18: (0, -0.3, 0),
        3: (0.15, -0.1, 0),
        6: (0.1, -0.1, 0),
    },
    "reaching_up": {
        16: (0, -0.3, 1.35),
        18: (0, -0.2, 0),
        17: (0, 0.15, 1.2),
        19: (0, 0.3, 0),
        6: (0, 0, -0.12),
        9: (0, 0, -0.1),
        15: (-0.3, 0, 0),
    },
    "waving": {17: (-1.3, 0, 0.15), 19: (0, 1.5, 0), 16: (0, 0, -1.2), 18: (0, -0.2, 0), 15: (0, -0.2, 0)},
    "bending_over": {
        0: (0.9, 0, 0),
        1: (-0.95, 0, 0.05),
        2: (-0.95, 0, -0.05),
        3: (0.2, 0, 0),
        6: (0.15, 0, 0),
        16: (0, -0.6, -1.2),
        17: (0, 0.6, 1.2),
        18: (0, -0.3, 0),
        19: (0, 0.3, 0),
        12: (-0.3, 0, 0),
        15: (-0.2, 0, 0),
    },
    "lunge": {
        1: (-1.2, 0, 0.1),
        4: (1.3, 0, 0),
        2: (0.45, 0, -0.1),
        5: (0.35, 0, 0),
        16: (0, 0, -1.0),
        17: (0, 0, 1.0),
        18: (0, -0.4, 0),
        19: (0, 0.4, 0),
    },
    "kicking": {
        1: (-1.25, 0, 0.05),
        4: (0.25, 0, 0),
        16: (0, -0.2, -0.55),
        17: (0, 0.2, 0.55),
        3: (-0.12, 0, 0),
        7: (-0.3, 0, 0),
    },
    "star": {1: (0, 0, 0.4), 2: (0, 0, -0.4), 16: (0, 0, 0.75), 17: (0, 0, -0.75), 18: (0, -0.1, 0), 19: (0, 0.1, 0)},
    "side_lean": {
        3: (0, 0, 0.2),
        6: (0, 0, 0.2),
        9: (0, 0, 0.1),
        16: (0, 0, -1.2),
        17: (0, 0, 0.9),
        1: (0, 0, 0.12),
        15: (0, 0, -0.15),
    },
    "twisting": {
        3: (0, 0.3, 0),
        6: (0, 0.3, 0),
        9: (0, 0.2, 0),
        12: (0, 0.2, 0),
        16: (0, -0.5, -1.0),
        17: (0, -0.4, 1.0),
        18: (0, -0.8, 0),
        19: (0, 0.8, 0),
    },
    "phone_call": {17: (0, 0.5, 1.15), 19: (0, 2.2, 0), 16: (0, -0.1, -1.25), 18: (0, -0.3, 0), 15: (0.1, -0.2, 0)},
    "hands_forward": {16: (0, -1.2, -0.6), 17: (0, 1.2, 0.6), 18: (0, -0.9, 0), 19: (0, 0.9, 0), 3: (0.1, 0, 0)},
    "stepping_up": {
        1: (-1.0, 0, 0.08),
        4: (1.3, 0, 0),
        7: (-0.2, 0, 0),
        2: (0.1, 0, -0.05),
        16: (0, 0.3, -1.2),
        17: (0, 0.3, 1.2),
        18: (0, -0.5, 0),
        19: (0, 0.5, 0),
    },
}
KEY_POSE_NAMES = tuple(KEY_POSES)

# Hinge joints: index -> unit flexion axis (local frame), allowed flexion range (rad).
_HINGES = {
    4: ((1.0, 0.0, 0.0), (0.0, 2.5)),
    5: ((1.0, 0.0, 0.0), (0.0, 2.5)),
    18: ((0.0, -1.0, 0.0), (0.0, 2.5)),
    19: ((0.0, 1.0, 0.0), (0.0, 2.5)),
}
# Per-joint noise scale (rad) added to the blended key pose (hinges: along the hinge axis).
_NOISE_STD = np.array(
    [
        0.06,
        0.14,
        0.14,
        0.07,
        0.22,
        0.22,
        0.07,
        0.10,
        0.10,
        0.06,
        0.04,
        0.04,
        0.10,
        0.05,
        0.05,
        0.15,
        0.22,
        0.22,
        0.28,
        0.28,
        0.20,
        0.20,
        0.10,
        0.10,
    ]
)
_HINGE_OFF_AXIS_STD = 0.05
_LIMIT_MARGIN = 0.92  # keep sampled poses this fraction inside the joint limits


def key_pose_array(name: str) -> Float[np.ndarray, "24 3"]:
    """(24, 3) axis-angle of a library key pose (body frame; joint 0 = small root tilt)."""
    if name not in KEY_POSES:
        raise ValueError(f"key pose: expected one of {KEY_POSE_NAMES}, found {name!r}")
    pose = np.zeros((24, 3))
    for j, aa in KEY_POSES[name].items():
        pose[j] = aa
    return pose


def mirror_pose(pose: Float[np.ndarray, "*b 24 3"]) -> Float[np.ndarray, "*b 24 3"]:
    """Left/right mirror of (..., 24, 3) axis-angle poses (swap sides, negate y and z)."""
    out = np.asarray(pose)[..., skeleton.SMPL24_FLIP_PERM, :].copy()
    out[..., 1:] *= -1.0
    return out


def slerp_poses(a: Float[np.ndarray, "24 3"], b: Float[np.ndarray, "24 3"], w: float) -> Float[np.ndarray, "24 3"]:
    """Per-joint geodesic interpolation of (24, 3) axis-angle poses, w in [0, 1]."""
    ra, rb = Rotation.from_rotvec(a), Rotation.from_rotvec(b)
    rel = (ra.inv() * rb).as_rotvec()
    return (ra * Rotation.from_rotvec(rel * w)).as_rotvec()


def _limit_tables():
    """The anatomical limits (angles, hinges) as numpy tables, shrunk by _LIMIT_MARGIN."""
    angle = np.full(24, np.inf)
    for idx, _, lim in skeleton.ANGLE_LIMITS_DEG:
        angle[idx] = np.deg2rad(lim) * _LIMIT_MARGIN
    hinges = [
        (idx, np.asarray(axis), np.deg2rad(lo), np.deg2rad(hi) * _LIMIT_MARGIN, np.deg2rad(off) * _LIMIT_MARGIN)
        for idx, _, axis, lo, hi, off in skeleton.HINGE_LIMITS_DEG
    ]
    return angle, hinges


_ANGLE_LIMITS, _HINGE_LIMITS = _limit_tables()


def within_limits(pose: Float[np.ndarray, "24 3"]) -> bool:
    """True if every body joint (1..23) of a (24, 3) pose is inside the (shrunk) joint limits."""
    aa = Rotation.from_rotvec(pose[1:]).as_rotvec()  # canonical: angle in [0, pi]
    aa = np.concatenate([np.zeros((1, 3)), aa])
    if np.any(np.linalg.norm(aa, axis=-1) > _ANGLE_LIMITS):
        return False
    for idx, axis, lo, hi, off in _HINGE_LIMITS:
        f = aa[idx] @ axis
        if f < lo or f > hi or np.linalg.norm(aa[idx] - f * axis) > off:
            return False
    return True


def _perturb(pose: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    out = pose + rng.standard_normal((24, 3)) * _NOISE_STD[:, None] * noise
    for j, (axis, (lo, hi)) in _HINGES.items():
        axis = np.asarray(axis)
        flex = float(pose[j] @ axis) + rng.standard_normal() * _NOISE_STD[j] * noise
        off = rng.standard_normal(3) * _HINGE_OFF_AXIS_STD * noise
        off -= (off @ axis) * axis
        out[j] = np.clip(flex, lo, hi) * axis + off
    return out


def sample_key_blend(
    rng: np.random.Generator,
    noise: float = 1.0,
    rest_joints: Float[np.ndarray, "24 3"] | None = None,
    max_tries: int = 12,
) -> Float[np.ndarray, "24 3"]:
    """One plausible (24, 3) body-frame pose: two key poses blended, maybe mirrored, perturbed.

    Redrawn until within limits and (given the body's (24, 3) rest joints) free of gross
    self-intersection (`self_intersects`);
    after `max_tries` the noise is dropped (a pure blend of two key poses).
    """
    lib = _LIBRARY
    for attempt in range(max_tries + 1):
        i, j = rng.choice(len(lib), size=2, replace=True)
        w = float(rng.beta(0.7, 0.7))
        pose = slerp_poses(lib[i], lib[j], w)
        if rng.random() < 0.5:
            pose = mirror_pose(pose)
        if attempt < max_tries:
            pose = _perturb(pose, rng, noise)
        if within_limits(pose) and (rest_joints is None or not self_intersects(rest_joints, pose)):
            return pose
    return key_pose_array("standing")


_LIBRARY = np.stack([key_pose_array(n) for n in KEY_POSE_NAMES])

# ----------------------------------------------------------------------------------- numpy SMPL


@dataclasses.dataclass(frozen=True)
class _Body:
    """numpy arrays of an SMPLModel (fast layout, float32) for the workers."""

    v_template: np.ndarray
    shapedirs: np.ndarray  # (K, V*3)
    posedirs: np.ndarray  # (207, V*3)
    joint_template: np.ndarray
    joint_shapedirs: np.ndarray  # (K, 72)
    weights: np.ndarray
    faces: np.ndarray
    part_label: np.ndarray  # (V,) argmax skinning joint
    hair: np.ndarray  # (V,) bool: top and back of the head (rest pose)


def _body_from_model(model) -> _Body:
    asnp = lambda x: np.asarray(x, np.float32)
    v = model.v_template.shape[0]
    k = model.shapedirs.shape[0]
    label = np.argmax(np.asarray(model.weights), axis=1)
    tv = np.asarray(model.v_template)
    is_head = label == 15
    lo, hi = tv[is_head].min(0), tv[is_head].max(0)
    rel = (tv - lo) / np.maximum(hi - lo, 1e-6)  # position inside the head's box, 0..1
    hair = is_head & ((rel[:, 1] > 0.72) | ((rel[:, 2] < 0.45) & (rel[:, 1] > 0.3)))
    return _Body(
        v_template=asnp(model.v_template),
        shapedirs=asnp(model.shapedirs).reshape(k, v * 3),
        posedirs=asnp(model.posedirs).reshape(207, v * 3),
        joint_template=asnp(model.joint_template),
        joint_shapedirs=asnp(model.joint_shapedirs).reshape(k, 72),
        weights=asnp(model.weights),
        faces=np.asarray(model.faces, np.int64),
        part_label=label,
        hair=hair,
    )


def _shaped(body: _Body, betas: np.ndarray):
    k = len(betas)
    b = betas.astype(np.float32)
    v = body.v_template + (b @ body.shapedirs[:k]).reshape(-1, 3)
    j = body.joint_template.astype(np.float64) + (betas @ body.joint_shapedirs[:k]).reshape(24, 3)
    return v, j


def _chain(rot: np.ndarray, rest_joints: np.ndarray):
    """Kinematic chain: (24, 3, 3) local rotations, (24, 3) rest joints -> posed joints, G (24, 4, 4)."""
    g = np.zeros((24, 4, 4))
    g[:, 3, 3] = 1.0
    g[0, :3, :3] = rot[0]
    g[0, :3, 3] = rest_joints[0]
    for i in range(1, 24):
        p = skeleton.SMPL24_PARENTS[i]
        local = np.eye(4)
        local[:3, :3] = rot[i]
        local[:3, 3] = rest_joints[i] - rest_joints[p]
        g[i] = g[p] @ local
    return g[:, :3, 3].copy(), g


def _joints_np(rest_joints: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return _chain(Rotation.from_rotvec(pose).as_matrix(), rest_joints)[0]


def _forward_np(body: _Body, v_shaped: np.ndarray, rest_joints: np.ndarray, pose: np.ndarray):
    """numpy `smpl.forward` for one body: (V, 3) vertices, (24, 3) joints (float64)."""
    rot = Rotation.from_rotvec(pose).as_matrix()  # (24, 3, 3)
    feat = (rot[1:] - np.eye(3)).reshape(207).astype(np.float32)
    # einsum, not BLAS: multi-threaded BLAS waking up per call costs ~10x on a busy machine.
    v_posed = v_shaped + np.einsum("k,kn->n", feat, body.posedirs).reshape(-1, 3)
    joints, g = _chain(rot, rest_joints)
    a = g.copy()
    a[:, :3, 3] -= np.einsum("jab,jb->ja", g[:, :3, :3], rest_joints)
    t = np.einsum("vj,jn->vn", body.weights, a[:, :3, :].reshape(24, 12).astype(np.float32))
    t = t.reshape(-1, 3, 4)
    verts = t[:, :, 0] * v_posed[:, 0:1] + t[:, :, 1] * v_posed[:, 1:2] + t[:, :, 2] * v_posed[:, 2:3] + t[:, :, 3]
    return verts.astype(np.float64), joints


# ----------------------------------------------------------------------------------- self-contact

# Capsules on the joint skeleton: (name, joint a, joint b, radius as a fraction of body height).
_SEGMENTS = {
    "torso_low": (0, 6, 0.060),
    "torso_high": (6, 12, 0.062),
    "head": (12, 15, 0.05),
    "l_upper_arm": (16, 18, 0.025),
    "r_upper_arm": (17, 19, 0.025),
    "l_forearm": (18, 20, 0.021),
    "r_forearm": (19, 21, 0.021),
    "l_hand": (20, 22, 0.02),
    "r_hand": (21, 23, 0.02),
    "l_thigh": (1, 4, 0.040),
    "r_thigh": (2, 5, 0.040),
    "l_shin": (4, 7, 0.030),
    "r_shin": (5, 8, 0.030),
    "l_foot": (7, 10, 0.025),
    "r_foot": (8, 11, 0.025),
}
_CONTACT_PAIRS = [
    (a, b)
    for side in "lr"
    for a, b in (
        (f"{side}_forearm", "torso_low"),
        (f"{side}_forearm", "torso_high"),
        (f"{side}_hand", "torso_low"),
        (f"{side}_hand", "torso_high"),
        (f"{side}_forearm", "head"),
        (f"{side}_hand", "l_thigh"),
        (f"{side}_hand", "r_thigh"),
        (f"{side}_forearm", "l_thigh"),
        (f"{side}_forearm", "r_thigh"),
        (f"{side}_shin", "torso_low"),
        (f"{side}_foot", "torso_low"),
    )
] + [
    ("l_forearm", "r_forearm"),
    ("l_hand", "r_hand"),
    ("l_forearm", "r_hand"),
    ("r_forearm", "l_hand"),
    ("l_shin", "r_shin"),
    ("l_thigh", "r_shin"),
    ("r_thigh", "l_shin"),
    ("l_foot", "r_foot"),
    ("l_shin", "r_foot"),
    ("r_shin", "l_foot"),
    ("l_upper_arm", "head"),
    ("r_upper_arm", "head"),
]
_T = np.linspace(0.0, 1.0, 7)


def self_intersects(rest_joints: Float[np.ndarray, "24 3"], pose: Float[np.ndarray, "24 3"]) -> bool:
    """Coarse test: do two body capsules (limbs, torso, head on the joint skeleton) overlap?

    rest_joints: (24, 3) joints of the shaped body in the rest pose; pose: (24, 3) axis-angle.
    """
    rj = np.asarray(rest_joints, np.float64)
    j = _joints_np(rj, pose)
    height = float(np.ptp(rj[:, 1])) + 0.25  # joints span ankle..head; add feet and skull
    pts = {n: j[a][None] + _T[:, None] * (j[b] - j[a])[None] for n, (a, b, _) in _SEGMENTS.items()}
    for a, b in _CONTACT_PAIRS:
        d = np.linalg.norm(pts[a][:, None] - pts[b][None], axis=-1).min()
        if d < (_SEGMENTS[a][2] + _SEGMENTS[b][2]) * height:
            return True
    return False


# ----------------------------------------------------------------------------------- randomness


def _rng(seed: int, kind: int, ident: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), kind, int(ident)])


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _hsv(h, s, v):
    import colorsys

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
class _Subject:
    betas: np.ndarray
    colors: np.ndarray  # (24, 3) albedo per skinning joint
    hair: np.ndarray | None  # (3,) hair colour, or None (bald / cap of skin colour)


def _subject(seed: int, sid: int) -> _Subject:
    rng = _rng(seed, _KIND_SUBJECT, sid)
    betas = np.clip(rng.standard_normal(NUM_BETAS), -BETA_CLIP, BETA_CLIP)
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
    return _Subject(betas=betas, colors=colors, hair=hair if rng.random() < 0.85 else None)


@dataclasses.dataclass(frozen=True)
class _Sequence:
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


def _global_rotation(seq: _Sequence, t: float, root_local: np.ndarray) -> np.ndarray:
    """Camera-frame global orientation (3, 3) at sequence time t in [0, 1]."""
    world = _rot_y(seq.yaw + seq.yaw_drift * t) @ Rotation.from_rotvec(seq.tilt).as_matrix()
    return _rot_x(seq.elevation) @ _rot_x(np.pi) @ world @ Rotation.from_rotvec(root_local).as_matrix()


def _ease(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


def _frame_pose(seq: _Sequence, frame: int, frames: int) -> tuple[np.ndarray, float]:
    t = frame / max(frames - 1, 1)
    return slerp_poses(seq.pose_a, seq.pose_b, _ease(t)), t


def _camera_pose(seq: _Sequence, body_pose: np.ndarray, t: float) -> np.ndarray:
    """(72,) SMPL pose with the camera-frame global orientation."""
    pose = body_pose.copy()
    pose[0] = Rotation.from_matrix(_global_rotation(seq, t, body_pose[0])).as_rotvec()
    return pose.reshape(72)


def _sequence(
    seed: int, qid: int, rest_joints: np.ndarray, img_size: int, frames: int, yaw_range_deg: float = 180.0
) -> _Sequence:
    rng = _rng(seed, _KIND_SEQUENCE, qid)
    pose_a = sample_key_blend(rng, rest_joints=rest_joints)
    pose_b = sample_key_blend(rng, rest_joints=rest_joints)
    # The mid-way pose must not self-intersect either; else hold the first pose (a gentle sway).
    if self_intersects(rest_joints, slerp_poses(pose_a, pose_b, 0.5)):
        pose_b = _perturb(pose_a, rng, 0.2) if rng.random() < 0.5 else pose_a
        if not within_limits(pose_b) or self_intersects(rest_joints, pose_b):
            pose_b = pose_a
    fov = np.deg2rad(rng.uniform(35.0, 65.0))
    focal = 0.5 * img_size / np.tan(0.5 * fov)
    seq = _Sequence(
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
        bp, t = _frame_pose(seq, f, frames)
        j = _joints_np(rest_joints, _camera_pose(seq, bp, t).reshape(24, 3))
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


# ----------------------------------------------------------------------------------- backgrounds


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


# ----------------------------------------------------------------------------------- one sample


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which subject / sequence / frame each sample index is (train rows first, then validation)."""

    num: int
    num_train: int
    frames_per_sequence: int = FRAMES_PER_SEQUENCE
    sequences_per_subject: int = SEQUENCES_PER_SUBJECT
    yaw_range_deg: float = YAW_RANGE_DEG  # a sequence's start yaw is uniform in +-this (degrees)

    @property
    def frames_per_subject(self) -> int:
        return self.frames_per_sequence * self.sequences_per_subject

    @property
    def train_subjects(self) -> int:
        return -(-self.num_train // self.frames_per_subject)

    @property
    def train_sequences(self) -> int:
        return -(-self.num_train // self.frames_per_sequence)

    def locate(self, index: int) -> tuple[str, int, int, int]:
        """(split, subject id, sequence id, frame) of sample `index` (ids global, split-disjoint)."""
        if not 0 <= index < self.num:
            raise IndexError(f"sample index: expected in [0, {self.num}), found {index}")
        val = index >= self.num_train
        local = index - self.num_train if val else index
        subject = local // self.frames_per_subject + (self.train_subjects if val else 0)
        sequence = local // self.frames_per_sequence + (self.train_sequences if val else 0)
        return ("validation" if val else "train"), subject, sequence, local % self.frames_per_sequence


def image_name(split: str, subject: int, sequence: int, frame: int) -> str:
    return f"images/{split[:3]}_sub{subject:05d}_seq{sequence:05d}_f{frame:02d}.jpg"


def _render_sample(
    body: _Body, out_dir: str, seed: int, img_size: int, layout: Layout, index: int, cache: dict
) -> dict:
    split, sid, qid, frame = layout.locate(index)
    if cache.get("sid") != sid:
        subj = _subject(seed, sid)
        v_shaped, rest = _shaped(body, subj.betas)
        cache.clear()
        albedo = subj.colors[body.part_label].astype(np.float32)
        if subj.hair is not None:
            albedo[body.hair] = subj.hair
        cache.update(sid=sid, subj=subj, v_shaped=v_shaped, rest=rest, albedo=albedo)
    subj, v_shaped, rest = cache["subj"], cache["v_shaped"], cache["rest"]
    if cache.get("qid") != qid:
        cache.update(
            qid=qid,
            seq=_sequence(seed, qid, rest, img_size, layout.frames_per_sequence, layout.yaw_range_deg),
            background=background(_rng(seed, _KIND_BACKGROUND, qid), img_size),
        )
    seq: _Sequence = cache["seq"]
    rng = _rng(seed, _KIND_SAMPLE, index)

    body_pose, t = _frame_pose(seq, frame, layout.frames_per_sequence)
    pose = _camera_pose(seq, body_pose, t)
    verts, joints = _forward_np(body, v_shaped, rest, pose.reshape(24, 3))
    root = joints[0].copy()
    cam_t = np.array([seq.root_xy[0], seq.root_xy[1], seq.distance])
    verts_cam = verts - root + cam_t
    s_rel = joints - root
    center_px = np.array([img_size / 2.0, img_size / 2.0])
    res = render.render_mesh(
        verts_cam,
        body.faces,
        seq.focal,
        center_px,
        (img_size, img_size),
        background=cache["background"],
        vertex_colors=cache["albedo"],
        light_dir=seq.light_dir,
        ambient=seq.ambient,
        cull_backfaces=True,
    )
    img = res.image
    if seq.noise_sigma > 0:
        noisy = img + seq.noise_sigma * rng.standard_normal(img.shape, dtype=np.float32)
        img = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def project(p):
        return seq.focal * p[:, :2] / p[:, 2:3] + center_px

    uv = project(s_rel + cam_t)
    vis = np.all((uv >= -0.5) & (uv <= img_size - 0.5), axis=1) & (s_rel[:, 2] + cam_t[2] > 0)
    vuv = project(verts_cam)
    lo, hi = vuv.min(0), vuv.max(0)
    box_center = 0.5 * (lo + hi)
    side = BOX_MARGIN * float(np.max(hi - lo))

    name = image_name(split, sid, qid, frame)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=seq.jpeg_quality)
    path = os.path.join(out_dir, name)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return dict(
        index=index,
        imgname=name,
        split=split,
        subject=f"sub{sid:05d}",
        action=f"seq{qid:05d}",
        sequence=qid,
        frame=frame,
        center=box_center,
        scale=side / 200.0,
        part=np.concatenate([uv, vis[:, None].astype(np.float64)], axis=1),
        S=np.concatenate([s_rel, np.ones((24, 1))], axis=1),
        pose=pose,
        shape=subj.betas,
        cam_focal=np.array([seq.focal, seq.focal]),
        cam_center=center_px,
        cam_t=cam_t,
    )


# ----------------------------------------------------------------------------------- workers

# One process per core: single-threaded BLAS / OpenMP in the workers.
_SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    "JAX_PLATFORMS": "cpu",
}
_WORKER = {}  # per worker process: body model and job constants (set once by _init_worker)


def _init_worker(body: _Body, out_dir: str, seed: int, img_size: int, layout: Layout):
    _WORKER.update(body=body, out_dir=out_dir, seed=seed, img_size=img_size, layout=layout)


def _work(indices) -> list[dict]:
    w = _WORKER
    cache = {}
    return [_render_sample(w["body"], w["out_dir"], w["seed"], w["img_size"], w["layout"], i, cache) for i in indices]


def _load_body(body_model_path) -> tuple[_Body, str]:
    from hmr_jax import smpl

    if body_model_path is None:
        from hmr_jax import body_model

        body_model_path = body_model.default_body_model_path()
    path = os.fspath(body_model_path)
    model = smpl.load(path)
    if model.num_betas < NUM_BETAS:
        raise ValueError(f"{path}: expected a body model with >= {NUM_BETAS} shape directions, found {model.num_betas}")
    return _body_from_model(model), path


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stack(rows: list[dict], with_subject: bool) -> dict:
    out = {
        "imgname": np.array([r["imgname"] for r in rows]),
        "center": np.stack([r["center"] for r in rows]).astype(np.float32),
        "scale": np.array([r["scale"] for r in rows], np.float32),
        "part": np.stack([r["part"] for r in rows]).astype(np.float32),
        "S": np.stack([r["S"] for r in rows]).astype(np.float32),
        "pose": np.stack([r["pose"] for r in rows]).astype(np.float32),
        "shape": np.stack([r["shape"] for r in rows]).astype(np.float32),
        "has_smpl": np.ones(len(rows), np.float32),
        "joint_set": "smpl24",
        "cam_focal": np.stack([r["cam_focal"] for r in rows]).astype(np.float32),
        "cam_center": np.stack([r["cam_center"] for r in rows]).astype(np.float32),
        "cam_t": np.stack([r["cam_t"] for r in rows]).astype(np.float32),
        "action": np.array([r["action"] for r in rows]),
        "sequence": np.array([r["sequence"] for r in rows], np.int64),
        "frame": np.array([r["frame"] for r in rows], np.int64),
    }
    if with_subject:
        out["subject"] = np.array([r["subject"] for r in rows])
    return out


def _save(path: str, rows: list[dict], with_subject: bool) -> None:
    """annotations.save_spin (with `sequence` and `frame`); atomic."""
    from hmr_jax.data import annotations as ann_lib

    tmp = path + ".tmp.npz"
    ann_lib.save_spin(tmp, _stack(rows, with_subject))
    os.replace(tmp, path)


def preview(out_dir, ann_path=None, num: int = 16, cols: int = 4) -> UInt8[np.ndarray, "h w 3"]:
    """Contact sheet of `num` samples spread over the set (read back from the JPEGs), with the
    box (yellow), 2D joints (red) and skeleton (green) drawn."""
    from PIL import Image

    from hmr_jax.data import annotations as ann_lib

    ann = ann_lib.load(ann_path or os.path.join(out_dir, "annotations.npz"))
    idx = np.unique(np.linspace(0, len(ann) - 1, min(num, len(ann))).round().astype(int))
    tiles = []
    for i in idx:
        img = np.asarray(Image.open(os.path.join(out_dir, ann.imgname[i])).convert("RGB"))
        scale = max(1, 192 // img.shape[0])
        if scale > 1:
            img = np.repeat(np.repeat(img, scale, 0), scale, 1)
        c, half = ann.center[i] * scale, 100.0 * ann.scale[i] * scale
        kp = ann.part[i].copy()
        kp[:, :2] = (kp[:, :2] + 0.5) * scale - 0.5
        c = (ann.center[i] + 0.5) * scale - 0.5
        img = render.draw_box(img, c[0] - half, c[1] - half, c[0] + half, c[1] + half)
        img = render.draw_keypoints(img, kp, parents=skeleton.SMPL24_PARENTS, radius=max(1, img.shape[0] // 110))
        tiles.append(img)
    return render.contact_sheet(tiles, cols=cols)


def generate(
    out_dir,
    num: int,
    seed: int,
    img_size: int = 256,
    body_model_path=None,
    workers: int | None = None,
    val_fraction: float = 0.1,
    *,
    frames_per_sequence: int = FRAMES_PER_SEQUENCE,
    sequences_per_subject: int = SEQUENCES_PER_SUBJECT,
    yaw_range_deg: float = YAW_RANGE_DEG,
    progress: bool = True,
    write_preview: bool = True,
) -> dict:
    """Render `num` samples into `out_dir` (layout: module docstring); returns the summary (meta.json).

    workers: processes (default os.cpu_count(); 1 = in this process). The validation split is
    the last round(num * val_fraction) samples, made of subjects that do not occur in train.
    yaw_range_deg: each sequence starts at a yaw (turn about the vertical; 0 = facing the camera)
    uniform in +-yaw_range_deg (default 180: all directions); the body still turns up to
    +-0.5 rad more within the sequence.
    """
    num, seed, img_size = int(num), int(seed), int(img_size)
    if num < 1:
        raise ValueError(f"num: expected at least 1 sample, found {num}")
    if img_size < 16:
        raise ValueError(f"img_size: expected at least 16 px, found {img_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected in [0, 1), found {val_fraction}")
    if frames_per_sequence < 1 or sequences_per_subject < 1:
        raise ValueError(
            f"frames_per_sequence / sequences_per_subject: expected >= 1, found "
            f"{frames_per_sequence} / {sequences_per_subject}"
        )
    yaw_range_deg = float(yaw_range_deg)
    if not 0.0 <= yaw_range_deg <= 180.0:
        raise ValueError(f"yaw_range_deg: expected in [0, 180], found {yaw_range_deg}")
    workers = int(workers or os.cpu_count() or 1)
    t0 = time.time()
    body, model_path = _load_body(body_model_path)
    n_val = int(round(num * val_fraction))
    if num - n_val < 1:
        raise ValueError(
            f"num={num}, val_fraction={val_fraction}: expected at least one training sample, found {num - n_val}"
        )
    layout = Layout(num, num - n_val, frames_per_sequence, sequences_per_subject, yaw_range_deg)
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    ann_path = os.path.join(out_dir, "annotations.npz")
    if os.path.exists(ann_path):
        os.remove(ann_path)  # written last: its presence means "complete"

    chunk = max(1, min(frames_per_sequence * 2, -(-num // max(workers * 4, 1))))
    chunks = [list(range(i, min(i + chunk, num))) for i in range(0, num, chunk)]
    rows: list[dict | None] = [None] * num
    t_render = time.time()
    try:
        from tqdm import tqdm

        bar = tqdm(total=num, desc="synthetic", unit="img", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover
        bar = None
    args = (body, out_dir, seed, img_size, layout)
    if workers <= 1 or len(chunks) == 1:
        _init_worker(*args)
        results = map(_work, chunks)
        pool = None
    else:
        ctx = multiprocessing.get_context("spawn")
        saved = {k: os.environ.get(k) for k in _SINGLE_THREAD_ENV}
        os.environ.update(_SINGLE_THREAD_ENV)  # inherited by the spawned workers only
        try:
            pool = ctx.Pool(min(workers, len(chunks)), initializer=_init_worker, initargs=args)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        results = pool.imap_unordered(_work, chunks)
    try:
        for res in results:
            for r in res:
                rows[r["index"]] = r
            if bar is not None:
                bar.update(len(res))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()
    render_s = time.time() - t_render

    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "validation"]
    _save(os.path.join(out_dir, "train.npz"), train_rows, with_subject=True)
    if val_rows:
        _save(os.path.join(out_dir, "validation.npz"), val_rows, with_subject=True)
    elif os.path.exists(os.path.join(out_dir, "validation.npz")):
        os.remove(os.path.join(out_dir, "validation.npz"))
    summary = {
        "generator": GENERATOR_VERSION,
        "num": num,
        "train": len(train_rows),
        "validation": len(val_rows),
        "seed": seed,
        "img_size": img_size,
        "val_fraction": val_fraction,
        "frames_per_sequence": frames_per_sequence,
        "sequences_per_subject": sequences_per_subject,
        "yaw_range_deg": yaw_range_deg,
        "train_subjects": len({r["subject"] for r in train_rows}),
        "validation_subjects": len({r["subject"] for r in val_rows}),
        "sequences": len({r["sequence"] for r in rows}),
        "body_model": os.path.abspath(model_path),
        "body_model_sha256": _sha256(model_path),
        "joint_set": "smpl24",
        "workers": workers,
        "render_seconds": round(render_s, 3),
        "images_per_second": round(num / max(render_s, 1e-9), 2),
        "files": {
            "annotations": "annotations.npz",
            "train": "train.npz",
            "validation": "validation.npz" if val_rows else None,
            "images": "images/",
            "preview": "preview.png" if write_preview else None,
        },
        "conventions": "camera frame OpenCV (+x right, +y down, +z forward); pose[:3] global "
        "orientation in the camera frame; S = joints - root (pelvis); camera-frame "
        "joints = S + cam_t; part = perspective projection with cam_focal, cam_center",
    }
    # annotations.npz last (atomic): its presence marks a complete data set.
    _save(ann_path + ".part.npz", train_rows + val_rows, with_subject=False)
    if write_preview:
        render.save_png(os.path.join(out_dir, "preview.png"), preview(out_dir, ann_path + ".part.npz"))
    summary["total_seconds"] = round(time.time() - t0, 3)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(ann_path + ".part.npz", ann_path)
    return summary


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--num", type=int, required=True, help="number of samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--body-model", default=None, help="SMPL .npz/.pkl (default: procedural body)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--frames-per-sequence", type=int, default=FRAMES_PER_SEQUENCE)
    ap.add_argument("--sequences-per-subject", type=int, default=SEQUENCES_PER_SUBJECT)
    ap.add_argument(
        "--yaw-range-deg",
        type=float,
        default=YAW_RANGE_DEG,
        help="start yaw uniform in +- this many degrees (180: all directions)",
    )
    ap.add_argument("--no-preview", action="store_true")
    a = ap.parse_args(argv)
    summary = generate(
        a.out,
        a.num,
        a.seed,
        a.img_size,
        a.body_model,
        a.workers,
        a.val_fraction,
        frames_per_sequence=a.frames_per_sequence,
        sequences_per_subject=a.sequences_per_subject,
        yaw_range_deg=a.yaw_range_deg,
        write_preview=not a.no_preview,
    )
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "num",
                    "train",
                    "validation",
                    "train_subjects",
                    "validation_subjects",
                    "images_per_second",
                    "total_seconds",
                )
            }
        )
    )
    return summary


if __name__ == "__main__":
    main()
