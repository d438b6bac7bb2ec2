"""What a crop does to the labels (conventions: augment's docstring): 2D keypoints (``A``, then
the joint set's left/right permutation when flipped), 3D joints and the camera (a rotation about
the camera z axis, mirrored when flipped), the SMPL pose (global orientation rotated; when
flipped, left/right swap of the 24 joints and (x, y, z) -> (x, -y, -z)). Any leading batch dims.
Imports no jax."""

import tensorflow as tf

from hmr_jax import skeleton
from hmr_jax.data.crop_geometry import apply_affine


def rot_z(rot: tf.Tensor) -> tf.Tensor:
    """(...) -> (..., 3, 3) rotation about the camera z axis."""
    c, s = tf.cos(rot), tf.sin(rot)
    z, o = tf.zeros_like(c), tf.ones_like(c)
    return tf.stack([tf.stack([c, -s, z], -1), tf.stack([s, c, z], -1), tf.stack([z, z, o], -1)], -2)


def _permute_if(x: tf.Tensor, flip: tf.Tensor, perm: tf.Tensor) -> tf.Tensor:
    """x (..., J, D): joints permuted where flip (...)."""
    return tf.where(flip[..., None, None], tf.gather(x, perm, axis=-2), x)


def transform_keypoints_2d(part: tf.Tensor, A: tf.Tensor, flip: tf.Tensor, flip_perm: tf.Tensor) -> tf.Tensor:
    """part (..., J, 3) source px + vis -> (..., J, 3) crop px + vis (permuted when flipped)."""
    part = tf.cast(part, tf.float32)
    out = tf.concat([apply_affine(A, part[..., :2]), part[..., 2:]], axis=-1)
    return _permute_if(out, flip, flip_perm)


def transform_points_3d(points: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """points (..., N, 3) camera frame -> M3 R3 points (no permutation)."""
    out = tf.einsum("...ij,...nj->...ni", rot_z(rot), tf.cast(points, tf.float32))
    return out * tf.where(flip[..., None, None], tf.constant([-1.0, 1.0, 1.0]), 1.0)


def transform_joints_3d(S: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor, flip_perm: tf.Tensor) -> tf.Tensor:
    """S (..., J, 4) root-centred metres + conf -> rotated about camera z, mirrored + permuted if
    flipped."""
    S = tf.cast(S, tf.float32)
    out = tf.concat([transform_points_3d(S[..., :3], rot, flip), S[..., 3:]], axis=-1)
    return _permute_if(out, flip, flip_perm)


def _aa_to_quat(aa: tf.Tensor) -> tf.Tensor:
    """(..., 3) -> (..., 4) quaternion (w, x, y, z); safe at 0."""
    angle = tf.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    k = tf.where(angle > 1e-6, tf.sin(half) / tf.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return tf.concat([tf.cos(half), aa * k], axis=-1)


def _quat_to_aa(q: tf.Tensor) -> tf.Tensor:
    """(..., 4) -> (..., 3), angle in [0, pi]; robust at 0 and pi (no matrix round trip)."""
    q = tf.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    sin_half = tf.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * tf.atan2(sin_half, q[..., :1])
    k = tf.where(sin_half > 1e-7, angle / tf.maximum(sin_half, 1e-12), 2.0 / q[..., :1])
    return v * k


def _quat_mul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    aw, ax, ay, az = tf.unstack(a, axis=-1)
    bw, bx, by, bz = tf.unstack(b, axis=-1)
    return tf.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def rotate_global_orient(aa: tf.Tensor, rot: tf.Tensor) -> tf.Tensor:
    """aa (..., 3), rot (...) -> axis-angle of R3(rot) @ R(aa); untouched where rot == 0."""
    aa = tf.cast(aa, tf.float32)
    rot = tf.cast(rot, tf.float32)
    z = tf.zeros_like(rot)
    qz = tf.stack([tf.cos(rot / 2), z, z, tf.sin(rot / 2)], -1)
    rotated = _quat_to_aa(_quat_mul(qz, _aa_to_quat(aa)))  # angle canonicalised to [0, pi]
    return tf.where(tf.equal(rot, 0.0)[..., None], aa, rotated)


def flip_pose(pose: tf.Tensor) -> tf.Tensor:
    """pose (..., 72) axis-angle -> mirrored body: swap left/right SMPL joints, (x,y,z) -> (x,-y,-z)."""
    pose = tf.cast(pose, tf.float32)
    lead = tf.shape(pose)[:-1]
    p = tf.reshape(pose, tf.concat([lead, [24, 3]], 0))
    p = tf.gather(p, skeleton.SMPL24_FLIP_PERM, axis=-2) * tf.constant([1.0, -1.0, -1.0])
    return tf.reshape(p, tf.shape(pose))


def transform_pose(pose: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """pose (..., 72): global orientation rotated about camera z; mirrored where flip (...)."""
    pose = tf.cast(pose, tf.float32)
    out = tf.concat([rotate_global_orient(pose[..., :3], rot), pose[..., 3:]], axis=-1)
    return tf.where(flip[..., None], flip_pose(out), out)


def transform_camera(
    focal: tf.Tensor, cam_center: tf.Tensor, cam_t: tf.Tensor, A: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Pinhole camera in crop space for the augmented (rotated/mirrored) 3D joints.
    focal (..., 2), cam_center (..., 2), cam_t (..., 3)."""
    scale = tf.norm(A[..., 1, :2], axis=-1)[..., None]  # F
    center = apply_affine(A, tf.cast(cam_center, tf.float32)[..., None, :])[..., 0, :]
    t = transform_points_3d(tf.cast(cam_t, tf.float32)[..., None, :], rot, flip)[..., 0, :]
    return tf.cast(focal, tf.float32) * scale, center, t


def augment_annotations(
    ex: dict[str, tf.Tensor], A: tf.Tensor, rot: tf.Tensor, flip: tf.Tensor, flip_perm: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Geometry of a sample or a batch: keypoints_2d, joints_3d, pose (+ cam_* if in `ex`)."""
    out = {
        "keypoints_2d": transform_keypoints_2d(ex["part"], A, flip, flip_perm),
        "joints_3d": transform_joints_3d(ex["S"], rot, flip, flip_perm),
        "pose": transform_pose(ex["pose"], rot, flip),
    }
    if "cam_focal" in ex:
        out["cam_focal"], out["cam_center"], out["cam_t"] = transform_camera(
            ex["cam_focal"], ex["cam_center"], ex["cam_t"], A, rot, flip
        )
    return out
