"""hmr_jax.geometry against scipy and closed-form cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmr_jax import geometry


def test_axis_angle_to_matrix_matches_scipy():
    rng = np.random.default_rng(0)
    aa = rng.normal(0, 1.5, (50, 3)).astype(np.float32)
    aa[0] = 0.0
    aa[1] = [1e-5, -2e-5, 0.0]
    got = geometry.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(got, Rotation.from_rotvec(aa.astype(np.float64)).as_matrix(), atol=1e-6)
    assert got.shape == (50, 3, 3)
    assert geometry.axis_angle_to_matrix(aa.reshape(5, 10, 3)).shape == (5, 10, 3, 3)


def test_rodrigues_gradient_finite_at_zero():
    def f(aa):
        return jnp.sum(geometry.axis_angle_to_matrix(aa) * jnp.arange(9.0).reshape(3, 3))

    g = jax.grad(f)(jnp.zeros(3))
    # d/daa of sum(W * skew(aa)) at zero: the skew-symmetric part of W.
    np.testing.assert_allclose(g, [7.0 - 5.0, 2.0 - 6.0, 3.0 - 1.0], atol=1e-6)
    g2 = jax.grad(f)(jnp.array([1e-4, 0.0, 0.0]))
    assert np.all(np.isfinite(g2))


@pytest.mark.parametrize("angle", [0.0, 1e-6, 0.3, 2.0, np.pi - 1e-3, np.pi])
def test_matrix_to_axis_angle_roundtrip(angle):
    rng = np.random.default_rng(1)
    axis = rng.normal(size=(8, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    aa = (axis * angle).astype(np.float32)
    rot = Rotation.from_rotvec(aa.astype(np.float64)).as_matrix().astype(np.float32)
    back = np.asarray(geometry.matrix_to_axis_angle(rot))
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), rot, atol=2e-5)
    if angle < np.pi - 1e-2:
        np.testing.assert_allclose(back, aa, atol=2e-5)


def test_rot6d_roundtrip_and_orthonormal():
    rng = np.random.default_rng(2)
    rot = Rotation.random(20, random_state=3).as_matrix().astype(np.float32)
    np.testing.assert_allclose(geometry.rot6d_to_matrix(geometry.matrix_to_rot6d(rot)), rot, atol=1e-6)
    r = np.asarray(geometry.rot6d_to_matrix(rng.normal(size=(20, 6)).astype(np.float32)))
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_nearest_rotation_closed_form():
    """Rotations are kept; the mean of two rotations about one axis projects to the rotation by the
    mean angle; any matrix projects to a proper rotation."""
    rng = np.random.default_rng(5)
    rot = Rotation.random(10, random_state=4).as_matrix().astype(np.float32)
    np.testing.assert_allclose(geometry.nearest_rotation(rot), rot, atol=1e-5)
    axis = rng.normal(size=(10, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    a, b = rng.uniform(-1.5, 1.5, (2, 10, 1))  # |a - b| < pi
    ra, rb = (Rotation.from_rotvec(axis * t).as_matrix() for t in (a, b))
    got = geometry.nearest_rotation(jnp.asarray(0.5 * (ra + rb), jnp.float32))
    np.testing.assert_allclose(got, Rotation.from_rotvec(axis * 0.5 * (a + b)).as_matrix(), atol=1e-5)
    r = np.asarray(geometry.nearest_rotation(jnp.asarray(rng.normal(size=(20, 3, 3)), jnp.float32)))
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_kinematic_chain_closed_form():
    # Chain root -> a (1 m along x) -> b (1 m further along x); rotate a by 90 deg about z.
    joints = jnp.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    rz = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    rots = jnp.stack([jnp.eye(3), jnp.asarray(rz, jnp.float32), jnp.eye(3)])
    posed, transforms = geometry.kinematic_chain(rots, joints, (-1, 0, 1))
    np.testing.assert_allclose(posed, [[0, 0, 0], [1, 0, 0], [1, 1, 0]], atol=1e-6)
    # The transform of joint b maps its rest location to its posed location.
    p = transforms[2] @ jnp.array([2.0, 0, 0, 1])
    np.testing.assert_allclose(p[:3], [1, 1, 0], atol=1e-6)
    batched, _ = geometry.kinematic_chain(jnp.broadcast_to(rots, (4, 3, 3, 3)), joints, (-1, 0, 1))
    assert batched.shape == (4, 3, 3)


def test_perspective_and_weak_perspective_agree():
    points = jnp.array([[0.1, -0.2, 0.0], [0.0, 0.3, 0.0]])
    focal, img = 5000.0, 224.0
    cam = jnp.array([0.9, 0.05, -0.02])
    t = geometry.weak_perspective_to_translation(cam, focal, img)
    np.testing.assert_allclose(t[2], 2 * focal / (img * 0.9), rtol=1e-6)
    np.testing.assert_allclose(geometry.translation_to_weak_perspective(t, focal, img), cam, rtol=1e-6)
    px = geometry.perspective_project(points + t, focal, jnp.array([img / 2, img / 2]))
    weak = geometry.weak_perspective_project(points, cam)
    np.testing.assert_allclose((weak + 1) * img / 2, px, atol=1e-3)  # exact for points at depth t_z
    np.testing.assert_allclose(
        geometry.perspective_project(jnp.array([[1.0, 2.0, 4.0]]), jnp.array([100.0, 200.0]), jnp.array([5.0, 6.0])),
        [[30.0, 106.0]],
    )


def test_procrustes_recovers_similarity():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 17, 3)).astype(np.float32)
    rot = Rotation.random(3, random_state=5).as_matrix().astype(np.float32)
    y = 1.7 * np.einsum("bij,bnj->bni", rot, x) + np.array([0.3, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(geometry.procrustes_align(x, y), y, atol=1e-4)
    # A reflection is not a rotation: aligning to a mirror image leaves a residual.
    mirrored = x * np.array([-1.0, 1.0, 1.0], np.float32)
    assert np.abs(np.asarray(geometry.procrustes_align(x, mirrored)) - mirrored).max() > 1e-2
