"""HMR inference, images/s: hmr_jax (jit, `predict.make_predict_fn`) vs the same model in PyTorch.

    python benchmarks/inference.py [--batches 1 8 32] [--steps 7] [--config h36m_hmr]

One forward = what `python -m hmr_jax.predict` computes per batch: the ResNet encoder in eval mode
(BatchNorm's running statistics), the regressor's iterations (dropout off), Rodrigues of the final
pose, SMPL of the final estimate placed at the camera translation (SPIN's weak-perspective ->
translation), and the pose as axis-angle. PyTorch: the same model (benchmarks/torch_hmr.py, NCHW)
in eval mode under `torch.inference_mode()`, 2 threads, SMPL through `smplx.lbs.lbs`. Both take a
float32 batch of normalised images and the same SMPL-sized body (6890 vertices).

Timed round-robin per batch size (one call of each per round, after `--settle` untimed calls of
the same implementation), so load from other processes hits both alike; medians are reported,
with the ratio torch time / hmr_jax time (> 1: hmr_jax faster) and CPU seconds per image.
"""

import argparse
import os
import pathlib
import statistics
import tempfile
import time

import jax
import numpy as np
from smpl_forward import smpl_sized_arrays  # benchmarks/ is on sys.path when run as a script
from timing import round_robin

from hmr_jax import config_files, hugepages
from hmr_jax import state as state_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def jax_runner(config, smpl_model, images):
    from hmr_jax import steps

    models = state_lib.make_static_parts(config)
    state = jax.jit(lambda key: state_lib.init_state(config, models, key))(jax.random.PRNGKey(0))
    fn = jax.jit(steps.make_predict(config, models))
    x = jax.device_put(images)

    def run():
        return jax.block_until_ready(fn(state, x, smpl_model))

    return run


def torch_runner(config, smpl_arrays, images, threads):
    import torch  # pylint: disable=g-import-not-at-top
    import torch_hmr  # pylint: disable=g-import-not-at-top

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder, regressor = torch_hmr.generator(config)
    encoder.eval()
    regressor.eval()
    smpl_forward = torch_hmr.smpl_forward_fn(smpl_arrays)
    x = torch.tensor(images).permute(0, 3, 1, 2).contiguous()  # NCHW
    focal = float(config.images.focal_length_224) * config.data.img_size / 224.0
    size = config.data.img_size

    def run():
        with torch.inference_mode():
            theta, betas, cam = regressor(encoder(x))
            theta, betas, cam = theta[-1], betas[-1], cam[-1]
            rotmat = torch_hmr.rodrigues(theta.reshape(-1, 24, 3))
            verts, _ = smpl_forward(betas, rotmat)
            transl = torch.stack([cam[:, 1], cam[:, 2], 2.0 * focal / (size * cam[:, 0].clamp(min=1e-9))], -1)
            return theta, betas, cam, transl, verts + transl[:, None]

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default="h36m_hmr",
        help="configs/NAME.py (the model must have no keypoint "
        "head: the PyTorch side implements HMR's encoder + regressor only)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--img-size", type=int, default=None, help="default: the config's (h36m_hmr: 224)")
    parser.add_argument("--steps", type=int, default=7, help="timed calls of each implementation per batch size")
    parser.add_argument("--settle", type=int, default=1, help="untimed calls before each timed one")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    from hmr_jax import smpl  # pylint: disable=g-import-not-at-top

    config = config_files.load(REPO / "configs" / f"{args.config}.py")
    if args.img_size:
        config.data.img_size = args.img_size
    if config.model.keypoint_head.enabled and not args.no_torch:
        parser.error(f"--config {args.config} has a keypoint head, which the PyTorch side lacks; add --no-torch")
    smpl_arrays = smpl_sized_arrays()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "smpl_sized.npz")
        np.savez(path, **smpl_arrays)
        smpl_model = jax.device_put(smpl.load(path))
    size = config.data.img_size
    print(
        f"jax {jax.__version__} ({jax.devices()[0].platform}, {os.cpu_count()} CPUs); {args.config}: "
        f"ResNet-{config.model.depth}, {config.model.n_iter} iterations, {size} px, float32; "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if not args.no_torch:
        import torch  # pylint: disable=g-import-not-at-top

        print(f"torch {torch.__version__}, {args.torch_threads} threads, inference_mode", flush=True)

    print(
        f"\n{'batch':>5} {'implementation':>15} {'first call s':>13} {'median s':>9} {'images/s':>9} "
        f"{'vs torch':>9} {'CPU s/image':>12}",
        flush=True,
    )
    for b in args.batches:
        images = np.random.default_rng(b).standard_normal((b, size, size, 3)).astype(np.float32)
        runners = {"hmr_jax": jax_runner(config, smpl_model, images)}
        if not args.no_torch:
            runners["torch"] = torch_runner(config, smpl_arrays, images, args.torch_threads)
        first = {}
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()  # compile (jax) / warm-up (torch)
            first[name] = time.perf_counter() - t0
        times, cpu, _ = round_robin(runners, args.steps, args.settle)
        for name in runners:
            med = statistics.median(times[name])
            ratio = f"{statistics.median(times['torch']) / med:8.2f}x" if "torch" in times else "        -"
            print(
                f"{b:5d} {name:>15} {first[name]:13.2f} {med:9.4f} {b / med:9.1f} {ratio} "
                f"{statistics.median(cpu[name]) / b:12.4f}",
                flush=True,
            )
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores)")


if __name__ == "__main__":
    hugepages.ensure()  # both sides alike: glibc's huge-page tunable (hmr_jax.hugepages)
    main()
