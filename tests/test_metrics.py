"""Tests for hmr_jax.metrics (CPU, seconds)."""

import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax import geometry, metrics, skeleton

B, J, V = 2, 14, 40


def _pts(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * 0.3, jnp.float32)


def test_mpjpe_translation_invariant_after_root_alignment():
    gt = _pts(0, (B, 24, 3))
    pred = gt + jnp.array([0.2, -0.4, 1.5])
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, root=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, root="spin24"), 0.0, atol=1e-3)
    assert np.all(metrics.mpjpe(pred, gt, root=None) > 100.0)
    assert metrics.mpjpe(pred, gt).shape == (B,)


def test_mpjpe_single_joint_offset():
    gt = _pts(1, (B, J, 3))
    pred = gt.at[:, 5, 2].add(0.010)  # 10 mm on one non-root joint
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, root=0), 10.0 / J, rtol=1e-3)
    w = jnp.ones((B, J)).at[:, 5].set(0.0)
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, root=0, weights=w), 0.0, atol=1e-3)
    nan_gt = gt.at[:, 5].set(jnp.nan)  # a missing joint's GT may be NaN
    np.testing.assert_allclose(metrics.mpjpe(pred, nan_gt, root=0, weights=w), 0.0, atol=1e-3)


def test_pa_mpjpe_similarity_invariant():
    gt = _pts(2, (B, J, 3))
    rot = geometry.axis_angle_to_matrix(jnp.array([0.3, -0.8, 0.5]))
    pred = 1.7 * jnp.einsum("ij,bnj->bni", rot, gt) + jnp.array([0.1, 0.2, 3.0])
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), 0.0, atol=1e-2)
    assert np.all(metrics.mpjpe(pred, gt, root=0) > 10.0)
    # PA-MPJPE never exceeds the unaligned error.
    noisy = gt + _pts(3, (B, J, 3)) * 0.1
    assert np.all(metrics.pa_mpjpe(noisy, gt) <= metrics.mpjpe(noisy, gt, root=None) + 1e-3)


def test_pa_mpjpe_weights_ignore_missing_joints():
    gt = _pts(6, (B, J, 3))
    noisy = gt + _pts(7, (B, J, 3)) * 0.05
    ones = jnp.ones((B, J))
    # Equal weights: the same alignment as geometry.procrustes_align.
    np.testing.assert_allclose(metrics.pa_mpjpe(noisy, gt, ones), metrics.pa_mpjpe(noisy, gt), rtol=1e-3)
    # A zero-weight joint with garbage GT changes nothing.
    w = ones.at[:, 3].set(0.0)
    ref = metrics.pa_mpjpe(noisy, gt, w)
    bad = gt.at[:, 3].set(jnp.array([100.0, -50.0, jnp.nan]))
    np.testing.assert_allclose(metrics.pa_mpjpe(noisy, bad, w), ref, rtol=1e-4)
    # Similarity-transformed copy with garbage on the missing joint: ~0.
    rot = geometry.axis_angle_to_matrix(jnp.array([0.1, 0.9, -0.4]))
    pred = 0.8 * jnp.einsum("ij,bnj->bni", rot, gt) + 1.0
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, bad, w), 0.0, atol=1e-2)


def test_pve_and_v2v_closed_forms():
    gt = _pts(4, (B, V, 3))
    pred = gt + jnp.array([0.003, 0.0, 0.004])  # every vertex 5 mm off
    np.testing.assert_allclose(metrics.pve(pred, gt), 5.0, rtol=1e-3)
    np.testing.assert_allclose(metrics.v2v_l2(pred, gt), 25e-6, rtol=1e-3)  # m^2
    # Pelvis alignment removes a global translation.
    np.testing.assert_allclose(metrics.pve(pred, gt, pred[:, 0], gt[:, 0]), 0.0, atol=1e-3)
    # Half the vertices off by 2 cm, others exact: PVE 10 mm, v2v 0.5 * 4e-4 m^2.
    half = gt.at[:, : V // 2, 0].add(0.02)
    np.testing.assert_allclose(metrics.pve(half, gt), 10.0, rtol=1e-3)
    np.testing.assert_allclose(metrics.v2v_l2(half, gt), 2e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="both"):
        metrics.pve(pred, gt, pred[:, 0], None)


def test_h36m_protocol_joints():
    j17 = _pts(5, (B, 17, 3)) + 5.0
    out = metrics.h36m_protocol_joints(j17)
    assert out.shape == (B, 14, 3)
    np.testing.assert_allclose(out[:, 0], j17[:, 6] - j17[:, 0], rtol=1e-6)  # R ankle
    np.testing.assert_allclose(out[:, 13], j17[:, 10] - j17[:, 0], rtol=1e-6)  # head
    assert list(skeleton.H36M_TO_J14) == [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]


def _pose(aa_by_joint):
    aa = np.zeros((1, 24, 3), np.float32)
    for j, v in aa_by_joint.items():
        aa[0, j] = v
    return geometry.axis_angle_to_matrix(jnp.asarray(aa))


def test_pose_outside_limits():
    assert float(metrics.pose_outside_limits(_pose({}))[0]) == 0.0
    # Global orientation is not judged.
    assert float(metrics.pose_outside_limits(_pose({0: [np.pi * 0.9, 0, 0]}))[0]) == 0.0
    # Normal knee flexion (positive x) and elbow flexion (left -y, right +y) are fine.
    ok = _pose({4: [1.5, 0, 0], 5: [2.0, 0, 0], 18: [0, -1.5, 0], 19: [0, 1.5, 0]})
    assert float(metrics.pose_outside_limits(ok)[0]) == 0.0
    # A knee bent backwards: one joint out of 23.
    back = _pose({4: [-0.8, 0, 0]})
    np.testing.assert_allclose(metrics.pose_outside_limits(back)[0], 1.0 / 23, rtol=1e-6)
    # Elbows bent backwards, and a spine twisted 120 deg.
    bad = _pose({18: [0, 0.8, 0], 19: [0, -0.8, 0], 3: [0, np.deg2rad(120), 0]})
    np.testing.assert_allclose(metrics.pose_outside_limits(bad)[0], 3.0 / 23, rtol=1e-6)
    assert len(skeleton.ANGLE_LIMITS_DEG) + len(skeleton.HINGE_LIMITS_DEG) == 23
