"""SMPLify throughput: hmr_jax.fitting.fit (jit) vs the same fit in PyTorch over smplx, people per second.

    python benchmarks/fitting.py [--batches 1 32 256] [--steps 100] [--torch-repeats 2]

Both fit the same synthetic people (poses from the synthetic data generator, betas N(0, 1), 40-60 m
from a focal-5000 camera so the body fills a 224 px crop, OpenPose BODY_25 keypoints projected
with 2 px noise, all confident) from the same start (facing the camera, the pose prior's mean pose,
mean shape, the translation `hmr_jax.fitting.estimate_translation` gives), with SPIN's SMPLify:

    stage 1 (camera translation, global orientation), Adam lr 1e-2:
        sum over OpenPose's hips and shoulders of the squared pixel error + 100^2 (t_z - t_z_init)^2
    stage 2 (body pose, betas, global orientation; camera fixed), Adam lr 1e-2:
        sum_j conf_j^2 sum_xy GMcClure(r; sigma = 100 px)        (OpenPose's neck and hips at conf 0)
        + 4.78^2 GMM max-mixture penalty + 15.2^2 sum exp(+-theta)^2 (elbows, knees) + 5^2 |beta|^2

The PyTorch side (`TorchSMPLify`, written here from those facts) poses the full mesh with smplx's
SMPL at every step, as SPIN does, and gathers the keypoints from its joints and the body model's
landmark vertices; it runs with 2 threads (OMP_WAIT_POLICY=PASSIVE unless set). hmr_jax poses only the vertices the keypoints need.
Both use the same pose-prior arrays (`hmr_jax.fitting.prior.default_prior()`). Prints, per batch:
people per second (hmr_jax: best of 3 after a first call whose extra time is reported as compile
time; PyTorch: best of --torch-repeats full fits, one at batch >= 256), their ratio, and each
side's final stage-2 objective and mean reprojection error (pixels, over all 25 keypoints).
"""

import argparse
import contextlib
import io
import os
import time

# Read when OpenMP loads (with torch): idle OpenMP threads sleep instead of spinning. Where other
# processes share the cores, spinning threads make smplx's small matmuls a hundred times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import smplx  # noqa: E402
import torch  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from smplx.utils import Struct  # noqa: E402

from hmr_jax import body_model, smpl  # noqa: E402
from hmr_jax.fitting import (  # noqa: E402
    Camera,
    FitConfig,
    FitInit,
    estimate_translation,
    fit,
    keypoint_body,
    keypoints_3d,
    objective,
)
from hmr_jax.fitting import keypoints as kp_lib  # noqa: E402
from hmr_jax.fitting import prior as prior_lib  # noqa: E402

# SPIN's SMPLify, as numbers.
FOCAL = 5000.0
CROP = 224
CENTER = (CROP / 2, CROP / 2)
STEPS = 100  # per stage
LEARNING_RATE = 1e-2  # Adam, both stages
DEPTH_WEIGHT = 100.0
SIGMA_PX = 100.0
POSE_PRIOR_WEIGHT = 4.78
ANGLE_PRIOR_WEIGHT = 15.2
SHAPE_PRIOR_WEIGHT = 5.0
TORSO = ("right_hip", "left_hip", "right_shoulder", "left_shoulder")  # stage 1's OpenPose points
STAGE2_IGNORED = ("neck", "right_hip", "left_hip")  # OpenPose points at confidence 0 in stage 2
# SMPLify's angle prior: (index in the 72 pose values, sign of bending the wrong way).
ANGLE_PRIOR = ((55, 1.0), (58, -1.0), (12, -1.0), (15, -1.0))  # left / right elbow y, left / right knee x
FACING_CAMERA = (np.pi, 0.0, 0.0)
NUM_BETAS = 10
NOISE_PX = 2.0
PEOPLE_SEED = 1  # the pose generator's seed for the test people (the default prior is fitted to seed 0's)


def openpose_index(joint_names, landmarks) -> np.ndarray:
    """(25,) indices of OpenPose BODY_25 into [24 SMPL joints, all V vertices], as
    `hmr_jax.fitting.keypoints.OPENPOSE25` maps them; `landmarks`: {name: vertex}."""
    return np.array(
        [
            list(joint_names).index(src) if kind == "joint" else smpl.NUM_JOINTS + int(landmarks[src])
            for _, kind, src in kp_lib.OPENPOSE25
        ]
    )


