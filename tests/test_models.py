"""Shapes, parameter counts and train/eval behaviour of hmr_jax.models (tiny nets, CPU)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hmr_jax import geometry
from hmr_jax.models import discriminator, hmr, regressor, resnet

# rbg keys: threefry initialisers compile slowly on a loaded CPU; the models accept any key.
KEY = jax.random.key(0, impl="rbg")
IMG = 32
B = 3


def _images(b=B, size=IMG, seed=1):
    return jax.random.normal(jax.random.key(seed), (b, size, size, 3))


@pytest.fixture(scope="module")
def tiny():
    """A tiny generator (ResNet-18, width 8, 2 iterations) and the discriminator."""
    graphdef, params, stats = hmr.init_generator(KEY, depth=18, width=8, n_iter=2, hidden=(32, 32))
    d_graphdef, d_params = hmr.init_discriminator(KEY)
    return graphdef, params, stats, d_graphdef, d_params


_apply = jax.jit(hmr.apply_generator, static_argnames="train")


# ---------------------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("depth,width,channels", [(18, 8, 64), (34, 4, 32), (50, 8, 256)])
def test_resnet_output_shapes(depth, width, channels):
    """Shapes by abstract evaluation (numerics: test_convert_resnet.py and the generator tests)."""
    model = nnx.eval_shape(lambda: resnet.resnet_from_config(depth, width=width, rngs=nnx.Rngs(0)))
    assert model.num_features == channels == 8 * width * (4 if depth == 50 else 1)
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    for train in (False, True):
        out = jax.eval_shape(
            lambda p, s, x: nnx.merge(graphdef, p, s)(x, train=train),
            params,
            stats,
            jax.ShapeDtypeStruct((B, 64, 64, 3), jnp.float32),
        )
        assert out.shape == (B, channels) and out.dtype == jnp.float32


@pytest.mark.parametrize("depth,expected", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032)])
def test_resnet_param_counts_match_torchvision(depth, expected):
    """torchvision's counts (11,689,512 / 21,797,672 / 25,557,032) minus the 1000-way fc."""
    model = nnx.eval_shape(lambda: resnet.resnet_from_config(depth, rngs=nnx.Rngs(0)))
    assert resnet.count_params(nnx.state(model, nnx.Param)) == expected
    assert model.num_features == (2048 if depth == 50 else 512)


def test_resnet_bfloat16_compute_keeps_float32_params():
    model = resnet.ResNet18(width=4, dtype="bfloat16", rngs=nnx.Rngs(KEY))
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    for leaf in jax.tree_util.tree_leaves((params, stats)):
        assert leaf.dtype == jnp.float32
    out = jax.jit(lambda p, s, x: nnx.merge(graphdef, p, s)(x, train=False))(params, stats, _images())
    assert out.shape == (B, 32) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


def test_resnet_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth must be one of"):
        resnet.resnet_from_config(101, rngs=nnx.Rngs(0))


# -------------------------------------------------------------------------------------- regressor


@pytest.mark.parametrize("rot_repr,n_pose", [("aa", 72), ("6d", 144)])
def test_regressor_zero_init_returns_mean_at_every_iteration(rot_repr, n_pose):
    mean_pose, mean_betas, mean_cam = regressor.default_mean_params("aa")
    mean_betas = np.linspace(-1, 1, 10).astype(np.float32)
    reg = regressor.Regressor(
        16,
        mean_pose,
        mean_betas,
        mean_cam,
        rot_repr=rot_repr,
        hidden=(8, 8),
        n_iter=3,
        final_init_gain=0.0,
        rngs=nnx.Rngs(KEY),
    )
    out = reg(jax.random.normal(jax.random.key(2), (B, 16)), train=False)
    assert out["theta"].shape == (3, B, n_pose)
    assert out["betas"].shape == (3, B, 10) and out["cam"].shape == (3, B, 3)
    assert out["pose_rotmat"].shape == (3, B, 24, 3, 3)
    mean_theta = regressor.convert_mean_pose(mean_pose, rot_repr)
    np.testing.assert_array_equal(out["theta"], np.broadcast_to(mean_theta, (3, B, n_pose)))
    np.testing.assert_array_equal(out["betas"], np.broadcast_to(mean_betas, (3, B, 10)))
    np.testing.assert_array_equal(out["cam"], np.broadcast_to(mean_cam, (3, B, 3)))
    # The mean pose: 180 deg about x for the root, identity for the body joints.
    expected = np.broadcast_to(np.eye(3), (3, B, 24, 3, 3)).copy()
    expected[:, :, 0] = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(out["pose_rotmat"], expected, atol=1e-6)


