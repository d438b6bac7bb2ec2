"""Exact equivalents of ResNet ops with hand-written gradients that are fast on XLA:CPU.

Ops whose XLA:CPU autodiff is slow, replaced by exact equivalents (benchmarks/train_step.py,
benchmarks/conv_layers.py): 1x1 convolutions as matmuls (`PointwiseConv`), the weight gradients
of the 3x3 convolutions (`conv3x3`, `Conv3x3`) and of the stem (`stem_conv`, `StemConv`) as
matmuls over patches (on CPUs where they pay: `matmul_weight_grads`), training-mode BatchNorm
fused with the residual add and ReLU (`BatchNorm`, `batch_norm_act`), and the max pool's gradient
as elementwise ops (`max_pool_3x3_s2`). Parameters, values and gradients are those of the plain
ops (tests/test_resnet_ops.py). The layers are drop-in `nnx.Conv` / `nnx.BatchNorm` subclasses.
"""

import functools
import os
import platform
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array


class PointwiseConv(nnx.Conv):
    """A 1x1 convolution computed as one matmul (strided: subsample first).

    Same parameters (kernel (1, 1, C, O)) and results as `nnx.Conv`; XLA:CPU computes the
    weight gradient of a 1x1 convolution 10-20x slower than that of the equivalent dot
    (benchmarks/train_step.py: the whole ResNet-50 step runs ~2x faster with this).
    """

    def __call__(self, inputs: Array) -> Array:
        s = self.strides[0] if isinstance(self.strides, (tuple, list)) else self.strides
        x = inputs[:, ::s, ::s] if s != 1 else inputs
        x, kernel = self.promote_dtype((x, self.kernel[...]), dtype=self.dtype)
        b, h, w, c = x.shape
        y = jnp.dot(x.reshape(b * h * w, c), kernel.reshape(c, -1), precision=self.precision)
        return _add_bias(self, y.reshape(b, h, w, -1))


def _add_bias(conv: nnx.Conv, y: Array) -> Array:
    """`y` plus the convolution's bias when it has one (use_bias=True), in the compute dtype."""
    return y if conv.bias is None else y + conv.bias[...].astype(y.dtype)


# ------------------------------------------------------------------------------ BatchNorm (train)
# Batch statistics, normalisation, optional residual add and ReLU as one op with a hand-written
# backward. XLA's autodiff of the textbook formula materialises x - mean, the normalised
# activations and the ReLU mask as separate passes over every activation; here the forward is
# one reduction pass (sum and sum of squares) and one elementwise pass, and the backward one
# reduction pass (sum of g and of g * (x - mean)) and one elementwise pass (dx = a g + k2 x + k3).


def _bn_stats(x: Array) -> tuple[Array, Array]:
    """Per-channel mean and (biased) variance over all but the last axis, in float32
    (flax's `use_fast_variance`: E[x^2] - E[x]^2, clipped at 0)."""
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(xf, axes)
    var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
    return mean, var


def _bn_act_fwd_impl(x, scale, bias, residual, eps, relu):
    mean, var = _bn_stats(x)
    rstd = jax.lax.rsqrt(var + eps)
    a = scale * rstd
    z = (x.astype(jnp.float32) - mean) * a + bias  # flax's order of operations
    if residual is not None:
        z = z + residual.astype(jnp.float32)
    y = (jnp.maximum(z, 0.0) if relu else z).astype(x.dtype)
    return y, mean, var, rstd, a


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def batch_norm_act(
    x: Array, scale: Array, bias: Array, residual: Array | None, eps: float, relu: bool
) -> tuple[Array, Array, Array]:
    """Training-mode BatchNorm over all axes but the last, then `+ residual` (if given) and ReLU
    (if `relu`): returns (y, batch mean, batch variance). Same values as flax's `BatchNorm`
    (fast variance) followed by the add and `nnx.relu`, gradients included (also through the
    returned statistics); y has x's dtype, the statistics are float32."""
    y, mean, var, _, _ = _bn_act_fwd_impl(x, scale, bias, residual, eps, relu)
    return y, mean, var


