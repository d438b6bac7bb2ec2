"""Skeletons: joint names, parents, left/right flips, joint sets and joint limits (numpy only).

Three joint sets, chosen by the dataset (annotation key ``joint_set``) or the evaluation protocol:

``smpl24``
    The 24 SMPL kinematic joints, in SMPL order (pelvis, left_hip, right_hip, ...). The model's
    joints are ``smpl.forward(...).joints``; the root is joint 0 (pelvis).

``spin24``
    The 24 "ground-truth" joints of SPIN's annotation files (LSP 14 + MPII pelvis/thorax + H36M
    spine/jaw/head + face points). The model's joints come from a user-supplied regressor, file
    given in config ``data.joint_regressor``: either (24, V), applied to the mesh vertices, or
    (24, V + 24), applied to the vertices followed by the 24 posed SMPL kinematic joints. The
    latter reproduces SPIN exactly (10 kinematic joints, 9 ``J_regressor_extra`` rows, 5 face
    vertices); build it with ``tools/make_spin24_regressor.py``. A (24, V) file can only
    approximate the kinematic joints, which do not move linearly with the posed vertices.
    The root is the midpoint of the two hips (joints 2 and 3), as SPIN's 3D keypoint loss does;
    joint 14 ("pelvis (MPII)") is named ``pelvis_index`` but is missing in several datasets.

``h36m17``
    The 17 joints of the Human3.6M regressor (``J_regressor_h36m``, (17, V)), used only by the
    evaluation protocol: root = joint 0, ``H36M_TO_J14`` picks the 14 LSP joints.

`smpl.model_joints` computes the body model's joints in any of these sets. Everything here is a
static tuple: this module imports nothing from jax or the rest of the package.
"""

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class JointSet:
    """Static description of a joint set.

    Attributes:
      name: the set's name (key of `JOINT_SETS`).
      names: joint names, in order.
      pelvis_index: index of the joint named pelvis.
      root_indices: joints whose mean is the root used for pelvis alignment (losses, metrics).
      flip_perm: permutation that swaps left and right after a horizontal image flip:
        ``flipped_joints = joints[..., flip_perm, :]`` (with x negated / mirrored separately).
      parents: a parent per joint (-1 for roots) for drawing skeletons.
    """

    name: str
    names: tuple[str, ...]
    pelvis_index: int
    root_indices: tuple[int, ...]
    flip_perm: tuple[int, ...]
    parents: tuple[int, ...]

    @property
    def num_joints(self) -> int:
        return len(self.names)


SMPL24_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
# SMPL's kinematic tree (kintree_table row 0).
SMPL24_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# Left/right swap of the 24 joints (used to mirror poses and keypoints).
SMPL24_FLIP_PERM = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)

# Surface points of OpenPose BODY_25 that are not SMPL joints but body-model vertices (the
# landmarks a body model names, `smpl.SMPLModel.landmarks`), in OpenPose's order.
LANDMARK_NAMES = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
    "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)  # fmt: skip

# SPIN's 24 ground-truth joints (constants.JOINT_NAMES[25:] in SPIN).
SPIN24_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck_lsp", "head_top_lsp", "pelvis_mpii", "thorax_mpii", "spine_h36m", "jaw_h36m",
    "head_h36m", "nose", "left_eye", "right_eye", "left_ear", "right_ear",
)  # fmt: skip
# Skeleton for drawing: legs and arms hang off pelvis / thorax; face points off the head.
SPIN24_PARENTS = (
    1, 2, 14, 14, 3, 4, 7, 8, 15, 15, 9, 10, 15, 18, -1, 16, 14, 18, 12, 18, 19, 19, 20, 21,
)  # fmt: skip
SPIN24_FLIP_PERM = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22)

H36M17_NAMES = (
    "pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle",
    "spine", "thorax", "neck_nose", "head", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)  # fmt: skip
# Naming follows SPIN's H36M_TO_J14 mapping (H36M regressor joints 1-3 feed LSP's left leg).
H36M17_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M17_FLIP_PERM = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)

# Indices into the 17 H36M-regressor joints giving the 14 LSP joints (SPIN's order:
# R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist, R elbow, R shoulder, L shoulder,
# L elbow, L wrist, neck, head top).
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
H36M_PELVIS_INDEX = 0
# Indices into the spin24 joints giving the same 14 LSP joints (head top -> H36M head, as SPIN).
SPIN24_TO_J14 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18)

JOINT_SETS: Mapping[str, JointSet] = {
    "smpl24": JointSet("smpl24", SMPL24_NAMES, 0, (0,), SMPL24_FLIP_PERM, SMPL24_PARENTS),
    "spin24": JointSet("spin24", SPIN24_NAMES, 14, (2, 3), SPIN24_FLIP_PERM, SPIN24_PARENTS),
    "h36m17": JointSet("h36m17", H36M17_NAMES, 0, (0,), H36M17_FLIP_PERM, H36M17_PARENTS),
}


def get_joint_set(name: str) -> JointSet:
    """The `JointSet` called `name`; a clear error for unknown names."""
    try:
        return JOINT_SETS[name]
    except KeyError:
        raise ValueError(f"joint_set: expected one of {sorted(JOINT_SETS)}, found {name!r}") from None


# --- joint limits (SMPL joints) ------------------------------------------------------------------

# Hinge joints: (smpl index, name, unit flexion axis in the parent's frame, flexion min, max, off-axis max) deg.
# SMPL frame: y up, body faces +z, left at +x. Knee flexion (shin swings back, -z) is +x rotation;
# the left forearm lies along +x and flexes towards +z by rotating about -y, the right one about +y.
HINGE_LIMITS_DEG = (
    (4, "left_knee", (1.0, 0.0, 0.0), -10.0, 160.0, 45.0),
    (5, "right_knee", (1.0, 0.0, 0.0), -10.0, 160.0, 45.0),
    (18, "left_elbow", (0.0, -1.0, 0.0), -10.0, 160.0, 90.0),
    (19, "right_elbow", (0.0, 1.0, 0.0), -10.0, 160.0, 90.0),
)
# Other joints: (smpl index, name, maximum rotation angle) deg.
ANGLE_LIMITS_DEG = (
    (1, "left_hip", 140.0), (2, "right_hip", 140.0),
    (3, "spine1", 60.0), (6, "spine2", 60.0), (9, "spine3", 60.0),
    (7, "left_ankle", 60.0), (8, "right_ankle", 60.0),
    (10, "left_foot", 45.0), (11, "right_foot", 45.0),
    (12, "neck", 60.0), (15, "head", 60.0),
    (13, "left_collar", 45.0), (14, "right_collar", 45.0),
    (16, "left_shoulder", 160.0), (17, "right_shoulder", 160.0),
    (20, "left_wrist", 100.0), (21, "right_wrist", 100.0),
    (22, "left_hand", 90.0), (23, "right_hand", 90.0),
)  # fmt: skip
