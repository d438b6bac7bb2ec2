"""SMPL body model: safe loading and a fast linear-blend-skinning forward pass (numpy + jax).

    from hmr_jax import smpl
    model = smpl.load("SMPL_NEUTRAL.pkl")        # or .npz; an immutable pytree
    out = smpl.forward(model, betas, pose)       # pose: (..., 72) axis-angle or (..., 24, 3, 3)
    out.vertices, out.joints                     # (..., V, 3), (..., 24, 3), metres

Official SMPL ``.pkl`` files are Python-2 pickles holding chumpy objects and scipy sparse
matrices. A pickle can run arbitrary code, so they are read by a restricted unpickler whose
allowlist holds only numpy array reconstruction, scipy sparse matrices (turned into dense
arrays), stand-ins for chumpy's array objects and a few harmless builtins. Anything else
(``os.system``, ``builtins.eval``, ...) is refused by name before it can run. chumpy itself is
never needed.
"""

import codecs
import copyreg
import dataclasses
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hmr_jax import geometry, skeleton

NUM_JOINTS = len(skeleton.SMPL24_NAMES)  # 24
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 207

_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


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
    chain unrolls at trace time.
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

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[0]


class SMPLOutput(NamedTuple):
    vertices: Array  # (..., V, 3)
    joints: Array  # (..., 24, 3)


# ----------------------------------------------------------------------------- loading


class _ChumpyStandIn:
    """Receives the pickled state of a chumpy object (Ch, Select, ...) without chumpy."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self) -> np.ndarray:
        s = self.state
        if "x" in s:
            return np.asarray(_to_array(s["x"]))
        if "a" in s and "idxs" in s:  # chumpy.reordering.Select-style
            arr = _to_array(s["a"]).ravel()[np.asarray(_to_array(s["idxs"])).ravel()]
            shape = s.get("preferred_shape")
            return arr.reshape(tuple(shape)) if shape is not None else arr
        raise ValueError(f"unsupported chumpy object with state keys {sorted(s)}")


class _SparseStandIn:
    """Receives the pickled state of a scipy.sparse matrix; converted to a dense array."""

    fmt = "csc"

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}

    def to_array(self) -> np.ndarray:
        import scipy.sparse as sp

        s = self.state
        shape = tuple(int(n) for n in (s.get("_shape") or s.get("shape")))
        data = np.asarray(s["data"])
        if self.fmt in ("csc", "csr"):
            cls = sp.csc_matrix if self.fmt == "csc" else sp.csr_matrix
            mat = cls((data, np.asarray(s["indices"]), np.asarray(s["indptr"])), shape=shape)
        else:
            coords = s.get("coords") or (s["row"], s["col"])
            mat = sp.coo_matrix((data, (np.asarray(coords[0]), np.asarray(coords[1]))), shape=shape)
        return np.asarray(mat.toarray())


def _sparse_class(fmt):
    return type(f"_{fmt}_matrix", (_SparseStandIn,), {"fmt": fmt})


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstruct()
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("__builtin__", "slice"): slice,
    ("_codecs", "encode"): _latin1_encode,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_mod, "scalar")] = _SCALAR
for _fmt in ("csc", "csr", "coo"):
    for _mod in ("scipy.sparse", f"scipy.sparse.{_fmt}", f"scipy.sparse._{_fmt}"):
        _ALLOWED[(_mod, f"{_fmt}_matrix")] = _sparse_class(_fmt)
        _ALLOWED[(_mod, f"{_fmt}_array")] = _sparse_class(_fmt)


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowlist (possibly malicious)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (_ChumpyStandIn,), {})
        raise RefusedGlobalError(
            f"refusing to load global '{module}.{name}': not on the allowlist of a body-model file"
        )


def _to_array(obj):
    if isinstance(obj, (_ChumpyStandIn, _SparseStandIn)):
        return obj.to_array()
    return obj


def _read_pkl(path) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        data = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except RefusedGlobalError as e:
        raise ValueError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable body-model pickle (truncated or corrupt?): {e!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict of model arrays, found {type(data).__name__}")
    return {str(k): _to_array(v) for k, v in data.items()}


def _read_npz(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated or corrupt?): {e!r}") from None


def _guess_other_model(arrays: dict) -> str | None:
    keys = set(arrays)
    n_verts = np.shape(arrays.get("v_template", np.zeros((0, 3))))[0]
    n_joints = np.shape(arrays.get("kintree_table", np.zeros((2, 0))))[1]
    if "lmk_faces_idx" in keys or n_verts == 10475:
        return "SMPL-X"
    if n_verts == 778 or ("hands_components" in keys and n_joints == 16):
        return "MANO"
    if n_joints == 52 or "hands_coeffsl" in keys:
        return "SMPL-H"
    return None


def _validate(arrays: dict, path) -> None:
    other = _guess_other_model(arrays)
    if other is not None:
        raise ValueError(f"{path}: this looks like a {other} model file, but an SMPL model (24 joints) is expected")
    missing = [k for k in _REQUIRED_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; an SMPL file holds {list(_REQUIRED_KEYS)}")

    def shape(k):
        return tuple(np.shape(arrays[k]))

    v = shape("v_template")
    if len(v) != 2 or v[1] != 3:
        raise ValueError(f"{path}: v_template must be (V, 3), found {v}")
    n = v[0]
    checks = {
        "shapedirs": (len(shape("shapedirs")) == 3 and shape("shapedirs")[:2] == (n, 3), f"({n}, 3, K)"),
        "posedirs": (shape("posedirs") == (n, 3, NUM_POSE_BASIS), f"({n}, 3, {NUM_POSE_BASIS})"),
        "J_regressor": (shape("J_regressor") == (NUM_JOINTS, n), f"({NUM_JOINTS}, {n})"),
        "weights": (shape("weights") == (n, NUM_JOINTS), f"({n}, {NUM_JOINTS})"),
        "kintree_table": (shape("kintree_table") == (2, NUM_JOINTS), f"(2, {NUM_JOINTS})"),
        "f": (len(shape("f")) == 2 and shape("f")[1] == 3, "(F, 3)"),
    }
    for key, (ok, expected) in checks.items():
        if not ok:
            raise ValueError(f"{path}: {key} must have shape {expected} for a {n}-vertex model, found {shape(key)}")
    faces = np.asarray(arrays["f"])
    if faces.size and (faces.min() < 0 or faces.max() >= n):
        raise ValueError(f"{path}: face indices must lie in [0, {n}), found range [{faces.min()}, {faces.max()}]")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.all(np.isfinite(np.asarray(arrays[key], dtype=np.float64))):
            raise ValueError(f"{path}: {key} contains NaN or inf")


def from_arrays(
    v_template,
    shapedirs,
    posedirs,
    J_regressor,
    weights,
    f,
    kintree_table=None,
    joint_names=None,
    dtype=np.float32,
    **unused,
) -> SMPLModel:
    """Build an `SMPLModel` from arrays in SMPL's file layout (shapedirs (V, 3, K), posedirs (V, 3, 207))."""
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
    )


