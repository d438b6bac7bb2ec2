"""Rotations, kinematic chains, camera projections and Procrustes alignment (jax only).

Every function is batched over any leading dimensions and is safe under `jax.jit`,
`jax.vmap` and `jax.grad`. Conventions: right-handed frames, camera frame as OpenCV/SPIN
(+x right, +y down, +z forward), metres for 3D, radians for angles.

Weak-perspective camera (HMR): ``cam = (s, tx, ty)`` maps a 3D point X to normalised image
coordinates ``s * (X[:2] + (tx, ty))`` in [-1, 1] across the crop; crop pixels are
``(x_norm + 1) * img_size / 2``. The equivalent perspective camera (SPIN) looks at the body
from ``t = (tx, ty, 2 f / (img_size * s))`` with focal length ``f`` pixels (5000 at 224 px).
"""

from collections.abc import Sequence

import jax.numpy as jnp
from jaxtyping import Array, Float

_EPS = 1e-8


def _skew(v: Float[Array, "... 3"]) -> Float[Array, "... 3 3"]:
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], -1),
            jnp.stack([z, zero, -x], -1),
            jnp.stack([-y, x, zero], -1),
        ],
        -2,
    )


def axis_angle_to_matrix(aa: Float[Array, "... 3"]) -> Float[Array, "... 3 3"]:
    """Rodrigues' formula, R = I + sin(t)/t K + (1 - cos(t))/t^2 K^2 with K = skew(aa).

    Near t = 0 the coefficients use their Taylor series, so values and gradients are exact
    and finite at and around the zero rotation (no NaN from 0/0).
    """
    theta2 = jnp.sum(aa * aa, axis=-1)
    small = theta2 < 1e-6
    safe_t2 = jnp.where(small, 1.0, theta2)
    safe_t = jnp.sqrt(safe_t2)
    a = jnp.where(small, 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0, jnp.sin(safe_t) / safe_t)
    b = jnp.where(small, 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0, (1.0 - jnp.cos(safe_t)) / safe_t2)
    k = _skew(aa)
    eye = jnp.eye(3, dtype=aa.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_axis_angle(rot: Float[Array, "... 3 3"]) -> Float[Array, "... 3"]:
    """Inverse of `axis_angle_to_matrix`, angle in [0, pi]; stable near 0 and near pi."""
    trace = rot[..., 0, 0] + rot[..., 1, 1] + rot[..., 2, 2]
    cos = jnp.clip((trace - 1.0) / 2.0, -1.0, 1.0)
    vee = jnp.stack(
        [rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0], rot[..., 1, 0] - rot[..., 0, 1]], -1
    )  # = 2 sin(t) * axis
    sin = 0.5 * jnp.linalg.norm(vee, axis=-1)
    angle = jnp.arctan2(sin, cos)
    # Generic case: axis from the antisymmetric part.
    small = sin < 1e-4
    factor = jnp.where(small, 0.5 + angle**2 / 12.0, angle / (2.0 * jnp.where(small, 1.0, sin)))
    generic = factor[..., None] * vee
    # Beyond 120 degrees the antisymmetric part loses precision (it vanishes at pi): take the
    # axis from the symmetric part, (R + R^T) / 2 - cos I = (1 - cos) a a^T, using its column
    # with the largest diagonal entry, and its sign from the antisymmetric part.
    sym = (rot + jnp.swapaxes(rot, -1, -2)) / 2.0 - cos[..., None, None] * jnp.eye(3, dtype=rot.dtype)
    diag = jnp.diagonal(sym, axis1=-2, axis2=-1)
    col = jnp.argmax(diag, axis=-1)
    axis = jnp.take_along_axis(sym, col[..., None, None], axis=-1)[..., 0]
    axis = axis / jnp.maximum(jnp.linalg.norm(axis, axis=-1, keepdims=True), _EPS)
    sign = jnp.where(jnp.sum(axis * vee, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    near_pi = cos < -0.5
    return jnp.where(near_pi[..., None], sign * axis * angle[..., None], generic)


def rot6d_to_matrix(x: Float[Array, "... 6"]) -> Float[Array, "... 3 3"]:
    """6D representation (Zhou et al. 2019): the first two columns of R, Gram-Schmidt'ed."""
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = a1 / jnp.maximum(jnp.linalg.norm(a1, axis=-1, keepdims=True), _EPS)
    a2 = a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / jnp.maximum(jnp.linalg.norm(a2, axis=-1, keepdims=True), _EPS)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(rot: Float[Array, "... 3 3"]) -> Float[Array, "... 6"]:
    """First two columns of R, concatenated (inverse of `rot6d_to_matrix` on rotations)."""
    return jnp.concatenate([rot[..., :, 0], rot[..., :, 1]], axis=-1)


def nearest_rotation(m: Float[Array, "... 3 3"]) -> Float[Array, "... 3 3"]:
    """The rotation closest to m in the Frobenius norm (SVD: U diag(1, 1, det(U V^T)) V^T);
    e.g. the mean of two rotation matrices projected back onto SO(3)."""
    u, _, vt = jnp.linalg.svd(m)
    d = jnp.sign(jnp.linalg.det(u @ vt))
    return (u * jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d], axis=-1)[..., None, :]) @ vt


