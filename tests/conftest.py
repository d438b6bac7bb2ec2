"""Test setup and the suite's shared fixtures.

Once for the whole suite: cheap XLA CPU compiles and a persistent compilation cache (set before jax
is imported anywhere: an `XLA_FLAGS` set after that does nothing), and the `slow` marker of the
end-to-end runs in subprocesses (`python -m pytest -m "not slow"` skips them).

Fixtures (tests take them as arguments; nothing here is imported by a test module):
  repo, tiny_config_path     the repository root; tests/configs/tiny.py, the tests' config
  tiny_config                (data_dir, **{"a.b": value}) -> that config, data.dir and overrides set
  tiny_cli_args              (data_dir, workdir, **overrides) -> `python -m hmr_jax.train` arguments
  cache_env                  (devices=None) -> environment of a subprocess (compile cache, XLA flags)
  load_tool                  (name) -> tools/<name>.py as a module
  make_dataset               (out_dir, num, img_size, seed) -> a SPIN-layout dataset's annotation path
  tiny_data                  one such dataset (16 samples, 32 px) for the session: read, never change
  fixed_batch                (data_dir, n=8) -> the first n samples as a training batch
  train_parts                (config, mesh) -> (models, state, body model, jitted train step)
  trained_workdir            a run directory with a checkpoint, over H36M-named data (per module)
  fake_arrays, fake_images, fake_dataset, pinhole_project
                             annotation arrays with a known pinhole camera, their images, both on disk
"""

import dataclasses
import importlib.util
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.py"
CACHE_DIR = os.environ.get("HMR_JAX_TEST_JAX_CACHE", "/tmp/hmr_jax_test_jax_cache")
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

os.environ.setdefault("XLA_FLAGS", FAST_COMPILE_FLAGS)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end run of a CLI in subprocesses (minutes)")


# ------------------------------------------------------------------------------- paths and environment


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    """The repository root (configs/, tools/, benchmarks/ below it)."""
    return REPO


@pytest.fixture(scope="session")
def tiny_config_path() -> pathlib.Path:
    """tests/configs/tiny.py: the full method shrunk to seconds."""
    return TINY_CONFIG


def _cache_env(devices: int | None = None) -> dict[str, str]:
    flags = FAST_COMPILE_FLAGS + (f" --xla_force_host_platform_device_count={devices}" if devices else "")
    return {
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "XLA_FLAGS": flags,
    }


@pytest.fixture(scope="session")
def cache_env():
    """`cache_env(devices=None)`: environment for subprocesses: the persistent compilation cache
    shared by the tests (the same tiny programs are compiled by many runs; XLA CPU compiles are the
    slow part here), cheaper XLA CPU optimisation, and optionally `devices` simulated CPU devices."""
    return _cache_env


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_tool():
    """`load_tool(name)`: tools/<name>.py (a script, not a package) as a fresh module named <name>."""
    return _load_tool


# ------------------------------------------------------------------------------------ the tiny config