def _batch_norm_act_fwd(x, scale, bias, residual, eps, relu):
    y, mean, var, rstd, a = _bn_act_fwd_impl(x, scale, bias, residual, eps, relu)
    # y is saved for the ReLU mask (y > 0 iff the pre-activation > 0): it is the next layer's
    # input, kept for that layer's weight gradient anyway.
    res = (
        x,
        y if relu else None,
        scale,
        mean,
        rstd,
        a,
        None if residual is None else jnp.zeros((), residual.dtype),
    )  # marks residual + dtype
    return (y, mean, var), res


def _batch_norm_act_bwd(eps, relu, res, cts):
    del eps
    x, y, scale, mean, rstd, a, residual_marker = res
    gy, gmean, gvar = cts
    g = gy.astype(jnp.float32)
    if relu:
        g = jnp.where(y > 0, g, 0.0)
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    # The barrier keeps XLA from sharing x - mean with the forward pass (CSE), which would
    # materialise it as an extra full-size array.
    x, mean = jax.lax.optimization_barrier((x, mean))
    xf = x.astype(jnp.float32)
    sum_g = jnp.sum(g, axes)  # = d bias
    sum_gxc = jnp.sum(g * (xf - mean), axes)
    d_scale = sum_gxc * rstd  # sum(g * xhat)
    # dx = a (g - sum_g / n - xhat sum(g xhat) / n) + gmean / n + gvar 2 (x - mean) / n
    #    = a g + k2 x + k3  (x - mean not formed outside the reduction: one pass fewer)
    k2 = 2.0 * gvar / n - a * rstd * d_scale / n
    k3 = gmean / n - a * sum_g / n - k2 * mean
    dx = (a * g + k2 * xf + k3).astype(x.dtype)
    d_res = None if residual_marker is None else g.astype(residual_marker.dtype)
    return dx, d_scale.astype(scale.dtype), sum_g.astype(scale.dtype), d_res


batch_norm_act.defvjp(_batch_norm_act_fwd, _batch_norm_act_bwd)


class BatchNorm(nnx.BatchNorm):
    """`nnx.BatchNorm` (same parameters, statistics and results) over the last axis whose call
    also takes the block's residual and ReLU: `bn(x, ura, residual=r, relu=True)` ==
    `relu(nnx.BatchNorm(x) + r)`. In training mode this runs `batch_norm_act` (a fused op with a
    hand-written backward); with running averages it is flax's own."""

    def __call__(
        self, x: Array, use_running_average: bool | None = None, *, residual: Array | None = None, relu: bool = False
    ) -> Array:
        ura = self.use_running_average if use_running_average is None else use_running_average
        if ura:
            y = super().__call__(x, use_running_average=True)
            if residual is not None:
                y = y + residual
            return nnx.relu(y) if relu else y
        if self.axis not in (-1, x.ndim - 1) or self.axis_name is not None:
            raise NotImplementedError("cpu_kernels.BatchNorm: training mode supports axis=-1 without axis_name")
        x = x.astype(self.dtype) if self.dtype is not None else x
        y, mean, var = batch_norm_act(x, self.scale[...], self.bias[...], residual, self.epsilon, relu)
        m = self.momentum
        self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
        self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var)
        return y


# ------------------------------------------------------------------------- convolution weight gradients

WEIGHT_GRAD_ENV = "HMR_JAX_CONV_WEIGHT_GRAD"
WEIGHT_GRAD_MODES = ("auto", "matmul", "xla")


def _cpu_has_avx512() -> bool:
    from numpy._core._multiarray_umath import __cpu_features__  # pylint: disable=g-import-not-at-top

    return bool(__cpu_features__.get("AVX512F"))


