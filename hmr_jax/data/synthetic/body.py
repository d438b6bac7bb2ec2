"""The body for the workers: SMPL arrays in numpy and a numpy port of `smpl.forward`.

The rendering workers are plain processes that never import jax (starting jax per worker and
dispatching one small body at a time would cost more than the rendering), so the body's linear
blend skinning is written again here, in numpy, for one body at a time. `tests/test_synthetic.py`
compares it with `smpl.forward`.
"""

import dataclasses
import os

import numpy as np
from scipy.spatial.transform import Rotation

from hmr_jax import skeleton

NUM_BETAS = 10


@dataclasses.dataclass(frozen=True)
class Body:
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


def body_from_model(model) -> Body:
    """A `Body` from an `smpl.SMPLModel`."""
    asnp = lambda x: np.asarray(x, np.float32)
    v = model.v_template.shape[0]
    k = model.shapedirs.shape[0]
    label = np.argmax(np.asarray(model.weights), axis=1)
    tv = np.asarray(model.v_template)
    is_head = label == 15
    lo, hi = tv[is_head].min(0), tv[is_head].max(0)
    rel = (tv - lo) / np.maximum(hi - lo, 1e-6)  # position inside the head's box, 0..1
    hair = is_head & ((rel[:, 1] > 0.72) | ((rel[:, 2] < 0.45) & (rel[:, 1] > 0.3)))
    return Body(
        v_template=asnp(model.v_template),
        shapedirs=asnp(model.shapedirs).transpose(0, 2, 1).reshape(k, v * 3),  # (K, 3, V) -> (K, V*3)
        posedirs=asnp(model.posedirs).transpose(0, 2, 1).reshape(207, v * 3),  # (207, 3, V) -> (207, V*3)
        joint_template=asnp(model.joint_template),
        joint_shapedirs=asnp(model.joint_shapedirs).reshape(k, 72),
        weights=asnp(model.weights),
        faces=np.asarray(model.faces, np.int64),
        part_label=label,
        hair=hair,
    )


def shaped(body: Body, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) vertices and (24, 3) joints of the body with shape `betas`, in the rest pose."""
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


def posed_joints(rest_joints: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(24, 3) joints posed by `pose` (24, 3) axis-angle, from the (24, 3) rest joints."""
    return _chain(Rotation.from_rotvec(pose).as_matrix(), rest_joints)[0]


def forward(body: Body, v_shaped: np.ndarray, rest_joints: np.ndarray, pose: np.ndarray):
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


def load(body_model_path=None) -> tuple[Body, str]:
    """The body model file at `body_model_path` (default: the procedural body) as a `Body`, and its path."""
    from hmr_jax import smpl

    if body_model_path is None:
        from hmr_jax import body_model

        body_model_path = body_model.default_body_model_path()
    path = os.fspath(body_model_path)
    model = smpl.load(path)
    if model.num_betas < NUM_BETAS:
        raise ValueError(f"{path}: expected a body model with >= {NUM_BETAS} shape directions, found {model.num_betas}")
    return body_from_model(model), path
