"""Per-layer profile of ResNet-50's convolutions: JAX (XLA:CPU) vs PyTorch, forward and backward.

    python benchmarks/conv_layers.py [--batch 8] [--img-size 224] [--rounds 5] [--only stem,l1,...]
        [--impls jax,torch,...]

For every distinct convolution shape of ResNet-50 at the given batch and image size, times
  fwd     y = conv(x, w)
  bwd_x   the input gradient  (vjp w.r.t. x; "backward data")
  bwd_w   the weight gradient (vjp w.r.t. w; "backward filter")
for JAX (each piece a separate jitted function, NHWC / HWIO as in hmr_jax.models.cpu_kernels) and for
PyTorch (NCHW, `torch.ops.aten.convolution_backward` with one output mask, which is what autograd
runs), round-robin, and prints the median milliseconds, GFLOP/s and the time summed over the
network (a shape times its number of occurrences). `jax_matmul` is what hmr_jax.models.cpu_kernels
runs where `cpu_kernels.matmul_weight_grads` says so (forced here with HMR_JAX_CONV_WEIGHT_GRAD=matmul;
`cpu_kernels.stem_conv`, `cpu_kernels.conv3x3`: XLA's forward and input gradient, the weight
gradient as matmuls).

Then, unless --no-elementwise, training-mode BatchNorm + ReLU (forward, and forward + backward)
at ResNet-50's two largest activation shapes, and the 3x3 / stride-2 max pool: flax's
`nnx.BatchNorm` + `nnx.relu` and `lax.reduce_window` / autodiff of the 9-slice max against
`cpu_kernels.batch_norm_act` and `cpu_kernels.max_pool_3x3_s2`, and torch (`F.batch_norm` + `relu`,
`F.max_pool2d`, NCHW).

Measured here (2 shared AVX2 cores, load 1.5-2.0, batch 8, 224 px, medians of 3;
`python benchmarks/conv_layers.py --rounds 3 --only stem7x7s2,l1_3x3,l3_3x3`), ms:
  stem weight gradient: XLA 333, cpu_kernels.stem_conv 51, torch 47;
  3x3 weight gradients, layer1 / layer3 shapes: XLA 81 / 35, cpu_kernels.conv3x3 71 / 27, torch 58 / 34;
  those three shapes summed over the network (fwd + bwd_x + bwd_w): XLA 1385, ours 960, torch 1150;
  BatchNorm + ReLU fwd+bwd at (8, 56, 56, 256): flax 67, batch_norm_act 20, torch 56;
  max pool fwd+bwd: reduce_window 225, 9-slice autodiff 58, max_pool_3x3_s2 54, torch 63.
On an AMD EPYC with AVX-512 (load 1.3-1.4; `--no-elementwise`), weight
gradients: stem XLA 63.6, matmuls 29.7, torch 13.5; layer1 / layer3 3x3: XLA 21.3 / 15.8, matmuls
40.2 / 15.3, torch 12.0 / 13.9; the network's k > 1 convolutions in all: XLA 600, matmuls 622,
torch 385. Hence `cpu_kernels.matmul_weight_grads`: XLA's own on AVX-512.
"""

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hmr_jax.models import cpu_kernels

DN = ("NHWC", "HWIO", "NHWC")


