"""The optional 2D keypoint head, its loss, and the lifting pass (models, losses, train step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hmr_jax import body_model, config_checks, losses, sharding, skeleton, smpl, steps
from hmr_jax import state as state_lib
from hmr_jax.models import cpu_kernels, hmr, keypoint_head, resnet

KEY = jax.random.key(0, impl="rbg")
B, IMG, J = 3, 32, 24
HEAD = dict(num_keypoints=J, channels=8)
_apply = jax.jit(hmr.apply_generator, static_argnames="train")


# ------------------------------------------------------------------------------------ soft-argmax


@pytest.mark.parametrize("h,w,r,c", [(4, 4, 0, 3), (6, 3, 5, 1), (7, 5, 3, 2)])
def test_soft_argmax_of_a_peak_is_its_cell_centre(h, w, r, c):
    logits = np.full((2, h, w, J), -60.0, np.float32)
    logits[:, r, c, :] = 60.0
    xy = np.asarray(keypoint_head.soft_argmax(jnp.asarray(logits)))
    expected = [2.0 * (c + 0.5) / w - 1.0, 2.0 * (r + 0.5) / h - 1.0]
    np.testing.assert_allclose(xy, np.broadcast_to(expected, (2, J, 2)), atol=1e-6)


def test_soft_argmax_is_the_probability_weighted_mean():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(axis=(1, 2), keepdims=True)
    xs = 2.0 * (np.arange(6) + 0.5) / 6 - 1.0
    ys = 2.0 * (np.arange(5) + 0.5) / 5 - 1.0
    expected = np.stack([np.einsum("bhwj,w->bj", p, xs), np.einsum("bhwj,h->bj", p, ys)], -1)
    np.testing.assert_allclose(keypoint_head.soft_argmax(jnp.asarray(logits)), expected, atol=1e-6)
    # uniform maps -> the centre of the crop
    np.testing.assert_allclose(keypoint_head.soft_argmax(jnp.zeros((1, 4, 8, 2))), 0.0, atol=1e-6)


def test_soft_argmax_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((1, 3, 4, 2))
    w = rng.standard_normal((1, 2, 2))
    f = lambda z: jnp.sum(keypoint_head.soft_argmax(z) * w)  # noqa: E731
    grad = np.asarray(jax.grad(f)(jnp.asarray(logits, jnp.float32)))
    eps = 1e-2
    for idx in [(0, 0, 0, 0), (0, 1, 2, 1), (0, 2, 3, 0), (0, 2, 1, 1)]:
        d = np.zeros_like(logits)
        d[idx] = eps
        fd = (float(f(jnp.asarray(logits + d, jnp.float32))) - float(f(jnp.asarray(logits - d, jnp.float32)))) / (
            2 * eps
        )
        np.testing.assert_allclose(grad[idx], fd, rtol=2e-2, atol=1e-4)


# ------------------------------------------------------------------------------------- the head


@pytest.mark.parametrize("cls,k", [(cpu_kernels.PointwiseConv, 1), (cpu_kernels.Conv3x3, 3)])
def test_fast_convs_with_bias_match_nnx_conv(cls, k):
    pad = ((k // 2, k // 2),) * 2
    fast = cls(5, 4, (k, k), padding=pad, rngs=nnx.Rngs(0))
    ref = nnx.Conv(5, 4, (k, k), padding=pad, rngs=nnx.Rngs(0))
    ref.bias[...] = fast.bias[...] = jnp.arange(4.0)
    x = jax.random.normal(jax.random.key(2), (2, 6, 6, 5))
    np.testing.assert_allclose(fast(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("src,dst", [((3, 4), (6, 8)), ((3, 3), (5, 6)), ((4, 4), (4, 4))])
def test_upsample_is_nearest_resize_in_value_and_gradient(src, dst):
    """The 2x broadcast form, and the resize fallback at other sizes, equal jax.image.resize's
    nearest neighbour; so do their gradients (a random cotangent)."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, *src, 5)), jnp.float32)
    target = (2, *dst, 5)
    ref = lambda x: jax.image.resize(x, target, method="nearest")  # noqa: E731
    ours = lambda x: keypoint_head._upsample_to(x, target)  # noqa: E731
    np.testing.assert_array_equal(ours(x), ref(x))
    g = jnp.asarray(rng.standard_normal(target), jnp.float32)
    np.testing.assert_allclose(jax.vjp(ours, x)[1](g)[0], jax.vjp(ref, x)[1](g)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stride", keypoint_head.STRIDES)
@pytest.mark.parametrize("size", [32, 40, 50])  # stage maps 8/4/2/1, 10/5/3/2, 13/7/4/2 (odd: resize)
def test_head_keypoints_shape_range_and_gradients(size, stride):
    enc = resnet.resnet_from_config(18, width=4, rngs=nnx.Rngs(0))
    head = keypoint_head.KeypointHead(enc.stage_channels, J, channels=8, stride=stride, rngs=nnx.Rngs(1))
    images = jax.random.normal(jax.random.key(3), (2, size, size, 3))
    _, stages = enc(images, train=False, return_stages=True)
    assert [s.shape[-1] for s in stages] == list(enc.stage_channels)
    logits = head.logits(stages)
    finest = {4: stages[0], 8: stages[1]}[stride]  # stage 1 (stride 4) or stage 2 (stride 8)
    assert logits.shape == (2,) + finest.shape[1:3] + (J,)
    assert ("lateral1" in nnx.to_pure_dict(nnx.state(head, nnx.Param))) == (stride == 4)
    kp = head(stages)
    assert kp.shape == (2, J, 2) and bool(jnp.all(jnp.abs(kp) < 1.0))
    graphdef, params = nnx.split(head, nnx.Param)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(stages) ** 2))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(grads)):
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0, path


