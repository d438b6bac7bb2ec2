"""SMPLify's objective, as SPIN fits it: camera and torso first, then the whole body.

Stage 1 (camera translation t and global orientation), per person:
    sum over the 4 torso keypoints (hips, shoulders) of the squared pixel error
    + depth_weight^2 (t_z - t_z_init)^2
with OpenPose's hips and shoulders when all four are confident, else the other keypoint set's.
(SPIN adds the other set's four unweighted; here a point of confidence 0 adds nothing, which only
differs where a dataset marks a torso joint missing.)

Stage 2 (body pose, shape and global orientation; the camera fixed), per person:
    sum_j conf_j^2 * sum_xy GMcClure(proj_j - x_j; sigma)        GMcClure(r) = sigma^2 r^2 / (sigma^2 + r^2)
    + pose_prior_weight^2 * GMM max-mixture penalty(body pose)   (`fitting.prior`)
    + angle_prior_weight^2 * sum exp(+-theta)^2 over knee and elbow flexion (bending the wrong way)
    + shape_prior_weight^2 * |beta|^2
with the keypoints named in `FitConfig.stage2_ignore` (OpenPose's neck, every hip) at confidence 0.
Projection: pinhole, focal length f, principal point c, camera rotation identity (SPIN's).
"""

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Float

from hmr_jax import geometry
from hmr_jax.fitting import keypoints as kp_lib
from hmr_jax.fitting import prior as prior_lib

TORSO = ("right_hip", "left_hip", "right_shoulder", "left_shoulder")
# Knee and elbow flexion components of the 72 pose values, with the sign of bending the wrong way
# (SMPLify's angle prior): left elbow +y, right elbow -y, knees -x (skeleton.HINGE_LIMITS_DEG).
ANGLE_PRIOR = ((18 * 3 + 1, 1.0), (19 * 3 + 1, -1.0), (4 * 3 + 0, -1.0), (5 * 3 + 0, -1.0))
OPTIMIZERS = ("adam", "lbfgs")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Every number of the fit (SPIN's SMPLify defaults). Hashable: a static argument of `fit`."""

    stage1_steps: int = 100
    stage1_learning_rate: float = 1e-2
    stage2_steps: int = 100
    stage2_learning_rate: float = 1e-2
    optimizer: str = "adam"  # 'adam' | 'lbfgs' (optax), both stages
    depth_weight: float = 100.0
    sigma_px: float = 100.0
    pose_prior_weight: float = 4.78
    angle_prior_weight: float = 15.2
    shape_prior_weight: float = 5.0
    stage2_ignore: tuple = (
        "openpose25/neck",
        "openpose25/right_hip",
        "openpose25/left_hip",
        "smpl24/right_hip",
        "smpl24/left_hip",
        "spin24/right_hip",
        "spin24/left_hip",
    )

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"fitting.optimizer: expected one of {OPTIMIZERS}, found {self.optimizer!r}")
        for name in ("stage1_steps", "stage2_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"fitting.{name}: expected >= 0, found {getattr(self, name)}")
        for name in ("stage1_learning_rate", "stage2_learning_rate", "sigma_px"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"fitting.{name}: expected > 0, found {getattr(self, name)}")
        object.__setattr__(self, "stage2_ignore", tuple(self.stage2_ignore))


def from_config(cfg) -> FitConfig:
    """A `FitConfig` from a mapping / ConfigDict of its fields (unknown keys are an error)."""
    values = dict(cfg)
    known = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"fitting: unknown keys {unknown}; expected some of {sorted(known)}")
    return FitConfig(**values)


def torso_indices(kb: kp_lib.KeypointBody) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(OpenPose's torso keypoints, the other set's): indices into kb's keypoints; the OpenPose
    tuple is the other set's when the fit has no OpenPose points, and vice versa."""
    op = tuple(kb.names.index(f"openpose25/{n}") for n in TORSO) if f"openpose25/{TORSO[0]}" in kb.names else ()
    other = ()
    for s in ("spin24", "smpl24"):
        if f"{s}/{TORSO[0]}" in kb.names:
            other = tuple(kb.names.index(f"{s}/{n}") for n in TORSO)
            break
    return (op or other), (other or op)


def stage2_mask(kb: kp_lib.KeypointBody, config: FitConfig) -> Float[Array, " k"]:
    """(K,) 1 for keypoints stage 2 uses, 0 for those `config.stage2_ignore` names."""
    return jnp.asarray([0.0 if n in config.stage2_ignore else 1.0 for n in kb.names], jnp.float32)