class TorchSMPLify:
    """SPIN's SMPLify on OpenPose BODY_25 keypoints in PyTorch, over smplx's SMPL (full mesh forward).

    model_path: an SMPL-layout .npz with landmark_names / landmark_vertices; prior: a
    `prior.PosePrior` (means, precisions, log_weights are used); dtype: of the model and the fit.
    """

    def __init__(self, model_path, prior: prior_lib.PosePrior, dtype=torch.float32):
        with np.load(model_path) as z:
            arrays = dict(z)
        with contextlib.redirect_stdout(io.StringIO()):  # smplx notes that the model has 10 shape directions
            self.smpl = smplx.SMPL(
                model_path=str(model_path),
                data_struct=Struct(**arrays),
                num_betas=NUM_BETAS,
                create_global_orient=False,
                create_body_pose=False,
                create_betas=False,
                create_transl=False,
            ).to(dtype)
        for p in self.smpl.parameters():
            p.requires_grad_(False)
        self.dtype = dtype
        landmarks = dict(zip(arrays["landmark_names"].tolist(), arrays["landmark_vertices"].tolist()))
        self.index = torch.as_tensor(openpose_index(arrays["joint_names"].tolist(), landmarks))
        names = kp_lib.OPENPOSE25_NAMES
        self.torso = torch.as_tensor([names.index(n) for n in TORSO])
        self.stage2_mask = torch.as_tensor([0.0 if n in STAGE2_IGNORED else 1.0 for n in names], dtype=dtype)
        self.means = torch.tensor(np.array(prior.means), dtype=dtype)  # (M, 69)
        self.precisions = torch.tensor(np.array(prior.precisions), dtype=dtype)  # (M, 69, 69)
        self.log_weights = torch.tensor(np.array(prior.log_weights), dtype=dtype)  # (M,)
        self.angle_index = torch.as_tensor([i for i, _ in ANGLE_PRIOR])
        self.angle_sign = torch.as_tensor([s for _, s in ANGLE_PRIOR], dtype=dtype)

    def tensor(self, x) -> torch.Tensor:
        return torch.tensor(np.array(x), dtype=self.dtype)

    def keypoints(self, global_orient, body_pose, betas) -> torch.Tensor:
        """(B, 25, 3) OpenPose keypoints of the posed bodies (no translation)."""
        out = self.smpl(global_orient=global_orient, body_pose=body_pose, betas=betas)
        points = torch.cat([out.joints[:, : smpl.NUM_JOINTS], out.vertices], dim=1)  # (B, 24 + V, 3)
        return points[:, self.index]

    @staticmethod
    def project(points, transl) -> torch.Tensor:
        """Pinhole projection of body points moved by the camera translation (rotation identity)."""
        p = points + transl[:, None, :]
        return FOCAL * p[..., :2] / p[..., 2:] + torch.as_tensor(CENTER, dtype=p.dtype)

    def stage1_loss(self, points, keypoints_2d, transl, transl_z_init) -> torch.Tensor:
        """(B,) squared pixel error of the torso points + the depth term."""
        err = self.project(points, transl)[:, self.torso] - keypoints_2d[:, self.torso]
        return torch.sum(err**2, dim=(1, 2)) + DEPTH_WEIGHT**2 * (transl[:, 2] - transl_z_init) ** 2

    def pose_prior(self, body_pose) -> torch.Tensor:
        """(B,) max-mixture penalty: min_m 0.5 d^T P_m d + log_weights_m."""
        d = body_pose[:, None, :] - self.means  # (B, M, 69)
        quad = 0.5 * torch.einsum("bmi,mij,bmj->bm", d, self.precisions, d)
        return torch.min(quad + self.log_weights, dim=1).values

    def stage2_terms(self, points, global_orient, body_pose, betas, transl, keypoints_2d, confidence) -> dict:
        """Stage 2's weighted terms per person, (B,) each; `confidence` before stage 2's ignored points."""
        r = self.project(points, transl) - keypoints_2d
        robust = SIGMA_PX**2 * r**2 / (SIGMA_PX**2 + r**2)
        conf = confidence * self.stage2_mask
        pose = torch.cat([global_orient, body_pose], dim=1)
        return {
            "reprojection": torch.sum(conf**2 * robust.sum(dim=-1), dim=-1),
            "pose_prior": POSE_PRIOR_WEIGHT**2 * self.pose_prior(body_pose),
            "angle_prior": ANGLE_PRIOR_WEIGHT**2
            * torch.sum(torch.exp(pose[:, self.angle_index] * self.angle_sign) ** 2, dim=-1),
            "shape_prior": SHAPE_PRIOR_WEIGHT**2 * torch.sum(betas**2, dim=-1),
        }

    def fit(self, keypoints_2d, confidence, pose, betas, transl, steps1=STEPS, steps2=STEPS) -> dict:
        """Both stages from (pose (B, 72), betas (B, 10), transl (B, 3)); numpy in, numpy out."""
        kp2d, conf = self.tensor(keypoints_2d), self.tensor(confidence)
        pose, betas, transl = self.tensor(pose), self.tensor(betas), self.tensor(transl)
        global_orient = pose[:, :3].clone().requires_grad_(True)
        body_pose = pose[:, 3:].clone()
        transl = transl.clone().requires_grad_(True)
        transl_z_init = transl[:, 2].detach().clone()

        opt = torch.optim.Adam([global_orient, transl], lr=LEARNING_RATE)
        for _ in range(steps1):
            points = self.keypoints(global_orient, body_pose, betas)
            loss = self.stage1_loss(points, kp2d, transl, transl_z_init).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()

        transl = transl.detach()
        body_pose.requires_grad_(True)
        betas = betas.clone().requires_grad_(True)
        opt = torch.optim.Adam([body_pose, betas, global_orient], lr=LEARNING_RATE)
        for _ in range(steps2):
            points = self.keypoints(global_orient, body_pose, betas)
            terms = self.stage2_terms(points, global_orient, body_pose, betas, transl, kp2d, conf)
            loss = sum(terms.values()).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()

        with torch.no_grad():
            points = self.keypoints(global_orient, body_pose, betas)
            terms = self.stage2_terms(points, global_orient, body_pose, betas, transl, kp2d, conf)
            dist = torch.linalg.norm(self.project(points, transl) - kp2d, dim=-1)
            present = (conf > 0).to(dist.dtype)
            error_px = (dist * present).sum(-1) / present.sum(-1).clamp(min=1.0)
            return {
                "pose": torch.cat([global_orient, body_pose], dim=1).numpy(),
                "betas": betas.numpy(),
                "transl": transl.numpy(),
                "loss": sum(terms.values()).numpy(),
                "error_px": error_px.numpy(),
            }