@pytest.fixture(scope="module")
def with_head():
    return hmr.init_generator(KEY, depth=18, width=8, n_iter=2, hidden=(32,), dropout=0.0, keypoint_head=HEAD)


def test_generator_without_head_is_hmr_as_published():
    _, params, _ = hmr.init_generator(KEY, depth=18, width=8, n_iter=2, hidden=(32,))
    assert set(params) == {"encoder", "regressor"}
    assert params["regressor"]["fc1"]["kernel"].shape == (64 + 72 + 10 + 3, 32)


def test_generator_with_head_feeds_keypoints_to_the_regressor(with_head):
    graphdef, params, stats = with_head
    assert set(params) == {"encoder", "regressor", "keypoint_head"}
    assert params["regressor"]["fc1"]["kernel"].shape == (64 + 2 * J + 72 + 10 + 3, 32)
    images = jax.random.normal(jax.random.key(4), (B, IMG, IMG, 3))
    out, _ = _apply(graphdef, params, stats, images, None, train=False)
    assert out["keypoints_2d"].shape == (B, J, 2) and "lift" not in out
    # the regressor reads the keypoints: sharpening the heatmaps moves them and the estimate
    moved = jax.tree.map(lambda x: x, params)
    moved["keypoint_head"]["out"]["kernel"] = 20.0 * params["keypoint_head"]["out"]["kernel"]
    out2, _ = _apply(graphdef, moved, stats, images, None, train=False)
    assert not np.allclose(out["keypoints_2d"], out2["keypoints_2d"])
    assert not np.allclose(out["theta"], out2["theta"])


def test_flip_test_averages_the_heads_keypoints_left_right_swapped(with_head):
    graphdef, params, stats = with_head
    images = jax.random.normal(jax.random.key(6), (B, IMG, IMG, 3))
    got = hmr.apply_generator_flip_test(graphdef, params, stats, images, skeleton.SMPL24_FLIP_PERM)
    plain, _ = _apply(graphdef, params, stats, images, None, train=False)
    other, _ = _apply(graphdef, params, stats, images[:, :, ::-1], None, train=False)
    back = other["keypoints_2d"][:, np.asarray(skeleton.SMPL24_FLIP_PERM)] * np.array([-1.0, 1.0])
    np.testing.assert_allclose(got["keypoints_2d"], 0.5 * (plain["keypoints_2d"] + back), atol=1e-6)


def test_lifting_pass_reads_the_given_keypoints_where_visible(with_head):
    graphdef, params, stats = with_head
    images = jax.random.normal(jax.random.key(5), (B, IMG, IMG, 3))
    out, _ = _apply(graphdef, params, stats, images, None, train=True)
    own = out["keypoints_2d"]
    # invisible everywhere -> the head's own keypoints -> the main pass exactly
    hidden = jnp.concatenate([jnp.full_like(own, 5.0), jnp.zeros(own.shape[:-1] + (1,))], -1)
    out_h, _ = _apply(graphdef, params, stats, images, None, train=True, lift_keypoints=hidden)
    for k in ("theta", "betas", "cam"):
        np.testing.assert_allclose(out_h["lift"][k], out_h[k], rtol=1e-6, atol=1e-6)
    # visible: the given points, not the head's
    given = jnp.concatenate([-own, jnp.ones(own.shape[:-1] + (1,))], -1)
    out_v, _ = _apply(graphdef, params, stats, images, None, train=True, lift_keypoints=given)
    assert not np.allclose(out_v["lift"]["theta"], out_v["theta"])
    with pytest.raises(ValueError, match="lift_keypoints"):
        hmr.apply_generator(graphdef, params, stats, images, None, train=True, lift_keypoints=given[..., :2])


