"""The ResNet's hand-written ops (fused BatchNorm, stem convolution, max pool) against plain JAX.

hmr_jax.models.resnet replaces a few ops whose XLA:CPU autodiff is slow by custom-VJP versions
(benchmarks/conv_layers.py, benchmarks/train_step.py). Each must give the values and gradients
of the plain formula; the whole network is checked against a reference forward pass that uses
flax's own BatchNorm, `lax.conv_general_dilated` and `lax.reduce_window`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from hmr_jax.models import cpu_kernels, resnet

_DN = ("NHWC", "HWIO", "NHWC")


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30))


def _ref_bn_act(x, scale, bias, residual, eps, relu):
    mean = x.mean((0, 1, 2))
    var = jnp.maximum((x * x).mean((0, 1, 2)) - mean * mean, 0.0)
    y = (x - mean) * (lax.rsqrt(var + eps) * scale) + bias
    if residual is not None:
        y = y + residual
    return (jax.nn.relu(y) if relu else y), mean, var


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_batch_norm_act_values_and_gradients(relu, with_residual):
    rng = np.random.default_rng(0)
    x = jnp.asarray(3.0 * rng.standard_normal((3, 5, 4, 6)) + 1.0, jnp.float32)
    scale = jnp.asarray(rng.standard_normal(6), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(6), jnp.float32)
    res = jnp.asarray(rng.standard_normal(x.shape), jnp.float32) if with_residual else None
    w = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    wm, wv = jnp.arange(6.0), 0.1 * jnp.arange(6.0) ** 2

    def loss(fn):
        def f(x, scale, bias, res):
            y, m, v = fn(x, scale, bias, res, 1e-5, relu)
            return (y * w).sum() + (m * wm).sum() + (v * wv).sum()  # gradients through the stats too

        return f

    for a, b in zip(
        _ref_bn_act(x, scale, bias, res, 1e-5, relu), cpu_kernels.batch_norm_act(x, scale, bias, res, 1e-5, relu)
    ):
        assert _rel(a, b) < 1e-6
    argnums = (0, 1, 2, 3) if with_residual else (0, 1, 2)
    g_ref = jax.grad(loss(_ref_bn_act), argnums)(x, scale, bias, res)
    g_new = jax.jit(jax.grad(loss(cpu_kernels.batch_norm_act), argnums))(x, scale, bias, res)
    for a, b in zip(g_ref, g_new):
        assert _rel(a, b) < 1e-5


def test_batch_norm_module_matches_flax_and_updates_running_stats():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 3, 3, 5)) + 2.0, jnp.float32)
    r = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    ours = cpu_kernels.BatchNorm(5, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    theirs = nnx.BatchNorm(5, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    for train in (True, False):
        y = ours(x, not train, residual=r, relu=True)
        y_ref = nnx.relu(theirs(x, use_running_average=not train) + r)
        assert _rel(y_ref, y) < 1e-6
        np.testing.assert_allclose(ours.mean[...], theirs.mean[...], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ours.var[...], theirs.var[...], rtol=1e-6, atol=1e-7)


def _assert_matches_lax_conv(op, x, w, stride, pad, rng):
    """`op(x, w)` equals lax's convolution (stride, symmetric pad) in value (1e-6) and in both
    gradients (1e-5) for a random cotangent; returns (cotangent, lax's (dx, dw))."""

    def plain(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=_DN)

    y_ref, vjp_ref = jax.vjp(plain, x, w)
    y, vjp = jax.vjp(op, x, w)
    assert _rel(y_ref, y) < 1e-6
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    ref_grads = vjp_ref(g)
    for a, b in zip(ref_grads, jax.jit(vjp)(g)):
        assert _rel(a, b) < 1e-5
    return g, ref_grads


def _uses_matmul_grads(op, x, w):
    """Whether op's traced backward pass holds the CPU-only matmul branch (`platform_dependent`)."""
    y, vjp = jax.vjp(op, x, w)
    return "platform_index" in str(jax.make_jaxpr(vjp)(jnp.ones_like(y)))


@pytest.mark.parametrize("mode", ["matmul", "xla"])
@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (1, 33, 30, 3), (2, 18, 18, 5)])
def test_stem_conv_matches_lax_conv(shape, mode, monkeypatch):
    """7x7 / stride 2 / pad 3 (and a 5x5 / pad 2): values, input and weight gradients, with the
    weight gradient as matmuls and as XLA's own (HMR_JAX_CONV_WEIGHT_GRAD)."""
    monkeypatch.setenv(cpu_kernels.WEIGHT_GRAD_ENV, mode)
    rng = np.random.default_rng(2)
    k = 7 if shape[-1] == 3 else 5
    pad = (k - 1) // 2
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, shape[-1], 8)), jnp.float32)

    op = lambda x, w: cpu_kernels.stem_conv(x, w, pad)  # noqa: E731
    assert _uses_matmul_grads(op, x, w) == (mode == "matmul")
    g, ref_grads = _assert_matches_lax_conv(op, x, w, 2, pad, rng)
    assert _rel(ref_grads[1], cpu_kernels.stem_filter_grad(x, g, k, pad)) < 1e-5