def matmul_weight_grads(
    environ: Mapping[str, str] | None = None, machine: str | None = None, avx512: bool | None = None
) -> bool:
    """Whether `stem_conv` and `conv3x3` compute their weight gradients on CPU as matmuls over
    patches (`stem_filter_grad`, `conv3x3_filter_grad`) rather than with XLA's own
    backward-filter convolution. Decided when a step is traced, from the environment variable
    HMR_JAX_CONV_WEIGHT_GRAD: 'matmul', 'xla', or 'auto' (unset): the matmuls on x86-64 CPUs
    without AVX-512, where XLA:CPU's backward-filter convolution was the slow part of a step
    (AVX2: ResNet-50's stem 333 vs 51 ms, its 3x3 layers 1.1-1.3x; benchmarks/conv_layers.py),
    XLA's own elsewhere (AVX-512: its 3x3 weight gradients ran 1.9x faster than the matmuls at
    ResNet-50's first stage, and the whole training step 1.1-1.2x faster; other CPUs: unmeasured,
    so XLA's, the default of any JAX program). The arguments (default: this process) are for tests."""
    environ = os.environ if environ is None else environ
    mode = environ.get(WEIGHT_GRAD_ENV, "auto").strip().lower() or "auto"
    if mode not in WEIGHT_GRAD_MODES:
        raise ValueError(f"{WEIGHT_GRAD_ENV}: expected one of {WEIGHT_GRAD_MODES}, found {mode!r}")
    if mode != "auto":
        return mode == "matmul"
    machine = (platform.machine() if machine is None else machine).lower()
    if machine not in ("x86_64", "amd64"):
        return False
    return not (_cpu_has_avx512() if avx512 is None else avx512)


def _weight_grad(x: Array, g: Array, matmul, xla) -> Array:
    """A convolution's weight gradient: `matmul(x, g)` on the CPUs of `matmul_weight_grads`,
    `xla(x, g)` (XLA's backward-filter convolution) everywhere else."""
    if not matmul_weight_grads():
        return xla(x, g)
    return jax.lax.platform_dependent(x, g, cpu=matmul, default=xla)


# ----------------------------------------------------------------------------- stem convolution

_DN = ("NHWC", "HWIO", "NHWC")


def _conv_nhwc(x: Array, w: Array, stride: int, pad: int) -> Array:
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=_DN)


def _sum_over_images(fn, xs, shape):
    """sum_b fn(xs[b]) as a loop with a float32 accumulator (`lax.scan`): one image's buffers
    at a time, reused across iterations."""

    def body(acc, x):
        return acc + fn(x), None

    return jax.lax.scan(body, jnp.zeros(shape, jnp.float32), xs)[0]