def make_people(kb, num: int, seed: int = PEOPLE_SEED):
    """Synthetic people: (pose (N, 72), betas (N, 10), transl (N, 3), OpenPose keypoints (N, 25, 2))."""
    rng = np.random.default_rng(seed)
    body_pose = prior_lib.synthetic_poses(num, seed)  # (N, 69)
    facing = Rotation.from_rotvec(FACING_CAMERA)
    turn = Rotation.from_euler("yx", np.stack([rng.uniform(-0.6, 0.6, num), rng.uniform(-0.15, 0.15, num)], -1))
    pose = np.concatenate([(facing * turn).as_rotvec(), body_pose], axis=1).astype(np.float32)
    betas = rng.standard_normal((num, NUM_BETAS)).astype(np.float32)
    rest = np.asarray(keypoints_3d(kb, jnp.asarray(betas), jnp.asarray(pose)))  # (N, 25, 3)
    middle = 0.5 * (rest.min(axis=1) + rest.max(axis=1))  # (N, 3): the keypoints' box centre
    transl = np.zeros((num, 3), np.float32)
    transl[:, 2] = rng.uniform(40.0, 60.0, num)
    transl[:, :2] = -middle[:, :2] + rng.normal(0.0, 0.05, (num, 2))
    transl[:, 2] -= middle[:, 2]
    points = keypoints_3d(kb, jnp.asarray(betas), jnp.asarray(pose), jnp.asarray(transl))
    kp2d = np.asarray(
        objective.project(points, jnp.full((num,), FOCAL), jnp.broadcast_to(jnp.asarray(CENTER), (num, 2)))
    )
    kp2d = kp2d + rng.normal(0.0, NOISE_PX, kp2d.shape).astype(np.float32)
    return pose, betas, transl, kp2d


