"""The body's keypoints for fitting: OpenPose BODY_25 and the 24-joint sets, from SMPL joints and vertices.

A fit compares the 2D keypoints of a detector or a dataset with the body's 3D keypoints, projected.
`keypoint_body(model, sets)` says, once, where each keypoint of the chosen sets comes from:

- ``openpose25``: OpenPose BODY_25 in OpenPose's order. Neck, shoulders, elbows, wrists, mid-hip,
  hips, knees and ankles are SMPL kinematic joints; nose, eyes, ears, big/small toes and heels are
  the body model's landmark vertices (`smpl.SMPLModel.landmarks`), as SPIN and smplx map them.
- ``smpl24``: the 24 SMPL kinematic joints.
- ``spin24``: SPIN's 24 ground-truth joints, through a (24, V) or (24, V + 24) regressor
  (`smpl.model_joints`; config ``data.joint_regressor``).

Keypoint names are ``"<set>/<joint>"`` (e.g. ``"openpose25/neck"``, ``"smpl24/left_hip"``), so a
fit can name the points it treats specially. The returned `KeypointBody` keeps only the vertices
the keypoints need (`smpl.take_vertices`): the joints come from SMPL's joint template and shape
directions, so a fit poses tens of vertices instead of thousands, with identical keypoints.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hmr_jax import skeleton, smpl

# OpenPose BODY_25, in OpenPose's order, and where each point sits on the body: an SMPL joint or a
# landmark vertex (`skeleton.LANDMARK_NAMES`).
OPENPOSE25 = (
    ("nose", "landmark", "nose"),
    ("neck", "joint", "neck"),
    ("right_shoulder", "joint", "right_shoulder"),
    ("right_elbow", "joint", "right_elbow"),
    ("right_wrist", "joint", "right_wrist"),
    ("left_shoulder", "joint", "left_shoulder"),
    ("left_elbow", "joint", "left_elbow"),
    ("left_wrist", "joint", "left_wrist"),
    ("mid_hip", "joint", "pelvis"),
    ("right_hip", "joint", "right_hip"),
    ("right_knee", "joint", "right_knee"),
    ("right_ankle", "joint", "right_ankle"),
    ("left_hip", "joint", "left_hip"),
    ("left_knee", "joint", "left_knee"),
    ("left_ankle", "joint", "left_ankle"),
    ("right_eye", "landmark", "right_eye"),
    ("left_eye", "landmark", "left_eye"),
    ("right_ear", "landmark", "right_ear"),
    ("left_ear", "landmark", "left_ear"),
    ("left_big_toe", "landmark", "left_big_toe"),
    ("left_small_toe", "landmark", "left_small_toe"),
    ("left_heel", "landmark", "left_heel"),
    ("right_big_toe", "landmark", "right_big_toe"),
    ("right_small_toe", "landmark", "right_small_toe"),
    ("right_heel", "landmark", "right_heel"),
)
OPENPOSE25_NAMES = tuple(name for name, _, _ in OPENPOSE25)
KEYPOINT_SETS = ("openpose25", "smpl24", "spin24")


def set_names(set_name: str) -> tuple[str, ...]:
    """The joint names of a keypoint set, in order."""
    if set_name == "openpose25":
        return OPENPOSE25_NAMES
    if set_name in ("smpl24", "spin24"):
        return skeleton.get_joint_set(set_name).names
    raise ValueError(f"keypoint set: expected one of {KEYPOINT_SETS}, found {set_name!r}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KeypointBody:
    """A body model reduced to what a set of keypoints needs.

    body: the model restricted to the needed vertices (joints unchanged).
    regressor: (R, n + 24) rows regressing keypoints from [the kept vertices, the 24 SMPL joints]
      (R = 0 without spin24).
    sources: static; per keypoint, its index into [24 joints, n kept vertices, R regressed points].
    names: static; "<set>/<joint>" per keypoint.
    """

    body: smpl.SMPLModel
    regressor: Array
    sources: tuple = dataclasses.field(metadata=dict(static=True))
    names: tuple = dataclasses.field(metadata=dict(static=True))

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of keypoint "<set>/<joint>"; ValueError listing the names when absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"keypoint {name!r} is not among this fit's keypoints: {self.names}") from None


def keypoint_body(
    model: smpl.SMPLModel,
    sets: Sequence[str] = ("openpose25",),
    regressors: Mapping[str, np.ndarray] | None = None,
) -> KeypointBody:
    """Where each keypoint of `sets` (concatenated in order) comes from on `model`.

    `regressors['spin24']` is needed for spin24 ((24, V) or (24, V + 24), see `smpl.model_joints`).
    Raises ValueError naming what is missing (a landmark the model does not name, a regressor).
    """
    if not sets:
        raise ValueError("keypoint sets: expected at least one of " + ", ".join(KEYPOINT_SETS))
    num_v = model.num_vertices
    landmarks = dict(model.landmarks)
    joint_names = skeleton.SMPL24_NAMES
    plan, names, reg_rows, vertex_ids = [], [], [], set()
    for s in sets:
        names += [f"{s}/{n}" for n in set_names(s)]
        if s == "smpl24":
            plan += [("joint", i) for i in range(smpl.NUM_JOINTS)]
        elif s == "openpose25":
            missing = [src for _, kind, src in OPENPOSE25 if kind == "landmark" and src not in landmarks]
            if missing:
                raise ValueError(
                    f"keypoint set openpose25 needs the body model's landmark vertices {missing}; this model "
                    f"names {sorted(landmarks) or 'none'} (SMPL files get SMPL's; other meshes must carry "
                    f"'landmark_names' / 'landmark_vertices')"
                )
            for _, kind, src in OPENPOSE25:
                if kind == "joint":
                    plan.append(("joint", joint_names.index(src)))
                else:
                    plan.append(("vertex", int(landmarks[src])))
                    vertex_ids.add(int(landmarks[src]))
        elif s == "spin24":
            reg = None if regressors is None else regressors.get("spin24")
            if reg is None:
                raise ValueError(
                    "keypoint set spin24 needs a (24, V) or (24, V + 24) regressor: set config "
                    "'data.joint_regressor' (tools/make_spin24_regressor.py builds one)"
                )
            reg = np.asarray(reg, np.float64)
            if reg.ndim != 2 or reg.shape[0] != 24 or reg.shape[1] not in (num_v, num_v + smpl.NUM_JOINTS):
                raise ValueError(
                    f"spin24 regressor: expected (24, {num_v}) or (24, {num_v + smpl.NUM_JOINTS}), found {reg.shape}"
                )
            if reg.shape[1] == num_v:
                reg = np.concatenate([reg, np.zeros((24, smpl.NUM_JOINTS))], axis=1)
            for row in reg:
                plan.append(("regressed", len(reg_rows)))
                reg_rows.append(row)
                vertex_ids.update(int(v) for v in np.flatnonzero(row[:num_v]))
        else:
            set_names(s)  # raises
    kept = np.array(sorted(vertex_ids), np.int64)
    body = smpl.take_vertices(model, kept) if kept.size else smpl.take_vertices(model, np.array([0]))
    n = body.num_vertices
    new_index = {int(v): i for i, v in enumerate(kept)}
    if reg_rows:
        full = np.stack(reg_rows)  # (R, V + 24)
        regressor = np.concatenate([full[:, kept], full[:, num_v:]], axis=1)  # (R, n + 24)
    else:
        regressor = np.zeros((0, n + smpl.NUM_JOINTS))
    sources = []
    for kind, i in plan:
        if kind == "joint":
            sources.append(i)
        elif kind == "vertex":
            sources.append(smpl.NUM_JOINTS + new_index[i])
        else:
            sources.append(smpl.NUM_JOINTS + n + i)
    return KeypointBody(
        body=body,
        regressor=jnp.asarray(regressor, body.v_template.dtype),
        sources=tuple(sources),
        names=tuple(names),
    )


def keypoints_3d(
    kb: KeypointBody,
    betas: Float[Array, "b k"],
    pose: Float[Array, "b 72"] | Float[Array, "b 24 3 3"],
    transl: Float[Array, "b 3"] | None = None,
) -> Float[Array, "b j 3"]:
    """The keypoints (in `kb.names` order) of bodies posed by (betas, pose), plus transl."""
    out = smpl.forward(kb.body, betas, pose)
    points = jnp.concatenate([out.joints, out.vertices], axis=-2)  # (B, 24 + n, 3)
    if kb.regressor.shape[0]:
        regressed = jnp.einsum("rp,bpc->brc", kb.regressor, jnp.concatenate([out.vertices, out.joints], axis=-2))
        points = jnp.concatenate([points, regressed], axis=-2)
    kp = points[:, np.asarray(kb.sources)]
    if transl is not None:
        kp = kp + transl[:, None, :]
    return kp