def stem_filter_grad(x: Array, g: Array, k: int, pad: int) -> Array:
    """Weight gradient (k, k, C, O) of a k x k / stride-2 convolution of x (B, H, W, C) with
    symmetric padding `pad`, given the output cotangent g (B, Ho, Wo, O), as matmuls.

    XLA:CPU's backward-filter convolution is slow for the few-channel stem (~8 GFLOP/s; torch
    ~35). Here, one image at a time (`lax.scan`: small buffers, reused), the k*k*C rows of the
    patch matrix are built channel-major: the padded image is split into its 2x2 stride phases
    (C, H/2, W/2 planes), each patch row is a contiguous shifted window of one plane, and
    dW += patches (k*k*C, Ho*Wo) @ g_b (Ho*Wo, O)."""
    b, h, w, c = x.shape
    ho, wo, o = g.shape[1], g.shape[2], g.shape[3]
    half = (k - 1) // 2  # largest plane offset m of a tap 2m + q
    hp, wp = 2 * (ho + half), 2 * (wo + half)  # padded sizes: even, and cover every tap's window
    xp = jnp.pad(x, ((0, 0), (pad, hp - h - pad), (pad, wp - w - pad), (0, 0)))
    planes = xp.reshape(b, hp // 2, 2, wp // 2, 2, c).transpose(0, 2, 4, 5, 1, 3)  # (B, 2, 2, C, H/2, W/2)

    def one_image(args):
        pl, gi = args  # (2, 2, C, H/2, W/2), (Ho, Wo, O)
        rows = [
            pl[kh % 2, kw % 2, :, kh // 2 : kh // 2 + ho, kw // 2 : kw // 2 + wo] for kh in range(k) for kw in range(k)
        ]  # each (C, Ho, Wo)
        patches = jnp.stack(rows).reshape(k * k * c, ho * wo)
        return jnp.dot(patches, gi.reshape(ho * wo, o), preferred_element_type=jnp.float32)

    return _sum_over_images(one_image, (planes, g), (k * k * c, o)).reshape(k, k, c, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def stem_conv(x: Array, w: Array, pad: int) -> Array:
    """k x k / stride-2 convolution (NHWC, HWIO kernel, symmetric padding) whose weight gradient
    is `stem_filter_grad` on the CPUs of `matmul_weight_grads`; values and input gradient (and the
    weight gradient elsewhere) are XLA's convolution's."""
    return _conv_nhwc(x, w, 2, pad)


def _stem_conv_fwd(x, w, pad):
    return _conv_nhwc(x, w, 2, pad), (x, w)


def _stem_conv_bwd(pad, res, g):
    x, w = res
    dx = jax.vjp(lambda x_: _conv_nhwc(x_, w, 2, pad), x)[1](g)[0]  # dead code for the image input
    dw = _weight_grad(
        x,
        g,
        lambda x, g: stem_filter_grad(x, g, w.shape[0], pad).astype(w.dtype),
        lambda x, g: jax.vjp(lambda w_: _conv_nhwc(x, w_, 2, pad), w)[1](g)[0],
    )
    return dx, dw


stem_conv.defvjp(_stem_conv_fwd, _stem_conv_bwd)


class StemConv(nnx.Conv):
    """The stride-2 stem convolution (same parameters and results as `nnx.Conv`) through
    `stem_conv`: its weight gradient is a matmul over channel-major patches where that pays."""

    def __call__(self, inputs: Array) -> Array:
        x, kernel = self.promote_dtype((inputs, self.kernel[...]), dtype=self.dtype)
        return stem_conv(x, kernel, self.padding[0][0])


# --------------------------------------------------------------------------- 3x3 convolutions


def conv3x3_filter_grad(x: Array, g: Array, stride: int) -> Array:
    """Weight gradient (3, 3, C, O) of a 3x3 convolution (padding 1, `stride`) of x (B, H, W, C)
    given the output cotangent g (B, Ho, Wo, O), as matmuls (XLA:CPU's backward-filter
    convolution runs these at 1.3-2.5x the time; benchmarks/conv_layers.py).

    Large inputs (H*W >= 56*56: ResNet's first two stages) go one image at a time (`lax.scan`,
    small reused buffers): patches (Ho*Wo, 9C)^T @ g_b (Ho*Wo, O). Smaller ones take one
    (B*Ho*Wo, C)^T @ (B*Ho*Wo, O) matmul per tap."""
    b, h, w, c = x.shape
    ho, wo, o = g.shape[1], g.shape[2], g.shape[3]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    contract0 = (((0,), (0,)), ((), ()))

    def tap(xi, i, j):  # the input window that tap (i, j) sees
        return xi[..., i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]

    if h * w >= 56 * 56:

        def one_image(args):
            xi, gi = args  # (H+2, W+2, C), (Ho, Wo, O)
            patches = jnp.concatenate([tap(xi, i, j) for i in range(3) for j in range(3)], -1)
            return jax.lax.dot_general(
                patches.reshape(ho * wo, 9 * c), gi.reshape(ho * wo, o), contract0, preferred_element_type=jnp.float32
            )

        dw = _sum_over_images(one_image, (xp, g), (9 * c, o))
    else:
        g2 = g.reshape(b * ho * wo, o)
        dw = jnp.stack(
            [
                jax.lax.dot_general(
                    tap(xp, i, j).reshape(b * ho * wo, c), g2, contract0, preferred_element_type=jnp.float32
                )
                for i in range(3)
                for j in range(3)
            ]
        )
    return dw.reshape(3, 3, c, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: Array, w: Array, stride: int) -> Array:
    """3x3 convolution, padding 1 (NHWC, HWIO kernel) whose weight gradient is
    `conv3x3_filter_grad` on the CPUs of `matmul_weight_grads`; values and input gradient (and the
    weight gradient elsewhere) are XLA's convolution's."""
    return _conv_nhwc(x, w, stride, 1)


def _conv3x3_fwd(x, w, stride):
    return _conv_nhwc(x, w, stride, 1), (x, w)


def _conv3x3_bwd(stride, res, g):
    x, w = res
    dx = jax.vjp(lambda x_: _conv_nhwc(x_, w, stride, 1), x)[1](g)[0]
    dw = _weight_grad(
        x,
        g,
        lambda x, g: conv3x3_filter_grad(x, g, stride).astype(w.dtype),
        lambda x, g: jax.vjp(lambda w_: _conv_nhwc(x, w_, stride, 1), w)[1](g)[0],
    )
    return dx, dw


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


class Conv3x3(nnx.Conv):
    """A 3x3 / padding-1 convolution (same parameters and results as `nnx.Conv`) through
    `conv3x3`: its weight gradient is computed with matmuls where that pays."""

    def __call__(self, inputs: Array) -> Array:
        s = self.strides[0] if isinstance(self.strides, (tuple, list)) else self.strides
        x, kernel = self.promote_dtype((inputs, self.kernel[...]), dtype=self.dtype)
        return _add_bias(self, conv3x3(x, kernel, s))


def _max_pool_slices(x: Array) -> Array:
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    ho, wo = (xp.shape[1] - 3) // 2 + 1, (xp.shape[2] - 3) // 2 + 1
    out = None
    for i in range(3):
        for j in range(3):
            v = xp[:, i : i + 2 * (ho - 1) + 1 : 2, j : j + 2 * (wo - 1) + 1 : 2]
            out = v if out is None else jnp.maximum(out, v)
    return out


@jax.custom_vjp
def _max_pool_even(x: Array) -> Array:
    return _max_pool_slices(x)


def _max_pool_even_fwd(x):
    out = _max_pool_slices(x)
    return out, (x, out)


def _max_pool_even_bwd(res, g):
    # Input row 2t (phase 0) lies in window t only; row 2t + 1 (phase 1) in windows t and t + 1
    # (same for columns). Each window's gradient is split equally among its maxima.
    x, out = res
    b, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    ties = sum(
        (xp[:, i : i + 2 * ho : 2, j : j + 2 * wo : 2] == out).astype(g.dtype) for i in range(3) for j in range(3)
    )
    gs = jnp.pad(g / ties, ((0, 0), (0, 1), (0, 1), (0, 0)))  # window t + 1 past the edge: 0
    outp = jnp.pad(out, ((0, 0), (0, 1), (0, 1), (0, 0)))
    x6 = x.reshape(b, ho, 2, wo, 2, c)
    phases = []
    for ph in range(2):
        row = []
        for pw in range(2):
            xph = x6[:, :, ph, :, pw]
            d = 0.0
            for dr in range(ph + 1):
                for dc in range(pw + 1):
                    win = (slice(None), slice(dr, dr + ho), slice(dc, dc + wo))
                    d = d + jnp.where(xph == outp[win], gs[win], 0.0)
            row.append(d)
        phases.append(jnp.stack(row, axis=3))  # (B, Ho, Wo, 2, C)
    return (jnp.stack(phases, axis=2).reshape(b, h, w, c).astype(x.dtype),)


_max_pool_even.defvjp(_max_pool_even_fwd, _max_pool_even_bwd)


def max_pool_3x3_s2(x: Array) -> Array:
    """torchvision's 3x3 / stride-2 / pad-1 max pool (NHWC) as the max of 9 strided slices.

    For even H and W the gradient is hand-written: each window's gradient goes to its maxima
    (split equally among ties), computed per 2x2 stride phase of the input with elementwise
    ops only (XLA:CPU's select-and-scatter, the gradient of a reduce_window max, is ~6x slower,
    and autodiff of the 9-slice max ~3x)."""
    if x.shape[1] % 2 or x.shape[2] % 2:
        return _max_pool_slices(x)
    return _max_pool_even(x)
