"""hmr_jax.fitting against the PyTorch SMPLify of benchmarks/fitting.py (smplx's SMPL, full mesh):
the same keypoints, the same objective of both stages at random parameters, and a short fit that
ends in the same place."""

import sys

import jax.numpy as jnp
import numpy as np
import pytest

from hmr_jax import body_model, smpl
from hmr_jax.fitting import Camera, FitConfig, FitInit, fit, keypoint_body, keypoints_3d, objective
from hmr_jax.fitting import prior as prior_lib

torch = pytest.importorskip("torch")
pytest.importorskip("smplx")

BATCH = 3  # not 2: a (2,) focal length could pass for (fx, fy)


@pytest.fixture(scope="module")
def setup(repo):
    sys.path.insert(0, str(repo / "benchmarks"))
    sys.modules.pop("fitting", None)
    try:
        import fitting as reference  # pylint: disable=g-import-not-at-top
    finally:
        sys.path.remove(str(repo / "benchmarks"))
    path = body_model.default_body_model_path()
    model = smpl.load(path)
    kb = keypoint_body(model, ("openpose25",))
    rng = np.random.default_rng(0)
    m, d = 4, prior_lib.NUM_BODY_POSE
    a = rng.normal(0.0, 1.0, (m, d, d)) / np.sqrt(d)
    covars = 0.05 * a @ a.transpose(0, 2, 1) + 0.02 * np.eye(d)
    prior = prior_lib.from_gmm(rng.normal(0.0, 0.2, (m, d)), covars, rng.uniform(0.5, 1.0, m))
    ref = reference.TorchSMPLify(path, prior, dtype=torch.float64)
    return reference, kb, prior, ref


def random_point(kb, rng, batch=BATCH, noise_px=20.0):
    """Random bodies 45-55 m from the camera and 2D keypoints `noise_px` from their projections."""
    pose = rng.normal(0.0, 0.3, (batch, 72))
    pose[:, 0] += np.pi
    betas = rng.normal(0.0, 1.0, (batch, 10))
    transl = np.stack([rng.normal(0, 0.2, batch), rng.normal(0, 0.2, batch), rng.uniform(45, 55, batch)], -1)
    points = keypoints_3d(kb, jnp.asarray(betas, jnp.float32), jnp.asarray(pose, jnp.float32), jnp.asarray(transl))
    kp2d = np.asarray(project(points, batch), np.float64) + rng.normal(0.0, noise_px, (batch, kb.num_keypoints, 2))
    return pose, betas, transl, kp2d


def camera_arrays(batch):
    return jnp.full((batch,), 5000.0), jnp.full((batch, 2), 112.0)


def project(points, batch):
    return objective.project(points, *camera_arrays(batch))


