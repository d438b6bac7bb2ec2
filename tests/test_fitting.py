"""SMPLify in JAX (hmr_jax.fitting): keypoints on the body, the objective, fit(), fitting in the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from hmr_jax import body_model, geometry, skeleton, smpl
from hmr_jax.data import annotation_transforms
from hmr_jax.fitting import Camera, FitConfig, FitInit, fit, in_loop, keypoint_body, keypoints_3d, mean_init, objective
from hmr_jax.fitting import prior as prior_lib

FOCAL = 5000.0
CENTER = np.array([112.0, 112.0], np.float32)


@pytest.fixture(scope="module")
def model():
    return smpl.load(body_model.default_body_model_path())


@pytest.fixture(scope="module")
def prior():
    return prior_lib.default_prior()


def _facing(yaw: np.ndarray) -> np.ndarray:
    """(B, 3) global orientations: turned by `yaw` about the body's up axis, then into the camera frame."""
    turn = np.stack([np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) for a in yaw])
    return np.asarray(geometry.matrix_to_axis_angle(jnp.asarray(np.diag([1.0, -1, -1]) @ turn, jnp.float32)))


def _people(kb, b: int, noise_px: float, seed: int = 0):
    """Known bodies (the synthetic generator's poses, unseen seed), their keypoints with noise."""
    rng = np.random.default_rng(seed)
    pose = np.zeros((b, 72), np.float32)
    pose[:, :3] = _facing(rng.uniform(-0.5, 0.5, b))
    pose[:, 3:] = prior_lib.synthetic_poses(b, seed=1000 + seed)
    betas = rng.normal(0, 1, (b, 10)).astype(np.float32)
    transl = np.stack([rng.normal(0, 0.1, b), rng.normal(0, 0.1, b), rng.uniform(40, 60, b)], -1).astype(np.float32)
    points = keypoints_3d(kb, betas, pose, transl)
    kp = np.asarray(geometry.perspective_project(points, FOCAL, CENTER)) + rng.normal(
        0, noise_px, (b, kb.num_keypoints, 2)
    )
    return pose, betas, transl, kp.astype(np.float32)


def _pa_mpjpe(model, betas_a, pose_a, betas_b, pose_b):
    a = smpl.forward(model, betas_a, pose_a).joints
    b = smpl.forward(model, betas_b, pose_b).joints
    return np.asarray(jnp.linalg.norm(geometry.procrustes_align(a, b) - b, axis=-1).mean(-1))


# ------------------------------------------------------------------------------------ keypoints


def test_keypoints_match_the_full_body(model):
    """The reduced body's keypoints equal the full body's joints and landmark vertices (OpenPose's
    mapping), and the smpl24 set is the kinematic joints."""
    kb = keypoint_body(model, ("openpose25", "smpl24"))
    assert kb.num_keypoints == 49 and kb.body.num_vertices < 20
    rng = np.random.default_rng(1)
    pose = rng.normal(0, 0.3, (3, 72)).astype(np.float32)
    betas = rng.normal(0, 1, (3, 10)).astype(np.float32)
    got = np.asarray(keypoints_3d(kb, betas, pose))
    full = smpl.forward(model, betas, pose)
    v, j = np.asarray(full.vertices), np.asarray(full.joints)
    lm = dict(model.landmarks)
    names = skeleton.SMPL24_NAMES
    expect = {
        "nose": v[:, lm["nose"]],
        "neck": j[:, names.index("neck")],
        "mid_hip": j[:, 0],
        "right_wrist": j[:, names.index("right_wrist")],
        "left_heel": v[:, lm["left_heel"]],
        "right_ear": v[:, lm["right_ear"]],
    }
    for name, want in expect.items():
        np.testing.assert_allclose(got[:, kb.index(f"openpose25/{name}")], want, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got[:, 25:], j, atol=1e-5)


def test_spin24_keypoints_use_the_regressor(model):
    rng = np.random.default_rng(2)
    v = model.num_vertices
    reg = np.zeros((24, v + 24), np.float32)
    for r in range(24):  # a few vertices and one kinematic joint per row, as SPIN's regressor
        reg[r, rng.choice(v, 3, replace=False)] = 0.2
        reg[r, v + r] = 0.4
    kb = keypoint_body(model, ("spin24",), {"spin24": reg})
    pose = rng.normal(0, 0.3, (2, 72)).astype(np.float32)
    betas = np.zeros((2, 10), np.float32)
    full = smpl.forward(model, betas, pose)
    want = smpl.model_joints("spin24", full.joints, full.vertices, {"spin24": jnp.asarray(reg)})
    np.testing.assert_allclose(keypoints_3d(kb, betas, pose), want, atol=1e-5)