def conv_shapes(b, s):
    """(name, x shape NHWC, kernel, cin, cout, stride, count) of ResNet-50's k>1 convolutions."""
    q = s // 4
    return [
        ("stem7x7s2", (b, s, s, 3), 7, 3, 64, 2, 1),
        ("l1_3x3", (b, q, q, 64), 3, 64, 64, 1, 3),
        ("l2_3x3s2", (b, q, q, 128), 3, 128, 128, 2, 1),
        ("l2_3x3", (b, q // 2, q // 2, 128), 3, 128, 128, 1, 3),
        ("l3_3x3s2", (b, q // 2, q // 2, 256), 3, 256, 256, 2, 1),
        ("l3_3x3", (b, q // 4, q // 4, 256), 3, 256, 256, 1, 5),
        ("l4_3x3s2", (b, q // 4, q // 4, 512), 3, 512, 512, 2, 1),
        ("l4_3x3", (b, q // 8, q // 8, 512), 3, 512, 512, 1, 2),
    ]


def plain_conv(x, w, stride):
    p = (w.shape[0] - 1) // 2
    return lax.conv_general_dilated(x, w, (stride, stride), ((p, p), (p, p)), dimension_numbers=DN)


def jax_pieces(conv):
    """jitted fwd, bwd_x, bwd_w of conv(x, w)."""
    fwd = jax.jit(conv)
    bwd_x = jax.jit(lambda x, w, g: jax.vjp(lambda x_: conv(x_, w), x)[1](g)[0])
    bwd_w = jax.jit(lambda x, w, g: jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0])
    return {"fwd": fwd, "bwd_x": bwd_x, "bwd_w": bwd_w}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated layer names (default: all)")
    ap.add_argument(
        "--impls",
        default="jax,jax_matmul,torch",
        help="jax (plain lax conv), jax_matmul (hmr_jax.models.resnet's weight "
        "gradients as matmuls), torch, torch_cl (channels_last)",
    )
    ap.add_argument("--no-elementwise", action="store_true", help="skip the BatchNorm + ReLU and max pool rows")
    ap.add_argument("--torch-threads", type=int, default=2)
    args = ap.parse_args()
    impls = args.impls.split(",")
    os.environ[cpu_kernels.WEIGHT_GRAD_ENV] = "matmul"  # jax_matmul's weight gradients on any CPU
    shapes = conv_shapes(args.batch, args.img_size)
    if args.only:
        shapes = [s for s in shapes if s[0] in args.only.split(",")]
    print(f"jax {jax.__version__}, batch {args.batch}, {args.img_size} px, load {os.getloadavg()[0]:.2f}", flush=True)

    torch = None
    if any(i.startswith("torch") for i in impls):
        import torch  # pylint: disable=g-import-not-at-top

        torch.set_num_threads(args.torch_threads)

    totals = {}
    for name, xs, k, cin, cout, stride, count in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(xs).astype(np.float32)
        w = (rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
        p = (k - 1) // 2
        ho = (xs[1] + 2 * p - k) // stride + 1
        g = rng.standard_normal((xs[0], ho, ho, cout)).astype(np.float32)
        flops = 2 * xs[0] * ho * ho * k * k * cin * cout
        fns = {}  # (impl, piece) -> callable
        for impl in impls:
            if impl in ("jax", "jax_matmul"):
                if impl == "jax":
                    conv = lambda x_, w_, s=stride: plain_conv(x_, w_, s)  # noqa: E731
                elif name.startswith("stem"):  # jax_matmul
                    conv = lambda x_, w_, p=p: cpu_kernels.stem_conv(x_, w_, p)  # noqa: E731
                else:
                    conv = lambda x_, w_, s=stride: cpu_kernels.conv3x3(x_, w_, s)  # noqa: E731
                xj, wj, gj = map(jnp.asarray, (x, w, g))
                for piece, f in jax_pieces(conv).items():
                    call = (
                        (lambda f=f: f(xj, wj).block_until_ready())
                        if piece == "fwd"
                        else (lambda f=f: f(xj, wj, gj).block_until_ready())
                    )
                    call()  # compile
                    fns[(impl, piece)] = call
            elif impl in ("torch", "torch_cl"):
                mf = torch.channels_last if impl == "torch_cl" else torch.contiguous_format
                xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous(memory_format=mf)
                wt = torch.tensor(w).permute(3, 2, 0, 1).contiguous(memory_format=mf)
                gt = torch.tensor(g).permute(0, 3, 1, 2).contiguous(memory_format=mf)
                cb = torch.ops.aten.convolution_backward

                def tb(mask, xt=xt, wt=wt, gt=gt, s=stride, p=p):
                    with torch.no_grad():
                        return cb(gt, xt, wt, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)

                fns[(impl, "fwd")] = lambda xt=xt, wt=wt, s=stride, p=p: torch.nn.functional.conv2d(
                    xt, wt, stride=s, padding=p
                )
                fns[(impl, "bwd_x")] = lambda tb=tb: tb([True, False, False])
                fns[(impl, "bwd_w")] = lambda tb=tb: tb([False, True, False])
                for f in list(fns.values())[-3:]:
                    with torch.no_grad():
                        f()
        times = {key: [] for key in fns}
        for _ in range(args.rounds):
            for key, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[key].append(time.perf_counter() - t0)
        for (impl, piece), ts in times.items():
            med = statistics.median(ts)
            totals[(impl, piece)] = totals.get((impl, piece), 0.0) + count * med
        for impl in impls:
            line = "  ".join(
                f"{piece} {statistics.median(times[(impl, piece)]) * 1e3:7.1f} ms "
                f"({flops / statistics.median(times[(impl, piece)]) / 1e9:5.0f} GF/s)"
                for piece in ("fwd", "bwd_x", "bwd_w")
            )
            print(f"{name:>10} x{count} {impl:>9}: {line}", flush=True)
    print(f"\nsummed over ResNet-50's k>1 convolutions (ms per step); load {os.getloadavg()[0]:.2f}")
    for impl in impls:
        parts = [totals[(impl, p)] * 1e3 for p in ("fwd", "bwd_x", "bwd_w")]
        print(f"{impl:>9}: fwd {parts[0]:7.0f}  bwd_x {parts[1]:7.0f}  bwd_w {parts[2]:7.0f}  total {sum(parts):7.0f}")
    if not args.no_elementwise:
        elementwise_rows(args, torch)


def _median_ms(fns, rounds):
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def elementwise_rows(args, torch):
    """BatchNorm + ReLU and max pool, forward (fwd) and forward + backward (fwd+bwd)."""
    from flax import nnx  # pylint: disable=g-import-not-at-top

    b, q = args.batch, args.img_size // 4
    print(f"\nms, median of {args.rounds}; load {os.getloadavg()[0]:.2f}")
    for shape in [(b, 2 * q, 2 * q, 64), (b, q, q, 256)]:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        g = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        c = shape[-1]
        scale, bias = jnp.ones((c,)), jnp.zeros((c,))

        def flax_bn(x, scale, bias):
            bn = nnx.BatchNorm(c, epsilon=1e-5, rngs=nnx.Rngs(0))
            bn.scale[...], bn.bias[...] = scale, bias
            return nnx.relu(bn(x, use_running_average=False))

        def fused_bn(x, scale, bias):
            return cpu_kernels.batch_norm_act(x, scale, bias, None, 1e-5, True)[0]

        fns = {}
        for name, f in (("flax BatchNorm+relu", flax_bn), ("cpu_kernels.batch_norm_act", fused_bn)):
            fwd = jax.jit(f)
            both = jax.jit(lambda x, s_, b_, g_, f=f: jax.vjp(f, x, s_, b_)[1](g_))
            fns[(name, "fwd")] = lambda fwd=fwd: jax.block_until_ready(fwd(x, scale, bias))
            fns[(name, "fwd+bwd")] = lambda both=both: jax.block_until_ready(both(x, scale, bias, g))
        if torch is not None:
            xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
            gt = torch.tensor(np.asarray(g)).permute(0, 3, 1, 2).contiguous()
            wt, bt = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)

            def tfwd():
                with torch.no_grad():
                    return torch.relu(torch.nn.functional.batch_norm(xt, None, None, wt, bt, True, 0.1, 1e-5))

            def tboth():
                y = torch.relu(torch.nn.functional.batch_norm(xt, None, None, wt, bt, True, 0.1, 1e-5))
                return torch.autograd.grad(y, (xt, wt, bt), gt)

            fns[("torch", "fwd")], fns[("torch", "fwd+bwd")] = tfwd, tboth
        for f in fns.values():
            f()
        med = _median_ms(fns, args.rounds)
        for name in dict.fromkeys(k[0] for k in fns):
            print(
                f"BatchNorm+ReLU {str(shape):>18} {name:>22}: fwd {med[(name, 'fwd')]:7.1f}  "
                f"fwd+bwd {med[(name, 'fwd+bwd')]:7.1f}"
            )

    shape = (b, 2 * q, 2 * q, 64)
    x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
    g = jnp.asarray(np.random.default_rng(2).standard_normal((b, q, q, 64)), jnp.float32)

    def reduce_window(x):
        return jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
        )

    fns = {}
    for name, f in (
        ("lax.reduce_window", reduce_window),
        ("9-slice max (autodiff)", cpu_kernels._max_pool_slices),
        ("cpu_kernels.max_pool_3x3_s2", cpu_kernels.max_pool_3x3_s2),
    ):
        fwd = jax.jit(f)
        both = jax.jit(lambda x, g_, f=f: jax.vjp(f, x)[1](g_))
        fns[(name, "fwd")] = lambda fwd=fwd: jax.block_until_ready(fwd(x))
        fns[(name, "fwd+bwd")] = lambda both=both: jax.block_until_ready(both(x, g))
    if torch is not None:
        xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        gt = torch.tensor(np.asarray(g)).permute(0, 3, 1, 2).contiguous()

        def tfwd():
            with torch.no_grad():
                return torch.nn.functional.max_pool2d(xt, 3, 2, 1)

        fns[("torch", "fwd")] = tfwd
        fns[("torch", "fwd+bwd")] = lambda: torch.autograd.grad(torch.nn.functional.max_pool2d(xt, 3, 2, 1), xt, gt)
    for f in fns.values():
        f()
    med = _median_ms(fns, args.rounds)
    for name in dict.fromkeys(k[0] for k in fns):
        print(
            f"max pool 3x3/2 {str(shape):>18} {name:>22}: fwd {med[(name, 'fwd')]:7.1f}  "
            f"fwd+bwd {med[(name, 'fwd+bwd')]:7.1f}"
        )


if __name__ == "__main__":
    main()
