"""Helpers of the evaluate / predict tests: a tiny H36M-named dataset and a run directory holding a
checkpoint written the way `hmr_jax.train` writes it (config.json + orbax checkpoint), without the
cost of compiling a training step."""

import dataclasses
import os
import pathlib

import numpy as np
import trainer_helpers as th

# (image name, split) of the tiny dataset: 4 training samples (S1) and 10 validation ones (S9, S11).
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
EXPECTED = {"validation": 10, "p1": 9, "p2": 7, "actions": {"Directions": 7, "Photo": 2, "WalkDog": 1}}
IMG_SIZE = 32
BATCH = 8


def make_h36m_dataset(out_dir) -> str:
    """th.make_dataset's samples renamed to Human3.6M-style image names; returns the annotation path."""
    from hmr_jax.data import annotations  # pylint: disable=g-import-not-at-top

    out_dir = pathlib.Path(out_dir)
    path = th.make_dataset(out_dir, num=len(H36M_NAMES), img_size=IMG_SIZE)
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


def tiny_run_config(data_dir):
    return th.tiny_config(
        data_dir, **{"data.batch_size": BATCH, "data.eval_batch_size": BATCH, "data.img_size": IMG_SIZE}
    )


def make_run(workdir, data_dir, step: int = 3):
    """workdir/config.json + an orbax checkpoint at `step` (freshly initialised weights, the regressor's
    last layer made larger so that predictions differ from the mean), recorded as the best."""
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    from hmr_jax import checkpoint as ckpt_lib
    from hmr_jax import sharding
    from hmr_jax import state as state_lib
    from hmr_jax import workdir as workdir_lib

    config = tiny_run_config(data_dir)
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


def make_h36m_regressor(path, num_vertices: int, seed: int = 0) -> str:
    """A (17, V) regressor: each joint the mean of 8 random vertices (rows sum to 1)."""
    rng = np.random.default_rng(seed)
    reg = np.zeros((17, num_vertices), np.float32)
    for j in range(17):
        reg[j, rng.choice(num_vertices, 8, replace=False)] = 1.0 / 8
    np.save(path, reg)
    return str(path)
