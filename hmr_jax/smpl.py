"""SMPL body model: safe loading and a fast linear-blend-skinning forward pass (numpy + jax).

    from hmr_jax import smpl
    model = smpl.load("SMPL_NEUTRAL.pkl")        # or .npz; an immutable pytree
    out = smpl.forward(model, betas, pose)       # pose: (..., 72) axis-angle or (..., 24, 3, 3)
    out.vertices, out.joints                     # (..., V, 3), (..., 24, 3), metres
    out.vertices[..., smpl.landmark_index(model, "nose"), :]   # a named landmark vertex

Files are read by `hmr_jax.model_files`: official SMPL ``.pkl`` files through a restricted
unpickler (no code from the file runs, chumpy is never needed), every declared size checked
before anything is allocated. `smpl.py`, `model_files.py`, `geometry.py` and `skeleton.py` import
nothing else from the package.
"""

import dataclasses
import os
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hmr_jax import geometry, model_files, skeleton

NUM_JOINTS = len(skeleton.SMPL24_NAMES)  # 24
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 207


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SMPLModel:
    """SMPL arrays laid out for fast contraction (note: not the file layout).

    v_template (V, 3); shapedirs (K, 3, V); posedirs (207, 3, V) (vertex index innermost, so
    the blend shapes and skinning vectorise along vertices); J_regressor (24, V);
    joint_template (24, 3) = J_regressor @ v_template; joint_shapedirs (K, 24, 3) = J_regressor
    applied to each shape direction (joints of the shaped body are linear in betas, so the
    (24, V) regression never runs per body); weights (V, 24); faces (F, 3) int32.
    `parents` and `joint_names` are static (part of the tree structure), so the kinematic
    chain unrolls at trace time. `landmarks`, also static, names surface points that are
    vertices rather than joints (OpenPose's nose, eyes, ears, toes and heels:
    `skeleton.LANDMARK_NAMES`) as (name, vertex index) pairs; see `landmark_index`.
    """

    v_template: Array
    shapedirs: Array
    posedirs: Array
    J_regressor: Array
    joint_template: Array
    joint_shapedirs: Array
    weights: Array
    faces: Array
    parents: tuple = dataclasses.field(default=skeleton.SMPL24_PARENTS, metadata=dict(static=True))
    joint_names: tuple = dataclasses.field(default=skeleton.SMPL24_NAMES, metadata=dict(static=True))
    landmarks: tuple = dataclasses.field(default=(), metadata=dict(static=True))

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[0]


class SMPLOutput(NamedTuple):
    vertices: Array  # (..., V, 3)
    joints: Array  # (..., 24, 3)


# ----------------------------------------------------------------------------- landmarks

SMPL_NUM_VERTICES = 6890
# SMPL's landmark vertices, used for any 6,890-vertex model whose file names none: smplx's
# vertex_ids['smplh'] (SMPL-H body topology = SMPL's), in `skeleton.LANDMARK_NAMES` order.
SMPL_LANDMARKS = (
    ("nose", 332), ("right_eye", 6260), ("left_eye", 2800), ("right_ear", 4071), ("left_ear", 583),
    ("left_big_toe", 3216), ("left_small_toe", 3226), ("left_heel", 3387),
    ("right_big_toe", 6617), ("right_small_toe", 6624), ("right_heel", 6787),
)  # fmt: skip