def t64(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def jax_points(kb, pose, betas, transl):
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return keypoints_3d(kb, f32(betas), f32(pose), f32(transl))


def test_fit_config_defaults_are_spins_smplify(setup):
    reference, kb, _, _ = setup
    c = FitConfig()
    assert (c.stage1_steps, c.stage2_steps) == (reference.STEPS, reference.STEPS)
    assert (c.stage1_learning_rate, c.stage2_learning_rate) == (reference.LEARNING_RATE, reference.LEARNING_RATE)
    assert c.optimizer == "adam"
    assert (c.depth_weight, c.sigma_px) == (reference.DEPTH_WEIGHT, reference.SIGMA_PX)
    assert (c.pose_prior_weight, c.angle_prior_weight, c.shape_prior_weight) == (
        reference.POSE_PRIOR_WEIGHT,
        reference.ANGLE_PRIOR_WEIGHT,
        reference.SHAPE_PRIOR_WEIGHT,
    )
    ignored = [n.split("/")[1] for n, w in zip(kb.names, np.asarray(objective.stage2_mask(kb, c))) if w == 0]
    assert sorted(ignored) == sorted(reference.STAGE2_IGNORED)
    assert tuple((i, s) for i, s in objective.ANGLE_PRIOR) == reference.ANGLE_PRIOR


def test_keypoints_match_smplx_full_mesh(setup):
    _, kb, _, ref = setup
    rng = np.random.default_rng(1)
    pose, betas, _, _ = random_point(kb, rng)
    ours = jax_points(kb, pose, betas, np.zeros((BATCH, 3)))
    theirs = ref.keypoints(t64(pose[:, :3]), t64(pose[:, 3:]), t64(betas)).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=2e-5)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_stage1_loss_matches(setup, seed):
    _, kb, _, ref = setup
    rng = np.random.default_rng(seed)
    pose, betas, transl, kp2d = random_point(kb, rng)
    tz_init = transl[:, 2] + rng.normal(0.0, 0.3, BATCH)
    conf = np.ones((BATCH, kb.num_keypoints))
    ours = objective.stage1_loss(
        jax_points(kb, pose, betas, transl),
        jnp.asarray(kp2d, jnp.float32),
        jnp.asarray(conf, jnp.float32),
        *camera_arrays(BATCH),
        jnp.asarray(tz_init, jnp.float32),
        jnp.asarray(transl, jnp.float32),
        objective.torso_indices(kb),
        FitConfig(),
    )
    points = ref.keypoints(t64(pose[:, :3]), t64(pose[:, 3:]), t64(betas))
    theirs = ref.stage1_loss(points, t64(kp2d), t64(transl), t64(tz_init)).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_stage2_terms_match(setup, seed):
    _, kb, prior, ref = setup
    rng = np.random.default_rng(seed)
    pose, betas, transl, kp2d = random_point(kb, rng, noise_px=60.0)  # GMcClure well off its quadratic part
    conf = rng.uniform(0.2, 1.0, (BATCH, kb.num_keypoints))
    config = FitConfig()
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    ours = objective.stage2_terms(
        jax_points(kb, pose, betas, transl),
        f32(pose),
        f32(betas),
        f32(kp2d),
        f32(conf) * objective.stage2_mask(kb, config),
        *camera_arrays(BATCH),
        prior,
        config,
    )
    points = ref.keypoints(t64(pose[:, :3]), t64(pose[:, 3:]), t64(betas))
    theirs = ref.stage2_terms(points, t64(pose[:, :3]), t64(pose[:, 3:]), t64(betas), t64(transl), t64(kp2d), t64(conf))
    for name, value in theirs.items():
        np.testing.assert_allclose(np.asarray(ours[name]), value.numpy(), rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(
        np.asarray(objective.stage2_total(ours)), sum(theirs.values()).numpy(), rtol=1e-4, err_msg="total"
    )


def test_short_fit_ends_where_torch_does(setup):
    reference, kb, prior, ref = setup
    steps, batch = 10, 4
    _, _, _, kp2d = reference.make_people(kb, batch)
    conf = np.ones(kp2d.shape[:2], np.float32)
    pose0, betas0, transl0 = reference.start(kb, prior, kp2d, conf)
    config = FitConfig(stage1_steps=steps, stage2_steps=steps)
    ours = fit(
        kb,
        kp2d,
        conf,
        Camera(reference.FOCAL, jnp.asarray(reference.CENTER)),
        init=FitInit(jnp.asarray(pose0), jnp.asarray(betas0), jnp.asarray(transl0)),
        config=config,
        prior=prior,
    )
    theirs = ref.fit(kp2d, conf, pose0, betas0, transl0, steps, steps)
    np.testing.assert_allclose(np.asarray(ours.transl), theirs["transl"], atol=1e-3)
    np.testing.assert_allclose(np.asarray(ours.pose), theirs["pose"], atol=1e-3)
    np.testing.assert_allclose(np.asarray(ours.betas), theirs["betas"], atol=1e-3)
    np.testing.assert_allclose(np.asarray(ours.error_px), theirs["error_px"], rtol=1e-3, atol=1e-3)
    assert np.all(np.asarray(ours.loss) <= theirs["loss"] * (1 + 1e-3) + 1e-3), (ours.loss, theirs["loss"])