def test_keypoint_errors_name_what_is_missing(model):
    bare = smpl.SMPLModel(**{**model.__dict__, "landmarks": ()})
    with pytest.raises(ValueError, match="landmark"):
        keypoint_body(bare, ("openpose25",))
    with pytest.raises(ValueError, match="regressor"):
        keypoint_body(model, ("spin24",))
    with pytest.raises(ValueError, match="expected one of"):
        keypoint_body(model, ("coco17",))


# ------------------------------------------------------------------------------------ objective


def test_objective_gradients_match_finite_differences(model, prior):
    """Stage 1 and stage 2 in float64: jax.grad against central differences."""
    with jax.enable_x64(True):
        m64 = smpl.load(body_model.default_body_model_path(), dtype=np.float64)
        kb = keypoint_body(m64, ("openpose25",))
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), prior)
        cfg = FitConfig()
        rng = np.random.default_rng(3)
        pose = jnp.asarray(np.concatenate([[np.pi, 0.1, 0.0], rng.normal(0, 0.3, 69)]))[None]
        betas = jnp.asarray(rng.normal(0, 1, (1, 10)))
        transl = jnp.asarray([[0.05, 0.1, 50.0]])
        kp = jnp.asarray(rng.normal(112, 40, (1, 25, 2)))
        conf = jnp.asarray(rng.uniform(0.2, 1.0, (1, 25)))
        focal, center = jnp.full((1,), FOCAL), jnp.asarray(CENTER, jnp.float64)[None]
        torso = objective.torso_indices(kb)

        def f1(x):  # global orientation and translation
            p = pose.at[0, :3].set(x[:3])
            pts = keypoints_3d(kb, betas, p, x[None, 3:])
            return objective.stage1_loss(pts, kp, conf, focal, center, transl[:, 2], x[None, 3:], torso, cfg)[0]

        def f2(x):  # whole pose and betas
            p, b = x[None, :72], x[None, 72:]
            pts = keypoints_3d(kb, b, p, transl)
            return objective.stage2_total(objective.stage2_terms(pts, p, b, kp, conf, focal, center, p64, cfg))[0]

        for f, x in (
            (f1, jnp.concatenate([pose[0, :3], jnp.asarray([0.05, 0.1, 50.2])])),
            (f2, jnp.concatenate([pose[0], betas[0]])),
        ):
            g = np.asarray(jax.grad(f)(x))
            idx = np.random.default_rng(4).choice(len(x), min(12, len(x)), replace=False)
            h = 1e-6
            fd = np.array([(f(x.at[i].add(h)) - f(x.at[i].add(-h))) / (2 * h) for i in idx])
            np.testing.assert_allclose(g[idx], fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max())


def test_gmcclure_and_angle_prior_closed_form():
    r = jnp.asarray([0.0, 100.0, 1e4])
    np.testing.assert_allclose(objective.gmcclure(r, 100.0), [0.0, 5000.0, 1e4 * 1e4 * 1e4 / (1e4 + 1e8)], rtol=1e-5)
    pose = np.zeros((1, 72), np.float32)
    pose[0, 18 * 3 + 1] = 0.5  # left elbow bent backwards (+y): penalised
    pose[0, 4 * 3] = 0.5  # left knee flexed (+x): allowed
    want = np.exp(0.5) ** 2 + np.exp(-0.5) ** 2 + 1.0 + 1.0
    np.testing.assert_allclose(objective.angle_prior(jnp.asarray(pose)), [want], rtol=1e-6)


def test_config_is_checked():
    with pytest.raises(ValueError, match="optimizer"):
        FitConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="stage2_steps"):
        FitConfig(stage2_steps=-1)
    with pytest.raises(ValueError, match="unknown keys"):
        objective.from_config({"stage3_steps": 5})


# ------------------------------------------------------------------------------------------ fit