def test_regressor_iterations_refine_from_mean():
    mean_pose, mean_betas, mean_cam = regressor.default_mean_params("aa")
    reg = regressor.Regressor(
        16, mean_pose, mean_betas, mean_cam, hidden=(8, 8), n_iter=4, final_init_gain=1.0, rngs=nnx.Rngs(KEY)
    )
    feats = jax.random.normal(jax.random.key(2), (B, 16))
    out = reg(feats, train=False)
    # Iteration 0 = mean + one residual computed from (features, mean).
    x = jnp.concatenate([feats, jnp.broadcast_to(jnp.asarray(reg.mean_params), (B, 85))], -1)
    first = jnp.asarray(reg.mean_params) + reg.out(nnx.relu(reg.fc2(nnx.relu(reg.fc1(x)))))
    np.testing.assert_allclose(out["theta"][0], first[:, :72], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out["theta"][0], out["theta"][1])  # each iteration moves


def test_regressor_mean_pose_input_formats_agree():
    aa, _, _ = regressor.default_mean_params("aa")
    six, _, _ = regressor.default_mean_params("6d")
    np.testing.assert_allclose(regressor.convert_mean_pose(six, "aa"), aa, atol=1e-6)
    np.testing.assert_allclose(regressor.convert_mean_pose(aa.reshape(24, 3), "6d"), six, atol=1e-6)
    with pytest.raises(ValueError, match="mean_pose"):
        regressor.convert_mean_pose(np.zeros(70), "aa")
    with pytest.raises(ValueError, match="rot_repr"):
        regressor.convert_mean_pose(aa, "quat")