def test_head_stride_must_be_known():
    with pytest.raises(ValueError, match="stride"):
        keypoint_head.KeypointHead((4, 8, 16, 32), J, stride=16, rngs=nnx.Rngs(0))


def test_keypoint_input_scale_is_a_factor_on_the_keypoint_inputs(with_head):
    """A model with input_scale s equals the unscaled model whose first-layer rows for the
    keypoints are s times larger (the keypoints enter the regressor linearly)."""
    graphdef, params, stats = with_head  # input_scale 1
    s = 4.0
    graphdef_s, params_s, _ = hmr.init_generator(
        KEY, depth=18, width=8, n_iter=2, hidden=(32,), dropout=0.0, keypoint_head=dict(HEAD, input_scale=s)
    )
    assert jax.tree.map(np.shape, params_s) == jax.tree.map(np.shape, params)
    images = jax.random.normal(jax.random.key(6), (B, IMG, IMG, 3))
    out_s, _ = _apply(graphdef_s, params, stats, images, None, train=False)
    rows = slice(64, 64 + 2 * J)  # fc1's rows: pooled features (64), keypoints (2J), estimate
    scaled = jax.tree.map(lambda x: x, params)
    kernel = params["regressor"]["fc1"]["kernel"]
    scaled["regressor"]["fc1"]["kernel"] = kernel.at[rows].multiply(s)
    out_1, _ = _apply(graphdef, scaled, stats, images, None, train=False)
    for k in ("theta", "betas", "cam", "keypoints_2d"):
        np.testing.assert_allclose(out_s[k], out_1[k], rtol=1e-4, atol=1e-5)
    out_plain, _ = _apply(graphdef, params, stats, images, None, train=False)
    assert not np.allclose(out_plain["theta"], out_s["theta"])


def test_lift_keypoints_without_head_is_an_error():
    graphdef, params, stats = hmr.init_generator(KEY, depth=18, width=4, n_iter=1, hidden=(8,))
    with pytest.raises(ValueError, match="keypoint head"):
        hmr.apply_generator(
            graphdef, params, stats, jnp.zeros((1, IMG, IMG, 3)), None, train=True, lift_keypoints=jnp.zeros((1, J, 3))
        )


# ------------------------------------------------------------------------------------------ loss


def test_keypoints_l1_loss_zero_on_ground_truth_and_hand_computed():
    gt_px = np.array([[[16.0, 8.0, 1.0], [0.0, 32.0, 1.0], [5.0, 5.0, 0.0]]], np.float32)  # (1, 3, 3)
    gt_norm = losses.normalize_keypoints(gt_px[..., :2], IMG)
    assert float(losses.keypoints_l1_loss(gt_norm, gt_px, IMG)) == 0.0
    pred = np.asarray(gt_norm).copy()
    pred[0, 0] += [0.1, -0.2]  # |.|_1 = 0.3, visible
    pred[0, 2] += [1.0, 1.0]  # invisible: free
    np.testing.assert_allclose(float(losses.keypoints_l1_loss(pred, gt_px, IMG)), 0.3 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="keypoints_l1_loss"):
        losses.keypoints_l1_loss(pred[..., :1], gt_px, IMG)


def _gaussian_target(h, w, img, gx, gy, sigma):
    """Independent reference: the normalised Gaussian over the cell centres, (h, w)."""
    xs = (np.arange(w) + 0.5) * img / w
    ys = (np.arange(h) + 0.5) * img / h
    t = np.exp(-((xs[None, :] - gx) ** 2 + (ys[:, None] - gy) ** 2) / (2 * sigma**2))
    return t / t.sum()


def test_keypoint_heatmap_loss_zero_at_the_target_and_hand_computed():
    h, w, img, sigma = 6, 8, 32.0, 3.0
    gt_px = np.array([[[10.0, 20.0, 1.0], [3.0, 30.0, 1.0], [40.0, 5.0, 1.0], [7.0, 7.0, 0.0]]], np.float32)
    targets = [_gaussian_target(h, w, img, x, y, sigma) for x, y, _ in gt_px[0]]
    logits = np.stack([np.log(t) + 3.0 for t in targets], axis=-1)[None].astype(np.float32)  # (1, h, w, 4)
    np.testing.assert_allclose(float(losses.keypoint_heatmap_loss(logits, gt_px, img, sigma)), 0.0, atol=1e-5)
    # uniform maps: KL(t || uniform) = log(h w) - H(t), for the 2 visible joints inside the crop
    # (joint 2 is outside the 32 px crop, joint 3 invisible); the mean runs over all 4 joints
    kl = [np.log(h * w) + np.sum(t * np.log(t)) for t in targets[:2]]
    uniform = np.zeros_like(logits)
    np.testing.assert_allclose(float(losses.keypoint_heatmap_loss(uniform, gt_px, img, sigma)), sum(kl) / 4, rtol=1e-5)
    # a peak away from the joint costs more than one at it
    at = np.full_like(logits, -5.0)
    away = at.copy()
    at[0, 3, 2, 0] = 5.0  # cell centre (10, 18): next to joint 0 at (10, 20)
    away[0, 0, 7, 0] = 5.0  # cell centre (30, 2)
    assert (
        float(losses.keypoint_heatmap_loss(away, gt_px, img, sigma))
        > float(losses.keypoint_heatmap_loss(at, gt_px, img, sigma))
        > 0
    )
    with pytest.raises(ValueError, match="keypoint_heatmap_loss"):
        losses.keypoint_heatmap_loss(logits, gt_px[:, :3], img, sigma)


