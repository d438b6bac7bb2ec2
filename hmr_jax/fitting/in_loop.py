"""Fitting in the training loop (SPIN): per-sample best fits, refitted from the regressor every step.

The table holds, per training sample (its `index`), the best fit so far in the sample's own frame
(before augmentation): pose (72 axis-angle), betas, and its fitting loss (+inf: none yet). Each
step, for the batch's samples:

1. the stored fit is brought into this step's crop (`augment_pose`: rotation about the camera z
   axis, then the mirror when flipped, as the data pipeline transforms labels) and scored on the
   crop's keypoints (translation estimated, SMPLify's reprojection loss: `score`);
2. SMPLify runs from the regressor's current estimate (pose, betas, camera as translation);
3. where the new fit's loss is lower, it replaces the stored one (taken back out of the crop's
   frame, `unaugment_pose`);
4. the better of the two supervises the sample when its loss is below a threshold.

Everything here is a pure function of arrays (jit inside the training step).
"""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from hmr_jax import geometry, skeleton
from hmr_jax.fitting import keypoints as kp_lib
from hmr_jax.fitting import objective, solver
from hmr_jax.fitting import prior as prior_lib

SPIN_CROP_PX = 224.0  # the crop size SPIN's SMPLify numbers were set for


def init_table(num_samples: int, num_betas: int = 10) -> dict[str, Array]:
    """An empty table: no fit for any of `num_samples` samples (loss +inf)."""
    return {
        "pose": jnp.zeros((num_samples, 72), jnp.float32),
        "betas": jnp.zeros((num_samples, num_betas), jnp.float32),
        "loss": jnp.full((num_samples,), jnp.inf, jnp.float32),
    }


def _rot_z(angle: Float[Array, " b"]) -> Float[Array, "b 3 3"]:
    c, s = jnp.cos(angle), jnp.sin(angle)
    z, o = jnp.zeros_like(c), jnp.ones_like(c)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2)


def _rotate_global(pose: Float[Array, "b 72"], angle: Float[Array, " b"]) -> Float[Array, "b 72"]:
    rot = _rot_z(angle) @ geometry.axis_angle_to_matrix(pose[:, :3])
    return jnp.concatenate([geometry.matrix_to_axis_angle(rot), pose[:, 3:]], axis=-1)


def _mirror(pose: Float[Array, "b 72"]) -> Float[Array, "b 72"]:
    p = pose.reshape(-1, 24, 3)[:, jnp.asarray(skeleton.SMPL24_FLIP_PERM)]
    return (p * jnp.asarray([1.0, -1.0, -1.0], pose.dtype)).reshape(-1, 72)


def augment_pose(pose: Float[Array, "b 72"], rot: Float[Array, " b"], flip: Array) -> Float[Array, "b 72"]:
    """A pose of the sample's frame in the augmented crop's: rotated about camera z by `rot`
    (radians), then mirrored where `flip` (the pipeline's `transform_pose`)."""
    out = _rotate_global(pose, rot)
    return jnp.where(flip.astype(bool)[:, None], _mirror(out), out)


def unaugment_pose(pose: Float[Array, "b 72"], rot: Float[Array, " b"], flip: Array) -> Float[Array, "b 72"]:
    """The inverse of `augment_pose`."""
    out = jnp.where(flip.astype(bool)[:, None], _mirror(pose), pose)
    return _rotate_global(out, -rot)


def score(
    kb: kp_lib.KeypointBody,
    pose: Float[Array, "b 72"],
    betas: Float[Array, "b k"],
    keypoints_2d: Float[Array, "b j 2"],
    confidence: Float[Array, "b j"],
    focal: Float[Array, " b"],
    center: Float[Array, "b 2"],
    config: objective.FitConfig,
) -> Float[Array, " b"]:
    """SMPLify's reprojection loss of a body on keypoints (translation estimated from them): the
    mean over keypoints of conf^2 x GMcClure, stage 2's keypoints (the quantity fits are ranked by)."""
    points = kp_lib.keypoints_3d(kb, betas, pose)
    transl = solver.estimate_translation(points, keypoints_2d, (confidence > 0).astype(points.dtype), focal, center)
    proj = objective.project(points + transl[:, None], focal, center)
    conf = confidence * objective.stage2_mask(kb, config)
    return jnp.mean(objective.robust_reprojection(proj, keypoints_2d, conf, config.sigma_px), axis=-1)


class Refit(NamedTuple):
    table: dict[str, Array]  # the updated table
    pose: Float[Array, "b 72"]  # the best fit, in the crop's frame
    betas: Float[Array, "b k"]
    loss: Float[Array, " b"]  # its fitting loss
    updated: Float[Array, " b"]  # 1 where this step's fit replaced the stored one
    error_px: Float[Array, " b"]  # this step's fit: mean keypoint distance


def refit(
    table: dict[str, Array],
    index: Int[Array, " b"],
    rot: Float[Array, " b"],
    flip: Array,
    mask: Float[Array, " b"],
    keypoints: Float[Array, "b j 3"],
    pred_pose: Float[Array, "b 72"],
    pred_betas: Float[Array, "b k"],
    pred_transl: Float[Array, "b 3"],
    kb: kp_lib.KeypointBody,
    prior: prior_lib.PosePrior,
    focal: float,
    img_size: float,
    config: objective.FitConfig,
) -> Refit:
    """One step's fitting for a batch (see the module docstring). `keypoints` (x, y, confidence) in
    crop pixels; the camera: `focal`, principal point at the crop's centre; `mask` 0 for padding.

    The fit runs in the pixels of a `SPIN_CROP_PX` crop (keypoints and focal length scaled by
    SPIN_CROP_PX / img_size; the projection, so the bodies, unchanged), the units SMPLify's weights,
    sigma and SPIN's threshold were set in: the balance of reprojection against the priors is then
    the same for any crop size, and the losses it returns are in those units."""
    b = index.shape[0]
    index = index.astype(jnp.int32)
    k = SPIN_CROP_PX / img_size
    kp, conf = keypoints[..., :2] * k, keypoints[..., 2]
    focal_b = jnp.full((b,), focal * k, jnp.float32)
    center = jnp.full((b, 2), SPIN_CROP_PX / 2.0, jnp.float32)
    stored_pose = augment_pose(table["pose"][index], rot, flip)
    stored_betas = table["betas"][index]
    stored_loss = jnp.where(
        jnp.isfinite(table["loss"][index]),
        score(kb, stored_pose, stored_betas, kp, conf, focal_b, center, config),
        jnp.inf,
    )
    init = solver.FitInit(pred_pose, pred_betas, pred_transl)
    new = solver.fit(kb, kp, conf, solver.Camera(focal_b, center), init=init, config=config, prior=prior)
    better = (new.reprojection_loss < stored_loss) & (mask > 0) & jnp.isfinite(new.reprojection_loss)
    pose = jnp.where(better[:, None], new.pose, stored_pose)
    betas = jnp.where(better[:, None], new.betas, stored_betas)
    loss = jnp.where(better, new.reprojection_loss, stored_loss)
    # Write only the improved rows (padding may repeat an index; out-of-range rows are dropped).
    rows = jnp.where(better, index, table["loss"].shape[0])
    new_table = {
        "pose": table["pose"].at[rows].set(unaugment_pose(new.pose, rot, flip), mode="drop"),
        "betas": table["betas"].at[rows].set(new.betas, mode="drop"),
        "loss": table["loss"].at[rows].set(new.reprojection_loss, mode="drop"),
    }
    return Refit(new_table, pose, betas, loss, better.astype(jnp.float32), new.error_px)
