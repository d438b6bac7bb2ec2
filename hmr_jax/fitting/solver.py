"""`fit`: SMPLify for any number of people, one compiled program (stage 1, then stage 2).

    from hmr_jax import smpl
    from hmr_jax.fitting import fit, keypoint_body, Camera

    kb = keypoint_body(smpl.load("SMPL_NEUTRAL.pkl"), ("openpose25",))
    result = fit(kb, keypoints_2d, confidence, Camera(5000.0, center))   # (B, 25, 2), (B, 25), ...
    result.pose, result.betas, result.transl                            # (B, 72), (B, 10), (B, 3)

Every person's parameters are optimised independently (the batch's objective is the sum of the
people's and each optimiser update is per element), so a person's fit does not depend on who else
is in the batch. Both stages run inside one `jax.jit` as `lax.scan`s over optax updates.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from hmr_jax import smpl
from hmr_jax.fitting import keypoints as kp_lib
from hmr_jax.fitting import objective
from hmr_jax.fitting import prior as prior_lib

# The start when there is no better one: the body facing the camera (a half turn about x takes
# SMPL's y-up frame to the camera's y-down one), mean shape.
FACING_CAMERA = (np.pi, 0.0, 0.0)
DEFAULT_SCALE = 0.9  # weak-perspective scale of a body filling 90 % of its box, when 2D points are too few


class Camera(NamedTuple):
    """Pinhole camera of the keypoints' image: focal length (px) and principal point (px).

    focal_length: scalar or (B,); center: (2,) or (B, 2).
    """

    focal_length: Array | float
    center: Array


class FitInit(NamedTuple):
    """A start for the fit: pose (B, 72) axis-angle, betas (B, K), transl (B, 3) (None: estimated)."""

    pose: Array
    betas: Array
    transl: Array | None = None


class FitResult(NamedTuple):
    pose: Float[Array, "b 72"]
    betas: Float[Array, "b k"]
    transl: Float[Array, "b 3"]
    loss: Float[Array, " b"]  # stage 2's objective at the result
    reprojection_loss: Float[Array, " b"]  # mean over keypoints of conf^2 x GMcClure (SPIN's fit quality)
    error_px: Float[Array, " b"]  # mean pixel distance over the keypoints with confidence > 0
    keypoints_2d: Float[Array, "b k 2"]  # the fitted body's keypoints, projected
    stage1_loss: Float[Array, " b"]


def mean_init(prior: prior_lib.PosePrior, batch: int, num_betas: int = 10) -> FitInit:
    """Facing the camera, body pose = the mean of the prior's component means, mean shape."""
    body = jnp.mean(prior.means, axis=0)
    pose = jnp.concatenate([jnp.asarray(FACING_CAMERA, body.dtype), body])
    return FitInit(jnp.broadcast_to(pose, (batch, 72)), jnp.zeros((batch, num_betas), body.dtype))


def estimate_translation(
    points: Float[Array, "b k 3"],
    keypoints_2d: Float[Array, "b k 2"],
    weights: Float[Array, "b k"],
    focal: Float[Array, " b"],
    center: Float[Array, "b 2"],
) -> Float[Array, "b 3"]:
    """Camera translation putting `points` over `keypoints_2d` (similar triangles on the weighted
    spread and centroid); people with fewer than two weighted points get the default depth."""
    w = weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-9)
    mean3 = jnp.sum(w[..., None] * points[..., :2], axis=1)  # (B, 2)
    mean2 = jnp.sum(w[..., None] * keypoints_2d, axis=1)
    spread3 = jnp.sqrt(jnp.sum(w * jnp.sum(jnp.square(points[..., :2] - mean3[:, None]), -1), -1))
    spread2 = jnp.sqrt(jnp.sum(w * jnp.sum(jnp.square(keypoints_2d - mean2[:, None]), -1), -1))
    enough = (jnp.sum(weights > 0, axis=-1) >= 2) & (spread2 > 1e-3) & (spread3 > 1e-6)
    default_z = 2.0 * focal / (2.0 * jnp.max(center, axis=-1) * DEFAULT_SCALE)
    tz = jnp.where(enough, focal * spread3 / jnp.where(enough, spread2, 1.0), default_z)
    txy = jnp.where(enough[:, None], (mean2 - center) * (tz / focal)[:, None] - mean3, 0.0)
    return jnp.concatenate([txy, tz[:, None]], axis=-1)


def _optimizer(config: objective.FitConfig, learning_rate: float) -> optax.GradientTransformation:
    if config.optimizer == "lbfgs":
        return optax.lbfgs()
    return optax.adam(learning_rate)


