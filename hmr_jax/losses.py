"""Loss terms of the generator (eqs. 1-7 of the founding report) and of the discriminators (eq. 8).

Every function is a pure function of arrays and returns a scalar. Reductions, exactly:

* Per sample, a term is a *mean over elements* (vertices or joints) of a per-element distance
  that is *summed over coordinates*:
    - ``vertex_l2``:  mean_v ||v - v_gt||_2^2             (eq. 1, m^2; sum over x, y, z)
    - ``vertex_l1``:  mean_v ||v - v_gt||_1               (eq. 2, m; |dx| + |dy| + |dz|)
    - ``beta_l2``:    ||beta - beta_gt||_2^2              (eq. 3; sum over the K coefficients)
    - ``pose_l2``:    mean_j ||R_j - R_j_gt||_F^2         (eq. 4; 24 joints incl. global orient)
    - ``joints_3d_l2``: mean_j c_j ||X_j - X_j_gt||_2^2   (eq. 5; after root alignment, c = conf)
    - ``joints_3d_pa``: the same after the similarity alignment of X to X_gt (PA-MPJPE's; not in
      the report): articulation only, no global rotation / scale / translation
    - ``joints_2d_l1``: mean_j c_j ||x_j - x_j_gt||_1     (eq. 6; normalised coords, c = vis)
    - ``keypoints_l1``: the same distance for 2D points predicted directly (the optional keypoint
      head's term ``keypoints_2d``; not in the report)
* Over the batch, a masked mean: sum_b m_b * term_b / max(sum_b m_b, 1). A batch whose mask is
  all zero gives exactly 0 (and zero gradients), never NaN. Masked-out samples may hold
  garbage (even NaN/inf in the GT) without contaminating the loss: they are zeroed with
  ``jnp.where`` before the reduction.
* Adversarial (LSGAN, 25 discriminators: 23 per-joint, 1 shape, 1 whole pose), inputs (B, 25):
    - generator  (eq. 7):  sum_i mean_b (D_i(fake_b) - 1)^2
    - discriminator (eq. 8): sum_i [ mean_b (D_i(real_b) - 1)^2 + mean_b D_i(fake_b)^2 ]
  i.e. each discriminator's expectation is a mean over its batch, and the 25 are summed
  (D outputs all 0.5 give 25 * 0.25 for the generator). Real and fake batches may differ in size.

Units: metres, normalised image coordinates ([-1, 1] across the crop) for 2D, rotation matrices.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from hmr_jax import geometry, skeleton

ADVERSARIAL_NUM_DISCRIMINATORS = 25
LOSS_TERMS = (
    "vertex_l2",
    "vertex_l1",
    "beta",
    "pose",
    "joints_3d",
    "joints_2d",
    "adversarial",
    "keypoints_2d",
    "keypoint_heatmap",
    "lift",
    "joints_3d_pa",
)
# The terms of the lifting pass (trainer: `lift` = sum of these, each with its own weight, computed on
# the regressor's estimate from ground-truth 2D keypoints): the 3D supervision.
LIFT_TERMS = ("vertex_l2", "vertex_l1", "beta", "pose", "joints_3d", "joints_3d_pa")


def masked_mean(values: Float[Array, " b"], mask: Float[Array, " b"] | None) -> Float[Array, ""]:
    """sum(mask * values) / max(sum(mask), 1); masked-out values (even NaN) contribute nothing."""
    if mask is None:
        return jnp.mean(values)
    mask = jnp.asarray(mask, values.dtype)
    if mask.shape != values.shape:
        raise ValueError(f"mask: expected shape {values.shape} (one per sample), found {mask.shape}")
    safe = jnp.where(mask > 0, values, 0.0)
    return jnp.sum(mask * safe) / jnp.maximum(jnp.sum(mask), 1.0)


def _check_same_shape(name: str, pred, gt) -> None:
    if pred.shape != gt.shape:
        raise ValueError(
            f"{name}: prediction and ground truth must have equal shapes, found {pred.shape} vs {gt.shape}"
        )


def _zero_masked(x, mask):
    """Replace samples with mask == 0 by zeros (so NaN GT of unlabelled samples cannot leak)."""
    if mask is None:
        return x
    if mask.shape != x.shape[:1]:
        raise ValueError(f"mask: expected shape {x.shape[:1]} (one per sample), found {mask.shape}")
    keep = (jnp.asarray(mask) > 0).reshape(mask.shape + (1,) * (x.ndim - 1))
    return jnp.where(keep, x, jnp.zeros_like(x))


def vertex_l2_loss(
    pred_vertices: Float[Array, "b v 3"],
    gt_vertices: Float[Array, "b v 3"],
    has_smpl: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """Eq. (1): mean over vertices of the squared Euclidean distance (m^2), masked by has_smpl."""
    _check_same_shape("vertex_l2_loss", pred_vertices, gt_vertices)
    diff = pred_vertices - _zero_masked(gt_vertices, has_smpl)  # (B, V, 3)
    per_sample = jnp.mean(jnp.sum(diff**2, axis=-1), axis=-1)  # (B,)
    return masked_mean(per_sample, has_smpl)


def vertex_l1_loss(
    pred_vertices: Float[Array, "b v 3"],
    gt_vertices: Float[Array, "b v 3"],
    has_smpl: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """Eq. (2): mean over vertices of the L1 distance |dx|+|dy|+|dz| (m), masked by has_smpl."""
    _check_same_shape("vertex_l1_loss", pred_vertices, gt_vertices)
    diff = pred_vertices - _zero_masked(gt_vertices, has_smpl)  # (B, V, 3)
    per_sample = jnp.mean(jnp.sum(jnp.abs(diff), axis=-1), axis=-1)  # (B,)
    return masked_mean(per_sample, has_smpl)


def beta_l2_loss(
    pred_betas: Float[Array, "b k"],
    gt_betas: Float[Array, "b k"],
    has_smpl: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """Eq. (3): squared L2 norm of the shape-coefficient error (sum over K), masked by has_smpl."""
    _check_same_shape("beta_l2_loss", pred_betas, gt_betas)
    diff = pred_betas - _zero_masked(gt_betas, has_smpl)  # (B, K)
    return masked_mean(jnp.sum(diff**2, axis=-1), has_smpl)


def pose_l2_loss(
    pred_rotmat: Float[Array, "b j 3 3"],
    gt_rotmat: Float[Array, "b j 3 3"],
    has_smpl: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """Eq. (4): mean over the joints (all 24, incl. global orientation) of ||R - R_gt||_F^2.

    Pass `gt_rotmat = geometry.axis_angle_to_matrix(pose.reshape(B, 24, 3))` (see `pose_to_rotmat`).
    """
    _check_same_shape("pose_l2_loss", pred_rotmat, gt_rotmat)
    diff = pred_rotmat - _zero_masked(gt_rotmat, has_smpl)  # (B, J, 3, 3)
    per_sample = jnp.mean(jnp.sum(diff**2, axis=(-2, -1)), axis=-1)  # (B,)
    return masked_mean(per_sample, has_smpl)


def pose_to_rotmat(pose: Float[Array, "b 72"]) -> Float[Array, "b 24 3 3"]:
    """Axis-angle SMPL pose (B, 72) -> rotation matrices (B, 24, 3, 3) (Rodrigues)."""
    return geometry.axis_angle_to_matrix(pose.reshape(pose.shape[:-1] + (-1, 3)))


def _root(joints: Float[Array, "... j 3"], joint_set: str) -> Float[Array, "... 3"]:
    """Root (pelvis) location of `joints`: the mean of the joint set's `root_indices`."""
    idx = jnp.asarray(skeleton.get_joint_set(joint_set).root_indices)
    return jnp.mean(jnp.take(joints, idx, axis=-2), axis=-2)