def load(path: str | os.PathLike, dtype=np.float32) -> SMPLModel:
    """Load an SMPL model from `.npz` (plain arrays) or an official SMPL `.pkl` (safely)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"SMPL model file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        arrays = _read_npz(path)
    elif ext == ".pkl":
        arrays = _read_pkl(path)
    else:
        raise ValueError(f"{path}: unknown model file type {ext!r}; expected .npz or .pkl")
    _validate(arrays, path)
    return from_arrays(**arrays, dtype=dtype)


def load_regressor(
    path: str | os.PathLike, num_joints: int | None = None, num_vertices: int | None = None
) -> np.ndarray:
    """Load a dense (J, V) or (J, V + 24) float32 joint regressor (.npy / .npz, no pickle).

    E.g. SPIN's J_regressor_h36m.npy (17, V). The (J, V + 24) form also weights the 24 SMPL
    kinematic joints (see `model_joints`). Raises naming the file when it is missing,
    unreadable, or not (num_joints, num_vertices) or (num_joints, num_vertices + 24).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"joint regressor file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
        if isinstance(arr, np.lib.npyio.NpzFile):
            with arr:
                arr = arr[arr.files[0]]
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable regressor array: {e!r}") from None
    if arr.ndim != 2:
        raise ValueError(f"{path}: a joint regressor must be (J, {num_vertices or 'V'}), found {arr.shape}")
    cols = None if num_vertices is None else (num_vertices, num_vertices + NUM_JOINTS)
    if (num_joints is not None and arr.shape[0] != num_joints) or (cols is not None and arr.shape[1] not in cols):
        j = "J" if num_joints is None else num_joints
        v = "V" if num_vertices is None else num_vertices
        v24 = "V + 24" if num_vertices is None else num_vertices + NUM_JOINTS
        raise ValueError(f"joint regressor file {path!r}: expected shape ({j}, {v}) or ({j}, {v24}), found {arr.shape}")
    return arr.astype(np.float32)


def take_vertices(model: SMPLModel, indices) -> SMPLModel:
    """The body restricted to the vertices `indices` (1-D, unique, increasing, within [0, V)).

    `forward` on the result gives exactly those vertices of the full body's, in that order, and
    the same joints (they come from joint_template / joint_shapedirs, which are kept whole), at
    the cost of len(indices) vertices: e.g. vertex losses on a subset in a training step
    (config `train.vertex_loss_stride`). J_regressor keeps the columns of the kept vertices;
    faces keep the triangles whose three corners are kept, renumbered.
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
    return dataclasses.replace(
        model,
        v_template=model.v_template[idx],
        shapedirs=model.shapedirs[:, :, idx],
        posedirs=model.posedirs[:, :, idx],
        J_regressor=model.J_regressor[:, idx],
        weights=model.weights[idx],
        faces=jnp.asarray(faces, jnp.int32),
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

    if n > _CHUNK:  # large batches: chunks keep the per-vertex intermediates in cache
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