@pytest.mark.parametrize("rot_repr", ["aa", "6d"])
def test_regressor_outputs_valid_rotations(rot_repr):
    mean_pose, mean_betas, mean_cam = regressor.default_mean_params(rot_repr)
    reg = regressor.Regressor(
        16,
        mean_pose,
        mean_betas,
        mean_cam,
        rot_repr=rot_repr,
        hidden=(8,),
        n_iter=2,
        final_init_gain=3.0,
        rngs=nnx.Rngs(KEY),
    )
    out = reg(3.0 * jax.random.normal(jax.random.key(2), (B, 16)), train=False)
    rot = np.asarray(out["pose_rotmat"], np.float64)
    assert np.abs(out["theta"] - np.broadcast_to(mean_pose, out["theta"].shape)).max() > 0.1
    np.testing.assert_allclose(np.swapaxes(rot, -1, -2) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


def test_regressor_dropout_train_only():
    mean_pose, mean_betas, mean_cam = regressor.default_mean_params("aa")
    reg = regressor.Regressor(
        16, mean_pose, mean_betas, mean_cam, hidden=(32, 32), n_iter=2, final_init_gain=1.0, rngs=nnx.Rngs(KEY)
    )
    feats = jax.random.normal(jax.random.key(2), (B, 16))
    eval1 = reg(feats, train=False)["theta"]
    eval2 = reg(feats, train=False, rng=jax.random.key(5))["theta"]
    train1 = reg(feats, train=True, rng=jax.random.key(5))["theta"]
    train1b = reg(feats, train=True, rng=jax.random.key(5))["theta"]
    train2 = reg(feats, train=True, rng=jax.random.key(6))["theta"]
    np.testing.assert_array_equal(eval1, eval2)
    np.testing.assert_array_equal(train1, train1b)  # pure in the key
    assert not np.allclose(train1, eval1)
    assert not np.allclose(train1, train2)
    with pytest.raises(ValueError, match="PRNG key"):
        reg(feats, train=True)


def test_linear_head():
    graphdef, params, stats = hmr.init_generator(KEY, depth=18, width=4, hidden=(), n_iter=1)
    assert set(params["regressor"]) == {"out"}
    assert params["regressor"]["out"]["kernel"].shape == (32 + 85, 85)
    out, _ = _apply(graphdef, params, stats, _images(), None, train=True)  # no dropout: no key needed
    assert out["pose_rotmat"].shape == (B, 24, 3, 3)
    assert out["iterations"]["theta"].shape == (1, B, 72)


# ---------------------------------------------------------------------------------- discriminator


def test_discriminator_param_count_and_layout():
    d = nnx.eval_shape(lambda: discriminator.Discriminator(rngs=nnx.Rngs(0)))
    params = nnx.state(d, nnx.Param)
    assert resnet.count_params(params) == 1_807_619
    assert params["joint_out_kernel"].shape == (23, 32)  # one batched weight, not 23 modules
    assert params["pose_mlp"]["fc1"]["kernel"].shape == (23 * 32, 1024)
    assert params["shape_mlp"]["fc1"]["kernel"].shape == (10, 10)
    assert params["shape_mlp"]["fc2"]["kernel"].shape == (10, 5)


def test_discriminator_output_and_gradients(tiny):
    *_, d_graphdef, d_params = tiny
    aa = 0.5 * jax.random.normal(jax.random.key(3), (B, 23, 3))
    rot = jax.jit(geometry.axis_angle_to_matrix)(aa)
    betas = jax.random.normal(jax.random.key(4), (B, 10))
    logits = jax.jit(hmr.apply_discriminator)(d_graphdef, d_params, rot, betas)
    assert logits.shape == (B, 25) and bool(jnp.all(jnp.isfinite(logits)))

    # Column j < 23 depends only on joint j, column 23 on all joints, column 24 only on betas.
    jac_rot, jac_betas = jax.jit(
        jax.jacrev(lambda r, b: hmr.apply_discriminator(d_graphdef, d_params, r, b).sum(0), argnums=(0, 1))
    )(rot, betas)
    jac_rot = np.abs(np.asarray(jac_rot)).sum(axis=(1, 3, 4))  # (25, 23): column x joint
    jac_betas = np.abs(np.asarray(jac_betas)).sum(axis=(1, 2))  # (25,)
    assert np.all(np.isfinite(jac_rot)) and np.all(np.isfinite(jac_betas))
    np.testing.assert_array_equal(jac_rot[:23] > 0, np.eye(23, dtype=bool))
    assert np.all(jac_rot[discriminator.POSE_INDEX] > 0) and np.all(jac_rot[discriminator.SHAPE_INDEX] == 0)
    assert np.all(jac_betas[:24] == 0) and jac_betas[discriminator.SHAPE_INDEX] > 0
    # Parameter gradients of the LSGAN loss are finite and reach every parameter.
    grads = jax.jit(jax.grad(lambda p: jnp.mean((hmr.apply_discriminator(d_graphdef, p, rot, betas) - 1) ** 2)))(
        d_params
    )
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, path


def test_discriminator_rejects_24_joints(tiny):
    *_, d_graphdef, d_params = tiny
    with pytest.raises(ValueError, match=r"\(B, 23, 3, 3\)"):
        hmr.apply_discriminator(d_graphdef, d_params, jnp.zeros((B, 24, 3, 3)), jnp.zeros((B, 10)))


# -------------------------------------------------------------------------------------- generator


def test_generator_outputs(tiny):
    graphdef, params, stats, *_ = tiny
    assert set(params) == {"encoder", "regressor"} and set(stats) == {"encoder"}
    out, _ = _apply(graphdef, params, stats, _images(), jax.random.key(7), train=True)
    assert out["pose_rotmat"].shape == (B, 24, 3, 3)
    assert out["betas"].shape == (B, 10) and out["cam"].shape == (B, 3) and out["theta"].shape == (B, 72)
    its = out["iterations"]
    assert its["pose_rotmat"].shape == (2, B, 24, 3, 3)
    assert its["betas"].shape == (2, B, 10) and its["cam"].shape == (2, B, 3)
    np.testing.assert_array_equal(its["pose_rotmat"][-1], out["pose_rotmat"])


def test_mirror_outputs_is_the_pipelines_flip():
    """Mirrored rotation matrices == those of the data pipeline's axis-angle pose flip (TF,
    `annotation_transforms.flip_pose`); camera x and keypoint x negated, left/right swapped; an involution."""
    from hmr_jax import skeleton
    from hmr_jax.data import annotation_transforms

    rng = np.random.default_rng(3)
    aa = rng.normal(0.0, 0.6, (4, 72)).astype(np.float32)
    out = {
        "pose_rotmat": geometry.axis_angle_to_matrix(aa.reshape(4, 24, 3)),
        "betas": jnp.asarray(rng.normal(size=(4, 10)), jnp.float32),
        "cam": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "keypoints_2d": jnp.asarray(rng.uniform(-1, 1, (4, 24, 2)), jnp.float32),
    }
    perm = np.asarray(skeleton.SMPL24_FLIP_PERM)
    m = hmr.mirror_outputs(out, skeleton.SMPL24_FLIP_PERM)
    flipped = np.asarray(annotation_transforms.flip_pose(aa)).reshape(4, 24, 3)
    np.testing.assert_allclose(m["pose_rotmat"], geometry.axis_angle_to_matrix(flipped), atol=1e-5)
    np.testing.assert_array_equal(m["betas"], out["betas"])
    np.testing.assert_allclose(m["cam"], out["cam"] * np.array([1.0, -1.0, 1.0]))
    np.testing.assert_allclose(m["keypoints_2d"], out["keypoints_2d"][:, perm] * np.array([-1.0, 1.0]))
    twice = hmr.mirror_outputs(m, skeleton.SMPL24_FLIP_PERM)
    for k in out:
        np.testing.assert_allclose(twice[k], out[k], atol=1e-6, err_msg=k)
    assert "keypoints_2d" not in hmr.mirror_outputs(out)  # no permutation: no keypoints


def test_flip_test_averages_and_is_mirror_equivariant(tiny):
    """The flip test = the plain prediction averaged with the mirrored prediction for the mirror
    image (rotations projected back onto SO(3)); so the flip test of the mirror image is the
    mirrored flip test of the image."""
    graphdef, params, stats, *_ = tiny
    x = _images()
    flip_test = jax.jit(hmr.apply_generator_flip_test)
    got = flip_test(graphdef, params, stats, x)
    assert set(got) == {"pose_rotmat", "betas", "cam"}
    plain, _ = _apply(graphdef, params, stats, x, None, train=False)
    other, _ = _apply(graphdef, params, stats, x[:, :, ::-1], None, train=False)
    back = hmr.mirror_outputs(other)
    np.testing.assert_allclose(got["betas"], 0.5 * (plain["betas"] + back["betas"]), atol=1e-5)
    np.testing.assert_allclose(got["cam"], 0.5 * (plain["cam"] + back["cam"]), atol=1e-5)
    np.testing.assert_allclose(
        got["pose_rotmat"], geometry.nearest_rotation(0.5 * (plain["pose_rotmat"] + back["pose_rotmat"])), atol=1e-5
    )
    assert not np.allclose(got["pose_rotmat"], plain["pose_rotmat"], atol=1e-4)  # the mirror image counts
    r = np.asarray(got["pose_rotmat"])
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    mirrored = hmr.mirror_outputs(flip_test(graphdef, params, stats, x[:, :, ::-1]))
    for k in got:
        np.testing.assert_allclose(mirrored[k], got[k], atol=1e-5, err_msg=k)


def test_batch_stats_update_in_train_mode_only(tiny):
    graphdef, params, stats, *_ = tiny
    images = _images()
    _, new_train = _apply(graphdef, params, stats, images, jax.random.key(7), train=True)
    _, new_eval = _apply(graphdef, params, stats, images, None, train=False)
    assert jax.tree_util.tree_structure(new_train) == jax.tree_util.tree_structure(stats)
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), new_train, stats)
    assert all(jax.tree_util.tree_leaves(changed))
    jax.tree_util.tree_map(np.testing.assert_array_equal, new_eval, stats)
    # The running statistics are used in eval mode: different stats -> different outputs.
    out_a, _ = _apply(graphdef, params, stats, images, None, train=False)
    out_b, _ = _apply(graphdef, params, new_train, images, None, train=False)
    assert not np.allclose(out_a["theta"], out_b["theta"])