def test_fit_recovers_known_people_from_the_mean_pose(model, prior):
    """1 px noise: the fit lands near the noise level and PA-MPJPE far below the start's."""
    kb = keypoint_body(model, ("openpose25",))
    pose, betas, _, kp = _people(kb, 16, noise_px=1.0)
    r = fit(kb, kp, np.ones(kp.shape[:2], np.float32), Camera(FOCAL, CENTER), prior=prior)
    assert np.all(np.isfinite(np.asarray(r.pose))) and np.all(np.isfinite(np.asarray(r.loss)))
    assert float(np.mean(r.error_px)) < 5.0, np.asarray(r.error_px)
    start = mean_init(prior, 16)
    pa_fit = _pa_mpjpe(model, r.betas, r.pose, betas, pose)
    pa_start = _pa_mpjpe(model, start.betas, start.pose, betas, pose)
    assert pa_fit.mean() < 0.6 * pa_start.mean(), (pa_fit.mean(), pa_start.mean())


def test_each_person_is_fitted_independently_of_the_batch(model, prior):
    kb = keypoint_body(model, ("openpose25",))
    _, _, _, kp = _people(kb, 4, noise_px=2.0, seed=5)
    conf = np.ones(kp.shape[:2], np.float32)
    cfg = FitConfig(stage1_steps=20, stage2_steps=20)
    together = fit(kb, kp, conf, Camera(FOCAL, CENTER), config=cfg, prior=prior)
    alone = fit(kb, kp[2:3], conf[2:3], Camera(FOCAL, CENTER), config=cfg, prior=prior)
    np.testing.assert_allclose(together.pose[2], alone.pose[0], atol=2e-4)
    np.testing.assert_allclose(together.transl[2], alone.transl[0], rtol=1e-5, atol=1e-4)


def test_no_nan_at_zero_pose_and_zero_confidence(model, prior):
    kb = keypoint_body(model, ("openpose25", "smpl24"))
    b = 3
    kp = np.full((b, 49, 2), 112.0, np.float32)
    conf = np.zeros((b, 49), np.float32)
    conf[1, :25] = 1.0  # one person with keypoints all at one point
    kp[2, 3] = np.nan  # a missing point given as NaN
    init = FitInit(np.zeros((b, 72), np.float32), np.zeros((b, 10), np.float32), None)
    r = fit(
        kb, kp, conf, Camera(FOCAL, CENTER), init=init, config=FitConfig(stage1_steps=10, stage2_steps=10), prior=prior
    )
    for name, value in r._asdict().items():
        assert np.all(np.isfinite(np.asarray(value))), name


def test_lbfgs_lowers_the_objective(model, prior):
    kb = keypoint_body(model, ("openpose25",))
    _, _, _, kp = _people(kb, 2, noise_px=1.0, seed=7)
    conf = np.ones(kp.shape[:2], np.float32)
    none = fit(kb, kp, conf, Camera(FOCAL, CENTER), config=FitConfig(stage1_steps=0, stage2_steps=0), prior=prior)
    lbfgs = fit(
        kb,
        kp,
        conf,
        Camera(FOCAL, CENTER),
        config=FitConfig(optimizer="lbfgs", stage1_steps=10, stage2_steps=20),
        prior=prior,
    )
    assert np.all(np.asarray(lbfgs.loss) < np.asarray(none.loss))


def test_fit_checks_its_inputs(model):
    kb = keypoint_body(model, ("openpose25",))
    with pytest.raises(ValueError, match=r"keypoints_2d: expected \(B, 25, 2\)"):
        fit(kb, np.zeros((2, 24, 2)), np.ones((2, 24)), Camera(FOCAL, CENTER))
    with pytest.raises(ValueError, match="confidence"):
        fit(kb, np.zeros((2, 25, 2)), np.ones((2, 24)), Camera(FOCAL, CENTER))


# ---------------------------------------------------------------------------- fitting in the loop


