"""Full HMR training step, images/s: hmr_jax (jit, the trainer's real train_step) vs PyTorch.

    python benchmarks/train_step.py [--batch 8] [--img-size 224] [--steps 3] [--depth 50]
        [--dtype float32|bfloat16] [--variants default] [--no-torch]
    python benchmarks/train_step.py --config quickstart --no-torch --steps 20   # the quickstart's step

One step = ResNet encoder (train mode BatchNorm), 5 regressor iterations (2 x FC-1024 +
dropout 0.5), SMPL forward of the prediction and of the ground truth, every loss of
configs/h36m_hmr.py (vertex L2/L1, beta, pose, 3D joints, 2D joints, adversarial), the Adam
update of the generator and the Adam update of the 25 discriminators (23 per joint, whole pose,
shape; LSGAN, fed every regressor iteration as fakes and the batch's GT as reals).

The PyTorch side is plain torch.nn (torchvision is not installable): the same ResNet (v1.5,
NCHW), regressor and discriminators (benchmarks/torch_hmr.py, shared with inference.py), the
losses and optimisers written here; SMPL through `smplx.lbs.lbs`. torch runs on 2 threads.
Both use the same SMPL-sized body model (random SMPL-sized arrays: 6890 vertices, 10 shape and
207 pose directions; `--body default` takes hmr_jax.body_model's procedural model instead).

The implementations are timed round-robin (one step of each per round), so load from other
processes on the machine hits all of them alike; the median step time of each is reported.
JAX variants (`--variants`) are the same train_step compiled with different XLA compiler
options (see VARIANTS), each with its own state, all in the same process; the suffix
`+bf16` runs the encoder in bfloat16, `+matmul` / `+xla` traces the step with the convolutions'
weight gradients as matmuls / as XLA's own (HMR_JAX_CONV_WEIGHT_GRAD, `cpu_kernels.matmul_weight_grads`;
default: that function's choice for this CPU). Each JAX variant prints its loss after the first
step (same init, same batch: the variants must agree).

Measured here (2 shared AVX2 cores, batch 8, 224 px, ResNet-50, float32, jax 0.10.2, torch 2.13;
`python benchmarks/train_step.py --steps 9`, 9 round-robin steps, medians):
- load 1.6-1.7 (one other process): jax 2.50 s/step = 3.21 images/s, torch 2.48 s = 3.22
  images/s: 1.00x (parity); CPU s per step jax 4.72, torch 4.93. Trace + compile 49.7 CPU s
  (35 s wall); 52-57 CPU s (43-56 s wall) at load 2.4-3.5, ~6 CPU s more than before the
  hand-written gradients below.
- load 3.0-3.4: jax 1.65 images/s, torch 0.68 (torch's threads degrade badly under load): 2.4x;
  load 2.4-3.5: 1.17 vs 0.52, 2.3x.
- the machine ~25 % slower for both than above (load 1.9): jax 3.30 s/step, torch
  2.97: 0.90x with glibc's huge pages (both sides: the script re-executes itself with the tunable,
  `hmr_jax.hugepages`); 3.58 vs 3.16 s, 0.88x, with HMR_JAX_HUGEPAGES=0. The quickstart's step
  (`--config quickstart --no-torch --steps 25 --body default`): 0.177 s with huge pages, 0.224 s
  without (180 vs 143 images/s).
- one core each (`taskset -c 1 python benchmarks/train_step.py --steps 5 --torch-threads 1`,
  load 1.5-1.9): jax 4.57 s/step, torch 4.26 s: 0.93x.
- an AMD EPYC with AVX-512 (load 1.5-1.7): jax 1.99 s/step, torch 2.02:
  1.01x (1.06x per CPU-s); another run with `--variants default,default+matmul --steps 7`: 1.12x,
  the matmul weight gradients 1.05x. There XLA's own weight gradients are the faster ones
  (`cpu_kernels.matmul_weight_grads` picks them on AVX-512), and without `--settle` the JAX step timed
  right after a torch step took 2.85 s instead of 1.98: the runs above this line, made without it,
  understate JAX.
How: models/resnet.py computes 1x1 convolutions as matmuls and the max pool as slices (0.87 ->
1.51 images/s at load 3), then fused training-mode BatchNorm + residual + ReLU with a
hand-written backward, the weight gradients of the 3x3 and stem convolutions as matmuls over
patches and an elementwise max-pool gradient (another 1.25x: 5.17 -> 4.12 s/step at load 2.3,
6.05 -> 4.93 CPU s; per-layer timings in benchmarks/conv_layers.py). In single-op
micro-benchmarks (ResNet-50's 1x1 dots and 3x3 convolutions) the XLA:CPU options no_xnnpack,
onednn and fast_runtime changed nothing beyond the noise, so none is set by default; an encoder
in bfloat16 does not pay on this CPU (no native bf16 matmul: a 25088x256x64 dot takes 17 ms in
bf16, 12 ms in float32).
"""