def test_generator_dropout_train_only(tiny):
    graphdef, params, stats, *_ = tiny
    images = _images()
    e1, _ = _apply(graphdef, params, stats, images, None, train=False)
    e2, _ = _apply(graphdef, params, stats, images, jax.random.key(1), train=False)
    t1, _ = _apply(graphdef, params, stats, images, jax.random.key(1), train=True)
    t2, _ = _apply(graphdef, params, stats, images, jax.random.key(2), train=True)
    np.testing.assert_array_equal(e1["theta"], e2["theta"])
    assert not np.allclose(t1["theta"], t2["theta"])


def test_generator_gradients_finite_and_nonzero(tiny):
    graphdef, params, stats, *_ = tiny
    images = _images()
    w = jax.random.normal(jax.random.key(8), (2, B, 24, 3, 3))

    def loss(p):
        out, new_stats = hmr.apply_generator(graphdef, p, stats, images, jax.random.key(9), train=True)
        its = out["iterations"]
        return jnp.sum(its["pose_rotmat"] * w) + jnp.sum(its["betas"] ** 2) + jnp.sum(its["cam"] ** 2), new_stats

    grads, _ = jax.jit(jax.grad(loss, has_aux=True))(params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert float(jnp.abs(g).max()) > 0, path


def test_init_is_jittable_and_eval_shapeable():
    init = functools.partial(hmr.init_generator, depth=18, width=4, n_iter=2, hidden=(8,))
    graphdef, params, stats = init(KEY)
    a_graphdef, a_params, a_stats = jax.eval_shape(init, KEY)
    assert a_graphdef == graphdef
    assert jax.tree_util.tree_map(lambda x: x.shape, a_params) == jax.tree_util.tree_map(jnp.shape, params)
    j_graphdef, j_params, _ = jax.jit(init)(KEY)
    assert j_graphdef == graphdef
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), j_params, params)
    assert resnet.count_params(stats) > 0


def test_full_size_generator_param_count():
    _, params, stats = jax.eval_shape(lambda k: hmr.init_generator(k, depth=50), KEY)
    assert resnet.count_params(params["encoder"]) == 23_508_032
    assert resnet.count_params(params["regressor"]) == (2048 + 85) * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 85 + 85
    _, params6d, _ = jax.eval_shape(lambda k: hmr.init_generator(k, depth=50, rot_repr="6d"), KEY)
    assert params6d["regressor"]["out"]["kernel"].shape == (1024, 144 + 13)