def joints_3d_l2_loss(
    pred_joints: Float[Array, "b j 3"],
    gt_joints: Float[Array, "b j 4"],
    has_joints_3d: Float[Array, " b"] | None = None,
    joint_set: str = "smpl24",
) -> Float[Array, ""]:
    """Eq. (5): mean_j c_j ||(X_j - root(X)) - (X_gt_j - root(X_gt))||^2, masked by has_joints_3d.

    Args:
      pred_joints: model joints in the dataset's joint set (see `smpl.model_joints`), metres.
      gt_joints: ground truth (B, J, 4): xyz metres + confidence c in [0, 1].
      has_joints_3d: per-sample mask.
      joint_set: names the root: both sets are centred on their own root
        (`skeleton.JOINT_SETS[joint_set].root_indices`: smpl24 -> pelvis 0, spin24 -> mid-hip 2, 3).
    The per-sample mean is over all J joints (confidence is a weight, not a normaliser).
    """
    if gt_joints.shape[:-1] != pred_joints.shape[:-1] or gt_joints.shape[-1] != 4:
        raise ValueError(
            f"joints_3d_l2_loss: expected gt (B, J, 4) matching pred {pred_joints.shape[:-1]}, found {gt_joints.shape}"
        )
    gt_joints = _zero_masked(gt_joints, has_joints_3d)
    gt_xyz, conf = gt_joints[..., :3], gt_joints[..., 3]  # (B, J, 3), (B, J)
    pred_c = pred_joints - _root(pred_joints, joint_set)[..., None, :]
    gt_c = gt_xyz - _root(gt_xyz, joint_set)[..., None, :]
    per_sample = jnp.mean(conf * jnp.sum((pred_c - gt_c) ** 2, axis=-1), axis=-1)  # (B,)
    return masked_mean(per_sample, has_joints_3d)


