"""Tests for hmr_jax.losses and smpl.model_joints / smpl.load_regressor (CPU, seconds)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hmr_jax import geometry, losses, smpl

B, V, J = 3, 50, 24


def _rng(seed=0):
    return np.random.default_rng(seed)


def _rotmats(rng, b=B, j=24, scale=0.5):
    return geometry.axis_angle_to_matrix(jnp.asarray(rng.normal(size=(b, j, 3)) * scale, jnp.float32))


def _gt_joints(rng, b=B, j=J):
    xyz = rng.normal(size=(b, j, 3))
    conf = np.ones((b, j, 1))
    return jnp.asarray(np.concatenate([xyz, conf], -1), jnp.float32)


ONES = jnp.ones((B,), jnp.float32)


# --- zero at ground truth, positive off it -------------------------------------------------------


def test_vertex_losses_zero_at_gt_positive_off():
    rng = _rng()
    v = jnp.asarray(rng.normal(size=(B, V, 3)), jnp.float32)
    for fn in (losses.vertex_l2_loss, losses.vertex_l1_loss):
        assert float(fn(v, v, ONES)) == 0.0
        assert float(fn(v + 0.01, v, ONES)) > 0.0


def test_vertex_losses_closed_form():
    v = jnp.zeros((B, V, 3))
    pred = v.at[:, :, 0].set(0.1).at[:, :, 1].set(-0.2)  # every vertex off by (0.1, -0.2, 0)
    np.testing.assert_allclose(losses.vertex_l2_loss(pred, v, ONES), 0.01 + 0.04, rtol=1e-6)
    np.testing.assert_allclose(losses.vertex_l1_loss(pred, v, ONES), 0.1 + 0.2, rtol=1e-6)


def test_beta_and_pose_losses():
    rng = _rng(1)
    betas = jnp.asarray(rng.normal(size=(B, 10)), jnp.float32)
    assert float(losses.beta_l2_loss(betas, betas, ONES)) == 0.0
    np.testing.assert_allclose(losses.beta_l2_loss(betas + 0.5, betas, ONES), 10 * 0.25, rtol=1e-6)
    rot = _rotmats(rng)
    assert float(losses.pose_l2_loss(rot, rot, ONES)) == 0.0
    assert float(losses.pose_l2_loss(_rotmats(rng), rot, ONES)) > 0.0
    # One joint off by a rotation of angle t: ||R - I||_F^2 = 4 (1 - cos t); mean over 24 joints.
    eye = jnp.broadcast_to(jnp.eye(3), (B, 24, 3, 3))
    t = 0.3
    off = eye.at[:, 5].set(geometry.axis_angle_to_matrix(jnp.array([0.0, t, 0.0])))
    np.testing.assert_allclose(losses.pose_l2_loss(off, eye, ONES), 4 * (1 - np.cos(t)) / 24, rtol=1e-5)
    pose = jnp.asarray(rng.normal(size=(B, 72)) * 0.3, jnp.float32)
    assert losses.pose_to_rotmat(pose).shape == (B, 24, 3, 3)


@pytest.mark.parametrize("joint_set", ["smpl24", "spin24"])
def test_joints_3d_loss_zero_translation_invariant(joint_set):
    rng = _rng(2)
    gt = _gt_joints(rng)
    pred = gt[..., :3] + jnp.array([0.3, -1.0, 2.0])  # translated copy: zero after root alignment
    np.testing.assert_allclose(losses.joints_3d_l2_loss(pred, gt, ONES, joint_set), 0.0, atol=1e-10)
    pred2 = pred.at[:, 7].add(0.1)  # joint 7 is not a root joint in either set
    np.testing.assert_allclose(losses.joints_3d_l2_loss(pred2, gt, ONES, joint_set), 3 * 0.01 / J, rtol=1e-4)
    # Confidence 0 on the offset joint removes its error.
    gt0 = gt.at[:, 7, 3].set(0.0)
    np.testing.assert_allclose(losses.joints_3d_l2_loss(pred2, gt0, ONES, joint_set), 0.0, atol=1e-10)


def test_joints_3d_pa_loss_ignores_similarity_and_matches_procrustes():
    rng = _rng(12)
    gt = _gt_joints(rng)
    rot = _rotmats(rng, j=1)[:, 0]  # (B, 3, 3)
    similar = 1.7 * jnp.einsum("bij,bnj->bni", rot, gt[..., :3]) + jnp.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(losses.joints_3d_pa_loss(similar, gt, ONES), 0.0, atol=1e-9)
    pred = gt[..., :3] + 0.2 * jnp.asarray(rng.normal(size=(B, J, 3)), jnp.float32)
    moved = 0.6 * jnp.einsum("bij,bnj->bni", rot, pred) - 4.0
    ref = jnp.mean(jnp.sum((geometry.procrustes_align(pred, gt[..., :3]) - gt[..., :3]) ** 2, -1))
    np.testing.assert_allclose(losses.joints_3d_pa_loss(pred, gt, ONES), ref, rtol=1e-4)
    np.testing.assert_allclose(losses.joints_3d_pa_loss(moved, gt, ONES), ref, rtol=1e-4)
    # Confidence 0: the joint is out of the fit and of the error, whatever its GT holds.
    gt0 = gt.at[:, 5, :3].set(1e3).at[:, 5, 3].set(0.0)
    pred0 = pred.at[:, 5].set(gt[:, 5, :3])
    keep = np.arange(J) != 5
    ref0 = jnp.mean(
        jnp.sum((geometry.procrustes_align(pred[:, keep], gt[:, keep, :3]) - gt[:, keep, :3]) ** 2, -1), axis=-1
    )
    np.testing.assert_allclose(losses.joints_3d_pa_loss(pred0, gt0, ONES), jnp.mean(ref0 * (J - 1) / J), rtol=1e-4)


def test_joints_3d_pa_loss_gradient_is_that_of_the_minimum():
    """The alignment's scale and rotation are held in the gradient; at the optimum that is the
    gradient of the aligned error itself (envelope theorem): central differences agree."""
    rng = _rng(13)
    gt = _gt_joints(rng, b=1, j=8)
    pred = gt[..., :3] + 0.3 * jnp.asarray(rng.normal(size=(1, 8, 3)), jnp.float32)
    f = lambda p: losses.joints_3d_pa_loss(p, gt)  # noqa: E731
    grad = np.asarray(jax.grad(f)(pred))
    eps = 1e-2
    for n, c in ((0, 0), (3, 1), (7, 2)):
        step = jnp.zeros_like(pred).at[0, n, c].set(eps)
        numeric = (float(f(pred + step)) - float(f(pred - step))) / (2 * eps)
        np.testing.assert_allclose(grad[0, n, c], numeric, rtol=2e-2, atol=1e-4)


def test_joints_3d_root_depends_on_joint_set():
    rng = _rng(3)
    gt = _gt_joints(rng)
    pred = gt[..., :3].at[:, 0, 0].add(0.5)  # move SMPL pelvis / SPIN right ankle
    # smpl24: the root moved, so every other joint is off after alignment.
    np.testing.assert_allclose(losses.joints_3d_l2_loss(pred, gt, ONES, "smpl24"), 23 * 0.25 / J, rtol=1e-4)
    # spin24: root is mid-hip (2, 3); only joint 0 is off.
    np.testing.assert_allclose(losses.joints_3d_l2_loss(pred, gt, ONES, "spin24"), 0.25 / J, rtol=1e-4)


def test_joints_2d_normalisation_one_pixel():
    rng = _rng(4)
    img_size = 224.0
    pts = jnp.asarray(rng.normal(size=(B, J, 3)) * 0.3, jnp.float32)
    cam = jnp.asarray([[0.9, 0.1, -0.05]] * B, jnp.float32)
    proj = geometry.weak_perspective_project(pts, cam)  # (B, J, 2) normalised
    px = (proj + 1.0) * img_size / 2.0  # GT in crop pixels
    kp = jnp.concatenate([px, jnp.ones((B, J, 1))], -1)
    np.testing.assert_allclose(losses.joints_2d_l1_loss(pts, cam, kp, img_size), 0.0, atol=1e-6)
    kp1 = kp.at[..., 0].add(1.0)  # 1 px error in x on every joint
    np.testing.assert_allclose(losses.joints_2d_l1_loss(pts, cam, kp1, img_size), 2.0 / img_size, rtol=1e-3)
    kp_vis = kp1.at[..., 2].set(0.0)  # invisible joints cost nothing
    assert float(losses.joints_2d_l1_loss(pts, cam, kp_vis, img_size)) == 0.0
    np.testing.assert_allclose(losses.normalize_keypoints(jnp.array([0.0, 112.0, 224.0]), 224.0), [-1, 0, 1])


# --- masks ---------------------------------------------------------------------------------------


def test_masked_samples_contribute_nothing():
    rng = _rng(5)
    v = jnp.asarray(rng.normal(size=(B, V, 3)), jnp.float32)
    bad = v.at[1].set(jnp.nan)  # GT of an unlabelled sample may be garbage
    mask = jnp.array([1.0, 0.0, 1.0])
    pred = v + 0.1
    full = losses.vertex_l2_loss(pred[jnp.array([0, 2])], v[jnp.array([0, 2])], jnp.ones(2))
    np.testing.assert_allclose(losses.vertex_l2_loss(pred, bad, mask), full, rtol=1e-6)
    g = jax.grad(lambda p: losses.vertex_l2_loss(p, bad, mask))(pred)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g[1]).max()) == 0.0


def test_all_zero_mask_gives_zero_not_nan():
    rng = _rng(6)
    zero = jnp.zeros((B,))
    v = jnp.asarray(rng.normal(size=(B, V, 3)), jnp.float32)
    betas = jnp.asarray(rng.normal(size=(B, 10)), jnp.float32)
    rot = _rotmats(rng)
    gt = _gt_joints(rng)
    cam = jnp.ones((B, 3))
    kp = jnp.ones((B, J, 3))
    values = [
        losses.vertex_l2_loss(v + 1, v, zero),
        losses.vertex_l1_loss(v + 1, v, zero),
        losses.beta_l2_loss(betas + 1, betas, zero),
        losses.pose_l2_loss(_rotmats(rng), rot, zero),
        losses.joints_3d_l2_loss(gt[..., :3] + 1, gt, zero),
        losses.joints_2d_l1_loss(gt[..., :3], cam, kp, 64.0, zero),
    ]
    for val in values:
        assert float(val) == 0.0


def test_mask_shape_checked():
    v = jnp.zeros((B, V, 3))
    with pytest.raises(ValueError, match="mask"):
        losses.vertex_l2_loss(v, v, jnp.ones((B + 1,)))


# --- adversarial ---------------------------------------------------------------------------------


def test_adversarial_losses_hand_computed():
    half = jnp.full((4, 25), 0.5)
    np.testing.assert_allclose(losses.adversarial_generator_loss(half), 25 * 0.25, rtol=1e-6)
    np.testing.assert_allclose(losses.adversarial_discriminator_loss(half, half), 25 * (0.25 + 0.25), rtol=1e-6)
    # Perfect discriminator / perfectly fooled: zero losses.
    assert float(losses.adversarial_generator_loss(jnp.ones((4, 25)))) == 0.0
    assert float(losses.adversarial_discriminator_loss(jnp.ones((2, 25)), jnp.zeros((4, 25)))) == 0.0
    # Per-discriminator batch means, summed over discriminators; real/fake batches may differ.
    d_fake = jnp.zeros((2, 25)).at[0, 3].set(1.0)  # disc 3: outputs (1, 0) -> mean (d-1)^2 = 0.5
    expected_gen = 24 * 1.0 + 0.5
    np.testing.assert_allclose(losses.adversarial_generator_loss(d_fake), expected_gen, rtol=1e-6)
    d_real = jnp.zeros((3, 25)).at[:, 0].set(1.0)  # disc 0 right on real, others 0 -> (0-1)^2 = 1
    expected_disc = 24 * 1.0 + 0.5  # real part: 24 * 1 + 0; fake part: only disc 3: mean(1, 0) = 0.5
    np.testing.assert_allclose(losses.adversarial_discriminator_loss(d_real, d_fake), expected_disc, rtol=1e-6)
    with pytest.raises(ValueError, match="25"):
        losses.adversarial_generator_loss(jnp.zeros((4, 24)))


# --- combiner ------------------------------------------------------------------------------------


def test_total_generator_loss_weights_and_report():
    terms = {name: jnp.asarray(float(i + 1)) for i, name in enumerate(losses.LOSS_TERMS)}
    weights = ml_collections.ConfigDict({name: 0.0 for name in losses.LOSS_TERMS})
    weights.vertex_l2 = 2.0
    weights.adversarial = 0.5
    total, report = losses.total_generator_loss(terms, weights)
    np.testing.assert_allclose(total, 2.0 * 1.0 + 0.5 * 7.0)
    assert set(report) == set(losses.LOSS_TERMS) | {"total"}
    np.testing.assert_allclose(report["beta"], 3.0)  # zero-weight terms are still reported
    # A NaN in a zero-weight term does not poison the total.
    terms["pose"] = jnp.asarray(jnp.nan)
    total, _ = losses.total_generator_loss(terms, dict(weights))
    assert np.isfinite(float(total))
    with pytest.raises(ValueError, match="loss_weights"):
        losses.total_generator_loss({"vertex_l2": jnp.asarray(1.0)}, weights)


# --- gradients -----------------------------------------------------------------------------------


def test_gradients_finite():
    rng = _rng(7)
    v = jnp.asarray(rng.normal(size=(B, V, 3)), jnp.float32)
    gt = _gt_joints(rng)
    rot = _rotmats(rng)
    cam = jnp.asarray([[1.0, 0.0, 0.0]] * B, jnp.float32)
    kp = jnp.concatenate([jnp.full((B, J, 2), 10.0), jnp.ones((B, J, 1))], -1)
    mask = jnp.array([1.0, 0.0, 1.0])

    def total(params):
        pv, pj, pr, pc, d = params
        terms = {
            "vertex_l2": losses.vertex_l2_loss(pv, v, mask),
            "vertex_l1": losses.vertex_l1_loss(pv, v, mask),
            "beta": losses.beta_l2_loss(pv[:, 0], v[:, 0], mask),
            "pose": losses.pose_l2_loss(pr, rot, mask),
            "joints_3d": losses.joints_3d_l2_loss(pj, gt, mask, "spin24"),
            "joints_3d_pa": losses.joints_3d_pa_loss(pj, gt, mask),
            "joints_2d": losses.joints_2d_l1_loss(pj, pc, kp, 64.0),
            "adversarial": losses.adversarial_generator_loss(d),
        }
        return losses.total_generator_loss(terms, {k: 1.0 for k in terms})[0]

    params = (v + 0.1, gt[..., :3] * 1.1, _rotmats(rng), cam, jnp.zeros((B, 25)))
    val, grads = jax.jit(jax.value_and_grad(total))(params)
    assert np.isfinite(float(val))
    for g in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(g)))
    # Exactly at the ground truth the gradient is finite too (L1 / norms at 0).
    at_gt = (v, gt[..., :3], rot, cam, jnp.ones((B, 25)))
    for g in jax.tree_util.tree_leaves(jax.grad(total)(at_gt)):
        assert np.all(np.isfinite(np.asarray(g)))


# --- smpl.model_joints / smpl.load_regressor --------------------------------------------------


def test_model_joints(tmp_path):
    rng = _rng(8)
    smpl_j = jnp.asarray(rng.normal(size=(2, 24, 3)), jnp.float32)
    verts = jnp.asarray(rng.normal(size=(2, V, 3)), jnp.float32)
    assert smpl.model_joints("smpl24", smpl_j, verts) is smpl_j
    with pytest.raises(ValueError, match="data.joint_regressor"):
        smpl.model_joints("spin24", smpl_j, verts, None)
    reg = np.zeros((24, V), np.float32)
    reg[np.arange(24), np.arange(24)] = 1.0  # joint i = vertex i
    path = tmp_path / "reg.npy"
    np.save(path, reg)
    loaded = smpl.load_regressor(path, 24)
    out = smpl.model_joints("spin24", smpl_j, verts, {"spin24": jnp.asarray(loaded)})
    np.testing.assert_allclose(out, verts[:, :24])
    with pytest.raises(ValueError, match="expected 24 rows"):
        smpl.model_joints("spin24", smpl_j, verts, {"spin24": jnp.zeros((17, V))})
    with pytest.raises(ValueError, match=r"\(17, V\)"):
        smpl.load_regressor(path, 17)
    with pytest.raises(FileNotFoundError):
        smpl.load_regressor(tmp_path / "missing.npy", 24)