# -------------------------------------------------------------------------------- config + step


def test_head_losses_need_the_head(tmp_path, tiny_config):
    for name in ("keypoints_2d", "keypoint_heatmap", "lift"):
        config = tiny_config(
            tmp_path,
            **{
                "model.keypoint_head.enabled": False,
                "loss_weights.keypoints_2d": 0.0,
                "loss_weights.keypoint_heatmap": 0.0,
                "loss_weights.lift": 0.0,
                f"loss_weights.{name}": 1.0,
            },
        )
        with pytest.raises(config_checks.ConfigError, match=rf"loss_weights\.{name}.*keypoint_head\.enabled"):
            config_checks.validate_config(config)
    config = tiny_config(tmp_path, **{"model.keypoint_head.num_keypoints": 17})
    with pytest.raises(config_checks.ConfigError, match=r"keypoint_head\.num_keypoints.*24 joints, found 17"):
        state_lib.check_keypoint_head(config, "smpl24")
    state_lib.check_keypoint_head(tiny_config(tmp_path), "spin24")  # 24 joints: fine
    for key, value, expected in (
        ("model.keypoint_head.stride", 16, r"stride.*one of \(4, 8\)"),
        ("model.keypoint_head.input_scale", 0.0, "input_scale.*positive"),
        ("train.heatmap_sigma_px", 0.0, "heatmap_sigma_px.*positive"),
    ):
        with pytest.raises(config_checks.ConfigError, match=expected):
            config_checks.validate_config(tiny_config(tmp_path, **{key: value}))


def test_a_config_without_the_heads_stride_is_refused_naming_the_key(tmp_path, tiny_config):
    config = tiny_config(tmp_path)
    del config.model.keypoint_head["stride"]
    with pytest.raises(config_checks.ConfigError, match=r"missing key 'model\.keypoint_head\.stride'"):
        config_checks.validate_config(config, 1, 1)


def test_train_step_head_and_lift_terms(tmp_path, fixed_batch, make_dataset, tiny_config):
    """`lift` is the weighted 3D terms of the lifting pass: with every keypoint invisible that pass reads
    the head's own keypoints, so it equals the weighted 3D terms of the main pass (noise is moot)."""
    make_dataset(tmp_path, num=8, img_size=IMG)
    config = tiny_config(tmp_path, **{"loss_weights.adversarial": 0.0, "adversarial.disc_loss_weight": 0.0})
    assert config.model.keypoint_head.enabled and config.loss_weights.lift > 0  # the tiny config's
    mesh = sharding.make_mesh()
    batch = fixed_batch(tmp_path)
    with jax.set_mesh(mesh):
        models = state_lib.make_static_parts(config)
        state = state_lib.create_sharded_state(config, models, mesh)
        smpl_model = sharding.replicate(smpl.load(body_model.default_body_model_path()), mesh)
        step = jax.jit(steps.make_train_step(config, models, "smpl24"))
        _, m = step(state, sharding.to_global(batch, mesh), smpl_model, None, None)
        assert float(m["loss/keypoints_2d"]) > 0 and float(m["loss/lift"]) > 0
        assert float(m["loss/keypoint_heatmap"]) > 0
        hidden = dict(batch, keypoints_2d=batch["keypoints_2d"] * np.array([1.0, 1.0, 0.0], np.float32))
        _, m = step(state, sharding.to_global(hidden, mesh), smpl_model, None, None)
    w = config.loss_weights
    expected = sum(w[k] * float(m[f"loss/{k}"]) for k in losses.LIFT_TERMS)
    np.testing.assert_allclose(float(m["loss/lift"]), expected, rtol=1e-5)
    assert float(m["loss/keypoints_2d"]) == 0.0 and float(m["loss/keypoint_heatmap"]) == 0.0  # nothing visible