@pytest.mark.parametrize("mode", ["matmul", "xla"])
@pytest.mark.parametrize(
    "shape,stride", [((2, 56, 56, 4), 1), ((2, 56, 56, 4), 2), ((2, 14, 14, 6), 1), ((2, 15, 15, 6), 2)]
)
def test_conv3x3_matches_lax_conv(shape, stride, mode, monkeypatch):
    """Both matmul weight-gradient paths (per image im2col for >= 56x56 inputs, per tap below) and
    XLA's own (HMR_JAX_CONV_WEIGHT_GRAD)."""
    monkeypatch.setenv(cpu_kernels.WEIGHT_GRAD_ENV, mode)
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, shape[-1], 5)), jnp.float32)

    op = lambda x, w: cpu_kernels.conv3x3(x, w, stride)  # noqa: E731
    assert _uses_matmul_grads(op, x, w) == (mode == "matmul")
    g, ref_grads = _assert_matches_lax_conv(op, x, w, stride, 1, rng)
    assert _rel(ref_grads[1], cpu_kernels.conv3x3_filter_grad(x, g, stride)) < 1e-5


def test_matmul_weight_grads_choice():
    """HMR_JAX_CONV_WEIGHT_GRAD overrides; 'auto' (or unset) takes the matmuls on x86-64 without
    AVX-512 only; anything else is an error naming the variable."""
    env = cpu_kernels.WEIGHT_GRAD_ENV
    for machine in ("x86_64", "aarch64"):
        for avx512 in (False, True):
            assert cpu_kernels.matmul_weight_grads({env: "matmul"}, machine, avx512)
            assert not cpu_kernels.matmul_weight_grads({env: "XLA"}, machine, avx512)
    assert cpu_kernels.matmul_weight_grads({}, "x86_64", avx512=False)
    assert cpu_kernels.matmul_weight_grads({env: "auto"}, "AMD64", avx512=False)
    assert not cpu_kernels.matmul_weight_grads({}, "x86_64", avx512=True)
    assert not cpu_kernels.matmul_weight_grads({}, "arm64", avx512=False)
    assert isinstance(cpu_kernels.matmul_weight_grads(), bool)  # this machine, this environment
    with pytest.raises(ValueError, match=env):
        cpu_kernels.matmul_weight_grads({env: "fast"}, "x86_64", False)


def _ref_max_pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 10, 6, 2), (1, 7, 9, 2)])
def test_max_pool_matches_reduce_window(shape):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    y_ref, vjp_ref = jax.vjp(_ref_max_pool, x)
    y, vjp = jax.vjp(cpu_kernels.max_pool_3x3_s2, x)
    np.testing.assert_array_equal(y, y_ref)
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    np.testing.assert_allclose(jax.jit(vjp)(g)[0], vjp_ref(g)[0], rtol=1e-6, atol=1e-6)


