"""SMPL forward throughput: hmr_jax.smpl (jit) vs smplx (PyTorch), side by side in one run.

    python benchmarks/smpl_forward.py [--batches 1 64 512] [--seconds 2]

Both load the same SMPL-sized model (6890 vertices, 10 shape and 207 pose directions,
random but well-formed arrays) and pose the same random bodies; smplx runs with 2 threads
under torch.inference_mode. Prints bodies/s (wall clock, and per CPU-second of the process,
which other jobs on a shared machine disturb less) for each and the ratios.
"""

import argparse
import os
import pickle
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np


def smpl_sized_arrays(seed=0):
    rng = np.random.default_rng(seed)
    v = 6890
    weights = rng.random((v, 24)) ** 8
    weights /= weights.sum(1, keepdims=True)
    j_reg = rng.random((24, v)) * (rng.random((24, v)) < 0.01)
    j_reg /= j_reg.sum(1, keepdims=True)
    parents = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
    return dict(
        v_template=rng.normal(0, 0.3, (v, 3)), shapedirs=rng.normal(0, 0.03, (v, 3, 10)),
        posedirs=rng.normal(0, 0.01, (v, 3, 207)), J_regressor=j_reg, weights=weights,
        kintree_table=np.stack([parents % 4294967296, np.arange(24)]),
        f=rng.integers(0, v, (13776, 3)).astype(np.int64),
    )  # fmt: skip


def rate(fn, batch, seconds):
    """(bodies per wall second, bodies per CPU second of this process); best of 3 rounds."""
    fn()  # warm-up (and compile)
    best_wall = best_cpu = 0.0
    for _ in range(3):
        n, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds / 3:
            fn()
            n += 1
        best_wall = max(best_wall, n * batch / (time.perf_counter() - start))
        best_cpu = max(best_cpu, n * batch / max(time.process_time() - cpu, 1e-9))
    return best_wall, best_cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    import smplx
    import torch

    from hmr_jax import smpl

    torch.set_num_threads(2)
    arrays = smpl_sized_arrays()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "SMPL_NEUTRAL.pkl")
        with open(path, "wb") as f:
            pickle.dump(arrays, f, protocol=2)
        model = smpl.load(path)
        print(
            f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads"
        )
        print(
            f"load average {os.getloadavg()[0]:.1f}; bodies per wall second (per CPU second: robust to load "
            "from other processes)"
        )
        print(f"{'batch':>6} {'hmr_jax':>16} {'smplx':>16} {'ratio':>13}")
        fwd = jax.jit(smpl.forward)
        rng = np.random.default_rng(1)
        for b in args.batches:
            pose = rng.normal(0, 0.5, (b, 72)).astype(np.float32)
            betas = rng.normal(0, 1, (b, 10)).astype(np.float32)
            jp, jb = jnp.asarray(pose), jnp.asarray(betas)
            ours = rate(lambda: fwd(model, jb, jp).vertices.block_until_ready(), b, args.seconds)
            ref_model = smplx.SMPL(model_path=path, num_betas=10, batch_size=b)
            tp, tb = torch.tensor(pose), torch.tensor(betas)

            def ref():
                with torch.inference_mode():
                    return ref_model(betas=tb, global_orient=tp[:, :3], body_pose=tp[:, 3:]).vertices

            theirs = rate(ref, b, args.seconds)
            print(
                f"{b:>6} {ours[0]:>7,.0f} ({ours[1]:>6,.0f}) {theirs[0]:>7,.0f} ({theirs[1]:>6,.0f}) "
                f"{ours[0] / theirs[0]:>5.2f}x ({ours[1] / theirs[1]:.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