import argparse
import functools
import os
import pathlib
import statistics
import tempfile
import time
from unittest import mock

import jax
import numpy as np
from smpl_forward import smpl_sized_arrays  # benchmarks/ is on sys.path when run as a script
from timing import round_robin

from hmr_jax import config_files, hugepages, steps
from hmr_jax import state as state_lib
from hmr_jax.data import setup as data_setup
from hmr_jax.models import cpu_kernels

REPO = pathlib.Path(__file__).resolve().parents[1]

_ALL_LIBRARY_FUSIONS = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"
# XLA compiler options per variant (passed to `Lowered.compile`; same effect as XLA_FLAGS).
VARIANTS = {
    "default": {},
    "fast_math": {"xla_cpu_enable_fast_math": True},
    "onednn": {"xla_cpu_use_onednn": True},
    "onednn_cc": {"xla_cpu_experimental_onednn_custom_call": True},
    "no_xnnpack": {"xla_cpu_use_xnnpack": False},
    "xnn_dot": {"xla_cpu_experimental_xnn_fusion_type": _ALL_LIBRARY_FUSIONS},
    "xnn_graph": {"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
    "ynn": {"xla_cpu_experimental_ynn_fusion_type": _ALL_LIBRARY_FUSIONS},
    "no_eigen_mt": {"xla_cpu_multi_thread_eigen": False},
    "vec512": {"xla_cpu_prefer_vector_width": 512},
    "fast_compile": {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"},
    "fast_runtime": {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_RUNTIME"},
}


def load_config(args):
    """configs/<args.config>.py with the batch, size, depth and dtype given on the command line
    (each left None keeps the config's own; the defaults fill in for h36m_hmr)."""
    c = config_files.load(REPO / "configs" / f"{args.config}.py")
    defaults = {"batch": 8, "img_size": 224, "depth": 50, "dtype": "float32"} if args.config == "h36m_hmr" else {}
    for arg, key in (
        ("batch", "data.batch_size"),
        ("img_size", "data.img_size"),
        ("depth", "model.depth"),
        ("dtype", "model.dtype"),
    ):
        value = getattr(args, arg) if getattr(args, arg) is not None else defaults.get(arg)
        if value is not None:
            group, name = key.split(".")
            c[group][name] = value
    return c


def make_batch(b, img_size, smpl_host, seed=0):
    """A random but well-formed batch (GT joints/keypoints from the body model)."""
    from hmr_jax import geometry, smpl  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(seed)
    pose = (0.3 * rng.standard_normal((b, 72))).astype(np.float32)
    pose[:, :3] = [np.pi, 0.0, 0.0]
    shape = rng.standard_normal((b, 10)).astype(np.float32)
    joints = np.asarray(smpl.forward(smpl_host, shape, pose).joints)
    joints = joints - joints[:, :1]
    cam = np.broadcast_to(np.array([0.9, 0.0, 0.2], np.float32), (b, 3))
    xy = (np.asarray(geometry.weak_perspective_project(joints, cam)) + 1.0) * img_size / 2.0
    ones = np.ones((b, 24, 1), np.float32)
    return dict(
        image=rng.standard_normal((b, img_size, img_size, 3)).astype(np.float32),
        keypoints_2d=np.concatenate([xy, ones], -1).astype(np.float32),
        joints_3d=np.concatenate([joints, ones], -1).astype(np.float32),
        pose=pose, shape=shape,
        has_smpl=np.ones((b,), np.float32), has_joints_3d=np.ones((b,), np.float32),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ JAX


class JaxRunner:
    """The trainer's own train_step, jitted with the state donated, compiled with `options`."""

    def __init__(self, name, config, smpl_model, batch, options):

        self.name = name
        models = state_lib.make_static_parts(config)
        step_fn = steps.make_train_step(config, models, "smpl24")
        self.state = jax.jit(functools.partial(state_lib.init_state, config, models))(jax.random.PRNGKey(0))
        self.batch = jax.device_put(batch)
        self.smpl_model = smpl_model
        t0, c0 = time.perf_counter(), time.process_time()
        lowered = jax.jit(step_fn, donate_argnums=(0,)).lower(self.state, self.batch, smpl_model)
        t1 = time.perf_counter()
        self.compiled = lowered.compile(compiler_options=options or None)
        t2, c2 = time.perf_counter(), time.process_time()
        self.trace_s, self.compile_s, self.compile_cpu_s = t1 - t0, t2 - t1, c2 - c0
        t0 = time.perf_counter()
        self.step()
        self.first_run_s = time.perf_counter() - t0

    def step(self):
        self.state, metrics = self.compiled(self.state, self.batch, self.smpl_model)
        jax.block_until_ready((self.state, metrics))
        self.metrics = metrics


# ---------------------------------------------------------------------------------------- torch


def make_torch_runner(config, smpl_arrays, batch_np, threads, channels_last):
    import torch  # pylint: disable=g-import-not-at-top
    import torch_hmr  # pylint: disable=g-import-not-at-top
    from torch_hmr import rodrigues  # pylint: disable=g-import-not-at-top

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    smpl_forward = torch_hmr.smpl_forward_fn(smpl_arrays)
    w = {k: float(x) for k, x in config.loss_weights.items()}
    img_size = config.data.img_size
    encoder, regressor = torch_hmr.generator(config)
    disc = torch_hmr.Discriminator()
    gen_modules = torch.nn.ModuleList([encoder, regressor])
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    gen_opt = torch.optim.Adam(gen_modules.parameters(), lr=config.optim.gen.learning_rate)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=config.optim.disc.learning_rate)
    gen_modules.train()
    disc.train()

    tb = {k: torch.tensor(x) for k, x in batch_np.items()}
    images = tb["image"].permute(0, 3, 1, 2).contiguous()  # NCHW
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    mask = tb["has_smpl"]

    def masked_mean(x):
        return (mask * x).sum() / mask.sum().clamp(min=1.0)

    def step():
        with torch.no_grad():
            gt_rotmat = rodrigues(tb["pose"].reshape(-1, 24, 3))
            gt_verts, _ = smpl_forward(tb["shape"], gt_rotmat)
        feats = encoder(images)
        theta, betas, cam = regressor(feats)
        n_it, b = theta.shape[:2]
        rotmat_all = rodrigues(theta.reshape(n_it, b, 24, 3))  # (n, B, 24, 3, 3)
        rotmat = rotmat_all[-1]
        verts, joints = smpl_forward(betas[-1], rotmat)
        fake_rot = rotmat_all.reshape(n_it * b, 24, 3, 3)
        fake_betas = betas.reshape(n_it * b, -1)
        d = verts - gt_verts
        pred_c = joints - joints[:, :1]
        gt3 = tb["joints_3d"]
        gt_c = gt3[..., :3] - gt3[:, :1, :3]
        proj = cam[-1][:, None, 0:1] * (joints[..., :2] + cam[-1][:, None, 1:3])
        kp = tb["keypoints_2d"]
        gt2 = 2.0 * kp[..., :2] / img_size - 1.0
        terms = dict(
            vertex_l2=masked_mean((d**2).sum(-1).mean(-1)),
            vertex_l1=masked_mean(d.abs().sum(-1).mean(-1)),
            beta=masked_mean(((betas[-1] - tb["shape"]) ** 2).sum(-1)),
            pose=masked_mean(((rotmat - gt_rotmat) ** 2).sum((-2, -1)).mean(-1)),
            joints_3d=masked_mean((gt3[..., 3] * ((pred_c - gt_c) ** 2).sum(-1)).mean(-1)),
            joints_2d=((kp[..., 2] * (proj - gt2).abs().sum(-1)).mean(-1)).mean(),
            adversarial=((disc(fake_rot[:, 1:], fake_betas) - 1.0) ** 2).mean(0).sum(),
        )
        total = sum(w[k] * v for k, v in terms.items())
        gen_opt.zero_grad(set_to_none=True)
        disc_opt.zero_grad(set_to_none=True)  # the generator's backward also reaches D
        total.backward()
        gen_norm = torch.sqrt(sum((p.grad**2).sum() for p in gen_modules.parameters() if p.grad is not None))
        gen_opt.step()
        # Discriminator update on detached fakes and the batch's GT as reals.
        disc_opt.zero_grad(set_to_none=True)
        d_real = disc(gt_rotmat[:, 1:], tb["shape"])
        d_fake = disc(fake_rot[:, 1:].detach(), fake_betas.detach())
        d_loss = masked_mean(((d_real - 1.0) ** 2).sum(-1)) + (d_fake**2).mean(0).sum()
        (config.adversarial.disc_loss_weight * d_loss).backward()
        disc_opt.step()
        return float(total.detach()), float(d_loss.detach()), float(gen_norm)

    return step


# ----------------------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default="h36m_hmr",
        help="configs/NAME.py; the PyTorch step implements h36m_hmr's model only "
        "(other configs need --no-torch), e.g. --config quickstart --no-torch",
    )
    parser.add_argument("--batch", type=int, default=None, help="default 8 (h36m_hmr) / the config's")
    parser.add_argument("--img-size", type=int, default=None, help="default 224 (h36m_hmr) / the config's")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each implementation")
    parser.add_argument(
        "--settle",
        type=int,
        default=1,
        help="untimed steps of an implementation before its timed one in each round "
        "(what it pays for following another implementation is then not timed)",
    )
    parser.add_argument("--depth", type=int, default=None, choices=(18, 34, 50))
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"))
    parser.add_argument(
        "--variants",
        default="default",
        help=f"comma-separated JAX variants (XLA options) from {sorted(VARIANTS)}; "
        "suffixes '+bf16': encoder in bfloat16, '+matmul' / '+xla': the "
        "convolutions' weight gradients as matmuls / XLA's own",
    )
    parser.add_argument(
        "--body",
        default="smpl-sized",
        choices=("smpl-sized", "default"),
        help="random SMPL-sized arrays (6890 vertices) or hmr_jax.body_model's procedural model",
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--torch-channels-last", action="store_true")
    parser.add_argument(
        "--matmul-precision",
        default=None,
        help="jax.default_matmul_precision for the JAX step (e.g. 'bfloat16', 'float32')",
    )
    args = parser.parse_args()
    if args.config != "h36m_hmr" and not args.no_torch:
        parser.error(f"--config {args.config}: the PyTorch step implements h36m_hmr's model only; add --no-torch")

    from hmr_jax import body_model, smpl  # pylint: disable=g-import-not-at-top

    if args.matmul_precision:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    config = load_config(args)
    args.batch, args.img_size = config.data.batch_size, config.data.img_size
    args.depth, args.dtype = config.model.depth, config.model.dtype
    if args.body == "default":
        path = str(body_model.default_body_model_path())
        with np.load(path, allow_pickle=False) as f:
            smpl_arrays = {k: f[k] for k in f.files}
        smpl_host = smpl.load(path)
    else:
        smpl_arrays = smpl_sized_arrays()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "smpl_sized.npz")
            np.savez(path, **smpl_arrays)
            smpl_host = smpl.load(path)
    batch = make_batch(args.batch, args.img_size, smpl_host)
    body_host = data_setup.loss_body(config, smpl_host, None)[0]  # train.vertex_loss_stride's subset
    body = jax.device_put(body_host)
    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}, {os.cpu_count()} CPUs); batch {args.batch}, "
        f"body {args.body} ({smpl_host.v_template.shape[0]} vertices, "
        f"{body_host.v_template.shape[0]} in the step's vertex terms), "
        f"{args.img_size} px, ResNet-{args.depth}, {args.dtype}; load {os.getloadavg()[0]:.2f}; "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}; convolution weight gradients "
        f"{'matmul' if cpu_kernels.matmul_weight_grads() else 'xla'} unless a variant says",
        flush=True,
    )

    runners = []
    for spec in args.variants.split(","):
        name, *suffixes = spec.split("+")
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {name!r}; expected one of {sorted(VARIANTS)}")
        cfg = load_config(args)  # a fresh copy
        env = {}
        for suffix in suffixes:
            if suffix == "bf16":
                cfg.model.dtype = "bfloat16"
            elif suffix in ("matmul", "xla"):
                env[cpu_kernels.WEIGHT_GRAD_ENV] = suffix
            else:
                raise SystemExit(f"--variants: unknown suffix {suffix!r} in {spec!r}; expected +bf16, +matmul or +xla")
        with mock.patch.dict(os.environ, env):  # read when the step is traced (in JaxRunner)
            r = JaxRunner(f"jax:{spec}", cfg, body, batch, VARIANTS[name])
        print(
            f"{r.name:>22}: trace {r.trace_s:5.1f} s, compile {r.compile_s:5.1f} s, first step "
            f"{r.first_run_s:5.2f} s (trace + compile + first step {r.trace_s + r.compile_s + r.first_run_s:5.1f} s wall, "
            f"trace + compile {r.compile_cpu_s:5.1f} CPU s); loss {float(r.metrics['loss/total']):.6f}, "
            f"disc {float(r.metrics.get('loss/disc', float('nan'))):.6f}; "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        runners.append((r.name, r.step))
    if not args.no_torch:
        import torch  # pylint: disable=g-import-not-at-top

        tstep = make_torch_runner(config, smpl_arrays, batch, args.torch_threads, args.torch_channels_last)
        t0 = time.perf_counter()
        tstep()  # warm-up
        print(
            f"{'torch ' + torch.__version__:>22}: first step {time.perf_counter() - t0:5.2f} s, "
            f"{torch.get_num_threads()} threads",
            flush=True,
        )
        runners.append((f"torch{'-cl' if args.torch_channels_last else ''}", tstep))

    times, cpu, loads = round_robin(dict(runners), args.steps, args.settle)
    ref = next((n for n in times if n.startswith("torch")), None)
    print(
        f"\n{'implementation':>22} {'median s/step':>14} {'images/s':>9} {'vs torch':>9} {'CPU s/step':>11}"
        "   per-step wall s"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = f"{statistics.median(times[ref]) / med:8.2f}x" if ref else "        -"
        print(
            f"{name:>22} {med:14.3f} {args.batch / med:9.2f} {ratio} {statistics.median(cpu[name]):11.2f}   "
            f"{' '.join(f'{t:.2f}' for t in ts)}"
        )
    print(f"load average during the timed steps: {min(loads):.2f}..{max(loads):.2f} (2 cores)")


if __name__ == "__main__":
    hugepages.ensure()  # both sides alike: glibc's huge-page tunable (hmr_jax.hugepages)
    main()