def gmcclure(residual: Array, sigma: float) -> Array:
    """Geman-McClure robust penalty sigma^2 r^2 / (sigma^2 + r^2), elementwise."""
    sq = jnp.square(residual)
    return sigma**2 * sq / (sigma**2 + sq)


def project(
    points: Float[Array, "b k 3"], focal: Float[Array, " b"], center: Float[Array, "b 2"]
) -> Float[Array, "b k 2"]:
    """Pinhole projection with one focal length per person (stacked as (fx, fy): a (B,) focal whose
    B is 2 would otherwise read as one (fx, fy) pair for everyone)."""
    return geometry.perspective_project(points, jnp.stack([focal, focal], axis=-1), center)


def robust_reprojection(
    projected: Float[Array, "b k 2"], keypoints_2d: Float[Array, "b k 2"], confidence: Float[Array, "b k"], sigma: float
) -> Float[Array, "b k"]:
    """Stage 2's reprojection per keypoint: conf^2 x the GMcClure of x and y, summed."""
    return jnp.square(confidence) * jnp.sum(gmcclure(projected - keypoints_2d, sigma), axis=-1)


def mean_pixel_error(
    projected: Float[Array, "b k 2"], keypoints_2d: Float[Array, "b k 2"], confidence: Float[Array, "b k"]
) -> Float[Array, " b"]:
    """Mean distance (px) over the keypoints of confidence > 0 (0 for a person with none)."""
    present = (confidence > 0).astype(projected.dtype)
    dist = jnp.linalg.norm(projected - keypoints_2d, axis=-1)
    return jnp.sum(dist * present, -1) / jnp.maximum(jnp.sum(present, -1), 1.0)


def angle_prior(pose: Float[Array, "b 72"]) -> Float[Array, " b"]:
    idx = jnp.asarray([i for i, _ in ANGLE_PRIOR])
    sign = jnp.asarray([s for _, s in ANGLE_PRIOR], pose.dtype)
    return jnp.sum(jnp.square(jnp.exp(pose[:, idx] * sign)), axis=-1)


def stage1_loss(
    points: Float[Array, "b k 3"],
    keypoints_2d: Float[Array, "b k 2"],
    confidence: Float[Array, "b k"],
    focal: Float[Array, " b"],
    center: Float[Array, "b 2"],
    transl_z_init: Float[Array, " b"],
    transl: Float[Array, "b 3"],
    torso: tuple[tuple[int, ...], tuple[int, ...]],
    config: FitConfig,
) -> Float[Array, " b"]:
    """Stage 1 per person; `points` are the posed keypoints with the translation applied."""
    op_idx, other_idx = (jnp.asarray(t) for t in torso)
    proj = project(points, focal, center)
    sq = jnp.sum(jnp.square(proj - keypoints_2d), axis=-1)  # (B, K)
    present = (confidence > 0).astype(sq.dtype)
    use_op = jnp.all(confidence[:, op_idx] > 0, axis=-1)  # (B,)
    err_op = jnp.sum(sq[:, op_idx] * present[:, op_idx], axis=-1)
    err_other = jnp.sum(sq[:, other_idx] * present[:, other_idx], axis=-1)
    reprojection = jnp.where(use_op, err_op, err_other)
    return reprojection + config.depth_weight**2 * jnp.square(transl[:, 2] - transl_z_init)


def stage2_terms(
    points: Float[Array, "b k 3"],
    pose: Float[Array, "b 72"],
    betas: Float[Array, "b n"],
    keypoints_2d: Float[Array, "b k 2"],
    confidence: Float[Array, "b k"],
    focal: Float[Array, " b"],
    center: Float[Array, "b 2"],
    prior: prior_lib.PosePrior,
    config: FitConfig,
) -> dict[str, Float[Array, " b"]]:
    """Stage 2's terms per person (already weighted); `confidence` already has the ignored points at 0.

    'reprojection_per_keypoint' (B, K) is conf^2 x the summed GMcClure of the two coordinates.
    """
    per_kp = robust_reprojection(project(points, focal, center), keypoints_2d, confidence, config.sigma_px)
    return {
        "reprojection_per_keypoint": per_kp,
        "reprojection": jnp.sum(per_kp, axis=-1),
        "pose_prior": config.pose_prior_weight**2 * prior_lib.penalty(prior, pose[:, 3:]),
        "angle_prior": config.angle_prior_weight**2 * angle_prior(pose),
        "shape_prior": config.shape_prior_weight**2 * jnp.sum(jnp.square(betas), axis=-1),
    }


def stage2_total(terms: dict[str, Array]) -> Float[Array, " b"]:
    return terms["reprojection"] + terms["pose_prior"] + terms["angle_prior"] + terms["shape_prior"]