def test_augment_pose_is_the_pipelines_and_inverts():
    rng = np.random.default_rng(8)
    pose = rng.normal(0, 0.4, (6, 72)).astype(np.float32)
    rot = rng.uniform(-1.0, 1.0, 6).astype(np.float32)
    rot[0] = 0.0
    flip = np.array([0, 1, 0, 1, 1, 0], np.float32)
    got = in_loop.augment_pose(jnp.asarray(pose), jnp.asarray(rot), jnp.asarray(flip))
    want = annotation_transforms.transform_pose(tf.constant(pose), tf.constant(rot), tf.constant(flip > 0)).numpy()
    # Compare as rotations (axis-angle is not unique at pi).
    to_rot = lambda p: np.asarray(geometry.axis_angle_to_matrix(jnp.asarray(p).reshape(-1, 24, 3)))  # noqa: E731
    np.testing.assert_allclose(to_rot(got), to_rot(want), atol=1e-5)
    back = in_loop.unaugment_pose(got, jnp.asarray(rot), jnp.asarray(flip))
    np.testing.assert_allclose(to_rot(back), to_rot(pose), atol=1e-5)


def test_refit_keeps_the_better_fit_per_sample(model, prior):
    kb = keypoint_body(model, ("smpl24",))
    pose, betas, transl, kp = _people(kb, 4, noise_px=0.5, seed=9)
    keypoints = np.concatenate([kp, np.ones((4, 24, 1), np.float32)], -1)
    table = in_loop.init_table(10)
    # Sample 7 already holds the exact body (its loss is the one to beat); 3 has none.
    table["pose"] = table["pose"].at[7].set(pose[1])
    table["betas"] = table["betas"].at[7].set(betas[1])
    table["loss"] = table["loss"].at[7].set(0.0)
    index = jnp.asarray([3, 7, 5, 5])  # padding repeats an index
    mask = jnp.asarray([1.0, 1.0, 1.0, 0.0])
    zero = jnp.zeros(4)
    start = mean_init(prior, 4)
    cfg = FitConfig(stage1_steps=30, stage2_steps=30)
    r = in_loop.refit(
        table, index, zero, zero, mask, jnp.asarray(keypoints), start.pose, start.betas, jnp.asarray(transl),
        kb, prior, FOCAL, 224.0, cfg,
    )  # fmt: skip
    t = {k: np.asarray(v) for k, v in r.table.items()}
    assert np.isfinite(t["loss"][3]) and np.isfinite(t["loss"][5])  # new fits stored
    assert r.updated.tolist() == [1.0, 0.0, 1.0, 0.0]  # the exact body was better; padding never writes
    np.testing.assert_allclose(t["pose"][7], pose[1], atol=1e-6)
    rotmats = lambda p: geometry.axis_angle_to_matrix(jnp.asarray(p).reshape(24, 3))  # noqa: E731
    np.testing.assert_allclose(rotmats(r.pose[1]), rotmats(pose[1]), atol=1e-5)  # the better one supervises
    assert np.isinf(t["loss"][[0, 1, 2, 4, 6, 8, 9]]).all()


def test_each_person_is_projected_with_its_own_focal_length():
    points = jnp.asarray([[[1.0, 2.0, 10.0]], [[1.0, 2.0, 10.0]]])
    got = objective.project(points, jnp.asarray([100.0, 200.0]), jnp.zeros((2, 2)))
    np.testing.assert_allclose(got[:, 0], [[10.0, 20.0], [20.0, 40.0]], rtol=1e-6)


def test_refit_is_the_same_at_any_crop_size(model, prior):
    """In-loop fits run in 224 px crop units: a 96 px crop of the same people gives the same fits."""
    kb = keypoint_body(model, ("smpl24",))
    _, _, transl, kp = _people(kb, 2, noise_px=0.5, seed=11)
    keypoints = np.concatenate([kp, np.ones((2, 24, 1), np.float32)], -1)
    start = mean_init(prior, 2)
    zero, ones = jnp.zeros(2), jnp.ones(2)
    cfg = FitConfig(stage1_steps=10, stage2_steps=10)
    runs = []
    for size in (224.0, 96.0):
        k = size / 224.0
        scaled = keypoints * np.array([k, k, 1.0], np.float32)
        runs.append(
            in_loop.refit(
                in_loop.init_table(2),
                jnp.arange(2),
                zero,
                zero,
                ones,
                jnp.asarray(scaled),
                start.pose,
                start.betas,
                jnp.asarray(transl),
                kb,
                prior,
                FOCAL * k,
                size,
                cfg,
            )  # fmt: skip
        )
    np.testing.assert_allclose(runs[1].pose, runs[0].pose, atol=2e-4)
    np.testing.assert_allclose(runs[1].loss, runs[0].loss, rtol=1e-3)