def test_max_pool_gradient_splits_ties_among_maxima():
    x = jnp.zeros((1, 8, 8, 2)).at[0, 3:7, 3:7, :].set(1.0)  # plateaus: windows with tied maxima
    g = jnp.asarray(np.random.default_rng(4).standard_normal((1, 4, 4, 2)), jnp.float32)
    dx = jax.vjp(cpu_kernels.max_pool_3x3_s2, x)[1](g)[0]
    np.testing.assert_allclose(dx.sum(), g.sum(), rtol=1e-5)  # every window's gradient is kept
    # windows whose maximum is 1 send nothing to the zeros around the plateau
    win_max_one = _ref_max_pool(x) == 1.0
    plateau_grad = jnp.where(x == 1.0, dx, 0.0).sum()
    np.testing.assert_allclose(plateau_grad, jnp.where(win_max_one, g, 0.0).sum(), rtol=1e-5)


def _reference_forward(model, x):
    """The ResNet's training-mode forward with flax's BatchNorm and plain lax ops."""

    def conv(c, x):
        s, p = c.strides[0] if isinstance(c.strides, (tuple, list)) else c.strides, c.padding[0][0]
        return lax.conv_general_dilated(x, c.kernel[...], (s, s), ((p, p), (p, p)), dimension_numbers=_DN)

    def bn(b, x):
        return nnx.BatchNorm.__call__(b, x, use_running_average=False)

    x = jax.nn.relu(bn(model.bn1, conv(model.conv1, x)))
    x = _ref_max_pool(x)
    for s in range(1, 5):
        stage = getattr(model, f"layer{s}")
        for i in range(stage.num_blocks):
            blk = getattr(stage, f"block{i}")
            sc = x if blk.downsample_conv is None else bn(blk.downsample_bn, conv(blk.downsample_conv, x))
            y = jax.nn.relu(bn(blk.bn1, conv(blk.conv1, x)))
            if isinstance(blk, resnet.Bottleneck):
                y = jax.nn.relu(bn(blk.bn2, conv(blk.conv2, y)))
                y = bn(blk.bn3, conv(blk.conv3, y))
            else:
                y = bn(blk.bn2, conv(blk.conv2, y))
            x = jax.nn.relu(y + sc)
    return x.mean((1, 2))


def test_resnet_train_mode_matches_plain_reference():
    """Outputs, updated batch statistics and parameter gradients of the whole encoder: Bottleneck
    blocks, one per stage, 64 px, to keep compilation short (BasicBlock uses the same ops; the
    ops' other paths are tested one by one above)."""
    model = resnet.ResNet((1, 1, 1, 1), resnet.Bottleneck, width=4, rngs=nnx.Rngs(0))
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
    rng = np.random.default_rng(5)
    leaves, treedef = jax.tree_util.tree_flatten(params)  # move BN scale/bias off 1/0
    params = jax.tree_util.tree_unflatten(
        treedef, [p + 0.1 * rng.standard_normal(p.shape).astype(np.float32) for p in leaves]
    )
    x = jnp.asarray(rng.standard_normal((2, 64, 64, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, model.num_features)), jnp.float32)

    def loss(forward):
        def f(p, s):
            m = nnx.merge(graphdef, p, s)
            return (forward(m) * w).sum(), nnx.to_pure_dict(nnx.state(m, nnx.BatchStat))

        return f

    (l_ref, s_ref), g_ref = jax.jit(jax.value_and_grad(loss(lambda m: _reference_forward(m, x)), has_aux=True))(
        params, stats
    )
    (l_new, s_new), g_new = jax.jit(jax.value_and_grad(loss(lambda m: m(x, train=True)), has_aux=True))(params, stats)
    np.testing.assert_allclose(l_new, l_ref, rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(s_ref), jax.tree_util.tree_leaves(s_new)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    worst = max(_rel(a, b) for a, b in zip(jax.tree_util.tree_leaves(g_ref), jax.tree_util.tree_leaves(g_new)))
    assert worst < 1e-4