def normalize_keypoints(keypoints_px: Float[Array, "... 2"], img_size: float) -> Float[Array, "... 2"]:
    """Crop pixels -> normalised coordinates: x_norm = 2 x / img_size - 1 (inverse of the camera map)."""
    return 2.0 * keypoints_px / img_size - 1.0


def joints_3d_pa_loss(
    pred_joints: Float[Array, "b j 3"],
    gt_joints: Float[Array, "b j 4"],
    has_joints_3d: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """mean_j c_j ||A(X)_j - X_gt_j||^2 with A the similarity (scale, rotation, translation) that
    best aligns X to X_gt, confidence-weighted (`geometry.similarity_fit`): PA-MPJPE's alignment as
    a loss, so only the articulation is penalised. The gradient moves the joints with A's scale and
    rotation held (at the optimum the same gradient as through the fit); masked by has_joints_3d.
    """
    if gt_joints.shape[:-1] != pred_joints.shape[:-1] or gt_joints.shape[-1] != 4:
        raise ValueError(
            f"joints_3d_pa_loss: expected gt (B, J, 4) matching pred {pred_joints.shape[:-1]}, found {gt_joints.shape}"
        )
    gt_joints = _zero_masked(gt_joints, has_joints_3d)
    gt_xyz, conf = gt_joints[..., :3], gt_joints[..., 3]  # (B, J, 3), (B, J)
    scale, rot, mx, my = geometry.similarity_fit(pred_joints, gt_xyz, conf)
    aligned = geometry.apply_similarity(jax.lax.stop_gradient(scale), jax.lax.stop_gradient(rot), mx, my, pred_joints)
    per_sample = jnp.mean(conf * jnp.sum((aligned - gt_xyz) ** 2, axis=-1), axis=-1)  # (B,)
    return masked_mean(per_sample, has_joints_3d)


def joints_2d_l1_loss(
    pred_joints: Float[Array, "b j 3"],
    cam: Float[Array, "b 3"],
    keypoints_2d: Float[Array, "b j 3"],
    img_size: float,
    mask: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """Eq. (6): mean_j v_j (|dx| + |dy|) in normalised coordinates.

    Args:
      pred_joints: predicted 3D joints (B, J, 3) in the dataset's joint set.
      cam: weak-perspective camera (s, tx, ty); prediction = `geometry.weak_perspective_project`.
      keypoints_2d: ground truth (B, J, 3): x, y in crop pixels, visibility/confidence v.
      img_size: crop side in pixels; a 1 px error costs 2 / img_size.
      mask: optional per-sample mask (default: all samples count; visibility does the rest).
    """
    if keypoints_2d.shape[:-1] != pred_joints.shape[:-1] or keypoints_2d.shape[-1] != 3:
        raise ValueError(
            f"joints_2d_l1_loss: expected keypoints_2d (B, J, 3) matching pred {pred_joints.shape[:-1]}, "
            f"found {keypoints_2d.shape}"
        )
    return keypoints_l1_loss(geometry.weak_perspective_project(pred_joints, cam), keypoints_2d, img_size, mask)


def keypoints_l1_loss(
    pred_2d: Float[Array, "b j 2"],
    keypoints_2d: Float[Array, "b j 3"],
    img_size: float,
    mask: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """mean_j v_j (|dx| + |dy|) between 2D points already in normalised coordinates and the
    ground truth in crop pixels (eq. 6's distance; the keypoint head's loss, `keypoints_2d`).

    Args:
      pred_2d: (B, J, 2) in [-1, 1] crop coordinates (`normalize_keypoints`'s).
      keypoints_2d: ground truth (B, J, 3): x, y in crop pixels, visibility/confidence v.
      img_size: crop side in pixels.
      mask: optional per-sample mask.
    """
    if keypoints_2d.shape[:-1] != pred_2d.shape[:-1] or keypoints_2d.shape[-1] != 3 or pred_2d.shape[-1] != 2:
        raise ValueError(
            f"keypoints_l1_loss: expected pred (B, J, 2) and keypoints_2d (B, J, 3) with equal "
            f"(B, J), found {pred_2d.shape} and {keypoints_2d.shape}"
        )
    keypoints_2d = _zero_masked(keypoints_2d, mask)
    gt_2d = normalize_keypoints(keypoints_2d[..., :2], img_size)  # (B, J, 2)
    vis = keypoints_2d[..., 2]  # (B, J)
    per_sample = jnp.mean(vis * jnp.sum(jnp.abs(pred_2d - gt_2d), axis=-1), axis=-1)  # (B,)
    return masked_mean(per_sample, mask)


def keypoint_heatmap_loss(
    logits: Float[Array, "b h w j"],
    keypoints_2d: Float[Array, "b j 3"],
    img_size: float,
    sigma_px: float,
    mask: Float[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """mean_j v_j KL(t_j || softmax(logits_j)): each heatmap's distribution over its cells against
    a Gaussian t_j (std `sigma_px` crop pixels, normalised over the cells) around the true joint.

    The keypoint head's soft-argmax is the mean of softmax(logits); this term (as DSNT's
    regulariser, Nibali et al. 2018) also asks for the shape of a single peak at the joint, so a map
    does not spread over two candidates (its mean then lies between them). Zero when the softmax
    equals the target. Joints outside the crop (no cell near them) and invisible ones are left out.

    Args:
      logits: (B, h, w, J) heatmap logits over an h x w grid covering the crop (cell centres as in
        `keypoint_head.soft_argmax`).
      keypoints_2d: ground truth (B, J, 3): x, y in crop pixels, visibility/confidence v.
      img_size: crop side in pixels.
      sigma_px: the target's standard deviation in crop pixels (> 0).
      mask: optional per-sample mask.
    """
    b, h, w, j = logits.shape
    if keypoints_2d.shape != (b, j, 3):
        raise ValueError(
            f"keypoint_heatmap_loss: expected keypoints_2d (B, J, 3) = {(b, j, 3)} for logits "
            f"{logits.shape}, found {keypoints_2d.shape}"
        )
    keypoints_2d = _zero_masked(keypoints_2d, mask)
    xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) * (img_size / w)  # cell centres, crop px
    ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) * (img_size / h)
    gx, gy = keypoints_2d[..., 0:1], keypoints_2d[..., 1:2]  # (B, J, 1)
    log_tx = -((xs - gx) ** 2) / (2.0 * sigma_px**2)  # (B, J, w)
    log_ty = -((ys - gy) ** 2) / (2.0 * sigma_px**2)  # (B, J, h)
    log_t = log_ty[..., :, None] + log_tx[..., None, :]  # (B, J, h, w)
    log_t = log_t - jax.nn.logsumexp(log_t, axis=(-2, -1), keepdims=True)
    log_p = jax.nn.log_softmax(jnp.moveaxis(logits.astype(jnp.float32), -1, 1).reshape(b, j, h * w), axis=-1)
    kl = jnp.sum(jnp.exp(log_t) * (log_t - log_p.reshape(b, j, h, w)), axis=(-2, -1))  # (B, J)
    inside = (gx[..., 0] >= 0) & (gx[..., 0] < img_size) & (gy[..., 0] >= 0) & (gy[..., 0] < img_size)
    weight = keypoints_2d[..., 2] * inside
    per_sample = jnp.mean(weight * kl, axis=-1)  # (B,)
    return masked_mean(per_sample, mask)


def _check_disc(name: str, d):
    if d.ndim != 2 or d.shape[-1] != ADVERSARIAL_NUM_DISCRIMINATORS:
        raise ValueError(
            f"{name}: expected discriminator outputs (B, {ADVERSARIAL_NUM_DISCRIMINATORS}), found {d.shape}"
        )


def adversarial_generator_loss(d_fake: Float[Array, "b 25"]) -> Float[Array, ""]:
    """Eq. (7), LSGAN: sum over the 25 discriminators of mean_b (D_i(fake_b) - 1)^2."""
    _check_disc("adversarial_generator_loss d_fake", d_fake)
    return jnp.sum(jnp.mean((d_fake - 1.0) ** 2, axis=0))


def adversarial_discriminator_loss(d_real: Float[Array, "r 25"], d_fake: Float[Array, "b 25"]) -> Float[Array, ""]:
    """Eq. (8), LSGAN: sum_i [mean_r (D_i(real_r) - 1)^2 + mean_b D_i(fake_b)^2].

    `d_fake` should be computed on `jax.lax.stop_gradient` of the generator's output.
    """
    _check_disc("adversarial_discriminator_loss d_real", d_real)
    _check_disc("adversarial_discriminator_loss d_fake", d_fake)
    return jnp.sum(jnp.mean((d_real - 1.0) ** 2, axis=0)) + jnp.sum(jnp.mean(d_fake**2, axis=0))


def total_generator_loss(
    terms: Mapping[str, Float[Array, ""]], weights: Any
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Weighted sum of loss terms.

    Args:
      terms: name -> scalar (unweighted) loss; names as in config `loss_weights`
        (`LOSS_TERMS`).
      weights: config group `loss_weights` (an ml_collections ConfigDict or a dict) name -> float.

    Returns:
      (total, report) where report holds every term unweighted under its own name (zero-weight
      terms included) and the total under 'total'. Every weight needs a term and every term a
      weight (nothing is silently dropped).
    """
    weight_names = set(weights.keys())
    term_names = set(terms.keys())
    if weight_names != term_names:
        raise ValueError(
            "total_generator_loss: config 'loss_weights' and the computed terms must name the same "
            f"losses; weights without a term: {sorted(weight_names - term_names)}, "
            f"terms without a weight: {sorted(term_names - weight_names)}"
        )
    total = jnp.zeros((), jnp.result_type(*[jnp.asarray(t).dtype for t in terms.values()]))
    report = {}
    for name in sorted(term_names):
        value = jnp.asarray(terms[name])
        if value.shape != ():
            raise ValueError(f"total_generator_loss: term {name!r} must be a scalar, found shape {value.shape}")
        w = float(weights[name])
        if w != 0.0:
            total = total + w * value
        report[name] = value
    report["total"] = total
    return total, report


__all__ = [
    "LOSS_TERMS",
    "masked_mean",
    "vertex_l2_loss",
    "vertex_l1_loss",
    "beta_l2_loss",
    "pose_l2_loss",
    "pose_to_rotmat",
    "joints_3d_l2_loss",
    "normalize_keypoints",
    "joints_2d_l1_loss",
    "keypoints_l1_loss",
    "LIFT_TERMS",
    "joints_3d_pa_loss",
    "adversarial_generator_loss",
    "adversarial_discriminator_loss",
    "total_generator_loss",
]
