"""Shared helpers of the trainer / CLI / distributed tests: a tiny dataset and a tiny config."""

import os
import pathlib

import numpy as np
from PIL import Image

from hmr_jax import config_files, sharding, steps
from hmr_jax import state as state_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_dataset(out_dir, num: int = 16, img_size: int = 32, seed: int = 0) -> str:
    """A small SPIN-layout dataset ('smpl24'): random pose/shape, GT joints from the default body
    model, keypoints from a weak-perspective camera, noise JPEGs (content is irrelevant for the
    trainer tests; the model just has to memorise). Returns the annotation path."""
    from hmr_jax import body_model, geometry, smpl  # pylint: disable=g-import-not-at-top
    from hmr_jax.data import annotations  # pylint: disable=g-import-not-at-top

    out_dir = pathlib.Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    model = smpl.load(body_model.default_body_model_path())
    pose = 0.3 * rng.standard_normal((num, 72)).astype(np.float32)
    pose[:, :3] = [np.pi, 0.0, 0.0]
    shape = rng.standard_normal((num, 10)).astype(np.float32)
    joints = np.asarray(smpl.forward(model, shape, pose).joints)  # (N, 24, 3)
    joints = joints - joints[:, :1]
    cam = np.array([0.9, 0.0, 0.2], np.float32)
    xy = np.asarray(geometry.weak_perspective_project(joints, np.broadcast_to(cam, (num, 3))))
    part = np.concatenate([(xy + 1.0) * img_size / 2.0, np.ones((num, 24, 1))], -1)
    names = []
    for i in range(num):
        name = f"images/{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (img_size, img_size, 3), np.uint8)).save(out_dir / name)
        names.append(name)
    ann = dict(
        imgname=np.array(names),
        center=np.full((num, 2), (img_size - 1) / 2.0, np.float32),
        scale=np.full((num,), img_size / 200.0, np.float32),
        part=part.astype(np.float32),
        S=np.concatenate([joints, np.ones((num, 24, 1), np.float32)], -1).astype(np.float32),
        pose=pose,
        shape=shape,
        has_smpl=np.ones((num,), np.float32),
        joint_set=np.array("smpl24"),
    )
    path = out_dir / "annotations.npz"
    annotations.save_spin(path, ann)
    return str(path)


TINY_CONFIG = REPO / "tests" / "configs" / "tiny.py"


def tiny_config(data_dir, **overrides):
    """tests/configs/tiny.py with data.dir and then `overrides` ({'a.b': value}) applied."""
    c = config_files.load(TINY_CONFIG)
    for key, value in {"data.dir": os.fspath(data_dir), **overrides}.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def cli_args(data_dir, workdir, **overrides) -> list[str]:
    """`python -m hmr_jax.train` arguments for the same tiny config."""
    args = [f"--config={TINY_CONFIG}", f"--workdir={workdir}"]
    for key, value in {"data.dir": os.fspath(data_dir), **overrides}.items():
        args.append(f"--config.{key}={value}")
    return args


CACHE_DIR = os.environ.get("HMR_JAX_TEST_JAX_CACHE", "/tmp/hmr_jax_test_jax_cache")


FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def cache_env(devices: int | None = None) -> dict[str, str]:
    """Environment for subprocesses: the persistent compilation cache shared by the tests (the
    same tiny programs are compiled by many runs; XLA CPU compiles are the slow part here),
    cheaper XLA CPU optimisation, and optionally `devices` simulated CPU devices."""
    flags = FAST_COMPILE_FLAGS + (f" --xla_force_host_platform_device_count={devices}" if devices else "")
    return {
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "XLA_FLAGS": flags,
    }


def train_parts(config, mesh):
    """(models, fresh state, replicated default body model, jitted train step) of `config`; call
    inside `jax.set_mesh(mesh)`."""
    import jax  # pylint: disable=g-import-not-at-top

    from hmr_jax import body_model, smpl  # pylint: disable=g-import-not-at-top

    models = state_lib.make_static_parts(config)
    state = state_lib.create_sharded_state(config, models, mesh)
    smpl_model = sharding.replicate(smpl.load(body_model.default_body_model_path()), mesh)
    return models, state, smpl_model, jax.jit(steps.make_train_step(config, models, "smpl24"))


def fixed_batch(data_dir, n: int = 8) -> dict:
    """The first n samples of `make_dataset`'s files as a training batch (no crop/augmentation:
    the boxes cover the whole image)."""
    from hmr_jax.data import annotations, augment  # pylint: disable=g-import-not-at-top

    ann = annotations.load(os.path.join(data_dir, "annotations.npz"))
    images = np.stack(
        [np.asarray(Image.open(os.path.join(data_dir, name)), np.float32) / 255.0 for name in ann.imgname[:n]]
    )
    images = (images - np.asarray(augment.IMAGENET_MEAN)) / np.asarray(augment.IMAGENET_STD)
    return dict(
        image=images.astype(np.float32),
        keypoints_2d=ann.part[:n].astype(np.float32),
        joints_3d=ann.S[:n].astype(np.float32),
        pose=ann.pose[:n].astype(np.float32),
        shape=ann.shape[:n].astype(np.float32),
        has_smpl=ann.has_smpl[:n].astype(np.float32),
        has_joints_3d=ann.has_joints_3d[:n].astype(np.float32),
    )