def _landmarks(names, vertices, num_vertices: int) -> tuple:
    """(name, vertex) pairs from a file's landmark_names / landmark_vertices, checked; SMPL's own
    for a 6,890-vertex model that names none."""
    if names is None and vertices is None:
        return SMPL_LANDMARKS if num_vertices == SMPL_NUM_VERTICES else ()
    if names is None or vertices is None:
        given, absent = (
            ("landmark_vertices", "landmark_names") if names is None else ("landmark_names", "landmark_vertices")
        )
        raise ValueError(f"{given} given without {absent}: a model names landmarks with both arrays or neither")
    names, idx = np.asarray(names), np.asarray(vertices)
    if names.shape == idx.shape == (0,):
        return ()
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise ValueError(
            f"landmark_names must be a 1-D array of strings, found shape {names.shape} dtype {names.dtype}"
        )
    if idx.ndim != 1 or idx.dtype.kind not in "iuf":
        raise ValueError(f"landmark_vertices must be a 1-D integer array, found shape {idx.shape} dtype {idx.dtype}")
    if idx.dtype.kind == "f" and not np.all(np.isfinite(idx) & (idx == np.round(idx))):
        raise ValueError(f"landmark_vertices must hold integers, found non-integral floats ({idx.dtype})")
    if len(names) != len(idx):
        raise ValueError(
            f"landmark_names and landmark_vertices must have the same length, found {len(names)} names and "
            f"{len(idx)} vertices"
        )
    names = [s.decode("latin1") if isinstance(s, bytes) else str(s) for s in names.tolist()]
    idx = [int(i) for i in idx.tolist()]
    seen = set()
    for name, i in zip(names, idx):
        if not name:
            raise ValueError(f"landmark_names must be non-empty strings, found {names}")
        if name in seen:
            raise ValueError(f"landmark_names must be unique, found {name!r} more than once in {names}")
        seen.add(name)
        if not 0 <= i < num_vertices:
            raise ValueError(
                f"landmark_vertices must lie in [0, {num_vertices}) (the model's vertices), found {i} for {name!r}"
            )
    return tuple(zip(names, idx))


def landmark_index(model: SMPLModel, name: str) -> int:
    """The vertex index of the landmark `name` (e.g. 'nose', `skeleton.LANDMARK_NAMES`) in `model`."""
    for landmark, index in model.landmarks:
        if landmark == name:
            return index
    have = [n for n, _ in model.landmarks]
    hint = (
        ""
        if have
        else f" (its file names none: add landmark_names / landmark_vertices; only a {SMPL_NUM_VERTICES:,}-vertex"
        " SMPL-topology model gets SMPL's by default)"
    )
    raise ValueError(f"landmark {name!r}: not among this body model's landmarks {have}{hint}")


# ----------------------------------------------------------------------------- loading

# What a model file may declare, checked before anything is allocated, decompressed or read.
# Generous next to real bodies (SMPL: 6,890 vertices, 13,776 faces, 10 or 300 shape directions;
# SMPL-X: 10,475 / 20,908 / 400; the subdivided "hi-res" SMPL: 27,554 vertices), yet together
# they cap what a corrupt or hostile file can make `load` allocate at about a gigabyte.


def from_arrays(
    v_template,
    shapedirs,
    posedirs,
    J_regressor,
    weights,
    f,
    kintree_table=None,
    joint_names=None,
    landmark_names=None,
    landmark_vertices=None,
    dtype=np.float32,
    **unused,
) -> SMPLModel:
    """Build an `SMPLModel` from arrays in SMPL's file layout (shapedirs (V, 3, K), posedirs (V, 3, 207)).

    `landmark_names` (L,) strings and `landmark_vertices` (L,) integers name landmark vertices
    (unique, non-empty names; indices in [0, V)); L = 0 names none. Without them a 6,890-vertex
    model gets SMPL's (`SMPL_LANDMARKS`), any other none.
    """
    v_template = np.asarray(v_template, np.float64)
    shapedirs = np.asarray(shapedirs, np.float64).transpose(2, 1, 0)  # (K, 3, V)
    posedirs = np.asarray(posedirs, np.float64).transpose(2, 1, 0)  # (207, 3, V)
    j_reg = np.asarray(J_regressor, np.float64)
    parents = skeleton.SMPL24_PARENTS
    if kintree_table is not None:
        p = np.asarray(kintree_table)[0].astype(np.int64)
        parents = tuple(int(x) if 0 <= x < NUM_JOINTS else -1 for x in p)
        if parents[0] != -1 or any(not 0 <= parents[i] < i for i in range(1, len(parents))):
            raise ValueError(f"kintree_table row 0 is not a valid parent list (parents[i] < i): {parents}")
    names = skeleton.SMPL24_NAMES if joint_names is None else tuple(str(s) for s in np.asarray(joint_names).tolist())
    landmarks = _landmarks(landmark_names, landmark_vertices, v_template.shape[0])
    return SMPLModel(
        v_template=jnp.asarray(v_template, dtype),
        shapedirs=jnp.asarray(shapedirs, dtype),
        posedirs=jnp.asarray(posedirs, dtype),
        J_regressor=jnp.asarray(j_reg, dtype),
        joint_template=jnp.asarray(j_reg @ v_template, dtype),
        joint_shapedirs=jnp.asarray(np.einsum("jv,kcv->kjc", j_reg, shapedirs), dtype),
        weights=jnp.asarray(weights, dtype),
        faces=jnp.asarray(np.asarray(f, np.int64), jnp.int32),
        parents=parents,
        joint_names=names,
        landmarks=landmarks,
    )