def _minimise(loss_fn, params, steps: int, learning_rate: float, config: objective.FitConfig):
    """`steps` optax updates of params on sum(loss_fn(params)) (a per-person vector)."""
    if steps == 0:
        return params
    tx = _optimizer(config, learning_rate)

    def total(p):
        return jnp.sum(loss_fn(p))

    def step(carry, _):
        p, state = carry
        value, grad = jax.value_and_grad(total)(p)
        if config.optimizer == "lbfgs":
            updates, state = tx.update(grad, state, p, value=value, grad=grad, value_fn=total)
        else:
            updates, state = tx.update(grad, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params


def _fit(kb, keypoints_2d, confidence, focal, center, init, prior, config: objective.FitConfig) -> FitResult:
    dtype = kb.body.v_template.dtype
    torso = objective.torso_indices(kb)
    pose0, betas0 = init.pose.astype(dtype), init.betas.astype(dtype)
    if init.transl is None:
        points0 = kp_lib.keypoints_3d(kb, betas0, pose0)
        transl0 = estimate_translation(points0, keypoints_2d, (confidence > 0).astype(dtype), focal, center)
    else:
        transl0 = init.transl.astype(dtype)

    body_pose = pose0[:, 3:]

    def loss1(p):
        pose = jnp.concatenate([p["global_orient"], body_pose], axis=-1)
        points = kp_lib.keypoints_3d(kb, betas0, pose, p["transl"])
        return objective.stage1_loss(
            points, keypoints_2d, confidence, focal, center, transl0[:, 2], p["transl"], torso, config
        )

    p1 = _minimise(
        loss1,
        {"global_orient": pose0[:, :3], "transl": transl0},
        config.stage1_steps,
        config.stage1_learning_rate,
        config,
    )
    transl = p1["transl"]
    conf2 = confidence * objective.stage2_mask(kb, config)

    def terms(p):
        pose = jnp.concatenate([p["global_orient"], p["body_pose"]], axis=-1)
        points = kp_lib.keypoints_3d(kb, p["betas"], pose, transl)
        t = objective.stage2_terms(points, pose, p["betas"], keypoints_2d, conf2, focal, center, prior, config)
        return t, points

    def loss2(p):
        return objective.stage2_total(terms(p)[0])

    p2 = _minimise(
        loss2,
        {"global_orient": p1["global_orient"], "body_pose": body_pose, "betas": betas0},
        config.stage2_steps,
        config.stage2_learning_rate,
        config,
    )
    t, points = terms(p2)
    pose = jnp.concatenate([p2["global_orient"], p2["body_pose"]], axis=-1)
    proj = objective.project(points, focal, center)
    return FitResult(
        pose=pose,
        betas=p2["betas"],
        transl=transl,
        loss=objective.stage2_total(t),
        reprojection_loss=jnp.mean(t["reprojection_per_keypoint"], axis=-1),
        error_px=objective.mean_pixel_error(proj, keypoints_2d, confidence),
        keypoints_2d=proj,
        stage1_loss=loss1(p1),
    )


_fit_jit = jax.jit(_fit, static_argnames=("config",))


def fit(
    kb: kp_lib.KeypointBody,
    keypoints_2d: Float[Array, "b k 2"],
    confidence: Float[Array, "b k"],
    camera: Camera,
    init: FitInit | None = None,
    config: objective.FitConfig = objective.FitConfig(),
    prior: prior_lib.PosePrior | None = None,
) -> FitResult:
    """Fit the body to 2D keypoints (pixels of the camera's image), SMPLify's two stages.

    kb: the body and its keypoints (`keypoint_body`); keypoints_2d / confidence in kb's keypoint
    order (confidence 0 = missing); camera: focal length and principal point; init: the start
    (default: `mean_init`, translation from the keypoints); prior: the GMM pose prior (default:
    `prior.default_prior()`). Compiles once per (batch size, keypoint body, config).
    """
    keypoints_2d = jnp.asarray(keypoints_2d, jnp.float32)
    confidence = jnp.asarray(confidence, jnp.float32)
    if keypoints_2d.ndim != 3 or keypoints_2d.shape[1:] != (kb.num_keypoints, 2):
        raise ValueError(f"keypoints_2d: expected (B, {kb.num_keypoints}, 2), found {keypoints_2d.shape}")
    if confidence.shape != keypoints_2d.shape[:2]:
        raise ValueError(f"confidence: expected {keypoints_2d.shape[:2]}, found {confidence.shape}")
    b = keypoints_2d.shape[0]
    # A missing point may come as NaN: it is not seen (confidence 0) and its position does not matter.
    finite = jnp.all(jnp.isfinite(keypoints_2d), axis=-1) & jnp.isfinite(confidence)
    confidence = jnp.where(finite, jnp.maximum(confidence, 0.0), 0.0)
    keypoints_2d = jnp.where(finite[..., None], keypoints_2d, 0.0)
    focal = jnp.broadcast_to(jnp.asarray(camera.focal_length, jnp.float32), (b,))
    center = jnp.broadcast_to(jnp.asarray(camera.center, jnp.float32), (b, 2))
    if prior is None:
        prior = prior_lib.default_prior()
    if init is None:
        init = mean_init(prior, b)
    if init.pose.shape != (b, 72) or init.betas.ndim != 2 or init.betas.shape[0] != b:
        raise ValueError(
            f"init: expected pose ({b}, 72) and betas ({b}, K), found {init.pose.shape} and {init.betas.shape}"
        )
    if init.betas.shape[1] > kb.body.num_betas:
        raise ValueError(f"init.betas has {init.betas.shape[1]} values; the body model has {kb.body.num_betas}")
    return _fit_jit(kb, keypoints_2d, confidence, focal, center, init, prior, config)


def body_of(model: smpl.SMPLModel, result: FitResult) -> smpl.SMPLOutput:
    """The fitted bodies' full meshes and joints, in the camera frame."""
    return smpl.forward(model, result.betas, result.pose, result.transl)