def _tiny_config(data_dir, **overrides):
    from hmr_jax import config_files  # pylint: disable=g-import-not-at-top

    c = config_files.load(TINY_CONFIG)
    for key, value in {"data.dir": os.fspath(data_dir), **overrides}.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(data_dir, **overrides)`: tests/configs/tiny.py with data.dir and then `overrides`
    ({'a.b': value}) applied; a new ConfigDict at each call."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_cli_args():
    """`tiny_cli_args(data_dir, workdir, **overrides)`: `python -m hmr_jax.train` arguments for the
    same tiny config."""

    def cli_args(data_dir, workdir, **overrides) -> list[str]:
        args = [f"--config={TINY_CONFIG}", f"--workdir={workdir}"]
        for key, value in {"data.dir": os.fspath(data_dir), **overrides}.items():
            args.append(f"--config.{key}={value}")
        return args

    return cli_args


# ---------------------------------------------------------------------------------- the tiny dataset


def _make_dataset(out_dir, num: int = 16, img_size: int = 32, seed: int = 0) -> str:
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


@pytest.fixture(scope="session")
def make_dataset():
    """`make_dataset(out_dir, num=16, img_size=32, seed=0)`: a small SPIN-layout dataset ('smpl24')
    in out_dir: random pose/shape, GT joints from the default body model, keypoints from a
    weak-perspective camera, noise JPEGs (content is irrelevant for the trainer tests; the model just
    has to memorise). Returns the annotation path."""
    return _make_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> pathlib.Path:
    """`make_dataset`'s 16 samples at 32 px, made once for the session: a test that changes its
    data makes its own."""
    data_dir = tmp_path_factory.mktemp("tiny_data")
    _make_dataset(data_dir, num=16, img_size=32)
    return data_dir


@pytest.fixture(scope="session")
def fixed_batch():
    """`fixed_batch(data_dir, n=8)`: the first n samples of `make_dataset`'s files as a training batch
    (no crop/augmentation: the boxes cover the whole image)."""
    from hmr_jax.data import annotations, augment  # pylint: disable=g-import-not-at-top

    def batch(data_dir, n: int = 8) -> dict:
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

    return batch


@pytest.fixture(scope="session")
def train_parts():
    """`train_parts(config, mesh)`: (models, fresh state, replicated default body model, jitted train
    step) of `config`; call inside `jax.set_mesh(mesh)`."""
    from hmr_jax import body_model, sharding, smpl, steps  # pylint: disable=g-import-not-at-top
    from hmr_jax import state as state_lib  # pylint: disable=g-import-not-at-top

    def parts(config, mesh):
        models = state_lib.make_static_parts(config)
        state = state_lib.create_sharded_state(config, models, mesh)
        smpl_model = sharding.replicate(smpl.load(body_model.default_body_model_path()), mesh)
        return models, state, smpl_model, jax.jit(steps.make_train_step(config, models, "smpl24"))

    return parts


# ------------------------------------------------------------------- a trained run for evaluate / predict

# (image name, split) of the run's dataset: 4 training samples (S1) and 10 validation ones (S9, S11).
H36M_NAMES = (
    "S1_Walking.55011271_000001.jpg",
    "S1_Walking.55011271_000006.jpg",
    "S1_Walking.55011271_000011.jpg",
    "S1_Walking.55011271_000016.jpg",
    "S9_Directions_1.60457274_000001.jpg",  # P1, P2
    "S9_Directions_1.60457274_000006.jpg",  # P1, P2
    "S9_Directions_1.60457274_000003.jpg",  # not every 5th frame
    "S9_Directions_1.60457274_000011.jpg",  # P1, P2
    "S9_Directions_1.54138969_000001.jpg",  # P1 (other camera)
    "S11_TakingPhoto.60457274_000011.jpg",  # P1, P2 (first frame of its sequence)
    "S11_TakingPhoto.60457274_000016.jpg",  # P1, P2
    "S11_WalkingDog_1.58860488_000002.jpg",  # P1
    "S11_Directions.60457274_000002.jpg",  # P1, P2
    "S11_Directions.60457274_000007.jpg",  # P1, P2
)
H36M_EXPECTED = {"validation": 10, "p1": 9, "p2": 7, "actions": {"Directions": 7, "Photo": 2, "WalkDog": 1}}
RUN_IMG_SIZE = 32
RUN_BATCH = 8


def _make_h36m_dataset(out_dir) -> str:
    """`make_dataset`'s samples renamed to Human3.6M-style image names; returns the annotation path."""
    from hmr_jax.data import annotations  # pylint: disable=g-import-not-at-top

    out_dir = pathlib.Path(out_dir)
    path = _make_dataset(out_dir, num=len(H36M_NAMES), img_size=RUN_IMG_SIZE)
    ann = annotations.load(path).to_dict()
    names = []
    for old, new in zip(ann["imgname"], H36M_NAMES):
        os.rename(out_dir / old, out_dir / "images" / new)
        names.append(f"images/{new}")
    ann["imgname"] = np.array(names)
    for key in ("subject", "action", "camera"):  # re-derived from the new names on load
        ann.pop(key, None)
    os.remove(path)
    annotations.save_spin(path, ann)
    return path


def _make_run(workdir, data_dir, step: int = 3):
    """workdir/config.json + an orbax checkpoint at `step` (freshly initialised weights, the regressor's
    last layer made larger so that predictions differ from the mean), recorded as the best."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    from hmr_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    from hmr_jax import sharding  # pylint: disable=g-import-not-at-top
    from hmr_jax import state as state_lib  # pylint: disable=g-import-not-at-top
    from hmr_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

    config = _tiny_config(
        data_dir,
        **{"data.batch_size": RUN_BATCH, "data.eval_batch_size": RUN_BATCH, "data.img_size": RUN_IMG_SIZE},
    )
    os.makedirs(workdir, exist_ok=True)
    workdir_lib.write_config(config, workdir)
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):
        models = state_lib.make_static_parts(config)
        state = state_lib.create_sharded_state(config, models, mesh)
        params = jax.tree.map(lambda x: x, state.gen_params)
        params["regressor"]["out"]["kernel"] = params["regressor"]["out"]["kernel"] * 30.0
        state = dataclasses.replace(
            state, gen_params=params, step=jax.device_put(jnp.asarray(step, jnp.int32), state.step.sharding)
        )
        manager = ckpt_lib.make_manager(os.path.join(workdir, "checkpoints"), 3)
        meta = {"best_metric": 0.1, "best_step": step, "bad_evals": 0, "stopped_early": False}
        ckpt_lib.save(manager, step, state, meta, 0.1)
        manager.wait_until_finished()
        manager.close()
    return config


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory) -> dict:
    """A run directory written the way `hmr_jax.train` writes it (config.json + an orbax checkpoint at
    step 3, recorded as the best), without the cost of compiling a training step, over a tiny dataset
    of Human3.6M-named images. One per test module: a test that edits it restores it.

    Keys: workdir, data_dir, config (the run's), names (the images, data_dir/images/<name>), expected
    (the validation split's sample counts: all, Protocol 1, Protocol 2, per action)."""
    data_dir = tmp_path_factory.mktemp("data")
    _make_h36m_dataset(data_dir)
    workdir = str(tmp_path_factory.mktemp("run"))
    config = _make_run(workdir, data_dir, step=3)
    return dict(workdir=workdir, data_dir=data_dir, config=config, names=H36M_NAMES, expected=H36M_EXPECTED)


# ------------------------------------------------------------- fake datasets with a known pinhole camera


def _project(points, focal, center):
    return points[..., :2] / points[..., 2:3] * np.asarray(focal)[..., None, :] + np.asarray(center)[..., None, :]


def _fake_arrays(n, rng, *, width=200, height=160, focal=300.0, joint_set="smpl24"):
    S = rng.uniform(-0.6, 0.6, size=(n, 24, 3)).astype(np.float32)
    S -= S[:, :1]  # root-centred (pelvis = joint 0)
    cam_t = np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-0.3, 0.3, n), rng.uniform(6.0, 8.0, n)], -1).astype(
        np.float32
    )
    cam_focal = np.full((n, 2), focal, np.float32)
    cam_center = np.tile(np.array([[width / 2, height / 2]], np.float32), (n, 1))
    xy = _project(S + cam_t[:, None], cam_focal, cam_center)
    part = np.concatenate([xy, np.ones((n, 24, 1))], -1).astype(np.float32)
    lo, hi = xy.min(1), xy.max(1)
    center = ((lo + hi) / 2).astype(np.float32)
    scale = (1.2 * (hi - lo).max(1) / 200).astype(np.float32)
    pose = (rng.normal(size=(n, 72)) * 0.3).astype(np.float32)
    pose[:, :3] += np.array([np.pi, 0, 0], np.float32)
    return {
        "imgname": np.array([f"img_{i:04d}.jpg" for i in range(n)]),
        "center": center,
        "scale": scale,
        "part": part,
        "S": np.concatenate([S, np.ones((n, 24, 1), np.float32)], -1),
        "pose": pose,
        "shape": rng.normal(size=(n, 10)).astype(np.float32),
        "has_smpl": np.ones(n, np.float32),
        "joint_set": np.array(joint_set),
        "cam_focal": cam_focal,
        "cam_center": cam_center,
        "cam_t": cam_t,
    }


def _fake_images(root, imgnames, rng, *, width=200, height=160, fmt="JPEG"):
    os.makedirs(root, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for i, name in enumerate(imgnames):
        base = np.stack([(xx * (1 + i % 3)) % 256, (yy * 2) % 256, np.full_like(xx, (40 * i) % 256)], -1)
        img = np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, name), fmt, quality=90)


@pytest.fixture(scope="session")
def pinhole_project():
    """`pinhole_project(points, focal, center)`: points (..., J, 3) camera frame -> (..., J, 2) px."""
    return _project


@pytest.fixture(scope="session")
def fake_arrays():
    """`fake_arrays(n, rng, *, width=200, height=160, focal=300.0, joint_set="smpl24")`: SPIN-layout
    annotation arrays of root-centred random joints seen by a known pinhole camera (cam_focal,
    cam_center, cam_t), keypoints their projections, boxes around them."""
    return _fake_arrays


@pytest.fixture(scope="session")
def fake_images():
    """`fake_images(root, imgnames, rng, *, width=200, height=160, fmt="JPEG")`: writes a patterned
    image for each name under root."""
    return _fake_images


@pytest.fixture(scope="session")
def fake_dataset():
    """`fake_dataset(tmp, n=12, seed=0, **fake_arrays_kw)`: writes tmp/images/*.jpg + tmp/ann.npz;
    returns (npz path, image root, arrays)."""
    from hmr_jax.data import annotations as ann_lib  # pylint: disable=g-import-not-at-top

    def make(tmp, n=12, seed=0, **kw):
        rng = np.random.default_rng(seed)
        arrays = _fake_arrays(n, rng, **kw)
        root = os.path.join(tmp, "images")
        _fake_images(root, arrays["imgname"], rng, width=kw.get("width", 200), height=kw.get("height", 160))
        path = os.path.join(tmp, "ann.npz")
        ann_lib.save_spin(path, arrays)
        return path, root, arrays

    return make