def load(path: str | os.PathLike, dtype=np.float32) -> SMPLModel:
    """Load an SMPL model from `.npz` (plain arrays) or an official SMPL `.pkl` (safely).

    Every problem with the file raises `model_files.ModelFileError` (a ValueError;
    `ModelFileNotFoundError`, also a FileNotFoundError, for a missing file) naming the file and the
    problem. Declared shapes, dtypes and sizes are checked against `model_files`' limits before any
    array is allocated or decompressed, and of an .npz only the members a model needs are read.
    """
    arrays = model_files.read_model(path)
    try:
        return from_arrays(**arrays, dtype=dtype)
    except Exception as e:
        raise model_files.ModelFileError(f"{os.fspath(path)}: {e}") from None


def load_regressor(
    path: str | os.PathLike, num_joints: int | None = None, num_vertices: int | None = None
) -> np.ndarray:
    """Load a dense (J, V) or (J, V + 24) float32 joint regressor (.npy / .npz, no pickle), e.g.
    SPIN's J_regressor_h36m.npy (17, V). The (J, V + 24) form also weights the 24 SMPL kinematic
    joints (see `model_joints`). Raises `model_files.ModelFileError` (a ValueError) naming the file
    when it is missing, unreadable, too large (checked from its header, before reading), not
    finite, or not (num_joints, num_vertices) or (num_joints, num_vertices + 24)."""
    return model_files.read_regressor(path, num_joints, num_vertices)


def take_vertices(model: SMPLModel, indices) -> SMPLModel:
    """The body restricted to the vertices `indices` (1-D, unique, increasing, within [0, V)).

    `forward` on the result gives exactly those vertices of the full body's, in that order, and
    the same joints (they come from joint_template / joint_shapedirs, which are kept whole), at
    the cost of len(indices) vertices: e.g. vertex losses on a subset in a training step
    (config `train.vertex_loss_stride`). J_regressor keeps the columns of the kept vertices;
    faces keep the triangles whose three corners are kept, renumbered; landmarks keep those whose
    vertex is kept, renumbered, and drop the others.
    """
    idx = np.asarray(indices)
    v = model.num_vertices
    if (
        idx.ndim != 1
        or idx.size == 0
        or not np.issubdtype(idx.dtype, np.integer)
        or idx[0] < 0
        or idx[-1] >= v
        or np.any(np.diff(idx) <= 0)
    ):
        raise ValueError(
            f"take_vertices: indices must be a non-empty, increasing 1-D integer array within "
            f"[0, {v}), found shape {idx.shape} dtype {idx.dtype}"
        )
    new_index = np.full(v, -1, np.int64)
    new_index[idx] = np.arange(idx.size)
    faces = new_index[np.asarray(model.faces)]  # (F, 3), -1 where a corner was dropped
    faces = faces[np.all(faces >= 0, axis=1)]
    landmarks = tuple((name, int(new_index[i])) for name, i in model.landmarks if new_index[i] >= 0)
    return dataclasses.replace(
        model,
        v_template=model.v_template[idx],
        shapedirs=model.shapedirs[:, :, idx],
        posedirs=model.posedirs[:, :, idx],
        J_regressor=model.J_regressor[:, idx],
        weights=model.weights[idx],
        faces=jnp.asarray(faces, jnp.int32),
        landmarks=landmarks,
    )


