"""Body poses: a library of key poses, blended, mirrored and perturbed within joint limits.

A pose is kept when every joint is within the `skeleton` joint limits (with a margin) and a
coarse capsule test finds no gross self-intersection (limbs through the torso or each other),
otherwise it is redrawn. Knees and elbows bend about their hinge axis only.
"""

import numpy as np
from jaxtyping import Float
from scipy.spatial.transform import Rotation

from hmr_jax import skeleton
from hmr_jax.data.synthetic import body as body_lib

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


def perturb(pose: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """`pose` plus per-joint noise of scale `noise` (hinges: along the hinge axis, clipped to its range)."""
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
            pose = perturb(pose, rng, noise)
        if within_limits(pose) and (rest_joints is None or not self_intersects(rest_joints, pose)):
            return pose
    return key_pose_array("standing")


_LIBRARY = np.stack([key_pose_array(n) for n in KEY_POSE_NAMES])


# --- self-contact ---------------------------------------------------------------------------------

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
    j = body_lib.posed_joints(rj, pose)
    height = float(np.ptp(rj[:, 1])) + 0.25  # joints span ankle..head; add feet and skull
    pts = {n: j[a][None] + _T[:, None] * (j[b] - j[a])[None] for n, (a, b, _) in _SEGMENTS.items()}
    for a, b in _CONTACT_PAIRS:
        d = np.linalg.norm(pts[a][:, None] - pts[b][None], axis=-1).min()
        if d < (_SEGMENTS[a][2] + _SEGMENTS[b][2]) * height:
            return True
    return False
