"""Joint sets: names, root (pelvis) definition, flip permutations, and the model's joints for each.

Two joint sets are supported, chosen by the dataset (annotation key ``joint_set``):

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

Everything here is static (tuples), except `model_joints` / `regress`, which are jax functions.
"""

import dataclasses
import os
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hmr_jax import smpl

REGRESSOR_CONFIG_KEY = "data.joint_regressor"


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


SMPL24_NAMES = smpl.JOINT_NAMES
SMPL24_PARENTS = smpl.PARENTS
SMPL24_FLIP_PERM = smpl.FLIP_PERM

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


def root(joints: Float[Array, "... j 3"], joint_set: str) -> Float[Array, "... 3"]:
    """Root (pelvis) location of `joints`: the mean of the set's `root_indices`."""
    idx = jnp.asarray(get_joint_set(joint_set).root_indices)
    return jnp.mean(jnp.take(joints, idx, axis=-2), axis=-2)


def regress(regressor: Float[Array, "j v"], vertices: Float[Array, "... v 3"]) -> Float[Array, "... j 3"]:
    """Joints as fixed linear combinations of mesh vertices: J = regressor @ vertices."""
    return smpl.regress_joints(regressor, vertices)


def model_joints(
    joint_set: str,
    smpl_joints: Float[Array, "b 24 3"],
    vertices: Float[Array, "b v 3"],
    regressors: Mapping[str, Float[Array, "j n"]] | None = None,
) -> Float[Array, "b j 3"]:
    """The body model's joints in the dataset's joint set.

    Args:
      joint_set: 'smpl24' (returns `smpl_joints`), 'spin24' or 'h36m17' (regressed with
        `regressors[joint_set]`).
      smpl_joints: posed SMPL kinematic joints (B, 24, 3).
      vertices: posed SMPL vertices (B, V, 3).
      regressors: optional dict joint-set name -> regressor (see `load_regressor`), either
        (J, V), applied to `vertices`, or (J, V + 24), applied to the points
        ``concatenate([vertices, smpl_joints], axis=-2)`` (so column V + k is SMPL joint k).
    """
    js = get_joint_set(joint_set)
    if joint_set == "smpl24":
        return smpl_joints
    if regressors is None or regressors.get(joint_set) is None:
        key = REGRESSOR_CONFIG_KEY if joint_set == "spin24" else "eval.h36m_regressor"
        raise ValueError(
            f"joint set {joint_set!r} needs a ({js.num_joints}, V) vertex-to-joint regressor, but "
            f"none was given: set config '{key}' to a .npy/.npz file holding it"
        )
    reg = regressors[joint_set]
    if reg.shape[0] != js.num_joints:
        raise ValueError(
            f"regressor for joint set {joint_set!r}: expected {js.num_joints} rows, found shape {tuple(reg.shape)}"
        )
    v, k = vertices.shape[-2], smpl_joints.shape[-2]
    if reg.ndim != 2 or reg.shape[1] not in (v, v + k):
        raise ValueError(
            f"regressor for joint set {joint_set!r}: expected shape ({js.num_joints}, {v}) (vertices) or "
            f"({js.num_joints}, {v + k}) (vertices then {k} SMPL joints), found {tuple(reg.shape)}"
        )
    if reg.shape[1] == v + k:
        return regress(reg, jnp.concatenate([vertices, smpl_joints.astype(vertices.dtype)], axis=-2))
    return regress(reg, vertices)


def load_regressor(
    path: str | os.PathLike, num_joints: int | None = None, num_vertices: int | None = None
) -> np.ndarray:
    """Load a dense (J, V) or (J, V + 24) float32 regressor (.npy / .npz, no pickle).

    The (J, V + 24) form also weights the 24 SMPL kinematic joints (see `model_joints`).
    Raises naming the file when it is missing, unreadable, or not (num_joints, num_vertices)
    or (num_joints, num_vertices + 24).
    """
    arr = smpl.load_regressor(path)
    cols = None if num_vertices is None else (num_vertices, num_vertices + smpl.NUM_JOINTS)
    if (num_joints is not None and arr.shape[0] != num_joints) or (cols is not None and arr.shape[1] not in cols):
        j = "J" if num_joints is None else num_joints
        v = "V" if num_vertices is None else num_vertices
        v24 = "V + 24" if num_vertices is None else num_vertices + smpl.NUM_JOINTS
        raise ValueError(
            f"joint regressor file {os.fspath(path)!r}: expected shape ({j}, {v}) or ({j}, {v24}), found {arr.shape}"
        )
    return arr
