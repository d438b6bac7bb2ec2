"""Evaluation metrics, all per sample (shape (B,)) so the evaluator can average them with masks.

Inputs are in metres. Definitions, exactly (e_j = Euclidean distance of joint/vertex j):

* ``mpjpe``: 1000 * mean_j e_j after subtracting each set's root (pelvis) from it (mm).
* ``pa_mpjpe``: 1000 * mean_j e_j after aligning the prediction to the ground truth with the
  best similarity transform (scale, rotation, translation; `geometry.procrustes_align`, or its
  weighted form when per-joint weights are given) (mm).
* ``mpjpe`` / ``pa_mpjpe`` with ``weights``: sum_j w_j e_j / sum_j w_j; joints of weight 0 are
  ignored entirely (their GT may be garbage).
* ``pve``: 1000 * mean_v e_v, per-vertex Euclidean error (mm). Without roots the vertices are
  compared as given (SPIN's 3DPW protocol: both meshes from SMPL parameters without
  translation, so already in the same frame); with `pred_root` / `gt_root` each mesh is first
  translated by minus its root (pelvis alignment, as most later papers).
* ``v2v_l2``: mean_v e_v^2, the mean over vertices of the *squared* Euclidean distance, in m^2
  (the founding report's "vertex-to-vertex L2" score and eq. (1); no alignment; summed over
  x, y, z, not averaged: a per-coordinate MSE would be this / 3).
* ``pose_outside_limits``: share of the 23 body joints (global orientation excluded) whose local
  rotation breaks a simple anatomical limit (see its docstring), in [0, 1].

H36M protocol (as SPIN): regress the 17 H36M joints from the mesh, subtract joint 0 (pelvis),
keep the 14 LSP joints (`h36m_protocol_joints`), then MPJPE with no further alignment
(``root=None``) and PA-MPJPE.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from hmr_jax import geometry, skeleton

M_TO_MM = 1000.0


def _center(x, root):
    """Subtract the root: root is None (no-op), a joint-set name, or indices (mean of them)."""
    if root is None:
        return x
    if isinstance(root, str):
        idx = skeleton.get_joint_set(root).root_indices
    else:
        idx = tuple(int(i) for i in np.atleast_1d(root))
    r = jnp.mean(jnp.take(x, jnp.asarray(idx), axis=-2), axis=-2, keepdims=True)
    return x - r


def _weighted_mean(err, weights):
    if weights is None:
        return jnp.mean(err, axis=-1)
    weights = jnp.asarray(weights, err.dtype)
    if weights.shape != err.shape:
        raise ValueError(f"weights: expected shape {err.shape} (one per joint), found {weights.shape}")
    err = jnp.where(weights > 0, err, 0.0)  # zero-weight joints may hold garbage (NaN) GT
    return jnp.sum(weights * err, axis=-1) / jnp.maximum(jnp.sum(weights, axis=-1), 1e-8)


def _check(name, pred, gt):
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(
            f"{name}: expected prediction and ground truth of equal shape (B, N, 3), found {pred.shape} vs {gt.shape}"
        )


def mpjpe(
    pred: Float[Array, "b j 3"],
    gt: Float[Array, "b j 3"],
    root: str | Sequence[int] | int | None = (0,),
    weights: Float[Array, "b j"] | None = None,
) -> Float[Array, " b"]:
    """Mean per-joint position error in mm after root alignment.

    Args:
      root: what to align: a joint-set name ('smpl24', 'spin24', 'h36m17': its root), joint
        index / indices (their mean), or None (joints already root-centred, e.g. the H36M protocol).
      weights: optional per-joint weights (e.g. GT confidence); mean = sum w e / sum w.
    """
    _check("mpjpe", pred, gt)
    err = jnp.linalg.norm(_center(pred, root) - _center(gt, root), axis=-1)  # (B, J)
    return M_TO_MM * _weighted_mean(err, weights)


def pa_mpjpe(
    pred: Float[Array, "b j 3"],
    gt: Float[Array, "b j 3"],
    weights: Float[Array, "b j"] | None = None,
) -> Float[Array, " b"]:
    """MPJPE (mm) after Procrustes similarity alignment of `pred` to `gt`.

    Without `weights`, `geometry.procrustes_align` on all J joints. With per-joint `weights`
    (e.g. GT confidence), the alignment is the weighted least-squares similarity (joints of
    weight 0 are ignored, even if their GT is garbage) and the error is the weighted mean.
    """
    _check("pa_mpjpe", pred, gt)
    if weights is None:
        aligned = geometry.procrustes_align(pred, gt)  # (B, J, 3)
    else:
        weights = jnp.asarray(weights, pred.dtype)
        if weights.shape != pred.shape[:-1]:
            raise ValueError(f"weights: expected shape {pred.shape[:-1]} (one per joint), found {weights.shape}")
        gt = jnp.where(weights[..., None] > 0, gt, 0.0)
        aligned = weighted_procrustes_align(pred, gt, weights)
    err = jnp.linalg.norm(aligned - gt, axis=-1)  # (B, J)
    return M_TO_MM * _weighted_mean(err, weights)


def weighted_procrustes_align(
    x: Float[Array, "b n 3"], y: Float[Array, "b n 3"], w: Float[Array, "b n"]
) -> Float[Array, "b n 3"]:
    """Similarity transform of `x` minimising sum_n w_n ||s R x_n + t - y_n||^2 (Umeyama, weighted).

    Equal weights give `geometry.procrustes_align`.
    """
    return geometry.apply_similarity(*geometry.similarity_fit(x, y, w), x)


def pve(
    pred_vertices: Float[Array, "b v 3"],
    gt_vertices: Float[Array, "b v 3"],
    pred_root: Float[Array, "b 3"] | None = None,
    gt_root: Float[Array, "b 3"] | None = None,
) -> Float[Array, " b"]:
    """Per-vertex error: mean Euclidean vertex distance in mm.

    With `pred_root` and `gt_root` (e.g. each mesh's pelvis joint), each mesh is translated by
    minus its root first; without them, the meshes are compared as given. Give both or neither.
    """
    _check("pve", pred_vertices, gt_vertices)
    if (pred_root is None) != (gt_root is None):
        raise ValueError("pve: give both pred_root and gt_root (pelvis alignment) or neither")
    if pred_root is not None:
        pred_vertices = pred_vertices - pred_root[..., None, :]
        gt_vertices = gt_vertices - gt_root[..., None, :]
    return M_TO_MM * jnp.mean(jnp.linalg.norm(pred_vertices - gt_vertices, axis=-1), axis=-1)


def v2v_l2(pred_vertices: Float[Array, "b v 3"], gt_vertices: Float[Array, "b v 3"]) -> Float[Array, " b"]:
    """The report's vertex-to-vertex L2 score: mean_v ||v - v_gt||^2 in m^2 (no alignment)."""
    _check("v2v_l2", pred_vertices, gt_vertices)
    return jnp.mean(jnp.sum((pred_vertices - gt_vertices) ** 2, axis=-1), axis=-1)


def h36m_protocol_joints(joints17: Float[Array, "b 17 3"]) -> Float[Array, "b 14 3"]:
    """The 14 LSP joints of the 17 H36M-regressor joints, centred on H36M joint 0 (pelvis).

    As SPIN's evaluation: subtract the pelvis, then take `skeleton.H36M_TO_J14`. Apply to the
    prediction (regressed with J_regressor_h36m); the GT is compared with `mpjpe(..., root=None)`.
    """
    if joints17.shape[-2:] != (17, 3):
        raise ValueError(f"h36m_protocol_joints: expected (B, 17, 3) H36M joints, found {joints17.shape}")
    pelvis = joints17[..., skeleton.H36M_PELVIS_INDEX : skeleton.H36M_PELVIS_INDEX + 1, :]
    return (joints17 - pelvis)[..., jnp.asarray(skeleton.H36M_TO_J14), :]


# --- pose plausibility --------------------------------------------------------------------------


def pose_outside_limits(pose_rotmat: Float[Array, "b 24 3 3"]) -> Float[Array, " b"]:
    """Share of the 23 body joints (index 0, global orientation, is not checked) outside limits.

    Each joint's local rotation (relative to its parent, SMPL order) is written as an
    axis-angle vector a = angle * axis. A joint is outside its limits (`skeleton.HINGE_LIMITS_DEG`,
    `skeleton.ANGLE_LIMITS_DEG`) when:

    =====================  ==========================================================
    joints                 limit (degrees)
    =====================  ==========================================================
    knees (4, 5)           flexion f = a . (+x) in [-10, 160]; off-axis |a - f x| <= 45
    left elbow (18)        flexion f = a . (-y) in [-10, 160]; off-axis <= 90
    right elbow (19)       flexion f = a . (+y) in [-10, 160]; off-axis <= 90
    hips (1, 2)            |a| <= 140
    spine1/2/3 (3, 6, 9)   |a| <= 60
    ankles (7, 8)          |a| <= 60
    feet (10, 11)          |a| <= 45
    neck (12), head (15)   |a| <= 60
    collars (13, 14)       |a| <= 45
    shoulders (16, 17)     |a| <= 160
    wrists (20, 21)        |a| <= 100
    hands (22, 23)         |a| <= 90
    =====================  ==========================================================

    Knees and elbows bend one way only: a knee bent backwards (negative x rotation beyond
    10 deg) or an elbow bent backwards counts as outside. Flexion and off-axis parts come from
    the axis-angle vector (exact for rotations about one axis, an approximation for mixed
    ones). The limits are deliberately generous: this flags implausible poses, it is not a
    prior. Returns values in [0, 1], a multiple of 1/23.
    """
    if pose_rotmat.shape[-3:] != (24, 3, 3):
        raise ValueError(f"pose_outside_limits: expected (B, 24, 3, 3) rotations, found {pose_rotmat.shape}")
    aa = geometry.matrix_to_axis_angle(pose_rotmat)  # (B, 24, 3)
    angle = jnp.linalg.norm(aa, axis=-1)  # (B, 24)
    outside = []
    for idx, _, limit in skeleton.ANGLE_LIMITS_DEG:
        outside.append(angle[..., idx] > jnp.deg2rad(limit))
    for idx, _, axis, lo, hi, off_max in skeleton.HINGE_LIMITS_DEG:
        axis = jnp.asarray(axis, aa.dtype)
        a = aa[..., idx, :]  # (B, 3)
        flex = a @ axis  # (B,)
        off = jnp.linalg.norm(a - flex[..., None] * axis, axis=-1)
        outside.append((flex < jnp.deg2rad(lo)) | (flex > jnp.deg2rad(hi)) | (off > jnp.deg2rad(off_max)))
    outside = jnp.stack(outside, axis=-1)  # (B, 23)
    return jnp.mean(outside.astype(pose_rotmat.dtype), axis=-1)