# ----------------------------------------------------------------------------- forward


def _as_rotmats(pose: Array) -> Array:
    if pose.shape[-1] == NUM_JOINTS * 3:
        return geometry.axis_angle_to_matrix(pose.reshape(pose.shape[:-1] + (NUM_JOINTS, 3)))
    if pose.shape[-3:] == (NUM_JOINTS, 3, 3):
        return pose
    raise ValueError(f"pose must be (..., 72) axis-angle or (..., 24, 3, 3) rotation matrices, found {pose.shape}")


def forward(
    model: SMPLModel,
    betas: Float[Array, "*batch k"],
    pose: Float[Array, "*batch 72"] | Float[Array, "*batch 24 3 3"],
    transl: Float[Array, "*batch 3"] | None = None,
) -> SMPLOutput:
    """SMPL linear blend skinning for any leading batch shape.

    Uses the first K shape directions for betas of size K (K <= model.num_betas).
    """
    dtype = model.v_template.dtype
    betas = jnp.asarray(betas, dtype)
    rot = _as_rotmats(jnp.asarray(pose, dtype))
    k = betas.shape[-1]
    if k > model.num_betas:
        raise ValueError(f"betas has {k} coefficients but the model file holds only {model.num_betas} shape directions")
    batch = jnp.broadcast_shapes(betas.shape[:-1], rot.shape[:-3])
    n = int(np.prod(batch, dtype=np.int64))
    betas = jnp.broadcast_to(betas, batch + (k,)).reshape(n, k)
    rot = jnp.broadcast_to(rot, batch + (NUM_JOINTS, 3, 3)).reshape(n, NUM_JOINTS, 3, 3)
    v = model.num_vertices

    if n > _CHUNK and v >= _CHUNK_MIN_VERTICES:  # large batches: chunks keep the per-vertex intermediates in cache
        pad = -n % _CHUNK
        chunks = (
            jnp.pad(betas, ((0, pad), (0, 0))).reshape(-1, _CHUNK, k),
            jnp.pad(rot, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(-1, _CHUNK, NUM_JOINTS, 3, 3),
        )
        verts, posed_joints = jax.lax.map(lambda c: _forward_flat(model, *c), chunks)
        verts, posed_joints = verts.reshape(-1, v, 3)[:n], posed_joints.reshape(-1, NUM_JOINTS, 3)[:n]
    else:
        verts, posed_joints = _forward_flat(model, betas, rot)
    if transl is not None:
        transl = jnp.broadcast_to(jnp.asarray(transl, dtype), batch + (3,)).reshape(n, 1, 3)
        verts = verts + transl
        posed_joints = posed_joints + transl
    return SMPLOutput(verts.reshape(batch + (v, 3)), posed_joints.reshape(batch + (NUM_JOINTS, 3)))


_CHUNK = 64
_CHUNK_MIN_VERTICES = 1024  # fewer vertices (e.g. `take_vertices` for a fit's keypoints): no chunks


def _forward_flat(model: SMPLModel, betas: Array, rot: Array) -> tuple[Array, Array]:
    """LBS for a flat batch: betas (n, K), rot (n, 24, 3, 3) -> vertices (n, V, 3), joints (n, 24, 3)."""
    n, k = betas.shape
    v = model.num_vertices
    dtype = betas.dtype
    # Everything per vertex is kept coordinate-major, (n, 3, V): vertex index innermost.
    # Shape: template + blend shapes, and the joints of the shaped body (linear in betas).
    v_shaped = model.v_template.T + (betas @ model.shapedirs[:k].reshape(k, 3 * v)).reshape(n, 3, v)
    joints = model.joint_template + (betas @ model.joint_shapedirs[:k].reshape(k, -1)).reshape(n, NUM_JOINTS, 3)
    # Pose-corrective blend shapes from (R - I) of the 23 body joints: (n, 207) @ (207, 3V).
    pose_feature = (rot[:, 1:] - jnp.eye(3, dtype=dtype)).reshape(n, NUM_POSE_BASIS)
    v_posed = v_shaped + (pose_feature @ model.posedirs.reshape(NUM_POSE_BASIS, 3 * v)).reshape(n, 3, v)
    # Kinematic chain, then skinning: blend the joints' (3, 4) transforms per vertex with one
    # (12n, 24) @ (24, V) product, and apply them with elementwise ops along vertices.
    posed_joints, transforms = geometry.kinematic_chain(rot, joints, model.parents)
    per_joint = transforms[:, :, :3, :].reshape(n, NUM_JOINTS, 12).transpose(0, 2, 1).reshape(n * 12, NUM_JOINTS)
    blended = (per_joint @ model.weights.T).reshape(n, 3, 4, v)
    verts = (
        blended[:, :, 0] * v_posed[:, None, 0]
        + blended[:, :, 1] * v_posed[:, None, 1]
        + blended[:, :, 2] * v_posed[:, None, 2]
        + blended[:, :, 3]
    )  # (n, 3, V)
    return jnp.swapaxes(verts, 1, 2), posed_joints


def regress_joints(
    model_or_regressor: "SMPLModel | Float[Array, 'j v']", vertices: Float[Array, "*batch v 3"]
) -> Float[Array, "*batch j 3"]:
    """Joints regressed from vertices: the model's J_regressor, or any (J, V) regressor array."""
    reg = model_or_regressor.J_regressor if isinstance(model_or_regressor, SMPLModel) else model_or_regressor
    reg = jnp.asarray(reg, vertices.dtype)
    if reg.ndim != 2 or reg.shape[1] != vertices.shape[-2]:
        raise ValueError(f"regressor must be (J, {vertices.shape[-2]}) for these vertices, found {reg.shape}")
    return jnp.einsum("jv,...vc->...jc", reg, vertices)


def model_joints(
    joint_set: str,
    smpl_joints: Float[Array, "b 24 3"],
    vertices: Float[Array, "b v 3"],
    regressors: Mapping[str, Float[Array, "j n"]] | None = None,
) -> Float[Array, "b j 3"]:
    """The body model's joints in a joint set (`skeleton.JOINT_SETS`).

    Args:
      joint_set: 'smpl24' (returns `smpl_joints`), 'spin24' or 'h36m17' (regressed with
        `regressors[joint_set]`).
      smpl_joints: posed SMPL kinematic joints (B, 24, 3).
      vertices: posed SMPL vertices (B, V, 3).
      regressors: optional dict joint-set name -> regressor (see `load_regressor`), either
        (J, V), applied to `vertices`, or (J, V + 24), applied to the points
        ``concatenate([vertices, smpl_joints], axis=-2)`` (so column V + k is SMPL joint k).
    """
    js = skeleton.get_joint_set(joint_set)
    if joint_set == "smpl24":
        return smpl_joints
    if regressors is None or regressors.get(joint_set) is None:
        key = "data.joint_regressor" if joint_set == "spin24" else "eval.h36m_regressor"
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
        return regress_joints(reg, jnp.concatenate([vertices, smpl_joints.astype(vertices.dtype)], axis=-2))
    return regress_joints(reg, vertices)


def save_obj(path: str | os.PathLike, vertices, faces) -> None:
    """Write a triangle mesh as Wavefront OBJ (1-based face indices)."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"save_obj expects vertices (V, 3) and faces (F, 3), found {vertices.shape}, {faces.shape}")
    with open(path, "w") as f:
        f.write("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices))
        f.write("".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))
