"""Body proportions of the procedural body model: the parameters its betas move, and its joints.

``BodyParams`` holds multiplicative proportions (1.0 = the default body); ``params_from_betas``
maps a (10,) beta vector to them linearly (one unit = one standard deviation, ``BETA_MEANINGS``);
``body_joints`` places SMPL's 24 rest joints for given proportions (SMPL body frame: y up, facing
+z, subject's left at +x, metres).
"""

from dataclasses import dataclass, replace

import numpy as np

NUM_BETAS = 10
# What one unit of each beta does (documentation; the signs are tested).
BETA_MEANINGS = (
    "height (+ taller, uniform scale)",
    "weight (+ heavier: girth)",
    "leg length (+ longer)",
    "shoulder width (+ wider)",
    "hip width (+ wider)",
    "belly (+ bigger)",
    "arm length (+ longer)",
    "muscularity (+ thicker limbs and chest)",
    "head size (+ bigger)",
    "torso length (+ longer)",
)


@dataclass(frozen=True)
class BodyParams:
    """Multiplicative body proportions (1.0 = the default body); betas move these."""

    scale: float = 1.0
    girth: float = 1.0
    leg_length: float = 1.0
    shoulder_width: float = 1.0
    hip_width: float = 1.0
    belly: float = 0.0  # metres added to the front of the waist
    arm_length: float = 1.0
    muscle: float = 1.0
    head_size: float = 1.0
    torso_length: float = 1.0


# (field, change per unit beta) in beta order.
_BETA_STEPS = (
    ("scale", 0.055),
    ("girth", 0.10),
    ("leg_length", 0.045),
    ("shoulder_width", 0.06),
    ("hip_width", 0.06),
    ("belly", 0.022),
    ("arm_length", 0.04),
    ("muscle", 0.08),
    ("head_size", 0.05),
    ("torso_length", 0.035),
)


def params_from_betas(betas, base: BodyParams = BodyParams()) -> BodyParams:
    """Body parameters for a (10,) beta vector (linear in betas)."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.shape != (NUM_BETAS,):
        raise ValueError(f"betas: expected shape ({NUM_BETAS},), found {betas.shape}")
    changes = {name: getattr(base, name) + step * b for (name, step), b in zip(_BETA_STEPS, betas)}
    return replace(base, **changes)


def body_joints(p: BodyParams) -> np.ndarray:
    """(24, 3) rest joints of the body with parameters p (before the global scale)."""
    J = np.zeros((24, 3))
    pelvis = np.array([0.0, -0.223, 0.025])
    tl = p.torso_length
    J[0] = pelvis
    J[3] = pelvis + np.array([0.0, 0.118, -0.022]) * tl
    J[6] = J[3] + np.array([0.0, 0.135, 0.025]) * tl
    J[9] = J[6] + np.array([0.0, 0.055, 0.002]) * tl
    J[12] = J[9] + np.array([0.0, 0.212, -0.045]) * tl
    J[15] = J[12] + np.array([0.0, 0.064, 0.055]) * p.head_size
    sw = p.shoulder_width
    J[13] = J[9] + np.array([0.072 * sw, 0.115 * tl, -0.038])
    J[16] = J[13] + np.array([0.098 * sw, 0.032, -0.008])
    al = p.arm_length
    J[18] = J[16] + np.array([0.252, -0.012, -0.016]) * al
    J[20] = J[18] + np.array([0.254, 0.006, -0.005]) * al
    J[22] = J[20] + np.array([0.085, -0.007, -0.008]) * al
    hw = p.hip_width
    ll = p.leg_length
    J[1] = pelvis + np.array([0.069 * hw, -0.091, -0.003])
    J[4] = J[1] + np.array([0.035 * hw, -0.375, -0.006]) * np.array([1.0, ll, 1.0])
    J[7] = J[4] + np.array([-0.016, -0.398, -0.044]) * np.array([1.0, ll, 1.0])
    J[10] = J[7] + np.array([0.031, -0.058, 0.121])
    # Right side mirrors the left.
    for left, right in ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)):
        J[right] = J[left] * np.array([-1.0, 1.0, 1.0])
    return J