def kinematic_chain(
    rot_mats: Float[Array, "... j 3 3"],
    joints: Float[Array, "... j 3"],
    parents: Sequence[int],
) -> tuple[Float[Array, "... j 3"], Float[Array, "... j 4 4"]]:
    """Pose a kinematic tree.

    Args:
      rot_mats: local rotation of every joint relative to its parent.
      joints: rest-pose joint locations.
      parents: static tuple, parents[0] = -1 and parents[i] < i.

    Returns:
      posed joint locations and, per joint, the 4x4 rigid transform that maps a rest-pose
      point to its posed location (the "relative" transform that skinning blends).
    """
    parents = tuple(int(p) for p in parents)
    batch = jnp.broadcast_shapes(rot_mats.shape[:-3], joints.shape[:-2])
    rot_mats = jnp.broadcast_to(rot_mats, batch + rot_mats.shape[-3:])
    joints = jnp.broadcast_to(joints, batch + joints.shape[-2:])
    rel = joints - jnp.take(joints, jnp.array([max(p, 0) for p in parents]), axis=-2)
    rel = rel.at[..., 0, :].set(joints[..., 0, :])
    rots = [rot_mats[..., 0, :, :]]
    locs = [rel[..., 0, :]]
    for i in range(1, len(parents)):
        p = parents[i]
        rots.append(rots[p] @ rot_mats[..., i, :, :])
        locs.append(locs[p] + jnp.einsum("...ij,...j->...i", rots[p], rel[..., i, :]))
    rot = jnp.stack(rots, axis=-3)
    posed = jnp.stack(locs, axis=-2)
    trans = posed - jnp.einsum("...ij,...j->...i", rot, joints)
    top = jnp.concatenate([rot, trans[..., None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], rot.dtype), top.shape[:-2] + (1, 4))
    return posed, jnp.concatenate([top, bottom], axis=-2)


def perspective_project(
    points: Float[Array, "... n 3"],
    focal: Float[Array, "..."] | Float[Array, "... 2"] | float,
    center: Float[Array, "... 2"],
) -> Float[Array, "... n 2"]:
    """Pinhole projection of camera-frame points: u = f * X / Z + c."""
    focal = jnp.asarray(focal, points.dtype)
    if focal.ndim == 0 or focal.shape[-1] != 2:
        focal = jnp.stack([focal, focal], axis=-1)
    z = points[..., 2:3]
    z = jnp.where(jnp.abs(z) < _EPS, _EPS, z)
    return points[..., :2] / z * focal[..., None, :] + jnp.asarray(center, points.dtype)[..., None, :]


def weak_perspective_project(points: Float[Array, "... n 3"], cam: Float[Array, "... 3"]) -> Float[Array, "... n 2"]:
    """HMR's weak perspective: s * (X[:2] + (tx, ty)), normalised coordinates in [-1, 1]."""
    return cam[..., None, 0:1] * (points[..., :2] + cam[..., None, 1:3])


def weak_perspective_to_translation(cam: Float[Array, "... 3"], focal: float, img_size: float) -> Float[Array, "... 3"]:
    """SPIN's conversion: t = (tx, ty, 2 f / (img_size * s)); exact for points at depth t_z."""
    s = cam[..., 0]
    tz = 2.0 * focal / (img_size * jnp.where(jnp.abs(s) < _EPS, _EPS, s))
    return jnp.stack([cam[..., 1], cam[..., 2], tz], axis=-1)


def translation_to_weak_perspective(t: Float[Array, "... 3"], focal: float, img_size: float) -> Float[Array, "... 3"]:
    """Inverse of `weak_perspective_to_translation` (principal point at the crop centre)."""
    s = 2.0 * focal / (img_size * t[..., 2])
    return jnp.stack([s, t[..., 0], t[..., 1]], axis=-1)


def similarity_fit(
    x: Float[Array, "... n 3"], y: Float[Array, "... n 3"], w: Float[Array, "... n"] | None = None
) -> tuple[Float[Array, "..."], Float[Array, "... 3 3"], Float[Array, "... 1 3"], Float[Array, "... 1 3"]]:
    """(scale s, rotation R, mean of x, mean of y) of the similarity s R (x - mean_x) + mean_y
    closest to `y` in (w-weighted) least squares (Umeyama; equal weights when `w` is None)."""
    if w is None:
        wn = jnp.full(x.shape[:-1], 1.0 / x.shape[-2], x.dtype)
    else:
        wn = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-8)  # sums to 1
    mx = jnp.sum(wn[..., None] * x, axis=-2, keepdims=True)
    my = jnp.sum(wn[..., None] * y, axis=-2, keepdims=True)
    x0, y0 = x - mx, y - my
    var_x = jnp.sum(wn * jnp.sum(x0 * x0, axis=-1), axis=-1)
    cov = jnp.swapaxes(wn[..., None] * x0, -1, -2) @ y0  # (..., 3, 3) = sum_n w_n x_n y_n^T
    u, s, vt = jnp.linalg.svd(cov)
    # Reflection guard: flip the last singular direction when det(V U^T) < 0.
    d = jnp.sign(jnp.linalg.det(jnp.swapaxes(vt, -1, -2) @ jnp.swapaxes(u, -1, -2)))
    d = jnp.where(d == 0, 1.0, d)
    diag = jnp.concatenate([jnp.ones_like(s[..., :2]), d[..., None]], axis=-1)
    rot = jnp.swapaxes(vt, -1, -2) @ (diag[..., :, None] * jnp.swapaxes(u, -1, -2))  # R with y ~ R x
    scale = jnp.sum(s * diag, axis=-1) / jnp.maximum(var_x, _EPS)
    return scale, rot, mx, my


def apply_similarity(scale, rot, mx, my, x: Float[Array, "... n 3"]) -> Float[Array, "... n 3"]:
    """s R (x - mx) + my (the arguments as `similarity_fit` returns them)."""
    return scale[..., None, None] * jnp.einsum("...ij,...nj->...ni", rot, x - mx) + my


def procrustes_align(x: Float[Array, "... n 3"], y: Float[Array, "... n 3"]) -> Float[Array, "... n 3"]:
    """Similarity transform (scale, rotation, translation) of `x` that best matches `y` (L2)."""
    return apply_similarity(*similarity_fit(x, y), x)