def start(kb, prior, keypoints_2d, confidence):
    """The shared start: facing the camera, the prior's mean pose, mean shape, estimated translation."""
    num = len(keypoints_2d)
    body = np.asarray(prior.means).mean(axis=0)
    pose = np.broadcast_to(np.concatenate([FACING_CAMERA, body]), (num, 72)).astype(np.float32)
    betas = np.zeros((num, NUM_BETAS), np.float32)
    points = keypoints_3d(kb, jnp.asarray(betas), jnp.asarray(pose))
    transl = estimate_translation(
        points,
        jnp.asarray(keypoints_2d),
        jnp.asarray(confidence > 0, jnp.float32),
        jnp.full((num,), FOCAL),
        jnp.broadcast_to(jnp.asarray(CENTER), (num, 2)),
    )
    return pose, betas, np.asarray(transl)


def cpu_name() -> str:
    model, avx512 = "unknown CPU", False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    avx512 = avx512 or "avx512f" in line.split()
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} CPUs, {'with' if avx512 else 'no'} AVX-512)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--steps", type=int, default=STEPS, help="Adam steps per stage")
    parser.add_argument("--torch-repeats", type=int, default=2, help="PyTorch fits timed per batch below 256")
    args = parser.parse_args()

    torch.set_num_threads(2)
    path = body_model.default_body_model_path()
    model = smpl.load(path)
    kb = keypoint_body(model, ("openpose25",))
    prior = prior_lib.default_prior()
    config = FitConfig(stage1_steps=args.steps, stage2_steps=args.steps)
    ref = TorchSMPLify(path, prior)
    camera = Camera(FOCAL, jnp.asarray(CENTER))

    print(f"CPU: {cpu_name()}")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"SMPLify, {args.steps} + {args.steps} Adam steps, OpenPose BODY_25 ({kb.num_keypoints} points); body model "
        f"{model.num_vertices} vertices (hmr_jax poses {kb.body.num_vertices}, smplx all)"
    )
    header = (
        f"{'batch':>5} | {'hmr_jax ppl/s':>13} {'compile s':>9} | {'torch ppl/s':>11} | {'ratio':>7} | "
        f"{'objective hmr_jax':>17} {'torch':>9} | {'error px hmr_jax':>16} {'torch':>6}"
    )
    print(header)
    print("-" * len(header))
    for b in args.batches:
        _, _, _, kp2d = make_people(kb, b)
        conf = np.ones(kp2d.shape[:2], np.float32)
        pose0, betas0, transl0 = start(kb, prior, kp2d, conf)
        init = FitInit(jnp.asarray(pose0), jnp.asarray(betas0), jnp.asarray(transl0))
        jkp, jconf = jnp.asarray(kp2d), jnp.asarray(conf)

        def ours(jkp=jkp, jconf=jconf, init=init):
            result = fit(kb, jkp, jconf, camera, init=init, config=config, prior=prior)
            return jax.block_until_ready(result)

        t0 = time.perf_counter()
        result = ours()
        first = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = ours()
            times.append(time.perf_counter() - t0)
        ours_s = min(times)

        torch_times = []
        for _ in range(1 if b >= 256 else max(args.torch_repeats, 1)):
            t0 = time.perf_counter()
            theirs = ref.fit(kp2d, conf, pose0, betas0, transl0, args.steps, args.steps)
            torch_times.append(time.perf_counter() - t0)
        torch_s = min(torch_times)

        print(
            f"{b:>5} | {b / ours_s:>13,.1f} {first - ours_s:>9.1f} | {b / torch_s:>11,.2f} | "
            f"{torch_s / ours_s:>6.1f}x | {float(np.mean(result.loss)):>17.1f} {float(np.mean(theirs['loss'])):>9.1f} | "
            f"{float(np.mean(result.error_px)):>16.2f} {float(np.mean(theirs['error_px'])):>6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
